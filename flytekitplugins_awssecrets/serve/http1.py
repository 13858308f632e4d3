"""HTTP/1.1 on a stream, for the AWS Secrets Manager Agent API (:mod:`.http_api` answers the requests).

Framing is h11's (a maintained HTTP/1.1 parser): conflicting ``Content-Length`` values,
``Transfer-Encoding`` rules, obsolete line folding, malformed header lines, a missing ``Host`` and oversized
heads are its decisions, answered with its status hint. What this module adds: GET carries no body (one we
would have to skip is refused, and the connection closed, so a request hidden behind framing headers is
never read as one), a request target is a path, a bounded number of headers, and the time-outs of
:mod:`.context` (``header_timeout`` until a request carries the token, then ``read_timeout``), counted per
request head so a client that trickles bytes is closed too.
"""

from __future__ import annotations

import asyncio
import time

import h11

from flytekitplugins_awssecrets.serve.context import Context, logger
from flytekitplugins_awssecrets.serve.http_api import MAX_HEADERS, REASONS, Response, _aws_error, _text, route

__all__ = ["handle_connection"]


class _Closed(Exception):
    """The client closed the connection, or stayed silent past its time-out: nothing to answer."""


async def _next_request(
    ctx: Context, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> h11.Request:
    """The next request head, read within the connection's time-out; raises :class:`_Closed` or h11's
    ``RemoteProtocolError``."""
    deadline = time.monotonic() + ctx.timeout_for(writer)
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            return event
        if isinstance(event, h11.ConnectionClosed):
            raise _Closed
        if event is not h11.NEED_DATA:
            # Body data or the end of a message we are not reading: out of step, stop here.
            raise _Closed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Closed
        try:
            data = await asyncio.wait_for(reader.read(16384), remaining)
        except (TimeoutError, ConnectionError, OSError):
            raise _Closed from None
        if not data:
            raise _Closed  # between requests, or mid-head (nothing sensible to answer)
        conn.receive_data(data)


def _check_request(req: h11.Request) -> tuple[str, str, dict[str, str]] | Response:
    method = req.method.decode("ascii", "replace")
    target = req.target.decode("latin-1")
    if not target.startswith("/"):
        return _text(400, "request target must be a path", close=True)
    if len(req.headers) > MAX_HEADERS:
        return _text(431, "Request header fields too large", close=True)
    headers: dict[str, str] = {}
    for name, value in req.headers:
        key = name.decode("latin-1")
        if key in headers and key not in ("content-length", "transfer-encoding"):
            # A repeated header is joined, as HTTP says, so that no two parsers read a different value.
            headers[key] += ", " + value.decode("latin-1")
        else:
            headers[key] = value.decode("latin-1")
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        return _text(400, "request bodies are not accepted", close=True)
    return method, target, headers


async def handle_connection(ctx: Context, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve HTTP/1.1 requests on one connection (keep-alive) until the client closes it or an error.

    Until a request carries the token, each request head must arrive within ``header_timeout``."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=ctx.config.max_header_bytes)
    while True:
        try:
            req = await _next_request(ctx, conn, reader, writer)
        except _Closed:
            return
        except h11.RemoteProtocolError as e:
            status = e.error_status_hint if e.error_status_hint in REASONS else 400
            text = "Request header fields too large" if status == 431 else f"bad request: {e}"[:200]
            logger.info("http: malformed request -> %d %s", status, text)
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await _write(writer, conn, _text(status, text, close=True))
            return
        started = time.monotonic()
        checked = _check_request(req)
        if isinstance(checked, Response):
            method, target, resp = (
                req.method.decode("ascii", "replace"),
                req.target.decode("latin-1"),
                checked,
            )
        else:
            method, target, headers = checked
            # No body: h11 has the end of the request already; taking it keeps the connection reusable.
            if not isinstance(conn.next_event(), h11.EndOfMessage):
                return
            try:
                resp = await route(ctx, method, target, headers, writer)
            except Exception as e:  # noqa: BLE001 - one bad request must not take the server down
                logger.error(
                    "http: internal error %s on %s", type(e).__name__, target.partition("?")[0][:200]
                )
                resp = _aws_error(500, "InternalFailure", "internal error; see the server log")
        logger.info(
            "http %s %s -> %d %s (%.1f ms)",
            method[:10],
            target.partition("?")[0][:200],
            resp.status,
            resp.outcome[:300],
            (time.monotonic() - started) * 1000,
        )
        if not await _write(writer, conn, resp, head_only=method == "HEAD"):
            return
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return  # Connection: close (ours or the client's), HTTP/1.0 without keep-alive
        conn.start_next_cycle()


async def _write(
    writer: asyncio.StreamWriter, conn: h11.Connection, resp: Response, *, head_only: bool = False
) -> bool:
    headers = [
        ("Content-Type", resp.content_type),
        ("Content-Length", str(len(resp.body))),
        *resp.headers.items(),
    ]
    if resp.close:
        headers.append(("Connection", "close"))
    try:
        data = conn.send(h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status)))
        if not head_only and resp.body:
            data = (data or b"") + (conn.send(h11.Data(data=resp.body)) or b"")
        data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError as e:
        logger.error("http: cannot send the answer: %s", e)
        return False
    try:
        writer.write(data)
        await writer.drain()
    except (ConnectionError, OSError) as e:
        logger.debug("http client went away: %s", type(e).__name__)
        return False
    return True


def _reason(status: int) -> bytes:
    return REASONS.get(status, "Unknown").encode("ascii")
