"""What every scenario shares: the AWS stand-in with latency, timing, result rows and the tables.

AWS is moto server in its own process, behind :class:`tests.support.proxy.CountingProxy`, which adds a fixed
delay to every request (on loopback every design looks equally fast; 20 ms is a typical in-region round trip)
and counts API calls as the server sees them, so call counts are measured, never estimated.

Secret values are random and never printed: scenarios report durations, call counts and sizes only.
"""

from __future__ import annotations

import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``tests.support`` is imported from the source tree, not installed
    sys.path.insert(0, str(ROOT))

from tests.support.moto_server import MotoServer, aws_test_env, start_moto_server  # noqa: E402
from tests.support.proxy import CountingProxy, Replay  # noqa: E402

ACCOUNT = "123456789012"  # moto's default account

#: Every secret value the benchmarks create, so that the output can be checked for them before it is shown.
CREATED_VALUES: set[str] = set()


def new_value(length: int) -> str:
    """A random secret value of ``length`` characters, remembered for the output check."""
    import secrets

    value = secrets.token_urlsafe(length)[:length]
    CREATED_VALUES.add(value)
    return value


@dataclass(frozen=True)
class Options:
    """How a run is done: ``latency_ms`` per request at the proxy, ``only`` scenario ids, ``quick``, and
    P8's fleet (``p8_*``)."""

    latency_ms: float = 20.0
    only: frozenset[str] = frozenset()
    quick: bool = False
    chart: Path | None = ROOT / "docs" / "benchmarks.png"
    #: P8: processes started at once, secrets each, AWS's quotas divided by, per-API overrides, fault rate
    p8_pods: int = 40
    p8_secrets: int = 5
    p8_params: int = 0
    p8_scale: float = 25.0
    p8_quotas: tuple[tuple[str, float], ...] = ()
    p8_fault_rate: float = 0.3
    #: round trips a new connection costs at the stand-in (TCP + TLS 1.3 handshakes: 2) in replay mode
    connect_rtts: float = 2.0
    #: which stand-ins serve P2-P4's reads: "replay" (concurrent, as AWS) and/or "moto" (serial)
    stand_ins: tuple[str, ...] = ("replay", "moto")

    def wants(self, scenario: str) -> bool:
        return not self.only or scenario in self.only

    def repeats(self, normal: int) -> int:
        """Timings are the median of several runs; ``--quick`` runs each once (smoke test, no timing claims)."""
        return 1 if self.quick else normal


@dataclass
class Row:
    """One line of the results table: what was measured, against what, the goal and whether it was met."""

    id: str
    measure: str
    value: str
    comparison: str
    goal: str
    passed: bool | None  # None: informative, no goal
    short: str = ""  # the value in a few words, for the chart (default: ``value``)

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "-"}[self.passed]


@dataclass
class Results:
    """Rows for the table, and raw series for the chart (keyed by scenario)."""

    rows: list[Row] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)


class AwsStandIn:
    """moto server + latency proxy; the environment that points boto3 (in process and in subprocesses) at it.

    Example::

        with aws_stand_in(latency=0.02) as aws:
            aws.proxy.reset_counts(); ...; aws.proxy.total()
    """

    def __init__(self, server: MotoServer, proxy: CountingProxy, home: str) -> None:
        self.server = server
        self.proxy = proxy
        #: environment for clients under test: requests go through the proxy
        self.env = aws_test_env(proxy.url, home)
        #: same, straight to moto: setting up data costs no latency and is not counted
        self.direct_env = aws_test_env(server.url, home)

    def setup_client(self, service: str, region: str = "us-east-1") -> Any:
        """A boto3 client that talks to moto directly (for creating test data)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            service,
            region_name=region,
            endpoint_url=self.server.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(max_pool_connections=16, retries={"mode": "standard", "max_attempts": 3}),
        )

    @contextmanager
    def serving(self, mode: str, connect_rtts: float) -> Iterator[str]:
        """Serve reads as ``mode`` says for the duration; yields the label rows carry.

        ``"replay"``: the proxy answers reads it has seen from its record (:class:`Replay`), all at once, and
        charges ``connect_rtts`` round trips per new connection, as a TLS endpoint does. ``"moto"``: every
        request goes to moto, which serves one at a time; connections cost nothing extra (the old rows).
        """
        if mode not in ("replay", "moto"):
            raise ValueError(f"unknown stand-in mode {mode!r}")
        saved = (self.proxy.replay, self.proxy.connect_rtts)
        if mode == "replay":
            self.proxy.replay, self.proxy.connect_rtts = Replay(), connect_rtts
        else:
            self.proxy.replay, self.proxy.connect_rtts = None, 0.0
        try:
            yield f"replay, {connect_rtts:g} RTT/conn" if mode == "replay" else "moto, serial"
        finally:
            self.proxy.replay, self.proxy.connect_rtts = saved

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        """The benchmark's own environment without any real AWS or plugin settings, pointed at the proxy."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.update(extra)
        return env

    @contextmanager
    def in_process(self) -> Iterator[None]:
        """Point boto3 in this process at the proxy for the duration, restoring the environment after."""
        saved = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
        for k in saved:
            del os.environ[k]
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k in [k for k in os.environ if k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))]:
                del os.environ[k]
            os.environ.update(saved)


def _no_delay(proxy: CountingProxy) -> None:
    """Turn off Nagle's algorithm on the proxy's accepted connections.

    The proxy answers with two writes (headers, then body); with Nagle on, the second waits for the client's
    delayed ACK, which adds ~40 ms to every request on Linux: the "20 ms" network would really be ~65 ms
    and sequential clients would look 3x slower than they are. Real AWS endpoints do not behave like that.
    """
    server = proxy._server  # noqa: SLF001 - tests/support/proxy.py offers no hook for socket options
    accept = server.get_request

    def get_request() -> tuple[socket.socket, Any]:
        conn, addr = accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr

    server.get_request = get_request  # type: ignore[method-assign]


@contextmanager
def aws_stand_in(latency: float) -> Iterator[AwsStandIn]:
    home = tempfile.mkdtemp(prefix="awssecrets-bench-")
    server = start_moto_server(os.path.join(home, "moto.log"))
    proxy = CountingProxy(server.url, latency=latency)
    _no_delay(proxy)
    proxy.start()
    try:
        yield AwsStandIn(server, proxy, home)
    finally:
        proxy.stop()
        server.stop()


# -- measuring ------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """Wall times (seconds) and server-side call counts of repeated runs of one thing."""

    seconds: list[float] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU seconds of a child process, where measured

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else 0.0

    @property
    def calls_median(self) -> int:
        return int(statistics.median(self.calls)) if self.calls else 0


def timed(fn: Callable[[], Any], proxy: CountingProxy | None = None, into: Sample | None = None) -> Sample:
    """Run ``fn`` once; record its wall time and the API calls the proxy saw while it ran."""
    sample = into if into is not None else Sample()
    if proxy is not None:
        proxy.reset_counts()
    start = time.perf_counter()
    fn()
    sample.seconds.append(time.perf_counter() - start)
    if proxy is not None:
        sample.calls.append(proxy.total())
    return sample


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.2f} ms"


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


# -- where and when -------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """The date and the machine, as the chart and docs show them."""
    now = datetime.now(UTC).strftime("%Y-%m-%d")
    return (
        f"{now} · {cpu_model()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"{platform.system()} {platform.release().split('-')[0]}"
    )


# -- output ---------------------------------------------------------------------------------------------------


def print_table(results: Results, opts: Options) -> None:
    """Print the table and notes, after checking that they hold no secret value."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width), record=True)
    table = Table(
        title=f"flytekitplugins-awssecrets benchmarks (latency {opts.latency_ms:g} ms per request"
        + (", quick: single runs" if opts.quick else ", medians")
        + ")",
        caption=machine_line(),
    )
    for col in ("id", "measure", "value", "compared with", "goal", "result"):
        table.add_column(col, overflow="fold")
    styles = {"PASS": "green", "MISS": "bold red", "-": "dim"}
    for r in results.rows:
        table.add_row(r.id, r.measure, r.value, r.comparison, r.goal, f"[{styles[r.verdict]}]{r.verdict}[/]")
    console.print(table)
    for note in results.notes:
        console.print(f"[dim]note:[/] {note}")
