"""The benchmark harness runs end to end in its reduced mode: one run per timing, no added latency.

Not a timed test: nothing here asserts a duration (those are the benchmark's business, on a quiet machine,
with ``python -m benchmarks``). It checks that the command starts its own moto server and proxy, prints the
table, counts calls at the server, and that the one goal that does not depend on timing holds: resolving the
same secrets again within the TTL makes no API call (P4).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # each runs the benchmark command: about a minute on a loaded 2-core machine

pytest.importorskip("matplotlib", reason="benchmark dependencies: pip install -e '.[bench]'")
pytest.importorskip("aws_secretsmanager_caching", reason="benchmark dependencies: pip install -e '.[bench]'")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )


def _row(out: str, scenario: str) -> list[str]:
    """The cells of the first table row of ``scenario`` (rich draws cells between '│')."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == scenario:
            return cells
    raise AssertionError(f"no {scenario} row in:\n{out}")


def test_quick_run_prints_the_table_and_p4_makes_no_call(tmp_path: Path) -> None:
    chart = tmp_path / "chart.png"
    p = _run("--only", "P2,P4", "--quick", "--latency-ms", "0", "--chart", str(chart))
    # 0: every goal met, 1: some goal missed (timing goals mean nothing at zero latency in one run).
    assert p.returncode in (0, 1), p.stderr[-3000:]
    out = p.stdout
    assert "flytekitplugins-awssecrets benchmarks" in out
    for header in ("measure", "value", "compared with", "goal", "result"):
        assert header in out
    p2 = _row(out, "P2")
    assert "calls" in p2[2] and "boto3 loop" in p2[3]
    p4 = _row(out, "P4")
    assert p4[2].startswith("0 calls"), p4
    assert p4[5] == "PASS"
    # Every P2 row says which stand-in served it: replayed answers (concurrent) or moto (serial).
    assert "replay" in out and "serial" in out, out
    # A second task in the same process reuses the first task's connections (both regions): it opens far
    # fewer (one more only where a region's concurrency exceeds its earlier peak).
    reuse = next(
        [c.strip() for c in line.split("│")[1:-1]]
        for line in out.splitlines()
        if "connections a second task" in line
    )
    second, first = int(reuse[2].split()[0]), int(reuse[3].split()[2])
    assert first >= 2 and second < first, reuse
    # Only what was asked for ran.
    for other in ("P1", "P3", "P5", "P6", "P7", "P8"):
        assert f"│ {other} " not in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _rows(out: str, scenario: str) -> list[list[str]]:
    """Every table row of ``scenario``, its cells joined across the lines rich wraps them onto."""
    rows: list[list[str]] = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if not cells:
            if rows and line.startswith(("├", "└")):
                rows.append([])  # a rule ends the current row
            continue
        if cells[0]:
            rows.append(cells if cells[0] == scenario else [])
        elif rows and rows[-1]:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
    return [r for r in rows if r]


def test_p8_small_fleet_no_failures_and_the_calls_the_strategy_says() -> None:
    pods, secrets = 3, 5
    p = _run(
        "--only", "P8", "--quick", "--latency-ms", "0", "--no-chart",
        "--p8-pods", str(pods), "--p8-secrets", str(secrets),
    )  # fmt: skip
    assert p.returncode in (0, 1), p.stderr[-3000:]
    plugin, batch, agent, faults = _rows(p.stdout, "P8")
    # Default strategy: one GetSecretValue per secret per pod, never the scarce batch API.
    assert plugin[2].startswith("0 failed"), plugin
    assert f"GetSecretValue {pods * secrets}" in plugin[2] and "Batch" not in plugin[2], plugin
    assert "boto3 loop: 0 failed" in plugin[3] and f"GetSecretValue {pods * secrets}" in plugin[3]
    # read_strategy=batch: one batch per pod (3 fit in the 4/s bucket), no single reads.
    assert batch[2].startswith("0 failed") and f"BatchGetSecretValue {pods};" in batch[2] + ";", batch
    assert " GetSecretValue" not in batch[2].replace("BatchGetSecretValue", ""), batch
    # Through the local agent (serve): AWS sees one read per secret, whatever the number of pods.
    assert agent[2].startswith("0 failed") and f"; GetSecretValue {secrets}" in agent[2], agent
    assert agent[5] == "PASS", agent
    # With faults injected, every pod got its secrets or a typed, retryable error.
    assert faults[5] == "PASS", faults
    assert "got their secrets" in faults[2]


def test_unknown_scenario_is_a_usage_error() -> None:
    p = _run("--only", "P9", "--no-chart")
    assert p.returncode == 2
    assert "unknown scenario" in p.stderr and "P9" in p.stderr
