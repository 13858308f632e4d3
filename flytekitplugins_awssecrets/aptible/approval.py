"""Approvals the requester cannot produce: an asymmetric KMS signature over the canonical request.

The connector publishes each pending request under ``<state.ssm_prefix>/<request id>/request``. An approver
runs ``pyflyte-awssecrets aptible approve <request id>``: it reads the request, asks AWS who the approver is
(``sts:GetCallerIdentity``), and signs the canonical request -- execution, email, strategy, target,
duration, the approval's expiry and the approver's ARN -- with the strategy's KMS key (``kms:Sign``, which
the key policy allows to approvers only), then stores the record under ``.../approval``. The connector
rebuilds the canonical request from its *own* state (never from the record), and checks the signature with
``kms:Verify`` on the key the operator file names. Refused, with the reason: a record for another request,
a bad signature or another key's, an expired or too long-lived approval, an approver who is the requester.

``.../grant`` is the connector's record that the grant was made (written with ``Overwrite=False``: one
replica grants, once, whatever replica or restart polls next).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from flytekitplugins_awssecrets.aptible.errors import AptibleError
from flytekitplugins_awssecrets.errors import clean_aws_message
from flytekitplugins_awssecrets.links import doc_link

__all__ = [
    "PendingRequest",
    "ApprovalRecord",
    "StateStoreClient",
    "canonical",
    "approver_email",
    "check_record",
    "sign_approval",
    "StateStoreError",
]

_EMAIL = re.compile(r"^[^@\s/]+@[^@\s/]+$")


class StateStoreError(AptibleError):
    """SSM or KMS refused or failed a call of the approval machinery (retryable when AWS was unavailable)."""

    def __init__(self, what: str, detail: str, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(
            what,
            clean_aws_message(detail),
            f"check the connector's IAM policy ({doc_link('aptible', 'the-permissions-the-bot-needs')})",
        )


class PendingRequest(BaseModel):
    """A request waiting for approval, as approvers see it (``pyflyte-awssecrets aptible list``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    request_id: str
    execution_id: str
    strategy: str
    target: str
    email: str
    duration_seconds: int
    reason: str = ""
    requested_at: str
    kms_key_arn: str
    signing_algorithm: str
    max_validity_seconds: int


class ApprovalRecord(BaseModel):
    """What an approver stores: the fields signed, the approver, and the signature (base64)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = 1
    request_id: str
    execution_id: str
    email: str
    strategy: str
    target: str
    duration_seconds: int
    expires_at: int
    approver_arn: str
    approved_at: str
    kms_key_arn: str
    signing_algorithm: str
    signature: str


def canonical(
    *,
    request_id: str,
    execution_id: str,
    email: str,
    strategy: str,
    target: str,
    duration_seconds: int,
    expires_at: int,
    approver_arn: str,
) -> bytes:
    """The bytes that are signed: sorted, compact JSON of the request and the approval's terms."""
    return json.dumps(
        {
            "v": 1,
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


def _client(service: str, region: str) -> Any:
    import botocore.session

    return botocore.session.get_session().create_client(service, region_name=region)


def _code(e: BaseException) -> str:
    response = getattr(e, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _retryable(e: BaseException) -> bool:
    code = _code(e)
    return not code or code.startswith(("Throttl", "Internal", "ServiceUnavailable"))


@dataclass
class StateStoreClient:
    """SSM parameters of one operator file's ``state`` (sync botocore calls; callers use a thread)."""

    prefix: str
    region: str

    def __post_init__(self) -> None:
        self._ssm = _client("ssm", self.region)

    def _name(self, rid: str, leaf: str) -> str:
        return f"{self.prefix}/{rid}/{leaf}"

    def _get(self, name: str) -> str | None:
        try:
            return str(self._ssm.get_parameter(Name=name)["Parameter"]["Value"])
        except Exception as e:  # noqa: BLE001 - botocore errors, sorted by code
            if _code(e) == "ParameterNotFound":
                return None
            raise StateStoreError(
                f"SSM {name}", f"GetParameter failed: {_code(e) or type(e).__name__}", _retryable(e)
            ) from None

    def _put(self, name: str, value: str, overwrite: bool) -> bool:
        try:
            self._ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=overwrite)
        except Exception as e:  # noqa: BLE001
            if _code(e) == "ParameterAlreadyExists":
                return False
            raise StateStoreError(
                f"SSM {name}", f"PutParameter failed: {_code(e) or type(e).__name__}", _retryable(e)
            ) from None
        return True

    def _delete(self, name: str) -> None:
        try:
            self._ssm.delete_parameter(Name=name)
        except Exception as e:  # noqa: BLE001
            if _code(e) != "ParameterNotFound":
                raise StateStoreError(
                    f"SSM {name}", f"DeleteParameter failed: {_code(e) or type(e).__name__}", _retryable(e)
                ) from None

    # -- the three records -------------------------------------------------------------------------------

    def put_pending(self, pending: PendingRequest) -> None:
        self._put(self._name(pending.request_id, "request"), pending.model_dump_json(), overwrite=True)

    def get_pending(self, rid: str) -> PendingRequest | None:
        raw = self._get(self._name(rid, "request"))
        return None if raw is None else PendingRequest.model_validate_json(raw)

    def delete_pending(self, rid: str) -> None:
        self._delete(self._name(rid, "request"))

    def list_pending(self) -> list[PendingRequest]:
        """Every request record under the prefix that has no grant record yet."""
        names: dict[str, dict[str, str]] = {}
        token: str | None = None
        for _ in range(1000):
            kwargs: dict[str, Any] = {"Path": self.prefix, "Recursive": True, "MaxResults": 10}
            if token:
                kwargs["NextToken"] = token
            try:
                page = self._ssm.get_parameters_by_path(**kwargs)
            except Exception as e:  # noqa: BLE001
                raise StateStoreError(
                    f"SSM {self.prefix}", f"GetParametersByPath failed: {_code(e)}", _retryable(e)
                ) from None
            for p in page.get("Parameters", []):
                rid, _, leaf = str(p["Name"])[len(self.prefix) + 1 :].partition("/")
                names.setdefault(rid, {})[leaf] = str(p["Value"])
            token = page.get("NextToken")
            if not token:
                break
        out = []
        for leaves in names.values():
            if "request" in leaves and "grant" not in leaves:
                try:
                    out.append(PendingRequest.model_validate_json(leaves["request"]))
                except ValueError:
                    continue
        return sorted(out, key=lambda p: p.requested_at)

    def put_approval(self, record: ApprovalRecord) -> None:
        self._put(self._name(record.request_id, "approval"), record.model_dump_json(), overwrite=True)

    def get_approval(self, rid: str) -> ApprovalRecord | None | str:
        """The approval record; ``None`` when there is none; a string (the problem) when unreadable."""
        raw = self._get(self._name(rid, "approval"))
        if raw is None:
            return None
        try:
            return ApprovalRecord.model_validate_json(raw)
        except ValueError:
            return "the approval record is not a valid approval"

    def claim_grant(self, rid: str, value: dict[str, Any]) -> bool:
        """Create the grant record; ``False`` if it exists already (another poll or replica got there)."""
        return self._put(self._name(rid, "grant"), json.dumps(value, sort_keys=True), overwrite=False)

    def set_grant(self, rid: str, value: dict[str, Any]) -> None:
        self._put(self._name(rid, "grant"), json.dumps(value, sort_keys=True), overwrite=True)

    def mark_aborted(self, rid: str) -> None:
        """Say that the execution was aborted, before looking for a membership to remove (see ``abort``)."""
        self._put(self._name(rid, "abort"), json.dumps({"aborted": True}), overwrite=True)

    def is_aborted(self, rid: str) -> bool:
        return self._get(self._name(rid, "abort")) is not None

    def get_grant(self, rid: str) -> dict[str, Any] | None:
        raw = self._get(self._name(rid, "grant"))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return {"state": "corrupt"}
        return value if isinstance(value, dict) else {"state": "corrupt"}


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
    kms_key_arn: str,
    signing_algorithm: str,
    max_validity: timedelta,
    approvers: dict[str, str],
    now: datetime | None = None,
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
    )
    ours = (request_id, execution_id, email.casefold(), strategy, target, duration_seconds)
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
    if who == email.casefold():
        raise ValueError(f"self-approval: {record.approver_arn} is the requester")
    return record.approver_arn, who


def sign_approval(pending: PendingRequest, valid_for: timedelta, region: str | None = None) -> ApprovalRecord:
    """Sign ``pending`` as the caller's AWS identity (the approver side of ``aptible approve``)."""
    valid_for = min(valid_for, timedelta(seconds=pending.max_validity_seconds))
    key_region = region or pending.kms_key_arn.split(":")[3]
    try:
        arn = str(_client("sts", key_region).get_caller_identity()["Arn"])
    except Exception as e:  # noqa: BLE001
        raise StateStoreError("sts:GetCallerIdentity", _code(e) or type(e).__name__, _retryable(e)) from None
    now = datetime.now(UTC)
    expires_at = int((now + valid_for).timestamp())
    # The signed terms are the record's terms: one mapping for both, so they cannot drift apart.
    terms: dict[str, Any] = {
        "request_id": pending.request_id,
        "execution_id": pending.execution_id,
        "email": pending.email,
        "strategy": pending.strategy,
        "target": pending.target,
        "duration_seconds": pending.duration_seconds,
        "expires_at": expires_at,
        "approver_arn": arn,
    }
    message = canonical(**terms)
    try:
        sig = _client("kms", key_region).sign(
            KeyId=pending.kms_key_arn,
            Message=message,
            MessageType="RAW",
            SigningAlgorithm=pending.signing_algorithm,
        )["Signature"]
    except Exception as e:  # noqa: BLE001
        raise StateStoreError(
            f"KMS {pending.kms_key_arn}",
            f"Sign failed: {_code(e) or type(e).__name__} (only approvers may sign with this key)",
            _retryable(e),
        ) from None
    return ApprovalRecord(
        **terms,
        approved_at=now.isoformat(),
        kms_key_arn=pending.kms_key_arn,
        signing_algorithm=pending.signing_algorithm,
        signature=base64.b64encode(sig).decode(),
    )
