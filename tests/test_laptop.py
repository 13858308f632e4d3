"""Laptops without a memory filesystem work out of the box; pods stay strict (issue 21, item 2).

Two ways to be a machine without tmpfs: a private mount namespace with a disk directory bound over
``/dev/shm`` (``unshare -m``, as root), running the real demo, ``pyflyte run`` and ``pyflyte-execute``; and the
path macOS takes (no ``/proc/mounts``), in-process through a real flytekit task.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flytekit import Secret, current_context, task

from flytekitplugins_awssecrets import aws_secret, mount, mountdirs
from flytekitplugins_awssecrets.errors import FileMountOnDiskError, SecretResolutionError
from tests.conftest import ROOT
from tests.support.pod import BIN, run_pod

NOTICE = "no memory filesystem at"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_macos_path_local_run_uses_a_private_directory(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # What macOS looks like to the plugin: no /proc/mounts, so no directory is known to be in memory.
    monkeypatch.setattr(mountdirs, "PROC_MOUNTS", "/nonexistent/proc/mounts")
    monkeypatch.setattr(mountdirs, "_notice_given", False)
    arn, value = secrets_factory.secret(f"{unique}/laptop")
    req = aws_secret(arn, mount_requirement=Secret.MountType.FILE)
    private = mount.laptop_root()
    # A crash of an earlier run left a directory behind: the next start sweeps it.
    stale = private / f"flyte-aws-secrets-{2**22 + 7}-crashed"
    stale.mkdir(exist_ok=True)
    (stale / "left-over").write_text("x")
    seen: dict[str, Any] = {}

    @task(secret_requests=[req])
    def t() -> bool:
        path = Path(current_context().secrets.get_secrets_file(req.group, req.key))
        seen["path"] = path
        seen["modes"] = [_mode(path)] + [_mode(d) for d in path.parents if private in d.parents]
        return path.read_text() == value

    with caplog.at_level(logging.WARNING, logger="flytekitplugins_awssecrets"):
        assert t() is True
        assert t() is True
    path = seen["path"]
    assert private in path.parents and _mode(private) == 0o700 and private.stat().st_uid == os.getuid()
    assert seen["modes"][0] == 0o600 and set(seen["modes"][1:]) == {0o700}
    assert not path.exists(), "removed after the task"
    assert not stale.exists(), "a crashed run's directory is swept on the next start"
    notices = [r for r in caplog.records if NOTICE in r.getMessage()]
    assert len(notices) == 1 and "a pod still refuses disk" in notices[0].getMessage()


def test_macos_path_without_the_fallback_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a pod gets (no fallback): the FILE secret is refused, nothing written."""
    from flytekitplugins_awssecrets.mount import MountSession, Resolved
    from flytekitplugins_awssecrets.refs import parse_reference

    monkeypatch.setattr(mountdirs, "PROC_MOUNTS", "/nonexistent/proc/mounts")
    ref = parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf")
    r = Resolved(ref.group, ref.key, None, "FILE", None, ref, "not-a-secret")
    with pytest.raises(SecretResolutionError) as e:
        MountSession(tmp_path).mount([r])
    assert isinstance(e.value.errors[0], FileMountOnDiskError)
    assert not any(tmp_path.rglob("*"))


def test_the_private_directory_is_never_someone_elses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / f"flyte-aws-secrets-u{os.getuid()}").symlink_to(target)  # planted in a shared /tmp
    with pytest.raises(FileMountOnDiskError):
        mount.laptop_root()


# --- a real machine without tmpfs: a mount namespace with disk over /dev/shm ------------------------------------


def _unshare_ok() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    p = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    return p.returncode == 0


needs_namespace = pytest.mark.skipif(not _unshare_ok(), reason="needs root and unshare -m")


def _no_tmpfs(disk: Path) -> tuple[str, ...]:
    disk.mkdir(parents=True, exist_ok=True)
    return ("unshare", "-m", "sh", "-c", 'mount --bind "$0" /dev/shm && exec "$@"', str(disk))


@needs_namespace
def test_demo_and_pod_on_a_machine_without_tmpfs(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    disk = ROOT / ".venv-compat" / f"disk-shm-{unique}"  # under the project: a disk filesystem
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
        # The README demo, as a user runs it (it starts its own moto server).
        p = subprocess.run(
            [*_no_tmpfs(disk), sys.executable, "examples/demo.py"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = p.stdout + p.stderr
        assert p.returncode == 0, out[-3000:]
        assert NOTICE in out and "FileMountOnDiskError" not in out
        assert not [f for f in disk.rglob("*") if f.is_file()], "nothing written to the disk /dev/shm"

        # The same machine as a pod: pyflyte-execute still refuses disk.
        arn, _ = secrets_factory.secret(f"{unique}/pod")
        from tests.support.pod import serialize_tasks

        penv = {**env, **aws_env, "GUARD_ARN": arn}
        spec = serialize_tasks("tests.guarded", tmp_path / "spec", penv, "*guarded.wf.guarded_1.pb")
        (only,) = spec.values()
        p = run_pod(only, tmp_path / "pod", penv, bin_dir=BIN, wrap=_no_tmpfs(disk))
        from flyteidl.core import errors_pb2

        doc = errors_pb2.ErrorDocument()
        doc.ParseFromString((tmp_path / "pod" / "out" / "error.pb").read_bytes())
        assert "memory filesystem only" in doc.error.message and "user code was not run" in doc.error.message
        assert NOTICE not in p.stdout + p.stderr
        assert not [f for f in disk.rglob("*") if f.is_file()]
    finally:
        shutil.rmtree(disk, ignore_errors=True)
