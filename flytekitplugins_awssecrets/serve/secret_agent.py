"""The Secret Agent front end: framed JSON requests on TCP or a Unix socket (see :mod:`.agent_protocol`).

Behaviour, decided where Secret Agent's description leaves room:

* ``Resource`` names one of the configured resources (the ``resources`` of a Secret Agent file, the
  plugin's ``aliases``), and is required, as Aerospike's agent requires it: a request without it is an
  error listing them, however many are configured. Only configured resources are served (a client cannot
  name an arbitrary ARN), and without a Secret Agent file only those serve's allow-list lists
  (:mod:`.allow`).
* ``SecretKey`` is a top-level key of the JSON secret (tried literally first, so ``tls.crt`` works), or a
  dotted path into it (``db.password``). When it is absent or empty, the whole secret is served (its
  text, or its bytes for a binary secret); a resource whose ARN carries an ECS-style JSON key
  (``arn...:password``) serves that key instead.
* ``SecretValue`` follows ``convert-to-base64`` as Aerospike's agent does: true, the base64 of the value's
  UTF-8 bytes (text) or of the bytes (binary secret); false (Aerospike's default in a Secret Agent file),
  the stored value itself, which must be base64 (else an ``Error`` naming the resource and key).
* A connection is unauthenticated (``header_timeout``, evictable, see :mod:`.context`) until its first
  well-formed request; then it counts against ``max_connections``.
* Several requests may be sent on one connection, one after the other. A body that is not a valid request
  gets an ``Error`` and the connection stays open; a bad header (magic, length above ``max_body_bytes``) or a
  truncated message gets an ``Error`` and the connection is closed, because the stream is out of step.
"""

from __future__ import annotations

import asyncio
import time

from flytekitplugins_awssecrets.errors import AwsSecretsError
from flytekitplugins_awssecrets.serve.agent_protocol import (
    HEADER_SIZE,
    AgentRequest,
    FrameError,
    decode_request,
    error_frame,
    parse_header,
    secret_value_frame,
)
from flytekitplugins_awssecrets.serve.allow import refused
from flytekitplugins_awssecrets.serve.context import Context, logger
from flytekitplugins_awssecrets.serve.source import pick_key

__all__ = ["handle_connection", "answer"]


def _names(resources: dict[str, str]) -> str:
    shown = sorted(resources)[:50]
    return ", ".join(repr(n) for n in shown) or "none"


def answer(ctx: Context, req: AgentRequest) -> tuple[bytes, str]:
    """The response frame for one request, and a value-free outcome for the log. Blocking."""
    try:
        return _answer(ctx, req)
    except AwsSecretsError as e:
        # Typed errors (settings that became invalid, AWS failures) name the reference, never a value.
        return error_frame(str(e)), f"error {type(e).__name__}"
    except Exception as e:  # noqa: BLE001 - one request's failure must not cost the client its connection
        logger.error("secret-agent: internal error %s", type(e).__name__)
        return error_frame("internal error; see the server log"), f"internal error {type(e).__name__}"


def _answer(ctx: Context, req: AgentRequest) -> tuple[bytes, str]:
    resources = ctx.source.resources()
    name = req.Resource or None
    if name is None:
        # As Aerospike's agent: a request must name its resource, however many are configured.
        if not resources:
            msg = "no resources are configured (secret-manager.aws.resources, or aliases in the settings)"
            return error_frame(msg), "no resources"
        msg = f"Resource is required ({len(resources)} configured: {_names(resources)})"
        return error_frame(msg), "resource missing"
    if name not in resources:
        return error_frame(f"unknown resource {name!r}; configured: {_names(resources)}"), "unknown resource"
    refusal = ctx.allow.check_alias(name, resources[name])
    if refusal is not None:
        refused("secret-agent", name, refusal)
        return error_frame(str(refusal)), "refused: not in the allow-list"
    ref = ctx.source.resource_ref(name)
    try:
        served = ctx.source.get(ref)
        key = req.SecretKey or ref.json_key
        value = pick_key(str(ref), served.value, key) if key else served.value
        what = f"key {key!r}" if key else "the whole secret"
        frame = secret_value_frame(value, convert_to_base64=ctx.config.convert_to_base64, reference=what)
    except AwsSecretsError as e:
        return error_frame(f"resource {name!r}: {e}"), f"error {type(e).__name__}"
    return frame, "ok"


async def handle_connection(ctx: Context, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve framed requests on one connection until the client closes it or a fatal error."""
    peer = _peer(writer)
    while True:
        timeout = ctx.timeout_for(writer)
        try:
            header = await asyncio.wait_for(reader.readexactly(HEADER_SIZE), timeout)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                logger.info("secret-agent %s: truncated header (%d bytes), closing", peer, len(e.partial))
                await _send(writer, error_frame(f"truncated header: {len(e.partial)} of {HEADER_SIZE} bytes"))
            return  # a clean close between messages
        except TimeoutError:
            logger.debug("secret-agent %s: idle for %.0f s, closing", peer, timeout)
            return
        try:
            length = parse_header(header, ctx.config.max_body_bytes)
        except FrameError as e:
            logger.info("secret-agent %s: %s, closing", peer, e.reason)
            await _send(writer, error_frame(e.reason))
            return
        try:
            body = await asyncio.wait_for(reader.readexactly(length), timeout)
        except asyncio.IncompleteReadError as e:
            reason = f"truncated body: {len(e.partial)} of {length} bytes"
            logger.info("secret-agent %s: %s, closing", peer, reason)
            await _send(writer, error_frame(reason))
            return
        except TimeoutError:
            reason = f"body of {length} bytes not received within {timeout:.0f} s"
            logger.info("secret-agent %s: %s, closing", peer, reason)
            await _send(writer, error_frame(reason))
            return
        started = time.monotonic()
        try:
            req = decode_request(body)
        except FrameError as e:
            logger.info("secret-agent %s: bad request: %s", peer, e.reason)
            if not await _send(writer, error_frame(f"bad request: {e.reason}"), close=False):
                return
            continue
        ctx.authenticate(writer, "agent")
        if ctx.over_limit(writer):
            logger.warning(
                "secret-agent %s: connection limit (%d) exceeded", peer, ctx.config.max_connections
            )
            await _send(writer, error_frame("connection limit exceeded; retry later"))
            return
        frame, outcome = await ctx.blocking(lambda req=req: answer(ctx, req))  # type: ignore[misc]
        logger.info(
            "secret-agent %s: resource=%r key=%r -> %s (%.1f ms)",
            peer,
            req.Resource,
            req.SecretKey,
            outcome,
            (time.monotonic() - started) * 1000,
        )
        if not await _send(writer, frame, close=False):
            return


async def _send(writer: asyncio.StreamWriter, data: bytes, *, close: bool = True) -> bool:
    """Write and flush; False when the client has gone (not an error worth more than a debug line)."""
    try:
        writer.write(data)
        await writer.drain()
    except (ConnectionError, OSError) as e:
        logger.debug("client went away: %s", type(e).__name__)
        return False
    if close and writer.can_write_eof():
        try:
            writer.write_eof()
        except OSError:
            pass
    return True


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "unix"
