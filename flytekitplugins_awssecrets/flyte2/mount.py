"""Where a Flyte 2 task finds its secrets: exactly ``as_env_var``, and files as Flyte's AWS webhook lays them out.

Each task gets a private directory of its own (0700, memory-backed unless ``allow_disk_mount``) holding its
files in the webhook layout, exported to it as ``FLYTE_SECRETS_DEFAULT_DIR`` and removed when it ends; the
writing itself (0600, ``O_EXCL``, no path escapes) is the core's
:class:`~flytekitplugins_awssecrets.mount.MountSession`.

Where a task's environment variables (its secrets and ``FLYTE_SECRETS_DEFAULT_DIR``) go depends on how many
tasks share the process:

* **a pod** (``a0``: one task per process): the real environment, restored after the task;
* **a local run** (sibling and child tasks in one process): the task's own view of ``os.environ``
  (:mod:`.environ`), so that concurrent siblings each see only their own and a parent never sees its
  children's.

Either way, two running tasks that want different values under one variable name are refused before the
second one's code runs (:class:`~flytekitplugins_awssecrets.errors.MountCollisionError`, naming both
references): code that reads the name outside any task (a thread without the task's context, a subprocess
in a pod) could not tell them apart. A lease is all-or-nothing: every request is checked before anything
changes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flytekitplugins_awssecrets.errors import (
    AwsSecretsError,
    BinaryToEnvVarError,
    FileMountOnDiskError,
    MountCollisionError,
    SecretResolutionError,
)
from flytekitplugins_awssecrets.flyte2 import environ
from flytekitplugins_awssecrets.mount import MEMORY_FILESYSTEMS, MountSession, filesystem_type
from flytekitplugins_awssecrets.privatefiles import replace_file

__all__ = ["DIR_ENV", "Lease", "Placement", "lease", "shared_process"]

#: What flyte and Flyte's webhook call the secrets directory.
DIR_ENV = "FLYTE_SECRETS_DEFAULT_DIR"
#: How Flyte 2 requests are named, for the fix of a collision: no upper-casing of variables here.
_NAMING = {
    "naming": "a variable is named exactly as_env_var, a file by its group and key lower-cased (the webhook's layout)",
    "option": "as_env_var",
}


def _digest(value: str | bytes) -> str:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Held:
    digest: str
    ref: str
    count: int
    saved: str | None = None  # in a pod: the variable's value before the first lease


_lock = threading.RLock()
_env: dict[str, _Held] = {}  # every variable a running task of this process holds


def shared_process() -> bool:
    """True when tasks may share this process (every run but a pod's ``a0``): variables go in views."""
    from flytekitplugins_awssecrets.setting_sources import running_in_pod

    return not running_in_pod()


@dataclass
class Lease:
    """What one task holds; :meth:`release` gives it back (idempotent, in the context that leased it)."""

    env: list[str]
    files: list[str]
    directory: str | None
    session: MountSession | None = field(default=None, repr=False)
    scope: environ.Scope | None = field(default=None, repr=False)
    real: dict[str, str | None] = field(default_factory=dict, repr=False)  # pod: variable -> saved value
    released: bool = False

    def release(self) -> None:
        with _lock:
            if self.released:
                return
            self.released = True
            for name in self.env:
                held = _env[name]
                held.count -= 1
                if held.count == 0:
                    del _env[name]
                    if name in self.real:
                        _restore(name, held.saved)
            if DIR_ENV in self.real:
                _restore(DIR_ENV, self.real[DIR_ENV])
            if self.scope is not None:
                environ.leave(self.scope)
            if self.session is not None:
                self.session.close()  # removes the directory and every file in it

    def replace_file(self, rel: str, value: str | bytes) -> None:
        """Give a placed file a new value while the task runs (a refresh): written beside it and renamed over
        it, so readers see the old or the new file, never a partial one."""
        if rel in self.files and self.session is not None and not self.released:
            replace_file(self.session.session_dir().joinpath(*rel.split("/")), value)


def _restore(name: str, old: str | None) -> None:
    if old is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = old


@dataclass(frozen=True)
class Placement:
    """One value and where a task wants it: an environment variable, a file (webhook layout), or both."""

    ref: str
    value: str | bytes = field(repr=False)
    env: str | None
    file: list[str] | None


def _check(items: Sequence[Placement], root: Path, allow_disk: bool) -> list[AwsSecretsError]:
    errors: list[AwsSecretsError] = []
    files = [p for p in items if p.file]
    if files and not allow_disk:
        fstype = filesystem_type(root)
        if fstype not in MEMORY_FILESYSTEMS:
            errors += [FileMountOnDiskError(p.ref, str(root), fstype) for p in files]
    mine_env: dict[str, Placement] = {}
    mine_files: dict[str, Placement] = {}
    for p in items:
        if p.env:
            if isinstance(p.value, bytes):
                errors.append(BinaryToEnvVarError(p.ref))
            where = f"environment variable {p.env}"
            _collide(errors, p, p.env, mine_env, where)
            other = _env.get(p.env)
            if other is not None and other.digest != _digest(p.value):
                errors.append(
                    MountCollisionError(p.ref, f"{other.ref} (of a task running now)", where, **_NAMING)
                )
        if p.file:
            rel = "/".join(p.file)
            _collide(errors, p, rel, mine_files, f"file ${DIR_ENV}/{rel}")
    return errors


def _collide(
    errors: list[AwsSecretsError], p: Placement, name: str, mine: dict[str, Placement], where: str
) -> None:
    prev = mine.get(name)
    if prev is not None and _digest(prev.value) != _digest(p.value):
        errors.append(MountCollisionError(p.ref, prev.ref, where, **_NAMING))
    mine.setdefault(name, p)


def lease(
    items: Sequence[Placement],
    root: Path,
    allow_disk: bool,
    task: str | None,
    shared: bool | None = None,
) -> Lease:
    """Put one task's values in place, or raise before changing anything (undoing a failed write).

    ``shared`` (default: :func:`shared_process`) puts the variables in the task's view of ``os.environ``
    rather than in the real environment.
    """
    shared = shared_process() if shared is None else shared
    with _lock:
        errors = _check(items, root, allow_disk)
        if errors:
            raise SecretResolutionError(errors, task)
        got = Lease([], [], None)
        values: dict[str, str] = {}
        try:
            for p in items:
                if p.env and p.env not in got.env:
                    assert isinstance(p.value, str)
                    held = _env.get(p.env)
                    if held is None:
                        held = _env[p.env] = _Held(_digest(p.value), p.ref, 0, os.environ.get(p.env))
                    held.count += 1
                    got.env.append(p.env)
                    values[p.env] = p.value
                if p.file and "/".join(p.file) not in got.files:
                    if got.session is None:
                        got.session = MountSession(root, allow_disk=allow_disk)
                    got.session.write_file(p.file, p.value)
                    got.files.append("/".join(p.file))
            if got.session is not None:
                got.directory = str(got.session.session_dir())
                values[DIR_ENV] = got.directory
            if shared:
                got.scope = environ.enter(values)
            else:
                for name, value in values.items():
                    got.real[name] = os.environ.get(name)
                    os.environ[name] = value
        except BaseException:
            got.release()
            raise
        return got


def hide_inherited() -> environ.Scope | None:
    """For a task with no AWS secret of its own in a shared process: a view that hides its parent's secrets
    (None when no task holds a view, so there is nothing to hide)."""
    if not shared_process() or not environ.installed():
        return None
    return environ.enter({}, install=False)
