"""Run every benchmark, print the results table and write the chart.

    .venv/bin/python -m benchmarks                       # everything, 20 ms per request, docs/benchmarks.png
    .venv/bin/python -m benchmarks --only P2,P3          # some scenarios
    .venv/bin/python -m benchmarks --latency-ms 50       # a slower network
    .venv/bin/python -m benchmarks --only P2 --stand-in replay --connect-rtts 3   # TLS 1.2 handshakes
    .venv/bin/python -m benchmarks --quick --latency-ms 0 --no-chart   # smoke run (single runs, no claims)
    .venv/bin/python -m benchmarks --only P8 --p8-pods 100 --p8-quota GetSecretValue=200   # a bigger fleet

Exit status: 0 when every goal is met, 1 when one is missed (so CI can gate on it), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import compileall
import os
import sys
import time
from pathlib import Path

from benchmarks.harness import ROOT, Options, Results, aws_stand_in, print_table

SCENARIOS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P10")


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--latency-ms", type=float, default=20.0, help="delay added to every AWS request (20)")
    p.add_argument("--only", default="", help="comma-separated scenario ids, e.g. P2,P3 (default: all)")
    p.add_argument("--quick", action="store_true", help="one run per timing: a smoke test, not a measurement")
    p.add_argument("--chart", type=Path, default=ROOT / "docs" / "benchmarks.png", help="PNG to write")
    p.add_argument("--no-chart", action="store_true", help="do not write the chart")
    p.add_argument("--p8-pods", type=int, default=40, help="P8: processes started at one instant (40)")
    p.add_argument("--p8-secrets", type=int, default=5, help="P8: Secrets Manager secrets per process (5)")
    p.add_argument("--p8-params", type=int, default=0, help="P8: SSM parameters per process (0)")
    p.add_argument("--p8-scale", type=float, default=25.0, help="P8: AWS's quotas divided by this (25)")
    p.add_argument(
        "--p8-quota",
        action="append",
        default=[],
        metavar="API=RATE",
        help="P8: requests/s for one API instead of the scaled quota, e.g. BatchGetSecretValue=4 (repeatable)",
    )
    p.add_argument(
        "--connect-rtts",
        type=float,
        default=2.0,
        help="replay stand-in: round trips a new connection costs (TCP + TLS 1.3: 2; TLS 1.2: 3)",
    )
    p.add_argument(
        "--stand-in",
        choices=("both", "replay", "moto"),
        default="both",
        help="who serves P2-P4's reads: replayed answers (concurrent, as AWS), moto (serial), or both",
    )
    p.add_argument("--p8-faults", type=float, default=0.3, help="P8: share of requests faulted (0.3)")
    a = p.parse_args(argv)
    quotas: list[tuple[str, float]] = []
    for q in a.p8_quota:
        api, _, rate = q.partition("=")
        try:
            quotas.append((api.strip(), float(rate)))
        except ValueError:
            p.error(f"--p8-quota {q!r}: expected API=RATE, e.g. GetSecretValue=400")
        if quotas[-1][1] <= 0:
            p.error(f"--p8-quota {q!r}: the rate must be > 0")
    if a.p8_pods < 1 or a.p8_secrets < 1 or a.p8_params < 0 or a.p8_scale <= 0 or not 0 <= a.p8_faults < 1:
        p.error(
            "--p8-pods and --p8-secrets must be >= 1, --p8-params >= 0, --p8-scale > 0, 0 <= --p8-faults < 1"
        )
    only = frozenset(s.strip().upper() for s in a.only.split(",") if s.strip())
    unknown = sorted(only - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    if a.latency_ms < 0:
        p.error("--latency-ms must be >= 0")
    if a.connect_rtts < 0:
        p.error("--connect-rtts must be >= 0")
    return Options(
        latency_ms=a.latency_ms,
        only=only,
        quick=a.quick,
        chart=None if a.no_chart else a.chart,
        p8_pods=a.p8_pods,
        p8_secrets=a.p8_secrets,
        p8_params=a.p8_params,
        p8_scale=a.p8_scale,
        p8_quotas=tuple(quotas),
        p8_fault_rate=a.p8_faults,
        connect_rtts=a.connect_rtts,
        stand_ins=("replay", "moto") if a.stand_in == "both" else (a.stand_in,),
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    from benchmarks import fleet, imports, manifest_sync, memory, pod, resolution, rotation

    # A pod's image has the plugin installed with its bytecode compiled (pip compiles on install). A
    # checkout run with PYTHONDONTWRITEBYTECODE set would instead recompile the plugin's sources in every
    # child process and charge that to the plugin in P1, P5 and P7.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for package in ("flytekitplugins_awssecrets", "benchmarks", "tests"):
        compileall.compile_dir(ROOT / package, quiet=1)
    results = Results()
    started = time.monotonic()
    load_before = os.getloadavg()[0]  # other work on the machine shows up in every timing: say how much
    if opts.wants("P1"):
        imports.run(opts, results)  # no AWS needed: before the server takes a core
    with aws_stand_in(opts.latency_ms / 1000) as aws:
        resolution.run(aws, opts, results)
        if opts.wants("P5"):
            pod.run(aws, opts, results)
        if opts.wants("P6"):
            aws.server.reset()  # SSM reads list the whole region in moto: start from an empty one
            manifest_sync.run(aws, opts, results)
        if opts.wants("P7"):
            memory.run(aws, opts, results)
        if opts.wants("P8"):
            fleet.run(aws, opts, results)
        if opts.wants("P10"):
            rotation.run(aws, opts, results)
    results.notes.append(
        f"whole run: {time.monotonic() - started:.0f} s; 1-minute load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores"
    )
    print_table(results, opts)
    if opts.chart is not None:
        from benchmarks.chart import write_chart

        write_chart(results, opts, opts.chart)
        print(f"chart: {opts.chart}")
    return 1 if any(r.passed is False for r in results.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
