"""The pod's entry point: a task registered with AWS requests for the plugin runs only where the plugin runs.

Registration (in ``plugin`` mode) takes the AWS requests out of the spec, so nothing in the pod would say
they existed if the image lacked the plugin: user code would run and fail with a bare ``KeyError``. So
registration also routes the container's command through this console script (:data:`SCRIPT`)::

    pyflyte-execute --inputs ...            becomes   pyflyte-awssecrets-execute --cluster-mode plugin \\
                                                          pyflyte-execute --inputs ...

(the same before ``pyflyte-fast-execute`` and before the ``pyflyte-execute`` it starts). Then:

* an image without the plugin has no such command: the pod fails at once, "pyflyte-awssecrets-execute:
  executable file not found", before any user code;
* an image with the plugin turned off (``FLYTE_AWS_SECRETS_DISABLE``) or failing to load runs the command,
  which refuses every task with AWS requests with
  :class:`~flytekitplugins_awssecrets.errors.PluginInactiveError` (naming the requests and the setting) as a
  flytekit user error, so Flyte shows it;
* otherwise the flytekit command runs in this same process (no second interpreter start), and the plugin
  knows which cluster mode the task was registered for (which requests the webhook serves).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["SCRIPT", "route_args", "route_template", "registered_mode", "main"]

SCRIPT = "pyflyte-awssecrets-execute"
_FLYTEKIT_COMMANDS = ("pyflyte-execute", "pyflyte-fast-execute", "pyflyte-map-execute")
_MODES = ("plugin", "webhook")

_registered_mode: str | None = None


def registered_mode() -> str | None:
    """The cluster mode the running task was registered for, when the pod started through :data:`SCRIPT`."""
    return _registered_mode


def route_args(args: list[str], mode: str) -> list[str]:
    """``args`` with :data:`SCRIPT` before each flytekit command (idempotent)."""
    out: list[str] = []
    for i, a in enumerate(args):
        if a in _FLYTEKIT_COMMANDS and not (i >= 3 and args[i - 3] == SCRIPT):
            out += [SCRIPT, "--cluster-mode", mode]
        out.append(a)
    return out


def route_template(template: Any, mode: str) -> dict[str, Any]:
    """The changed ``container`` of a task template whose pod runs flytekit, as constructor arguments
    (empty when the container does not start a flytekit command, e.g. a pod template's own command)."""
    container = getattr(template, "container", None)
    if container is None:
        return {}
    changed: dict[str, Any] = {}
    for field in ("command", "args"):
        value = list(getattr(container, field, None) or [])
        routed = route_args(value, mode)
        if routed != value:
            changed[field] = routed
    if not changed:
        return {}
    from flytekitplugins_awssecrets.flytekit.serialize import _rebuilt

    return {"container": _rebuilt(container, **changed)}


def _refuse(why: str, fix: str) -> None:
    """Make every task with AWS requests fail before user code (the plugin's own hooks are not there)."""
    from flytekit.core.base_task import PythonTask
    from flytekit.core.shim_task import ExecutableTemplateShimTask

    from flytekitplugins_awssecrets.errors import PluginInactiveError
    from flytekitplugins_awssecrets.flytekit.hooks import task_requests

    def wrap(original: Any) -> Any:
        def dispatch_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
            from flytekitplugins_awssecrets.flytekit.serialize import plan_requests

            # What the cluster webhook serves (registered in webhook mode) reaches the pod without us.
            pod = [
                d
                for d in plan_requests(task_requests(self), _registered_mode or "plugin")
                if d.served_by == "pod"
            ]
            if not pod:
                return original(self, *args, **kwargs)
            refs = [str(d.ref) for d in pod]
            err = PluginInactiveError(getattr(self, "name", "?"), refs, why, fix)
            from flytekit.exceptions.user import FlyteUserRuntimeException

            raise FlyteUserRuntimeException(err) from None

        return dispatch_execute

    for owner in (PythonTask, ExecutableTemplateShimTask):
        owner.dispatch_execute = wrap(owner.dispatch_execute)  # type: ignore[method-assign]


def _run(command: str, args: list[str]) -> int:
    """Run a flytekit console script in this process (it is the same Python), else exec it."""
    from importlib.metadata import PackageNotFoundError, distribution, entry_points

    try:  # flytekit's commands: its own entry points are read first (scanning every package's costs ~15 ms)
        found = list(distribution("flytekit").entry_points.select(group="console_scripts", name=command))
    except PackageNotFoundError:  # pragma: no cover - the pod runs flytekit
        found = []
    for ep in found or entry_points(group="console_scripts", name=command):
        fn = ep.load()
        sys.argv = [command, *args]
        main = getattr(fn, "main", None)
        if callable(main):  # a click command
            main(args=args, prog_name=command)
            return 0
        result = fn()
        return int(result or 0)
    os.execvp(command, [command, *args])  # noqa: S606 - the registered command itself
    return 127  # pragma: no cover - execvp does not return


def main(argv: list[str] | None = None) -> int:
    global _registered_mode
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "--cluster-mode":
        if args[1] in _MODES:
            _registered_mode = args[1]
        args = args[2:]
    if not args:
        print(f"usage: {SCRIPT} [--cluster-mode plugin|webhook] <pyflyte-execute ...>", file=sys.stderr)
        return 2
    import flytekit  # noqa: F401 - loads the plugin's hooks through flytekit's plugin entry points

    from flytekitplugins_awssecrets.flytekit import entrypoint as entrypoints
    from flytekitplugins_awssecrets.links import doc_link

    core = entrypoints.state.get("core", "not loaded by flytekit")
    if core == "disabled":
        _refuse(
            f"the plugin is turned off in this pod ({entrypoints.DISABLE_ENV}="
            f"{os.environ.get(entrypoints.DISABLE_ENV, '')!r})",
            f"unset {entrypoints.DISABLE_ENV} in the image or the task's environment, or register the task "
            "without AWS requests",
        )
    elif core != "loaded":
        _refuse(
            f"the plugin could not load here ({core})",
            "install a flytekitplugins-awssecrets that supports this image's flytekit (see "
            + doc_link("cluster", "a-pod-whose-image-lacks-the-plugin-fails-before-user-code")
            + ")",
        )
    return _run(args[0], args[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
