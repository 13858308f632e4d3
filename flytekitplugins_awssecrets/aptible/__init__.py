"""Just-in-time Aptible role escalation as a Flyte task type (Sym's Aptible access strategy).

Public API (names are the contract):

* :class:`AptibleAccessTask` -- the task: ``(email, target, duration, reason) -> AccessGrant``; it names a
  strategy of the connector's operator file (:mod:`~flytekitplugins_awssecrets.aptible.operator`).
* :class:`AccessGrant` -- what was granted, when, and when it was taken back.

Example::

    from flytekitplugins_awssecrets.aptible import AccessGrant, AptibleAccessTask

    aptible_access = AptibleAccessTask(name="aptible_access", strategy="main-aptible-strategy")

Integrations, targets, strategies, bot credentials and the approval policy are the operator's: see
``docs/aptible.md``. Names are loaded on first use, so importing this package costs almost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flytekitplugins_awssecrets.aptible.models import AccessGrant
    from flytekitplugins_awssecrets.aptible.task import AptibleAccessTask

__all__ = ["AptibleAccessTask", "AccessGrant"]

_WHERE = {"AccessGrant": "models", "AptibleAccessTask": "task"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
