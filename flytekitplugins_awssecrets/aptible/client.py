"""A small asynchronous client of Aptible's auth API (httpx), just what role escalation needs.

What it speaks, as Aptible does (sources in ``docs/aptible.md``):

* ``POST /tokens`` with a JSON body ``grant_type=password``, ``username``, ``password``, ``scope=manage``,
  ``expires_in``; the answer holds ``access_token``, ``expires_in``/``expires_at`` and ``_links.user``
  (the bot user). Tokens are cached per (auth host, username) until shortly before they expire, and
  ``invalid_token``/``expired_token`` on a later call leads to exactly one fresh login.
  ``otp_token_required`` becomes :class:`MfaRequiredError`.
* ``GET /organizations/{id}/users``, ``GET /organizations/{id}/roles``, ``GET /roles/{id}``,
  ``GET /users/{id}/roles``, ``GET /roles/{id}/memberships``, ``POST /roles/{id}/memberships`` with
  ``{"user_url": ...}``, ``GET /memberships/{id}``, ``DELETE /memberships/{id}`` (ids validated as UUIDs).
* HAL: ``Accept: application/hal+json, application/json``; collections under ``_embedded.<name>``, links
  under ``_links``, pages chained by ``_links.next``; when ``total_count``/``per_page`` are present, a
  collection that comes up short is a :class:`ShortReadError`, never a partial answer.
* Errors: ``{"code": <status>, "error": "<code>", "message": "<text>"}``.

5xx answers, 429 and transport errors (time-outs included) are retried with exponential backoff and
jitter, or after ``Retry-After`` when Aptible sends one. ``POST /tokens`` is never retried on 429: Aptible
locks accounts after repeated logins. Creating a membership is not idempotent, so after a failed ``POST``
the client looks before it tries again, and a created membership whose answer is empty, not JSON or has no
id is looked up and adopted. Deleting is retried as is: a ``404`` afterwards means "already gone".

The password and tokens live in :class:`pydantic.SecretStr` and never reach a log, an error or a repr.
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from flytekitplugins_awssecrets.aptible.errors import (
    AptibleApiError,
    AptibleAuthError,
    AptibleUnavailableError,
    LoginRateLimitedError,
    MembershipIdError,
    MfaRequiredError,
    ShortReadError,
)

__all__ = [
    "AptibleClientSettings",
    "AptibleClient",
    "AptibleUser",
    "AptibleRoleInfo",
    "AptibleMembership",
    "clear_token_cache",
    "link_id",
    "membership_uuid",
    "parse_time",
]


class AptibleClientSettings(BaseSettings):
    """Client settings; each can be set with ``FLYTE_AWS_SECRETS_APTIBLE_<NAME>`` in the connector's env.

    The auth host is not among them: it is the operator file's (``integrations[].auth_url``).

    * ``timeout_seconds`` (30): per HTTP request.
    * ``max_attempts`` (5): tries per call on 5xx, 429 and transport errors.
    * ``backoff_initial_seconds`` (0.5) and ``backoff_max_seconds`` (8): exponential backoff, full jitter.
    * ``token_lifetime_seconds`` (3600): the ``expires_in`` asked for at login.
    * ``token_refresh_margin_seconds`` (120): a cached token is replaced this long before it expires.
    * ``max_pages`` (1000): a guard against a ``_links.next`` loop.
    * ``retry_after_max_seconds`` (60): the longest ``Retry-After`` honoured before a retry.

    Example::

        AptibleClientSettings(max_attempts=8)  # or FLYTE_AWS_SECRETS_APTIBLE_MAX_ATTEMPTS=8
    """

    model_config = SettingsConfigDict(env_prefix="FLYTE_AWS_SECRETS_APTIBLE_", extra="ignore")

    timeout_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_initial_seconds: float = Field(default=0.5, ge=0)
    backoff_max_seconds: float = Field(default=8.0, ge=0)
    token_lifetime_seconds: int = Field(default=3600, ge=60)
    token_refresh_margin_seconds: float = Field(default=120, ge=0)
    max_pages: int = Field(default=1000, ge=1)
    retry_after_max_seconds: float = Field(default=60.0, ge=0)


def link_id(link: Any) -> str:
    """The id at the end of a HAL link (``{"href": ".../users/<id>"}``), or ``""``."""
    href = link.get("href") if isinstance(link, dict) else None
    if not isinstance(href, str) or not href:
        return ""
    return href.rstrip("/").rsplit("/", 1)[-1]


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def membership_uuid(value: object) -> str:
    """``value`` as a canonical lower-case UUID, or :class:`MembershipIdError`: the only text a membership
    URL is ever built from (a record's ``../roles/<id>`` must never become a path)."""
    if not isinstance(value, str) or not _UUID.match(value):
        raise MembershipIdError(value)
    return str(uuid.UUID(value))


def _href(link: Any) -> str:
    href = link.get("href") if isinstance(link, dict) else None
    return href if isinstance(href, str) else ""


class AptibleUser(BaseModel):
    """A user as ``GET /organizations/{id}/users`` lists it: ``AptibleUser.from_api(item)``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    email: str = ""
    name: str = ""
    href: str = ""

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> AptibleUser:
        return cls(
            id=str(body.get("id", "")).lower(),
            email=str(body.get("email") or ""),
            name=str(body.get("name") or ""),
            href=_href(body.get("_links", {}).get("self")),
        )


class AptibleRoleInfo(BaseModel):
    """A role; ``organization_id`` comes from ``_links.organization``: ``AptibleRoleInfo.from_api(body)``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    name: str = ""
    type: str = ""
    organization_id: str = ""

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> AptibleRoleInfo:
        links = body.get("_links", {})
        return cls(
            id=str(body.get("id", "")).lower(),
            name=str(body.get("name") or ""),
            type=str(body.get("type") or ""),
            organization_id=link_id(links.get("organization")).lower(),
        )


class AptibleMembership(BaseModel):
    """A membership of a user in a role; ``privileged`` is what the dashboard calls "Role Admin".

    ``AptibleMembership.from_api(item, role_id)`` reads one item of ``_embedded.memberships``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    user_id: str
    role_id: str = ""
    privileged: bool = False
    #: Aptible's ``created_at`` (``None`` when absent or unparseable): tells a grant from standing access.
    created_at: datetime | None = None

    @classmethod
    def from_api(cls, body: dict[str, Any], role_id: str = "") -> AptibleMembership:
        links = body.get("_links", {})
        return cls(
            id=str(body.get("id", "")).lower(),
            user_id=link_id(links.get("user")).lower(),
            role_id=(link_id(links.get("role")) or role_id).lower(),
            privileged=bool(body.get("privileged", False)),
            created_at=parse_time(body.get("created_at")),
        )


def parse_time(value: Any) -> datetime | None:
    """An Aptible timestamp (``2024-01-02T03:04:05.000Z``) as an aware datetime, or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _retry_after(resp: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or ``None``."""
    raw = resp.headers.get("Retry-After")
    if not raw:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass
class _Token:
    value: SecretStr
    expires_at: float  # time.time()
    user_id: str
    user_href: str


# One cache per process: every connector call builds a fresh client (a client is bound to the event loop it
# was made in, and flytekit runs create/get/delete on different loops locally), but the bot should not log
# in once per call.
_TOKENS: dict[tuple[str, str], _Token] = {}
_TOKENS_LOCK = threading.Lock()


def clear_token_cache() -> None:
    """Forget every cached token (tests; and after the bot's credentials are rotated)."""
    with _TOKENS_LOCK:
        _TOKENS.clear()


def _error_fields(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("error") or ""), str(body.get("message") or body.get("error_description") or "")


def _membership_or_none(resp: httpx.Response, role_id: str) -> AptibleMembership | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not body.get("id"):
        return None
    return AptibleMembership.from_api(body, role_id)


class AptibleClient:
    """An async client for one bot user on one auth host; use it as ``async with``.

    Example::

        async with AptibleClient("https://auth.aptible.com", "bot@example.com", SecretStr(pw)) as c:
            users = await c.list_org_users(org_id)
    """

    def __init__(
        self,
        auth_url: str,
        username: str,
        password: SecretStr,
        *,
        settings: AptibleClientSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        verify: str | bool = True,
    ) -> None:
        self._verify = verify
        self.auth_url = auth_url.rstrip("/")
        self.username = username
        self._password = password
        self.settings = settings or AptibleClientSettings()
        self._transport = transport
        self._sleep = sleep
        self._http: httpx.AsyncClient | None = None
        origin = urlsplit(self.auth_url)
        self._origin = (origin.scheme, origin.netloc)

    def __repr__(self) -> str:
        return f"AptibleClient(auth_url={self.auth_url!r}, username={self.username!r})"

    async def __aenter__(self) -> AptibleClient:
        self._http = httpx.AsyncClient(
            base_url=self.auth_url,
            timeout=self.settings.timeout_seconds,
            # Aptible answers HAL; some error paths answer plain JSON.
            headers={"Accept": "application/hal+json, application/json", "Content-Type": "application/json"},
            transport=self._transport,
            verify=self._ssl_context(),
            follow_redirects=False,
        )
        return self

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if isinstance(self._verify, str):
            # The operator file's ca_bundle: trust exactly that CA for the auth host.
            return ssl.create_default_context(cafile=self._verify)
        return self._verify

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- authentication ---------------------------------------------------------------------------------

    @property
    def _cache_key(self) -> tuple[str, str]:
        return (self.auth_url, self.username)

    def _forget_token(self) -> None:
        with _TOKENS_LOCK:
            _TOKENS.pop(self._cache_key, None)

    async def _token(self) -> _Token:
        with _TOKENS_LOCK:
            tok = _TOKENS.get(self._cache_key)
        if tok is not None and tok.expires_at - self.settings.token_refresh_margin_seconds > time.time():
            return tok
        tok = await self._login()
        with _TOKENS_LOCK:
            _TOKENS[self._cache_key] = tok
        return tok

    async def _login(self) -> _Token:
        lifetime = self.settings.token_lifetime_seconds
        body = {
            "grant_type": "password",
            "username": self.username,
            "password": self._password.get_secret_value(),
            "scope": "manage",
            "expires_in": lifetime,
        }
        # Never retried on 429 (or on a refusal): Aptible locks accounts after repeated logins.
        resp = await self._send("POST", "/tokens", json=body, auth=False, retry_429=False)
        if resp.status_code == 429:
            raise LoginRateLimitedError(self.auth_url)
        if resp.status_code not in (200, 201):
            code, message = _error_fields(resp)
            if code == "otp_token_required":
                raise MfaRequiredError(self.auth_url)
            raise AptibleAuthError(self.auth_url, code or f"HTTP {resp.status_code}", message)
        data = resp.json()
        access = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(access, str) or not access:
            raise AptibleAuthError(self.auth_url, "no access_token in the answer")
        now = time.time()
        expires_at = now + lifetime
        expires_in = data.get("expires_in")
        if isinstance(expires_in, int | float) or (isinstance(expires_in, str) and expires_in.isdigit()):
            expires_at = now + float(expires_in)
        user_link = data.get("_links", {}).get("user")
        return _Token(SecretStr(access), expires_at, link_id(user_link).lower(), _href(user_link))

    async def bot_user_id(self) -> str:
        """The id of the user the credentials belong to (from the token's ``_links.user``)."""
        return (await self._token()).user_id

    # -- transport --------------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        cap = min(s.backoff_max_seconds, s.backoff_initial_seconds * (2 ** (attempt - 1)))
        return random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not security

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return not parts.scheme or (parts.scheme, parts.netloc) == self._origin

    async def _send(
        self,
        method: str,
        url: str,
        *,
        json: dict[str, Any] | None = None,
        auth: bool = True,
        retry: bool = True,
        retry_429: bool = True,
    ) -> httpx.Response:
        """One call with retries on 5xx/429/transport errors and one re-login on a stale token."""
        if self._http is None:
            raise RuntimeError("use AptibleClient as 'async with'")
        if not self._same_origin(url):
            # A next link or user_url pointing elsewhere must never receive the bot's token.
            raise AptibleApiError(
                method, urlsplit(url).path, 0, "foreign_link", "link to another host refused"
            )
        path = urlsplit(url).path or url
        attempts = 0
        relogged = False
        while True:
            attempts += 1
            headers = {}
            if auth:
                headers["Authorization"] = "Bearer " + (await self._token()).value.get_secret_value()
            try:
                resp = await self._http.request(method, url, json=json, headers=headers)
            except httpx.TransportError as e:
                if not retry or attempts >= self.settings.max_attempts:
                    raise AptibleUnavailableError(method, path, attempts, type(e).__name__) from None
                await self._sleep(self._backoff(attempts))
                continue
            if resp.status_code == 401 and auth and not relogged:
                code, _ = _error_fields(resp)
                if code in ("invalid_token", "expired_token"):
                    self._forget_token()
                    relogged = True
                    attempts -= 1  # a stale token is not Aptible failing
                    continue
            if resp.status_code == 429 and not retry_429:
                return resp
            if resp.status_code >= 500 or resp.status_code == 429:
                if not retry or attempts >= self.settings.max_attempts:
                    raise AptibleUnavailableError(method, path, attempts, f"HTTP {resp.status_code}")
                wait = _retry_after(resp)
                if wait is None:
                    wait = self._backoff(attempts)
                await self._sleep(min(wait, self.settings.retry_after_max_seconds))
                continue
            return resp

    def _api_error(self, method: str, url: str, resp: httpx.Response) -> AptibleApiError:
        code, message = _error_fields(resp)
        return AptibleApiError(method, urlsplit(url).path or url, resp.status_code, code, message)

    async def _get(self, url: str) -> dict[str, Any] | None:
        resp = await self._send("GET", url)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._api_error("GET", url, resp)
        try:
            body = resp.json()
        except ValueError:
            raise AptibleApiError("GET", urlsplit(url).path, 200, "bad_body", "answer is not JSON") from None
        return body if isinstance(body, dict) else {}

    async def _list(self, url: str, key: str) -> list[dict[str, Any]]:
        """Every item of a HAL collection, following ``_links.next``."""
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        next_url: str | None = url
        total: int | None = None
        while next_url:
            if next_url in seen or len(seen) >= self.settings.max_pages:
                raise AptibleApiError(
                    "GET", urlsplit(url).path, 0, "pagination_loop", f"stopped at {len(seen)} pages"
                )
            seen.add(next_url)
            body = await self._get(next_url)
            if body is None:
                raise AptibleApiError("GET", urlsplit(next_url).path, 404, "not_found")
            page = body.get("_embedded", {}).get(key, [])
            items.extend(x for x in page if isinstance(x, dict))
            if isinstance(body.get("total_count"), int):
                total = body["total_count"]
            nxt = _href(body.get("_links", {}).get("next")) or None
            per_page = body.get("per_page")
            if nxt and isinstance(per_page, int) and len(page) < per_page:
                # Only the last page may be short.
                raise ShortReadError(urlsplit(next_url).path, len(items), total or len(items) + 1)
            next_url = nxt
        if total is not None and len(items) < total:
            # A page went missing (a proxy, a collection that shrank mid-read): deciding "this user holds no
            # membership" on a partial list could grant twice or report standing access wrongly.
            raise ShortReadError(urlsplit(url).path, len(items), total)
        return items

    # -- resources --------------------------------------------------------------------------------------

    async def list_org_users(self, organization_id: str) -> list[AptibleUser]:
        return [
            AptibleUser.from_api(u)
            for u in await self._list(f"/organizations/{organization_id}/users", "users")
        ]

    async def list_org_roles(self, organization_id: str) -> list[AptibleRoleInfo]:
        return [
            AptibleRoleInfo.from_api(r)
            for r in await self._list(f"/organizations/{organization_id}/roles", "roles")
        ]

    async def get_organization(self, organization_id: str) -> dict[str, Any] | None:
        """The organization resource (``sso_enforced`` among its attributes), or ``None`` if not visible."""
        try:
            return await self._get(f"/organizations/{organization_id}")
        except AptibleApiError as e:
            if e.status in (401, 403):
                return None
            raise

    async def get_role(self, role_id: str) -> AptibleRoleInfo | None:
        body = await self._get(f"/roles/{role_id}")
        return None if body is None else AptibleRoleInfo.from_api(body)

    async def list_user_roles(self, user_id: str) -> list[AptibleRoleInfo]:
        return [AptibleRoleInfo.from_api(r) for r in await self._list(f"/users/{user_id}/roles", "roles")]

    async def list_role_memberships(self, role_id: str) -> list[AptibleMembership]:
        raw = await self._list(f"/roles/{role_id}/memberships", "memberships")
        return [AptibleMembership.from_api(m, role_id) for m in raw]

    async def find_membership(self, role_id: str, user_id: str) -> AptibleMembership | None:
        for m in await self.list_role_memberships(role_id):
            if m.user_id == user_id.lower():
                return m
        return None

    def user_url(self, user_id: str) -> str:
        return f"{self.auth_url}/users/{user_id}"

    async def create_membership(self, role_id: str, user_id: str, user_url: str = "") -> AptibleMembership:
        """Add the user to the role. Safe to call again: a membership that landed is found, not doubled."""
        url = f"/roles/{role_id}/memberships"
        body = {"user_url": user_url or self.user_url(user_id)}
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                resp = await self._send("POST", url, json=body, retry=False)
            except AptibleUnavailableError:
                # The request may have been applied before the answer was lost: look before trying again.
                existing = await self.find_membership(role_id, user_id)
                if existing is not None:
                    return existing
                if attempt >= self.settings.max_attempts:
                    raise
                await self._sleep(self._backoff(attempt))
                continue
            if resp.status_code in (200, 201):
                created = _membership_or_none(resp, role_id)
                if created is not None:
                    return created
                # Created, but the answer is empty, not JSON or has no id: look it up and adopt it, so it is
                # removed at the end like any grant (never an orphan).
                existing = await self.find_membership(role_id, user_id)
                if existing is not None:
                    return existing
                raise AptibleApiError(
                    "POST", url, resp.status_code, "bad_body", "created, but the membership is not listed"
                )
            if resp.status_code in (409, 422):
                existing = await self.find_membership(role_id, user_id)
                if existing is not None:
                    return existing
            raise self._api_error("POST", url, resp)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_membership(self, membership_id: str) -> AptibleMembership | None:
        """``GET /memberships/{id}`` (``Aptible::Auth::Membership.find``); ``None`` when it is gone."""
        body = await self._get(f"/memberships/{membership_uuid(membership_id)}")
        if body is None:
            return None
        m = AptibleMembership.from_api(body)
        if m.id != membership_uuid(membership_id):
            raise AptibleApiError(
                "GET", "/memberships/{id}", 200, "bad_body", "the answer is another membership"
            )
        return m

    async def delete_membership(self, membership_id: str) -> bool:
        """Remove a membership; ``False`` when it was already gone (a ``404``), which is not an error."""
        url = f"/memberships/{membership_uuid(membership_id)}"
        resp = await self._send("DELETE", url)
        if resp.status_code == 404:
            return False
        if resp.status_code in (200, 202, 204):
            return True
        raise self._api_error("DELETE", url, resp)
