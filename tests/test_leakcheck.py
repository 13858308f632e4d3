"""The whole-suite leak check itself: it must find a registered value, and its encodings, in captured text."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from tests.conftest import CREATED_VALUES, new_value
from tests.support.leakcheck import find_leaks

ROOT = Path(__file__).resolve().parent.parent


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


def test_a_leaking_test_fails_and_its_text_is_withheld_serial_and_parallel(tmp_path: Path) -> None:
    """The hook itself, in a real pytest run of a planted test file (serial, and with xdist's ``-n 2``): a
    test that prints a created value fails, the run fails, and the value is not in what pytest printed."""
    (tmp_path / "planted").mkdir()
    # The suite's own hooks, registered by a conftest of the planted directory.
    (tmp_path / "planted" / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_logreport, pytest_sessionfinish, pytest_terminal_summary\n"
    )
    (tmp_path / "planted" / "test_planted.py").write_text(
        "from tests.conftest import new_value\n\n"
        "def test_prints_a_value():\n    print('token', new_value())\n\n"
        "def test_fails_with_a_value_in_its_message():\n    v = new_value()\n    assert v == 'other'\n\n"
        "def test_clean():\n    print('nothing secret')\n"
    )
    for extra in ([], ["-n", "2"]):
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "addopts=",
                "--rootdir",
                str(tmp_path),
            ]
            + [*extra, str(tmp_path / "planted")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        out = p.stdout + p.stderr
        assert p.returncode == 1, out[-3000:]
        assert "2 failed, 1 passed" in out, out[-3000:]
        assert out.count("secret value leaked into test output") >= 2, out[-3000:]
        # The planted tests' values are new_value()'s "sv-<random>": none may be printed.
        assert not re.search(r"sv-[A-Za-z0-9_-]{20,}", out), "a planted value was printed"
