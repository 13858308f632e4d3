"""P2-P4: resolving secrets in one process, cold and warm, against what people use today.

* P2: 1 to 200 secrets in one region, cold (``reset_process_state()`` and new clients before each run), by
  the plugin (``get_secret_values``, default strategy), the plugin with ``read_strategy=batch``, a loop of
  boto3 ``get_secret_value`` calls, and AWS's ``aws-secretsmanager-caching`` ``SecretCache``
  (``DescribeSecret`` + ``GetSecretValue`` per secret). Every contender builds its boto3 client inside the
  timed region: a task starts without one. Imports are done before timing (a task has imported flytekit
  and, for the first secret it reads, botocore; :mod:`benchmarks.coldpath` measures those apart).
  Each stand-in mode (see :meth:`AwsStandIn.serving`) gives its own rows, labelled: ``replay`` answers
  reads concurrently as AWS does and charges the handshakes of every new connection; ``moto`` is the
  serial stand-in of the older rows.
* P2 sweep: ``max_concurrency`` 1..64 by secret count 10..200, cold: more concurrency is never slower,
  more secrets never cost more than proportionally; and whether a second task in the same process opens
  new connections (it must not, in either region).
* P3: 40 secrets, half in us-east-1 and half in eu-west-1, cold; compared with P2 at 40, run interleaved
  with it so that both see the same machine load.
* P4: the P2 secrets again in the same process, within the cache TTL.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.harness import AwsStandIn, Options, Results, Row, Sample, ms, new_value, ratio, timed

SIZES = (1, 10, 40, 100, 200)
#: the moto-bound rows keep their old sizes (moto serves 200 reads of each contender one at a time)
MOTO_SIZES = (1, 10, 40, 100)
CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)
SWEEP_SIZES = (10, 40, 200)
#: noise allowed before "more concurrency" counts as slower (best runs on a shared 2-core machine)
SWEEP_TOLERANCE = 1.15
#: The default read strategy makes one GetSecretValue per secret (the quota-cheap API; see strategies.py).
GOAL_CALLS_AT_40 = 40
GOAL_SPEEDUP_AT_40 = 10.0
GOAL_TWO_REGIONS = 1.3


def create_secrets(
    aws: AwsStandIn, prefix: str, n: int, region: str = "us-east-1", size: int = 32
) -> list[str]:
    """Create ``n`` secrets of ``size`` random characters straight in moto; return their full ARNs."""
    sm = aws.setup_client("secretsmanager", region)

    def one(i: int) -> str:
        value = new_value(size)
        return str(sm.create_secret(Name=f"{prefix}/s{i:03d}", SecretString=value)["ARN"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def plugin_cold(arns: list[str]) -> Callable[[], Any]:
    """The plugin as a task start uses it: no cache, no clients, settings read again.

    The process's earlier state is dropped here, before the timed run: closing the previous run's pool and
    connections is not part of a task's start (a pod has none).
    """
    import gc

    from flytekitplugins_awssecrets.resolver import reset_process_state

    reset_process_state()
    gc.collect()  # the dropped clients and connections are freed now, not during the timed run

    def run() -> Any:
        from flytekitplugins_awssecrets import get_secret_values

        values = get_secret_values(list(arns))
        assert len(values) == len(arns)
        return values

    return run


def plugin_batch_cold(arns: list[str]) -> Callable[[], Any]:
    """The plugin cold with ``read_strategy=batch``: BatchGetSecretValue per 20 secrets."""
    cold = plugin_cold(arns)

    def run() -> Any:
        import os

        os.environ["FLYTE_AWS_SECRETS_READ_STRATEGY"] = "batch"
        try:
            return cold()
        finally:
            del os.environ["FLYTE_AWS_SECRETS_READ_STRATEGY"]

    return run


def plugin_warm_clients(arns: list[str]) -> Callable[[], Any]:
    """The plugin with its clients already built but an empty cache: the fetch design alone."""

    def run() -> Any:
        from flytekitplugins_awssecrets import get_secret_values
        from flytekitplugins_awssecrets.resolver import get_resolver

        get_resolver().cache.clear()
        return get_secret_values(list(arns))

    return run


def boto3_sequential(arns: list[str]) -> Callable[[], Any]:
    """What most task code does: one client, one ``get_secret_value`` per secret."""

    def run() -> Any:
        import boto3

        sm = boto3.session.Session().client("secretsmanager", region_name="us-east-1")
        return [sm.get_secret_value(SecretId=a)["SecretString"] for a in arns]

    return run


def secret_cache(arns: list[str]) -> Callable[[], Any]:
    """AWS's caching library, cold: it checks each secret's versions (DescribeSecret) then reads it."""

    def run() -> Any:
        import boto3
        from aws_secretsmanager_caching import SecretCache, SecretCacheConfig  # type: ignore[import-untyped]

        sm = boto3.session.Session().client("secretsmanager", region_name="us-east-1")
        cache = SecretCache(config=SecretCacheConfig(), client=sm)
        return [cache.get_secret_string(a) for a in arns]

    return run


CONTENDERS: dict[str, Callable[[list[str]], Callable[[], Any]]] = {
    "plugin": plugin_cold,
    "boto3 loop": boto3_sequential,
    "SecretCache": secret_cache,
    "batch": plugin_batch_cold,
}


def run(aws: AwsStandIn, opts: Options, results: Results) -> None:
    want2, want3, want4 = opts.wants("P2"), opts.wants("P3"), opts.wants("P4")
    if not (want2 or want3 or want4):
        return
    # --quick (the smoke test) stops at 40 secrets: a check that every row is produced, not a measurement
    sizes = tuple(n for n in SIZES if n <= 40 or not opts.quick) if want2 else (40,)
    arns = {n: create_secrets(aws, f"p2-{n}", n) for n in sizes}
    with aws.in_process():
        # Imports (boto3, the plugin's resolver, the caching library) happen once per process: not timed.
        import aws_secretsmanager_caching  # noqa: F401

        plugin_cold(arns[sizes[0]][:1])()
        boto3_sequential(arns[sizes[0]][:1])()
        for mode in opts.stand_ins:
            with aws.serving(mode, opts.connect_rtts) as label:
                if want2:
                    _p2(aws, opts, results, arns, mode, label)
                    if mode == "replay":
                        from benchmarks import coldpath

                        coldpath.run(aws, opts, results, arns[40], label)
                        _sweep(aws, opts, results, arns[max(sizes)], label)
                if mode == opts.stand_ins[0]:  # P3 and P4 once, on the first stand-in
                    if want3:
                        _p3(aws, opts, results, arns[40], label)
                    if want4:
                        _p4(aws, results, arns[max(sizes)])


def _p2(
    aws: AwsStandIn, opts: Options, results: Results, arns: dict[int, list[str]], mode: str, label: str
) -> None:
    sizes = [n for n in (SIZES if mode == "replay" else MOTO_SIZES) if n in arns]
    contenders = CONTENDERS if mode == "replay" else {k: v for k, v in CONTENDERS.items() if k != "batch"}
    series: dict[str, dict[int, Sample]] = {name: {} for name in contenders}
    for n in sizes:
        if mode == "replay":  # record every answer once, untimed: the timed runs are served concurrently
            for make in contenders.values():
                make(arns[n])()
        # Slow contenders run fewer times at large sizes: their spread is small next to their mean.
        reps = opts.repeats(5 if n <= 10 else 3)
        for name, make in contenders.items():
            sample = Sample()
            for _ in range(reps):
                timed(make(arns[n]), aws.proxy, sample)
            series[name][n] = sample
    results.series[f"P2 {mode}"] = {
        name: {n: (s.median, s.calls_median) for n, s in by_n.items()} for name, by_n in series.items()
    }
    _p2_rows(series, results, sizes, mode, label)
    if mode == "moto" and 40 in sizes:
        _p2_detail(aws, opts, results, arns[40], label)


def _p2_rows(
    series: dict[str, dict[int, Sample]], results: Results, sizes: list[int], mode: str, label: str
) -> None:
    for n in sizes:
        p, seq, sc = series["plugin"][n], series["boto3 loop"][n], series["SecretCache"][n]
        speed = ratio(seq.median, p.median)
        value = f"{ms(p.median)}, {p.calls_median} calls"
        comparison = (
            f"boto3 loop {ms(seq.median)} / {seq.calls_median} calls ({speed:.1f}x); "
            f"SecretCache {ms(sc.median)} / {sc.calls_median} calls ({ratio(sc.median, p.median):.1f}x)"
        )
        if "batch" in series:
            b = series["batch"][n]
            comparison += (
                f"; batch {ms(b.median)} / {b.calls_median} calls ({ratio(seq.median, b.median):.1f}x)"
            )
        if n == 40 and mode == "replay":
            ok: bool | None = p.calls_median <= GOAL_CALLS_AT_40 and speed >= GOAL_SPEEDUP_AT_40
            goal = f"<= {GOAL_CALLS_AT_40} calls (1 per secret), >= {GOAL_SPEEDUP_AT_40:g}x faster than loop"
        elif n == 40:
            ok, goal = None, "- (judged on the replay rows: moto serves one request at a time)"
        else:
            ok, goal = None, "-"
        short = f"{speed:.1f}x faster than loop, {p.calls_median} calls"
        results.add(Row("P2", f"{n} secrets, 1 region, cold ({label})", value, comparison, goal, ok, short))


def _sweep(aws: AwsStandIn, opts: Options, results: Results, arns: list[str], label: str) -> None:
    """Item 3: no cliff over max_concurrency x secret count; connections kept across tasks and regions."""
    import os

    grid: dict[int, dict[int, float]] = {}
    sizes = [n for n in SWEEP_SIZES if n <= len(arns)]
    levels = (1, 16, 64) if opts.quick else CONCURRENCY
    for n in sizes:
        grid[n] = {}
        for c in levels:
            os.environ["FLYTE_AWS_SECRETS_MAX_CONCURRENCY"] = str(c)
            try:
                sample = Sample()
                for _ in range(opts.repeats(3)):
                    timed(plugin_cold(arns[:n]), aws.proxy, sample)
                grid[n][c] = min(sample.seconds)  # best of the runs: the machine's other work only adds
            finally:
                del os.environ["FLYTE_AWS_SECRETS_MAX_CONCURRENCY"]
    results.series["P2 sweep"] = grid
    slower = [
        f"{n} secrets: {a} -> {b} threads {ms(grid[n][a])} -> {ms(grid[n][b])}"
        for n in sizes
        for a, b in zip(levels, levels[1:], strict=False)
        if grid[n][b] > grid[n][a] * SWEEP_TOLERANCE
    ]
    steep = [
        f"{c} threads: {a} -> {b} secrets {ms(grid[a][c])} -> {ms(grid[b][c])}"
        for c in levels
        for a, b in zip(sizes, sizes[1:], strict=False)
        if grid[b][c] > grid[a][c] * (b / a) * SWEEP_TOLERANCE
    ]
    cells = "; ".join(f"{n}: " + " ".join(f"{c}:{grid[n][c] * 1000:.0f}" for c in levels) for n in sizes)
    results.add(
        Row(
            "P2",
            f"max_concurrency {levels[0]}..{levels[-1]} x {sizes[0]}..{sizes[-1]} secrets, cold, best of "
            f"{opts.repeats(3)} ({label})",
            f"ms by secrets, threads: {cells}",
            "; ".join(slower + steep) or "more threads never slower, more secrets never worse than linear",
            f"monotone (within {SWEEP_TOLERANCE:g}x of noise)",
            not slower and not steep,
            short="monotone" if not slower and not steep else f"{len(slower) + len(steep)} cliffs",
        )
    )
    _reuse(aws, results, label)


def _reuse(aws: AwsStandIn, results: Results, label: str) -> None:
    """A second task in the same process (other secrets, both regions) opens no new connection."""
    from flytekitplugins_awssecrets import get_secret_values
    from flytekitplugins_awssecrets.resolver import reset_process_state

    east = create_secrets(aws, "reuse", 40, "us-east-1")
    west = create_secrets(aws, "reuse", 40, "eu-west-1")
    first, second = east[:20] + west[:20], east[20:] + west[20:]
    for arns in (first, second):  # record the answers
        reset_process_state()
        get_secret_values(arns)
    reset_process_state()
    aws.proxy.reset_counts()
    get_secret_values(first)
    opened_first = aws.proxy.connections
    aws.proxy.reset_counts()
    get_secret_values(second)  # the next task of the process: clients, pools and connections are kept
    opened_second = aws.proxy.connections
    results.add(
        Row(
            "P2",
            "connections a second task opens (same process, 40 other secrets, 2 regions)",
            f"{opened_second} new",
            f"first task: {opened_first} new connections for 40 secrets in 2 regions",
            # A pool opens one more connection only when a region's concurrency exceeds its earlier peak.
            "<= 10% of the first task's (pools kept; only new concurrency peaks open more)",
            opened_second * 10 <= opened_first,
            short=f"{opened_second} new connections",
        )
    )


def _p2_detail(aws: AwsStandIn, opts: Options, results: Results, arns: list[str], label: str) -> None:
    """Split P2 at 40 into what both sides pay (building a boto3 client) and the fetch itself."""
    import boto3

    build, plugin, loop = Sample(), Sample(), Sample()
    plugin_cold(arns[:1])()  # the resolver's clients exist from here on
    sm = boto3.session.Session().client("secretsmanager", region_name="us-east-1")
    for _ in range(opts.repeats(5)):
        timed(lambda: boto3.session.Session().client("secretsmanager", region_name="us-east-1"), into=build)
        timed(plugin_warm_clients(arns), aws.proxy, plugin)
        timed(lambda: [sm.get_secret_value(SecretId=a) for a in arns], aws.proxy, loop)
    results.series["P2 detail"] = {"client": build.median, "plugin": plugin.median, "loop": loop.median}
    results.add(
        Row(
            "P2",
            f"40 secrets, clients already built (fetch only) ({label})",
            f"{ms(plugin.median)}, {plugin.calls_median} calls",
            f"boto3 loop {ms(loop.median)} ({ratio(loop.median, plugin.median):.1f}x); "
            f"building one boto3 client: {ms(build.median)}",
            "-",
            None,
        )
    )
    _p2_batch_and_floor(aws, opts, results, arns, loop.median, label)


def _p2_batch_and_floor(
    aws: AwsStandIn, opts: Options, results: Results, arns: list[str], loop_fetch: float, label: str
) -> None:
    """What the default's 40 GetSecretValue calls cost on this stand-in, beside read_strategy=batch.

    moto serves one request at a time (about 2.5 ms of CPU each on the benchmark machines), so 40 concurrent
    reads take ~100 ms here even with no added latency: the floor. AWS serves them in parallel.
    """
    import os

    batch, floor = Sample(), Sample()
    latency = aws.proxy.latency
    os.environ["FLYTE_AWS_SECRETS_READ_STRATEGY"] = "batch"
    try:
        plugin_cold(arns[:1])()
        for _ in range(opts.repeats(5)):
            timed(plugin_warm_clients(arns), aws.proxy, batch)
    finally:
        del os.environ["FLYTE_AWS_SECRETS_READ_STRATEGY"]
    plugin_cold(arns[:1])()
    aws.proxy.latency = 0.0
    try:
        for _ in range(opts.repeats(5)):
            timed(plugin_warm_clients(arns), aws.proxy, floor)
    finally:
        aws.proxy.latency = latency
    results.add(
        Row(
            "P2",
            f"40 secrets, clients built: read_strategy=batch; the stand-in's floor ({label})",
            f"batch {ms(batch.median)}, {batch.calls_median} calls "
            f"({ratio(loop_fetch, batch.median):.1f}x faster than loop)",
            f"default (GetSecretValue) with no added latency: {ms(floor.median)} "
            f"({floor.calls_median} calls served one at a time by moto)",
            "-",
            None,
        )
    )


def _p3(aws: AwsStandIn, opts: Options, results: Results, one_region: list[str], label: str) -> None:
    two_regions = create_secrets(aws, "p3", 20, "us-east-1") + create_secrets(aws, "p3", 20, "eu-west-1")
    timed(plugin_cold(two_regions))  # records the answers in replay mode
    one, two = Sample(), Sample()
    for _ in range(opts.repeats(7)):
        timed(plugin_cold(one_region), aws.proxy, one)
        timed(plugin_cold(two_regions), aws.proxy, two)
    r = ratio(two.median, one.median)
    results.series["P3"] = {"one region": one.median, "two regions": two.median}
    results.add(
        Row(
            "P3",
            f"40 secrets, 2 regions, cold ({label})",
            f"{ms(two.median)}, {two.calls_median} calls",
            f"1 region {ms(one.median)} / {one.calls_median} calls: {r:.2f}x",
            f"<= {GOAL_TWO_REGIONS:g}x",
            r <= GOAL_TWO_REGIONS,
            short=f"{r:.2f}x the time of one region",
        )
    )


def _p4(aws: AwsStandIn, results: Results, arns: list[str]) -> None:
    from flytekitplugins_awssecrets import get_secret_values

    timed(plugin_cold(arns))  # fill the cache, as the first task of the process would
    warm = Sample()
    for _ in range(5):
        timed(lambda: get_secret_values(list(arns)), aws.proxy, warm)
    calls = max(warm.calls)
    results.add(
        Row(
            "P4",
            f"{len(arns)} secrets again, same process, within TTL",
            f"{calls} calls, {ms(warm.median)}",
            "-",
            "0 calls",
            calls == 0,
            short=f"{calls} calls",
        )
    )
