"""What flyte's ``flyte.plugins.types`` entry point loads: a loader that can never break flyte.

flyte loads that group in ``flyte.init()``, ``init_from_config`` (``flyte run``), ``init_in_cluster`` (``a0``
in a pod) and at the first type-engine lookup, and calls what it loads. :func:`load` installs the task
runner hook (:mod:`.hooks`) unless ``FLYTE_AWS_SECRETS_DISABLE`` is set; any failure is one warning and an
adapter that stays off. It imports no boto3 and does no I/O.
"""

from __future__ import annotations

import os
import warnings

__all__ = ["disabled", "load", "state"]

#: What happened to the adapter: "loaded", "disabled", "unavailable" (unknown flyte) or "failed: <error>".
state: dict[str, str] = {}


def disabled() -> bool:
    """True when ``FLYTE_AWS_SECRETS_DISABLE`` turns the plugin off (read here, not from the flytekit loader,
    whose import installs the flytekit hooks)."""
    return os.environ.get("FLYTE_AWS_SECRETS_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


def load() -> None:
    """Install the Flyte 2 hooks (idempotent, never raises)."""
    if disabled():
        state["adapter"] = "disabled"
        return
    try:
        from flytekitplugins_awssecrets.flyte2.hooks import install

        state["adapter"] = "loaded" if install() else "unavailable"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - nothing may escape into flyte.init()
        state["adapter"] = f"failed: {type(e).__name__}: {e}"
        warnings.warn(
            f"flytekitplugins-awssecrets: the Flyte 2 adapter could not be loaded and is off "
            f"({type(e).__name__}: {e}); flyte works without it.",
            RuntimeWarning,
            stacklevel=2,
        )
