"""Every flytekit minor version setup.cfg allows, tested: the ``compat``-marked tests (import, ``pyflyte run``,
``pyflyte serialize`` and ``pyflyte-execute`` of workflows with ARN secrets, every task type, the cluster
modes and the hooks) run again in a venv of their own per version.

The main venv holds the newest flytekit that setup.cfg allows; this module adds the lowest release of each
supported minor (``COMPAT_FLYTEKIT_VERSIONS`` overrides the list, e.g. ``"1.15.4"``). Each venv is built
once, in one pip resolve (the plugin, that flytekit, the same flytekitplugins-sqlalchemy, moto, pytest), and
kept under ``.venv-compat/`` keyed by the version and setup.cfg's content, so later runs only test.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

#: The lowest release of each supported minor; keep in step with setup.cfg's flytekit range.
DEFAULT_VERSIONS = ["1.15.0", "1.16.0"]
VERSIONS = os.environ.get("COMPAT_FLYTEKIT_VERSIONS", " ".join(DEFAULT_VERSIONS)).split()
COMPAT_FILES = ["tests/test_flyte_commands.py", "tests/test_task_types.py", "tests/test_cluster_modes.py"]


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "_FSEC_", "PYTHON"))
    }
    env["COMPAT_INNER"] = "1"
    return env


def _venv(version: str) -> Path:
    key = hashlib.sha256((ROOT / "setup.cfg").read_bytes()).hexdigest()[:10]
    venv = ROOT / ".venv-compat" / f"flytekit-{version}-{key}"
    done = venv / ".complete"
    if done.exists():
        return venv
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    p = subprocess.run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-e",
            str(ROOT),
            f"flytekit=={version}",
            f"flytekitplugins-sqlalchemy=={version}",
            "moto[server]>=5.0.10",
            "pytest>=8",
            "pytest-timeout>=2",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, f"pip could not build a venv with flytekit {version}:\n{p.stderr[-3000:]}"
    got = subprocess.run(
        [str(py), "-c", "import flytekit; print(flytekit.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.stdout.strip() == version, got.stdout + got.stderr[-2000:]
    done.write_text(version)
    return venv


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("version", VERSIONS)
def test_compat_subset_on_flytekit(version: str) -> None:
    if os.environ.get("COMPAT_INNER"):
        pytest.skip("already inside a compatibility venv")
    venv = _venv(version)
    p = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-m", "compat", *COMPAT_FILES],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    summary = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    assert p.returncode == 0, f"flytekit {version}: {summary}\n{p.stdout[-4000:]}\n{p.stderr[-2000:]}"
    assert " passed" in summary and "failed" not in summary
