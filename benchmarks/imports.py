"""P1: what the plugin adds to ``import flytekit``, the cost every Flyte process pays whether or not it uses
AWS secrets; and whether that import pulls in boto3 (it must not: boto3 costs ~0.3-0.5 s to import).

Each run is a fresh interpreter (``benchmarks.children import-time``). The plugin's share is the time spent
loading its entry point inside ``import flytekit``, measured in the same run as the total; runs with the
entry point skipped (flytekit alone) are interleaved and shown for comparison -- their difference from the
runs with the plugin is below the run-to-run noise of a 1 s import, which is why the share is measured
directly rather than as that difference.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from benchmarks.harness import ROOT, Options, Results, Row, ms

GOAL_SHARE = 0.02


def _child(skip_plugin: bool, flyte2: bool = False) -> dict[str, float | bool]:
    args = [sys.executable, "-m", "benchmarks.children", "import-time"]
    if skip_plugin:
        args.append("--skip-plugin")
    if flyte2:
        args.append("--flyte2")
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    data: dict[str, float | bool] = json.loads(p.stdout.strip().splitlines()[-1])
    return data


def run(opts: Options, results: Results) -> None:
    _run_flytekit(opts, results)
    try:
        import flyte  # noqa: F401
    except ImportError:
        results.notes.append("P1 (Flyte 2): flyte is not installed, row skipped")
        return
    _run_flyte2(opts, results)


def _measure(opts: Options, flyte2: bool) -> tuple[float, float, float, bool, bool]:
    """Medians of (plugin's share, total, total with the entry point skipped), and whether any run imported
    boto3/botocore, and whether every run loaded the plugin."""
    _child(False, flyte2)  # the first import after an install writes .pyc files: not what a pod pays
    with_plugin, alone = [], []
    for _ in range(opts.repeats(9)):
        with_plugin.append(_child(False, flyte2))
        alone.append(_child(True, flyte2))
    return (
        statistics.median(float(r["plugin"]) for r in with_plugin),
        statistics.median(float(r["total"]) for r in with_plugin),
        statistics.median(float(r["total"]) for r in alone),
        any(bool(r["boto3"]) or bool(r["botocore"]) for r in with_plugin),
        all(bool(r["plugin_loaded"]) for r in with_plugin),
    )


def _run_flyte2(opts: Options, results: Results) -> None:
    """The same for Flyte 2: ``import flyte`` + ``flyte.init()`` (which loads ``flyte.plugins.types``)."""
    plugin, total, flyte_alone, boto3, loaded = _measure(opts, flyte2=True)
    share = plugin / total
    results.series["P1 flyte"] = {"plugin": plugin, "total": total, "flyte alone": flyte_alone}
    results.add(
        Row(
            "P1",
            "plugin's share of `import flyte` + `flyte.init()`",
            f"{ms(plugin)} of {ms(total)} = {share:.1%}",
            f"flyte alone {ms(flyte_alone)} (entry point skipped)",
            f"<= {GOAL_SHARE:.0%}, boto3 not imported",
            share <= GOAL_SHARE and loaded and not boto3,
            short=f"{share:.1%} of import flyte" + (", boto3 imported" if boto3 else ""),
        )
    )


def _run_flytekit(opts: Options, results: Results) -> None:
    plugin, total, flytekit_alone, boto3, loaded = _measure(opts, flyte2=False)
    share = plugin / total
    results.series["P1"] = {"plugin": plugin, "total": total, "flytekit alone": flytekit_alone}
    results.add(
        Row(
            "P1",
            "plugin's share of `import flytekit`",
            f"{ms(plugin)} of {ms(total)} = {share:.1%}",
            f"flytekit alone {ms(flytekit_alone)} (entry point skipped)",
            f"<= {GOAL_SHARE:.0%}",
            share <= GOAL_SHARE and loaded,
            short=f"{share:.1%} of import flytekit",
        )
    )
    results.add(
        Row(
            "P1",
            "boto3/botocore imported by `import flytekit`",
            "yes" if boto3 else "no",
            "-",
            "no",
            not boto3,
            short="boto3 imported" if boto3 else "boto3 not imported",
        )
    )
