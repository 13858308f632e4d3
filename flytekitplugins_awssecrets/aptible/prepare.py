"""``CreateTask``: resolve a request against the operator file and check every precondition at Aptible
-- target, duration, role and its organization, SSO enforcement, the bot's rights, the requester's identity
-- changing nothing at Aptible. A refusal is one audit record naming every offending field.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from flytekitplugins_awssecrets.aptible.approval import (
    PendingRequest,
)
from flytekitplugins_awssecrets.aptible.audit import audit, describe_error
from flytekitplugins_awssecrets.aptible.client import AptibleClient, AptibleMembership
from flytekitplugins_awssecrets.aptible.errors import (
    AccessRequestRefusedError,
    AmbiguousIdentityError,
    AptibleApiError,
    BotNotRoleAdminError,
    DurationTooLongError,
    IdentityNotFoundError,
    LocalApprovalDeniedError,
    LocalRunNotAllowedError,
    RoleNotFoundError,
    RoleOrganizationMismatchError,
    SsoEnforcedError,
    TemplateFieldError,
    UnknownTargetError,
)
from flytekitplugins_awssecrets.aptible.identity import resolve_identity
from flytekitplugins_awssecrets.aptible.operator import (
    OperatorConfig,
    OperatorStrategy,
)
from flytekitplugins_awssecrets.aptible.request import AccessRequest, request_id
from flytekitplugins_awssecrets.aptible.state import (
    GrantState,
    _maybe_sweep,
    _now,
    _store,
    approve_command,
    client_for,
    is_local,
)

__all__ = ["prepare"]


async def _check_bot(
    client: AptibleClient, target: str, role_id: str, org: str, ms: list[AptibleMembership]
) -> None:
    bot = await client.bot_user_id()
    if any(m.user_id == bot and m.privileged for m in ms):
        return
    role = await client.get_role(role_id)
    roles = await client.list_user_roles(bot)
    for r in roles:
        if r.organization_id != org:
            continue
        # An Account Owner manages every role; a Deploy Owner is implicitly Role Admin of every custom
        # (platform_user) role, as Aptible's dashboard shows it.
        if r.type == "owner":
            return
        if r.type == "platform_owner" and role is not None and role.type not in ("owner", "platform_owner"):
            return
    raise BotNotRoleAdminError(target, role_id, bot or "unknown")


async def _sso_guard(client: AptibleClient, org: str, e: AptibleApiError) -> None:
    if e.status in (401, 403):
        body = await client.get_organization(org)
        if body is not None and body.get("sso_enforced"):
            raise SsoEnforcedError(org) from None


async def _checks(
    client: AptibleClient, config: OperatorConfig, strategy: OperatorStrategy, req: AccessRequest
) -> tuple[str, str, AptibleMembership | None]:
    """``(user_id, role_id, held membership)`` after every precondition; nothing changes."""
    integration = config.integration_of(strategy)
    org = integration.organization_id
    target = config.target_of(strategy, req.target)
    try:
        role = await client.get_role(target.role_id)
        if role is None:
            org_body = await client.get_organization(org)
            if org_body is not None and org_body.get("sso_enforced"):
                raise SsoEnforcedError(org)
            raise RoleNotFoundError(target.name, target.role_id)
        if role.organization_id != org:
            raise RoleOrganizationMismatchError(target.name, target.role_id, org, role.organization_id)
        memberships = await client.list_role_memberships(target.role_id)
        await _check_bot(client, target.name, target.role_id, org, memberships)
        users = await client.list_org_users(org)
    except AptibleApiError as e:
        await _sso_guard(client, org, e)
        raise
    user = resolve_identity(req.email, org, users, config.identity)
    held = next((m for m in memberships if m.user_id == user.id), None)
    return user.id, target.role_id, held


def _confirm_locally(state: GrantState) -> bool:
    """Ask the person at the terminal; anything but y/yes (an empty line, end of input) is No."""
    sys.stderr.write(
        f"[Aptible access] grant {state.target} to {state.email} for {state.duration} "
        f"({state.reason or 'no reason given'})? [y/N] "
    )
    sys.stderr.flush()
    try:
        line = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return line.strip().lower() in ("y", "yes")


async def prepare(config: OperatorConfig, req: AccessRequest, execution_id: str) -> GrantState:
    """Resolve and check the request (``CreateTask``); nothing changes at Aptible. Refusals raise."""
    if is_local(execution_id) and execution_id == "local":
        execution_id = f"local/{uuid.uuid4().hex[:12]}"
    rid = request_id(execution_id, req)
    base = {
        "request_id": rid,
        "execution_id": execution_id,
        "email": req.email,
        "target": req.target,
        "strategy": req.strategy,
        "reason": req.reason,
        "duration_seconds": req.duration.total_seconds(),
    }
    try:
        strategy = config.strategy(req.strategy)
        problems: list[Exception] = []
        try:
            config.target_of(strategy, req.target)
        except UnknownTargetError as e:
            problems.append(e)
        if req.duration > strategy.max_duration:
            problems.append(DurationTooLongError(strategy.name, req.duration, strategy.max_duration))
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise TemplateFieldError(
                "inputs.target", str(problems[0]), [("inputs.duration", str(problems[1]))]
            )
        if is_local(execution_id) and not strategy.local_runs:
            # Before the bot's credentials are read: a local run would put them in the requester's hands.
            n = config.strategies.index(strategy)
            raise LocalRunNotAllowedError(strategy.name, f"strategies[{n}].local_runs")
        integration = config.integration_of(strategy)
        async with await client_for(integration) as c:
            user_id, role_id, held = await _checks(c, config, strategy, req)
        store = _store(config)
        pre_existing = held is not None
        if held is not None:
            # A repeated CreateTask of a request already granted finds its own membership: the grant record
            # (not this process's memory) says so.
            record = await asyncio.to_thread(store.get_grant, rid)
            if record is not None and record.get("membership_id") == held.id:
                pre_existing = False
        state = GrantState(
            request_id=rid,
            execution_id=execution_id,
            strategy=strategy.name,
            target=req.target,
            email=req.email,
            reason=req.reason,
            duration_seconds=int(req.duration.total_seconds()),
            organization_id=integration.organization_id,
            role_id=role_id,
            user_id=user_id,
            pre_existing=pre_existing,
            requested_at=_now().isoformat(),
            approval_required=strategy.approval.required and not pre_existing,
        )
        audit("requested", **base)
        await asyncio.to_thread(_maybe_sweep, config, store)
        if state.pre_existing:
            audit("already-held", **state.audit_fields())
            return state
        if state.approval_required:
            policy = strategy.approval
            pending = PendingRequest(
                request_id=rid,
                execution_id=execution_id,
                strategy=strategy.name,
                target=req.target,
                email=req.email,
                duration_seconds=state.duration_seconds,
                reason=req.reason,
                requested_at=state.requested_at,
                kms_key_arn=policy.kms_key_arn or "",
                signing_algorithm=policy.signing_algorithm,
                max_validity_seconds=int(policy.max_validity.total_seconds()),
            )
            await asyncio.to_thread(store.put_pending, pending)
            audit("approval-requested", **state.audit_fields())
            if is_local(execution_id):
                sys.stderr.write(
                    f"[Aptible access] request {rid} waits for approval; an approver runs:\n"
                    f"  {approve_command(rid)}\n"
                )
                sys.stderr.flush()
        elif is_local(execution_id) and not _confirm_locally(state):
            raise LocalApprovalDeniedError(rid)
        return state
    except Exception as e:
        # One record per refused request, naming every offending field; the requester sees no more than
        # "this email cannot be granted" where the reason is whether (or how often) the email is at Aptible.
        fields = [f for f, _ in getattr(e, "problems", [])] or _fields_of(e)
        audit("failed", **base, step="prepare", fields=",".join(fields), error=describe_error(e))
        if isinstance(e, IdentityNotFoundError | AmbiguousIdentityError):
            raise AccessRequestRefusedError(rid, ["inputs.email"]) from None
        raise


def _fields_of(e: BaseException) -> list[str]:
    """The request fields a refusal is about (for the audit record)."""
    if isinstance(e, UnknownTargetError):
        return ["inputs.target"]
    if isinstance(e, DurationTooLongError):
        return ["inputs.duration"]
    if isinstance(e, IdentityNotFoundError | AmbiguousIdentityError):
        return ["inputs.email"]
    if isinstance(e, LocalRunNotAllowedError):
        return [e.field]
    name = type(e).__name__
    return ["custom.strategy"] if name == "UnknownStrategyError" else []
