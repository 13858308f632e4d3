"""The tasks of a flytekit workflow, launch plan or module, and their secret requests (for ``check`` and
``policy``): a workflow's nodes, sub-workflows, launch plans, branches and map tasks, walked once each."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

__all__ = ["tasks_in_scope", "collect_requests", "Unresolvable"]


def _walk(entity: Any, seen: set[int]) -> Iterator[Any]:
    """Every task reachable from ``entity`` (a workflow, launch plan, branch, array node or task)."""
    from flytekit.core.array_node import ArrayNode
    from flytekit.core.array_node_map_task import ArrayNodeMapTask
    from flytekit.core.base_task import Task
    from flytekit.core.condition import BranchNode
    from flytekit.core.launch_plan import LaunchPlan
    from flytekit.core.workflow import WorkflowBase

    if entity is None or id(entity) in seen:
        return
    seen.add(id(entity))
    if isinstance(entity, WorkflowBase):
        for node in entity.nodes:
            yield from _walk(node.flyte_entity, seen)
    elif isinstance(entity, LaunchPlan):
        yield from _walk(entity.workflow, seen)
    elif isinstance(entity, BranchNode):
        block = entity._ifelse_block  # flytekit keeps the branch's nodes only here
        nodes = [block.case.then_node, *(c.then_node for c in (block.other or [])), block.else_node]
        for node in nodes:
            if node is not None:
                yield from _walk(node.flyte_entity, seen)
    elif isinstance(entity, ArrayNode):
        yield from _walk(entity.target, seen)
    elif isinstance(entity, ArrayNodeMapTask):
        yield from _walk(entity.python_function_task, seen)
    elif isinstance(entity, Task):
        yield entity


def tasks_in_scope(module: Any, workflow: str | None = None) -> list[Any]:
    """The tasks of ``workflow`` (a workflow, launch plan or task of ``module``), or of the whole module."""
    from flytekit.core.base_task import Task
    from flytekit.core.launch_plan import LaunchPlan
    from flytekit.core.workflow import WorkflowBase

    if workflow:
        entity = getattr(module, workflow, None)
        if not isinstance(entity, WorkflowBase | LaunchPlan | Task):
            raise click.UsageError(
                f"{module.__name__} has no workflow, launch plan or task named {workflow!r}"
            )
        tasks = list(_walk(entity, set()))
    else:
        seen: set[int] = set()
        tasks = []
        for value in vars(module).values():
            if isinstance(value, Task | WorkflowBase | LaunchPlan):
                tasks.extend(_walk(value, seen))
    return tasks


def collect_requests(module: Any, workflow: str | None = None) -> list[tuple[str, Any]]:
    """``(task name, flytekit Secret)`` for every secret request of the tasks in scope, in a stable order."""
    out: list[tuple[str, Any]] = []
    done: set[str] = set()
    for t in tasks_in_scope(module, workflow):
        if t.name in done:
            continue
        done.add(t.name)
        ctx = getattr(t, "security_context", None)
        for s in ctx.secrets if ctx is not None and ctx.secrets else []:
            out.append((t.name, s))
        out.extend(_aptible_credentials(t))
    return out


@dataclass(frozen=True)
class Unresolvable:
    """A request that could not even be named (an Aptible task whose operator file or strategy is wrong)."""

    group: str
    detail: str
    key: None = None
    group_version: None = None


def _aptible_credentials(task: Any) -> list[tuple[str, Any]]:
    """An ``aptible_access`` task's bot credential references, as the operator file names them."""
    if getattr(task, "task_type", None) != "aptible_access" or not hasattr(task, "strategy_name"):
        return []
    from flytekit import Secret

    from flytekitplugins_awssecrets.aptible.errors import AptibleError
    from flytekitplugins_awssecrets.aptible.models import SecretReference
    from flytekitplugins_awssecrets.aptible.operator import credential_arns

    try:
        refs = [SecretReference.of(r) for r in credential_arns(task)]
    except AptibleError as e:
        return [(task.name, Unresolvable(f"Aptible strategy {task.strategy_name!r}", str(e)))]
    return [(task.name, Secret(group=r.group, key=r.key, group_version=r.group_version)) for r in refs]
