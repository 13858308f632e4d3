"""The Aptible client against the fake Aptible server (a separate process on loopback).

The story: the connector's bot logs in with the password grant, lists and pages through HAL collections,
and adds and removes memberships, through token expiry, MFA, 5xx answers, slow answers and lost answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from flytekitplugins_awssecrets.aptible.client import AptibleClient, AptibleClientSettings, clear_token_cache
from flytekitplugins_awssecrets.aptible.errors import (
    AptibleApiError,
    AptibleAuthError,
    AptibleUnavailableError,
    MfaRequiredError,
)
from tests.conftest import new_value
from tests.support.fake_aptible import (
    ADA,
    ADMIN_ROLE,
    BOB,
    BOT,
    BOT_EMAIL,
    ORG,
    FakeAptible,
    standard_seed,
    start_fake_aptible,
)

FAST = AptibleClientSettings(backoff_initial_seconds=0.01, backoff_max_seconds=0.05, timeout_seconds=5)


@pytest.fixture
def fake(tmp_path: Path, bot_password: str) -> Iterator[FakeAptible]:
    server = start_fake_aptible(standard_seed(bot_password, users_extra=5), str(tmp_path / "seed.json"))
    clear_token_cache()
    yield server
    server.stop()
    clear_token_cache()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def client(
    fake: FakeAptible, password: str, settings: AptibleClientSettings = FAST, user: str = BOT_EMAIL
) -> AptibleClient:
    return AptibleClient(fake.url, user, SecretStr(password), settings=settings)


def count(fake: FakeAptible, method: str, prefix: str) -> int:
    return sum(1 for r in fake.requests() if r["method"] == method and r["path"].startswith(prefix))


def test_login_identifies_the_bot_and_the_token_is_cached_across_clients(
    fake: FakeAptible, bot_password: str
) -> None:
    async def go() -> tuple[str, str]:
        async with client(fake, bot_password) as c:
            first = await c.bot_user_id()
        async with client(fake, bot_password) as c:
            second = await c.bot_user_id()
        return first, second

    assert run(go()) == (BOT, BOT)
    assert count(fake, "POST", "/tokens") == 1


def test_every_page_of_a_hal_collection_is_read(fake: FakeAptible, bot_password: str) -> None:
    async def go() -> list[str]:
        async with client(fake, bot_password) as c:
            return [u.email for u in await c.list_org_users(ORG)]

    emails = run(go())
    # 7 users of the organization (the approver among them) + 5 fillers, with pages of 2: six GETs chained
    # by _links.next.
    assert len(emails) == 12 and "Ada.Lovelace@Example.com" in emails
    assert count(fake, "GET", f"/organizations/{ORG}/users") == 6


def test_an_expired_token_leads_to_exactly_one_new_login(fake: FakeAptible, bot_password: str) -> None:
    async def go() -> None:
        async with client(fake, bot_password) as c:
            await c.get_role(ADMIN_ROLE)
            fake.expire_tokens()
            role = await c.get_role(ADMIN_ROLE)
            assert role is not None and role.organization_id == ORG

    run(go())
    assert count(fake, "POST", "/tokens") == 2
    assert [r["status"] for r in fake.requests() if r["path"] == f"/roles/{ADMIN_ROLE}"] == [200, 401, 200]


def test_wrong_password_is_an_auth_error_that_does_not_show_the_password(fake: FakeAptible) -> None:
    wrong = new_value("wrong-pw")

    async def go() -> None:
        async with client(fake, wrong) as c:
            await c.bot_user_id()

    with pytest.raises(AptibleAuthError) as info:
        run(go())
    assert "invalid_credentials" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(info.value)


def test_a_bot_with_mfa_is_refused_with_a_clear_message(fake: FakeAptible, bot_password: str) -> None:
    async def go() -> None:
        async with client(fake, bot_password, user="mfa-bot@example.com") as c:
            await c.bot_user_id()

    with pytest.raises(MfaRequiredError, match="the bot user must not require MFA"):
        run(go())


def test_5xx_answers_are_retried(fake: FakeAptible, bot_password: str) -> None:
    fake.faults({"method": "GET", "path_prefix": "/roles/", "action": "status", "status": 503, "count": 2})

    async def go() -> Any:
        async with client(fake, bot_password) as c:
            return await c.get_role(ADMIN_ROLE)

    assert run(go()) is not None
    assert [r["status"] for r in fake.requests() if r["path"] == f"/roles/{ADMIN_ROLE}"] == [503, 503, 200]


def test_5xx_past_the_attempt_budget_is_a_retryable_unavailable_error(
    fake: FakeAptible, bot_password: str
) -> None:
    fake.faults({"method": "GET", "path_prefix": "/roles/", "action": "status", "status": 500, "count": -1})
    settings = FAST.model_copy(update={"max_attempts": 3})

    async def go() -> Any:
        async with client(fake, bot_password, settings) as c:
            return await c.get_role(ADMIN_ROLE)

    with pytest.raises(AptibleUnavailableError) as info:
        run(go())
    assert info.value.retryable and info.value.attempts == 3
    assert count(fake, "GET", "/roles/") == 3


def test_a_slow_answer_times_out_and_is_retried(fake: FakeAptible, bot_password: str) -> None:
    fake.faults({"method": "GET", "path_prefix": "/roles/", "action": "delay", "seconds": 2, "count": 1})
    settings = FAST.model_copy(update={"timeout_seconds": 0.5})

    async def go() -> Any:
        async with client(fake, bot_password, settings) as c:
            return await c.get_role(ADMIN_ROLE)

    assert run(go()) is not None
    # The slow request is logged by the server when its 2 s sleep ends.
    deadline = time.monotonic() + 5
    while count(fake, "GET", "/roles/") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count(fake, "GET", "/roles/") == 2


def test_a_membership_whose_answer_was_lost_is_found_not_doubled(
    fake: FakeAptible, bot_password: str
) -> None:
    fake.faults({"method": "POST", "path_prefix": "/roles/", "action": "apply_then_status", "status": 502})

    async def go() -> str:
        async with client(fake, bot_password) as c:
            return (await c.create_membership(ADMIN_ROLE, ADA)).id

    mid = run(go())
    mine = [m for m in fake.memberships() if m["role_id"] == ADMIN_ROLE and m["user_id"] == ADA]
    assert [m["id"] for m in mine] == [mid]
    assert count(fake, "POST", "/roles/") == 1


def test_deleting_a_gone_membership_is_not_an_error_and_5xx_on_delete_is_retried(
    fake: FakeAptible, bot_password: str
) -> None:
    fake.faults(
        {"method": "DELETE", "path_prefix": "/memberships/", "action": "status", "status": 503, "count": 3}
    )

    async def go() -> tuple[bool, bool]:
        async with client(fake, bot_password) as c:
            m = await c.create_membership(ADMIN_ROLE, ADA)
            return await c.delete_membership(m.id), await c.delete_membership(m.id)

    assert run(go()) == (True, False)
    assert not fake.holds(ADMIN_ROLE, ADA)
    assert fake.holds(ADMIN_ROLE, BOB)


def test_a_refusal_is_an_api_error_with_aptible_s_code(fake: FakeAptible, bot_password: str) -> None:
    from tests.support.fake_aptible import RO_ROLE

    async def go() -> None:
        async with client(fake, bot_password) as c:
            await c.create_membership(RO_ROLE, ADA)

    with pytest.raises(AptibleApiError) as info:
        run(go())
    assert info.value.status == 403 and info.value.code == "forbidden" and not info.value.retryable


def test_a_next_link_to_another_host_never_receives_the_token() -> None:
    seen: list[str] = []
    token = new_value("tok")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host}{request.url.path}")
        if request.url.path == "/tokens":
            return httpx.Response(201, json={"access_token": token, "expires_in": 3600, "_links": {}})
        return httpx.Response(
            200,
            json={"_embedded": {"users": []}, "_links": {"next": {"href": "https://evil.example/steal"}}},
        )

    async def go() -> None:
        c = AptibleClient(
            "https://auth.test", "bot", SecretStr("x"), settings=FAST, transport=httpx.MockTransport(handler)
        )
        async with c:
            await c.list_org_users(ORG)

    with pytest.raises(AptibleApiError, match="another host"):
        run(go())
    assert all(not s.startswith("evil.example") for s in seen)


def test_the_client_repr_and_settings_hold_no_secret(bot_password: str) -> None:
    c = AptibleClient("https://auth.test", "bot", SecretStr(bot_password))
    assert bot_password not in repr(c) and bot_password not in repr(vars(c))


def test_a_token_close_to_expiry_is_replaced_before_aptible_refuses_it(
    fake: FakeAptible, bot_password: str
) -> None:
    # A 60 s token with a 59.5 s margin is "close to expiry" half a second after login.
    settings = FAST.model_copy(update={"token_lifetime_seconds": 60, "token_refresh_margin_seconds": 59.5})

    async def go() -> None:
        async with client(fake, bot_password, settings) as c:
            await c.get_role(ADMIN_ROLE)
            await asyncio.sleep(0.6)
            await c.get_role(ADMIN_ROLE)

    run(go())
    assert count(fake, "POST", "/tokens") == 2
    assert all(r["status"] != 401 for r in fake.requests())


def test_retry_after_is_honoured(fake: FakeAptible, bot_password: str) -> None:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    fake.faults(
        {
            "method": "GET",
            "path_prefix": "/roles/",
            "action": "status",
            "status": 429,
            "retry_after": 3,
            "count": 1,
        }
    )

    async def go() -> Any:
        async with AptibleClient(
            fake.url, BOT_EMAIL, SecretStr(bot_password), settings=FAST, sleep=sleep
        ) as c:
            return await c.get_role(ADMIN_ROLE)

    assert run(go()).id == ADMIN_ROLE
    assert waits == [3.0]  # Aptible's Retry-After, not the (much shorter) backoff


def test_a_login_answered_429_is_never_retried(fake: FakeAptible, bot_password: str) -> None:
    from flytekitplugins_awssecrets.aptible.errors import LoginRateLimitedError

    fake.faults({"method": "POST", "path_prefix": "/tokens", "action": "status", "status": 429, "count": -1})
    with pytest.raises(LoginRateLimitedError, match="locks accounts") as info:
        run(_bot_id(fake, bot_password))
    assert info.value.retryable  # the next poll may try again, one login at a time
    assert count(fake, "POST", "/tokens") == 1


async def _bot_id(fake: FakeAptible, password: str) -> str:
    async with client(fake, password) as c:
        return await c.bot_user_id()


def test_every_call_asks_for_hal_and_json(fake: FakeAptible, bot_password: str) -> None:
    async def go() -> None:
        async with client(fake, bot_password) as c:
            await c.list_org_users(ORG)

    run(go())
    assert {r["accept"] for r in fake.requests()} == {"application/hal+json, application/json"}


@pytest.mark.parametrize(
    "pages",
    [
        # total_count says 3, the pages hold 2 (a page lost between the two reads).
        [
            {
                "_embedded": {"users": [{"id": "u1"}]},
                "total_count": 3,
                "per_page": 1,
                "_links": {"next": {"href": "https://auth.test/organizations/o/users?page=2"}},
            },
            {"_embedded": {"users": [{"id": "u2"}]}, "total_count": 3, "per_page": 1, "_links": {}},
        ],
        # A page shorter than per_page with a next link after it.
        [
            {
                "_embedded": {"users": [{"id": "u1"}]},
                "per_page": 2,
                "_links": {"next": {"href": "https://auth.test/organizations/o/users?page=2"}},
            },
            {"_embedded": {"users": [{"id": "u2"}]}, "per_page": 2, "_links": {}},
        ],
    ],
    ids=["total-count", "per-page"],
)
def test_a_short_read_is_detected(pages: list[dict[str, Any]]) -> None:
    from flytekitplugins_awssecrets.aptible.errors import ShortReadError

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tokens":
            return httpx.Response(201, json={"access_token": "t", "expires_in": 3600, "_links": {}})
        return httpx.Response(200, json=pages[1 if "page=2" in str(request.url) else 0])

    async def go() -> Any:
        async with AptibleClient(
            "https://auth.test", "bot", SecretStr("x"), settings=FAST, transport=httpx.MockTransport(answer)
        ) as c:
            return await c.list_org_users("o")

    clear_token_cache()
    with pytest.raises(ShortReadError, match="short read"):
        run(go())
    clear_token_cache()
