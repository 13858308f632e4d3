"""What ``aptible approve`` checks before it signs: everything the connector will check about the approval.

The connector refuses an approval that names an approver it cannot map to an email, an approver who is the
grantee under the operator's identity mapping, a key other than the strategy's, a validity over
``max_validity``, or one that arrives after the request's ``wait``. Signing such an approval and saying
"approved" would be a lie; :func:`approver_problems` finds each of those on the approver's machine, from
the operator file and the request record, before anything is signed.

What cannot be checked there: whether the approver's email is an Aptible user of the organization (that
needs the bot's credentials, which approvers do not have). :func:`approver_problems` says so in a note, and
the connector refuses such an approver (when self-approval is forbidden) with one audit record.

Example::

    problems, notes = approver_problems(config, pending, arn, valid_for=timedelta(minutes=15))
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flytekitplugins_awssecrets.aptible.approval import approver_email
from flytekitplugins_awssecrets.aptible.errors import AptibleError
from flytekitplugins_awssecrets.aptible.identity import identity_key
from flytekitplugins_awssecrets.aptible.operator import OperatorConfig
from flytekitplugins_awssecrets.aptible.records import PendingRequest
from flytekitplugins_awssecrets.aptible.request import AccessRequest, request_id

__all__ = ["approver_problems", "when"]


def when(t: datetime, now: datetime | None = None) -> str:
    """A time as people read it: ``2026-12-03 16:40:00 UTC (in 15 min)``."""
    now = now or datetime.now(UTC)
    delta = int((t - now).total_seconds())
    span = abs(delta)
    ago = f"{span // 3600} h {span % 3600 // 60} min" if span >= 3600 else f"{span // 60} min {span % 60} s"
    rel = f"in {ago}" if delta >= 0 else f"{ago} ago"
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({rel})"


def approver_problems(
    config: OperatorConfig,
    pending: PendingRequest,
    approver_arn: str,
    valid_for: timedelta,
    now: datetime | None = None,
) -> tuple[list[str], list[str]]:
    """``(problems, notes)``: each problem is a reason the connector would refuse this approval (sign
    nothing then); notes are what only the connector can check."""
    now = now or datetime.now(UTC)
    try:
        strategy = config.strategy(pending.strategy)
        n = config.strategies.index(strategy)
        config.target_of(strategy, pending.target)
    except AptibleError as e:
        return [str(e)], []
    policy = strategy.approval
    where = f"strategies[{n}].approval"
    problems: list[str] = []
    notes: list[str] = []
    # The record is SSM data: it must be the request the connector published (its id is a hash of it).
    try:
        asked = AccessRequest(
            strategy=pending.strategy,
            target=pending.target,
            email=pending.email,
            duration=timedelta(seconds=pending.duration_seconds),
            reason=pending.reason,
        )
        same = request_id(pending.execution_id, asked) == pending.request_id
    except ValueError:
        same = False
    if not same:
        problems.append(
            "the request record does not hash to its request id (it was changed after it was made)"
        )
    if not policy.required or not policy.kms_key_arn:
        problems.append(f"strategy {strategy.name!r} requires no approval ({where}.required is false)")
        return problems, notes
    if pending.kms_key_arn != policy.kms_key_arn:
        problems.append(
            f"the request names key {pending.kms_key_arn}, the operator file's {where}.kms_key_arn is "
            f"{policy.kms_key_arn}"
        )
    if valid_for <= timedelta(0):
        problems.append("--valid-for must be positive")
    elif valid_for > policy.max_validity:
        problems.append(
            f"--valid-for {int(valid_for.total_seconds())} s is over {where}.max_validity "
            f"({int(policy.max_validity.total_seconds())} s)"
        )
    try:
        requested = datetime.fromisoformat(pending.requested_at)
        deadline = requested + policy.wait
        if deadline <= now:
            problems.append(
                f"the request stopped waiting for approval at {when(deadline, now)} ({where}.wait)"
            )
    except ValueError:
        problems.append("the request record has no valid requested_at")
    who = approver_email(approver_arn, policy.approvers)
    if who is None:
        problems.append(
            f"cannot tell who {approver_arn} is: its last segment is not an email; the operator maps it under "
            f"{where}.approvers"
        )
    elif not policy.allow_self_approval:
        try:
            self_approval = identity_key(who, config.identity) == identity_key(pending.email, config.identity)
        except AptibleError as e:
            problems.append(f"the operator's identity mapping failed: {e}")
            self_approval = False
        if self_approval or who == pending.email.casefold():
            problems.append(
                f"self-approval: {approver_arn} ({who}) is the requester {pending.email} under the "
                "operator's identity mapping"
            )
        notes.append(
            f"the connector also checks that {who} is an Aptible user of the organization other than "
            f"{pending.email}; an approver it cannot find there is refused"
        )
    return problems, notes
