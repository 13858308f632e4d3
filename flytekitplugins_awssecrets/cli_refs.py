"""``pyflyte-awssecrets split`` and ``check``: references, and whether a workflow's secrets resolve.

``check`` loads a workflow module the way ``pyflyte run`` does (the file's package root goes on
``sys.path`` and the module is imported by its dotted name, so its own imports work), collects every task's
secret requests -- walking a workflow's nodes, sub-workflows, launch plans, branches and map tasks, or every
task in the module when no workflow is named -- and resolves each with the current credentials and settings,
through the same resolver tasks use, then asks the mount session a task would get what it would refuse
(two requests on one env var or file, FILE secrets on a disk directory, a binary value for an env var): the
same checks, by the same functions, that ``pyflyte run`` makes before user code. Values are fetched to prove
they are readable and then dropped; they are never printed. Exit codes: 0 every request resolves, 1 some do
not, 2 bad usage (no such file/workflow, invalid settings), 3 some could not be checked because AWS or the
network failed (unreachable endpoint, throttling, 5xx: trying again may succeed).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from flytekitplugins_awssecrets.cli_output import format_option

__all__ = ["split", "check", "load_module", "collect_requests", "check_requests", "CheckResult"]


_FORMAT = format_option("text for people, json for scripts (data on stdout, messages on stderr).")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("arn")
@_FORMAT
def split(arn: str, fmt: str) -> None:
    """Print the flytekit group and key of a secret or parameter ARN (or an alias), and a Secret(...) line.

    ARN may carry ECS-style trailing fields: <arn>:<json-key>:<version-stage>:<version-id>. An alias
    (a name the settings map to an ARN, e.g. TestingSecret) gives the alias group; the ARN it stands for is
    shown when the current settings define it.
    """
    from flytekitplugins_awssecrets.cli_output import print_json
    from flytekitplugins_awssecrets.errors import InvalidReferenceError, SettingsError
    from flytekitplugins_awssecrets.refs import parse_reference, split_arn

    target: str | None = None
    is_alias = not arn.strip().startswith("arn:")
    try:
        if not is_alias:
            group, key = split_arn(arn)
        else:
            ref = parse_reference(arn.strip())
            group, key = ref.group, ref.key
            from flytekitplugins_awssecrets.settings import get_settings

            try:
                aliases = get_settings().aliases
            except SettingsError as e:
                click.echo(f"error: {e}", err=True)
                sys.exit(2)
            target = aliases.get(ref.alias or "")
            if target is None:
                known = ", ".join(sorted(aliases)) or "none are defined"
                click.echo(
                    f"error: {arn.strip()!r} is not an ARN, and not an alias the settings define (known "
                    f"aliases: {known}); pass a full ARN, or define the alias under 'aliases' in the "
                    "settings file or FLYTE_AWS_SECRETS_ALIASES",
                    err=True,
                )
                sys.exit(2)
    except InvalidReferenceError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    line = f"Secret(group={group!r}, key={key!r})"
    if fmt == "json":
        data: dict[str, Any] = {"group": group, "key": key, "secret": line}
        if is_alias:
            data["alias_target"] = target
        print_json(data)
        return
    click.echo(f"group: {group}")
    click.echo(f"key:   {key}")
    click.echo(line)
    if is_alias:
        click.echo(f"alias: resolved when the task runs; the current settings map it to {target}", err=True)


# -- loading and walking -------------------------------------------------------------------------------------


def load_module(path: str) -> Any:
    """Import a Python file as ``pyflyte run`` does: by dotted name from the top of its package."""
    path = os.path.abspath(path)
    if not os.path.isfile(path) or not path.endswith(".py"):
        raise click.UsageError(f"{path} is not a Python file")
    directory, filename = os.path.split(path)
    parts = [filename[:-3]]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        parts.insert(0, package)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return importlib.import_module(".".join(parts))


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
class _Unresolvable:
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
        return [(task.name, _Unresolvable(f"Aptible strategy {task.strategy_name!r}", str(e)))]
    return [(task.name, Secret(group=r.group, key=r.key, group_version=r.group_version)) for r in refs]


# -- checking -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One request's outcome. ``detail`` is the typed error's message (names, never values).

    Example::

        CheckResult(task="wf.train", request="arn:...:secret:prod/db-XyZ123:password", ok=True, detail="")
    """

    task: str
    request: str
    mount: str
    ok: bool | None  # None: not an AWS request, left to flytekit
    detail: str = ""
    #: The failure was AWS's or the network's (unreachable, throttled, 5xx): trying again may succeed.
    transient: bool = False


def _request_text(s: Any) -> str:
    return f"{s.group or ''}{s.key or ''}" + (f" (version {s.group_version})" if s.group_version else "")


def check_requests(requests: list[tuple[str, Any]]) -> list[CheckResult]:
    """Resolve each request with the task resolver (no values kept); one result per request.

    Raises :class:`~flytekitplugins_awssecrets.errors.SettingsError` once, before any request, when the
    settings are invalid (every request would fail the same way). An endpoint that cannot be reached is
    tried once for all the requests that go to it, not once per request.
    """
    from flytekitplugins_awssecrets.errors import (
        AwsSecretsError,
        EndpointUnreachableError,
        SecretResolutionError,
    )
    from flytekitplugins_awssecrets.refs import is_aws_group
    from flytekitplugins_awssecrets.resolver import get_resolver, resolve_requests
    from flytekitplugins_awssecrets.settings import get_settings

    get_settings()  # a SettingsError here is reported once by the caller
    ours = [s for _, s in requests if is_aws_group(s.group)]
    dead: dict[str, EndpointUnreachableError] = {}
    if ours:
        # One batched round first: the resolver's cache then answers the per-request calls below.
        try:
            resolve_requests(ours, check_present=False)
        except SecretResolutionError as e:
            for err in e.errors:
                if isinstance(err, EndpointUnreachableError):
                    dead.setdefault(err.endpoint, err)
        except AwsSecretsError:
            pass
    results: list[CheckResult] = []
    for task, s in requests:
        mount = str(getattr(getattr(s, "mount_requirement", None), "name", "ANY"))
        if isinstance(s, _Unresolvable):
            results.append(CheckResult(task, s.group, mount, False, s.detail))
            continue
        if not is_aws_group(s.group):
            results.append(
                CheckResult(task, _request_text(s), mount, None, "not an AWS reference; flytekit's")
            )
            continue
        endpoint = _endpoint_of(get_resolver(), s) if dead else None
        if endpoint is not None and endpoint in dead:
            err = dead[endpoint]
            results.append(
                CheckResult(task, _request_text(s), mount, False, f"{err.detail} ({err.hint})", True)
            )
            continue
        try:
            resolve_requests([s], task, check_present=False)  # the value is dropped at once
        except SecretResolutionError as e:
            for err in e.errors:
                if isinstance(err, EndpointUnreachableError):
                    dead.setdefault(err.endpoint, err)
            detail = "; ".join(str(err) for err in e.errors) or str(e)
            transient = any(err.retryable for err in e.errors)
            results.append(CheckResult(task, _request_text(s), mount, False, detail, transient))
            continue
        except AwsSecretsError as e:
            results.append(CheckResult(task, _request_text(s), mount, False, str(e), e.retryable))
            continue
        results.append(CheckResult(task, _request_text(s), mount, True))
    return _with_mount_problems(requests, results)


def _with_mount_problems(requests: list[tuple[str, Any]], results: list[CheckResult]) -> list[CheckResult]:
    """Each task's resolved requests as its mount session would take them: a request the session would
    refuse (see :func:`~flytekitplugins_awssecrets.runtime.mount_problems`) fails with the session's error."""
    from flytekitplugins_awssecrets.errors import AwsSecretsError
    from flytekitplugins_awssecrets.refs import is_aws_group
    from flytekitplugins_awssecrets.resolver import resolve_requests
    from flytekitplugins_awssecrets.runtime import mount_problems

    by_task: dict[str, list[int]] = {}
    for i, (task, s) in enumerate(requests):
        if results[i].ok and not isinstance(s, _Unresolvable) and is_aws_group(s.group):
            by_task.setdefault(task, []).append(i)
    out = list(results)
    for task, idx in by_task.items():
        try:
            # Served by the resolver's cache: the round above read these values.
            resolved = resolve_requests([requests[i][1] for i in idx], task, check_present=False)
        except AwsSecretsError:
            continue  # reported per request above
        index = {(s.group, s.key, s.group_version): i for i in idx for s in [requests[i][1]]}
        where = {str(r.ref): index.get((r.group, r.key, r.group_version)) for r in resolved}
        for err in mount_problems(resolved):
            at = where.get(err.reference)
            if at is not None:
                out[at] = dataclasses.replace(out[at], ok=False, detail=str(err))
    return out


def _endpoint_of(resolver: Any, s: Any) -> str | None:
    """The endpoint (scheme://host:port) a request's client talks to, or None if it cannot be told."""
    from flytekitplugins_awssecrets.credentials import endpoint_origin
    from flytekitplugins_awssecrets.refs import reference_from_request

    try:
        ref = reference_from_request(s.group, s.key, s.group_version)
        if ref is None:
            return None
        ref = resolver.expand(ref)
        client = resolver.factory.client(ref.service or "", ref.region, ref.account)
        return endpoint_origin(str(client.meta.endpoint_url))
    except Exception:  # noqa: BLE001 - the request's own resolution reports what is wrong with it
        return None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.argument("workflow", required=False)
@_FORMAT
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Also say where credentials, region, endpoints and settings came from.",
)
def check(file: str, workflow: str | None, fmt: str, verbose: bool) -> None:
    """Check that every secret request in FILE (or in WORKFLOW only) resolves with the current credentials.

    Checks what `pyflyte run` checks before user code: that each reference is valid (region included),
    that each secret or parameter exists and is readable, that a requested JSON key is present, that
    required tags (FLYTE_AWS_SECRETS_REQUIRED_TAGS) are there, and that each task's requests can be
    mounted (no two on one env var or file, FILE secrets on a memory filesystem). Never prints a value.

    Exit codes: 0 all resolve, 1 any request fails, 2 bad usage or invalid settings, 3 some request could
    not be checked because AWS or the network failed (unreachable endpoint, throttling, 5xx).
    """
    from flytekitplugins_awssecrets.cli_output import print_json
    from flytekitplugins_awssecrets.errors import SettingsError

    try:
        module = load_module(file)
    except click.UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module failed to import: say so, exit 2
        click.echo(f"error: could not import {file}: {type(e).__name__}: {e}", err=True)
        sys.exit(2)
    requests = collect_requests(module, workflow)
    try:
        if verbose:
            from flytekitplugins_awssecrets.provenance import describe

            for line in describe(requests):
                click.echo(line, err=True)
        if not requests:
            if fmt == "json":
                print_json([])
            click.echo(f"no secret requests found in {workflow or file}", err=fmt == "json")
            return
        results = check_requests(requests)
    except SettingsError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    failed = [r for r in results if r.ok is False]
    if fmt == "json":
        print_json([dataclasses.asdict(r) for r in results])
        click.echo(_summary(results), err=True)
    else:
        _print_table(results, workflow or os.path.basename(file))
    if any(r.transient for r in failed):
        sys.exit(3)
    if failed:
        sys.exit(1)


def _summary(results: list[CheckResult]) -> str:
    failed = [r for r in results if r.ok is False]
    ok = [r for r in results if r.ok]
    return f"{len(ok)} ok, {len(failed)} failed, {len(results) - len(ok) - len(failed)} skipped"


def _print_table(results: list[CheckResult], title: str) -> None:
    from flytekitplugins_awssecrets.cli_output import Cell, print_rows

    rows: list[list[Cell]] = []
    for r in results:
        status = ("ok", "green") if r.ok else (("skipped", "yellow") if r.ok is None else ("FAILED", "red"))
        rows.append([r.task, r.request, r.mount, status, r.detail])
    columns = ["task", "request", "mount", "result", "detail"]
    print_rows(f"Secret requests in {title}", columns, rows, whole=[1])
    click.echo(_summary(results))
