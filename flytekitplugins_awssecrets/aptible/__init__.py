"""Just-in-time Aptible role escalation as a Flyte task type (Sym's Aptible access strategy).

Public API (names are the contract):

* :class:`AptibleIntegration` -- the organization and its bot user's secrets (``sym_integration``).
* :class:`AptibleRole` -- a role that may be requested (``sym_target``, type ``aptible_role``).
* :class:`AptibleAccessStrategy` -- the integration, its targets and the longest grant (``sym_strategy``).
* :class:`AptibleAccessTask` -- the task: ``(email, target, duration, reason) -> AccessGrant``.
* :class:`AccessGrant` -- what was granted, when, and when it was taken back.

Example::

    from datetime import timedelta
    from flytekitplugins_awssecrets import aws_secret
    from flytekitplugins_awssecrets.aptible import (
        AptibleIntegration, AptibleRole, AptibleAccessStrategy, AptibleAccessTask)

    integration = AptibleIntegration(
        name="main-aptible", organization_id="94a49e57-d046-4d9d-9dbf-f7711e337368",
        username_secret=aws_secret(CREDS, json_key="username"),
        password_secret=aws_secret(CREDS, json_key="password"))
    admin = AptibleRole(name="main-aptible-admin-role", label="Admin Role",
                        role_id="24463EF7-1D6E-402E-A365-69CB6DB80C6E")
    strategy = AptibleAccessStrategy(name="main-aptible-strategy", integration=integration,
                                     targets=[admin], max_duration=timedelta(days=1))
    aptible_access = AptibleAccessTask(name="aptible_access", strategy=strategy)

Names are loaded on first use, so importing this package costs almost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flytekitplugins_awssecrets.aptible.models import (
        AccessGrant,
        AptibleAccessStrategy,
        AptibleIntegration,
        AptibleRole,
    )
    from flytekitplugins_awssecrets.aptible.task import AptibleAccessTask

__all__ = ["AptibleIntegration", "AptibleRole", "AptibleAccessStrategy", "AptibleAccessTask", "AccessGrant"]

_WHERE = {
    "AptibleIntegration": "models",
    "AptibleRole": "models",
    "AptibleAccessStrategy": "models",
    "AccessGrant": "models",
    "AptibleAccessTask": "task",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
