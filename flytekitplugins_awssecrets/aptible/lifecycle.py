"""What escalation and de-escalation mean, apart from Flyte: the connector calls these three functions.

* :func:`prepare` (``CreateTask``) resolves the request against the operator file and checks every
  precondition at Aptible -- target, duration, role and its organization, SSO enforcement, the bot's rights,
  the requester's identity -- and changes nothing at Aptible. A user who already holds the role is noted
  (``pre_existing``: nothing will be added or removed). Otherwise the request is published for approvers
  (or, in a local run of a strategy that needs no approval, confirmed at the terminal, default No).
* :func:`advance` (``GetTask``) waits for a valid approval, grants once (a grant record in SSM, created
  with ``Overwrite=False``, makes that true across replicas and restarts), holds, and removes the membership
  once ``duration`` has passed.
* :func:`abort` (``DeleteTask``) removes the membership at once, or makes sure it is never added.

What is removed is only what this request created, checked at Aptible (:mod:`.revoke`); the membership is
removed before any record is written, and a request's records end with it (:mod:`.records`).
:func:`prepare` is in :mod:`.prepare`, the state and what every step shares in :mod:`.state`. The state between calls is a :class:`GrantState` (ids,
names and times; never a credential, a host or a reference), which Propeller keeps.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from flytekitplugins_awssecrets.aptible.approval import (
    StateStoreClient,
    check_record,
)
from flytekitplugins_awssecrets.aptible.audit import audit, describe_error
from flytekitplugins_awssecrets.aptible.client import AptibleClient
from flytekitplugins_awssecrets.aptible.errors import (
    AmbiguousIdentityError,
    ApprovalRefusedError,
    ApprovalTimeoutError,
    AptibleStateError,
    IdentityNotFoundError,
)
from flytekitplugins_awssecrets.aptible.identity import resolve_identity
from flytekitplugins_awssecrets.aptible.operator import (
    OperatorConfig,
    OperatorStrategy,
)
from flytekitplugins_awssecrets.aptible.prepare import prepare
from flytekitplugins_awssecrets.aptible.request import from_template, request_id
from flytekitplugins_awssecrets.aptible.revoke import not_ours, remove_grant
from flytekitplugins_awssecrets.aptible.state import (
    CLOCK_SKEW,
    GrantState,
    Progress,
    _end,
    _now,
    _refuse_once,
    _store,
    approve_command,
    client_for,
    is_local,
)

__all__ = ["GrantState", "Progress", "prepare", "advance", "abort", "client_for", "is_local"]


def _checked(config: OperatorConfig, state: GrantState) -> OperatorStrategy:
    """The state's strategy, once every field that decides a grant agrees with the operator file.

    ``get`` and ``delete`` receive the state from their caller (Propeller, or anyone who can reach the gRPC
    port), not from this process: a rewritten state could otherwise skip approval (``approval_required``),
    swap the role, the organization or the duration, or point at another request's records. What the user
    chose is re-validated and must hash to the request id that the approval and the records are bound to;
    what the operator decides is derived again from the operator file. The user id is checked against the
    email where Aptible is asked anyway (:func:`_same_user`).
    """
    rid = state.request_id

    def refuse(problem: str) -> AptibleStateError:
        err = AptibleStateError(rid, problem)
        audit("failed", request_id=rid, step="state", error=describe_error(err))
        return err

    try:
        seconds = state.duration_seconds
        if not isinstance(seconds, int) or seconds < 0:
            raise ValueError("duration_seconds")
        # The same checks as a template's fields (a sub-second request keeps 0 whole seconds).
        req = from_template(
            {"version": 2, "strategy": state.strategy},
            {
                "email": state.email,
                "target": state.target,
                "duration": timedelta(seconds=max(seconds, 1)),
                "reason": state.reason,
            },
        ).model_copy(update={"duration": timedelta(seconds=seconds)})
        strategy = config.strategy(req.strategy)
        target = config.target_of(strategy, req.target)
        requested = state.requested
    except Exception as e:  # noqa: BLE001 - any bad field is the same refusal
        raise refuse(f"the state does not describe a valid request ({type(e).__name__})") from None
    if req.duration > strategy.max_duration:
        raise refuse("the duration is over the strategy's maximum")
    if request_id(state.execution_id, req) != rid:
        raise refuse("the request id does not match the request")
    integration = config.integration_of(strategy)
    if state.role_id != target.role_id or state.organization_id != integration.organization_id:
        raise refuse("the role or organization is not the operator file's for this target")
    if state.approval_required != (strategy.approval.required and not state.pre_existing):
        raise refuse("the approval requirement is not the strategy's")
    if requested.tzinfo is None or requested > _now() + CLOCK_SKEW:
        raise refuse("the request time is not a past, timezone-aware time")
    if is_local(state.execution_id) and not strategy.local_runs:
        # A connector never makes a local state: one handed to it over gRPC is forged.
        raise refuse("a local run's state, for a strategy whose operator file allows no local runs")
    return strategy


async def _same_user(client: AptibleClient, config: OperatorConfig, state: GrantState) -> list[Any]:
    """The organization's users, once the state's user id is the one its email designates (else refused)."""
    users = await client.list_org_users(state.organization_id)
    user = resolve_identity(state.email, state.organization_id, users, config.identity)
    if user.id != state.user_id:
        err = AptibleStateError(state.request_id, "the user id is not the one the email designates")
        audit("failed", **state.audit_fields(), step="state", error=describe_error(err))
        raise err
    return list(users)


def _at(record: dict[str, Any], key: str) -> datetime | None:
    v = record.get(key)
    return datetime.fromisoformat(v) if isinstance(v, str) and v else None


async def _approved(
    config: OperatorConfig,
    strategy: OperatorStrategy,
    state: GrantState,
    store: StateStoreClient,
    at: datetime | None = None,
) -> tuple[str, str] | str:
    """``(approver ARN, email)`` of a valid approval, or a message saying why there is none yet."""
    record = await asyncio.to_thread(store.get_approval, state.request_id)
    if record is None:
        return f"waiting for approval: an approver runs '{approve_command(state.request_id)}'"
    policy = strategy.approval
    try:
        if isinstance(record, str):
            raise ValueError(record)
        return await asyncio.to_thread(
            check_record,
            record,
            request_id=state.request_id,
            execution_id=state.execution_id,
            email=state.email,
            strategy=state.strategy,
            target=state.target,
            duration_seconds=state.duration_seconds,
            reason=state.reason,
            kms_key_arn=policy.kms_key_arn or "",
            signing_algorithm=policy.signing_algorithm,
            max_validity=policy.max_validity,
            approvers=policy.approvers,
            now=at,
            allow_self_approval=policy.allow_self_approval,
        )
    except ValueError as problem:
        refused = ApprovalRefusedError(state.request_id, str(problem))
        key = record if isinstance(record, str) else record.signature
        _refuse_once(state, f"{key}:{problem}", refused)
        return f"{refused}; still waiting for a valid approval"


async def _grant(
    config: OperatorConfig,
    strategy: OperatorStrategy,
    state: GrantState,
    store: StateStoreClient,
    approver: tuple[str, str] | None,
    claim: dict[str, Any] | None,
) -> Progress:
    integration = config.integration_of(strategy)
    async with await client_for(integration) as c:
        users = await _same_user(c, config, state)
        if approver is not None and not strategy.approval.allow_self_approval:
            # The approver may not be the grantee under another email: both go through the operator's
            # identity mapping to Aptible users. One who maps to no user could be the grantee unseen.
            problem = ""
            try:
                approver_user = resolve_identity(approver[1], state.organization_id, users, config.identity)
                if approver_user.id == state.user_id:
                    problem = f"self-approval: {approver[0]} is the grantee's Aptible user"
            except (IdentityNotFoundError, AmbiguousIdentityError) as e:
                problem = (
                    f"{approver[0]} ({approver[1]}) maps to no single Aptible user of the organization "
                    f"({type(e).__name__}), so it cannot be told from the grantee"
                )
            if problem:
                refused = ApprovalRefusedError(state.request_id, problem)
                _refuse_once(state, f"{approver[0]}:{problem}", refused)
                return Progress(f"{refused}; still waiting for a valid approval")
        now = _now()
        if claim is None:
            claim = {"state": "granting", "at": now.isoformat()}
            if approver is not None:
                claim.update(approved_by=approver[0], approver_email=approver[1])
            if not await asyncio.to_thread(store.claim_grant, state.request_id, claim):
                return Progress("another connector call is granting; checking again at the next poll")
        membership = await c.create_membership(state.role_id, state.user_id)
        claimed_at = _at(claim, "at") or now
        # Aptible's answer, judged as at removal: a membership older than the request is standing access.
        standing = bool(not_ours(membership, state, await c.bot_user_id()))
        granted_at = claimed_at
        record = {**claim, "state": "granted", "membership_id": membership.id, "standing": standing}
        try:
            await asyncio.to_thread(store.set_grant, state.request_id, record)
        except Exception as e:
            if not getattr(e, "retryable", False) and not standing:
                # The task fails on this and Propeller polls no more: nothing would ever remove the
                # membership. (A retryable failure leaves 'granting', which the next poll finishes.)
                audit("failed", **state.audit_fields(), step="grant-record", error=describe_error(e))
                await c.delete_membership(membership.id)
            raise
        # An abort may have run while the membership was being added and found nothing to remove. It marks
        # the request before it looks, and this looks after the record is written: one of the two sees the
        # other, so the membership is removed either way.
        if await asyncio.to_thread(store.is_aborted, state.request_id):
            removed = not standing and await c.delete_membership(membership.id)
            revoked = {**record, "state": "revoked", "revoked_at": _now().isoformat()}
            await asyncio.to_thread(_end, store, state, revoked)
            audit("aborted", **state.audit_fields(), membership_id=membership.id, removed=removed)
            raise ApprovalRefusedError(state.request_id, "the execution was aborted while granting")
    await asyncio.to_thread(store.delete_pending, state.request_id)
    audit(
        "escalated",
        **state.audit_fields(),
        membership_id=membership.id,
        granted_at=granted_at,
        expires_at=granted_at + state.duration,
        approved_by=claim.get("approved_by"),
        approver_email=claim.get("approver_email"),
        standing=standing,
    )
    return Progress(f"access held until {(granted_at + state.duration).isoformat()}")


async def advance(config: OperatorConfig, state: GrantState) -> Progress:
    """One poll: wait for approval, grant once, hold, then remove. Raises on a refusal that ends the task."""
    strategy = _checked(config, state)
    now = _now()
    if state.pre_existing:
        if now < state.requested + state.duration:
            return Progress(f"standing access, nothing to do until {state.requested + state.duration}")
        audit("expired", **state.audit_fields(), note="standing access kept")
        return Progress("access ended: standing access kept", state.grant("", state.requested, None))
    store = _store(config)
    record = await asyncio.to_thread(store.get_grant, state.request_id)
    if record is None:
        approver: tuple[str, str] | None = None
        if now > state.requested + strategy.approval.wait:
            # Nothing is granted this late (a strategy without approval grants at the first poll): an ended
            # request whose records were swept after state.retention is never granted again.
            if await asyncio.to_thread(store.claim_grant, state.request_id, {"state": "timed-out"}):
                await asyncio.to_thread(_end, store, state, {"state": "timed-out"})
            err = ApprovalTimeoutError(state.request_id, strategy.approval.wait)
            audit("failed", **state.audit_fields(), step="approval", error=describe_error(err))
            raise err
        if state.approval_required:
            found = await _approved(config, strategy, state, store)
            if isinstance(found, str):
                return Progress(found)
            approver = found
        return await _grant(config, strategy, state, store, approver, None)
    kind = record.get("state")

    # The grant record is SSM data: whoever may write under the prefix could have written it. It never
    # widens a grant: its time is bounded by the request's, and a claim is finished only when the approval
    # it was made under still verifies as of the claim's time.
    def plausible(at: datetime | None) -> bool:
        # Not before the request, not in the future, not after the request could still be approved.
        latest = min(now, state.requested + strategy.approval.wait) + CLOCK_SKEW
        return at is not None and state.requested - CLOCK_SKEW <= at <= latest

    if kind == "granting":
        # A crash between the grant record and the membership (or its answer): finish it, adopting the
        # membership if it landed (create_membership looks before it adds).
        at = _at(record, "at")
        if not plausible(at):
            raise ApprovalRefusedError(state.request_id, "the grant record is not one this connector wrote")
        approver = None
        if state.approval_required:
            found = await _approved(config, strategy, state, store, at=at)
            if isinstance(found, str) or found[0] != record.get("approved_by"):
                raise ApprovalRefusedError(
                    state.request_id, "the grant record names no valid approval; nothing was granted"
                )
            approver = found
        return await _grant(config, strategy, state, store, approver, record)
    if kind == "timed-out":
        raise ApprovalTimeoutError(state.request_id, strategy.approval.wait)
    if kind in ("aborted", "corrupt"):
        # Aborted before the grant (or a record nobody can read): never granted now.
        raise ApprovalRefusedError(state.request_id, f"the request was {kind}; nothing was granted")
    at = _at(record, "at")
    granted_at = at if at is not None and plausible(at) else state.requested
    membership_id = str(record.get("membership_id", ""))
    if kind == "revoked":
        return Progress("access ended", state.grant(membership_id, granted_at, _at(record, "revoked_at")))
    expires = granted_at + state.duration
    if now < expires:
        return Progress(f"access held until {expires.isoformat()}")
    audit("expired", **state.audit_fields(), membership_id=membership_id)
    integration = config.integration_of(strategy)
    try:
        async with await client_for(integration) as c:
            # The email must designate the state's user before anything of theirs is removed; what is
            # removed is checked at Aptible (GET /memberships/:id), never taken from the record.
            await _same_user(c, config, state)
            membership_id, removed = await remove_grant(c, state, record)
    except Exception as e:
        audit("failed", **state.audit_fields(), step="de-escalate", error=describe_error(e))
        raise
    revoked_at = _now()
    # Removed first, recorded after: a record that cannot be written leaves no access (the next poll finds
    # the membership gone and tries the record again).
    outcome = {
        **record,
        "state": "revoked",
        "revoked_at": revoked_at.isoformat(),
        "membership_id": membership_id,
    }
    await asyncio.to_thread(store.set_grant, state.request_id, outcome)
    await asyncio.to_thread(_end, store, state, outcome)
    audit(
        "de-escalated",
        **state.audit_fields(),
        revoked_at=revoked_at,
        membership_id=membership_id,
        already_gone=not removed,
    )
    return Progress("access ended: membership removed", state.grant(membership_id, granted_at, revoked_at))


async def abort(config: OperatorConfig, state: GrantState) -> bool:
    """Remove the grant now, or make sure it is never made (execution aborted). ``True`` if removed.

    The membership is removed first and the records are written after: SSM refusing a write (its quota,
    its throttling) never leaves the access in place.
    """
    strategy = _checked(config, state)
    if state.pre_existing:
        audit("aborted", **state.audit_fields(), removed=False, note="standing access kept")
        return False
    store = _store(config)
    record = await asyncio.to_thread(store.get_grant, state.request_id)
    if record is None:
        # Nothing granted: claiming the record makes sure nothing ever is (a grant claims it first).
        if await asyncio.to_thread(store.claim_grant, state.request_id, {"state": "aborted"}):
            await asyncio.to_thread(_end, store, state, {"state": "aborted"})
            audit("aborted", **state.audit_fields(), removed=False, note="aborted before the grant")
            return False
        record = await asyncio.to_thread(store.get_grant, state.request_id) or {}
    # Whatever the record says (it is SSM data: "revoked", "aborted" or garbage may have been written over
    # a live grant), the grantee's membership is looked for; remove_grant removes only this request's.
    integration = config.integration_of(strategy)
    try:
        async with await client_for(integration) as c:
            await _same_user(c, config, state)
            membership_id, removed = await remove_grant(c, state, record)
            # A grant being made right now (a poll that read "granting") checks this mark after it has
            # written its record; looking once more after the mark catches one that landed in between.
            try:
                await asyncio.to_thread(store.mark_aborted, state.request_id)
            except Exception as e:  # noqa: BLE001 - the removal below still runs
                audit("failed", **state.audit_fields(), step="abort-mark", error=describe_error(e))
            again_id, again = await remove_grant(c, state, {})
            if again:
                membership_id, removed = again_id, True
    except Exception as e:
        audit("failed", **state.audit_fields(), step="abort", error=describe_error(e))
        raise
    revoked_at = _now()
    outcome = {
        **record,
        "state": "revoked",
        "revoked_at": revoked_at.isoformat(),
        "membership_id": membership_id,
    }
    await asyncio.to_thread(_end, store, state, outcome)
    audit(
        "aborted",
        **state.audit_fields(),
        revoked_at=revoked_at,
        membership_id=membership_id,
        removed=removed,
        already_gone=not removed,
    )
    return removed
