"""The approval machinery's records in SSM: one folder per request under the operator file's prefix.

``<prefix>/<request id>/request`` (the pending request approvers read), ``.../approval`` (an approver's
signed record), ``.../grant`` (the connector's record of the grant, created with ``Overwrite=False`` so one
replica grants, once) and ``.../abort`` (an abort's mark, which a grant being made checks). When a request
ends, :meth:`StateStoreClient.end_request` deletes all but the grant record, which stays as the request's
outcome; :meth:`StateStoreClient.sweep` deletes ended requests' folders once ``state.retention`` has passed,
so standard-parameter quota does not grow with use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from flytekitplugins_awssecrets.aptible.errors import AptibleError
from flytekitplugins_awssecrets.errors import clean_aws_message
from flytekitplugins_awssecrets.links import doc_link

__all__ = ["PendingRequest", "ApprovalRecord", "StateStoreClient", "StateStoreError", "ENDED"]

#: Grant record states after which nothing more happens to a request.
ENDED = ("revoked", "aborted", "timed-out", "corrupt")


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
    reason: str = ""
    expires_at: int
    approver_arn: str
    approved_at: str
    kms_key_arn: str
    signing_algorithm: str
    signature: str


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

    def _folders(self, max_pages: int = 1000) -> dict[str, dict[str, tuple[str, datetime | None]]]:
        """Every record under the prefix: request id -> leaf -> (value, last modified)."""
        names: dict[str, dict[str, tuple[str, datetime | None]]] = {}
        token: str | None = None
        for _ in range(max_pages):
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
                modified = p.get("LastModifiedDate")
                names.setdefault(rid, {})[leaf] = (
                    str(p["Value"]),
                    modified if isinstance(modified, datetime) else None,
                )
            token = page.get("NextToken")
            if not token:
                break
        return names

    def list_pending(self) -> list[PendingRequest]:
        """Every request record under the prefix that has no grant record yet."""
        out = []
        for leaves in self._folders().values():
            if "request" in leaves and "grant" not in leaves:
                try:
                    out.append(PendingRequest.model_validate_json(leaves["request"][0]))
                except ValueError:
                    continue
        return sorted(out, key=lambda p: p.requested_at)

    def end_request(self, rid: str, outcome: dict[str, Any]) -> None:
        """The request is over: the grant record becomes its ``outcome`` (kept for ``state.retention``, so
        a repeated poll finds it and grants nothing), every other record of it is deleted."""
        self.set_grant(rid, {**outcome, "ended_at": datetime.now(UTC).isoformat()})
        # The abort mark stays (swept with the grant record): a grant still being made when the abort ran
        # checks it after writing its own record.
        for leaf in ("request", "approval"):
            self._delete(self._name(rid, leaf))

    def sweep(self, retention: timedelta, max_pages: int = 100) -> list[str]:
        """Delete the folders of requests that ended (or were never granted) more than ``retention`` ago;
        the request ids deleted. A folder with a live grant (``granting``/``granted``) is never touched."""
        now = datetime.now(UTC)
        swept = []
        for rid, leaves in self._folders(max_pages).items():
            grant = leaves.get("grant")
            if grant is not None:
                try:
                    state = json.loads(grant[0]).get("state")
                except (ValueError, AttributeError):
                    state = "corrupt"
                if state not in ENDED:
                    continue
            times = [t for _, t in leaves.values()]
            if not times or any(t is None for t in times):
                continue
            newest = max(t for t in times if t is not None)
            if newest.tzinfo is None:
                newest = newest.replace(tzinfo=UTC)
            if newest > now - retention:
                continue
            for leaf in leaves:
                self._delete(self._name(rid, leaf))
            swept.append(rid)
        return swept

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
