"""Where a Flyte 2 task finds its secrets: exactly ``as_env_var``, and files as Flyte's AWS webhook lays them out.

Locally, sibling tasks of one run share one process and one ``os.environ``, so mounts are leased, not
owned: a variable or file that two running tasks ask for with the same value is shared (counted) and
removed when the last of them ends; with different values the second task fails before its code runs
(:class:`~flytekitplugins_awssecrets.errors.MountCollisionError`), naming both references. Files live in one
private directory per process (0700, memory-backed unless ``allow_disk_mount``), exported as
``FLYTE_SECRETS_DEFAULT_DIR`` while any task holds a file, and removed with the last lease. The writing
itself (0600, ``O_EXCL``, no path escapes) is the core's :class:`~flytekitplugins_awssecrets.mount.MountSession`.

A lease is all-or-nothing: every request is checked before anything changes.
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
from flytekitplugins_awssecrets.mount import MEMORY_FILESYSTEMS, MountSession, filesystem_type

__all__ = ["DIR_ENV", "Lease", "Placement", "lease", "replace_file"]

#: What flyte and Flyte's webhook call the secrets directory.
DIR_ENV = "FLYTE_SECRETS_DEFAULT_DIR"


def _digest(value: str | bytes) -> str:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Held:
    digest: str
    ref: str
    count: int
    saved: str | None = None  # an env var's value before the first lease


@dataclass
class _State:
    env: dict[str, _Held] = field(default_factory=dict)
    files: dict[str, _Held] = field(default_factory=dict)
    session: MountSession | None = None
    saved_dir: str | None = None


_lock = threading.RLock()
_state = _State()


@dataclass
class Lease:
    """What one task holds; :meth:`release` gives it back (idempotent)."""

    env: list[str]
    files: list[str]
    directory: str | None
    released: bool = False

    def release(self) -> None:
        with _lock:
            if self.released:
                return
            self.released = True
            for name in self.env:
                held = _state.env[name]
                held.count -= 1
                if held.count == 0:
                    del _state.env[name]
                    _restore(name, held.saved)
            for rel in self.files:
                held = _state.files[rel]
                held.count -= 1
                if held.count == 0:
                    del _state.files[rel]
            if self.files and not _state.files and _state.session is not None:
                _state.session.close()  # removes the directory and every file in it
                _state.session = None
                _restore(DIR_ENV, _state.saved_dir)


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
    if files and not allow_disk and _state.session is None:
        fstype = filesystem_type(root)
        if fstype not in MEMORY_FILESYSTEMS:
            errors += [FileMountOnDiskError(p.ref, str(root), fstype) for p in files]
    mine_env: dict[str, Placement] = {}
    mine_files: dict[str, Placement] = {}
    for p in items:
        if p.env:
            if isinstance(p.value, bytes):
                errors.append(BinaryToEnvVarError(p.ref))
            _collide(errors, p, p.env, mine_env, _state.env, f"environment variable {p.env}")
        if p.file:
            rel = "/".join(p.file)
            _collide(errors, p, rel, mine_files, _state.files, f"file ${DIR_ENV}/{rel}")
    return errors


def _collide(
    errors: list[AwsSecretsError],
    p: Placement,
    name: str,
    mine: dict[str, Placement],
    held: dict[str, _Held],
    where: str,
) -> None:
    prev = mine.get(name)
    if prev is not None and _digest(prev.value) != _digest(p.value):
        errors.append(MountCollisionError(p.ref, prev.ref, where))
    mine.setdefault(name, p)
    other = held.get(name)
    if other is not None and other.digest != _digest(p.value):
        errors.append(MountCollisionError(p.ref, f"{other.ref} (of a task running now)", where))


def lease(items: Sequence[Placement], root: Path, allow_disk: bool, task: str | None) -> Lease:
    """Put one task's values in place, or raise before changing anything (undoing a failed write)."""
    with _lock:
        errors = _check(items, root, allow_disk)
        if errors:
            raise SecretResolutionError(errors, task)
        held_before = _state.session is not None
        if not held_before and any(p.file for p in items):
            _state.session = MountSession(root, allow_disk=allow_disk)
            _state.saved_dir = os.environ.get(DIR_ENV)
        got = Lease([], [], None)
        try:
            for p in items:
                if p.env and p.env not in got.env:
                    assert isinstance(p.value, str)
                    held = _state.env.get(p.env)
                    if held is None:
                        _state.env[p.env] = _Held(_digest(p.value), p.ref, 0, os.environ.get(p.env))
                        os.environ[p.env] = p.value
                    _state.env[p.env].count += 1
                    got.env.append(p.env)
                if p.file and "/".join(p.file) not in got.files:
                    rel = "/".join(p.file)
                    assert _state.session is not None
                    if rel not in _state.files:
                        _state.session._write_file(p.file, p.value)
                        _state.files[rel] = _Held(_digest(p.value), p.ref, 0)
                    _state.files[rel].count += 1
                    got.files.append(rel)
            if _state.session is not None and got.files:
                got.directory = str(_state.session._session_dir())
                os.environ[DIR_ENV] = got.directory
        except BaseException:
            got.release()
            if not held_before and not _state.files and _state.session is not None:
                _state.session.close()
                _state.session = None
            raise
        return got


def replace_file(rel: str, value: str | bytes) -> None:
    """Give a placed file a new value while its tasks run (a refresh, see :mod:`~flytekitplugins_awssecrets.refresh`):
    written beside it and renamed over it, so readers see the old or the new file, never a partial one."""
    with _lock:
        held = _state.files.get(rel)
        if held is None or _state.session is None:
            return
        MountSession._replace_file(_state.session._session_dir().joinpath(*rel.split("/")), value)
        held.digest = _digest(value)
