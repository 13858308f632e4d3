"""What a long read from AWS shows while it runs: ``manifest diff`` and ``sync`` read every entry first.

On a terminal (stderr), a spinner with the elapsed time while the read runs; then, terminal or not (CI, a
pipe), one summary line on stderr: ``read 500 parameters, 2 secrets from AWS in 3.1 s``. stdout stays data
only. The writes' own progress (a bar, or a line every 10 s) is in ``store._run``.

Example::

    with reading("500 listed entries") as done:
        remote = read_remote(m, clients)
        done(f"{len(remote)} entries")
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["reading"]


@contextmanager
def reading(what: str) -> Iterator[Callable[[str], None]]:
    """Show that ``what`` is being read; the caller may say what was found (the summary line's subject)."""
    found: list[str] = []
    start = time.monotonic()
    if sys.stderr.isatty():
        from rich.console import Console

        with Console(stderr=True, emoji=False, markup=False, highlight=False).status(
            f"reading {what} from AWS"
        ):
            yield found.append
    else:
        yield found.append
    subject = found[-1] if found else what
    print(f"read {subject} from AWS in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
