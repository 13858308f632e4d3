"""The server: listeners for both front ends on one asyncio loop, and a clean shutdown.

Start-up: bind every configured listener (TCP for Secret Agent and HTTP, optionally TLS; a Unix socket
created mode 0600), then write ``ready_file``. A failure to bind stops everything before anything is served.

Shutdown on SIGTERM or SIGINT: stop accepting, let requests in flight finish for up to ``shutdown_grace``
seconds, close the remaining (idle keep-alive) connections, remove the Unix socket file and the ready file,
and return, so the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable

from flytekitplugins_awssecrets.errors import SettingsError
from flytekitplugins_awssecrets.serve import http1, secret_agent
from flytekitplugins_awssecrets.serve.allow import AllowList
from flytekitplugins_awssecrets.serve.config import Endpoint, ServeConfig
from flytekitplugins_awssecrets.serve.context import Context, logger
from flytekitplugins_awssecrets.serve.source import SecretSource

__all__ = ["Server", "run"]

Handler = Callable[[Context, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class BindError(SettingsError):
    """A listener could not be created (address in use, stale socket path that is not a socket, ...)."""


class Server:
    """Both front ends over one :class:`Context` (hence one cache).

    Example::

        server = Server(ServeConfig(http="off"), token=None)
        asyncio.run(server.run())  # until SIGTERM
    """

    def __init__(
        self,
        config: ServeConfig,
        token: str | None,
        source: SecretSource | None = None,
        allow: AllowList | None = None,
    ) -> None:
        self.ctx = Context(config, source or SecretSource(), token=token)
        if allow is not None:
            self.ctx.allow = allow
        self._servers: list[asyncio.base_events.Server] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._conns: dict[asyncio.StreamWriter, asyncio.StreamReader] = {}
        self._stop = asyncio.Event()
        self.bound: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Server(bound={self.bound})"

    # -- listeners ------------------------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext | None:
        c = self.ctx.config
        if not c.tls:
            return None
        assert c.tls_cert is not None and c.tls_key is not None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(c.tls_cert, c.tls_key)
        except (ssl.SSLError, OSError) as e:
            raise BindError(*c.where("tls_cert"), f"cannot load the certificate or key: {e}") from None
        if c.tls_ca is not None:
            # Mutual TLS, as Aerospike's service.tcp.tls.ca-file: a client without a certificate signed by
            # one of these CAs does not get past the handshake.
            try:
                ctx.load_verify_locations(cafile=c.tls_ca)
            except (ssl.SSLError, OSError) as e:
                raise BindError(*c.where("tls_ca"), f"cannot load the CA file: {e}") from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _wrap(
        self, handler: Handler, front: str
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            self._conns[writer] = reader
            self.ctx.admit(writer)
            try:
                await handler(self.ctx, reader, writer)
            except asyncio.CancelledError:
                pass  # shutdown closes what is still open
            except Exception as e:  # noqa: BLE001 - a connection's failure must never stop the server
                logger.error("%s: connection failed: %s", front, type(e).__name__)
            finally:
                self.ctx.release(writer)
                self._conns.pop(writer, None)
                self._handlers.discard(task)
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1)

        return on_connection

    async def _tcp(self, ep: Endpoint, handler: Handler, front: str, tls: ssl.SSLContext | None) -> str:
        try:
            srv = await asyncio.start_server(
                self._wrap(handler, front),
                ep.host,
                ep.port,
                ssl=tls,
                # A handshake is made before anything proves the client: the short time-out applies.
                ssl_handshake_timeout=self.ctx.config.header_timeout if tls else None,
                limit=self.ctx.config.max_header_bytes,
                reuse_address=True,
            )
        except OSError as e:
            raise BindError(front, "serve options", f"cannot listen on {ep}: {e.strerror or e}") from None
        self._servers.append(srv)
        host, port = srv.sockets[0].getsockname()[:2]
        return str(Endpoint(str(host), int(port)))

    async def _unix(self, path: str) -> str:
        _clear_stale_socket(path)
        old = os.umask(0o177)  # the socket file is created 0600: only this user may connect
        try:
            srv = await asyncio.start_unix_server(
                self._wrap(secret_agent.handle_connection, "secret-agent(unix)"),
                path,
                limit=self.ctx.config.max_header_bytes,
            )
        except OSError as e:
            raise BindError(
                "unix_socket", "serve options", f"cannot listen on {path}: {e.strerror or e}"
            ) from None
        finally:
            os.umask(old)
        self._servers.append(srv)
        return path

    async def start(self) -> None:
        c = self.ctx.config
        tls = self._ssl_context()
        try:
            if (ep := c.secret_agent_endpoint) is not None:
                self.bound["secret_agent"] = await self._tcp(
                    ep, secret_agent.handle_connection, "secret-agent", tls
                )
            if c.unix_socket is not None:
                self.bound["unix_socket"] = await self._unix(c.unix_socket)
            if (ep := c.http_endpoint) is not None:
                self.bound["http"] = await self._tcp(ep, http1.handle_connection, "http", tls)
        except BaseException:
            await self._close_listeners()
            raise
        scheme = (" (mutual TLS)" if c.tls_ca else " (TLS)") if tls else ""
        for front, where in self.bound.items():
            logger.info(
                "serving %s on %s%s", front.replace("_", " "), where, "" if front == "unix_socket" else scheme
            )
        if "secret_agent" in self.bound or "unix_socket" in self.bound:
            logger.info(
                "secret agent: convert-to-base64 %s (%s)",
                str(c.convert_to_base64).lower(),
                "SecretValue is the base64 of the stored value"
                if c.convert_to_base64
                else "stored values must be base64 and are sent as they are",
            )
        if c.ready_file:
            _write_atomically(c.ready_file, json.dumps({**self.bound, "pid": os.getpid(), "tls": bool(tls)}))

    # -- running and stopping -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or :meth:`request_stop`), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()

    def _on_signal(self, sig: int) -> None:
        logger.info("received %s, shutting down", signal.Signals(sig).name)
        self._stop.set()

    async def _close_listeners(self) -> None:
        for srv in self._servers:
            srv.close()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1)
        self._servers.clear()
        path = self.ctx.config.unix_socket
        if path and "unix_socket" in self.bound:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    async def shutdown(self) -> None:
        await self._close_listeners()
        # End of input for every connection: idle keep-alive handlers return at once, a handler with a
        # request in flight answers it first. Reading is paused so no data arrives after the EOF.
        for writer, reader in list(self._conns.items()):
            transport = writer.transport
            if isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
                with contextlib.suppress(Exception):
                    transport.pause_reading()
            reader.feed_eof()
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=self.ctx.config.shutdown_grace)
            for t in pending:
                t.cancel()
            if pending:
                logger.warning("%d connection(s) still busy after the grace period; closed", len(pending))
                await asyncio.wait(pending, timeout=1)
        self.ctx.pool.shutdown(wait=False, cancel_futures=True)
        if self.ctx.config.ready_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.ctx.config.ready_file)
        logger.info("stopped")


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file left by a server that died; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError("unix_socket", "serve options", f"{path} exists and is not a socket; not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: stale
        return
    finally:
        probe.close()
    raise BindError("unix_socket", "serve options", f"{path} is in use by another server")


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def run(config: ServeConfig, token: str | None, allow: AllowList) -> None:
    """Serve until a signal; returns normally after a clean shutdown."""
    asyncio.run(Server(config, token, allow=allow).run())
