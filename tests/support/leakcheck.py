"""The whole-suite leak check: every secret value the suite creates is registered (tests/conftest.py), and
every test's captured stdout, stderr, logs and failure text is searched for them. A hit fails the session,
naming the test and the section, never the value."""

from __future__ import annotations

from collections.abc import Iterable

MIN_LEN = 6  # shorter strings (e.g. "app", "p") are ordinary words, not random values

#: Every secret value created by the suite. It lives here, not in conftest.py, because pytest imports
#: conftest.py as ``conftest`` while tests import it as ``tests.conftest``: two modules, two sets.
CREATED_VALUES: set[str] = set()


def find_leaks(values: Iterable[str], sections: Iterable[tuple[str, str]]) -> list[str]:
    """Names of the sections whose text contains one of ``values``."""
    needles = [v for v in values if len(v) >= MIN_LEN]
    hits = []
    for title, text in sections:
        if any(v in text for v in needles):
            hits.append(title)
    return hits
