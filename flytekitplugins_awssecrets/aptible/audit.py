"""The audit trail: one structured log record per step of an access request.

Records go to the logger ``flytekitplugins_awssecrets.aptible.audit`` at INFO (``failed`` at WARNING). The
message is one JSON object, and the same object is in the record's ``aptible_audit`` attribute for
handlers that ship structured logs. Route that logger to your log pipeline to keep the trail.

An access trail must not vanish because nobody configured logging: if, at the first record, neither this
logger nor any of its ancestors has a handler, one is added that writes the JSON lines to stderr (where a
connector pod's logs are collected), and the logger's level is set to INFO if it was unset.

Events: ``requested``, ``approval-requested``, ``approval-refused``, ``escalated``, ``already-held``,
``expired``, ``de-escalated``, ``aborted``, ``kept`` (a membership that is not this request's grant was
left alone: ``note`` says why), ``swept`` (an ended request's records deleted after ``state.retention``),
``failed``. Fields: ``event``, ``at``, ``request_id``,
``execution_id``, ``email``, ``target``, ``strategy``, ``organization_id``, ``role_id``, ``user_id``,
``membership_id``, ``pre_existing``, ``reason``, ``duration_seconds``, ``granted_at``, ``expires_at``,
``revoked_at``, ``approved_by`` (the approver's AWS principal ARN) and ``approver_email``, ``error``, and any
extra keyword.
No field ever holds a password or a token: the callers pass none, and ``error`` is built from our typed
errors, whose messages carry none.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["AUDIT_LOGGER", "Event", "audit", "describe_error"]

AUDIT_LOGGER = "flytekitplugins_awssecrets.aptible.audit"

Event = Literal[
    "requested",
    "approval-requested",
    "approval-refused",
    "escalated",
    "already-held",
    "expired",
    "de-escalated",
    "aborted",
    "kept",
    "swept",
    "failed",
]

_log = logging.getLogger(AUDIT_LOGGER)
_defaulted = False


def _ensure_destination() -> None:
    global _defaulted
    if _defaulted:
        return
    _defaulted = True
    if not _log.hasHandlers():
        handler = logging.StreamHandler()  # stderr
        handler.setFormatter(logging.Formatter("%(message)s"))
        _log.addHandler(handler)
    if _log.level == logging.NOTSET:
        _log.setLevel(logging.INFO)


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat()
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


def describe_error(e: BaseException) -> dict[str, Any]:
    """A loggable description: the type, and the message only for our own errors (built without secrets)."""
    from flytekitplugins_awssecrets.errors import AwsSecretsError, clean_aws_message

    if isinstance(e, AwsSecretsError):
        return {"type": type(e).__name__, "message": clean_aws_message(e), "retryable": bool(e.retryable)}
    # A foreign exception's text is not ours to vouch for: keep the type only.
    return {"type": type(e).__name__}


def audit(event: Event, **fields: Any) -> dict[str, Any]:
    """Log one audit record and return it (tests read it back)."""
    record: dict[str, Any] = {"event": event, "at": datetime.now(UTC).isoformat()}
    for k, v in fields.items():
        record[k] = v if isinstance(v, dict) else _jsonable(v)
    level = logging.WARNING if event == "failed" else logging.INFO
    _ensure_destination()
    _log.log(level, json.dumps(record, sort_keys=True), extra={"aptible_audit": record})
    return record
