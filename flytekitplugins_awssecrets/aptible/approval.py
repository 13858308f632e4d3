"""Approvals the requester cannot produce: an asymmetric KMS signature over the canonical request.

The connector publishes each pending request under ``<state.ssm_prefix>/<request id>/request``. An approver
runs ``pyflyte-awssecrets aptible approve <request id>``: it reads the request, asks AWS who the approver is
(``sts:GetCallerIdentity``), and signs the canonical request -- execution, email, strategy, target,
duration, the approval's expiry and the approver's ARN -- with the strategy's KMS key (``kms:Sign``, which
the key policy allows to approvers only), then stores the record under ``.../approval``. The connector
rebuilds the canonical request from its *own* state (never from the record), and checks the signature with
``kms:Verify`` on the key the operator file names. Refused, with the reason: a record for another request,
a bad signature or another key's, an expired or too long-lived approval, an approver who is the requester.

The records themselves (request, approval, grant, abort; their end and their retention) are in
:mod:`~flytekitplugins_awssecrets.aptible.records`.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from flytekitplugins_awssecrets.aptible.records import (
    ApprovalRecord,
    PendingRequest,
    StateStoreClient,
    StateStoreError,
    _client,
    _code,
    _retryable,
)

__all__ = [
    "PendingRequest",
    "ApprovalRecord",
    "StateStoreClient",
    "canonical",
    "approver_email",
    "check_record",
    "sign_approval",
    "caller_arn",
    "StateStoreError",
]

_EMAIL = re.compile(r"^[^@\s/]+@[^@\s/]+$")


def canonical(
    *,
    request_id: str,
    execution_id: str,
    email: str,
    strategy: str,
    target: str,
    duration_seconds: int,
    reason: str,
    expires_at: int,
    approver_arn: str,
) -> bytes:
    """The bytes that are signed: sorted, compact JSON of the request and the approval's terms.

    ``reason`` is signed too: what the approver read is what the grant is for (v2; v1 left it out).
    """
    return json.dumps(
        {
            "v": 2,
            "reason": reason,
            "request_id": request_id,
            "execution_id": execution_id,
            "email": email.casefold(),
            "strategy": strategy,
            "target": target,
            "duration_seconds": int(duration_seconds),
            "expires_at": int(expires_at),
            "approver_arn": approver_arn,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def approver_email(arn: str, approvers: dict[str, str]) -> str | None:
    """The approver's email: the operator's mapping, else the ARN's last segment when it is an email."""
    if arn in approvers:
        return approvers[arn]
    last = arn.rsplit("/", 1)[-1]
    return last.casefold() if _EMAIL.match(last) else None


def _verify(key_arn: str, algorithm: str, message: bytes, signature: bytes) -> bool:
    kms = _client("kms", key_arn.split(":")[3])
    try:
        answer = kms.verify(
            KeyId=key_arn, Message=message, MessageType="RAW", Signature=signature, SigningAlgorithm=algorithm
        )
    except Exception as e:  # noqa: BLE001
        if _code(e) in ("KMSInvalidSignatureException", "InvalidSignatureException", "ValidationException"):
            return False
        raise StateStoreError(
            f"KMS {key_arn}", f"Verify failed: {_code(e) or type(e).__name__}", _retryable(e)
        ) from None
    return bool(answer.get("SignatureValid"))


def check_record(
    record: ApprovalRecord,
    *,
    request_id: str,
    execution_id: str,
    email: str,
    strategy: str,
    target: str,
    duration_seconds: int,
    reason: str,
    kms_key_arn: str,
    signing_algorithm: str,
    max_validity: timedelta,
    approvers: dict[str, str],
    now: datetime | None = None,
    allow_self_approval: bool = False,
) -> tuple[str, str]:
    """``(approver ARN, approver email)`` of a valid approval; otherwise the problem, as ``ValueError``.

    Every term is the connector's (its request state and its operator file); the record contributes only
    the approver's ARN, the expiry and the signature, all of which are inside what was signed.
    """
    now = now or datetime.now(UTC)
    theirs = (
        record.request_id,
        record.execution_id,
        record.email.casefold(),
        record.strategy,
        record.target,
        record.duration_seconds,
        record.reason,
    )
    ours = (request_id, execution_id, email.casefold(), strategy, target, duration_seconds, reason)
    if theirs != ours:
        raise ValueError("the approval is for another request (replayed or copied)")
    if record.kms_key_arn != kms_key_arn:
        raise ValueError(f"signed with key {record.kms_key_arn}, the strategy trusts {kms_key_arn}")
    if record.expires_at <= now.timestamp():
        raise ValueError("the approval has expired")
    if record.expires_at > (now + max_validity).timestamp() + 60:
        raise ValueError(f"the approval is valid for longer than the strategy's maximum {max_validity}")
    try:
        signature = base64.b64decode(record.signature, validate=True)
    except ValueError:
        raise ValueError("the signature is not base64") from None
    message = canonical(
        request_id=request_id,
        execution_id=execution_id,
        email=email,
        strategy=strategy,
        target=target,
        duration_seconds=duration_seconds,
        reason=reason,
        expires_at=record.expires_at,
        approver_arn=record.approver_arn,
    )
    if not _verify(kms_key_arn, signing_algorithm, message, signature):
        raise ValueError("the signature does not verify with the strategy's key (forged, or another key)")
    who = approver_email(record.approver_arn, approvers)
    if who is None:
        raise ValueError(
            f"cannot tell who {record.approver_arn} is: map it to an email under approval.approvers"
        )
    if who == email.casefold() and not allow_self_approval:
        raise ValueError(f"self-approval: {record.approver_arn} is the requester")
    return record.approver_arn, who


def caller_arn(region: str) -> str:
    """The caller's AWS principal ARN (``sts:GetCallerIdentity``): who the approver is."""
    try:
        return str(_client("sts", region).get_caller_identity()["Arn"])
    except Exception as e:  # noqa: BLE001
        raise StateStoreError("sts:GetCallerIdentity", _code(e) or type(e).__name__, _retryable(e)) from None


def sign_approval(
    pending: PendingRequest,
    *,
    approver_arn: str,
    kms_key_arn: str,
    signing_algorithm: str,
    expires_at: datetime,
) -> ApprovalRecord:
    """Sign ``pending`` as ``approver_arn`` with the operator file's key (the approver side of ``approve``,
    once :func:`~flytekitplugins_awssecrets.aptible.approver.approver_problems` found nothing to refuse)."""
    now = datetime.now(UTC)
    # The signed terms are the record's terms: one mapping for both, so they cannot drift apart.
    terms: dict[str, Any] = {
        "request_id": pending.request_id,
        "execution_id": pending.execution_id,
        "email": pending.email,
        "strategy": pending.strategy,
        "target": pending.target,
        "duration_seconds": pending.duration_seconds,
        "reason": pending.reason,
        "expires_at": int(expires_at.timestamp()),
        "approver_arn": approver_arn,
    }
    message = canonical(**terms)
    try:
        sig = _client("kms", kms_key_arn.split(":")[3]).sign(
            KeyId=kms_key_arn,
            Message=message,
            MessageType="RAW",
            SigningAlgorithm=signing_algorithm,
        )["Signature"]
    except Exception as e:  # noqa: BLE001
        raise StateStoreError(
            f"KMS {kms_key_arn}",
            f"Sign failed: {_code(e) or type(e).__name__} (only approvers may sign with this key)",
            _retryable(e),
        ) from None
    return ApprovalRecord(
        **terms,
        approved_at=now.isoformat(),
        kms_key_arn=kms_key_arn,
        signing_algorithm=signing_algorithm,
        signature=base64.b64encode(sig).decode(),
    )
