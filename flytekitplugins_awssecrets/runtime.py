"""Around one task execution: resolve, mount, run, clean up.

Called by the hook in :mod:`flyte` only for tasks that have AWS requests. In a pod (``pyflyte-execute``)
a failure is raised as a flytekit user error, recoverable when AWS was throttling or unreachable so that
Flyte's retries apply; locally the typed error itself is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from flytekitplugins_awssecrets.errors import (
    AwsSecretsError,
    SecretLeakError,
    SecretResolutionError,
    SettingsError,
)
from flytekitplugins_awssecrets.mount import MountSession
from flytekitplugins_awssecrets.resolver import resolve_requests
from flytekitplugins_awssecrets.settings import default_mount_root, get_settings

__all__ = ["run_with_secrets", "served_value", "task_session", "mount_problems"]

logger = logging.getLogger("flytekitplugins_awssecrets")


def _is_local(ctx: Any) -> bool:
    state = getattr(ctx, "execution_state", None)
    return state is None or bool(state.is_local_execution())


def _for_flyte(err: AwsSecretsError, ctx: Any) -> BaseException:
    if _is_local(ctx):
        return err
    from flytekit.exceptions.user import FlyteRecoverableException, FlyteUserRuntimeException

    inner: BaseException = FlyteRecoverableException(str(err)) if err.retryable else err
    wrapped: BaseException = FlyteUserRuntimeException(inner)
    return wrapped


def task_session(settings: Any) -> MountSession:
    """The mount session a task gets (where FILE secrets go, whether disk is allowed)."""
    return MountSession(default_mount_root(settings), allow_disk=settings.allow_disk_mount)


def mount_problems(resolved: Sequence[Any]) -> list[AwsSecretsError]:
    """What mounting ``resolved`` for one task would refuse (collisions, a mount directory on disk, a binary
    value for an env var), without mounting anything: ``check`` asks this, a run mounts through the same
    session type and checks."""
    return task_session(get_settings())._check(resolved)


def run_with_secrets(task: Any, ctx: Any, requests: Sequence[Any], call: Callable[[], Any]) -> Any:
    """Resolve and mount ``requests`` for ``task``, run ``call``, then unmount, whatever happens."""
    name = getattr(task, "name", None)
    settings = get_settings()
    try:
        resolved = resolve_requests(requests, task=name)
        session = task_session(settings)
        session.mount(resolved, task=name)
    except SecretResolutionError as e:
        raise _for_flyte(e, ctx) from None
    sources: dict[str, int] = {}
    for r in resolved:
        sources[r.source] = sources.get(r.source, 0) + 1
    logger.info("task %s: %d AWS secret request(s) mounted %s", name, len(resolved), sources)
    from flytekitplugins_awssecrets.leaves import LeafPolicy
    from flytekitplugins_awssecrets.sensitive import SensitiveSet, scrub_exception

    # One set per task, shared by log redaction, the leak guard and exception scrubbing.
    sensitive = SensitiveSet.build(
        [(str(r.ref), r.value) for r in resolved],
        LeafPolicy.from_settings(settings),
        whole={str(r.ref) for r in resolved if r.ref.json_key},
    )
    from flytekitplugins_awssecrets import record as records

    rec = records.build_record(name, list(resolved), [session.location(r) for r in resolved])
    rec_token = records.begin(rec)
    refresher = None
    try:
        if any(r.mount in ("ANY", "FILE") for r in resolved):
            from flytekitplugins_awssecrets.refresh import Refresher
            from flytekitplugins_awssecrets.resolver import get_resolver

            refresher = Refresher(get_resolver(), session, resolved, rec, sensitive, settings)
            refresher.start()
        from flytekitplugins_awssecrets.deck import add_deck

        add_deck(task, ctx, rec, settings.deck)
    except BaseException as e:
        if refresher is not None:
            refresher.stop()
        records.end(rec, rec_token)
        session.close()
        if isinstance(e, SecretResolutionError | SettingsError):
            err = e if isinstance(e, SecretResolutionError) else SecretResolutionError([e], name)
            raise _for_flyte(err, ctx) from None
        raise
    token = None
    scanner = None
    if settings.leak_guard:
        from flytekitplugins_awssecrets.leakguard import ACTIVE, LeakScanner

        scanner = LeakScanner(sensitive, allow_opaque=settings.allow_opaque_outputs)
        token = ACTIVE.set(scanner)
    try:
        with _redaction(settings, sensitive):
            try:
                out = call()
            except BaseException as e:
                leak = _leak_in(e) if isinstance(e, Exception) else None
                if leak is None:
                    # The exception goes on to flytekit (error.pb, the pod log, the console) after the
                    # redaction below is gone: scrub it, its chain and flytekit's wrapper, in place.
                    if sensitive:
                        scrub_exception(e, sensitive)
                    raise
                # flytekit wraps errors raised while converting outputs as system errors; a leak is the
                # user's to fix, so it is raised as a user error.
                raise _for_flyte(leak, ctx) from None
            if scanner:
                _check_serialised(scanner, out, ctx)
            return out
    finally:
        if refresher is not None:
            refresher.stop()
        records.end(rec, rec_token)
        if token is not None:
            from flytekitplugins_awssecrets.leakguard import ACTIVE

            ACTIVE.reset(token)
        session.close()


def _leak_in(e: BaseException) -> SecretLeakError | None:
    for candidate in (e, getattr(e, "value", None), e.__cause__):
        if isinstance(candidate, SecretLeakError):
            return candidate
    return None


def _check_serialised(scanner: Any, out: Any, ctx: Any) -> None:
    """Second line of the leak guard: the literal map (or dynamic job spec) as it would be written."""
    to_idl = getattr(out, "to_flyte_idl", None)
    if not callable(to_idl):
        return
    hits = scanner.scan_bytes(to_idl().SerializeToString(), "outputs (serialised)")
    if hits:
        ref, where = hits[0]
        raise _for_flyte(SecretLeakError(ref, where), ctx)


class _redaction:
    """Log redaction of the task's sensitive strings while user code runs (see :mod:`redact`)."""

    def __init__(self, settings: Any, sensitive: Any) -> None:
        self._settings = settings
        self._sensitive = sensitive
        self._undo: Callable[[], None] | None = None

    def __enter__(self) -> None:
        if self._settings.redact_logs and self._sensitive:
            from flytekitplugins_awssecrets.redact import install_redaction

            self._undo = install_redaction(self._sensitive)

    def __exit__(self, *exc: Any) -> None:
        if self._undo is not None:
            self._undo()


def served_value(group: str | None, key: str | None, value: str | bytes, encode_mode: str) -> str | bytes:
    """What ``SecretsManager.get`` returns for an in-memory (``ANY``) secret: like flytekit, stripped."""
    if "b" in encode_mode:
        return (value.encode("utf-8") if isinstance(value, str) else value).strip()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8").strip()
        except UnicodeDecodeError:
            from flytekitplugins_awssecrets.errors import BinaryToEnvVarError

            raise BinaryToEnvVarError(f"{group}{key}", as_text=True) from None
    return value.strip()
