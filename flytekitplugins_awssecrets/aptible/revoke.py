"""Removing a grant: only the membership this request created, checked at Aptible before any ``DELETE``.

A grant record is SSM data: whoever may write under the prefix could have written its ``membership_id``.
So an id from a record is only a hint. It must be a UUID (no URL is built from any other text), and the
membership it names is fetched (``GET /memberships/{id}``) and removed only when Aptible says it is:

* the grantee's (``user`` is the request's user, whom the email designates),
* of the request's role,
* not privileged (a Role Admin membership, such as the bot's own, is never a grant),
* not the bot's,
* created after the request was made (allowing for clock skew): an older one is standing access.

When the record names nothing usable (``granting``: the answer was lost; or an id that fails a check), the
grantee's membership of the role, as Aptible lists it, gets the same checks. Anything else is kept and
audited (``kept``).

Example::

    membership_id, removed = await remove_grant(client, state, record)
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flytekitplugins_awssecrets.aptible.audit import audit
from flytekitplugins_awssecrets.aptible.client import AptibleClient, AptibleMembership, membership_uuid
from flytekitplugins_awssecrets.aptible.errors import MembershipIdError

if TYPE_CHECKING:
    from flytekitplugins_awssecrets.aptible.state import GrantState

__all__ = ["remove_grant", "not_ours"]

#: The same allowance for clock skew as :data:`flytekitplugins_awssecrets.aptible.state.CLOCK_SKEW`.
CLOCK_SKEW = timedelta(minutes=5)


def not_ours(m: AptibleMembership, state: GrantState, bot_user_id: str) -> str:
    """Why ``m`` is not this request's grant, or ``""`` when it is."""
    if m.user_id != state.user_id:
        return "it is another user's membership"
    if m.role_id != state.role_id:
        return "it is a membership of another role"
    if m.user_id == bot_user_id:
        return "it is the bot's own membership"
    if m.privileged:
        return "it is a Role Admin membership"
    if m.created_at is None:
        return "Aptible gives no created_at: it cannot be told from standing access"
    if m.created_at < state.requested - CLOCK_SKEW:
        return "it was created before the request (standing access)"
    return ""


async def remove_grant(client: AptibleClient, state: GrantState, record: dict[str, Any]) -> tuple[str, bool]:
    """``(membership id, removed)``: remove this request's membership, and nothing else.

    ``removed`` is false when there was nothing of this request's to remove (already gone, or only
    memberships that are not its grant, each audited as ``kept``).
    """
    bot = await client.bot_user_id()
    tried: set[str] = set()
    raw = record.get("membership_id")
    candidates: list[str] = []
    if raw:
        try:
            candidates.append(membership_uuid(raw))
        except MembershipIdError as e:
            err = {"type": type(e).__name__, "message": str(e)}
            audit("kept", **state.audit_fields(), step="remove", error=err)
    last = candidates[0] if candidates else ""
    for listed in (False, True):
        if listed:
            # The grantee's membership as Aptible lists it (the record named nothing usable, or not this).
            found = await client.find_membership(state.role_id, state.user_id)
            candidates = [found.id] if found is not None and found.id not in tried else []
        for mid in candidates:
            tried.add(mid)
            m = await client.get_membership(mid)
            if m is None:
                # Gone (removed already, or an id that never existed): the listing below still looks for
                # the grantee's membership, so a made-up id keeps nothing.
                continue
            why = not_ours(m, state, bot)
            if why:
                audit("kept", **state.audit_fields(), membership_id=mid, step="remove", note=why)
                continue
            return mid, await client.delete_membership(mid)
    return last, False
