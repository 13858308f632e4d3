"""``flyte-awssecrets-a0``: the Flyte 2 pod's command for a task registered with AWS requests.

Registration (:mod:`.cluster`) routes such a task's container through this script::

    a0 --inputs ...     becomes     flyte-awssecrets-a0 --cluster-mode plugin a0 --inputs ...

Then, in the pod:

* an image without the plugin has no such command: the pod fails at once, before any user code (the
  registration took the requests out of the spec, so nothing else would say they existed);
* an image where the adapter cannot be active (``FLYTE_AWS_SECRETS_DISABLE``, a flyte version it does not
  know) stops here with :class:`~flytekitplugins_awssecrets.errors.PluginInactiveError`, before the task
  runner starts;
* otherwise flyte's ``a0`` runs in this same process (``sys.argv[0]`` named ``a0``, so the pod is a pod for
  :mod:`~flytekitplugins_awssecrets.setting_sources`), and the adapter knows the mode the task was registered
  for (:func:`registered_mode`): which requests the cluster's AWS webhook mounted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flytekitplugins_awssecrets.flyte2.cluster import SCRIPT

__all__ = ["main", "registered_mode"]

_MODES = ("plugin", "webhook")
_registered_mode: str | None = None


def registered_mode() -> str | None:
    """The cluster mode the running task was registered for (None unless the pod started through this script)."""
    return _registered_mode


def main(argv: list[str] | None = None) -> None:
    """Run ``a0`` with the registered cluster mode known, or refuse before it starts."""
    global _registered_mode
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[0] != "--cluster-mode" or args[1] not in _MODES or args[2] != "a0":
        sys.exit(f"{SCRIPT}: usage: {SCRIPT} --cluster-mode plugin|webhook a0 <a0 arguments>")
    _registered_mode = args[1]
    from flytekitplugins_awssecrets.flyte2.entrypoint import disabled, load, state
    from flytekitplugins_awssecrets.flyte2.hooks import installed

    load()
    if disabled() or not installed():
        from flytekitplugins_awssecrets.errors import PluginInactiveError

        why = (
            "the plugin is turned off in this pod (FLYTE_AWS_SECRETS_DISABLE)"
            if disabled()
            else f"its Flyte 2 adapter is not active in this pod ({state.get('adapter', 'not loaded')})"
        )
        err = PluginInactiveError(
            " ".join(args[3:])[-200:],
            ["the requests recorded in its template's awssecrets.requests"],
            why,
            "use an image whose plugin supports its flyte version, and do not set FLYTE_AWS_SECRETS_DISABLE "
            "for tasks with AWS requests",
        )
        sys.exit(f"{SCRIPT}: {err}")
    sys.argv = [str(Path(sys.argv[0]).with_name("a0")), *args[3:]]
    from flyte._bin.runtime import main as a0

    a0()
