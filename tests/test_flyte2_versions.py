"""The previous flyte 2 minor, tested: the ``flyte2_compat`` tests (tests/test_flyte2.py: ``flyte run --local``,
``flyte.run``, the pod's ``a0``, the spec; local isolation and cluster modes) run again in a venv holding it. The main venv holds the newest 2.x.

``COMPAT_FLYTE_VERSIONS`` overrides the list (e.g. ``"2.11.0"``). Each venv is built once, in one pip resolve
(the plugin, that flyte, moto, pytest) by tests/support/venvs.py, under ``.venv-compat/`` keyed by the
requirements and setup.cfg, so later runs only test.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.venvs import build_venv

#: The newest release of the previous supported minor; keep in step with setup.cfg's flyte2 range.
DEFAULT_VERSIONS = ["2.11.4"]
VERSIONS = os.environ.get("COMPAT_FLYTE_VERSIONS", " ".join(DEFAULT_VERSIONS)).split()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "PYTHON"))}
    env["COMPAT_INNER"] = "1"
    return env


def _venv(version: str) -> Path:
    """The venv for ``version``, built by the shared builder (uv: one resolve, seconds, progress lines)."""
    requirements = [
        "-e",
        str(ROOT),
        f"flyte=={version}",
        "moto[server]>=5.0.10",
        "pytest>=8",
        "pytest-timeout>=2",
    ]
    venv = build_venv(f"flyte-{version}", requirements)
    got = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import flyte; print(flyte.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.stdout.strip() == version, got.stdout + got.stderr[-2000:]
    return venv


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("version", VERSIONS)
def test_flyte2_subset_on_previous_minor(version: str) -> None:
    if os.environ.get("COMPAT_INNER"):
        pytest.skip("already inside a compatibility venv")
    venv = _venv(version)
    p = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            "-m",
            "flyte2_compat",
            "tests/test_flyte2.py",
            "tests/test_flyte2_pod.py",
            "tests/test_flyte2_units.py",
            "tests/test_flyte2_isolation.py",
            "tests/test_flyte2_cluster.py",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    summary = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    assert p.returncode == 0, f"flyte {version}: {summary}\n{p.stdout[-4000:]}\n{p.stderr[-2000:]}"
    assert " passed" in summary and "failed" not in summary
