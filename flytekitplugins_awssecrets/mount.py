"""Putting a task's resolved values in place, and taking them away again (SDK-neutral).

An adapter names each request (see :data:`Names`): the environment variable that holds an ``ENV_VAR`` value
(and under which an ``ANY`` value is kept in memory), and the relative path of a ``FILE`` value. flytekit's
names live in :mod:`flytekitplugins_awssecrets.flytekit.names`.

* ``ENV_VAR``: the adapter's variable and, when given, ``env_var``.
* ``FILE``: a file at the adapter's relative path under this process's 0700 directory on a memory
  filesystem (``/dev/shm``; any other directory must be tmpfs/ramfs too, unless the ``allow_disk_mount``
  setting accepts disk), mode 0600; ``env_var`` (when given) holds its path, and
  ``FLYTE_AWS_SECRETS_FILES_DIR`` the directory, for shell scripts and subprocesses. A local run on a machine
  without a memory filesystem (macOS) uses a user-private directory instead (:func:`laptop_root`); a pod
  never does. A FILE request the cluster webhook serves is used at the webhook's path, never copied.
* ``ANY``: kept in the task's memory (:mod:`.holds`); written to its file or variable only on demand
  (:func:`~flytekitplugins_awssecrets.holds.materialize_named`), and removed with the rest when the task
  ends. An ANY request with ``env_var`` is refused (:func:`any_with_env_var`) rather than silently ignored.

A :class:`MountSession` is all-or-nothing: it checks every request first (collisions, binary into an env
var, unsafe paths, values another running task holds differently), then mounts; if anything fails, what
was done is undone. ``close()`` removes exactly what the task added: variables and files are counted per
task (:mod:`.holds`), so tasks running side by side in one process (threads, notebooks) share an identical
value and the last one to end restores what was there before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flytekitplugins_awssecrets import holds
from flytekitplugins_awssecrets.errors import (
    AwsSecretsError,
    BinaryToEnvVarError,
    ConcurrentMountError,
    FileMountOnDiskError,
    InvalidReferenceError,
    MountCollisionError,
    SecretResolutionError,
)
from flytekitplugins_awssecrets.holds import FILES_DIR_ENV, held_env
from flytekitplugins_awssecrets.mountdirs import (
    MEMORY_FILESYSTEMS,
    filesystem_type,
    laptop_notice,
    laptop_root,
    process_root,
    remove_all_mounts,
    remove_file,
)
from flytekitplugins_awssecrets.privatefiles import replace_file, write_private_file
from flytekitplugins_awssecrets.record import ReadInfo
from flytekitplugins_awssecrets.refs import SecretRef

__all__ = [
    "Resolved",
    "MountSession",
    "Names",
    "plain_names",
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


#: How an adapter names a request ``(group, key, group_version)``: the environment variable that holds it
#: (``ENV_VAR``; also the key of an ``ANY`` value in memory) and its file's path parts (``FILE``).
Names = Callable[[str, str, str | None], tuple[str, list[str]]]


def plain_names(group: str, key: str, group_version: str | None) -> tuple[str, list[str]]:
    """SDK-free names: ``GROUP_VERSION_KEY`` upper-cased, and the parts lower-cased as a path."""
    parts = [p for p in (group, group_version, key) if p]
    return "_".join(p.upper() for p in parts), [p.lower() for p in parts]


class MountSession:
    """Mounts one task's resolved requests and undoes exactly that on :meth:`close`.

    Environment variables and files are shared with concurrent tasks that mount the same value (the last
    to close removes them); a different value for a variable or file another running task holds is refused
    with :class:`~flytekitplugins_awssecrets.errors.ConcurrentMountError`. While :meth:`activated`, the
    lookups of :mod:`.holds` (which flytekit's ``SecretsManager`` is taught to use) answer from this session.
    ``names`` is the adapter's naming of requests (:data:`Names`).

    Example::

        session = MountSession(Path("/dev/shm"), names=flytekit_names)
        session.mount(resolved)          # raises before changing anything if a request cannot be mounted
        try:
            with session.activated():
                run_user_code()
        finally:
            session.close()

    ``laptop_fallback`` (local runs with no ``mount_dir`` set): where ``root`` is not a memory filesystem,
    FILE secrets go to :func:`laptop_root` with a one-line notice instead of failing.
    """

    def __init__(
        self,
        root: Path,
        allow_disk: bool = False,
        *,
        laptop_fallback: bool = False,
        names: Names = plain_names,
        naming: str | None = None,
    ) -> None:
        self.root = root
        self._names = names
        # How ``names`` names requests, for the fix of a collision (the adapter's words; None: plain_names').
        self._naming = {"naming": naming} if naming else {}
        self._allow_disk = allow_disk
        self._laptop_fallback = laptop_fallback
        self._env_names: list[str] = []
        self._file_keys: list[str] = []
        self.paths: dict[str, str] = {}  # relative path -> absolute path of this session's files
        self.memory: dict[str, str | bytes] = {}
        self.parent: MountSession | None = None
        self._dir: Path | None = None  # a private directory for files written directly (the Flyte 2 adapter)
        self.values: list[str | bytes] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"MountSession(root={self.root}, env={sorted(self._env_names)})"

    # -- checking -------------------------------------------------------------------------------------------
    def ensure_memory_root(self, ref: str) -> AwsSecretsError | None:
        """None when FILE secrets may be written under the root (switching to the laptop directory when
        allowed), else the error to raise."""
        if self._allow_disk:
            return None
        fstype = filesystem_type(self.root)
        if fstype in MEMORY_FILESYSTEMS:
            return None
        if self._laptop_fallback:
            private = laptop_root()
            laptop_notice(self.root, fstype, private)
            self.root, self._allow_disk = private, True
            return None
        return FileMountOnDiskError(ref, str(self.root), fstype)

    def _check(self, items: Sequence[Resolved]) -> list[AwsSecretsError]:
        errors: list[AwsSecretsError] = []
        files = [r for r in items if r.mount == FILE and r.path is None]
        if files:
            error = self.ensure_memory_root(str(files[0].ref))
            if isinstance(error, FileMountOnDiskError):
                errors += [FileMountOnDiskError(str(r.ref), error.directory, error.fstype) for r in files]
        by_env: dict[str, Resolved] = {}
        by_path: dict[str, Resolved] = {}
        by_user_env: dict[str, Resolved] = {}
        for r in items:
            env_name, rel = self._names(r.group, r.key, r.group_version)
            prev = by_env.get(env_name)
            if prev is not None and prev.identity != r.identity:
                errors.append(
                    MountCollisionError(
                        str(r.ref), str(prev.ref), f"environment variable {env_name}", **self._naming
                    )
                )
            by_env.setdefault(env_name, r)
            path = "/".join(rel)
            prev = by_path.get(path)
            if prev is not None and prev.identity != r.identity:
                errors.append(
                    MountCollisionError(
                        str(r.ref), str(prev.ref), f"file <secrets dir>/{path}", **self._naming
                    )
                )
            by_path.setdefault(path, r)
            if r.env_var:
                prev = by_user_env.get(r.env_var)
                if prev is not None and (prev.identity, prev.mount) != (r.identity, r.mount):
                    errors.append(
                        MountCollisionError(str(r.ref), str(prev.ref), f"env_var {r.env_var}", **self._naming)
                    )
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
            env_name, rel = self._names(r.group, r.key, r.group_version)
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
            envs.append((str(items[0].ref), FILES_DIR_ENV, str(process_root(self.root))))
        return envs, files

    def _conflicts(
        self, envs: Sequence[tuple[str, str, str]], files: Sequence[tuple[str, list[str], Any]]
    ) -> list[AwsSecretsError]:
        errors: list[AwsSecretsError] = []
        for ref, name, value in envs:
            hold = holds.env.get(name)
            if hold is not None and hold.value != value:
                errors.append(ConcurrentMountError(ref, f"environment variable {name}"))
        for ref, rel, value in files:
            fhold = holds.files.get("/".join(rel))
            if fhold is not None and fhold.digest != holds.digest(value):
                errors.append(ConcurrentMountError(ref, f"file <secrets dir>/{'/'.join(rel)}"))
        return errors

    # -- mounting -------------------------------------------------------------------------------------------
    def mount(self, items: Sequence[Resolved], task: str | None = None) -> None:
        errors = self._check(items)
        if errors:
            raise SecretResolutionError(errors, task)
        with holds.lock:
            envs, files = self._plan(items)
            errors = self._conflicts(envs, files)
            if errors:
                raise SecretResolutionError(errors, task)
            try:
                for r in items:
                    self.values.append(r.value)
                    env_name, rel = self._names(r.group, r.key, r.group_version)
                    if r.mount == ANY:
                        self.memory[env_name] = r.value
                        holds.memory.setdefault(env_name, []).append((r.value, self))
                    elif r.mount == FILE and r.path is not None:
                        self.paths["/".join(rel)] = r.path
                for ref, rel, value in files:
                    self.hold_files(ref, [(rel, value)])
                for ref, name, value in envs:
                    self.hold_envs(ref, [(name, value)])
            except BaseException:
                self.close()
                raise

    def hold_envs(self, ref: str, pairs: Sequence[tuple[str, str]]) -> None:
        with holds.lock:
            errors = self._conflicts([(ref, n, v) for n, v in pairs], [])
            if errors:
                raise errors[0]
            for name, value in pairs:
                hold = holds.env.get(name)
                if hold is None:
                    holds.env[name] = holds.EnvHold(value, os.environ.get(name))
                    os.environ[name] = value
                else:
                    hold.count += 1
                self._env_names.append(name)

    def _file_path(self, rel: list[str]) -> Path:
        return process_root(self.root).joinpath(*rel)

    def hold_files(self, ref: str, items: Sequence[tuple[list[str], str | bytes]]) -> None:
        with holds.lock:
            errors = self._conflicts([], [(ref, rel, v) for rel, v in items])
            if errors:
                raise errors[0]
            for rel, value in items:
                joined = "/".join(rel)
                hold = holds.files.get(joined)
                if hold is None:
                    hold = holds.FileHold(
                        self.write_file(rel, value, process_root(self.root)), holds.digest(value)
                    )
                    holds.files[joined] = hold
                else:
                    hold.count += 1
                self._file_keys.append(joined)
                self.paths[joined] = str(hold.path)

    def session_dir(self) -> Path:
        """A directory of this session's own under the process's (for adapters that write files directly)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="task-", dir=process_root(self.root)))
            os.chmod(self._dir, 0o700)
        return self._dir

    def write_file(self, rel: list[str], value: str | bytes, base: Path | None = None) -> Path:
        """Write ``value`` at ``rel`` under ``base`` (default: :meth:`session_dir`), 0600 in 0700 dirs."""
        return write_private_file(base if base is not None else self.session_dir(), rel, value)

    # -- while the task runs --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        """``SecretsManager`` answers from this session while the block runs (in this context)."""
        self.parent = holds.CURRENT.get()
        token = holds.CURRENT.set(self)
        try:
            yield
        finally:
            holds.CURRENT.reset(token)

    # -- refreshing (see refresh.py) ---------------------------------------------------------------------------
    def replace_value(self, r: Resolved, value: str | bytes) -> None:
        """Give a mounted ``ANY`` or ``FILE`` request a new value while its task runs.

        ``ANY``: what ``SecretsManager.get`` serves from now on. A file (a ``FILE`` mount, or an ``ANY`` value
        written on demand) is replaced atomically: the new content is written to a private temporary file in
        the same directory (0600) and renamed over the old one, so a reader sees the old or the new file,
        never a partial or empty one. Environment variables never change under running code.
        """
        env_name, rel = self._names(r.group, r.key, r.group_version)
        with holds.lock:
            if env_name in self.memory:
                self.memory[env_name] = value
            stack = holds.memory.get(env_name)
            if stack:
                for i, (_, owner) in enumerate(stack):
                    if owner is self:
                        stack[i] = (value, self)
            joined = "/".join(rel)
            hold = holds.files.get(joined)
            # Our own file (shared with concurrent tasks of the same secret, who want the new value too);
            # never the cluster webhook's.
            if joined in self._file_keys and hold is not None:
                replace_file(hold.path, value)
                hold.digest = holds.digest(value)

    def location(self, r: Resolved) -> str:
        """Where a mounted request can be found, in words for the task's record (never the value)."""
        env_name, rel = self._names(r.group, r.key, r.group_version)
        if r.mount == ENV:
            return f"env {r.env_var or env_name}"
        if r.mount == FILE:
            path = self.paths.get("/".join(rel))
            where = f"file {path}" if path is not None else "file"
            return where + (f" (path in env {r.env_var})" if r.env_var else "")
        return "memory (current_context().secrets.get)"

    # -- undoing --------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with holds.lock:
            for name in reversed(self._env_names):
                hold = holds.env.get(name)
                if hold is None:
                    continue
                hold.count -= 1
                if hold.count <= 0:
                    del holds.env[name]
                    if hold.saved is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = hold.saved
            for name in self.memory:
                stack = holds.memory.get(name, [])
                stack[:] = [e for e in stack if e[1] is not self]
                if not stack:
                    holds.memory.pop(name, None)
            for k in self._file_keys:
                fhold = holds.files.get(k)
                if fhold is None:
                    continue
                fhold.count -= 1
                if fhold.count <= 0:
                    del holds.files[k]
                    remove_file(fhold.path)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._env_names, self._file_keys, self.paths, self.memory = [], [], {}, {}
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
