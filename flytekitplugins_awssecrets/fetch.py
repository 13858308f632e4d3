"""Reading secrets from AWS: one function per API call, with AWS errors turned into the plugin's typed errors.

* ``GetSecretValue``: one secret, current version or pinned by ``VersionStage`` / ``VersionId``.
* ``BatchGetSecretValue``: up to 20 current versions, honouring its per-secret ``Errors``; when the call
  itself fails it says why (:class:`BatchRefused`) and leaves the next step to the caller.
* SSM ``GetParameters`` with decryption, 10 names per call (``name:label`` and ``name:version`` selectors).
* Tags, when the settings require some: ``DescribeSecret`` / ``ListTagsForResource``, one per secret.

Which of them is used, how often and with which retries is decided in one place, :mod:`strategies`.
Every function here takes a client and returns, for each reference, a :class:`Fetched` payload or the
typed error that explains why there is none. Nothing here caches; see :mod:`resolver`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flytekitplugins_awssecrets.errors import (
    CREDENTIAL_CODES,
    AwsSecretsError,
    CredentialsRejectedError,
    SecretAccessDeniedError,
    SecretDecryptionError,
    SecretFetchError,
    SecretNotFoundError,
    SecretThrottledError,
    markup_error,
)
from flytekitplugins_awssecrets.links import doc_link
from flytekitplugins_awssecrets.refs import SecretRef

__all__ = [
    "Fetched",
    "Result",
    "BatchRefused",
    "get_secret_value",
    "batch_get_secret_value",
    "get_parameters",
    "parse_payload",
    "payload_error",
    "fetch_tags",
    "translate_error",
]

SSM_BATCH = 10


@dataclass(frozen=True)
class Fetched:
    """A payload as AWS returned it. Its repr never shows the value."""

    value: str | bytes = field(repr=False)
    arn: str = ""
    version_id: str = ""
    tags: dict[str, str] | None = None
    #: What Secrets Manager says of the version it returned (``serve`` answers in GetSecretValue's shape).
    name: str = ""
    version_stages: tuple[str, ...] | None = None
    created_date: float | None = None
    #: How it was read ("GetSecretValue", "BatchGetSecretValue", "GetParameters", "agent"), when (epoch
    #: seconds) and how long the round that read it took: what a task's record and deck show.
    api: str = ""
    read_at: float = 0.0
    read_ms: float = 0.0

    @property
    def binary(self) -> bool:
        return isinstance(self.value, bytes)


Result = dict[tuple[str, ...], "Fetched | AwsSecretsError"]

_THROTTLE = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ThrottledException",
    "ProvisionedThroughputExceededException",
}
_DENIED = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"}


#: botocore errors raised while credentials load (before any call reaches AWS) -> what that means.
_CREDENTIALS_NOT_LOADED = {
    "UnauthorizedSSOTokenError": "the SSO session has expired or was never started (run `aws sso login`)",
    "SSOTokenLoadError": "the SSO token could not be loaded (run `aws sso login`)",
    "TokenRetrievalError": "the SSO token could not be refreshed (run `aws sso login`)",
    "CredentialRetrievalError": "the credential provider (credential_process, SSO, container or web identity) failed",
    "PartialCredentialsError": "only part of a key pair is set (an access key id without its secret key?)",
}


def _action(ref: SecretRef, operation: str) -> tuple[str, str]:
    if ref.service == "ssm":
        return "ssm:GetParameters", ref.arn
    return f"secretsmanager:{operation}", ref.arn + ("" if ref.full_arn else "-??????")


def translate_error(ref: SecretRef, exc: BaseException, operation: str = "GetSecretValue") -> AwsSecretsError:
    """Turn a botocore exception (or an error entry) into the plugin's typed error for ``ref``."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        ReadTimeoutError,
    )
    from botocore.parsers import ResponseParserError

    ref_s = str(ref)
    if isinstance(exc, AwsSecretsError):  # e.g. a SettingsError raised while botocore fetched credentials
        return exc
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        message = str(err.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return error_from_code(ref, code, message, status, operation)
    if isinstance(exc, NoCredentialsError):
        return SecretFetchError(
            ref_s,
            f"no AWS credentials found (set AWS_PROFILE, static keys or a role; see {doc_link('credentials')})",
        )
    if isinstance(exc, (ReadTimeoutError, ConnectionError)):
        from flytekitplugins_awssecrets.credentials import unreachable_error

        return unreachable_error(ref_s, exc, ref.service or "secretsmanager")  # type: ignore[no-any-return]
    # HTTPClientError: a connection closed or reset mid-answer (ConnectionClosedError).
    if isinstance(exc, HTTPClientError):
        return SecretFetchError(ref_s, f"network error talking to AWS: {type(exc).__name__}", retryable=True)
    if isinstance(exc, ResponseParserError):
        # An answer that is not AWS's (a proxy's HTML page): retryable, and its text is not kept.
        return SecretFetchError(ref_s, "the answer could not be parsed as AWS's (a proxy?)", retryable=True)
    loading = _CREDENTIALS_NOT_LOADED.get(type(exc).__name__)
    if loading is not None:
        from flytekitplugins_awssecrets.provenance import credentials_source

        # The exception's own text can quote a credential process's output: only its type is kept.
        return CredentialsRejectedError(ref_s, type(exc).__name__, credentials_source(), loading)
    if isinstance(exc, BotoCoreError):
        return SecretFetchError(ref_s, f"{type(exc).__name__}: {exc}")
    return SecretFetchError(ref_s, f"unexpected {type(exc).__name__}")


def error_from_code(ref: SecretRef, code: str, message: str, status: int, operation: str) -> AwsSecretsError:
    ref_s = str(ref)
    code, message = _unwrap_markup(code, message)
    if code in CREDENTIAL_CODES:
        from flytekitplugins_awssecrets.provenance import credentials_source

        return CredentialsRejectedError(ref_s, code, credentials_source())
    if code in (
        "ResourceNotFoundException",
        "ParameterNotFound",
        "ParameterVersionNotFound",
        "ParameterVersionLabelNotFound",
    ):
        return SecretNotFoundError(ref_s, _short(message))
    if code in _DENIED or status == 403:
        action, resource = _action(ref, operation)
        return SecretAccessDeniedError(ref_s, action, resource, message)
    if code in (
        "DecryptionFailure",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
    ):
        return SecretDecryptionError(ref_s, message)
    if (
        code in _THROTTLE
        or status == 429
        or status >= 500
        or code in ("InternalServiceError", "InternalServerError", "ServiceUnavailable")
    ):
        return SecretThrottledError(ref_s, f"{code or status}")
    if code == "InvalidRequestException" and "deletion" in message.lower():
        return SecretNotFoundError(ref_s, "the secret is scheduled for deletion")
    return SecretFetchError(ref_s, f"{code}: {message}" if code else message)


def _unwrap_markup(code: str, message: str) -> tuple[str, str]:
    """An endpoint that answered a JSON API in XML (or HTML): botocore passes the raw body as the message
    and the HTTP status as the code; take AWS's code and message out of it, keep none of the markup."""
    markup = markup_error(message)
    if markup is None:
        return code, message
    inner_code, inner_message = markup
    if inner_code and (not code or code.isdigit()):
        code = inner_code
    return code, inner_message or "(the endpoint answered with an XML/HTML document, not shown)"


def _short(message: str) -> str:
    from flytekitplugins_awssecrets.errors import clean_aws_message

    return clean_aws_message(message)[:120]


def payload_error(ref: SecretRef, item: Any, service: str = "secretsmanager") -> AwsSecretsError | None:
    """Why an answer that parsed holds no value, or None when it holds one.

    A proxy's HTML page, ``{}`` or an empty body parse as an answer without ``SecretString`` and
    ``SecretBinary`` (SSM: without ``Value``); taking that for an empty secret would hand a task an empty
    key. The error is retryable (the next attempt may reach AWS) and, being an error, never cached.
    """
    if service == "ssm":
        ok = isinstance(item, dict) and isinstance(item.get("Value"), str)
        what = "a parameter without a Value"
    else:
        ok = isinstance(item, dict) and (
            isinstance(item.get("SecretString"), str)
            # bytes from botocore; a base64 string from the agent HTTP API
            or isinstance(item.get("SecretBinary"), bytes | bytearray | str)
        )
        what = "neither SecretString nor SecretBinary"
    if ok:
        return None
    return SecretFetchError(
        str(ref),
        f"the answer holds {what} (is AWS_ENDPOINT_URL or a proxy answering instead of AWS?)",
        retryable=True,
    )


def parse_payload(
    ref: SecretRef, item: Any, *, binary_is_base64: bool = False, api: str = "GetSecretValue"
) -> Fetched | AwsSecretsError:
    """The one place a Secrets Manager payload is read: a GetSecretValue answer, a BatchGetSecretValue item
    or the agent HTTP API's JSON (same fields; ``SecretBinary`` base64 there) as :class:`Fetched`.

    An answer with neither ``SecretString`` nor ``SecretBinary`` is a typed, retryable error (never cached:
    the cache keeps only :class:`Fetched`), not an empty secret.
    """
    missing = payload_error(ref, item)
    if missing is not None:
        return missing
    string, binary = item.get("SecretString"), item.get("SecretBinary")
    value: str | bytes
    if string is not None:
        value = str(string)
    elif binary is not None:
        if binary_is_base64:
            import base64
            import binascii

            try:
                value = base64.b64decode(str(binary), validate=True)
            except (binascii.Error, ValueError):
                return SecretFetchError(str(ref), "SecretBinary is not valid base64", retryable=True)
        else:
            value = bytes(binary)
    else:  # pragma: no cover - payload_error refused it above
        return SecretFetchError(
            str(ref), "the answer holds neither SecretString nor SecretBinary", retryable=True
        )
    stages = item.get("VersionStages")
    created: Any = item.get("CreatedDate")  # a datetime from botocore, epoch seconds from the agent
    return Fetched(
        value,
        str(item.get("ARN", "")),
        str(item.get("VersionId", "")),
        name=str(item.get("Name", "")),
        version_stages=tuple(str(s) for s in stages) if isinstance(stages, list) else None,
        created_date=(
            created.timestamp()
            if hasattr(created, "timestamp")
            else float(created)
            if isinstance(created, int | float)
            else None
        ),
        api=api,
    )


def get_secret_value(client: Any, ref: SecretRef) -> Fetched | AwsSecretsError:
    """One ``GetSecretValue`` (current version, or the pinned stage / id)."""
    kwargs: dict[str, Any] = {"SecretId": ref.arn}
    if ref.version_id:
        kwargs["VersionId"] = ref.version_id
    elif ref.version_stage:
        kwargs["VersionStage"] = ref.version_stage
    try:
        r = client.get_secret_value(**kwargs)
    except Exception as e:  # noqa: BLE001 - every failure becomes a typed, value-free error
        return translate_error(ref, e, "GetSecretValue")
    return parse_payload(ref, r)


@dataclass(frozen=True)
class BatchRefused:
    """The ``BatchGetSecretValue`` call itself failed (``reason``: "denied", "throttled", "failed");
    ``errors`` says why for each secret, for a caller that does not read them another way."""

    reason: str
    errors: Result


def batch_get_secret_value(client: Any, refs: Sequence[SecretRef]) -> Result | BatchRefused:
    """One ``BatchGetSecretValue`` for up to 20 current versions, honouring its per-secret ``Errors``."""
    from botocore.exceptions import ClientError

    ids = [r.arn for r in refs]
    try:
        resp = client.batch_get_secret_value(SecretIdList=ids)
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        failed: Result = {r.fetch_id: translate_error(r, e, "BatchGetSecretValue") for r in refs}
        if code in _DENIED or status == 403 or code in ("UnknownOperationException", "InvalidAction"):
            return BatchRefused("denied", failed)
        if code in _THROTTLE or status == 429:
            return BatchRefused("throttled", failed)
        return BatchRefused("failed", failed)
    except Exception as e:  # noqa: BLE001
        return BatchRefused(
            "failed", {r.fetch_id: translate_error(r, e, "BatchGetSecretValue") for r in refs}
        )
    if not isinstance(resp, dict) or ("SecretValues" not in resp and "Errors" not in resp):
        return {r.fetch_id: payload_error(r, None) or SecretNotFoundError(str(r)) for r in refs}
    by_arn: dict[str, dict[str, Any]] = {}
    by_name: dict[str, dict[str, Any]] = {}
    for item in resp.get("SecretValues", []):
        by_arn[str(item.get("ARN", ""))] = item
        by_name[str(item.get("Name", ""))] = item
    errors = {str(e.get("SecretId", "")): e for e in resp.get("Errors", [])}
    out: Result = {}
    for r in refs:
        item = by_arn.get(r.arn)
        if item is None and not r.full_arn:
            cand = by_name.get(r.name)
            if cand is not None and str(cand.get("ARN", "")).startswith(r.arn + "-"):
                item = cand
        if item is not None:
            out[r.fetch_id] = parse_payload(r, item, api="BatchGetSecretValue")
        elif r.arn in errors:
            entry = errors[r.arn]
            out[r.fetch_id] = error_from_code(
                r, str(entry.get("ErrorCode", "")), str(entry.get("Message", "")), 0, "GetSecretValue"
            )
        else:
            out[r.fetch_id] = SecretNotFoundError(str(r), "absent from the batch answer")
    return out


def _ssm_selector(ref: SecretRef) -> str:
    if ref.version_id:
        return f"{ref.name}:{ref.version_id}"
    if ref.version_stage:
        return f"{ref.name}:{ref.version_stage}"
    return ref.name


def get_parameters(client: Any, refs: Sequence[SecretRef]) -> Result:
    """One ``GetParameters`` (with decryption) for up to 10 parameters (``name:label``, ``name:version``)."""
    names = [_ssm_selector(r) for r in refs]
    try:
        resp = client.get_parameters(Names=names, WithDecryption=True)
    except Exception as e:  # noqa: BLE001
        return {r.fetch_id: translate_error(r, e, "GetParameters") for r in refs}
    if not isinstance(resp, dict) or ("Parameters" not in resp and "InvalidParameters" not in resp):
        return {r.fetch_id: payload_error(r, None, "ssm") or SecretNotFoundError(str(r)) for r in refs}
    found: dict[str, dict[str, Any]] = {}
    for p in resp.get("Parameters", []):
        sel = str(p.get("Selector", "") or "")
        found[str(p.get("Name", "")) + sel] = p
        found.setdefault(str(p.get("Name", "")), p)
    invalid = set(resp.get("InvalidParameters", []))
    out: Result = {}
    for r, sel in zip(refs, names, strict=True):
        p = found.get(sel)
        if p is None and sel not in invalid:
            p = found.get(r.name)  # some endpoints omit ``Selector`` from the answer
        bad = payload_error(r, p, "ssm") if p is not None else None
        if bad is not None:
            out[r.fetch_id] = bad
        elif p is not None:
            out[r.fetch_id] = Fetched(
                str(p.get("Value", "")), str(p.get("ARN", "")), str(p.get("Version", "")), api="GetParameters"
            )
        else:
            out[r.fetch_id] = SecretNotFoundError(str(r), "parameter (or that version) does not exist")
    return out


def fetch_tags(client: Any, ref: SecretRef) -> dict[str, str] | AwsSecretsError:
    """The tags of one secret or parameter (one metadata call)."""
    try:
        if ref.service == "ssm":
            r = client.list_tags_for_resource(ResourceType="Parameter", ResourceId=ref.name)
            tags = r.get("TagList", [])
        else:
            r = client.describe_secret(SecretId=ref.arn)
            tags = r.get("Tags", []) or []
    except Exception as e:  # noqa: BLE001
        op = "ListTagsForResource" if ref.service == "ssm" else "DescribeSecret"
        err = translate_error(ref, e, op)
        if isinstance(err, SecretAccessDeniedError) and ref.service != "ssm":
            return SecretAccessDeniedError(str(ref), "secretsmanager:DescribeSecret", err.resource)
        return err
    return {str(t["Key"]): str(t.get("Value", "")) for t in tags}
