"""The TTL cache: single flight under 64 threads, expiry, and failures not cached."""

from __future__ import annotations

import threading
import time

from flytekitplugins_awssecrets.cache import TTLCache


def test_single_flight_64_threads_one_load() -> None:
    cache: TTLCache[str, str] = TTLCache(ttl=300)
    calls = []
    gate = threading.Event()

    def loader(keys: list[str]) -> dict[str, str | BaseException]:
        calls.append(list(keys))
        gate.wait(5)
        return {k: k.upper() for k in keys}

    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_many(["a"], loader)["a"])) for _ in range(64)
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(10)
    assert calls == [["a"]]
    assert results == ["A"] * 64


def test_ttl_expiry_and_errors_not_cached() -> None:
    now = [0.0]
    cache: TTLCache[str, str] = TTLCache(ttl=10, clock=lambda: now[0])
    loads: list[list[str]] = []

    def loader(keys: list[str]) -> dict[str, str | BaseException]:
        loads.append(keys)
        return {k: (KeyError(k) if k == "bad" else k) for k in keys}

    assert isinstance(cache.get_many(["ok", "bad"], loader)["bad"], KeyError)
    cache.get_many(["ok", "bad"], loader)
    assert loads == [["ok", "bad"], ["bad"]]
    now[0] = 11
    cache.get_many(["ok"], loader)
    assert loads[-1] == ["ok"]


def test_ttl_zero_disables_caching() -> None:
    cache: TTLCache[str, str] = TTLCache(ttl=0)
    n = []
    for _ in range(3):
        cache.get_many(["x"], lambda ks: n.append(1) or {k: k for k in ks})
    assert len(n) == 3
    assert "x" not in repr(cache) or "entries=0" in repr(cache)
