"""P7: peak memory of a process that resolves 100 secrets of 64 KiB (Secrets Manager's maximum size).

Each measurement is a fresh interpreter (``benchmarks.children rss``) reporting its peak RSS
(``ru_maxrss``). The baseline is the same interpreter after ``import flytekit`` (with the plugin loaded), as a
task process is before it resolves anything. A third kind of run imports boto3 and builds one client
without fetching, to show how much of the extra is boto3 itself and how much the payloads.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import ROOT, AwsStandIn, Options, Results, Row
from benchmarks.resolution import create_secrets

COUNT = 100
SIZE = 64 * 1024
GOAL_EXTRA_MIB = 50.0


def _child(aws: AwsStandIn, mode: str, arn_file: Path | None = None) -> dict[str, float]:
    args = [sys.executable, "-m", "benchmarks.children", "rss", mode]
    if arn_file is not None:
        args.append(str(arn_file))
    p = subprocess.run(args, cwd=ROOT, env=aws.subprocess_env(), capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"rss child ({mode}) failed:\n{p.stderr[-3000:]}")
    data: dict[str, float] = json.loads(p.stdout.strip().splitlines()[-1])
    return data


def run(aws: AwsStandIn, opts: Options, results: Results) -> None:
    arns = create_secrets(aws, "p7", COUNT, size=SIZE)
    with tempfile.NamedTemporaryFile("w", suffix=".arns", delete=False) as f:
        f.write("\n".join(arns))  # ARNs only: the values stay in moto
        arn_file = Path(f.name)
    try:
        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "client": [], "resolve": []}
        for _ in range(opts.repeats(3)):
            for mode in runs:
                runs[mode].append(_child(aws, mode, arn_file if mode == "resolve" else None))
    finally:
        arn_file.unlink()
    peak = {mode: statistics.median(r["peak"] for r in rs) for mode, rs in runs.items()}
    got = runs["resolve"][-1]
    if int(got["count"]) != COUNT or int(got["bytes"]) != COUNT * SIZE:
        raise RuntimeError(f"P7 resolved {got['count']} values of {got['bytes']} bytes in all")
    extra = peak["resolve"] - peak["baseline"]
    boto3_part = peak["client"] - peak["baseline"]
    results.series["P7"] = peak
    results.add(
        Row(
            "P7",
            f"peak RSS resolving {COUNT} secrets of {SIZE // 1024} KiB ({COUNT * SIZE / 2**20:.2f} MiB of values)",
            f"{peak['resolve']:.0f} MiB: +{extra:.1f} MiB",
            f"baseline (import flytekit) {peak['baseline']:.0f} MiB; "
            f"of the extra, boto3 + one client: {boto3_part:.1f} MiB",
            f"<= {GOAL_EXTRA_MIB:g} MiB extra",
            extra <= GOAL_EXTRA_MIB,
            short=f"+{extra:.0f} MiB",
        )
    )
