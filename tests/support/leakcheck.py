"""The whole-suite leak check: every secret value the suite creates is registered (tests/conftest.py), and
every test's captured stdout, stderr, logs and failure text is searched for them and their common encodings.
A hit fails the session, naming the test and the section, never the value.

:func:`encoded_forms` is written out here independently of the plugin's own ``sensitive`` module, so that
tests do not check the plugin with the plugin's idea of what a leak looks like."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MIN_LEN = 6  # shorter strings (e.g. "app", "p") are ordinary words, not random values

#: Every secret value created by the suite. It lives here, not in conftest.py, because pytest imports
#: conftest.py as ``conftest`` while tests import it as ``tests.conftest``: two modules, two sets.
CREATED_VALUES: set[str] = set()


def encoded_forms(value: str, min_len: int = MIN_LEN) -> set[str]:
    """``value``, each of its lines, and their base64, percent, JSON/repr-escaped and hex forms."""
    out: set[str] = set()
    for v in {value, value.strip(), *value.splitlines()}:
        raw = v.encode("utf-8", "surrogatepass")
        out |= {
            v,
            base64.b64encode(raw).decode().rstrip("="),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
            quote(v, safe=""),
            quote_plus(v),
            json.dumps(v)[1:-1],
            repr(v)[1:-1],
            raw.hex(),
        }
    return {f for f in out if len(f) >= min_len}


_forms_cache: dict[str, frozenset[str]] = {}


def find_leaks(values: Iterable[str], sections: Iterable[tuple[str, str]]) -> list[str]:
    """Names of the sections whose text contains one of ``values`` or an encoded form of one."""
    needles: set[str] = set()
    for v in values:
        if len(v) >= MIN_LEN:
            forms = _forms_cache.get(v)
            if forms is None:
                forms = _forms_cache[v] = frozenset(encoded_forms(v))
            needles.update(forms)
    texts = [(title, text) for title, text in sections if text]
    return [title for title, text in texts if any(n in text for n in needles)]
