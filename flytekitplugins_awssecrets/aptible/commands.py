"""``pyflyte-awssecrets aptible list`` and ``approve``: the approver's side of an Aptible access request.

Both find the request records in SSM (``--operator-file``, or ``--prefix`` and ``--region`` as the operator
file's ``state`` says). ``approve`` needs the operator file: it shows the request, checks everything the
connector will check about the approver (:mod:`~flytekitplugins_awssecrets.aptible.approver`), asks (default
No, ``--yes`` to skip), and signs with the KMS key the operator file names for the strategy, as the
caller's AWS identity: only principals allowed ``kms:Sign`` on that key can approve.
Exit codes: 0 done, 1 refused or nothing to approve, 2 bad usage, 3 an AWS error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click

from flytekitplugins_awssecrets.cli_output import format_option

__all__ = ["aptible"]


def _operator(operator_file: str | None) -> Any:
    import os

    from flytekitplugins_awssecrets.aptible.errors import OperatorConfigError
    from flytekitplugins_awssecrets.aptible.operator import OPERATOR_FILE_ENV, load_operator

    if not (operator_file or os.environ.get(OPERATOR_FILE_ENV)):
        return None
    try:
        return load_operator(operator_file)
    except OperatorConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


def _store(operator_file: str | None, prefix: str | None, region: str | None) -> Any:
    from flytekitplugins_awssecrets.aptible.approval import StateStoreClient

    if prefix and region:
        return StateStoreClient(prefix.rstrip("/"), region)
    config = _operator(operator_file)
    if config is not None:
        return StateStoreClient(prefix or config.state.ssm_prefix, region or config.state.region)
    raise click.UsageError("give --operator-file, or --prefix and --region (the operator file's state)")


def _show(text: object) -> str:
    """A field of a request record, safe to print (the record is in SSM, and SSM is not the operator)."""
    from flytekitplugins_awssecrets.errors import clean_aws_message

    return clean_aws_message(text)


_where = [
    click.option("--operator-file", type=click.Path(dir_okay=False), help="The connector's operator file."),
    click.option(
        "--prefix", help="The SSM prefix of request records (the operator file's state.ssm_prefix)."
    ),
    click.option("--region", help="The region of the SSM records (state.region)."),
]


F = TypeVar("F", bound=Callable[..., Any])


def _with_where(f: F) -> F:
    for opt in reversed(_where):
        f = opt(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def aptible() -> None:
    """Approve Aptible access requests, and list the ones waiting."""


@aptible.command("list")
@_with_where
@format_option("json: a list of the waiting requests on stdout, one object each (for scripts).")
def list_pending(operator_file: str | None, prefix: str | None, region: str | None, fmt: str) -> None:
    """List the requests waiting for approval."""
    from flytekitplugins_awssecrets.aptible.approval import StateStoreError

    store = _store(operator_file, prefix, region)
    try:
        pending = store.list_pending()  # type: ignore[attr-defined]
    except StateStoreError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(3)
    if fmt == "json":
        from flytekitplugins_awssecrets.cli_output import print_json

        print_json(
            [{k: _show(v) if isinstance(v, str) else v for k, v in p.model_dump().items()} for p in pending]
        )
        return
    if not pending:
        click.echo("no requests waiting for approval")
        return
    for p in pending:
        click.echo(
            _show(
                f"{p.request_id}  {p.email} -> {p.target} ({p.strategy}) for "
                f"{timedelta(seconds=p.duration_seconds)}  reason: {p.reason or '-'}  "
                f"execution: {p.execution_id}  requested: {p.requested_at}"
            )
        )


@aptible.command()
@click.argument("request_id")
@_with_where
@click.option(
    "--valid-for",
    default=900,
    show_default=True,
    help="Seconds the approval stays valid (at most the strategy's approval.max_validity).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def approve(
    request_id: str,
    operator_file: str | None,
    prefix: str | None,
    region: str | None,
    valid_for: int,
    yes: bool,
) -> None:
    """Approve REQUEST_ID as your AWS identity (kms:Sign on the strategy's key).

    Needs the operator file (--operator-file, or FLYTE_AWS_SECRETS_APTIBLE_OPERATOR_FILE): the key is the
    operator file's, never the request record's. Before signing it checks what the connector will check
    about you (who your AWS identity is, that you are not the requester under the operator's identity
    mapping, the key, the validity window, the request's wait) and refuses with the reason.
    """
    from datetime import UTC, datetime

    from flytekitplugins_awssecrets.aptible.approval import StateStoreError, caller_arn, sign_approval
    from flytekitplugins_awssecrets.aptible.approver import approver_problems, when

    config = _operator(operator_file)
    if config is None:
        raise click.UsageError(
            "give --operator-file (or set FLYTE_AWS_SECRETS_APTIBLE_OPERATOR_FILE): approve signs only with "
            "the key the operator file names for the request's strategy"
        )
    store = _store(operator_file, prefix, region)
    try:
        pending = store.get_pending(request_id)  # type: ignore[attr-defined]
        if pending is None:
            click.echo(f"error: no request {_show(request_id)} waiting for approval", err=True)
            sys.exit(1)
        click.echo(
            _show(
                f"{pending.email} asks for {pending.target} ({pending.strategy}) for "
                f"{timedelta(seconds=pending.duration_seconds)}: {pending.reason or '-'} "
                f"(execution {pending.execution_id})"
            )
        )
        known = {s.name: s for s in config.strategies}
        # An unknown strategy is one of approver_problems' refusals below.
        policy = known[pending.strategy].approval if pending.strategy in known else None
        region_of_key = (policy.key_region if policy is not None else "") or config.state.region
        arn = caller_arn(region_of_key)
        now = datetime.now(UTC)
        problems, notes = approver_problems(config, pending, arn, timedelta(seconds=valid_for), now)
        if problems or policy is None or not policy.kms_key_arn:
            for p in problems:
                click.echo(_show(f"refused: {p}"), err=True)
            click.echo("not signed: the connector would refuse this approval", err=True)
            sys.exit(1)
        for n in notes:
            click.echo(_show(f"note: {n}"), err=True)
        if not yes and not click.confirm(f"Approve as {arn}?", default=False):
            click.echo("not approved")
            sys.exit(1)
        expires = now + timedelta(seconds=valid_for)
        record = sign_approval(
            pending,
            approver_arn=arn,
            kms_key_arn=policy.kms_key_arn,
            signing_algorithm=policy.signing_algorithm,
            expires_at=expires,
        )
        store.put_approval(record)  # type: ignore[attr-defined]
    except StateStoreError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(3)
    click.echo(_show(f"approved {request_id} as {arn}, valid until {when(expires)}"))
