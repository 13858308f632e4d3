"""Refreshing a running task's secrets: long tasks follow Secrets Manager rotation (SDK-neutral).

With ``refresh_interval_seconds`` (or a ``refresh_overrides`` entry for the reference), a task's ``ANY`` and
``FILE`` requests are re-read while it runs, the way the Secrets Store CSI driver's rotation reconciler and
AWS's caching library do:

* a reference without a pinned version follows ``AWSCURRENT`` (the read names the stage, so a version that
  is only ``AWSPENDING`` is never served); a pinned stage follows that stage; a pinned version id never
  changes and is not re-read;
* ``ANY`` values change in memory, ``FILE`` mounts are replaced atomically (see
  :meth:`MountSession.replace_value`); ``ENV_VAR`` values never change under running code;
* a refresh that fails keeps the last good value and logs a :class:`SecretRefreshError` (never the value);
* the reads use the process's clients, whose credentials botocore renews before they expire (assumed
  roles, IRSA web identity, container credentials);
* the thread exists only while a task with something to refresh runs, and stops with it.

:func:`refresh_secrets` re-reads the running task's secrets now (after an authentication failure, say).

The smallest interval is set by the fleet's share of the read quotas (documented arithmetic, see
docs/rotation.md): a refresh may use at most :data:`QUOTA_SHARE` of an API's per-account, per-region
quota when ``refresh_fleet_pods`` pods refresh at once.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from flytekitplugins_awssecrets.errors import AwsSecretsError, RefreshIntervalError, SecretRefreshError

__all__ = ["Refresher", "refresh_secrets", "minimum_interval", "QUOTAS", "QUOTA_SHARE", "MIN_INTERVAL"]

logger = logging.getLogger("flytekitplugins_awssecrets")

#: Reads per second per account and region, AWS's default quotas for the APIs a refresh uses.
QUOTAS = {"GetSecretValue": 10_000.0, "GetParameters": 40.0}
#: At most this share of a quota goes to refreshes: the rest is for tasks starting.
QUOTA_SHARE = 0.1
#: No interval below this, whatever the arithmetic says.
MIN_INTERVAL = 1.0
_SSM_PER_CALL = 10

_CURRENT: contextvars.ContextVar[Refresher | None] = contextvars.ContextVar(
    "awssecrets_refresher", default=None
)


def minimum_interval(secretsmanager: int, ssm: int, pods: int) -> tuple[float, str]:
    """The smallest refresh interval for a task refreshing these many secrets and parameters, with the
    arithmetic in words (for the error and the docs)."""
    parts: list[str] = []
    need = MIN_INTERVAL
    if secretsmanager:
        rate = QUOTAS["GetSecretValue"] * QUOTA_SHARE
        t = pods * secretsmanager / rate
        parts.append(
            f"{pods} pods x {secretsmanager} secret(s) / ({QUOTA_SHARE:.0%} of 10,000 GetSecretValue/s) = {t:g} s"
        )
        need = max(need, t)
    if ssm:
        rate = QUOTAS["GetParameters"] * QUOTA_SHARE
        calls = math.ceil(ssm / _SSM_PER_CALL)
        t = pods * calls / rate
        parts.append(f"{pods} pods x {calls} GetParameters call(s) / ({QUOTA_SHARE:.0%} of 40/s) = {t:g} s")
        need = max(need, t)
    parts.append(f"floor {MIN_INTERVAL:g} s")
    return math.ceil(need), "; ".join(parts)


def interval_for(r: Any, settings: Any) -> float | None:
    """The refresh interval of one resolved request (None: not refreshed automatically)."""
    for name in (str(r.ref), str(dataclasses.replace(r.ref, json_key=None)), f"{r.group}{r.key}"):
        if name in settings.refresh_overrides:
            v = float(settings.refresh_overrides[name])
            return v if v > 0 else None
    if r.key and r.group.startswith("awssecrets:alias:"):
        alias = r.key.split(":", 1)[0]
        if alias in settings.refresh_overrides:
            v = float(settings.refresh_overrides[alias])
            return v if v > 0 else None
    v = settings.refresh_interval_seconds
    return float(v) if v else None


def refreshable(r: Any) -> bool:
    """ANY and FILE values read from AWS (or its agent) whose version is not pinned by id."""
    return r.mount in ("ANY", "FILE") and r.source == "aws" and not r.ref.version_id


class Refresher:
    """Keeps one running task's ``ANY`` and ``FILE`` values current.

    Example::

        refresher = Refresher(resolver, session, resolved, record, sensitive, settings)
        refresher.start()          # a thread only when some request has an interval
        try:
            run_user_code()
        finally:
            refresher.stop()
    """

    def __init__(
        self,
        resolver: Any,
        session: Any,
        resolved: Sequence[Any],
        record: Any,
        sensitive: Any,
        settings: Any,
    ) -> None:
        self._resolver = resolver
        self._session = session
        self._record = record
        self._sensitive = sensitive
        self._settings = settings
        self._items = [(i, r) for i, r in enumerate(resolved) if refreshable(r)]
        self._values: dict[int, str | bytes] = {i: r.value for i, r in self._items}
        self._versions: dict[int, str] = {i: (r.info.version_id if r.info else "") for i, r in self._items}
        self._intervals: dict[int, float] = {}
        for i, r in self._items:
            iv = interval_for(r, settings)
            if iv is not None:
                self._intervals[i] = iv
                record.update(i, refresh_interval=iv)
        self._check_quota(settings)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._token: contextvars.Token[Refresher | None] | None = None

    def __repr__(self) -> str:
        return f"Refresher({len(self._items)} refreshable, {len(self._intervals)} on an interval)"

    def _check_quota(self, settings: Any) -> None:
        if not self._intervals:
            return
        by = dict(self._items)
        # One read per secret per round, however many requests (mounts, JSON keys) share it.
        reads = {_current_version(by[i].ref).fetch_id: by[i].ref.service for i in self._intervals}
        sm = sum(1 for service in reads.values() if service == "secretsmanager")
        ssm = sum(1 for service in reads.values() if service == "ssm")
        minimum, arithmetic = minimum_interval(sm, ssm, settings.refresh_fleet_pods)
        shortest = min(self._intervals.values())
        if shortest < minimum:
            raise RefreshIntervalError(shortest, minimum, arithmetic)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._token = _CURRENT.set(self)
        if not self._intervals:
            return  # nothing on an interval: no thread
        self._thread = threading.Thread(target=self._loop, name="awssecrets-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None

    def _loop(self) -> None:
        due = {i: time.monotonic() + iv for i, iv in self._intervals.items()}
        while not self._stop.is_set():
            now = time.monotonic()
            ready = [i for i, t in due.items() if t <= now]
            if ready:
                self._refresh(ready, raise_errors=False)
                now = time.monotonic()
                for i in ready:
                    due[i] = now + self._intervals[i]
            self._stop.wait(max(0.05, min(due.values()) - time.monotonic()))

    # -- reading ------------------------------------------------------------------------------------------
    def refresh_now(self) -> int:
        """Re-read every refreshable request now; returns how many values changed. Raises
        :class:`~flytekitplugins_awssecrets.errors.SecretResolutionError` naming each failed refresh (the
        old values stay)."""
        return self._refresh([i for i, _ in self._items], raise_errors=True)

    def _refresh(self, indexes: list[int], raise_errors: bool) -> int:
        from flytekitplugins_awssecrets.extract import extract_json_key
        from flytekitplugins_awssecrets.leaves import LeafPolicy
        from flytekitplugins_awssecrets.sensitive import SensitiveSet

        by = dict(self._items)
        with self._lock:
            reads = {i: _current_version(by[i].ref) for i in indexes}
            started = time.time()
            got = self._resolver.fetch(list(dict.fromkeys(reads.values())), refresh=True)
            ms = (time.time() - started) * 1000
            changed = 0
            failures: list[AwsSecretsError] = []
            for i in indexes:
                r = by[i]
                f = got.get(reads[i].fetch_id)
                try:
                    if isinstance(f, AwsSecretsError):
                        raise f
                    assert f is not None
                    value = (
                        extract_json_key(str(r.ref), f.value, r.ref.json_key) if r.ref.json_key else f.value
                    )
                except AwsSecretsError as e:
                    err = SecretRefreshError(
                        e, _when(self._record.reads[i].last_refresh_at or self._record.reads[i].read_at)
                    )
                    failures.append(err)
                    row = self._record.reads[i]
                    self._record.update(i, refresh_failures=row.refresh_failures + 1, last_error=err.reason)
                    logger.warning("%s", err)
                    continue
                now = time.time()
                if value != self._values[i]:
                    # Redaction and the leak guard learn the new value before anything can read it,
                    # with the same leaf policy as the task's start.
                    self._sensitive.absorb(
                        SensitiveSet.build(
                            [(str(r.ref), value)],
                            LeafPolicy.from_settings(self._settings),
                            whole={str(r.ref)} if r.ref.json_key else set(),
                        )
                    )
                    self._session.replace_value(r, value)
                    self._values[i] = value
                    changed += 1
                    logger.info(
                        "refreshed %s: version %s -> %s", r.ref, self._versions[i] or "?", f.version_id or "?"
                    )
                self._versions[i] = f.version_id
                row = self._record.reads[i]
                self._record.update(
                    i,
                    refreshes=row.refreshes + 1,
                    last_refresh_at=now,
                    version_id=f.version_id,
                    version_stages=tuple(f.version_stages or ()),
                    last_refresh_ms=ms,
                    last_error=None,
                )
        if failures and raise_errors:
            from flytekitplugins_awssecrets.errors import SecretResolutionError

            raise SecretResolutionError(failures, self._record.task)
        return changed


def _current_version(ref: Any) -> Any:
    """What a refresh reads: the stage pinned, or ``AWSCURRENT`` by name (never ``AWSPENDING``)."""
    if ref.service == "secretsmanager" and not ref.version_stage and not ref.version_id:
        return dataclasses.replace(ref, version_stage="AWSCURRENT", json_key=None)
    return dataclasses.replace(ref, json_key=None)


def _when(epoch: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch)) if epoch else "task start"


def refresh_secrets() -> int:
    """Re-read the running task's ``ANY`` and ``FILE`` secrets now (e.g. after an authentication failure).

    Returns how many values changed. Raises
    :class:`~flytekitplugins_awssecrets.errors.SecretResolutionError` naming each secret whose refresh failed
    (their old values stay mounted), and :class:`RuntimeError` outside a task with AWS secrets.

    Example::

        try:
            connect(os.environ["DB_HOST"], open(current_context().secrets.get_secrets_file(G, K)).read())
        except AuthenticationFailed:
            refresh_secrets()
            ...  # read the file again
    """
    refresher = _CURRENT.get()
    if refresher is None:
        raise RuntimeError("refresh_secrets() is called from a running task that requested AWS secrets")
    return refresher.refresh_now()
