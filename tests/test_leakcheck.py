"""The whole-suite leak check itself: it must find a registered value, and its encodings, in captured text."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

from tests.conftest import CREATED_VALUES, new_value
from tests.support.leakcheck import find_leaks


def test_detector_finds_registered_values() -> None:
    v = new_value()
    assert v in CREATED_VALUES
    sections = [("Captured stdout call", "hello"), ("Captured log call", f"WARNING token={v}")]
    assert find_leaks(CREATED_VALUES, sections) == ["Captured log call"]
    assert find_leaks(CREATED_VALUES, [("Captured stderr call", "[REDACTED]")]) == []


def test_detector_finds_encoded_forms_and_lines() -> None:
    v = new_value() + "\n" + new_value() + " $/+"
    CREATED_VALUES.add(v)
    line = v.splitlines()[1]
    for shown in (
        base64.b64encode(v.encode()).decode(),
        quote(v, safe=""),
        json.dumps({"k": v}),
        repr([v]),
        v.encode().hex(),
        f"only one line: {line}",
    ):
        assert find_leaks(CREATED_VALUES, [("Captured log call", shown)]) == ["Captured log call"]
    CREATED_VALUES.discard(v)
