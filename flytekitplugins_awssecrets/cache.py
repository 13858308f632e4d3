"""A process-wide TTL cache with single-flight loading.

Single-flight: when several threads ask for keys that nobody has in flight, one of them loads them all in
one call to the loader while the others wait for that result, so 64 threads asking for one secret make one
AWS call. Failures are not cached: the next request tries again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import Future
from typing import Generic, TypeVar

__all__ = ["TTLCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Cache ``K -> V`` for ``ttl`` seconds; ``ttl <= 0`` keeps nothing but still de-duplicates concurrent loads.

    Example::

        cache: TTLCache[str, bytes] = TTLCache(ttl=300)
        values = cache.get_many(["a", "b"], loader=lambda keys: {k: fetch(k) for k in keys})
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[K, tuple[float, V]] = {}
        self._inflight: dict[K, Future[V]] = {}
        self.hits = 0
        self.loads = 0

    def __repr__(self) -> str:  # never show values
        return f"TTLCache(ttl={self.ttl}, entries={len(self._items)})"

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def invalidate(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def get_many(
        self,
        keys: Iterable[K],
        loader: Callable[[list[K]], Mapping[K, V | BaseException]],
        *,
        refresh: bool = False,
    ) -> dict[K, V | BaseException]:
        """Return a value or an exception for every key; call ``loader`` once for the keys we must load.

        ``loader`` returns, for each key it was given, either the value or the exception that explains why
        there is none. A key it leaves out gets a ``KeyError``.
        """
        wanted = list(dict.fromkeys(keys))
        out: dict[K, V | BaseException] = {}
        mine: dict[K, Future[V]] = {}
        theirs: dict[K, Future[V]] = {}
        now = self._clock()
        with self._lock:
            for k in wanted:
                item = self._items.get(k)
                if item is not None and not refresh and item[0] > now:
                    out[k] = item[1]
                    self.hits += 1
                elif k in self._inflight:
                    theirs[k] = self._inflight[k]
                else:
                    fut: Future[V] = Future()
                    self._inflight[k] = fut
                    mine[k] = fut
        if mine:
            self._load(mine, loader)
        for k, f in {**mine, **theirs}.items():
            exc = f.exception()
            out[k] = exc if exc is not None else f.result()
        return {k: out[k] for k in wanted}

    def _load(
        self, mine: dict[K, Future[V]], loader: Callable[[list[K]], Mapping[K, V | BaseException]]
    ) -> None:
        self.loads += 1
        try:
            results: Mapping[K, V | BaseException] = loader(list(mine))
        except BaseException as e:  # noqa: BLE001 - handed to every waiter, then re-raised for the caller
            with self._lock:
                for k, f in mine.items():
                    self._inflight.pop(k, None)
                    f.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        expires = self._clock() + self.ttl
        with self._lock:
            for k, f in mine.items():
                self._inflight.pop(k, None)
                r = results.get(k, KeyError(k))
                if isinstance(r, BaseException):
                    f.set_exception(r)
                else:
                    if self.ttl > 0:
                        self._items[k] = (expires, r)
                    f.set_result(r)
