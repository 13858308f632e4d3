"""The flytekit hook: the module flytekit's ``flytekit.plugins`` entry point loads on ``import flytekit``.

It runs inside every ``import flytekit``, so it only installs three small wrappers and imports nothing
heavy (no boto3, no pydantic models, no I/O):

* ``PythonTask.dispatch_execute`` -- the one method every execution path goes through (``pyflyte run``,
  ``pyflyte-execute`` in a pod, calling a task as a function): before user code, the task's AWS requests
  are resolved together and mounted; afterwards they are removed.
* ``PythonTask._output_to_literal_map`` -- the leak guard looks at the Python outputs before flytekit
  converts and uploads them (a no-op for tasks without AWS requests).
* ``SecretsManager.get`` / ``get_secrets_file`` -- serve ``ANY`` requests from memory and ``FILE`` requests
  from the per-task directory.
* ``translator.get_serializable_task`` -- in the default ``plugin`` cluster mode, AWS requests are left out
  of the serialised task spec (a Kubernetes secret webhook would otherwise try to mount a secret named
  after an ARN and the pod would never start); in ``webhook`` mode they are handed to the cluster's AWS
  webhook without the trailing JSON-key fields.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from flytekitplugins_awssecrets.refs import is_aws_group

_PATCHED = "__awssecrets_patched__"


def _aws_requests(task: Any) -> list[Any]:
    sc = getattr(task, "security_context", None)
    secrets = getattr(sc, "secrets", None) or []
    return [s for s in secrets if is_aws_group(getattr(s, "group", None))]


def _wrap_dispatch(original: Callable[..., Any]) -> Callable[..., Any]:
    def dispatch_execute(self: Any, ctx: Any, input_literal_map: Any) -> Any:
        requests = _aws_requests(self)
        if not requests:
            return original(self, ctx, input_literal_map)
        from flytekitplugins_awssecrets.runtime import run_with_secrets

        return run_with_secrets(self, ctx, requests, lambda: original(self, ctx, input_literal_map))

    setattr(dispatch_execute, _PATCHED, True)
    dispatch_execute.__wrapped__ = original  # type: ignore[attr-defined]
    return dispatch_execute


def _wrap_outputs(original: Callable[..., Any]) -> Callable[..., Any]:
    async def _output_to_literal_map(self: Any, native_outputs: Any, ctx: Any) -> Any:
        from flytekitplugins_awssecrets.leakguard import check_native_outputs

        # Before conversion: nothing has been uploaded to the output location yet.
        check_native_outputs(self, native_outputs)
        return await original(self, native_outputs, ctx)

    setattr(_output_to_literal_map, _PATCHED, True)
    _output_to_literal_map.__wrapped__ = original  # type: ignore[attr-defined]
    return _output_to_literal_map


def _wrap_get(original: Callable[..., Any]) -> Callable[..., Any]:
    def get(
        self: Any,
        group: str | None = None,
        key: str | None = None,
        group_version: str | None = None,
        encode_mode: str = "r",
    ) -> Any:
        if is_aws_group(group):
            from flytekitplugins_awssecrets.mount import lookup_memory

            value = lookup_memory(group, key, group_version)
            if value is not None:
                from flytekitplugins_awssecrets.runtime import served_value

                return served_value(group, key, value, encode_mode)
        return original(self, group, key, group_version, encode_mode)

    setattr(get, _PATCHED, True)
    get.__wrapped__ = original  # type: ignore[attr-defined]
    return get


def _wrap_get_file(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_secrets_file(
        self: Any, group: str | None = None, key: str | None = None, group_version: str | None = None
    ) -> Any:
        if is_aws_group(group):
            from flytekitplugins_awssecrets.mount import lookup_file

            path = lookup_file(group, key, group_version)
            if path is not None:
                return path
        return original(self, group, key, group_version)

    setattr(get_secrets_file, _PATCHED, True)
    get_secrets_file.__wrapped__ = original  # type: ignore[attr-defined]
    return get_secrets_file


def _wrap_serializable_task(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_serializable_task(*args: Any, **kwargs: Any) -> Any:
        spec = original(*args, **kwargs)
        template = getattr(spec, "template", None)
        sc = getattr(template, "security_context", None)
        if (
            template is not None
            and sc is not None
            and any(is_aws_group(getattr(s, "group", None)) for s in (sc.secrets or []))
        ):
            from flytekitplugins_awssecrets.serialize import rewrite_security_context

            template._security_context = rewrite_security_context(sc)
        return spec

    setattr(get_serializable_task, _PATCHED, True)
    get_serializable_task.__wrapped__ = original  # type: ignore[attr-defined]
    return get_serializable_task


def install() -> None:
    """Install the hooks (idempotent). Called when flytekit loads the plugin."""
    from flytekit.core.base_task import PythonTask
    from flytekit.core.context_manager import SecretsManager
    from flytekit.tools import translator

    if not getattr(PythonTask.dispatch_execute, _PATCHED, False):
        PythonTask.dispatch_execute = _wrap_dispatch(PythonTask.dispatch_execute)  # type: ignore[method-assign]
    if not getattr(PythonTask._output_to_literal_map, _PATCHED, False):
        PythonTask._output_to_literal_map = _wrap_outputs(PythonTask._output_to_literal_map)  # type: ignore[method-assign]
    if not getattr(SecretsManager.get, _PATCHED, False):
        SecretsManager.get = _wrap_get(SecretsManager.get)  # type: ignore[method-assign]
    if not getattr(SecretsManager.get_secrets_file, _PATCHED, False):
        SecretsManager.get_secrets_file = _wrap_get_file(SecretsManager.get_secrets_file)  # type: ignore[method-assign]
    if not getattr(translator.get_serializable_task, _PATCHED, False):
        translator.get_serializable_task = _wrap_serializable_task(translator.get_serializable_task)


def log_through_flytekit() -> None:
    """Show the plugin's log records where flytekit's go, at flytekit's level (idempotent).

    flytekit's ``flytekit`` logger does not propagate to the root logger and ours did, so under
    ``pyflyte run`` our records met Python's last-resort handler (warnings only) and
    ``FLYTE_SDK_LOGGING_LEVEL`` did not reach them. A filter on our logger hands its records to flytekit's
    handlers (rich locally, JSON in a pod) when the root logger has none, and our level follows flytekit's
    when flytekit's is lower. A program that configures logging (``serve``, a notebook with
    ``basicConfig``, pytest) keeps getting our records through the root logger as before.
    """
    ours = logging.getLogger("flytekitplugins_awssecrets")
    if any(isinstance(f, _ToFlytekit) for f in ours.filters):
        return
    ours.addFilter(_ToFlytekit())
    flytekit_level = logging.getLogger("flytekit").getEffectiveLevel()
    if ours.level == logging.NOTSET and flytekit_level < ours.getEffectiveLevel():
        ours.setLevel(flytekit_level)


class _ToFlytekit(logging.Filter):
    """Also hands each record of the plugin's own logger to flytekit's handlers when the root logger has
    none (so nothing else would show it). A filter rather than a handler: a handler would make
    ``hasHandlers()`` true for every child logger, and children that add a handler of their own when nobody
    else listens (the Aptible audit log) would stay silent."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not logging.getLogger().handlers:
            fk = logging.getLogger("flytekit")
            if record.levelno >= fk.getEffectiveLevel():
                for h in fk.handlers:
                    if record.levelno >= h.level:
                        h.handle(record)
        return True


if os.environ.get("FLYTE_AWS_SECRETS_DISABLE", "").lower() not in ("1", "true", "yes"):
    install()
    log_through_flytekit()
