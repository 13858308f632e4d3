"""The chart in docs/: one panel per scenario that has something to compare, and the goals with their verdicts.

matplotlib's Agg backend renders to a file without a display (CI, containers). Panels for scenarios that did
not run (``--only``) are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Options, Results, machine_line

COLOURS = {
    "plugin": "#2a7ab9",
    "boto3 loop": "#d98c2b",
    "SecretCache": "#8c8c8c",
    "batch": "#4a9a4a",
    "psyml": "#d98c2b",
}


def _p2_time(ax: Any, data: dict[str, Any]) -> None:
    for name, by_n in data.items():
        ns = sorted(by_n)
        ax.plot(ns, [by_n[n][0] * 1000 for n in ns], "o-", label=name, color=COLOURS.get(name))
    ax.set(xscale="log", yscale="log", xlabel="secrets (one region, cold)", ylabel="wall time (ms)")
    ax.set_title("P2: resolving N secrets, cold")
    ax.legend(fontsize=8)


def _p2_calls(ax: Any, data: dict[str, Any]) -> None:
    for name, by_n in data.items():
        ns = sorted(by_n)
        ax.plot(ns, [max(by_n[n][1], 0.8) for n in ns], "o-", label=name, color=COLOURS.get(name))
    ax.set(xscale="log", yscale="log", xlabel="secrets", ylabel="API calls (counted at the server)")
    ax.set_title("P2: API calls")
    ax.legend(fontsize=8)


def _p2_sweep(ax: Any, grid: dict[int, dict[int, float]]) -> None:
    for n, by_c in sorted(grid.items()):
        cs = sorted(by_c)
        ax.plot(cs, [by_c[c] * 1000 for c in cs], "o-", label=f"{n} secrets")
    ax.set(xscale="log", yscale="log", xlabel="max_concurrency (cold)", ylabel="wall time (ms)")
    ax.set_title("P2: no cliff over max_concurrency")
    ax.legend(fontsize=8)


def _p2_series(results: Results) -> dict[str, Any] | None:
    """P2's curves: the replay stand-in's (concurrent, as AWS) when it ran, else moto's."""
    return results.series.get("P2 replay") or results.series.get("P2 moto")


def _bars(ax: Any, labels: list[str], values: list[float], colours: list[str], unit: str) -> None:
    bars = ax.bar(labels, values, color=colours)
    for b, v in zip(bars, values, strict=True):
        ax.annotate(
            f"{v:.0f} {unit}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom"
        )
    ax.margins(y=0.15)


def _p3_p2_detail(ax: Any, results: Results) -> None:
    labels, values, colours = [], [], []
    if "P2 detail" in results.series:
        d = results.series["P2 detail"]
        labels += ["build 1 client", "40: fetch only\n(plugin)", "40: fetch only\n(boto3 loop)"]
        values += [d["client"] * 1000, d["plugin"] * 1000, d["loop"] * 1000]
        colours += ["#bbbbbb", COLOURS["plugin"], COLOURS["boto3 loop"]]
    if "P3" in results.series:
        d = results.series["P3"]
        labels += ["40 cold,\n1 region", "40 cold,\n2 regions"]
        values += [d["one region"] * 1000, d["two regions"] * 1000]
        colours += [COLOURS["plugin"], "#5aa6dd"]
    _bars(ax, labels, values, colours, "ms")
    ax.set_ylabel("wall time (ms)")
    ax.set_yscale("log")
    ax.set_title("P2 at 40 split up; P3 two regions")
    ax.tick_params(axis="x", labelsize=7)


def _p5(ax: Any, results: Results) -> None:
    d = results.series["P5"]
    base = d["without_secrets"]
    labels = ["no secrets", "plugin,\n20 secrets", "task builds\nboto3 client", "task loops\nboto3, 20"]
    keys = ["without_secrets", "with_secrets", "boto3_client_only", "boto3_loop"]
    colours = ["#bbbbbb", COLOURS["plugin"], "#bbbbbb", COLOURS["boto3 loop"]]
    bars = ax.bar(labels, [d[k] * 1000 for k in keys], color=colours)
    for b, k in zip(bars, keys, strict=True):
        text = f"{d[k] * 1000:.0f} ms" if k == "without_secrets" else f"+{(d[k] - base) * 1000:.0f} ms"
        ax.annotate(
            text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8
        )
    ax.margins(y=0.15)
    ax.set_ylabel("pyflyte-execute wall time, best run (ms)")
    ax.set_title("P5: one pod task")
    ax.tick_params(axis="x", labelsize=7)


def _p6(ax: Any, results: Results) -> None:
    d = results.series["P6"]
    labels, values, colours = [], [], []
    for variant, what in (("plain", ""), ("tags", "\n(tags)")):
        if variant in d:
            labels += [f"sync{what}", f"psyml save{what}"]
            values += [d[variant]["sync"][0], d[variant]["psyml"][0]]
            colours += [COLOURS["plugin"], COLOURS["psyml"]]
    bars = ax.bar(labels, values, color=colours)
    calls = [d[v][k][1] for v in ("plain", "tags") if v in d for k in ("sync", "psyml")]
    for b, v, c in zip(bars, values, calls, strict=True):
        ax.annotate(
            f"{v:.1f} s\n{c} calls",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.margins(y=0.25)
    ax.set_ylabel("wall time (s)")
    ax.set_title("P6: 500 parameters, 5 changed")
    ax.tick_params(axis="x", labelsize=8)


def _goals(ax: Any, results: Results) -> None:
    ax.axis("off")
    ax.set_title("Goals")
    rows = [r for r in results.rows if r.passed is not None]
    y = 0.97
    for r in rows:
        colour = "#1a8a3a" if r.passed else "#c0392b"
        ax.text(0.0, y, f"{r.id}", fontsize=8, weight="bold", va="top", transform=ax.transAxes)
        ax.text(0.08, y, r.verdict, fontsize=8, weight="bold", color=colour, va="top", transform=ax.transAxes)
        # One line per goal: two lines each overlapped once the table passed ~12 goals.
        ax.text(
            0.2, y, f"{r.short or r.value}  (goal: {r.goal})", fontsize=7, va="top", transform=ax.transAxes
        )
        y -= 0.97 / max(len(rows), 8)


def write_chart(results: Results, opts: Options, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[Callable[[Any], None]] = []
    p2 = _p2_series(results)
    if p2 is not None:
        panels += [lambda ax: _p2_time(ax, p2), lambda ax: _p2_calls(ax, p2)]
    if "P2 sweep" in results.series:
        panels.append(lambda ax: _p2_sweep(ax, results.series["P2 sweep"]))
    if "P3" in results.series or "P2 detail" in results.series:
        panels.append(lambda ax: _p3_p2_detail(ax, results))
    if "P5" in results.series:
        panels.append(lambda ax: _p5(ax, results))
    if "P6" in results.series:
        panels.append(lambda ax: _p6(ax, results))
    panels.append(lambda ax: _goals(ax, results))
    cols = 3 if len(panels) > 2 else len(panels)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.3 * rows), squeeze=False)
    flat = list(axes.flat)
    for draw, ax in zip(panels, flat, strict=False):
        draw(ax)
    for ax in flat[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"flytekitplugins-awssecrets benchmarks: {opts.latency_ms:g} ms per AWS request "
        f"(moto + proxy; P2 curves: replayed answers, {opts.connect_rtts:g} round trips per new connection)\n"
        f"{machine_line()}",
        fontsize=11,
    )
    fig.text(
        0.5,
        0.005,
        "reproduce: .venv/bin/python -m benchmarks  (medians; P5: best of 9 runs; see docs/benchmarks.md)",
        ha="center",
        fontsize=8,
        color="#555555",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
