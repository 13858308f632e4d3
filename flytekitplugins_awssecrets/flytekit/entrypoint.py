"""What flytekit's ``flytekit.plugins`` entry points load: a loader that can never break ``import flytekit``.

flytekit imports every ``flytekit.plugins`` entry point inside ``import flytekit`` without catching errors, so
an exception here would kill every ``pyflyte`` command and every pod. This module therefore imports the
real parts inside ``try``: any failure (a flytekit version whose internals moved, a broken install) becomes
one :class:`PluginDisabledWarning` and a disabled plugin, never a dead ``import flytekit``.

* ``FLYTE_AWS_SECRETS_DISABLE=1`` (or ``true``/``yes``) disables both parts before anything is imported.
* The Aptible connector needs ``flytekit.extend.backend.base_connector`` (flytekit 1.16+); on a flytekit
  without it the connector is not registered, with a debug log line, and secret resolution still works.

Both entry points (``awssecrets`` and ``awssecrets-aptible``) name this module; Python imports it once, so
the hooks are installed once whichever entry point flytekit loads first.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import warnings

__all__ = ["PluginDisabledWarning", "disabled", "state"]

_log = logging.getLogger("flytekitplugins_awssecrets")

DISABLE_ENV = "FLYTE_AWS_SECRETS_DISABLE"


class PluginDisabledWarning(RuntimeWarning):
    """The plugin could not load and is disabled; flytekit itself works, AWS requests are left to flytekit."""


#: What happened to each part: "loaded", "disabled" (by the env var), "unavailable" or "failed: <error>".
state: dict[str, str] = {}


def disabled() -> bool:
    """True when ``FLYTE_AWS_SECRETS_DISABLE`` turns the plugin off."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _load(part: str, module: str, function: str) -> None:
    try:
        getattr(importlib.import_module(module), function)()
        state[part] = "loaded"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - the point: nothing may escape into `import flytekit`
        state[part] = f"failed: {type(e).__name__}: {e}"
        warnings.warn(
            f"flytekitplugins-awssecrets: the {part} part could not be loaded and is disabled "
            f"({type(e).__name__}: {e}); flytekit works without it. Set {DISABLE_ENV}=1 to silence this.",
            PluginDisabledWarning,
            stacklevel=2,
        )


def _has_connector_base() -> bool:
    try:
        return importlib.util.find_spec("flytekit.extend.backend.base_connector") is not None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - e.g. flytekit.extend missing altogether
        return False


def _main() -> None:
    if disabled():
        state.update(core="disabled", aptible="disabled")
        return
    _load("core", "flytekitplugins_awssecrets.flytekit.hooks", "install")
    if _has_connector_base():
        _load("aptible", "flytekitplugins_awssecrets.aptible.connector", "register")
    else:
        state["aptible"] = "unavailable"
        _log.debug(
            "flytekit has no flytekit.extend.backend.base_connector: the aptible_access connector is not registered"
        )


_main()
