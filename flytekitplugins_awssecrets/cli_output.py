"""How every command prints: data on stdout, messages on stderr, tables that never reinterpret data.

* References are data: ``...:123456789012:secret:demo/db`` must print as written, so rich's emoji codes
  (``:secret:`` is an emoji name) and markup (``[red]``) are off for every console made here; colours come
  from ``Text`` styles only.
* On a terminal a table fits its width (rich reads ``COLUMNS`` too); without one (a pipe, CI) the same rows
  print as plain aligned text with no box and no wrapping, so ``grep`` and ``awk`` work on it.
* ``NO_COLOR`` (any value) turns colours off; rich honours it, and so does the plain form (which has none).
* ``--format json`` prints one JSON document on stdout and nothing else there.

Example::

    from flytekitplugins_awssecrets.cli_output import print_rows
    print_rows("Secret requests", ["task", "result"], [["wf.t", ("ok", "green")]])
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

__all__ = ["console", "print_rows", "print_json", "message", "Cell", "format_option", "FormatChoice"]

#: A cell: plain text, or ``(text, rich style)`` for a coloured status word.
Cell = str | tuple[str, str]


def console(stderr: bool = False) -> Any:
    """A rich console that prints data literally (no emoji codes, markup or highlighting)."""
    from rich.console import Console

    return Console(stderr=stderr, emoji=False, markup=False, highlight=False)


def _text(cell: Cell) -> str:
    return cell[0] if isinstance(cell, tuple) else cell


def print_rows(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Cell]], whole: Sequence[int] = ()
) -> None:
    """A table on a terminal; plain aligned columns (the last one unpadded) otherwise. On stdout.

    Columns listed in ``whole`` (references) are never folded: when they cannot fit the terminal's width
    unbroken, the rows print in the plain form instead, which a terminal wraps without changing the text.
    """
    out = console()
    whole_widths = {i: max([len(columns[i])] + [len(_text(r[i])) for r in rows]) for i in whole}
    others = len(columns) - len(whole_widths)
    fits = sum(whole_widths.values()) + 10 * others + 3 * len(columns) + 1 <= out.width
    if out.is_terminal and not fits:
        _print_blocks(out, columns, rows, list(whole_widths))
        return
    if not out.is_terminal:
        widths = [max([len(c)] + [len(_text(r[i])) for r in rows]) for i, c in enumerate(columns)]

        def line(cells: Sequence[str]) -> str:
            padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True)]
            return "  ".join([*padded, cells[-1]]).rstrip()

        click.echo(line(list(columns)))
        for r in rows:
            click.echo(line([_text(c) for c in r]))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        if i in whole_widths:
            table.add_column(c, no_wrap=True, min_width=whole_widths[i])
        else:
            table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(Text(c[0], style=c[1]) if isinstance(c, tuple) else Text(c) for c in r))
    out.print(table)


def _print_blocks(out: Any, columns: Sequence[str], rows: Sequence[Sequence[Cell]], whole: list[int]) -> None:
    """A terminal too narrow for the table: one block per row, each whole column on a line of its own
    (unindented, so a reference that fits the width is never broken), the other cells wrapped."""
    from rich.text import Text

    for r in rows:
        head = Text()
        for i, c in enumerate(r):
            if i in whole or not _text(c):
                continue
            if head:
                head.append("  ")
            head.append(_text(c), style=c[1] if isinstance(c, tuple) else "")
        out.print(head, soft_wrap=False, overflow="fold")
        for i in whole:
            out.print(Text(_text(r[i])), soft_wrap=True)
        out.print()


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def message(text: str) -> None:
    """A message for people: stderr, printed as is."""
    click.echo(text, err=True)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


class FormatChoice(click.Choice):  # type: ignore[type-arg]
    """``--format``'s values: the human form is ``text`` on every command, ``json`` for scripts.

    Old spellings still work and are not shown in ``--help`` (``check --format table`` from before the
    names were made the same is read as ``text``).
    """

    #: Hidden spellings and what they mean.
    ALIASES = {"table": "text"}

    def __init__(self, choices: Sequence[str] = ("text", "json")) -> None:
        super().__init__(list(choices))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.lower() in self.ALIASES:
            value = self.ALIASES[value.lower()]
        return super().convert(value, param, ctx)


F = TypeVar("F", bound=Callable[..., Any])


def format_option(help: str) -> Callable[[F], F]:
    """The ``--format text|json`` option (``fmt`` in the command's arguments), the same on every command."""
    return click.option("--format", "fmt", type=FormatChoice(), default="text", show_default=True, help=help)
