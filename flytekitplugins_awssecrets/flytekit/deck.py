"""The "AWS secrets" Flyte Deck (flytekit adapter): what a task read, one row per request, never a value.

Added to tasks with AWS requests when the task enables decks (``@task(enable_deck=True)``), or to every
such task with the setting ``deck: always``; ``deck: never`` turns it off. The table is rendered when
flytekit writes the task's decks (after user code), so refreshes made while the task ran are counted.

Columns: reference (ARN, or alias and the ARN it names), JSON key, served from (AWS API and region, the
process cache, the cluster's webhook, a local agent), version id and stages, read at, read time,
refreshes, and where it was mounted (env var name or file path).
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["DECK_NAME", "add_deck", "render"]

DECK_NAME = "AWS secrets"

_STYLE = """<style>
.awssecrets{border-collapse:collapse;font:13px/1.35 system-ui,-apple-system,Segoe UI,sans-serif;width:100%;
 table-layout:auto}
.awssecrets th,.awssecrets td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
.awssecrets th{background:#f4f4f6;font-weight:600;white-space:nowrap}
.awssecrets td.ref,.awssecrets td.mnt{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;
 overflow-wrap:anywhere;word-break:break-all;max-width:28em}
.awssecrets td.num{text-align:right;white-space:nowrap}
.awssecrets .stages{font-family:system-ui,sans-serif;font-size:11px;color:#555;word-break:normal}
.awssecrets-note{font:12px system-ui,sans-serif;color:#555;margin:6px 0}
</style>"""


def _cell(text: object, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<td{c}>{escape(str(text)) if text not in (None, '') else '&ndash;'}</td>"


def render(record: Any) -> str:
    """The deck's HTML for a :class:`~flytekitplugins_awssecrets.record.TaskRecord` (value-free)."""
    doc = record.to_dict()
    rows = []
    for r in doc["reads"]:
        ref = r["reference"] if not r["alias"] else f"{r['alias']} \u2192 {r['reference']}"
        stages = ", ".join(r["version_stages"])
        version = escape(r["version_id"] or "") + (
            f'<br><span class="stages">{escape(stages)}</span>' if stages else ""
        )
        served = r["detail"] if r["source"] == "aws" and r["detail"] else r["source"]
        if r["source"] != "aws" and r["detail"] and r["detail"] != r["source"]:
            served += f" ({r['detail']})"
        refreshes = str(r["refreshes"])
        if r["refresh_interval_seconds"]:
            refreshes += f" (every {r['refresh_interval_seconds']:g} s)"
        if r["refresh_failures"]:
            refreshes += f", {r['refresh_failures']} failed"
        rows.append(
            "<tr>"
            + _cell(ref, "ref")
            + _cell(r["json_key"])
            + _cell(served)
            + f'<td class="ref">{version or "&ndash;"}</td>'
            + _cell((r["read_at"] or "").replace("T", " "))
            + _cell(f"{r['read_ms']:g} ms", "num")
            + _cell(refreshes)
            + _cell(r["mounted_as"], "mnt")
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "Reference",
            "JSON key",
            "Served from",
            "Version",
            "Read at (UTC)",
            "Took",
            "Refreshes",
            "Mounted as",
        )
    )
    note = (
        f'<p class="awssecrets-note">Task {escape(str(doc["task"] or ""))}: {len(rows)} AWS secret request(s). '
        "Values are never shown.</p>"
    )
    return f'{_STYLE}{note}<table class="awssecrets"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def add_deck(task: Any, ctx: Any, record: Any, mode: str) -> bool:
    """Add the deck for ``record`` to the task's decks; True if added."""
    if mode == "never" or not record.reads:
        return False
    enabled = getattr(task, "_disable_deck", True) is False
    if not enabled:
        if mode != "always" or not hasattr(task, "_disable_deck"):
            return False
        task._disable_deck = False  # noqa: SLF001 - flytekit's own switch behind enable_deck
    params = getattr(ctx, "user_space_params", None)
    decks = getattr(params, "decks", None)
    if decks is None:
        return False
    from flytekit.deck.deck import Deck

    class _AwsSecretsDeck(Deck):  # type: ignore[misc]  # flytekit is untyped here
        """Rendered when flytekit writes the decks, so refreshes during the task are in it."""

        @property
        def html(self) -> str:
            return render(record)

    decks.append(_AwsSecretsDeck(DECK_NAME, "", auto_add_to_deck=False))
    return True
