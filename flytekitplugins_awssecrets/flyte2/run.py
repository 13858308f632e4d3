"""Around one Flyte 2 task execution: resolve every AWS request together, put the values in place, run, clean up.

``flyte.Secret`` requests -> :mod:`.requests` (references, where each value goes) -> the core resolver (cache,
reads per API and region, JSON key) -> :mod:`.mount` (exact env vars, webhook-layout files) -> user code
(log redaction, exception scrubbing) -> leak guard on the native outputs -> cleanup.

Called by :mod:`.hooks` only for tasks that ask for an AWS secret. Every failure before user code is one
:class:`~flytekitplugins_awssecrets.errors.SecretResolutionError` naming every failing reference.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from flytekitplugins_awssecrets.errors import AwsSecretsError, SecretResolutionError
from flytekitplugins_awssecrets.flyte2.mount import Lease, Placement, lease
from flytekitplugins_awssecrets.flyte2.requests import AwsRequest, file_parts

__all__ = ["prepare", "run_with_secrets"]

logger = logging.getLogger("flytekitplugins_awssecrets")


def prepare(requests: Sequence[AwsRequest], task: str | None) -> tuple[Lease, Any, list[Any], Any]:
    """Resolve and place ``requests``; returns the lease, the task's sensitive set, what was read from AWS
    (``Resolved``, for refresh) and the task's record.

    Raises :class:`SecretResolutionError` (nothing placed) when any request fails.
    """
    from flytekitplugins_awssecrets.resolver import resolve_requests
    from flytekitplugins_awssecrets.sensitive import SensitiveSet
    from flytekitplugins_awssecrets.settings import default_mount_root, get_settings

    settings = get_settings()
    served, errors = _served_by_webhook(requests, settings)
    # No present=: "already present" is a flytekit notion (its env/file names); the webhook's files
    # were looked at above.
    pending = [r for i, r in enumerate(requests) if i not in served]
    resolved = []
    try:
        resolved = resolve_requests(pending, task=task) if pending else []
    except SecretResolutionError as e:
        errors += e.errors
    if errors:
        raise SecretResolutionError(errors, task)  # one error naming every failing reference
    by_ref = {(r.group, r.key, r.env_var): r for r in resolved}
    placements = []
    values: list[tuple[str, str | bytes]] = []
    for i, req in enumerate(requests):
        if i in served:
            value = served[i]
        else:
            value = by_ref[(req.group, req.key, req.env_var)].value
        values.append((str(req.ref), value))
        placements.append(
            Placement(
                str(req.ref), value, req.as_env_var, file_parts(req.group, req.key) if req.file else None
            )
        )
    held = lease(placements, default_mount_root(settings), settings.allow_disk_mount, task)
    logger.info(
        "task %s: %d AWS secret request(s) in place (%d from the webhook's files)",
        task,
        len(placements),
        len(served),
    )
    from flytekitplugins_awssecrets.leaves import LeafPolicy
    from flytekitplugins_awssecrets.record import ReadInfo, build_record

    files = _Files(held)
    # The record's first rows are the values read from AWS (the refresher's indexes), then the webhook's.
    from_webhook = [
        dataclasses.replace(
            _as_resolved(requests[i], served[i]),
            info=ReadInfo("webhook", settings.webhook_dir, read_at=time.time()),
        )
        for i in sorted(served)
    ]
    rows = [*resolved, *from_webhook]
    record = build_record(task, rows, [files.location(r) for r in rows])
    sensitive = SensitiveSet.build(
        values,
        LeafPolicy.from_settings(settings),
        whole={str(req.ref) for req in requests if req.ref.json_key},
    )
    return held, sensitive, list(resolved), record


def _as_resolved(req: AwsRequest, value: str | bytes) -> Any:
    from flytekitplugins_awssecrets.mount import Resolved

    return Resolved(
        req.group, req.key, None, req.mount_requirement.name, req.env_var, req.ref, value, source="webhook"
    )


class _Files:
    """What the core's refresher and record need of a Flyte 2 task's placements: where each value is, and
    files replaced atomically (environment variables never change under running code)."""

    def __init__(self, held: Lease) -> None:
        self._held = held

    def location(self, r: Any) -> str:
        parts = []
        if r.env_var:
            parts.append(f"env {r.env_var}")
        rel = "/".join(file_parts(r.group, r.key))
        if rel in self._held.files and self._held.directory:
            parts.append(f"file {self._held.directory}/{rel}")
        return ", ".join(parts) or "memory"

    def replace_value(self, r: Any, value: str | bytes) -> None:
        self._held.replace_file("/".join(file_parts(r.group, r.key)), value)


def _served_by_webhook(
    requests: Sequence[AwsRequest], settings: Any
) -> tuple[dict[int, str | bytes], list[AwsSecretsError]]:
    """Values that Flyte's AWS webhook already mounted in this pod, by request index.

    The webhook serves a ``mount`` request whose key is the plain secret name (no JSON key or version: it
    would ask AWS for a secret named ``name:field``) at ``<webhook_dir>/<lower(group)>/<lower(key)>``, and
    only in a pod, and only when the task was not registered in ``plugin`` mode (the mode comes from the pod's command line,
    see :mod:`.pod`; a task registered for the plugin had no request handed to a webhook). Taking
    its file saves a read; ``required_tags`` still holds (one metadata call per secret, as for flytekit).
    """
    import os

    from flytekitplugins_awssecrets.flyte2.cluster import webhook_serves
    from flytekitplugins_awssecrets.flyte2.pod import registered_mode
    from flytekitplugins_awssecrets.privatefiles import read_secret_file
    from flytekitplugins_awssecrets.setting_sources import running_in_pod

    out: dict[int, str | bytes] = {}
    errors: list[AwsSecretsError] = []
    mode = registered_mode()
    if mode == "plugin" or (mode is None and not running_in_pod()):
        # Registered for the plugin: no request was handed to a webhook. A local run has no webhook (as for
        # flytekit): a file under /etc/flyte/secrets on a laptop never stands in for AWS.
        return out, errors
    for i, req in enumerate(requests):
        if not webhook_serves(req):
            continue
        path = os.path.join(settings.webhook_dir, *file_parts(req.group, req.key))
        if os.path.isfile(path):
            out[i] = read_secret_file(path)
    if out and settings.required_tags:
        from flytekitplugins_awssecrets.fetch import Fetched
        from flytekitplugins_awssecrets.resolver import get_resolver

        resolver = get_resolver()
        refs = [requests[i].ref for i in out]
        tags = resolver.tags_of(refs)
        for ref in refs:
            t = tags[ref.fetch_id]
            err = t if isinstance(t, AwsSecretsError) else resolver.check_tags(ref, Fetched(b"", tags=t))
            if err is not None:
                errors.append(err)
    return out, errors


def failure(err: AwsSecretsError) -> Exception:
    """The error flyte records for a failure of ours: a user error, recoverable when AWS was throttling or
    unreachable (so Flyte's retries apply), else non-recoverable (a missing secret, a denied role, a refused
    setting fail the same way on every attempt: the engine skips the retries)."""
    from flyte.errors import NonRecoverableError, RuntimeUserError

    out: Exception
    if err.retryable:
        out = RuntimeUserError("AwsSecretsRecoverable", rich_safe(str(err)))
    else:
        out = NonRecoverableError(rich_safe(str(err)), code="AwsSecrets")
    out.__cause__ = err
    return out


def rich_safe(text: str) -> str:
    """``text`` with every ARN shown as it is by Flyte's rich console.

    The console renders ``:name:`` as an emoji (``...:123456789012:secret:db`` shows a ㊙), pairing colons left
    to right within each whitespace-free token, and has no escape for it. A token that rich would change is
    written ``ARN:<token>``: the extra colon shifts the pairing, so the ARN itself is printed character for
    character (and still copies as one word after ``ARN:``). Tokens rich leaves alone are not touched.
    """
    try:
        from rich._emoji_replace import _emoji_replace
    except ImportError:  # a rich without it renders no emoji codes either
        return text
    out = []
    for token in text.split(" "):
        if _emoji_replace(token) != token and _emoji_replace("ARN:" + token) == "ARN:" + token:
            token = "ARN:" + token
        out.append(token)
    return " ".join(out)


async def run_with_secrets(
    task: Any, requests: Sequence[AwsRequest], call: Callable[[], Awaitable[tuple[Any, Any]]]
) -> tuple[Any, Any]:
    """Run flyte's ``run_task`` (``call``) with ``requests`` in place; returns its ``(outputs, error)``."""
    from flytekitplugins_awssecrets.settings import get_settings

    name = getattr(task, "name", None)
    try:
        held, sensitive, resolved, record = prepare(requests, name)
    except AwsSecretsError as e:  # one naming every failing reference, or a setting refused in a pod
        return {}, failure(e)
    settings = get_settings()
    from flytekitplugins_awssecrets import record as records

    rec_token = records.begin(record)
    refresher = None
    try:
        if any(r.mount == "FILE" for r in resolved):
            from flytekitplugins_awssecrets.refresh import Refresher
            from flytekitplugins_awssecrets.resolver import get_resolver

            refresher = Refresher(get_resolver(), _Files(held), resolved, record, sensitive, settings)
            refresher.start()
    except AwsSecretsError as e:
        records.end(record, rec_token)
        held.release()
        return {}, failure(SecretResolutionError([e], name))
    try:
        undo = None
        if settings.redact_logs and sensitive:
            from flytekitplugins_awssecrets.redact import install_redaction

            undo = install_redaction(sensitive)
        try:
            out, err = await call()
        finally:
            if undo is not None:
                undo()
        if err is not None:
            from flytekitplugins_awssecrets.scrub import scrubbed_exception

            if sensitive:
                # In place where it can be; a stand-in where it cannot (pydantic's ValidationError).
                err = scrubbed_exception(err, sensitive)
            return out, err
        if settings.leak_guard and sensitive:
            leak = _leak(sensitive, out, settings.allow_opaque_outputs)
            if leak is not None:
                return {}, failure(leak)
        return out, err
    finally:
        if refresher is not None:
            refresher.stop()
        records.end(record, rec_token)
        held.release()


def _leak(sensitive: Any, out: Any, allow_opaque: bool) -> AwsSecretsError | None:
    from flytekitplugins_awssecrets.leakguard import LeakScanner, leak_in

    return leak_in(LeakScanner(sensitive, allow_opaque=allow_opaque), {"o0": out})
