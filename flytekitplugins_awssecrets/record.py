"""What a task read: one row per request, for audit pipelines (a JSON log line) and people (a Flyte Deck).

SDK-neutral and value-free by construction: a row holds the reference as written, the JSON key, where the
value was served from, the version and stages AWS reported, when it was read and how long that took, the
refreshes while the task ran, and where it was mounted (an env var's name or a file's path). Never the
value, a hash of it or any part of it.

Example::

    from flytekitplugins_awssecrets import current_record

    @task(secret_requests=[DB])
    def t() -> None:
        rec = current_record()          # None outside a task with AWS requests
        print(rec.to_dict()["reads"][0]["version_id"])

At the end of every task with AWS requests the record is logged once as JSON on the logger
``flytekitplugins_awssecrets`` (level INFO: ``FLYTE_SDK_LOGGING_LEVEL=20`` shows it in a pod), ``{"event": "awssecrets.task_record", ...}``; see
docs/rotation.md for its fields.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from flytekitplugins_awssecrets.refs import ALIAS_GROUP

__all__ = ["ReadInfo", "SecretRead", "TaskRecord", "current_record", "recent_records"]

# The plugin's top-level logger: the one bridged to flytekit's handlers (a pod's JSON log, the console).
logger = logging.getLogger("flytekitplugins_awssecrets")

#: The record of the task running in this context (a contextvar: tasks side by side each see their own).
_CURRENT: contextvars.ContextVar[TaskRecord | None] = contextvars.ContextVar(
    "awssecrets_record", default=None
)
#: The last records of tasks that ended in this process (a notebook or harness can look back).
_RECENT: deque[TaskRecord] = deque(maxlen=100)


@dataclass(frozen=True)
class ReadInfo:
    """How one value was obtained (attached to a resolved request; value-free)."""

    #: "aws", "cache", "agent", "webhook", "env" or "file" (flytekit's own location).
    source: str
    #: e.g. "secretsmanager us-east-1 GetSecretValue"; for the webhook its directory.
    detail: str = ""
    version_id: str = ""
    version_stages: tuple[str, ...] = ()
    read_at: float = 0.0
    read_ms: float = 0.0


@dataclass
class SecretRead:
    """One row of a task's record. Mutable only by the refresher (refresh counts, version)."""

    reference: str  # the ARN read (an alias resolved), without the JSON key
    alias: str | None
    json_key: str | None
    mount: str  # "ENV_VAR", "FILE" or "ANY"
    mounted_as: str  # "env DB_PASSWORD", "file /dev/shm/...", "memory"
    source: str
    detail: str
    version_id: str
    version_stages: tuple[str, ...]
    read_at: float
    read_ms: float
    refresh_interval: float | None = None
    refreshes: int = 0
    refresh_failures: int = 0
    last_refresh_at: float | None = None
    last_refresh_ms: float | None = None
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "alias": self.alias,
            "json_key": self.json_key,
            "mount": self.mount,
            "mounted_as": self.mounted_as,
            "source": self.source,
            "detail": self.detail,
            "version_id": self.version_id or None,
            "version_stages": list(self.version_stages),
            "read_at": _iso(self.read_at),
            "read_ms": round(self.read_ms, 1),
            "refresh_interval_seconds": self.refresh_interval,
            "refreshes": self.refreshes,
            "refresh_failures": self.refresh_failures,
            "last_refresh_at": _iso(self.last_refresh_at) if self.last_refresh_at else None,
            "last_refresh_ms": round(self.last_refresh_ms, 1) if self.last_refresh_ms is not None else None,
            "last_refresh_error": self.last_error,
        }


@dataclass
class TaskRecord:
    """Everything one task execution read from AWS (see the module docstring)."""

    task: str | None
    started_at: float = field(default_factory=time.time)
    reads: list[SecretRead] = field(default_factory=list)
    ended_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            rows = [r.to_dict() for r in self.reads]
        return {
            "event": "awssecrets.task_record",
            "task": self.task,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at) if self.ended_at else None,
            "reads": rows,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    def update(self, index: int, **changes: Any) -> None:
        """Change one row's fields (the refresher, from its thread)."""
        with self._lock:
            row = self.reads[index]
            for k, v in changes.items():
                setattr(row, k, v)


def _iso(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"


def build_record(task: str | None, resolved: list[Any], mounted_as: list[str]) -> TaskRecord:
    """A record for resolved requests (``mount.Resolved``), in the order they were requested."""
    rec = TaskRecord(task)
    for r, where in zip(resolved, mounted_as, strict=True):
        info: ReadInfo = r.info or ReadInfo(r.source)
        rec.reads.append(
            SecretRead(
                reference=str(dataclasses.replace(r.ref, json_key=None)),
                alias=r.key.split(":", 1)[0] if r.group == ALIAS_GROUP else None,
                json_key=r.ref.json_key,
                mount=r.mount,
                mounted_as=where,
                source=info.source,
                detail=info.detail,
                version_id=info.version_id,
                version_stages=info.version_stages,
                read_at=info.read_at,
                read_ms=info.read_ms,
            )
        )
    return rec


def current_record() -> TaskRecord | None:
    """The record of the task running in this context (None outside a task with AWS requests)."""
    return _CURRENT.get()


def recent_records() -> list[TaskRecord]:
    """Records of the tasks with AWS requests that ended in this process, oldest first (at most 100)."""
    return list(_RECENT)


def begin(rec: TaskRecord) -> contextvars.Token[TaskRecord | None]:
    return _CURRENT.set(rec)


def end(rec: TaskRecord, token: contextvars.Token[TaskRecord | None]) -> None:
    """Close the record: one JSON log line, kept among the recent records."""
    rec.ended_at = time.time()
    _CURRENT.reset(token)
    _RECENT.append(rec)
    logger.info("%s", rec.to_json())
