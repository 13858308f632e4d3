"""The request's state between connector calls, and what every step of it uses: the bot's client, the
records store, the audit of refusals (once each), the end of a request's records and their sweep.

:mod:`~flytekitplugins_awssecrets.aptible.prepare` (``CreateTask``) and
:mod:`~flytekitplugins_awssecrets.aptible.lifecycle` (``GetTask``, ``DeleteTask``) build on this.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from flytekitplugins_awssecrets.aptible.approval import (
    StateStoreClient,
)
from flytekitplugins_awssecrets.aptible.audit import audit, describe_error
from flytekitplugins_awssecrets.aptible.client import AptibleClient, AptibleClientSettings
from flytekitplugins_awssecrets.aptible.errors import (
    ApprovalRefusedError,
    BotCredentialsError,
)
from flytekitplugins_awssecrets.aptible.models import AccessGrant
from flytekitplugins_awssecrets.aptible.operator import (
    OPERATOR_FILE_ENV,
    OperatorConfig,
    OperatorIntegration,
)

__all__ = ["CLOCK_SKEW", "GrantState", "Progress", "is_local", "client_for", "approve_command"]


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
