"""Escalation and de-escalation against the fake Aptible server, with the client handed in (no AWS here).

The story: a person asks for a role; every refusal happens before anything changes; a grant is held until
it expires and then removed; standing access is never removed; an abort removes the grant; removal
survives 5xx answers and an already-removed membership; every step leaves one audit record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from flytekitplugins_awssecrets.aptible import (
    AptibleAccessStrategy,
    AptibleIntegration,
    AptibleRole,
    lifecycle,
)
from flytekitplugins_awssecrets.aptible.audit import AUDIT_LOGGER
from flytekitplugins_awssecrets.aptible.client import AptibleClient, AptibleClientSettings, clear_token_cache
from flytekitplugins_awssecrets.aptible.errors import (
    AmbiguousIdentityError,
    AptiblePreconditionError,
    AptibleUnavailableError,
    BotNotRoleAdminError,
    DurationTooLongError,
    IdentityNotFoundError,
    RoleNotFoundError,
    RoleOrganizationMismatchError,
    UnknownTargetError,
)
from flytekitplugins_awssecrets.aptible.models import AptibleTaskConfig, IdentitySpec
from tests.support.fake_aptible import (
    ADA,
    ADMIN_ROLE,
    BOB,
    BOT,
    BOT_EMAIL,
    FOREIGN_ROLE,
    ORG,
    OWNER_ROLE,
    RO_ROLE,
    TWIN1,
    FakeAptible,
    standard_seed,
    start_fake_aptible,
)

CREDS = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sym/main/aptible-bot-credentials-AbCdEf"
FAST = AptibleClientSettings(backoff_initial_seconds=0.01, backoff_max_seconds=0.05, max_attempts=3)
MISSING_ROLE = "99999999-0000-4000-8000-000000000999"


def identity_by_handle(email: str) -> str | None:
    """An identity override as a team would write one: company handles map to Aptible emails."""
    return "Ada.Lovelace@Example.com" if email == "ada@corp.example" else None


def strategy(max_duration: timedelta = timedelta(hours=1)) -> AptibleAccessStrategy:
    integration = AptibleIntegration(
        name="main-aptible",
        organization_id=ORG,
        username_secret=f"{CREDS}:username",
        password_secret=f"{CREDS}:password",
    )
    return AptibleAccessStrategy(
        name="main-aptible-strategy",
        integration=integration,
        targets=[
            AptibleRole(name="admin", label="Admin Role", role_id=ADMIN_ROLE.upper()),
            AptibleRole(name="read-only", role_id=RO_ROLE),
            AptibleRole(name="theirs", role_id=FOREIGN_ROLE),
            AptibleRole(name="ghost", role_id=MISSING_ROLE),
        ],
        max_duration=max_duration,
    )


@pytest.fixture
def fake(tmp_path: Path, bot_password: str) -> Iterator[FakeAptible]:
    server = start_fake_aptible(standard_seed(bot_password), str(tmp_path / "seed.json"))
    clear_token_cache()
    yield server
    server.stop()
    clear_token_cache()


@pytest.fixture
def audit_log(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, Any]]]:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    records: list[dict[str, Any]] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(json.loads(record.getMessage()))

    handler = _Collect()
    logging.getLogger(AUDIT_LOGGER).addHandler(handler)
    yield records
    logging.getLogger(AUDIT_LOGGER).removeHandler(handler)


def req(
    email: str = "ada.lovelace@example.com", target: str = "admin", seconds: float = 1.0
) -> lifecycle.Request:
    return lifecycle.Request(
        email, target, timedelta(seconds=seconds), "INC-1", execution_id="proj/dev/ex1/n0/0"
    )


def with_client(fake: FakeAptible, password: str, fn: Any) -> Any:
    async def go() -> Any:
        async with AptibleClient(fake.url, BOT_EMAIL, SecretStr(password), settings=FAST) as c:
            return await fn(c)

    return asyncio.run(go())


def config(identity: Any = None, max_duration: timedelta = timedelta(hours=1)) -> AptibleTaskConfig:
    return AptibleTaskConfig(strategy=strategy(max_duration), identity=IdentitySpec.of(identity))


def test_grant_is_held_until_it_expires_then_removed(
    fake: FakeAptible, bot_password: str, audit_log: list[dict[str, Any]]
) -> None:
    state = with_client(fake, bot_password, lambda c: lifecycle.start(config(), req(seconds=1.5), client=c))
    assert not state.pre_existing and state.user_id == ADA and state.role_id == ADMIN_ROLE
    assert fake.holds(ADMIN_ROLE, ADA)

    assert with_client(fake, bot_password, lambda c: lifecycle.poll(state, client=c)) is None
    assert fake.holds(ADMIN_ROLE, ADA)

    time.sleep(1.6)
    grant = with_client(fake, bot_password, lambda c: lifecycle.poll(state, client=c))
    assert grant is not None and grant.revoked_at is not None and grant.revoked_at >= grant.expires_at
    assert grant.membership_id == state.membership_id and not grant.pre_existing
    assert not fake.holds(ADMIN_ROLE, ADA)
    assert fake.holds(ADMIN_ROLE, BOB)  # nobody else's access was touched

    assert [r["event"] for r in audit_log] == ["requested", "escalated", "expired", "de-escalated"]
    for r in audit_log:
        assert r["execution_id"] == "proj/dev/ex1/n0/0" and r["email"] == "ada.lovelace@example.com"
    assert audit_log[1]["membership_id"] == state.membership_id and audit_log[1]["user_id"] == ADA
    assert audit_log[3]["revoked_at"] and audit_log[3]["already_gone"] is False
    assert bot_password not in json.dumps(audit_log)


def test_standing_access_is_reported_and_never_removed(
    fake: FakeAptible, bot_password: str, audit_log: list[dict[str, Any]]
) -> None:
    state = with_client(
        fake, bot_password, lambda c: lifecycle.start(config(), req("BOB@example.com", seconds=0.2), client=c)
    )
    assert state.pre_existing and state.user_id == BOB
    time.sleep(0.3)
    grant = with_client(fake, bot_password, lambda c: lifecycle.poll(state, client=c))
    assert grant.pre_existing and grant.revoked_at is None
    with_client(fake, bot_password, lambda c: lifecycle.abort(state, client=c))
    assert fake.holds(ADMIN_ROLE, BOB)
    assert not any(r["method"] in ("POST", "DELETE") and r["path"] != "/tokens" for r in fake.requests())
    assert [r["event"] for r in audit_log] == ["requested", "already-held", "expired", "aborted"]


def test_abort_removes_the_grant_and_a_second_abort_finds_it_gone(
    fake: FakeAptible, bot_password: str, audit_log: list[dict[str, Any]]
) -> None:
    state = with_client(fake, bot_password, lambda c: lifecycle.start(config(), req(seconds=600), client=c))
    assert fake.holds(ADMIN_ROLE, ADA)
    assert with_client(fake, bot_password, lambda c: lifecycle.abort(state, client=c)) is True
    assert not fake.holds(ADMIN_ROLE, ADA)
    assert with_client(fake, bot_password, lambda c: lifecycle.abort(state, client=c)) is False
    aborted = [r for r in audit_log if r["event"] == "aborted"]
    assert [r["already_gone"] for r in aborted] == [False, True]


def test_removal_survives_5xx_answers_and_an_already_removed_membership(
    fake: FakeAptible, bot_password: str, audit_log: list[dict[str, Any]]
) -> None:
    state = with_client(fake, bot_password, lambda c: lifecycle.start(config(), req(seconds=0.2), client=c))
    time.sleep(0.3)
    # Aptible is down for longer than one poll's attempts: the poll fails (retryable), the next one removes.
    fake.faults(
        {"method": "DELETE", "path_prefix": "/memberships/", "action": "status", "status": 503, "count": 4}
    )
    with pytest.raises(AptibleUnavailableError) as info:
        with_client(fake, bot_password, lambda c: lifecycle.poll(state, client=c))
    assert info.value.retryable and fake.holds(ADMIN_ROLE, ADA)
    grant = with_client(fake, bot_password, lambda c: lifecycle.poll(state, client=c))
    assert grant.revoked_at is not None and not fake.holds(ADMIN_ROLE, ADA)
    # And a membership someone already removed by hand is a success, not an error.
    state2 = with_client(fake, bot_password, lambda c: lifecycle.start(config(), req(seconds=0.2), client=c))
    with_client(fake, bot_password, lambda c: c.delete_membership(state2.membership_id))
    time.sleep(0.3)
    assert with_client(fake, bot_password, lambda c: lifecycle.poll(state2, client=c)).revoked_at is not None
    events = [r["event"] for r in audit_log]
    assert events.count("failed") == 1 and events.count("expired") == 2 and events.count("de-escalated") == 2


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (req(seconds=7200), DurationTooLongError),
        (req(seconds=0), DurationTooLongError),
        (req(target="prod-root"), UnknownTargetError),
        (req(target="theirs"), RoleOrganizationMismatchError),
        (req(target="ghost"), RoleNotFoundError),
        (req(target="read-only"), BotNotRoleAdminError),
        (req("nobody@example.com"), IdentityNotFoundError),
        (req("outsider@example.com"), IdentityNotFoundError),
        (req("TWIN@example.com"), AmbiguousIdentityError),
    ],
    ids=[
        "too-long",
        "zero",
        "unknown-target",
        "other-org",
        "missing-role",
        "not-role-admin",
        "no-user",
        "user-of-other-org",
        "two-users",
    ],
)
def test_each_refusal_is_a_typed_error_before_anything_changes(
    fake: FakeAptible,
    bot_password: str,
    audit_log: list[dict[str, Any]],
    request_: lifecycle.Request,
    error: type[Exception],
) -> None:
    before = fake.memberships()
    with pytest.raises(error) as info:
        with_client(fake, bot_password, lambda c: lifecycle.start(config(), request_, client=c))
    assert isinstance(info.value, AptiblePreconditionError)
    assert fake.memberships() == before
    assert not any(r["method"] in ("POST", "DELETE") and r["path"] != "/tokens" for r in fake.requests())
    assert [r["event"] for r in audit_log] == ["requested", "failed"]
    assert audit_log[1]["error"]["type"] == error.__name__
    assert bot_password not in str(info.value)


def test_an_owner_bot_may_grant_roles_it_is_not_role_admin_of(fake: FakeAptible, bot_password: str) -> None:
    fake.add_membership(OWNER_ROLE, BOT)
    state = with_client(
        fake, bot_password, lambda c: lifecycle.start(config(), req(target="read-only"), client=c)
    )
    assert fake.holds(RO_ROLE, ADA) and state.role_id == RO_ROLE


@pytest.mark.parametrize(
    ("identity", "email"),
    [
        ({"ada@corp.example": ADA.upper()}, "ada@corp.example"),
        ({"ADA@corp.example": "ada.lovelace@example.com"}, "ada@Corp.example"),
        (identity_by_handle, "ada@corp.example"),
        ({"twin@example.com": TWIN1}, "twin@example.com"),
    ],
    ids=["mapping-to-id", "mapping-to-email", "function", "mapping-resolves-ambiguity"],
)
def test_identity_override_maps_requesters_to_aptible_users(
    fake: FakeAptible, bot_password: str, identity: Any, email: str
) -> None:
    state = with_client(fake, bot_password, lambda c: lifecycle.start(config(identity), req(email), client=c))
    assert state.user_id == (TWIN1 if "twin" in email else ADA)


def test_an_override_naming_a_user_outside_the_organization_is_refused(
    fake: FakeAptible, bot_password: str
) -> None:
    from tests.support.fake_aptible import OUTSIDER

    with pytest.raises(IdentityNotFoundError, match="override"):
        with_client(
            fake,
            bot_password,
            lambda c: lifecycle.start(config({"x@corp.example": OUTSIDER}), req("x@corp.example"), client=c),
        )


def test_a_grant_added_then_failing_is_taken_back(
    fake: FakeAptible, bot_password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the membership was added (here: the audit handler breaks) must not leave the access."""
    real = lifecycle.audit

    def broken(event: str, **fields: Any) -> Any:
        if event == "escalated":
            raise RuntimeError("log pipeline down")
        return real(event, **fields)  # type: ignore[arg-type]

    monkeypatch.setattr(lifecycle, "audit", broken)
    with pytest.raises(RuntimeError):
        with_client(fake, bot_password, lambda c: lifecycle.start(config(), req(), client=c))
    assert not fake.holds(ADMIN_ROLE, ADA)
    assert any(r["method"] == "POST" and r["path"].endswith("/memberships") for r in fake.requests())


def test_a_repeated_create_of_the_same_execution_is_not_mistaken_for_standing_access(
    fake: FakeAptible, bot_password: str
) -> None:
    """Propeller retries a CreateTask whose answer was lost: the retry must still remove the grant at the end."""
    first = with_client(fake, bot_password, lambda c: lifecycle.start(config(), req(seconds=0.2), client=c))
    again = with_client(fake, bot_password, lambda c: lifecycle.start(config(), req(seconds=0.2), client=c))
    assert again.membership_id == first.membership_id and not again.pre_existing
    other = lifecycle.Request(
        "ada.lovelace@example.com", "admin", timedelta(seconds=1), "x", execution_id="p/d/other/n0/0"
    )
    assert with_client(fake, bot_password, lambda c: lifecycle.start(config(), other, client=c)).pre_existing
    time.sleep(0.3)
    assert with_client(fake, bot_password, lambda c: lifecycle.poll(again, client=c)).revoked_at is not None
    assert not fake.holds(ADMIN_ROLE, ADA)
