"""Putting resolved values where flytekit looks for them, and taking them away again.

* ``ENV_VAR``: flytekit's variable (``_FSEC_<GROUP>_<KEY>`` upper-cased) and, when given, ``env_var``.
* ``FILE``: a file at flytekit's relative path (``<group>/<key>`` lower-cased) under this process's 0700
  directory on a memory filesystem (``/dev/shm``; any other directory must be tmpfs/ramfs too, unless the
  ``allow_disk_mount`` setting accepts disk), mode 0600; ``env_var`` (when given) holds its path, and
  ``FLYTE_AWS_SECRETS_FILES_DIR`` the directory, for shell scripts and subprocesses. A local run on a machine
  without a memory filesystem (macOS) uses a user-private directory instead (:func:`laptop_root`); a pod
  never does. A FILE request the cluster webhook serves is used at the webhook's path, never copied.
  flytekit's ``SecretsManager.get_secrets_file`` is taught to answer with the path.
* ``ANY``: kept in the task's memory and served by ``SecretsManager.get``. Asked for its file
  (``get_secrets_file``) or its variable (``get_secrets_env_var``), as flytekit documents for ``ANY``, it is
  written there on demand (see :func:`materialize`), and removed with the rest when the task ends. An ANY
  request with ``env_var`` is refused (:func:`any_with_env_var`) rather than silently ignored.

A :class:`MountSession` is all-or-nothing: it checks every request first (collisions, binary into an env
var, unsafe paths, values another running task holds differently), then mounts; if anything fails, what
was done is undone. ``close()`` removes exactly what the task added: variables and files are counted per
task, so tasks running side by side in one process (threads, notebooks) share an identical value and the
last one to end restores what was there before.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flytekitplugins_awssecrets.errors import (
    AwsSecretsError,
    BinaryToEnvVarError,
    ConcurrentMountError,
    FileMountOnDiskError,
    InvalidReferenceError,
    MountCollisionError,
    SecretResolutionError,
)
from flytekitplugins_awssecrets.mountdirs import (
    MEMORY_FILESYSTEMS,
    _sweep_stale,  # noqa: F401 - re-exported for the tests of stale directories
    filesystem_type,
    laptop_notice,
    laptop_root,
    on_remove_all,
    process_root,
    remove_all_mounts,
    remove_file,
)
from flytekitplugins_awssecrets.record import ReadInfo
from flytekitplugins_awssecrets.refs import SecretRef

__all__ = [
    "Resolved",
    "MountSession",
    "lookup_memory",
    "lookup_file",
    "materialize",
    "flytekit_names",
    "laptop_root",
    "held_env",
    "FILES_DIR_ENV",
    "MEMORY_FILESYSTEMS",
    "filesystem_type",
    "remove_all_mounts",
]

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
    #: the file the cluster webhook mounted, for a FILE request it serves as written (used, never copied).
    path: str | None = None

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
#
# ``os.environ`` and the files are one per process, tasks may run side by side (threads, notebooks): every
# variable and file is held with a count of the sessions that asked for it, set by the first, shared by the
# others when the value is the same (refused for a different one), and restored or removed by the last.
# Memory values are each session's own. The session running in the current context is found through a
# context variable, so SecretsManager answers each task from its own mounts.

_lock = threading.RLock()
_CURRENT: contextvars.ContextVar[MountSession | None] = contextvars.ContextVar(
    "awssecrets_mount", default=None
)


@dataclass
class _EnvHold:
    value: str = field(repr=False)
    saved: str | None = field(repr=False)
    count: int = 1


@dataclass
class _FileHold:
    path: Path
    digest: bytes
    count: int = 1


_env: dict[str, _EnvHold] = {}
_files: dict[str, _FileHold] = {}  # lower-cased relative path -> the one file for it in this process
_memory: dict[str, list[tuple[str | bytes, MountSession]]] = {}  # env name -> (value, session) of live tasks

#: Set while FILE secrets are mounted: the directory that holds them, for shell scripts and subprocesses
#: (each file at ``$FLYTE_AWS_SECRETS_FILES_DIR/<group>/<key>``, lower-cased as flytekit names it).
FILES_DIR_ENV = "FLYTE_AWS_SECRETS_FILES_DIR"


on_remove_all(_files.clear)


def held_env(name: str) -> bool:
    """True when ``name`` is an environment variable set by a running task's mount (not by the platform)."""
    with _lock:
        return name in _env


def _sessions() -> list[MountSession]:
    """The current context's session and the sessions it runs inside (a task within a task), innermost first."""
    out: list[MountSession] = []
    s = _CURRENT.get()
    while s is not None and len(out) < 64:
        out.append(s)
        s = s._parent
    return out


def lookup_memory(group: str | None, key: str | None, group_version: str | None) -> str | bytes | None:
    if not group:
        return None
    name, _ = flytekit_names(group, key or "", group_version)
    with _lock:
        sessions = _sessions()
        for s in sessions:
            if name in s._memory:
                return s._memory[name]
        # Code outside any task's context (a thread the task started): the latest live value, if any.
        stack = _memory.get(name)
        return stack[-1][0] if stack and not sessions else None


def materialize(group: str | None, key: str | None, group_version: str | None, as_: str) -> str | None:
    """Put an in-memory (``ANY``) secret where flytekit would look: ``as_="file"`` writes the file and
    returns its path, ``as_="env"`` sets flytekit's variable and returns its name. None if not held here."""
    if not group:
        return None
    name, rel = flytekit_names(group, key or "", group_version)
    with _lock:
        owner: MountSession | None = None
        for s in _sessions():
            if name in s._memory:
                owner = s
                break
        if owner is None:
            stack = _memory.get(name)
            if not stack or _sessions():
                return None
            owner = stack[-1][1]
        value = owner._memory[name]
        ref = f"{group}{key or ''}"
        if as_ == "env":
            if isinstance(value, bytes):
                raise BinaryToEnvVarError(ref)
            owner._hold_envs(ref, [(name, value)])
            return name
        joined = "/".join(rel)
        if joined in owner._paths:
            return owner._paths[joined]
        error = owner._ensure_memory_root(ref)
        if error is not None:
            raise error
        owner._hold_files(ref, [(rel, value)])
        owner._hold_envs(ref, [(FILES_DIR_ENV, str(process_root(owner._root)))])
        return owner._paths[joined]


def lookup_file(group: str | None, key: str | None, group_version: str | None) -> str | None:
    if not group:
        return None
    _, rel = flytekit_names(group, key or "", group_version)
    joined = "/".join(rel)
    with _lock:
        sessions = _sessions()
        for s in sessions:
            if joined in s._paths:
                return s._paths[joined]
        hold = _files.get(joined)
        return str(hold.path) if hold is not None and not sessions else None


def _digest(value: str | bytes) -> bytes:
    import hashlib

    return hashlib.sha256(value.encode("utf-8") if isinstance(value, str) else value).digest()


class MountSession:
    """Mounts one task's resolved requests and undoes exactly that on :meth:`close`.

    Environment variables and files are shared with concurrent tasks that mount the same value (the last
    to close removes them); a different value for a variable or file another running task holds is refused
    with :class:`~flytekitplugins_awssecrets.errors.ConcurrentMountError`. While :meth:`activated`,
    ``SecretsManager`` answers from this session's mounts.

    Example::

        session = MountSession(Path("/dev/shm"))
        session.mount(resolved)          # raises before changing anything if a request cannot be mounted
        try:
            with session.activated():
                run_user_code()
        finally:
            session.close()

    ``laptop_fallback`` (local runs with no ``mount_dir`` set): where ``root`` is not a memory filesystem,
    FILE secrets go to :func:`laptop_root` with a one-line notice instead of failing.
    """

    def __init__(self, root: Path, allow_disk: bool = False, *, laptop_fallback: bool = False) -> None:
        self._root = root
        self._allow_disk = allow_disk
        self._laptop_fallback = laptop_fallback
        self._env_names: list[str] = []
        self._file_keys: list[str] = []
        self._paths: dict[str, str] = {}  # relative path -> absolute path of this session's files
        self._memory: dict[str, str | bytes] = {}
        self._parent: MountSession | None = None
        self._dir: Path | None = None  # a private directory for files written directly (the Flyte 2 adapter)
        self.values: list[str | bytes] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"MountSession(root={self._root}, env={sorted(self._env_names)})"

    # -- checking -------------------------------------------------------------------------------------------
    def _ensure_memory_root(self, ref: str) -> AwsSecretsError | None:
        """None when FILE secrets may be written under the root (switching to the laptop directory when
        allowed), else the error to raise."""
        if self._allow_disk:
            return None
        fstype = filesystem_type(self._root)
        if fstype in MEMORY_FILESYSTEMS:
            return None
        if self._laptop_fallback:
            private = laptop_root()
            laptop_notice(self._root, fstype, private)
            self._root, self._allow_disk = private, True
            return None
        return FileMountOnDiskError(ref, str(self._root), fstype)

    def _check(self, items: Sequence[Resolved]) -> list[AwsSecretsError]:
        errors: list[AwsSecretsError] = []
        files = [r for r in items if r.mount == FILE and r.path is None]
        if files:
            error = self._ensure_memory_root(str(files[0].ref))
            if isinstance(error, FileMountOnDiskError):
                errors += [FileMountOnDiskError(str(r.ref), error.directory, error.fstype) for r in files]
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
            if r.mount == ANY and r.env_var:
                errors.append(any_with_env_var(str(r.ref), r.env_var))
            if r.mount == ENV and isinstance(r.value, bytes):
                errors.append(BinaryToEnvVarError(str(r.ref)))
            if r.mount == FILE and any(p in ("", ".", "..") for seg in rel for p in seg.split("/")):
                errors.append(
                    InvalidReferenceError(
                        str(r.ref), "a '.' or '..' path segment cannot be mounted as a file", "a plain name"
                    )
                )
        return errors

    def _plan(
        self, items: Sequence[Resolved]
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, list[str], Any]]]:
        """The variables (ref, name, value) and files (ref, rel, value) the items need, in order."""
        envs: list[tuple[str, str, str]] = []
        files: list[tuple[str, list[str], Any]] = []
        for r in items:
            env_name, rel = flytekit_names(r.group, r.key, r.group_version)
            ref = str(r.ref)
            if r.mount == ENV:
                assert isinstance(r.value, str)
                # A value the platform put in the variable stays its own (ours are held and shared).
                if not (
                    r.source == "env" and os.environ.get(env_name) is not None and not held_env(env_name)
                ):
                    envs.append((ref, env_name, r.value))
                if r.env_var:
                    envs.append((ref, r.env_var, r.value))
            elif r.mount == FILE:
                if r.path is not None:  # the cluster webhook's own file: used where it is, never copied
                    if r.env_var:
                        envs.append((ref, r.env_var, r.path))
                    continue
                files.append((ref, rel, r.value))
                if r.env_var:
                    envs.append((ref, r.env_var, str(self._file_path(rel))))
        if files:
            envs.append((str(items[0].ref), FILES_DIR_ENV, str(process_root(self._root))))
        return envs, files

    def _conflicts(
        self, envs: Sequence[tuple[str, str, str]], files: Sequence[tuple[str, list[str], Any]]
    ) -> list[AwsSecretsError]:
        errors: list[AwsSecretsError] = []
        for ref, name, value in envs:
            hold = _env.get(name)
            if hold is not None and hold.value != value:
                errors.append(ConcurrentMountError(ref, f"environment variable {name}"))
        for ref, rel, value in files:
            fhold = _files.get("/".join(rel))
            if fhold is not None and fhold.digest != _digest(value):
                errors.append(ConcurrentMountError(ref, f"file <secrets dir>/{'/'.join(rel)}"))
        return errors

    # -- mounting -------------------------------------------------------------------------------------------
    def mount(self, items: Sequence[Resolved], task: str | None = None) -> None:
        errors = self._check(items)
        if errors:
            raise SecretResolutionError(errors, task)
        with _lock:
            envs, files = self._plan(items)
            errors = self._conflicts(envs, files)
            if errors:
                raise SecretResolutionError(errors, task)
            try:
                for r in items:
                    self.values.append(r.value)
                    env_name, rel = flytekit_names(r.group, r.key, r.group_version)
                    if r.mount == ANY:
                        self._memory[env_name] = r.value
                        _memory.setdefault(env_name, []).append((r.value, self))
                    elif r.mount == FILE and r.path is not None:
                        self._paths["/".join(rel)] = r.path
                for ref, rel, value in files:
                    self._hold_files(ref, [(rel, value)])
                for ref, name, value in envs:
                    self._hold_envs(ref, [(name, value)])
            except BaseException:
                self.close()
                raise

    def _hold_envs(self, ref: str, pairs: Sequence[tuple[str, str]]) -> None:
        with _lock:
            errors = self._conflicts([(ref, n, v) for n, v in pairs], [])
            if errors:
                raise errors[0]
            for name, value in pairs:
                hold = _env.get(name)
                if hold is None:
                    _env[name] = _EnvHold(value, os.environ.get(name))
                    os.environ[name] = value
                else:
                    hold.count += 1
                self._env_names.append(name)

    def _file_path(self, rel: list[str]) -> Path:
        return process_root(self._root).joinpath(*rel)

    def _hold_files(self, ref: str, items: Sequence[tuple[list[str], str | bytes]]) -> None:
        with _lock:
            errors = self._conflicts([], [(ref, rel, v) for rel, v in items])
            if errors:
                raise errors[0]
            for rel, value in items:
                joined = "/".join(rel)
                hold = _files.get(joined)
                if hold is None:
                    hold = _FileHold(self._write_file(rel, value, process_root(self._root)), _digest(value))
                    _files[joined] = hold
                else:
                    hold.count += 1
                self._file_keys.append(joined)
                self._paths[joined] = str(hold.path)

    def _session_dir(self) -> Path:
        """A directory of this session's own under the process's (for callers that write files directly)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="task-", dir=process_root(self._root)))
            os.chmod(self._dir, 0o700)
        return self._dir

    def _write_file(self, rel: list[str], value: str | bytes, base: Path | None = None) -> Path:
        """Write ``value`` at ``rel`` under ``base`` (default: :meth:`_session_dir`), 0600 in 0700 dirs."""
        base = base if base is not None else self._session_dir()
        path = base.joinpath(*rel)
        # Reject anything that would leave the secrets directory, whatever the name looks like.
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            _write_private(fd, value)
        finally:
            os.close(fd)
        return path

    # -- while the task runs --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        """``SecretsManager`` answers from this session while the block runs (in this context)."""
        self._parent = _CURRENT.get()
        token = _CURRENT.set(self)
        try:
            yield
        finally:
            _CURRENT.reset(token)

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
            if env_name in self._memory:
                self._memory[env_name] = value
            stack = _memory.get(env_name)
            if stack:
                for i, (_, owner) in enumerate(stack):
                    if owner is self:
                        stack[i] = (value, self)
            joined = "/".join(rel)
            hold = _files.get(joined)
            # Our own file (shared with concurrent tasks of the same secret, who want the new value too);
            # never the cluster webhook's.
            if joined in self._file_keys and hold is not None:
                self._replace_file(hold.path, value)
                hold.digest = _digest(value)

    def location(self, r: Resolved) -> str:
        """Where a mounted request can be found, in words for the task's record (never the value)."""
        env_name, rel = flytekit_names(r.group, r.key, r.group_version)
        if r.mount == ENV:
            return f"env {r.env_var or env_name}"
        if r.mount == FILE:
            path = self._paths.get("/".join(rel))
            where = f"file {path}" if path is not None else "file"
            return where + (f" (path in env {r.env_var})" if r.env_var else "")
        return "memory (current_context().secrets.get)"

    @staticmethod
    def _replace_file(path: Path, value: str | bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".refresh-", dir=path.parent)
        try:
            _write_private(fd, value)
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
        with _lock:
            for name in reversed(self._env_names):
                hold = _env.get(name)
                if hold is None:
                    continue
                hold.count -= 1
                if hold.count <= 0:
                    del _env[name]
                    if hold.saved is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = hold.saved
            for name in self._memory:
                stack = _memory.get(name, [])
                stack[:] = [e for e in stack if e[1] is not self]
                if not stack:
                    _memory.pop(name, None)
            for k in self._file_keys:
                fhold = _files.get(k)
                if fhold is None:
                    continue
                fhold.count -= 1
                if fhold.count <= 0:
                    del _files[k]
                    remove_file(fhold.path)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._env_names, self._file_keys, self._paths, self._memory = [], [], {}, {}
        self.values = []

    def __enter__(self) -> MountSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def any_with_env_var(ref: str, env_var: str) -> AwsSecretsError:
    """An ``ANY`` request that names an ``env_var``: flytekit's ANY says nothing of where the variable points,
    so rather than ignore the name, the request is refused (at registration and before a local run)."""
    return InvalidReferenceError(
        ref,
        f"mount_requirement ANY with env_var={env_var!r} (ANY sets no environment variable)",
        "mount_requirement=ENV_VAR (env_var holds the value) or FILE (env_var holds the file's path), "
        "or drop env_var",
    )


def _write_private(fd: int, value: str | bytes) -> None:
    """Make ``fd``'s file 0600 and write all of ``value`` to it (a secret file, new or replacing one)."""
    os.fchmod(fd, 0o600)
    view = memoryview(value.encode("utf-8") if isinstance(value, str) else value)
    while view:
        view = view[os.write(fd, view) :]
