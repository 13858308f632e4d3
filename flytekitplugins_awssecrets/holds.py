"""What the process holds for running tasks: shared variables and files, and each task's memory values.

``os.environ`` and the files are one per process, and tasks may run side by side (threads, notebooks):
every variable and file is held with a count of the sessions that asked for it, set by the first, shared by
the others when the value is the same (refused for a different one), and restored or removed by the last.
Memory values are each session's own. The session running in the current context is found through a
context variable, so each task is answered from its own mounts.

Lookups here take the names an adapter gives a request (a variable name and a relative file path); the
adapter (e.g. :mod:`flytekitplugins_awssecrets.flytekit.names`) knows how its SDK names them.
"""

from __future__ import annotations

import contextvars
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flytekitplugins_awssecrets.errors import BinaryToEnvVarError
from flytekitplugins_awssecrets.mountdirs import on_remove_all, process_root

if TYPE_CHECKING:
    from flytekitplugins_awssecrets.mount import MountSession

__all__ = ["FILES_DIR_ENV", "held_env", "memory_value", "file_path", "materialize_named"]

#: Set while FILE secrets are mounted: the directory that holds them, for shell scripts and subprocesses
#: (each file at ``$FLYTE_AWS_SECRETS_FILES_DIR/<group>/<key>``, lower-cased as flytekit names it).
FILES_DIR_ENV = "FLYTE_AWS_SECRETS_FILES_DIR"

lock = threading.RLock()
CURRENT: contextvars.ContextVar[MountSession | None] = contextvars.ContextVar(
    "awssecrets_mount", default=None
)


@dataclass
class EnvHold:
    value: str = field(repr=False)
    saved: str | None = field(repr=False)
    count: int = 1


@dataclass
class FileHold:
    path: Path
    digest: bytes
    count: int = 1


env: dict[str, EnvHold] = {}
files: dict[str, FileHold] = {}  # lower-cased relative path -> the one file for it in this process
memory: dict[str, list[tuple[str | bytes, MountSession]]] = {}  # name -> (value, session) of live tasks

on_remove_all(files.clear)


def digest(value: str | bytes) -> bytes:
    return hashlib.sha256(value.encode("utf-8") if isinstance(value, str) else value).digest()


def held_env(name: str) -> bool:
    """True when ``name`` is an environment variable set by a running task's mount (not by the platform)."""
    with lock:
        return name in env


def sessions() -> list[MountSession]:
    """The current context's session and the sessions it runs inside (a task within a task), innermost first."""
    out: list[MountSession] = []
    s = CURRENT.get()
    while s is not None and len(out) < 64:
        out.append(s)
        s = s.parent
    return out


def memory_value(name: str) -> str | bytes | None:
    """The in-memory (``ANY``) value held under ``name`` for the current task, or None."""
    with lock:
        live = sessions()
        for s in live:
            if name in s.memory:
                return s.memory[name]
        # Code outside any task's context (a thread the task started): the latest live value, if any.
        stack = memory.get(name)
        return stack[-1][0] if stack and not live else None


def file_path(rel: Sequence[str]) -> str | None:
    """The file mounted at ``rel`` for the current task, or None."""
    joined = "/".join(rel)
    with lock:
        live = sessions()
        for s in live:
            if joined in s.paths:
                return s.paths[joined]
        hold = files.get(joined)
        return str(hold.path) if hold is not None and not live else None


def materialize_named(name: str, rel: Sequence[str], ref: str, as_: str) -> str | None:
    """Put the in-memory (``ANY``) value held under ``name`` where its SDK would look: ``as_="file"`` writes
    it at ``rel`` and returns the path, ``as_="env"`` sets the variable ``name`` and returns it. None if no
    running task holds it."""
    with lock:
        owner: MountSession | None = None
        for s in sessions():
            if name in s.memory:
                owner = s
                break
        if owner is None:
            stack = memory.get(name)
            if not stack or sessions():
                return None
            owner = stack[-1][1]
        value = owner.memory[name]
        if as_ == "env":
            if isinstance(value, bytes):
                raise BinaryToEnvVarError(ref)
            owner.hold_envs(ref, [(name, value)])
            return name
        joined = "/".join(rel)
        if joined in owner.paths:
            return owner.paths[joined]
        error = owner.ensure_memory_root(ref)
        if error is not None:
            raise error
        owner.hold_files(ref, [(list(rel), value)])
        owner.hold_envs(ref, [(FILES_DIR_ENV, str(process_root(owner.root)))])
        return owner.paths[joined]
