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
from flytekitplugins_awssecrets.flytekit.names import NAMING, flytekit_names
from flytekitplugins_awssecrets.flytekit.present import already_present
from flytekitplugins_awssecrets.mount import MountSession
from flytekitplugins_awssecrets.resolver import resolve_requests
from flytekitplugins_awssecrets.settings import default_mount_root, get_settings

__all__ = ["run_with_secrets", "served_value", "task_session", "mount_problems", "webhook_served"]

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


def task_session(settings: Any, local: bool = True) -> MountSession:
    """The mount session a task gets (where FILE secrets go, whether disk is allowed). A local run with no
    ``mount_dir`` set may fall back to a private directory where no memory filesystem exists (a laptop);
    a pod (``local=False``) stays strict."""
    return MountSession(
        default_mount_root(settings),
        allow_disk=settings.allow_disk_mount,
        laptop_fallback=local and not settings.mount_dir,
        names=flytekit_names,
        naming=NAMING,
    )


def mount_problems(resolved: Sequence[Any]) -> list[AwsSecretsError]:
    """What mounting ``resolved`` for one task would refuse (collisions, a mount directory on disk, a binary
    value for an env var), without mounting anything: ``check`` asks this, a run mounts through the same
    session type and checks (as a local run: ``check`` answers for ``pyflyte run``)."""
    return task_session(get_settings(), local=True)._check(resolved)


def run_with_secrets(task: Any, ctx: Any, requests: Sequence[Any], call: Callable[[], Any]) -> Any:
    """Resolve and mount ``requests`` for ``task``, run ``call``, then unmount, whatever happens."""
    name = getattr(task, "name", None)
    settings = get_settings()
    local = _is_local(ctx)
    try:
        _refuse_any_with_env_var(requests, name)
        resolved = resolve_requests(
            requests,
            task=name,
            present=already_present,
            webhook_served=webhook_served(task, requests, local),
        )
        session = task_session(settings, local=local)
        session.mount(resolved, task=name)
    except SecretResolutionError as e:
        raise _for_flyte(e, ctx) from None
    sources: dict[str, int] = {}
    for r in resolved:
        sources[r.source] = sources.get(r.source, 0) + 1
    logger.info("task %s: %d AWS secret request(s) mounted %s", name, len(resolved), sources)
    from flytekitplugins_awssecrets.leaves import LeafPolicy
    from flytekitplugins_awssecrets.scrub import scrubbed_exception
    from flytekitplugins_awssecrets.sensitive import SensitiveSet

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
        from flytekitplugins_awssecrets.flytekit.deck import add_deck

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
        with _redaction(settings, sensitive), session.activated():
            stand_in: BaseException | None = None
            try:
                out = call()
            except BaseException as e:
                leak = _leak_in(e) if isinstance(e, Exception) else None
                if leak is None:
                    # The exception goes on to flytekit (error.pb, the pod log, the console) after the
                    # redaction below is gone: scrub it, its chain and flytekit's wrapper, in place, or
                    # replace what cannot be scrubbed (see :mod:`scrub`).
                    stand_in = scrubbed_exception(e, sensitive)
                    if stand_in is e:
                        raise
                else:
                    # flytekit wraps errors raised while converting outputs as system errors; a leak is the
                    # user's to fix, so it is raised as a user error.
                    raise _for_flyte(leak, ctx) from None
            if stand_in is not None:
                raise stand_in  # outside the handler, so the original does not become its context
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


def _refuse_any_with_env_var(requests: Sequence[Any], task: str | None) -> None:
    """Before any AWS call: an ANY request naming an env_var is refused, never silently ignored."""
    from flytekitplugins_awssecrets.mount import any_with_env_var
    from flytekitplugins_awssecrets.refs import reference_from_request

    errors: list[AwsSecretsError] = []
    for s in requests:
        mount = getattr(getattr(s, "mount_requirement", None), "name", "ANY")
        if mount == "ANY" and getattr(s, "env_var", None):
            ref = reference_from_request(s.group, s.key, s.group_version)
            errors.append(any_with_env_var(str(ref or s.group), s.env_var))
    if errors:
        raise SecretResolutionError(errors, task)


def webhook_served(task: Any, requests: Sequence[Any], local: bool) -> set[tuple[str, str, str | None]]:
    """The requests (group, key, group_version) the cluster webhook serves for this run: none locally (a file
    left under the webhook directory never wins over AWS there); in a pod, the ones registration handed to
    the webhook, as recorded in the task template or passed by the pod's entry point (see :mod:`podguard`)."""
    if local:
        return set()
    from flytekitplugins_awssecrets.flytekit.serialize import plan_requests, served_by_webhook

    template = getattr(task, "task_template", None)
    recorded = served_by_webhook(template) if template is not None else None
    if recorded is not None:
        return recorded
    from flytekitplugins_awssecrets.flytekit.podguard import registered_mode

    mode = registered_mode()
    if mode is None:
        # Registered before the pod's entry point existed: the image's settings for this project/domain.
        import os

        mode = get_settings().mode_for(
            os.environ.get("FLYTE_INTERNAL_EXECUTION_PROJECT"),
            os.environ.get("FLYTE_INTERNAL_EXECUTION_DOMAIN"),
        )
    return {
        (d.secret.group, d.secret.key or "", d.secret.group_version)
        for d in plan_requests(list(requests), mode)
        if d.served_by == "webhook"
    }


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
