"""Virtual environments the tests build for other versions of what the plugin runs with (each supported
flytekit minor, Flyte 2's SDK), in one resolve each, cached under ``.venv-compat/`` by content.

uv resolves and installs (seconds; pip backtracked for ten minutes and more over flytekit's loose pins, in
silence); pip is the fallback where uv is not installed. Every step prints a line when it starts and when it
ends, with its duration, so that a suite which builds a venv is never silent for long.

A venv's directory name is ``<name>-<key>``: the key is a digest of the requirements, setup.cfg (what
``-e .`` installs), the interpreter's version and the installer, so a change to any of them builds a new
venv and an unchanged one is reused. A venv counts as built once its ``.complete`` marker is written; a
build cut short is redone. Builds of the same venv by two processes at once (pytest-xdist workers) are
serialised by a lock file.

Example::

    venv = build_venv("flytekit-1.15.0", ["-e", str(ROOT), "flytekit==1.15.0", "pytest>=8"])
    subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", ...], check=True)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CACHE = ROOT / ".venv-compat"

#: Seconds one install may take; a cold uv cache downloads every wheel once (a minute on a slow network).
INSTALL_TIMEOUT = 900


def _say(line: str) -> None:
    """One progress line on the terminal, past pytest's output capture (stderr's file descriptor 2 is the
    terminal unless pytest replaced it; then the line goes where pytest keeps the test's output)."""
    print(f"[venvs] {line}", file=sys.__stderr__, flush=True)


def uv_binary() -> str | None:
    """The uv executable installed with the test extra (the ``uv`` wheel), else one on PATH, else None."""
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found,unused-ignore]

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def clean_env() -> dict[str, str]:
    """The environment for installers and for the tests run in a built venv: nothing that points at AWS, at
    the plugin's settings or at this interpreter's packages (PYTHONPATH and the like)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "_FSEC_", "PYTHON", "VIRTUAL_ENV"))
    }


def venv_key(name: str, requirements: Sequence[str]) -> str:
    """The digest that names a venv: requirements, setup.cfg, interpreter version and installer."""
    h = hashlib.sha256()
    for part in (name, *requirements, sys.version, "uv" if uv_binary() else "pip"):
        h.update(part.encode() + b"\0")
    h.update((ROOT / "setup.cfg").read_bytes())
    return h.hexdigest()[:12]


def _run(step: str, args: list[str], say: Callable[[str], None]) -> None:
    say(f"{step} ...")
    started = time.monotonic()
    p = subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    took = time.monotonic() - started
    if p.returncode != 0:
        raise RuntimeError(f"{step} failed after {took:.0f} s ({p.returncode}):\n{p.stderr[-4000:]}")
    # uv's summary lines ("Resolved 143 packages in 1.20s", "Installed ..."): what the step did.
    summary = [ln.strip() for ln in p.stderr.splitlines() if ln.strip().startswith(("Resolved", "Installed"))]
    say(f"{step}: done in {took:.1f} s" + (f" ({'; '.join(summary)})" if summary else ""))


def build_venv(name: str, requirements: Sequence[str], say: Callable[[str], None] = _say) -> Path:
    """A venv under ``.venv-compat/`` holding ``requirements`` (pip/uv arguments, e.g. ``"-e", ROOT``,
    ``"flytekit==1.15.0"``), installed in one resolve; built once, then reused while nothing changed.

    Raises ``RuntimeError`` with the installer's error output when the requirements cannot be installed.
    """
    venv = CACHE / f"{name}-{venv_key(name, requirements)}"
    done = venv / ".complete"
    if done.exists():
        return venv
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be building the same venv
        if done.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # what a build cut short left behind
        python = venv / "bin" / "python"
        uv = uv_binary()
        if uv:
            _run(f"{name}: uv venv", [uv, "venv", "--quiet", "--python", sys.executable, str(venv)], say)
            install = [uv, "pip", "install", "--python", str(python), *requirements]
            _run(f"{name}: uv pip install ({len(requirements)} requirements, one resolve)", install, say)
        else:
            _run(f"{name}: python -m venv", [sys.executable, "-m", "venv", "--clear", str(venv)], say)
            install = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements]
            _run(f"{name}: pip install ({len(requirements)} requirements, one resolve)", install, say)
        done.write_text("\n".join(requirements) + "\n")
    return venv
