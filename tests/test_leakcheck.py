"""The whole-suite leak check itself: it must find a registered value in captured text."""

from __future__ import annotations

from tests.conftest import CREATED_VALUES, new_value
from tests.support.leakcheck import find_leaks


def test_detector_finds_registered_values() -> None:
    v = new_value()
    assert v in CREATED_VALUES
    sections = [("Captured stdout call", "hello"), ("Captured log call", f"WARNING token={v}")]
    assert find_leaks(CREATED_VALUES, sections) == ["Captured log call"]
    assert find_leaks(CREATED_VALUES, [("Captured stderr call", "[REDACTED]")]) == []
