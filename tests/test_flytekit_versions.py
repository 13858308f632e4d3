"""Every flytekit minor version setup.cfg allows, tested: the ``compat``-marked tests (import, ``pyflyte run``,
``pyflyte serialize`` and ``pyflyte-execute`` of workflows with ARN secrets, every task type, the cluster
modes and the hooks) run again in a venv of their own per version.

The main venv holds the newest flytekit that setup.cfg allows; this module adds the lowest release of each
supported minor (``COMPAT_FLYTEKIT_VERSIONS`` overrides the list, e.g. ``"1.15.4"``). Each venv is built by
:func:`tests.support.venvs.build_venv` in one resolve (the plugin, that flytekit, the same
flytekitplugins-sqlalchemy, moto, pytest) and kept under ``.venv-compat/`` keyed by content, so later runs
only test. Each compat file is its own test, and the inner pytest's lines are shown as they come: neither
the build nor the inner run is ever silent for long.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.venvs import build_venv, clean_env

#: The lowest release of each supported minor; keep in step with setup.cfg's flytekit range.
DEFAULT_VERSIONS = ["1.15.0", "1.16.0"]
VERSIONS = os.environ.get("COMPAT_FLYTEKIT_VERSIONS", " ".join(DEFAULT_VERSIONS)).split()
COMPAT_FILES = ["tests/test_flyte_commands.py", "tests/test_task_types.py", "tests/test_cluster_modes.py"]

pytestmark = pytest.mark.slow


def requirements(version: str) -> list[str]:
    return [
        "-e",
        str(ROOT),
        f"flytekit=={version}",
        f"flytekitplugins-sqlalchemy=={version}",
        "moto[server]>=5.0.10",
        "pytest>=8",
        "pytest-timeout>=2",
    ]


def _env() -> dict[str, str]:
    env = clean_env()
    env["COMPAT_INNER"] = "1"
    return env


@pytest.fixture
def say(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Print one line on the terminal now, past pytest's capture."""
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        with capman.global_and_fixture_disabled():
            sys.stderr.write(f"\n[compat] {line}")
            sys.stderr.flush()

    return say


def _venv(version: str, say: Callable[[str], None]) -> Path:
    venv = build_venv(f"flytekit-{version}", requirements(version), say=say)
    got = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import flytekit; print(flytekit.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.stdout.strip() == version, got.stdout + got.stderr[-2000:]
    return venv


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("compat_file", COMPAT_FILES, ids=[Path(f).stem for f in COMPAT_FILES])
@pytest.mark.parametrize("version", VERSIONS)
def test_compat_subset_on_flytekit(version: str, compat_file: str, say: Callable[[str], None]) -> None:
    if os.environ.get("COMPAT_INNER"):
        pytest.skip("already inside a compatibility venv")
    venv = _venv(version, say)
    args = [str(venv / "bin" / "python"), "-m", "pytest", "-v", "-m", "compat", compat_file]
    say(f"flytekit {version}: {' '.join(args[2:])}")
    started = time.monotonic()
    proc = subprocess.Popen(
        args, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:  # the inner tests' names and outcomes (no values: the inner suite prints none)
        lines.append(line.rstrip("\n"))
        if " PASSED" in line or " FAILED" in line or " ERROR" in line or " SKIPPED" in line:
            say(f"flytekit {version}: {line.strip()}")
    proc.wait(timeout=max(1.0, 1500 - (time.monotonic() - started)))
    out = "\n".join(lines)
    summary = lines[-1] if lines else ""
    assert proc.returncode == 0, f"flytekit {version}: {summary}\n{out[-6000:]}"
    assert " passed" in summary and "failed" not in summary
