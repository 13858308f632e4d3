"""What escalation and de-escalation mean, apart from Flyte: the connector calls these three functions.

* :func:`start` checks everything that can be checked before a change (duration, target, role and its
  organization, the bot's Role Admin rights, the requester's identity), then adds the membership, or
  notes that the user already holds the role (``pre_existing``: nothing added, and nothing will be removed).
* :func:`poll` holds while the grant is young; once ``expires_at`` has passed it removes the membership and
  returns the :class:`AccessGrant`.
* :func:`abort` removes the membership at once (execution aborted), unless it was pre-existing.

A removal that finds the membership already gone (``404``) is a success. The state between calls is a
:class:`GrantState`, which the connector keeps in Flyte's resource meta: it holds ids and times, never a
credential. Bot credentials are read from AWS Secrets Manager here, in the connector process, only.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from flytekitplugins_awssecrets.aptible.audit import audit, describe_error
from flytekitplugins_awssecrets.aptible.client import AptibleClient, AptibleClientSettings, AptibleMembership
from flytekitplugins_awssecrets.aptible.errors import (
    BotNotRoleAdminError,
    DurationTooLongError,
    RoleNotFoundError,
    RoleOrganizationMismatchError,
)
from flytekitplugins_awssecrets.aptible.identity import resolve_identity
from flytekitplugins_awssecrets.aptible.models import (
    AccessGrant,
    AptibleIntegration,
    AptibleTaskConfig,
)

__all__ = ["Request", "GrantState", "start", "poll", "abort", "auth_url_for", "client_for"]


@dataclass(frozen=True)
class Request:
    """One access request, as the task's inputs give it.

    Example::

        Request("ada@example.com", "main-aptible-admin-role", timedelta(hours=1), "INC-42", "p/d/exec/n0/0")
    """

    email: str
    target: str
    duration: timedelta
    reason: str
    execution_id: str = "local"


@dataclass(frozen=True)
class GrantState:
    """What must survive between ``create``, ``get`` and ``delete``: ids and times, no credentials.

    Made by :func:`start`, read by :func:`poll` and :func:`abort`::

        state = await start(config, request)
        grant = await poll(state)  # None while the access holds
    """

    integration: str  # AptibleIntegration as JSON: secret *references* only
    strategy: str
    execution_id: str
    email: str
    target: str
    role_id: str
    user_id: str
    membership_id: str
    pre_existing: bool
    granted_at: str
    expires_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def expires(self) -> datetime:
        return datetime.fromisoformat(self.expires_at)

    def grant(self, revoked_at: datetime | None) -> AccessGrant:
        return AccessGrant(
            email=self.email,
            target=self.target,
            user_id=self.user_id,
            role_id=self.role_id,
            membership_id=self.membership_id,
            pre_existing=self.pre_existing,
            granted_at=datetime.fromisoformat(self.granted_at),
            expires_at=self.expires,
            revoked_at=revoked_at,
        )

    def audit_fields(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "email": self.email,
            "target": self.target,
            "strategy": self.strategy,
            "organization_id": AptibleIntegration.model_validate_json(self.integration).organization_id,
            "role_id": self.role_id,
            "user_id": self.user_id,
            "membership_id": self.membership_id,
            "pre_existing": self.pre_existing,
            "granted_at": self.granted_at,
            "expires_at": self.expires_at,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def auth_url_for(integration: AptibleIntegration, settings: AptibleClientSettings) -> str:
    """The integration's ``auth_url``, else the connector's setting (env), else Aptible's."""
    return integration.auth_url or settings.auth_url


async def _bot_credentials(integration: AptibleIntegration) -> tuple[str, SecretStr]:
    from flytekitplugins_awssecrets import get_secret_values

    refs = [integration.username_secret.reference, integration.password_secret.reference]
    # boto3 is synchronous: keep the connector's event loop free while Secrets Manager answers.
    username, password = await asyncio.to_thread(get_secret_values, refs)
    if isinstance(username, bytes):
        username = username.decode("utf-8")
    if isinstance(password, bytes):
        password = password.decode("utf-8")
    return username.strip(), SecretStr(password)


async def client_for(
    integration: AptibleIntegration, settings: AptibleClientSettings | None = None
) -> AptibleClient:
    """A client for the integration's bot (not yet entered)."""
    settings = settings or AptibleClientSettings()
    username, password = await _bot_credentials(integration)
    return AptibleClient(auth_url_for(integration, settings), username, password, settings=settings)


# Memberships this process added, by (execution, role, user): see grant_with. One connector replica only
# remembers its own; docs/aptible.md says so.
_CREATED: dict[tuple[str, str, str], str] = {}
_CREATED_LOCK = threading.Lock()


async def _check_bot(
    client: AptibleClient, target: str, role_id: str, org: str, ms: list[AptibleMembership]
) -> None:
    bot = await client.bot_user_id()
    if any(m.user_id == bot and m.privileged for m in ms):
        return
    # An Owner of the organization manages every role without being a Role Admin of each.
    roles = await client.list_user_roles(bot)
    if any(r.type == "owner" and r.organization_id == org for r in roles):
        return
    raise BotNotRoleAdminError(target, role_id, bot or "unknown")


async def grant_with(
    client: AptibleClient, config: AptibleTaskConfig, request: Request
) -> tuple[str, str, str, bool]:
    """Check, then escalate: ``(user_id, role_id, membership_id, pre_existing)``. Nothing changes on error."""
    strategy = config.strategy
    org = strategy.integration.organization_id
    target = strategy.target(request.target)
    role = await client.get_role(target.role_id)
    if role is None:
        raise RoleNotFoundError(target.name, target.role_id)
    if role.organization_id != org:
        raise RoleOrganizationMismatchError(target.name, target.role_id, org, role.organization_id)
    memberships = await client.list_role_memberships(target.role_id)
    await _check_bot(client, target.name, target.role_id, org, memberships)
    users = await client.list_org_users(org)
    user = resolve_identity(request.email, org, users, config.identity)
    held = next((m for m in memberships if m.user_id == user.id), None)
    key = (request.execution_id, target.role_id, user.id)
    if held is not None:
        # Propeller retries a CreateTask whose answer it did not get: the membership this execution added
        # a moment ago is not standing access, or it would never be removed.
        with _CREATED_LOCK:
            ours = request.execution_id != "local" and _CREATED.get(key) == held.id
        return user.id, target.role_id, held.id, not ours
    created = await client.create_membership(target.role_id, user.id, user.href)
    with _CREATED_LOCK:
        _CREATED[key] = created.id
    return user.id, target.role_id, created.id, False


def _check_request(config: AptibleTaskConfig, request: Request) -> None:
    strategy = config.strategy
    strategy.target(request.target)
    if request.duration <= timedelta(0) or request.duration > strategy.max_duration:
        raise DurationTooLongError(strategy.name, request.duration, strategy.max_duration)


async def start(
    config: AptibleTaskConfig, request: Request, client: AptibleClient | None = None
) -> GrantState:
    """Escalate (or find the standing access). Every refusal happens before anything changes."""
    strategy = config.strategy
    base = {
        "execution_id": request.execution_id,
        "email": request.email,
        "target": request.target,
        "strategy": strategy.name,
        "organization_id": strategy.integration.organization_id,
        "reason": request.reason,
        "duration_seconds": request.duration.total_seconds(),
    }
    audit("requested", **base)
    state: GrantState | None = None
    try:
        _check_request(config, request)
        own = client is None
        c = client or await client_for(strategy.integration)
        if own:
            await c.__aenter__()
        try:
            user_id, role_id, membership_id, pre_existing = await grant_with(c, config, request)
            granted_at = _now()
            state = GrantState(
                integration=strategy.integration.model_dump_json(),
                strategy=strategy.name,
                execution_id=request.execution_id,
                email=request.email,
                target=request.target,
                role_id=role_id,
                user_id=user_id,
                membership_id=membership_id,
                pre_existing=pre_existing,
                granted_at=granted_at.isoformat(),
                expires_at=(granted_at + request.duration).isoformat(),
            )
            audit("already-held" if pre_existing else "escalated", **{**base, **state.audit_fields()})
            return state
        except BaseException:
            # A failure after the membership was added (say, the audit handler raised) must not leave it.
            if state is not None and not state.pre_existing:
                try:
                    await c.delete_membership(state.membership_id)
                except Exception as cleanup:  # noqa: BLE001 - reported, the original error wins
                    audit("failed", **base, step="cleanup", error=describe_error(cleanup))
            raise
        finally:
            if own:
                await c.__aexit__(None, None, None)
    except Exception as e:
        audit("failed", **base, step="escalate", error=describe_error(e))
        raise


# Expired events are logged once per grant and process, although ``get`` may be polled many times while a
# removal is retried.
_EXPIRED_LOGGED: set[tuple[str, str]] = set()
_EXPIRED_LOCK = threading.Lock()


async def _remove(state: GrantState, client: AptibleClient | None) -> bool:
    """Remove the membership; ``True`` if it was there, ``False`` if already gone."""
    if client is not None:
        return await client.delete_membership(state.membership_id)
    integration = AptibleIntegration.model_validate_json(state.integration)
    async with await client_for(integration) as c:
        return await c.delete_membership(state.membership_id)


async def poll(state: GrantState, client: AptibleClient | None = None) -> AccessGrant | None:
    """``None`` while the access holds; once expired, de-escalate and return the grant.

    Raises (retryable :class:`AptibleError`) when Aptible cannot be reached; the caller polls again.
    """
    now = _now()
    if now < state.expires:
        return None
    key = (state.execution_id, state.membership_id)
    with _EXPIRED_LOCK:
        first = key not in _EXPIRED_LOGGED
        _EXPIRED_LOGGED.add(key)
    if first:
        audit("expired", **state.audit_fields())
    if state.pre_existing:
        # Standing access is never taken away.
        return state.grant(revoked_at=None)
    try:
        removed = await _remove(state, client)
    except Exception as e:
        audit("failed", **state.audit_fields(), step="de-escalate", error=describe_error(e))
        raise
    revoked_at = _now()
    audit("de-escalated", **state.audit_fields(), revoked_at=revoked_at, already_gone=not removed)
    return state.grant(revoked_at=revoked_at)


async def abort(state: GrantState, client: AptibleClient | None = None) -> bool:
    """Remove the membership now (execution aborted). ``True`` if something was removed."""
    if state.pre_existing:
        audit("aborted", **state.audit_fields(), removed=False, note="standing access kept")
        return False
    try:
        removed = await _remove(state, client)
    except Exception as e:
        audit("failed", **state.audit_fields(), step="abort", error=describe_error(e))
        raise
    audit("aborted", **state.audit_fields(), revoked_at=_now(), removed=removed, already_gone=not removed)
    return removed
