"""The Flyte connector for ``aptible_access`` tasks: create = escalate, get = hold then de-escalate, delete = abort.

Importing this module registers the connector with flytekit's ``ConnectorRegistry``, so a
``pyflyte serve connector`` whose image has the plugin installed serves it (the plugin's
``flytekit.plugins`` entry point imports this module), and ``pyflyte run`` runs it in-process through
flytekit's ``AsyncConnectorExecutorMixin``.

This module is imported by *every* ``import flytekit``, so it imports only what flytekit has already
imported (the connector base classes and the protobuf enums); httpx, pydantic models, boto3 and the
lifecycle logic are imported on the first ``create``/``get``/``delete``.

The connector is the trust boundary: a task template is user input, so ``create`` reads from it only the
strategy's name and the inputs (target, email, duration, reason) and refuses any other field; everything
else comes from the operator file (:mod:`~flytekitplugins_awssecrets.aptible.operator`). ``create`` checks
and changes nothing at Aptible; ``get`` waits for a valid approval, grants once, holds, then removes;
``delete`` removes. Propeller keeps the :class:`AptibleGrantMeta` between calls: names, ids and times. If
Aptible or AWS cannot be reached, ``get`` answers RUNNING with the reason and tries again on the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit.extend.backend.base_connector import (
    AsyncConnectorBase,
    ConnectorRegistry,
    Resource,
    ResourceMeta,
)

__all__ = ["TASK_TYPE", "AptibleGrantMeta", "AptibleAccessConnector", "register"]

#: The task type of :class:`~flytekitplugins_awssecrets.aptible.AptibleAccessTask`, and the connector's key.
TASK_TYPE = "aptible_access"

_log = logging.getLogger(__name__)


@dataclass
class AptibleGrantMeta(ResourceMeta):  # type: ignore[misc]
    """The request's state between connector calls (see ``lifecycle.GrantState``): names, ids and times only.

    Propeller stores ``meta.encode()`` after ``create`` and hands it back to ``get`` and ``delete``::

        AptibleGrantMeta.decode(meta.encode()) == meta
    """

    request_id: str
    execution_id: str
    strategy: str
    target: str
    email: str
    reason: str
    duration_seconds: int
    organization_id: str
    role_id: str
    user_id: str
    pre_existing: bool
    requested_at: str
    approval_required: bool


def _execution_id(meta: Any) -> str:
    """``project/domain/name/node/retry`` of the task execution, or ``local`` for an in-process run.

    Only flytekit's in-process executor (``pyflyte run``) calls ``create`` without execution metadata; the
    connector service always passes some. A service request whose metadata names no execution is refused:
    passing for a local run would make the connector ask its own terminal to confirm the request.
    """
    from flytekitplugins_awssecrets.aptible.errors import TemplateFieldError

    if meta is None:
        return "local"
    try:
        tid = meta.task_execution_id
        node = tid.node_execution_id
        wf = node.execution_id
        parts = [wf.project, wf.domain, wf.name, node.node_id]
    except AttributeError:
        parts = []
    if len(parts) != 4 or not all(isinstance(p, str) and p and "/" not in p for p in parts):
        raise TemplateFieldError(
            "task_execution_metadata", "names no task execution (project, domain, name and node are required)"
        )
    return "/".join(parts) + f"/{int(getattr(tid, 'retry_attempt', 0) or 0)}"


def _run_on_own_loop(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion on a fresh event loop in a new thread, whatever loop is running here."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as e:  # noqa: BLE001 - handed back to the calling thread
            box["error"] = e

    t = threading.Thread(target=target, name="aptible-connector-delete")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _safe(e: BaseException) -> str:
    """Our errors' messages are built without secrets; anything else is reported by type only."""
    from flytekitplugins_awssecrets.errors import AwsSecretsError

    return str(e) if isinstance(e, AwsSecretsError) else type(e).__name__


async def _outputs(grant: Any) -> Any:
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.literals import LiteralMap

    from flytekitplugins_awssecrets.aptible.models import AccessGrant

    ctx = FlyteContextManager.current_context()
    lt = TypeEngine.to_literal_type(AccessGrant)
    lit = await TypeEngine.async_to_literal(ctx, grant, AccessGrant, lt)
    return LiteralMap(literals={"o0": lit})


class AptibleAccessConnector(AsyncConnectorBase):  # type: ignore[misc]
    """Grants an Aptible role for the life of an ``aptible_access`` task.

    Deploy it with ``pyflyte serve connector`` in an image that has this plugin installed, with AWS
    credentials that may read the bot's secret; see ``docs/aptible.md``. It is registered when this module
    is imported; to look it up as the connector service does::

        ConnectorRegistry.get_connector("aptible_access")  # -> AptibleAccessConnector
    """

    name = "Aptible Access Connector"

    def __init__(self) -> None:
        super().__init__(task_type_name=TASK_TYPE, metadata_type=AptibleGrantMeta)

    async def create(
        self,
        task_template: Any,
        output_prefix: str = "",
        inputs: Any = None,
        task_execution_metadata: Any = None,
        **kwargs: Any,
    ) -> AptibleGrantMeta:
        from flytekitplugins_awssecrets.aptible import lifecycle
        from flytekitplugins_awssecrets.aptible.audit import audit, describe_error
        from flytekitplugins_awssecrets.aptible.errors import DurationTooLongError, TemplateFieldError
        from flytekitplugins_awssecrets.aptible.operator import load_operator
        from flytekitplugins_awssecrets.aptible.request import from_template

        # The template is user input: only the strategy's name and the four inputs are read from it; the
        # rest (hosts, credentials, targets, limits, hooks, approval) comes from the operator file.
        try:
            request = from_template(
                getattr(task_template, "custom", None), inputs, getattr(task_template, "config", None)
            )
            execution_id = _execution_id(task_execution_metadata)
        except (TemplateFieldError, DurationTooLongError) as e:
            # One audit record per refused CreateTask, naming every offending field.
            fields = ",".join(f for f, _ in getattr(e, "problems", [("inputs.duration", "")]))
            audit("failed", step="template", fields=fields, error=describe_error(e))
            raise
        config = load_operator()
        state = await lifecycle.prepare(config, request, execution_id)
        return AptibleGrantMeta(**state.to_dict())

    async def get(self, resource_meta: AptibleGrantMeta, **kwargs: Any) -> Resource:
        from flytekitplugins_awssecrets.aptible import lifecycle
        from flytekitplugins_awssecrets.aptible.operator import load_operator

        state = lifecycle.GrantState(**resource_meta.__dict__)
        try:
            progress = await lifecycle.advance(load_operator(), state)
        except Exception as e:  # noqa: BLE001 - every failure becomes a phase Propeller understands
            if getattr(e, "retryable", False):
                return Resource(phase=TaskExecution.RUNNING, message=f"will retry: {_safe(e)}")
            return Resource(phase=TaskExecution.FAILED, message=_safe(e))
        if progress.grant is None:
            return Resource(phase=TaskExecution.RUNNING, message=progress.message)
        return Resource(
            phase=TaskExecution.SUCCEEDED, message=progress.message, outputs=await _outputs(progress.grant)
        )

    def delete(self, resource_meta: AptibleGrantMeta, **kwargs: Any) -> None:
        # Synchronous on purpose: locally, flytekit calls delete from a SIGINT handler while its own event
        # loop is running, where an ``async def`` delete is never awaited (asyncio.run refuses to nest) and
        # the grant would outlive the interrupted run. The connector service runs a sync delete in a worker
        # thread. Either way the removal runs on a private loop in a thread of its own.
        from flytekitplugins_awssecrets.aptible import lifecycle
        from flytekitplugins_awssecrets.aptible.operator import load_operator

        state = lifecycle.GrantState(**resource_meta.__dict__)
        config = load_operator()
        _run_on_own_loop(lambda: lifecycle.abort(config, state))


def register() -> None:
    """Register the connector once (importing this module does it; calling again is harmless)."""
    try:
        ConnectorRegistry.get_connector(TASK_TYPE)
    except Exception:  # noqa: BLE001 - FlyteConnectorNotFound: not registered yet
        ConnectorRegistry.register(AptibleAccessConnector())


register()
