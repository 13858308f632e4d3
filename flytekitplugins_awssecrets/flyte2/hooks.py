"""The one place that touches flyte's private names: the task runner's ``run_task`` and the serializer's
``get_proto_task``.

Every Flyte 2 execution path runs a task through ``flyte._internal.runtime.taskrunner.run_task`` (``flyte run
--local``, ``flyte.run`` from Python or a notebook, and ``a0`` in a pod: ``load_and_run_task`` ->
``convert_and_run`` -> ``run_task`` -> ``task.execute``). flyte has no secrets-provider interface, so the
adapter wraps that one function: a task that asks for no AWS secret goes straight through; one that does has
its requests resolved and placed before ``task.execute`` and removed after it.

Serialization (``flyte deploy``, a remote ``flyte run``, a parent submitting a child in a pod) builds every task
template with ``task_serde.get_proto_task``; the adapter wraps it so the spec fits the cluster mode
(:mod:`.cluster`). Tasks without AWS requests get flyte's template untouched.

Guarded: :func:`install` does nothing but warn once on a flyte version outside :data:`SUPPORTED` or when
``run_task`` no longer has the parameters it expects, so an unknown flyte is never broken, only left alone.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["SUPPORTED", "install", "installed"]

logger = logging.getLogger("flytekitplugins_awssecrets")

#: flyte minors whose ``run_task`` the adapter knows (tested in CI: tests/test_flyte2*.py).
SUPPORTED = ((2, 11), (2, 12))
_PATCHED = "__awssecrets_patched__"
_warned = False


class Flyte2AdapterDisabledWarning(RuntimeWarning):
    """The Flyte 2 adapter is off (unknown flyte version or changed internals); flyte itself is untouched."""


def _version() -> tuple[int, int] | None:
    try:
        flyte = sys.modules.get("flyte")  # loaded already when flyte loads the entry point: no metadata scan
        text = getattr(flyte, "__version__", None)
        if not isinstance(text, str):
            from importlib.metadata import version

            text = version("flyte")
        major, minor, *_ = text.split(".")
        return int(major), int(minor)
    except Exception:  # noqa: BLE001 - an odd version string means "unknown"
        return None


def _disable(why: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"flytekitplugins-awssecrets: the Flyte 2 adapter is off ({why}); AWS secret requests are left "
            "to Flyte. Set FLYTE_AWS_SECRETS_DISABLE=1 to silence this.",
            Flyte2AdapterDisabledWarning,
            stacklevel=3,
        )


def installed() -> bool:
    """True when ``run_task`` is wrapped by this adapter."""
    try:
        from flyte._internal.runtime import taskrunner
    except ImportError:
        return False
    return bool(getattr(taskrunner.run_task, _PATCHED, False))


def install() -> bool:
    """Wrap ``run_task`` and ``get_proto_task`` (idempotent); False, with one warning, when this flyte is not
    one we know.

    A module flyte has not imported yet is patched right after its import (:mod:`.afterimport`), so
    ``flyte.init()`` in a process that never runs or serializes a task (a notebook that only deploys, a
    script that only reads results) does not pay for importing flyte's task runner: the plugin's share of
    ``flyte.init()`` stays what its own modules cost (benchmark P1).
    """
    v = _version()
    if v not in SUPPORTED:
        _disable(
            f"flyte {'.'.join(map(str, v)) if v else 'unknown'} is not one of "
            f"{', '.join(f'{a}.{b}' for a, b in SUPPORTED)}"
        )
        return False
    from flytekitplugins_awssecrets.flyte2.afterimport import when_imported

    when_imported("flyte._internal.runtime.taskrunner", _install_runner)
    when_imported("flyte._internal.runtime.task_serde", _install_serialization)
    return True


def _unpatched(module: Any, name: str) -> tuple[Any, list[str]] | None:
    """``module.name`` and its parameter names, or None when this adapter has wrapped it already."""
    current = getattr(module, name)
    if getattr(current, _PATCHED, False):
        return None
    try:
        return current, list(inspect.signature(current).parameters)
    except (TypeError, ValueError):
        return current, []


def _install_runner(taskrunner: Any) -> None:
    """Wrap ``taskrunner.run_task``; a changed signature leaves the adapter off, warned once."""
    found = _unpatched(taskrunner, "run_task")
    if found is None:
        return
    current, params = found
    if "task" not in params:
        _disable("flyte's run_task has no 'task' parameter")
        return
    taskrunner.run_task = _wrap(current, params.index("task"))


def _install_serialization(task_serde: Any) -> None:
    """Wrap ``task_serde.get_proto_task`` (what every serialization path calls, by its module global) so the
    spec fits the cluster mode (:mod:`.cluster`); a changed signature leaves serialization alone, warned."""
    found = _unpatched(task_serde, "get_proto_task")
    if found is None:
        return
    current, params = found
    if params[:2] != ["task", "serialize_context"]:
        warnings.warn(
            "flytekitplugins-awssecrets: flyte's get_proto_task changed; task specs are serialized as flyte "
            "writes them (no cluster mode), AWS requests still resolve in the pod.",
            Flyte2AdapterDisabledWarning,
            stacklevel=3,
        )
        return

    @functools.wraps(current)
    def get_proto_task(*args: Any, **kwargs: Any) -> Any:
        tt = current(*args, **kwargs)
        task = kwargs.get("task", args[0] if args else None)
        sctx = kwargs.get("serialize_context", args[1] if len(args) > 1 else None)
        from flytekitplugins_awssecrets.flyte2.entrypoint import disabled

        if task is None or disabled() or not getattr(task, "secrets", None):
            return tt
        from flytekitplugins_awssecrets.flyte2.cluster import rewrite_template

        rewrite_template(tt, task, getattr(sctx, "project", None), getattr(sctx, "domain", None))
        return tt

    setattr(get_proto_task, _PATCHED, True)
    task_serde.get_proto_task = get_proto_task


def _wrap(original: Callable[..., Any], task_pos: int) -> Callable[..., Any]:
    @functools.wraps(original)
    async def run_task(*args: Any, **kwargs: Any) -> Any:
        task = kwargs.get("task", args[task_pos] if len(args) > task_pos else None)
        from flytekitplugins_awssecrets.flyte2.entrypoint import disabled

        if task is None or disabled():
            return await original(*args, **kwargs)
        from flytekitplugins_awssecrets.errors import SecretResolutionError
        from flytekitplugins_awssecrets.flyte2.requests import aws_requests, task_secrets

        secrets = task_secrets(task)
        if not secrets:
            return await _hiding(original(*args, **kwargs))
        from flytekitplugins_awssecrets.flyte2.run import failure, run_with_secrets

        try:
            requests = aws_requests(secrets)
        except SecretResolutionError as e:
            return {}, failure(SecretResolutionError(e.errors, getattr(task, "name", None)))
        if not requests:
            return await _hiding(original(*args, **kwargs))
        return await run_with_secrets(task, requests, lambda: original(*args, **kwargs))

    setattr(run_task, _PATCHED, True)
    return run_task


async def _hiding(call: Any) -> Any:
    """Run a task that asks for no AWS secret; in a local run, without its parent's secrets in view."""
    from flytekitplugins_awssecrets.flyte2 import environ

    if not environ.installed():  # no task holds a secret in this process: nothing to hide
        return await call
    from flytekitplugins_awssecrets.flyte2.mount import hide_inherited

    scope = hide_inherited()
    try:
        return await call
    finally:
        if scope is not None:
            environ.leave(scope)
