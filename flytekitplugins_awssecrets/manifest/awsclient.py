"""boto3 clients for the manifest commands, and the one place AWS failures become messages.

boto3 is imported here, lazily, so that ``pyflyte-awssecrets --help`` never pays for it. Retries are
botocore's own: ``adaptive`` mode adds client-side rate limiting on top of ``standard`` backoff, which
is what keeps many concurrent ``PutParameter`` calls within SSM's throughput
instead of failing on ``ThrottlingException``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from flytekitplugins_awssecrets.errors import AwsSecretsError, clean_aws_message

__all__ = ["AwsCallError", "make_client", "error_code", "describe_error", "scrub"]

#: Retry settings, in one place. ``max_attempts`` counts the first try.
RETRY_MODE = "adaptive"
MAX_ATTEMPTS = 10


class AwsCallError(AwsSecretsError):
    """An AWS call failed (credentials, network, permissions, throttling after retries); exit code 3.

    Example::

        try:
            store.save(manifest, values)
        except AwsCallError as e:
            print(e.code)     # e.g. "AccessDeniedException"
    """

    def __init__(self, reference: str, detail: str, code: str = "", hint: str = "") -> None:
        self.code = code
        super().__init__(reference, detail, hint)


def make_client(service: str, region: str, max_pool: int = 10) -> Any:
    """A boto3 client with throttling-aware retries; honours ``AWS_ENDPOINT_URL`` like any boto3 client."""
    import boto3
    from botocore.config import Config

    from flytekitplugins_awssecrets.credentials import limit_connection_retries
    from flytekitplugins_awssecrets.settings import get_settings

    # Throttling gets MAX_ATTEMPTS; an unreachable endpoint only the settings' connect_attempts, with the
    # settings' time-outs, so that a wrong AWS_ENDPOINT_URL fails in seconds.
    s = get_settings()
    config = Config(
        retries={"mode": RETRY_MODE, "max_attempts": MAX_ATTEMPTS},
        max_pool_connections=max(10, max_pool),
        connect_timeout=s.connect_timeout,
        read_timeout=s.read_timeout,
    )
    client = boto3.session.Session().client(service, region_name=region, config=config)
    limit_connection_retries(client, s.connect_attempts)
    return client


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


# AWS validation messages echo the offending input: "Value '<the secret>' at 'value' failed to satisfy ...".
_ECHOED = re.compile(r"(?i)value\s+'[^']*'\s+at\s+'[^']*'|value\s+\"[^\"]*\"")


def scrub(text: str, values: Iterable[str] = ()) -> str:
    """Remove echoed inputs and any of ``values`` from an AWS message before anyone sees it."""
    for v in values:
        if v and len(v) >= 3:
            text = text.replace(v, "***")
    return clean_aws_message(_ECHOED.sub("value '***'", text))


def describe_error(exc: BaseException, values: Iterable[str] = ()) -> tuple[str, str]:
    """``(code, message)`` for any exception a boto3 call raised, scrubbed of values."""
    code = error_code(exc)
    if code:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
        return code, scrub(f"{code}: {message}", values)
    from flytekitplugins_awssecrets.credentials import unreachable_error

    unreachable = unreachable_error("AWS", exc, _service_of(exc))
    if unreachable is not None:
        return "EndpointUnreachable", f"{unreachable.detail} ({unreachable.hint})"
    # botocore's own errors (no credentials, a bad region) carry no values; keep the class name.
    return type(exc).__name__, scrub(f"{type(exc).__name__}: {exc}", values)


def _service_of(exc: BaseException) -> str:
    """The service a botocore connection error was talking to, from its URL (for naming the variable)."""
    url = str(getattr(exc, "kwargs", {}).get("endpoint_url", "") or "")
    for service in ("secretsmanager", "ssm", "kms", "sts"):
        if f"{service}." in url:
            return service
    return ""
