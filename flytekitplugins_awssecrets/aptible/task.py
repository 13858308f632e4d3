"""The user-facing task type: a request for an Aptible role, granted for the life of the task.

The task runs no user code and no pod: its template carries the strategy (``custom``), and the
``aptible_access`` connector does the work (see :mod:`flytekitplugins_awssecrets.aptible.connector`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface
from flytekit.extend.backend.base_connector import AsyncConnectorExecutorMixin

from flytekitplugins_awssecrets.aptible.connector import TASK_TYPE, register
from flytekitplugins_awssecrets.aptible.models import (
    AccessGrant,
    AptibleAccessStrategy,
    AptibleTaskConfig,
    IdentitySpec,
)

__all__ = ["AptibleAccessTask"]


class AptibleAccessTask(AsyncConnectorExecutorMixin, PythonTask):  # type: ignore[misc]
    """Grant one of a strategy's Aptible roles to a person for a while (Sym's ``sym_flow``).

    Inputs: ``email: str`` (the requester), ``target: str`` (a target's ``name``), ``duration: timedelta``
    (at most the strategy's ``max_duration``), ``reason: str``. Output: an
    :class:`~flytekitplugins_awssecrets.aptible.AccessGrant`, once the access has ended.

    The membership is added when the task starts, held while it runs, and removed when ``duration`` has
    passed or the execution is aborted. A user who already holds the role keeps it: nothing is added or
    removed (``pre_existing=True``).

    ``identity`` maps requesters to Aptible users when emails differ (Sym's ``get_identity``): a mapping
    ``{email: aptible_user_id_or_email}``, or a module-level function ``(email) -> str | None`` that the
    connector imports (so it must be installed in the connector's image too).

    Example::

        aptible_access = AptibleAccessTask(name="aptible_access", strategy=strategy)

        @workflow
        def request(email: str, target: str, duration: timedelta, reason: str) -> AccessGrant:
            summary = describe(email=email, target=target, duration=duration, reason=reason)
            approved = approve(summary, "approve-access", timeout=timedelta(hours=1))
            grant = aptible_access(email=email, target=target, duration=duration, reason=reason)
            approved >> grant
            return grant
    """

    _TASK_TYPE = TASK_TYPE

    def __init__(
        self,
        name: str,
        strategy: AptibleAccessStrategy,
        *,
        identity: Mapping[str, str] | Callable[[str], str | None] | str | None = None,
        **kwargs: Any,
    ) -> None:
        self._config = AptibleTaskConfig(strategy=strategy, identity=IdentitySpec.of(identity))
        interface = Interface(
            inputs={"email": str, "target": str, "duration": timedelta, "reason": str},
            outputs={"o0": AccessGrant},
        )
        super().__init__(task_type=TASK_TYPE, name=name, task_config=None, interface=interface, **kwargs)
        # The entry point normally registered the connector already; this covers a disabled entry point.
        register()

    @property
    def strategy(self) -> AptibleAccessStrategy:
        return self._config.strategy

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        return self._config.model_dump(mode="json")
