"""The user-facing task type: a request for an Aptible role, granted for the life of the task.

The task runs no user code and no pod. Its template carries only the *name* of a strategy that the
connector's operator declared (``custom = {"version": 2, "strategy": "<name>"}``); the inputs are the
target, the email, the duration and the reason. The ``aptible_access`` connector does the work (see
:mod:`flytekitplugins_awssecrets.aptible.connector`) with what the operator file says.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface
from flytekit.extend.backend.base_connector import AsyncConnectorExecutorMixin

from flytekitplugins_awssecrets.aptible.connector import TASK_TYPE, register
from flytekitplugins_awssecrets.aptible.errors import AptibleConfigError, AptibleError
from flytekitplugins_awssecrets.aptible.models import AccessGrant
from flytekitplugins_awssecrets.links import doc_link

__all__ = ["AptibleAccessTask"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class AptibleAccessTask(AsyncConnectorExecutorMixin, PythonTask):  # type: ignore[misc]
    """Ask for one of a strategy's Aptible roles for a while (Sym's ``sym_flow``).

    ``strategy`` is the *name* of a strategy in the connector's operator file: which roles it offers, for how
    long at most, which bot grants them and who must approve are the operator's, not the workflow's.
    Inputs: ``email: str``, ``target: str`` (a target's name), ``duration: timedelta``, ``reason: str``.
    Output: an :class:`~flytekitplugins_awssecrets.aptible.AccessGrant`, once the access has ended.

    The connector publishes the request for approvers, grants the membership once a valid approval is there,
    holds it for ``duration`` and removes it (or at once when the execution is aborted). A user who already
    holds the role keeps it: nothing is added or removed (``pre_existing=True``).

    Example::

        aptible_access = AptibleAccessTask(name="aptible_access", strategy="main-aptible-strategy")

        @workflow
        def request(email: str, target: str, duration: timedelta, reason: str) -> AccessGrant:
            return aptible_access(email=email, target=target, duration=duration, reason=reason)
    """

    _TASK_TYPE = TASK_TYPE

    def __init__(self, name: str, strategy: str, **kwargs: Any) -> None:
        if not isinstance(strategy, str):
            raise AptibleConfigError(
                "AptibleAccessTask(strategy=...)",
                f"takes a strategy *name*, not {type(strategy).__name__}",
                "strategies, targets and bot credentials live in the connector's operator file "
                f"({doc_link('aptible', 'the-operator-file')}); pass strategy='main-aptible-strategy'",
            )
        if not _NAME.match(strategy):
            raise AptibleConfigError(
                "AptibleAccessTask(strategy=...)", f"{strategy!r} is not a strategy name"
            )
        self._strategy_name = strategy
        interface = Interface(
            inputs={"email": str, "target": str, "duration": timedelta, "reason": str},
            outputs={"o0": AccessGrant},
        )
        super().__init__(task_type=TASK_TYPE, name=name, task_config=None, interface=interface, **kwargs)
        # The entry point normally registered the connector already; this covers a disabled entry point.
        register()

    @property
    def strategy_name(self) -> str:
        """The operator file's strategy this task asks for."""
        return self._strategy_name

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        return {"version": 2, "strategy": self._strategy_name}

    def execute(self, **kwargs: Any) -> Any:
        try:
            return super().execute(**kwargs)
        except AptibleError as e:
            # A local run: the typed error alone (what is wrong and how to fix it), not the event loop's frames.
            raise e.with_traceback(None) from None
