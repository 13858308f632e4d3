"""The AWS Secrets Manager Agent HTTP API, as AWS's agent serves it (aws/aws-secretsmanager-agent).

Requests (HTTP/1.1, keep-alive, GET only):

* ``GET /secretsmanager/get?secretId=ID[&versionStage=S|&versionId=V][&refreshNow=true]`` and the
  path style ``GET /v1/ID?...``: 200 with GetSecretValue's JSON (``ARN``, ``Name``, ``VersionId``,
  ``SecretString`` or ``SecretBinary`` (base64), ``VersionStages``, ``CreatedDate``). ``ID`` is a Secrets
  Manager ARN (full or partial), a configured alias, or a secret name (in the settings' region and the
  caller's account; aliases win over names). ``refreshNow`` (true/false/1/0) skips the cache.
* ``GET /ping``: 200 ``healthy``; ``GET /healthz``: 200 JSON with the front ends and cache counters. Both
  are health checks; they need the token too unless ``open_health`` is set (AWS's agent answers
  ``/ping`` without one).

Every request must carry the token in one of ``ssrf_headers`` (AWS's defaults:
``X-Aws-Parameters-Secrets-Token``, ``X-Vault-Token``), and no ``X-Forwarded-For`` header; the checks come
in AWS's order, except that the connection limit is checked after the token (a connection counts against
``max_connections`` once a request on it carried the token, see :mod:`.context`):

====== ============================================ ===================================
status when                                         body
====== ============================================ ===================================
400    ``X-Forwarded-For`` present                  ``Forwarded``
403    token missing or wrong                       ``Bad Token``
403    secret not in the allow-list                 ``{"__type": "AccessDeniedException", ...}``
429    too many authenticated connections           ``Connection limit exceeded``
405    not GET                                      ``Not allowed``
404    unknown path                                 ``Not found``
400    unknown or missing query parameter           ``unknown parameter: x`` / ``missing parameter secretId``
431    request head above ``max_header_bytes``      ``Request header fields too large``
400/5xx AWS-side failure                            ``{"__type": "ResourceNotFoundException", "message": ...}``
====== ============================================ ===================================

AWS-side failures use the JSON 1.1 error shape of AWS's agent; the message is the plugin's typed error
(reference and reason, never a value). Differences from AWS's agent: ``versionStage`` and ``versionId``
together are refused (400) rather than checked against each other; a name that ends like AWS's random
suffix (``-AbCdEf``) is taken for a full ARN's name, so ask for such secrets by ARN.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import json
import urllib.parse
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from flytekitplugins_awssecrets.errors import (
    AwsSecretsError,
    InvalidReferenceError,
    MissingTagError,
    SecretAccessDeniedError,
    SecretDecryptionError,
    SecretNotFoundError,
    SecretThrottledError,
    SettingsError,
    UnknownAliasError,
)
from flytekitplugins_awssecrets.refs import SecretRef, parse_reference
from flytekitplugins_awssecrets.serve.allow import NotAllowedError, refused
from flytekitplugins_awssecrets.serve.context import Context
from flytekitplugins_awssecrets.serve.source import Served

__all__ = ["route", "Response", "GetSecretValueOutput", "TOKEN_HEADERS", "REASONS", "MAX_HEADERS"]

#: Header names that may carry the token by default (AWS's agent's ``ssrf_headers``), lower case.
TOKEN_HEADERS = ("x-aws-parameters-secrets-token", "x-vault-token")
_PARAMS = {"secretId", "versionStage", "versionId", "refreshNow"}
MAX_HEADERS = 100
REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class GetSecretValueOutput(BaseModel):
    """GetSecretValue's answer, as AWS's agent returns it. Values are kept out of ``repr``.

    Example::

        >>> GetSecretValueOutput(ARN="arn:...", Name="db", VersionId="v1", SecretString="...").model_dump(
        ...     exclude_none=True)["Name"]
        'db'
    """

    model_config = ConfigDict(frozen=True)

    ARN: str
    Name: str
    VersionId: str
    SecretString: str | None = Field(default=None, repr=False)
    SecretBinary: str | None = Field(default=None, repr=False)
    VersionStages: list[str] | None = None
    CreatedDate: float | None = None

    @classmethod
    def from_served(cls, s: Served) -> GetSecretValueOutput:
        return cls(
            ARN=s.arn,
            Name=s.name,
            VersionId=s.version_id,
            SecretString=None if isinstance(s.value, bytes) else s.value,
            SecretBinary=base64.b64encode(s.value).decode("ascii") if isinstance(s.value, bytes) else None,
            VersionStages=list(s.version_stages) if s.version_stages is not None else None,
            CreatedDate=s.created_date,
        )


class AwsErrorBody(BaseModel):
    """AWS's JSON 1.1 error body: ``{"__type": "ResourceNotFoundException", "message": "..."}``.

    Example::

        >>> AwsErrorBody.model_validate({"__type": "InternalFailure", "message": "m"}).model_dump_json(by_alias=True)
        '{"__type":"InternalFailure","message":"m"}'
    """

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    type: str = Field(alias="__type")
    message: str


@dataclass
class Response:
    """One HTTP answer; ``outcome`` is the value-free summary that goes to the log."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    close: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    outcome: str = ""


def _text(status: int, text: str, *, close: bool = False) -> Response:
    return Response(status, text.encode("utf-8"), close=close, outcome=text)


def _aws_error(status: int, code: str, message: str) -> Response:
    body = (
        AwsErrorBody.model_validate({"__type": code, "message": message})
        .model_dump_json(by_alias=True)
        .encode("utf-8")
    )
    return Response(status, body, "application/x-amz-json-1.1", outcome=code)


def error_response(err: AwsSecretsError) -> Response:
    """The HTTP answer for a typed error: AWS's status and error code, the plugin's message."""
    msg = str(err)
    if isinstance(err, SecretNotFoundError | UnknownAliasError):
        return _aws_error(400, "ResourceNotFoundException", msg)
    if isinstance(err, InvalidReferenceError):
        return _aws_error(400, "InvalidParameterException", msg)
    if isinstance(err, SecretAccessDeniedError | MissingTagError):
        return _aws_error(400, "AccessDeniedException", msg)
    if isinstance(err, SecretDecryptionError):
        return _aws_error(400, "DecryptionFailure", msg)
    if isinstance(err, SecretThrottledError):
        return _aws_error(400, "ThrottlingException", msg)
    if isinstance(err, SettingsError):  # e.g. no region for a plain name: the request cannot be served
        return _aws_error(400, "InvalidRequestException", msg)
    if err.retryable:
        return _aws_error(502, "ConnectionError", msg)
    return _aws_error(500, "InternalFailure", msg)


# --- request handling (pure, then blocking) -------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A parsed GetSecretValue request."""

    secret_id: str
    version_stage: str | None = None
    version_id: str | None = None
    refresh_now: bool = False


def parse_query(secret_id: str | None, query: str) -> Query | Response:
    """AWS's agent's query rules: known parameters only, ``secretId`` required, ``refreshNow`` boolean."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, max_num_fields=16)
    except ValueError:
        return _text(400, "too many query parameters")
    values: dict[str, str] = {}
    for k, v in pairs:
        allowed = _PARAMS if secret_id is None else _PARAMS - {"secretId"}
        if k not in allowed:
            return _text(400, f"unknown parameter: {k[:100]}")
        values[k] = v
    sid = secret_id if secret_id is not None else values.get("secretId", "")
    if not sid:
        return _text(400, "missing parameter secretId" if secret_id is None else "missing secret ID")
    refresh = values.get("refreshNow", "false").lower()
    if refresh not in ("true", "1", "false", "0"):
        return _text(400, "invalid refreshNow value")
    return Query(
        sid,
        values.get("versionStage") or None,
        values.get("versionId") or None,
        refresh in ("true", "1"),
    )


def reference_for(ctx: Context, q: Query) -> tuple[SecretRef, bool] | Response:
    """The reference a ``secretId`` names (a Secrets Manager ARN, a configured alias or a secret name), and
    whether it was an alias; a secret the allow-list does not list is a 403 before anything is read."""
    if q.version_stage and q.version_id:
        return _aws_error(
            400, "InvalidParameterException", "give versionStage or versionId, not both (this agent's rule)"
        )
    try:
        by_alias = False
        if q.secret_id.startswith("arn:"):
            ref = parse_reference(q.secret_id)
            if ref.service != "secretsmanager":
                return _aws_error(
                    400, "InvalidParameterException", f"{q.secret_id}: not a Secrets Manager secret ARN"
                )
            if ref.json_key or ref.version_stage or ref.version_id:
                return _aws_error(
                    400,
                    "InvalidParameterException",
                    f"{q.secret_id}: secretId takes no ':json-key:stage:id' fields; "
                    "use the versionStage or versionId parameter",
                )
            refusal = ctx.allow.check_arn(q.secret_id, ref, home=ctx.home)
        elif q.secret_id in (resources := ctx.source.resources()):
            by_alias = True
            refusal = ctx.allow.check_alias(q.secret_id, resources[q.secret_id])
            ref = parse_reference(resources[q.secret_id])
        elif ":" in q.secret_id:
            # Not a valid secret name, and would be read as ECS-style ':json-key' fields.
            return _aws_error(
                400, "InvalidParameterException", f"{q.secret_id[:300]}: a secret name has no ':'"
            )
        else:
            # A plain name, as AWS's agent accepts: the caller's account, the configured region.
            ref = ctx.source.ref_for_name(q.secret_id)
            refusal = ctx.allow.check_arn(q.secret_id, ref, home=ctx.home)
    except AwsSecretsError as e:
        return error_response(e)
    if refusal is not None:
        return not_allowed(refusal, q.secret_id)
    if q.version_stage or q.version_id:
        ref = dataclasses.replace(ref, version_stage=q.version_stage, version_id=q.version_id)
    # The API answers whole secrets: an alias's JSON key does not apply here.
    return dataclasses.replace(ref, json_key=None), by_alias


def not_allowed(err: NotAllowedError, asked: str) -> Response:
    """403, as AWS answers a secret the caller may not read; logged (what was asked, never a value)."""
    refused("http", asked, err)
    resp = _aws_error(403, "AccessDeniedException", str(err))
    resp.outcome = "refused: not in the allow-list"
    return resp


def get_secret(ctx: Context, q: Query) -> Response:
    """Answer one GetSecretValue request. Blocking."""
    found = reference_for(ctx, q)
    if isinstance(found, Response):
        return found
    ref, by_alias = found
    try:
        served = ctx.source.get(ref, refresh=q.refresh_now)
        # What AWS returned, by its real ARN and name: a partial ARN may resolve to another secret.
        refusal = (
            None if by_alias else ctx.allow.check_served(q.secret_id, ref, served.arn, served.name, ctx.home)
        )
    except AwsSecretsError as e:
        return error_response(e)
    if refusal is not None:
        return not_allowed(refusal, q.secret_id)
    body = GetSecretValueOutput.from_served(served).model_dump_json(exclude_none=True).encode("utf-8")
    return Response(
        200,
        body,
        "application/json",
        headers={"Cache-Control": "no-store"},
        outcome=f"ok {ref}",
    )


def health(ctx: Context) -> Response:
    """``/healthz``: 200 with the front ends and cache counters, or 503 when the settings became invalid
    (every secret request would fail, so an orchestrator should know)."""
    c = ctx.config
    doc: dict[str, object] = {
        "status": "ok",
        "front_ends": {
            "secret_agent": c.secret_agent,
            "unix_socket": c.unix_socket,
            "http": c.http,
        },
        "open_connections": ctx.open_connections,
        "authenticated_connections": ctx.authenticated,
        "evicted_unauthenticated": ctx.evicted,
    }
    try:
        doc["cache"] = ctx.source.cache_stats()
    except AwsSecretsError as e:
        doc.update(status="error", error=str(e))
        return Response(503, json.dumps(doc).encode(), "application/json", outcome="healthz: settings error")
    return Response(200, json.dumps(doc).encode(), "application/json", outcome="healthz")


def _token_ok(ctx: Context, headers: dict[str, str]) -> bool:
    if not ctx.token:
        return False
    expected = ctx.token.encode("utf-8")
    for name in ctx.config.ssrf_headers:
        got = headers.get(name.lower())
        # compare_digest: the time taken must not tell a client how much of the token it guessed.
        if got is not None and hmac.compare_digest(got.encode("utf-8", "replace"), expected):
            return True
    return False


async def route(
    ctx: Context,
    method: str,
    target: str,
    headers: dict[str, str],
    writer: asyncio.StreamWriter | None = None,
) -> Response:
    path, _, query = target.partition("?")
    token_ok = _token_ok(ctx, headers)
    if token_ok and writer is not None:
        ctx.authenticate(writer)
    if path in ("/ping", "/healthz"):
        if method not in ("GET", "HEAD"):
            return _text(405, "Not allowed")
        if not ctx.config.open_health and not token_ok:
            return _text(403, "Bad Token")
        if ctx.far_over_limit(writer):
            return _text(429, "Connection limit exceeded", close=True)
        return _text(200, "healthy") if path == "/ping" else health(ctx)
    if "x-forwarded-for" in headers:
        # A request relayed by a proxy may come from anywhere: AWS's agent refuses them, so do we.
        return _text(400, "Forwarded")
    if not token_ok:
        return _text(403, "Bad Token")
    if ctx.over_limit(writer):
        return _text(429, "Connection limit exceeded", close=True)
    if method != "GET":
        return _text(405, "Not allowed")
    if path == "/secretsmanager/get":
        q = parse_query(None, query)
    elif path.startswith(ctx.config.path_prefix):
        q = parse_query(urllib.parse.unquote(path[len(ctx.config.path_prefix) :]), query)
    else:
        return _text(404, "Not found")
    if isinstance(q, Response):
        return q
    return await ctx.blocking(lambda: get_secret(ctx, q))
