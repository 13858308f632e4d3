"""Putting resolved values where flytekit looks for them, and taking them away again.

* ``ENV_VAR``: flytekit's variable (``_FSEC_<GROUP>_<KEY>`` upper-cased) and, when given, ``env_var``.
* ``FILE``: a file at flytekit's relative path (``<group>/<key>`` lower-cased) under a per-task directory on
  a memory filesystem (``/dev/shm``; any other directory must be tmpfs/ramfs too, unless the
  ``allow_disk_mount`` setting accepts disk), mode 0600 in 0700 directories; ``env_var`` (when given) holds its
  path. flytekit's ``SecretsManager.get_secrets_file`` is taught to answer with that path.
* ``ANY``: kept in this process's memory and served by ``SecretsManager.get``. Asked for its file
  (``get_secrets_file``) or its variable (``get_secrets_env_var``), as flytekit documents for ``ANY``, it is
  written there on demand (see :func:`materialize`), and removed with the rest when the task ends.

A :class:`MountSession` is all-or-nothing: it checks every request first (collisions, binary into an env
var, unsafe paths), then mounts; if anything fails, what was done is undone. ``close()`` restores the
environment and removes the files, on success and failure alike.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flytekitplugins_awssecrets.errors import (
    AwsSecretsError,
    BinaryToEnvVarError,
    FileMountOnDiskError,
    InvalidReferenceError,
    MountCollisionError,
    SecretResolutionError,
)
from flytekitplugins_awssecrets.record import ReadInfo
from flytekitplugins_awssecrets.refs import SecretRef

__all__ = ["Resolved", "MountSession", "lookup_memory", "lookup_file", "materialize", "flytekit_names"]

logger = logging.getLogger(__name__)

ENV, FILE, ANY = "ENV_VAR", "FILE", "ANY"


@dataclass(frozen=True)
class Resolved:
    """One secret request of a task with its value. The repr never shows the value."""

    group: str
    key: str
    group_version: str | None
    mount: str  # ENV_VAR | FILE | ANY
    env_var: str | None
    ref: SecretRef
    value: str | bytes = field(repr=False)
    #: where the value came from: "aws", "env", "file" (flytekit's own location) or "webhook".
    source: str = "aws"
    #: how it was read (API, region, version, timing), for the task's record; never the value.
    info: ReadInfo | None = field(default=None, compare=False)

    @property
    def identity(self) -> tuple[str, str | None, str]:
        return (self.group, self.group_version, self.key)


def flytekit_names(group: str, key: str, group_version: str | None) -> tuple[str, list[str]]:
    """flytekit's environment variable name and relative file path parts for a request."""
    from flytekit.configuration import SecretsConfig

    cfg = SecretsConfig.auto()
    parts = [p for p in (group, group_version, key) if p]
    env_name = cfg.env_prefix.strip() + "_".join(p.upper() for p in parts)
    rel = [p.lower() for p in parts]
    rel[-1] = cfg.file_prefix.strip() + rel[-1]
    return env_name, rel


# --- process-wide registry that the patched SecretsManager reads --------------------------------------------

_lock = threading.RLock()
_memory: dict[str, list[tuple[str | bytes, MountSession]]] = {}  # env name -> stack (nested tasks)
_files: dict[str, list[str]] = {}  # lower-cased relative path -> stack of absolute paths
_process_dir: Path | None = None


def lookup_memory(group: str | None, key: str | None, group_version: str | None) -> str | bytes | None:
    if not group:
        return None
    name, _ = flytekit_names(group, key or "", group_version)
    with _lock:
        stack = _memory.get(name)
        return stack[-1][0] if stack else None


def materialize(group: str | None, key: str | None, group_version: str | None, as_: str) -> str | None:
    """Put an in-memory (``ANY``) secret where flytekit would look: ``as_="file"`` writes the file and
    returns its path, ``as_="env"`` sets flytekit's variable and returns its name. None if not held here."""
    if not group:
        return None
    name, rel = flytekit_names(group, key or "", group_version)
    with _lock:
        stack = _memory.get(name)
        if not stack:
            return None
        value, session = stack[-1]
        if as_ == "env":
            if isinstance(value, bytes):
                raise BinaryToEnvVarError(f"{group}{key or ''}")
            session._set_env(name, value)
            return name
        joined = "/".join(rel)
        files = _files.get(joined)
        if files:
            return files[-1]
        if not session._allow_disk:  # the same rule as for FILE requests
            fstype = filesystem_type(session._root)
            if fstype not in MEMORY_FILESYSTEMS:
                raise FileMountOnDiskError(f"{group}{key or ''}", str(session._root), fstype)
        path = str(session._write_file(rel, value))
        _files.setdefault(joined, []).append(path)
        session._file_keys.append(joined)
        return path


def lookup_file(group: str | None, key: str | None, group_version: str | None) -> str | None:
    if not group:
        return None
    _, rel = flytekit_names(group, key or "", group_version)
    with _lock:
        stack = _files.get("/".join(rel))
        return stack[-1] if stack else None


_PREFIX = "flyte-aws-secrets-"
#: Filesystems that keep files in memory only: nothing written there survives the machine.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def filesystem_type(path: Path | str, mounts: str = "/proc/mounts") -> str:
    """The type of the filesystem holding ``path`` (its nearest existing ancestor), from ``/proc/mounts``.

    "" when it cannot be told (no ``/proc``, as on macOS): callers treat that as not in memory.
    """
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    real = os.path.realpath(p)
    try:
        with open(mounts, encoding="utf-8") as f:
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


def _process_root(root: Path) -> Path:
    global _process_dir
    with _lock:
        if _process_dir is None or not _process_dir.exists():
            root.mkdir(parents=True, exist_ok=True)
            _sweep_stale(root)
            _process_dir = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root))
            os.chmod(_process_dir, 0o700)
            atexit.register(remove_all_mounts)
            _install_signal_handlers()
        return _process_dir


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


def remove_all_mounts() -> None:
    """Remove every file this process mounted (atexit and signal handlers call this)."""
    global _process_dir
    with _lock:
        d, _process_dir = _process_dir, None
    if d is not None:
        shutil.rmtree(d, ignore_errors=True)


class MountSession:
    """Mounts one task's resolved requests and undoes it on :meth:`close`.

    Example::

        session = MountSession(Path("/dev/shm"))
        session.mount(resolved)          # raises before changing anything if a request cannot be mounted
        try:
            run_user_code()
        finally:
            session.close()
    """

    def __init__(self, root: Path, allow_disk: bool = False) -> None:
        self._root = root
        self._allow_disk = allow_disk
        self._dir: Path | None = None
        self._saved_env: dict[str, str | None] = {}
        self._memory_keys: list[str] = []
        self._file_keys: list[str] = []
        self.values: list[str | bytes] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"MountSession(dir={self._dir}, env={sorted(self._saved_env)})"

    # -- checking -------------------------------------------------------------------------------------------
    def _check(self, items: Sequence[Resolved]) -> list[AwsSecretsError]:
        errors: list[AwsSecretsError] = []
        files = [r for r in items if r.mount == FILE]
        if files and not self._allow_disk:
            fstype = filesystem_type(self._root)
            if fstype not in MEMORY_FILESYSTEMS:
                errors += [FileMountOnDiskError(str(r.ref), str(self._root), fstype) for r in files]
        by_env: dict[str, Resolved] = {}
        by_path: dict[str, Resolved] = {}
        by_user_env: dict[str, Resolved] = {}
        for r in items:
            env_name, rel = flytekit_names(r.group, r.key, r.group_version)
            prev = by_env.get(env_name)
            if prev is not None and prev.identity != r.identity:
                errors.append(
                    MountCollisionError(str(r.ref), str(prev.ref), f"environment variable {env_name}")
                )
            by_env.setdefault(env_name, r)
            path = "/".join(rel)
            prev = by_path.get(path)
            if prev is not None and prev.identity != r.identity:
                errors.append(MountCollisionError(str(r.ref), str(prev.ref), f"file <secrets dir>/{path}"))
            by_path.setdefault(path, r)
            if r.env_var:
                prev = by_user_env.get(r.env_var)
                if prev is not None and (prev.identity, prev.mount) != (r.identity, r.mount):
                    errors.append(MountCollisionError(str(r.ref), str(prev.ref), f"env_var {r.env_var}"))
                by_user_env.setdefault(r.env_var, r)
            if r.mount == ENV and isinstance(r.value, bytes):
                errors.append(BinaryToEnvVarError(str(r.ref)))
            if r.mount == FILE and any(p in ("", ".", "..") for seg in rel for p in seg.split("/")):
                errors.append(
                    InvalidReferenceError(
                        str(r.ref), "a '.' or '..' path segment cannot be mounted as a file", "a plain name"
                    )
                )
        return errors

    # -- mounting -------------------------------------------------------------------------------------------
    def mount(self, items: Sequence[Resolved], task: str | None = None) -> None:
        errors = self._check(items)
        if errors:
            raise SecretResolutionError(errors, task)
        try:
            for r in items:
                self._mount_one(r)
        except BaseException:
            self.close()
            raise

    def _set_env(self, name: str, value: str) -> None:
        if name not in self._saved_env:
            self._saved_env[name] = os.environ.get(name)
        os.environ[name] = value

    def _mount_one(self, r: Resolved) -> None:
        env_name, rel = flytekit_names(r.group, r.key, r.group_version)
        self.values.append(r.value)
        if r.mount == ENV:
            assert isinstance(r.value, str)
            if not (r.source == "env" and os.environ.get(env_name) is not None):
                self._set_env(env_name, r.value)
            if r.env_var:
                self._set_env(r.env_var, r.value)
        elif r.mount == FILE:
            path = self._write_file(rel, r.value)
            with _lock:
                _files.setdefault("/".join(rel), []).append(str(path))
                self._file_keys.append("/".join(rel))
            if r.env_var:
                self._set_env(r.env_var, str(path))
        else:
            with _lock:
                _memory.setdefault(env_name, []).append((r.value, self))
                self._memory_keys.append(env_name)

    def _session_dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="task-", dir=_process_root(self._root)))
            os.chmod(self._dir, 0o700)
        return self._dir

    def _write_file(self, rel: list[str], value: str | bytes) -> Path:
        base = self._session_dir()
        path = base.joinpath(*rel)
        # Reject anything that would leave the session directory, whatever the name looks like.
        if os.path.commonpath([base, path.resolve().parent]) != str(base.resolve()):
            raise InvalidReferenceError(
                "/".join(rel), "the mount path leaves the secrets directory", "a plain name"
            )
        d = base
        for part in path.relative_to(base).parts[:-1]:
            d = d / part
            if not d.exists():
                os.mkdir(d, 0o700)
            os.chmod(d, 0o700)
        data = value.encode("utf-8") if isinstance(value, str) else value
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return path

    # -- refreshing (see refresh.py) ---------------------------------------------------------------------------
    def replace_value(self, r: Resolved, value: str | bytes) -> None:
        """Give a mounted ``ANY`` or ``FILE`` request a new value while its task runs.

        ``ANY``: what ``SecretsManager.get`` serves from now on. A file (a ``FILE`` mount, or an ``ANY`` value
        written on demand) is replaced atomically: the new content is written to a private temporary file in
        the same directory (0600) and renamed over the old one, so a reader sees the old or the new file,
        never a partial or empty one. Environment variables never change under running code.
        """
        env_name, rel = flytekit_names(r.group, r.key, r.group_version)
        with _lock:
            stack = _memory.get(env_name)
            if stack:
                for i, (_, owner) in enumerate(stack):
                    if owner is self:
                        stack[i] = (value, self)
            joined = "/".join(rel)
            if joined in self._file_keys and self._dir is not None:
                self._replace_file(self._dir.joinpath(*rel), value)

    def location(self, r: Resolved) -> str:
        """Where a mounted request can be found, in words for the task's record (never the value)."""
        env_name, rel = flytekit_names(r.group, r.key, r.group_version)
        if r.mount == ENV:
            return f"env {r.env_var or env_name}"
        if r.mount == FILE:
            where = f"file {self._dir.joinpath(*rel)}" if self._dir is not None else "file"
            return where + (f" (path in env {r.env_var})" if r.env_var else "")
        return "memory (current_context().secrets.get)"

    @staticmethod
    def _replace_file(path: Path, value: str | bytes) -> None:
        data = value.encode("utf-8") if isinstance(value, str) else value
        fd, tmp = tempfile.mkstemp(prefix=".refresh-", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    # -- undoing --------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for name, old in self._saved_env.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        with _lock:
            for k in self._memory_keys:
                stack = _memory.get(k)
                if stack:
                    stack.pop()
                    if not stack:
                        del _memory[k]
            for k in self._file_keys:
                fstack = _files.get(k)
                if fstack:
                    fstack.pop()
                    if not fstack:
                        del _files[k]
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self.values = []

    def __enter__(self) -> MountSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
