"""What every connection handler shares: the configuration, the secret source, the thread pool that runs
blocking AWS reads, and the connections, in two budgets.

A connection starts *unauthenticated*: it may hold one of ``max_unauthenticated`` places, and gets
``header_timeout`` seconds per request head. When more arrive, the oldest unauthenticated connection is
closed, so a process that opens sockets and sends nothing (or sends no token) can never lock out the
clients that have one. Once a request proves the client (the token on HTTP; a well-formed request on the
Secret Agent protocol, which has no authentication) the connection counts against ``max_connections``
and gets ``read_timeout``. Token holders and Secret Agent clients count against ``max_connections``
separately: any local process can open Secret Agent connections, and must not be able to lock token
holders out of the HTTP front end by filling a shared budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from flytekitplugins_awssecrets.refs import SecretRef
from flytekitplugins_awssecrets.serve.allow import AllowList
from flytekitplugins_awssecrets.serve.config import ServeConfig
from flytekitplugins_awssecrets.serve.source import SecretSource

__all__ = ["Context", "logger"]

#: The one logger of the server. Messages name references, front ends and outcomes, never values.
logger = logging.getLogger("flytekitplugins_awssecrets.serve")

T = TypeVar("T")


@dataclass
class Context:
    """Shared by the front ends of one server.

    Example::

        ctx = Context(ServeConfig(), SecretSource(), token="...")
        ctx.admit(writer)  # a new connection, unauthenticated
        value = await ctx.blocking(lambda: ctx.source.get(ref))
    """

    config: ServeConfig
    source: SecretSource
    token: str | None = field(default=None, repr=False)
    #: What may be served; the default lists nothing, so a server built without one serves nothing.
    allow: AllowList = field(default_factory=lambda: AllowList("no allow-list configured"))
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(32, thread_name_prefix="serve"), repr=False
    )
    open_connections: int = 0
    authenticated: int = 0
    evicted: int = 0
    _pending: OrderedDict[asyncio.StreamWriter, None] = field(default_factory=OrderedDict, repr=False)
    _proven: dict[asyncio.StreamWriter, str] = field(default_factory=dict, repr=False)
    _counts: dict[str, int] = field(default_factory=dict, repr=False)

    def home(self) -> SecretRef:
        """A reference in the server's own account and region: where plain names (and name entries of the
        allow-list) live. Blocking (STS, once per process)."""
        return self.source.ref_for_name("-")

    # -- the two budgets -------------------------------------------------------------------------------------
    def admit(self, writer: asyncio.StreamWriter) -> None:
        """A new connection: unauthenticated; the oldest unauthenticated one goes when there are too many."""
        self.open_connections += 1
        self._pending[writer] = None
        while len(self._pending) > self.config.max_unauthenticated:
            oldest, _ = self._pending.popitem(last=False)
            self.evicted += 1
            # Warn once, then count (in /healthz): a flood of connections must not flood the log too.
            logger.log(
                logging.WARNING if self.evicted == 1 else logging.DEBUG,
                "more than %d unauthenticated connections (max_unauthenticated): closing the oldest; "
                "further closings are counted in /healthz",
                self.config.max_unauthenticated,
            )
            transport = oldest.transport
            if transport is not None and not transport.is_closing():
                transport.abort()

    def authenticate(self, writer: asyncio.StreamWriter, kind: str = "token") -> None:
        """The connection has proved itself: it moves to the ``max_connections`` budget of ``kind``
        (``token``: an HTTP request carried the token; ``agent``: a well-formed Secret Agent request)."""
        if writer in self._proven:
            return
        self._pending.pop(writer, None)
        self._proven[writer] = kind
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self.authenticated += 1

    def is_authenticated(self, writer: asyncio.StreamWriter) -> bool:
        return writer in self._proven

    def release(self, writer: asyncio.StreamWriter) -> None:
        self.open_connections -= 1
        self._pending.pop(writer, None)
        kind = self._proven.pop(writer, None)
        if kind is not None:
            self._counts[kind] -= 1
            self.authenticated -= 1

    def timeout_for(self, writer: asyncio.StreamWriter) -> float:
        """Seconds to wait for the next request on ``writer``: short until it has proved itself."""
        return self.config.read_timeout if writer in self._proven else self.config.header_timeout

    async def blocking(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (boto3, JSON work) off the event loop so slow AWS calls never stall other clients."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    def _count_of(self, writer: asyncio.StreamWriter | None) -> int:
        kind = self._proven.get(writer, "token") if writer is not None else "token"
        return self._counts.get(kind, 0)

    def over_limit(self, writer: asyncio.StreamWriter | None) -> bool:
        """More connections of ``writer``'s kind than ``max_connections``."""
        return self._count_of(writer) > self.config.max_connections

    def far_over_limit(self, writer: asyncio.StreamWriter | None) -> bool:
        # Like AWS's agent, health checks get a few connections beyond the limit.
        return self._count_of(writer) > self.config.max_connections + 3
