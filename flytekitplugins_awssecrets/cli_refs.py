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
from dataclasses import dataclass
from typing import Any

import click

from flytekitplugins_awssecrets.cli_output import format_option
from flytekitplugins_awssecrets.flytekit.walk import Unresolvable, collect_requests

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
            resolve_requests(ours)
        except SecretResolutionError as e:
            for err in e.errors:
                if isinstance(err, EndpointUnreachableError):
                    dead.setdefault(err.endpoint, err)
        except AwsSecretsError:
            pass
    results: list[CheckResult] = []
    for task, s in requests:
        mount = str(getattr(getattr(s, "mount_requirement", None), "name", "ANY"))
        if isinstance(s, Unresolvable):
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
            resolve_requests([s], task)  # the value is dropped at once
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
    refuse (see :func:`~flytekitplugins_awssecrets.flytekit.runtime.mount_problems`) fails with the session's error."""
    from flytekitplugins_awssecrets.errors import AwsSecretsError
    from flytekitplugins_awssecrets.flytekit.runtime import mount_problems
    from flytekitplugins_awssecrets.refs import is_aws_group
    from flytekitplugins_awssecrets.resolver import resolve_requests

    by_task: dict[str, list[int]] = {}
    for i, (task, s) in enumerate(requests):
        if results[i].ok and not isinstance(s, Unresolvable) and is_aws_group(s.group):
            by_task.setdefault(task, []).append(i)
    out = list(results)
    for task, idx in by_task.items():
        try:
            # Served by the resolver's cache: the round above read these values.
            resolved = resolve_requests([requests[i][1] for i in idx], task)
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
