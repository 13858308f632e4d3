"""What escalation and de-escalation mean, apart from Flyte: the connector calls these three functions.

* :func:`prepare` (``CreateTask``) resolves the request against the operator file and checks every
  precondition at Aptible -- target, duration, role and its organization, SSO enforcement, the bot's rights,
  the requester's identity -- and changes nothing at Aptible. A user who already holds the role is noted
  (``pre_existing``: nothing will be added or removed). Otherwise the request is published for approvers
  (or, in a local run of a strategy that needs no approval, confirmed at the terminal, default No).
* :func:`advance` (``GetTask``) waits for a valid approval, grants once (a grant record in SSM, created
  with ``Overwrite=False``, makes that true across replicas and restarts), holds, and removes the membership
  once ``duration`` has passed.
* :func:`abort` (``DeleteTask``) removes the membership at once, or makes sure it is never added.

Whether a membership Aptible lists is this request's grant is derived from the grant record and Aptible's
``created_at``, never from one process's memory. The state between calls is a :class:`GrantState` (ids,
names and times; never a credential, a host or a reference), which Propeller keeps.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from flytekitplugins_awssecrets.aptible.approval import (
    PendingRequest,
    StateStoreClient,
    check_record,
)
from flytekitplugins_awssecrets.aptible.audit import audit, describe_error
from flytekitplugins_awssecrets.aptible.client import AptibleClient, AptibleClientSettings, AptibleMembership
from flytekitplugins_awssecrets.aptible.errors import (
    AccessRequestRefusedError,
    AmbiguousIdentityError,
    ApprovalRefusedError,
    ApprovalTimeoutError,
    AptibleApiError,
    AptibleStateError,
    BotCredentialsError,
    BotNotRoleAdminError,
    DurationTooLongError,
    IdentityNotFoundError,
    LocalApprovalDeniedError,
    LocalRunNotAllowedError,
    RoleNotFoundError,
    RoleOrganizationMismatchError,
    SsoEnforcedError,
    TemplateFieldError,
    UnknownTargetError,
)
from flytekitplugins_awssecrets.aptible.identity import resolve_identity
from flytekitplugins_awssecrets.aptible.models import AccessGrant
from flytekitplugins_awssecrets.aptible.operator import (
    OPERATOR_FILE_ENV,
    OperatorConfig,
    OperatorIntegration,
    OperatorStrategy,
)
from flytekitplugins_awssecrets.aptible.records import ENDED
from flytekitplugins_awssecrets.aptible.request import AccessRequest, from_template, request_id
from flytekitplugins_awssecrets.aptible.revoke import not_ours, remove_grant

__all__ = ["GrantState", "Progress", "prepare", "advance", "abort", "client_for", "is_local"]

#: A membership created this long before the request is standing access, not this request's grant
#: (allows for clock skew between Aptible and the connector).
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class GrantState:
    """What must survive between ``create``, ``get`` and ``delete``: names, ids and times only."""

    request_id: str
    execution_id: str
    strategy: str
    target: str
    email: str
    reason: str
    duration_seconds: int
    organization_id: str
    role_id: str
    user_id: str
    pre_existing: bool
    requested_at: str
    approval_required: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.duration_seconds)

    @property
    def requested(self) -> datetime:
        return datetime.fromisoformat(self.requested_at)

    def audit_fields(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "execution_id": self.execution_id,
            "email": self.email,
            "target": self.target,
            "strategy": self.strategy,
            "organization_id": self.organization_id,
            "role_id": self.role_id,
            "user_id": self.user_id,
            "pre_existing": self.pre_existing,
            "reason": self.reason,
            "duration_seconds": self.duration_seconds,
        }

    def grant(self, membership_id: str, granted_at: datetime, revoked_at: datetime | None) -> AccessGrant:
        return AccessGrant(
            email=self.email,
            target=self.target,
            user_id=self.user_id,
            role_id=self.role_id,
            membership_id=membership_id,
            pre_existing=self.pre_existing,
            granted_at=granted_at,
            expires_at=granted_at + self.duration,
            revoked_at=revoked_at,
        )


@dataclass(frozen=True)
class Progress:
    """What ``advance`` found: ``grant`` is set once the access has ended; ``message`` is for the console."""

    message: str
    grant: AccessGrant | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def is_local(execution_id: str) -> bool:
    """``local`` or ``local/<id>`` (an in-process run); a cluster's ``project/domain/name/node/retry`` never
    is, even in a project called ``local``."""
    parts = execution_id.split("/")
    return parts[0] == "local" and len(parts) <= 2


async def _bot_credentials(integration: OperatorIntegration) -> tuple[str, SecretStr]:
    from flytekitplugins_awssecrets import get_secret_values
    from flytekitplugins_awssecrets.errors import AwsSecretsError

    refs = [integration.settings.username_secret.reference, integration.settings.password_secret.reference]
    try:
        # botocore is synchronous: keep the connector's event loop free while Secrets Manager answers.
        username, password = await asyncio.to_thread(get_secret_values, refs)
    except AwsSecretsError as e:
        # The resolver's own summary speaks of "this task" and "user code"; name the first cause instead.
        first = next(iter(getattr(e, "errors", None) or [e]))
        raise BotCredentialsError(integration.name, f"{first.reference}: {first.reason}") from None
    if isinstance(username, bytes):
        username = username.decode("utf-8")
    if isinstance(password, bytes):
        password = password.decode("utf-8")
    return username.strip(), SecretStr(password)


async def client_for(
    integration: OperatorIntegration, settings: AptibleClientSettings | None = None
) -> AptibleClient:
    """A client for the integration's bot on the integration's (https) auth host; not yet entered."""
    settings = settings or AptibleClientSettings()
    username, password = await _bot_credentials(integration)
    return AptibleClient(
        integration.auth_url, username, password, settings=settings, verify=integration.ca_bundle or True
    )


def _store(config: OperatorConfig) -> StateStoreClient:
    return StateStoreClient(config.state.ssm_prefix, config.state.region)


def approve_command(rid: str) -> str:
    """The complete command an approver runs (``approve`` signs only with the operator file's key)."""
    path = os.environ.get(OPERATOR_FILE_ENV, "").strip() or "<the operator file>"
    return f"pyflyte-awssecrets aptible approve {rid} --operator-file {path}"


#: Once an hour per process, ``CreateTask`` deletes the records of requests that ended more than
#: ``state.retention`` ago (one ``GetParametersByPath`` walk, at most 100 pages).
SWEEP_EVERY = 3600.0
_swept: dict[tuple[str, str], float] = {}
_swept_lock = threading.Lock()


def _maybe_sweep(config: OperatorConfig, store: StateStoreClient) -> None:
    key = (config.state.region, config.state.ssm_prefix)
    with _swept_lock:
        if time.monotonic() - _swept.get(key, -SWEEP_EVERY) < SWEEP_EVERY:
            return
        _swept[key] = time.monotonic()
    try:
        for rid in store.sweep(config.state.retention):
            audit("swept", request_id=rid, retention_seconds=int(config.state.retention.total_seconds()))
    except Exception as e:  # noqa: BLE001 - the sweep never fails a request; the next one tries again
        audit("failed", step="sweep", error=describe_error(e))


#: The approvals already refused (request id -> what was refused): an approval is audited once, not at
#: every poll. Per process; bounded.
_refused: dict[str, str] = {}


def _refuse_once(state: GrantState, key: str, refused: ApprovalRefusedError) -> None:
    if _refused.get(state.request_id) == key:
        return
    if len(_refused) > 10_000:
        _refused.pop(next(iter(_refused)))
    _refused[state.request_id] = key
    audit("approval-refused", **state.audit_fields(), error=describe_error(refused))


def _end(store: StateStoreClient, state: GrantState, outcome: dict[str, Any]) -> None:
    """The request is over: its grant record becomes its outcome, its other records go. A failure is
    audited, never raised: what matters (no membership) is already true."""
    try:
        store.end_request(state.request_id, outcome)
    except Exception as e:  # noqa: BLE001
        audit("failed", **state.audit_fields(), step="end-records", error=describe_error(e))


async def _check_bot(
    client: AptibleClient, target: str, role_id: str, org: str, ms: list[AptibleMembership]
) -> None:
    bot = await client.bot_user_id()
    if any(m.user_id == bot and m.privileged for m in ms):
        return
    role = await client.get_role(role_id)
    roles = await client.list_user_roles(bot)
    for r in roles:
        if r.organization_id != org:
            continue
        # An Account Owner manages every role; a Deploy Owner is implicitly Role Admin of every custom
        # (platform_user) role, as Aptible's dashboard shows it.
        if r.type == "owner":
            return
        if r.type == "platform_owner" and role is not None and role.type not in ("owner", "platform_owner"):
            return
    raise BotNotRoleAdminError(target, role_id, bot or "unknown")


async def _sso_guard(client: AptibleClient, org: str, e: AptibleApiError) -> None:
    if e.status in (401, 403):
        body = await client.get_organization(org)
        if body is not None and body.get("sso_enforced"):
            raise SsoEnforcedError(org) from None


async def _checks(
    client: AptibleClient, config: OperatorConfig, strategy: OperatorStrategy, req: AccessRequest
) -> tuple[str, str, AptibleMembership | None]:
    """``(user_id, role_id, held membership)`` after every precondition; nothing changes."""
    integration = config.integration_of(strategy)
    org = integration.organization_id
    target = config.target_of(strategy, req.target)
    try:
        role = await client.get_role(target.role_id)
        if role is None:
            org_body = await client.get_organization(org)
            if org_body is not None and org_body.get("sso_enforced"):
                raise SsoEnforcedError(org)
            raise RoleNotFoundError(target.name, target.role_id)
        if role.organization_id != org:
            raise RoleOrganizationMismatchError(target.name, target.role_id, org, role.organization_id)
        memberships = await client.list_role_memberships(target.role_id)
        await _check_bot(client, target.name, target.role_id, org, memberships)
        users = await client.list_org_users(org)
    except AptibleApiError as e:
        await _sso_guard(client, org, e)
        raise
    user = resolve_identity(req.email, org, users, config.identity)
    held = next((m for m in memberships if m.user_id == user.id), None)
    return user.id, target.role_id, held


def _confirm_locally(state: GrantState) -> bool:
    """Ask the person at the terminal; anything but y/yes (an empty line, end of input) is No."""
    sys.stderr.write(
        f"[Aptible access] grant {state.target} to {state.email} for {state.duration} "
        f"({state.reason or 'no reason given'})? [y/N] "
    )
    sys.stderr.flush()
    try:
        line = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return line.strip().lower() in ("y", "yes")


async def prepare(config: OperatorConfig, req: AccessRequest, execution_id: str) -> GrantState:
    """Resolve and check the request (``CreateTask``); nothing changes at Aptible. Refusals raise."""
    if is_local(execution_id) and execution_id == "local":
        execution_id = f"local/{uuid.uuid4().hex[:12]}"
    rid = request_id(execution_id, req)
    base = {
        "request_id": rid,
        "execution_id": execution_id,
        "email": req.email,
        "target": req.target,
        "strategy": req.strategy,
        "reason": req.reason,
        "duration_seconds": req.duration.total_seconds(),
    }
    try:
        strategy = config.strategy(req.strategy)
        problems: list[Exception] = []
        try:
            config.target_of(strategy, req.target)
        except UnknownTargetError as e:
            problems.append(e)
        if req.duration > strategy.max_duration:
            problems.append(DurationTooLongError(strategy.name, req.duration, strategy.max_duration))
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise TemplateFieldError(
                "inputs.target", str(problems[0]), [("inputs.duration", str(problems[1]))]
            )
        if is_local(execution_id) and not strategy.local_runs:
            # Before the bot's credentials are read: a local run would put them in the requester's hands.
            n = config.strategies.index(strategy)
            raise LocalRunNotAllowedError(strategy.name, f"strategies[{n}].local_runs")
        integration = config.integration_of(strategy)
        async with await client_for(integration) as c:
            user_id, role_id, held = await _checks(c, config, strategy, req)
        store = _store(config)
        pre_existing = held is not None
        if held is not None:
            # A repeated CreateTask of a request already granted finds its own membership: the grant record
            # (not this process's memory) says so.
            record = await asyncio.to_thread(store.get_grant, rid)
            if record is not None and record.get("membership_id") == held.id:
                pre_existing = False
        state = GrantState(
            request_id=rid,
            execution_id=execution_id,
            strategy=strategy.name,
            target=req.target,
            email=req.email,
            reason=req.reason,
            duration_seconds=int(req.duration.total_seconds()),
            organization_id=integration.organization_id,
            role_id=role_id,
            user_id=user_id,
            pre_existing=pre_existing,
            requested_at=_now().isoformat(),
            approval_required=strategy.approval.required and not pre_existing,
        )
        audit("requested", **base)
        await asyncio.to_thread(_maybe_sweep, config, store)
        if state.pre_existing:
            audit("already-held", **state.audit_fields())
            return state
        if state.approval_required:
            policy = strategy.approval
            pending = PendingRequest(
                request_id=rid,
                execution_id=execution_id,
                strategy=strategy.name,
                target=req.target,
                email=req.email,
                duration_seconds=state.duration_seconds,
                reason=req.reason,
                requested_at=state.requested_at,
                kms_key_arn=policy.kms_key_arn or "",
                signing_algorithm=policy.signing_algorithm,
                max_validity_seconds=int(policy.max_validity.total_seconds()),
            )
            await asyncio.to_thread(store.put_pending, pending)
            audit("approval-requested", **state.audit_fields())
            if is_local(execution_id):
                sys.stderr.write(
                    f"[Aptible access] request {rid} waits for approval; an approver runs:\n"
                    f"  {approve_command(rid)}\n"
                )
                sys.stderr.flush()
        elif is_local(execution_id) and not _confirm_locally(state):
            raise LocalApprovalDeniedError(rid)
        return state
    except Exception as e:
        # One record per refused request, naming every offending field; the requester sees no more than
        # "this email cannot be granted" where the reason is whether (or how often) the email is at Aptible.
        fields = [f for f, _ in getattr(e, "problems", [])] or _fields_of(e)
        audit("failed", **base, step="prepare", fields=",".join(fields), error=describe_error(e))
        if isinstance(e, IdentityNotFoundError | AmbiguousIdentityError):
            raise AccessRequestRefusedError(rid, ["inputs.email"]) from None
        raise


def _fields_of(e: BaseException) -> list[str]:
    """The request fields a refusal is about (for the audit record)."""
    if isinstance(e, UnknownTargetError):
        return ["inputs.target"]
    if isinstance(e, DurationTooLongError):
        return ["inputs.duration"]
    if isinstance(e, IdentityNotFoundError | AmbiguousIdentityError):
        return ["inputs.email"]
    if isinstance(e, LocalRunNotAllowedError):
        return [e.field]
    name = type(e).__name__
    return ["custom.strategy"] if name == "UnknownStrategyError" else []


def _checked(config: OperatorConfig, state: GrantState) -> OperatorStrategy:
    """The state's strategy, once every field that decides a grant agrees with the operator file.

    ``get`` and ``delete`` receive the state from their caller (Propeller, or anyone who can reach the gRPC
    port), not from this process: a rewritten state could otherwise skip approval (``approval_required``),
    swap the role, the organization or the duration, or point at another request's records. What the user
    chose is re-validated and must hash to the request id that the approval and the records are bound to;
    what the operator decides is derived again from the operator file. The user id is checked against the
    email where Aptible is asked anyway (:func:`_same_user`).
    """
    rid = state.request_id

    def refuse(problem: str) -> AptibleStateError:
        err = AptibleStateError(rid, problem)
        audit("failed", request_id=rid, step="state", error=describe_error(err))
        return err

    try:
        seconds = state.duration_seconds
        if not isinstance(seconds, int) or seconds < 0:
            raise ValueError("duration_seconds")
        # The same checks as a template's fields (a sub-second request keeps 0 whole seconds).
        req = from_template(
            {"version": 2, "strategy": state.strategy},
            {
                "email": state.email,
                "target": state.target,
                "duration": timedelta(seconds=max(seconds, 1)),
                "reason": state.reason,
            },
        ).model_copy(update={"duration": timedelta(seconds=seconds)})
        strategy = config.strategy(req.strategy)
        target = config.target_of(strategy, req.target)
        requested = state.requested
    except Exception as e:  # noqa: BLE001 - any bad field is the same refusal
        raise refuse(f"the state does not describe a valid request ({type(e).__name__})") from None
    if req.duration > strategy.max_duration:
        raise refuse("the duration is over the strategy's maximum")
    if request_id(state.execution_id, req) != rid:
        raise refuse("the request id does not match the request")
    integration = config.integration_of(strategy)
    if state.role_id != target.role_id or state.organization_id != integration.organization_id:
        raise refuse("the role or organization is not the operator file's for this target")
    if state.approval_required != (strategy.approval.required and not state.pre_existing):
        raise refuse("the approval requirement is not the strategy's")
    if requested.tzinfo is None or requested > _now() + CLOCK_SKEW:
        raise refuse("the request time is not a past, timezone-aware time")
    if is_local(state.execution_id) and not strategy.local_runs:
        # A connector never makes a local state: one handed to it over gRPC is forged.
        raise refuse("a local run's state, for a strategy whose operator file allows no local runs")
    return strategy


async def _same_user(client: AptibleClient, config: OperatorConfig, state: GrantState) -> list[Any]:
    """The organization's users, once the state's user id is the one its email designates (else refused)."""
    users = await client.list_org_users(state.organization_id)
    user = resolve_identity(state.email, state.organization_id, users, config.identity)
    if user.id != state.user_id:
        err = AptibleStateError(state.request_id, "the user id is not the one the email designates")
        audit("failed", **state.audit_fields(), step="state", error=describe_error(err))
        raise err
    return list(users)


def _at(record: dict[str, Any], key: str) -> datetime | None:
    v = record.get(key)
    return datetime.fromisoformat(v) if isinstance(v, str) and v else None


async def _approved(
    config: OperatorConfig,
    strategy: OperatorStrategy,
    state: GrantState,
    store: StateStoreClient,
    at: datetime | None = None,
) -> tuple[str, str] | str:
    """``(approver ARN, email)`` of a valid approval, or a message saying why there is none yet."""
    record = await asyncio.to_thread(store.get_approval, state.request_id)
    if record is None:
        return f"waiting for approval: an approver runs '{approve_command(state.request_id)}'"
    policy = strategy.approval
    try:
        if isinstance(record, str):
            raise ValueError(record)
        return await asyncio.to_thread(
            check_record,
            record,
            request_id=state.request_id,
            execution_id=state.execution_id,
            email=state.email,
            strategy=state.strategy,
            target=state.target,
            duration_seconds=state.duration_seconds,
            reason=state.reason,
            kms_key_arn=policy.kms_key_arn or "",
            signing_algorithm=policy.signing_algorithm,
            max_validity=policy.max_validity,
            approvers=policy.approvers,
            now=at,
            allow_self_approval=policy.allow_self_approval,
        )
    except ValueError as problem:
        refused = ApprovalRefusedError(state.request_id, str(problem))
        key = record if isinstance(record, str) else record.signature
        _refuse_once(state, f"{key}:{problem}", refused)
        return f"{refused}; still waiting for a valid approval"


async def _grant(
    config: OperatorConfig,
    strategy: OperatorStrategy,
    state: GrantState,
    store: StateStoreClient,
    approver: tuple[str, str] | None,
    claim: dict[str, Any] | None,
) -> Progress:
    integration = config.integration_of(strategy)
    async with await client_for(integration) as c:
        users = await _same_user(c, config, state)
        if approver is not None and not strategy.approval.allow_self_approval:
            # The approver may not be the grantee under another email: both go through the operator's
            # identity mapping to Aptible users. One who maps to no user could be the grantee unseen.
            problem = ""
            try:
                approver_user = resolve_identity(approver[1], state.organization_id, users, config.identity)
                if approver_user.id == state.user_id:
                    problem = f"self-approval: {approver[0]} is the grantee's Aptible user"
            except (IdentityNotFoundError, AmbiguousIdentityError) as e:
                problem = (
                    f"{approver[0]} ({approver[1]}) maps to no single Aptible user of the organization "
                    f"({type(e).__name__}), so it cannot be told from the grantee"
                )
            if problem:
                refused = ApprovalRefusedError(state.request_id, problem)
                _refuse_once(state, f"{approver[0]}:{problem}", refused)
                return Progress(f"{refused}; still waiting for a valid approval")
        now = _now()
        if claim is None:
            claim = {"state": "granting", "at": now.isoformat()}
            if approver is not None:
                claim.update(approved_by=approver[0], approver_email=approver[1])
            if not await asyncio.to_thread(store.claim_grant, state.request_id, claim):
                return Progress("another connector call is granting; checking again at the next poll")
        membership = await c.create_membership(state.role_id, state.user_id)
        claimed_at = _at(claim, "at") or now
        # Aptible's answer, judged as at removal: a membership older than the request is standing access.
        standing = bool(not_ours(membership, state, await c.bot_user_id()))
        granted_at = claimed_at
        record = {**claim, "state": "granted", "membership_id": membership.id, "standing": standing}
        try:
            await asyncio.to_thread(store.set_grant, state.request_id, record)
        except Exception as e:
            if not getattr(e, "retryable", False) and not standing:
                # The task fails on this and Propeller polls no more: nothing would ever remove the
                # membership. (A retryable failure leaves 'granting', which the next poll finishes.)
                audit("failed", **state.audit_fields(), step="grant-record", error=describe_error(e))
                await c.delete_membership(membership.id)
            raise
        # An abort may have run while the membership was being added and found nothing to remove. It marks
        # the request before it looks, and this looks after the record is written: one of the two sees the
        # other, so the membership is removed either way.
        if await asyncio.to_thread(store.is_aborted, state.request_id):
            removed = not standing and await c.delete_membership(membership.id)
            revoked = {**record, "state": "revoked", "revoked_at": _now().isoformat()}
            await asyncio.to_thread(_end, store, state, revoked)
            audit("aborted", **state.audit_fields(), membership_id=membership.id, removed=removed)
            raise ApprovalRefusedError(state.request_id, "the execution was aborted while granting")
    await asyncio.to_thread(store.delete_pending, state.request_id)
    audit(
        "escalated",
        **state.audit_fields(),
        membership_id=membership.id,
        granted_at=granted_at,
        expires_at=granted_at + state.duration,
        approved_by=claim.get("approved_by"),
        approver_email=claim.get("approver_email"),
        standing=standing,
    )
    return Progress(f"access held until {(granted_at + state.duration).isoformat()}")


async def advance(config: OperatorConfig, state: GrantState) -> Progress:
    """One poll: wait for approval, grant once, hold, then remove. Raises on a refusal that ends the task."""
    strategy = _checked(config, state)
    now = _now()
    if state.pre_existing:
        if now < state.requested + state.duration:
            return Progress(f"standing access, nothing to do until {state.requested + state.duration}")
        audit("expired", **state.audit_fields(), note="standing access kept")
        return Progress("access ended: standing access kept", state.grant("", state.requested, None))
    store = _store(config)
    record = await asyncio.to_thread(store.get_grant, state.request_id)
    if record is None:
        approver: tuple[str, str] | None = None
        if now > state.requested + strategy.approval.wait:
            # Nothing is granted this late (a strategy without approval grants at the first poll): an ended
            # request whose records were swept after state.retention is never granted again.
            if await asyncio.to_thread(store.claim_grant, state.request_id, {"state": "timed-out"}):
                await asyncio.to_thread(_end, store, state, {"state": "timed-out"})
            err = ApprovalTimeoutError(state.request_id, strategy.approval.wait)
            audit("failed", **state.audit_fields(), step="approval", error=describe_error(err))
            raise err
        if state.approval_required:
            found = await _approved(config, strategy, state, store)
            if isinstance(found, str):
                return Progress(found)
            approver = found
        return await _grant(config, strategy, state, store, approver, None)
    kind = record.get("state")

    # The grant record is SSM data: whoever may write under the prefix could have written it. It never
    # widens a grant: its time is bounded by the request's, and a claim is finished only when the approval
    # it was made under still verifies as of the claim's time.
    def plausible(at: datetime | None) -> bool:
        # Not before the request, not in the future, not after the request could still be approved.
        latest = min(now, state.requested + strategy.approval.wait) + CLOCK_SKEW
        return at is not None and state.requested - CLOCK_SKEW <= at <= latest

    if kind == "granting":
        # A crash between the grant record and the membership (or its answer): finish it, adopting the
        # membership if it landed (create_membership looks before it adds).
        at = _at(record, "at")
        if not plausible(at):
            raise ApprovalRefusedError(state.request_id, "the grant record is not one this connector wrote")
        approver = None
        if state.approval_required:
            found = await _approved(config, strategy, state, store, at=at)
            if isinstance(found, str) or found[0] != record.get("approved_by"):
                raise ApprovalRefusedError(
                    state.request_id, "the grant record names no valid approval; nothing was granted"
                )
            approver = found
        return await _grant(config, strategy, state, store, approver, record)
    if kind == "timed-out":
        raise ApprovalTimeoutError(state.request_id, strategy.approval.wait)
    if kind in ("aborted", "corrupt"):
        # Aborted before the grant (or a record nobody can read): never granted now.
        raise ApprovalRefusedError(state.request_id, f"the request was {kind}; nothing was granted")
    at = _at(record, "at")
    granted_at = at if at is not None and plausible(at) else state.requested
    membership_id = str(record.get("membership_id", ""))
    if kind == "revoked":
        return Progress("access ended", state.grant(membership_id, granted_at, _at(record, "revoked_at")))
    expires = granted_at + state.duration
    if now < expires:
        return Progress(f"access held until {expires.isoformat()}")
    audit("expired", **state.audit_fields(), membership_id=membership_id)
    integration = config.integration_of(strategy)
    try:
        async with await client_for(integration) as c:
            # The email must designate the state's user before anything of theirs is removed; what is
            # removed is checked at Aptible (GET /memberships/:id), never taken from the record.
            await _same_user(c, config, state)
            membership_id, removed = await remove_grant(c, state, record)
    except Exception as e:
        audit("failed", **state.audit_fields(), step="de-escalate", error=describe_error(e))
        raise
    revoked_at = _now()
    # Removed first, recorded after: a record that cannot be written leaves no access (the next poll finds
    # the membership gone and tries the record again).
    outcome = {
        **record,
        "state": "revoked",
        "revoked_at": revoked_at.isoformat(),
        "membership_id": membership_id,
    }
    await asyncio.to_thread(store.set_grant, state.request_id, outcome)
    await asyncio.to_thread(_end, store, state, outcome)
    audit(
        "de-escalated",
        **state.audit_fields(),
        revoked_at=revoked_at,
        membership_id=membership_id,
        already_gone=not removed,
    )
    return Progress("access ended: membership removed", state.grant(membership_id, granted_at, revoked_at))


async def abort(config: OperatorConfig, state: GrantState) -> bool:
    """Remove the grant now, or make sure it is never made (execution aborted). ``True`` if removed.

    The membership is removed first and the records are written after: SSM refusing a write (its quota,
    its throttling) never leaves the access in place.
    """
    strategy = _checked(config, state)
    if state.pre_existing:
        audit("aborted", **state.audit_fields(), removed=False, note="standing access kept")
        return False
    store = _store(config)
    record = await asyncio.to_thread(store.get_grant, state.request_id)
    if record is None:
        # Nothing granted: claiming the record makes sure nothing ever is (a grant claims it first).
        if await asyncio.to_thread(store.claim_grant, state.request_id, {"state": "aborted"}):
            await asyncio.to_thread(_end, store, state, {"state": "aborted"})
            audit("aborted", **state.audit_fields(), removed=False, note="aborted before the grant")
            return False
        record = await asyncio.to_thread(store.get_grant, state.request_id) or {}
    if record.get("state") in ENDED:
        audit("aborted", **state.audit_fields(), removed=False, already_gone=True)
        return False
    integration = config.integration_of(strategy)
    try:
        async with await client_for(integration) as c:
            await _same_user(c, config, state)
            membership_id, removed = await remove_grant(c, state, record)
            # A grant being made right now (a poll that read "granting") checks this mark after it has
            # written its record; looking once more after the mark catches one that landed in between.
            try:
                await asyncio.to_thread(store.mark_aborted, state.request_id)
            except Exception as e:  # noqa: BLE001 - the removal below still runs
                audit("failed", **state.audit_fields(), step="abort-mark", error=describe_error(e))
            again_id, again = await remove_grant(c, state, {})
            if again:
                membership_id, removed = again_id, True
    except Exception as e:
        audit("failed", **state.audit_fields(), step="abort", error=describe_error(e))
        raise
    revoked_at = _now()
    outcome = {
        **record,
        "state": "revoked",
        "revoked_at": revoked_at.isoformat(),
        "membership_id": membership_id,
    }
    await asyncio.to_thread(_end, store, state, outcome)
    audit(
        "aborted",
        **state.audit_fields(),
        revoked_at=revoked_at,
        membership_id=membership_id,
        removed=removed,
        already_gone=not removed,
    )
    return removed
