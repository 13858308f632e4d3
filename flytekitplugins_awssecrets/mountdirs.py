"""Where FILE secrets live: the filesystem check, this process's directories and their removal.

* :func:`filesystem_type` tells a memory filesystem (tmpfs, ramfs) from disk, from ``/proc/mounts``; where
  that file does not exist (macOS) nothing is known to be in memory.
* :func:`process_root` makes this process's 0700 directory under a mount root, after sweeping the
  directories of dead processes (SIGKILL skips every handler); at exit and on SIGTERM/SIGHUP they are removed.
* :func:`laptop_root` is the user-private directory local runs use where no memory filesystem exists.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flytekitplugins_awssecrets.errors import FileMountOnDiskError

__all__ = [
    "MEMORY_FILESYSTEMS",
    "filesystem_type",
    "process_root",
    "laptop_root",
    "laptop_notice",
    "remove_all_mounts",
    "remove_file",
    "on_remove_all",
]

logger = logging.getLogger(__name__.rsplit(".", 1)[0] + ".mount")

_lock = threading.RLock()
_process_dirs: dict[str, Path] = {}  # mount root -> this process's directory under it
_on_remove_all: list[Callable[[], None]] = []
#: Where ``/proc/mounts`` is read (a test points it elsewhere to take the path macOS takes).
PROC_MOUNTS = "/proc/mounts"

_PREFIX = "flyte-aws-secrets-"
#: Filesystems that keep files in memory only: nothing written there survives the machine.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def filesystem_type(path: Path | str, mounts: str | None = None) -> str:
    """The type of the filesystem holding ``path`` (its nearest existing ancestor), from ``/proc/mounts``.

    "" when it cannot be told (no ``/proc``, as on macOS): callers treat that as not in memory.
    """
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    real = os.path.realpath(p)
    try:
        with open(mounts or PROC_MOUNTS, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    best, fstype = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/mounts writes spaces in mount points as \040.
        mnt = fields[1].replace("\\040", " ")
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype = mnt, fields[2]
    return fstype


def process_root(root: Path) -> Path:
    """This process's 0700 directory under ``root`` (made once; stale ones of dead processes swept first)."""
    with _lock:
        d = _process_dirs.get(str(root))
        if d is None or not d.exists():
            root.mkdir(parents=True, exist_ok=True)
            _sweep_stale(root)
            d = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root))
            os.chmod(d, 0o700)
            if not _process_dirs:
                atexit.register(remove_all_mounts)
                _install_signal_handlers()
            _process_dirs[str(root)] = d
        return d


def laptop_root() -> Path:
    """The user-private directory that local runs use for FILE secrets where no memory filesystem exists
    (macOS, some containers and WSL setups): ``<tmp>/flyte-aws-secrets-<uid>``, mode 0700, owned by us."""
    base = Path(tempfile.gettempdir()) / f"{_PREFIX}u{os.getuid()}"
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(base)
    # Someone else's directory (or a symlink planted in a shared /tmp) is never used.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise FileMountOnDiskError("<FILE secrets>", str(base), "not a directory owned by this user")
    if st.st_mode & 0o077:
        os.chmod(base, 0o700)
    return base


_notice_given = False


def laptop_notice(root: Path, fstype: str, private: Path) -> None:
    global _notice_given
    if not _notice_given:
        _notice_given = True
        logger.warning(
            "flytekitplugins-awssecrets: no memory filesystem at %s (%s); FILE secrets of this local run go "
            "to %s (private, removed after the task); a pod still refuses disk",
            root,
            fstype or "type unknown",
            private,
        )


def _sweep_stale(root: Path) -> None:
    """Remove directories left by processes of ours that were killed (SIGKILL skips every handler)."""
    for d in root.glob(f"{_PREFIX}*"):
        try:
            pid = int(d.name[len(_PREFIX) :].split("-", 1)[0])
            if d.stat().st_uid != os.getuid() or pid == os.getpid():
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, OSError):
            continue


def _install_signal_handlers() -> None:
    """On SIGTERM/SIGHUP remove the mounts, then do what the previous handler would have done."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)
        if getattr(previous, "__awssecrets__", False):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            remove_all_mounts()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        handler.__awssecrets__ = True  # type: ignore[attr-defined]
        signal.signal(sig, handler)


def on_remove_all(callback: Callable[[], None]) -> None:
    """Call ``callback`` (forget what the directories held) when :func:`remove_all_mounts` runs."""
    _on_remove_all.append(callback)


def remove_all_mounts() -> None:
    """Remove every file this process mounted (atexit and signal handlers call this)."""
    with _lock:
        dirs = list(_process_dirs.values())
        _process_dirs.clear()
    for callback in _on_remove_all:
        callback()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def remove_file(path: Path) -> None:
    """Remove a secret file and the directories it leaves empty, up to this process's directory."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    tops = {str(d) for d in _process_dirs.values()}
    d = path.parent
    while str(d) not in tops and d != d.parent:
        try:
            d.rmdir()
        except OSError:
            break
        d = d.parent
