"""What every connection handler shares: the configuration, the secret source, the thread pool that runs
blocking AWS reads, and the count of open connections."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

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
        value = await ctx.blocking(lambda: ctx.source.get(ref))
    """

    config: ServeConfig
    source: SecretSource
    token: str | None = field(default=None, repr=False)
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(32, thread_name_prefix="serve"), repr=False
    )
    open_connections: int = 0

    async def blocking(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (boto3, JSON work) off the event loop so slow AWS calls never stall other clients."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    @property
    def over_limit(self) -> bool:
        return self.open_connections > self.config.max_connections

    @property
    def far_over_limit(self) -> bool:
        # Like AWS's agent, health checks get a few connections beyond the limit.
        return self.open_connections > self.config.max_connections + 3
