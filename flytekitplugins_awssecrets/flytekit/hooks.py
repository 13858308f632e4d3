"""The flytekit hooks, installed by :mod:`flytekitplugins_awssecrets.flytekit.entrypoint` on ``import flytekit``.

They run inside every ``import flytekit``, so installing them imports nothing heavy (no boto3, no pydantic
models, no I/O). Every wrapper takes ``*args, **kwargs``, passes them on unchanged and keeps the wrapped
function's metadata (``functools.wraps``), so a keyword a future flytekit adds reaches flytekit untouched;
:func:`install` is idempotent and composes with other plugins that wrap the same methods, in any order.

* ``PythonTask.dispatch_execute`` and ``ExecutableTemplateShimTask.dispatch_execute`` -- the methods every
  execution path goes through (``pyflyte run``, ``pyflyte-execute`` in a pod, a shim task loaded from its
  template): before the task runs, its AWS requests are resolved together and mounted; afterwards they are
  removed. A shim task loaded from its template finds its requests in the template's record (see
  :mod:`serialize`).
* ``PythonTask._output_to_literal_map`` -- the leak guard looks at the Python outputs before flytekit
  converts and uploads them (a no-op for tasks without AWS requests).
* ``SecretsManager.get`` / ``get_secrets_file`` / ``get_secrets_env_var`` -- serve ``ANY`` requests from
  memory and ``FILE`` requests from the per-task directory; asked for the file or variable of an ``ANY``
  request, put it there.
* ``translator.get_serializable_task`` / ``get_serializable_launch_plan`` -- registration: the spec keeps
  what the cluster's AWS webhook serves, records the plugin's own requests, prints what it did, and refuses
  what nobody would serve (see :mod:`serialize`).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from flytekitplugins_awssecrets.refs import is_aws_group

__all__ = ["install", "log_through_flytekit", "task_requests"]

_PATCHED = "__awssecrets_patched__"

# Tasks (by id) whose requests are mounted by an enclosing dispatch in this context: a task class that
# reaches both wrapped methods resolves once.
_ACTIVE: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "awssecrets_active", default=frozenset()
)


def _is_ours(fn: Any) -> bool:
    """True if ``fn`` or anything it wraps is one of our wrappers (another plugin may wrap ours)."""
    seen = 0
    while fn is not None and seen < 32:
        if getattr(fn, _PATCHED, False):
            return True
        fn = getattr(fn, "__wrapped__", None)
        seen += 1
    return False


def task_requests(task: Any) -> list[Any]:
    """The AWS requests of a task object (flytekit ``Secret`` models).

    A ``PythonTask`` carries them on its ``security_context``; a shim task loaded from its template (in a
    pod) has only the template, whose record lists them all (the spec may hold only the webhook's share).
    """
    from flytekit.core.base_task import PythonTask

    if isinstance(task, PythonTask):
        sc = task.security_context
        return [s for s in (getattr(sc, "secrets", None) or []) if is_aws_group(getattr(s, "group", None))]
    template = getattr(task, "task_template", None)
    if template is None:
        return []
    from flytekitplugins_awssecrets.flytekit.serialize import recorded_requests

    recorded = recorded_requests(template)
    if recorded is not None:
        return recorded
    sc = getattr(template, "security_context", None)
    return [s for s in (getattr(sc, "secrets", None) or []) if is_aws_group(getattr(s, "group", None))]


def _bind(original: Callable[..., Any]) -> Callable[..., dict[str, Any] | None]:
    """A function mapping a call's ``(self, *args, **kwargs)`` to the wrapped function's named arguments."""
    try:
        sig = inspect.signature(original)
    except (TypeError, ValueError):
        return lambda *a, **k: None

    def bind(*args: Any, **kwargs: Any) -> dict[str, Any] | None:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            return None  # let flytekit raise its own error for a bad call
        bound.apply_defaults()
        return dict(bound.arguments)

    return bind


def _mark(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    setattr(wrapper, _PATCHED, True)
    return wrapper


def _wrap_dispatch(original: Callable[..., Any]) -> Callable[..., Any]:
    bind = _bind(original)

    @functools.wraps(original)
    def dispatch_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        active = _ACTIVE.get()
        if id(self) in active:
            return original(self, *args, **kwargs)
        requests = task_requests(self)
        if not requests:
            return original(self, *args, **kwargs)
        named = bind(self, *args, **kwargs) or {}
        ctx = named.get("ctx", args[0] if args else None)
        from flytekitplugins_awssecrets.flytekit.serialize import check_local_task, check_settings

        check_settings(ctx)
        check_local_task(self, requests, ctx)
        from flytekitplugins_awssecrets.flytekit.runtime import run_with_secrets

        token = _ACTIVE.set(active | {id(self)})
        try:
            return run_with_secrets(self, ctx, requests, lambda: original(self, *args, **kwargs))
        finally:
            _ACTIVE.reset(token)

    return _mark(dispatch_execute)


def _wrap_outputs(original: Callable[..., Any]) -> Callable[..., Any]:
    bind = _bind(original)

    @functools.wraps(original)
    async def _output_to_literal_map(self: Any, *args: Any, **kwargs: Any) -> Any:
        named = bind(self, *args, **kwargs)
        if named is not None and "native_outputs" in named:
            from flytekitplugins_awssecrets.flytekit.outputs import check_native_outputs

            # Before conversion: nothing has been uploaded to the output location yet.
            check_native_outputs(self, named["native_outputs"])
        return await original(self, *args, **kwargs)

    return _mark(_output_to_literal_map)


def _request_of(named: dict[str, Any] | None) -> tuple[str | None, str | None, str | None] | None:
    if named is None:
        return None
    group = named.get("group")
    if not isinstance(group, str) or not is_aws_group(group):
        return None
    return group, named.get("key"), named.get("group_version")


def _wrap_get(original: Callable[..., Any]) -> Callable[..., Any]:
    bind = _bind(original)

    @functools.wraps(original)
    def get(self: Any, *args: Any, **kwargs: Any) -> Any:
        named = bind(self, *args, **kwargs)
        req = _request_of(named)
        if req is not None and named is not None:
            from flytekitplugins_awssecrets.flytekit.names import lookup_memory

            value = lookup_memory(*req)
            if value is not None:
                from flytekitplugins_awssecrets.flytekit.runtime import served_value

                return served_value(req[0], req[1], value, str(named.get("encode_mode") or "r"))
        return original(self, *args, **kwargs)

    return _mark(get)


def _wrap_get_file(original: Callable[..., Any]) -> Callable[..., Any]:
    bind = _bind(original)

    @functools.wraps(original)
    def get_secrets_file(self: Any, *args: Any, **kwargs: Any) -> Any:
        req = _request_of(bind(self, *args, **kwargs))
        if req is not None:
            from flytekitplugins_awssecrets.flytekit.names import lookup_file, materialize

            path = lookup_file(*req) or materialize(*req, as_="file")
            if path is not None:
                return path
        return original(self, *args, **kwargs)

    return _mark(get_secrets_file)


def _wrap_get_env_var(original: Callable[..., Any]) -> Callable[..., Any]:
    bind = _bind(original)

    @functools.wraps(original)
    def get_secrets_env_var(self: Any, *args: Any, **kwargs: Any) -> Any:
        name = original(self, *args, **kwargs)
        req = _request_of(bind(self, *args, **kwargs))
        if req is not None:
            from flytekitplugins_awssecrets.flytekit.names import materialize

            materialize(*req, as_="env")
        return name

    return _mark(get_secrets_env_var)


def _wrap_serializable_task(original: Callable[..., Any]) -> Callable[..., Any]:
    bind = _bind(original)

    @functools.wraps(original)
    def get_serializable_task(*args: Any, **kwargs: Any) -> Any:
        spec = original(*args, **kwargs)
        named = bind(*args, **kwargs) or {}
        from flytekitplugins_awssecrets.flytekit.serialize import rewrite_task_spec

        return rewrite_task_spec(spec, named.get("entity"), named.get("settings"))

    return _mark(get_serializable_task)


def _wrap_serializable_launch_plan(original: Callable[..., Any]) -> Callable[..., Any]:
    bind = _bind(original)

    @functools.wraps(original)
    def get_serializable_launch_plan(*args: Any, **kwargs: Any) -> Any:
        lp = original(*args, **kwargs)
        named = bind(*args, **kwargs) or {}
        from flytekitplugins_awssecrets.flytekit.serialize import rewrite_launch_plan

        return rewrite_launch_plan(lp, named.get("entity"), named.get("settings"))

    return _mark(get_serializable_launch_plan)


def _patch(owner: Any, name: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    current = getattr(owner, name, None)
    if current is None or _is_ours(current):
        return
    setattr(owner, name, wrap(current))


def install() -> None:
    """Install the hooks (idempotent: a second call, or a call after another plugin wrapped ours, is a no-op)."""
    from flytekit.core.base_task import PythonTask
    from flytekit.core.context_manager import SecretsManager
    from flytekit.core.shim_task import ExecutableTemplateShimTask
    from flytekit.tools import translator

    _patch(PythonTask, "dispatch_execute", _wrap_dispatch)
    _patch(ExecutableTemplateShimTask, "dispatch_execute", _wrap_dispatch)
    _patch(PythonTask, "_output_to_literal_map", _wrap_outputs)
    _patch(SecretsManager, "get", _wrap_get)
    _patch(SecretsManager, "get_secrets_file", _wrap_get_file)
    _patch(SecretsManager, "get_secrets_env_var", _wrap_get_env_var)
    _patch(translator, "get_serializable_task", _wrap_serializable_task)
    _patch(translator, "get_serializable_launch_plan", _wrap_serializable_launch_plan)
    log_through_flytekit()


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
