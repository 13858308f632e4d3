"""A fake of Aptible's auth API for tests: stdlib only, run as its own process on loopback.

    python -m tests.support.fake_aptible --seed seed.json [--port 0] [--page-size 2]

It prints ``listening <port>`` once ready. The seed is JSON::

    {"organizations": [{"id": ..., "name": ...}],
     "users": [{"id": ..., "email": ..., "name": ..., "password": ... (bot only), "otp": false}],
     "roles": [{"id": ..., "name": ..., "type": "platform_user", "organization_id": ...}],
     "memberships": [{"role_id": ..., "user_id": ..., "privileged": false}]}

The API part follows Aptible's shapes (see docs/aptible.md): ``POST /tokens`` (password grant),
``GET /organizations/{id}/users`` (the users holding a role of the organization), ``.../roles``,
``GET /roles/{id}``, ``GET /users/{id}/roles``, ``GET|POST /roles/{id}/memberships``,
``GET|DELETE /memberships/{id}``; HAL ``_embedded``/``_links`` with ``_links.next`` pages of ``--page-size``;
errors ``{"code", "error", "message"}``; ``401 invalid_token``/``expired_token``; ``otp_token_required`` for
a user with ``"otp": true``. Creating or deleting a membership needs a privileged ("Role Admin") membership
of the caller in the role, a membership in an ``owner`` role of the organization, or one in a
``platform_owner`` (Deploy Owner) role for a custom role. An organization with ``"sso_enforced": true``
refuses password tokens (403 on its collections, 404 on its roles) unless the caller is an Account Owner or
in its ``"sso_allowlist"``. ``--tls-cert``/``--tls-key`` serve https.

Test-only endpoints, under ``/_fake``:

* ``GET /_fake/memberships``: every membership ``{id, role_id, user_id, privileged, created_at}``.
* ``POST /_fake/memberships``: add one ``{role_id, user_id, privileged, created_at?, id?}``; answers ``{id}``.
* ``POST /_fake/memberships/remove``: ``{id}``, as an admin removes one in the dashboard.
* ``GET /_fake/requests``: every request seen, ``{method, path, status, accept}`` (never a body or any
  other header).
* ``POST /_fake/faults``: ``{"rules": [{"method": "DELETE", "path_prefix": "/memberships/", "action":
  "status", "status": 503, "count": 2}]}``; actions ``status`` (answer before doing anything, with
  ``Retry-After: <retry_after>`` if given), ``delay`` (``seconds``, then carry on), ``apply_then_status`` (do
  it, then answer ``status``: a lost answer), ``apply_then_body`` (do it, answer with ``body`` as is).
  ``count`` -1 means forever. ``{"clear": true}`` removes every rule.
* ``POST /_fake/tokens/expire``: every token issued so far answers ``expired_token`` from now on.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class _State:
    base: str = ""
    page_size: int = 50
    orgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    memberships: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)


STATE = _State()


def _load_seed(seed: dict[str, Any]) -> None:
    for o in seed.get("organizations", []):
        STATE.orgs[o["id"].lower()] = dict(o, id=o["id"].lower())
    for u in seed.get("users", []):
        STATE.users[u["id"].lower()] = dict(u, id=u["id"].lower())
    for r in seed.get("roles", []):
        STATE.roles[r["id"].lower()] = dict(
            r, id=r["id"].lower(), organization_id=r["organization_id"].lower()
        )
    for m in seed.get("memberships", []):
        mid = m.get("id", str(uuid.uuid4())).lower()
        STATE.memberships[mid] = {
            "id": mid,
            "role_id": m["role_id"].lower(),
            "user_id": m["user_id"].lower(),
            "privileged": bool(m.get("privileged", False)),
            "created_at": m.get("created_at") or _now_iso(),
        }


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _link(path: str) -> dict[str, str]:
    return {"href": STATE.base + path}


def _user_json(u: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": u["id"],
        "name": u.get("name", ""),
        "email": u.get("email", ""),
        "username": u.get("email", ""),
        "verified": True,
        "_type": "user",
        "_links": {"self": _link(f"/users/{u['id']}"), "roles": _link(f"/users/{u['id']}/roles")},
    }


def _role_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "name": r.get("name", ""),
        "type": r.get("type", "platform_user"),
        "_type": "role",
        "_links": {
            "self": _link(f"/roles/{r['id']}"),
            "organization": _link(f"/organizations/{r['organization_id']}"),
            "memberships": _link(f"/roles/{r['id']}/memberships"),
        },
    }


def _membership_json(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": m["id"],
        "privileged": m["privileged"],
        "created_at": m["created_at"],
        "_type": "membership",
        "_links": {
            "self": _link(f"/memberships/{m['id']}"),
            "user": _link(f"/users/{m['user_id']}"),
            "role": _link(f"/roles/{m['role_id']}"),
        },
    }


class _Answer(Exception):
    def __init__(self, status: int, body: Any = None) -> None:
        self.status = status
        self.body = body


def _error(status: int, code: str, message: str) -> _Answer:
    return _Answer(status, {"code": status, "error": code, "message": message})


def _page(path: str, query: dict[str, list[str]], key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    page = int(query.get("page", ["1"])[0])
    size = STATE.page_size
    chunk = items[(page - 1) * size : page * size]
    links: dict[str, Any] = {"self": _link(f"{path}?page={page}")}
    if page * size < len(items):
        links["next"] = _link(f"{path}?page={page + 1}")
    return {
        "_embedded": {key: chunk},
        "_links": links,
        "current_page": page,
        "total_count": len(items),
        "per_page": size,
    }


def _can_manage(user_id: str, role: dict[str, Any]) -> bool:
    """Aptible's rule: a Role Admin of the role, an Account Owner of the organization, or a Deploy Owner
    (``platform_owner``), who is implicitly Role Admin of every custom role of the organization."""
    for m in STATE.memberships.values():
        if m["user_id"] != user_id:
            continue
        if m["role_id"] == role["id"] and m["privileged"]:
            return True
        other = STATE.roles.get(m["role_id"])
        if not other or other["organization_id"] != role["organization_id"]:
            continue
        if other.get("type") == "owner":
            return True
        if other.get("type") == "platform_owner" and role.get("type", "platform_user") not in (
            "owner",
            "platform_owner",
        ):
            return True
    return False


def _sso_blocked(user_id: str, org_id: str) -> bool:
    """An SSO-enforced organization refuses password tokens, except for Account Owners and allowlisted users."""
    org = STATE.orgs.get(org_id)
    if not org or not org.get("sso_enforced"):
        return False
    if user_id in org.get("sso_allowlist", []):
        return False
    for m in STATE.memberships.values():
        r = STATE.roles.get(m["role_id"])
        if m["user_id"] == user_id and r and r["organization_id"] == org_id and r.get("type") == "owner":
            return False
    return True


def _sso_check(user_id: str, org_id: str) -> None:
    if _sso_blocked(user_id, org_id):
        raise _error(403, "forbidden", "This organization requires SSO: log in with SSO to access it")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # a request line is harmless, but tests keep their output for assertions

    # -- plumbing ---------------------------------------------------------------------------------------

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        if not n:
            return {}
        try:
            return json.loads(self.rfile.read(n))
        except ValueError:
            raise _error(400, "bad_request", "body is not JSON") from None

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/hal+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fault(self, method: str, path: str) -> dict[str, Any] | None:
        with STATE.lock:
            for rule in STATE.rules:
                if rule.get("method", method) != method or not path.startswith(rule.get("path_prefix", "")):
                    continue
                if rule.get("count", 1) == 0:
                    continue
                if rule.get("count", 1) > 0:
                    rule["count"] = rule.get("count", 1) - 1
                return dict(rule)
        return None

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path.rstrip("/") or "/", parse_qs(parts.query)
        body = self._body() if method in ("POST", "PUT", "PATCH") else {}
        status = 500
        try:
            if path.startswith("/_fake/"):
                status, out = self._fake(method, path, body)
                self._send(status, out)
                return
            rule = self._fault(method, path)
            if rule and rule.get("action") == "delay":
                time.sleep(float(rule.get("seconds", 1)))
            if rule and rule.get("action", "status") == "status":
                status = int(rule.get("status", 503))
                extra = {"Retry-After": str(rule["retry_after"])} if "retry_after" in rule else None
                self._send(status, {"code": status, "error": "injected_fault", "message": "injected"}, extra)
                return
            with STATE.lock:
                status, out = self._route(method, path, query, body)
            if rule and rule.get("action") == "apply_then_status":
                raise _error(int(rule.get("status", 503)), "injected_fault", "applied, answer lost")
            if rule and rule.get("action") == "apply_then_body":
                # Done, but the answer's body is replaced (empty, not JSON, or JSON without an id).
                self._send(status, str(rule.get("body", "")).encode())
                return
            self._send(status, out)
        except _Answer as a:
            status = a.status
            self._send(a.status, a.body)
        finally:
            if not path.startswith("/_fake/"):
                with STATE.lock:
                    STATE.requests.append(
                        {
                            "method": method,
                            "path": path,
                            "status": status,
                            "accept": self.headers.get("Accept", ""),
                        }
                    )

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    # -- test-only --------------------------------------------------------------------------------------

    def _fake(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with STATE.lock:
            if method == "GET" and path == "/_fake/memberships":
                ms = [
                    {k: m[k] for k in ("id", "role_id", "user_id", "privileged", "created_at")}
                    for m in STATE.memberships.values()
                ]
                return 200, {"memberships": ms}
            if method == "GET" and path == "/_fake/requests":
                return 200, {"requests": list(STATE.requests)}
            if method == "POST" and path == "/_fake/faults":
                if body.get("clear"):
                    STATE.rules.clear()
                STATE.rules.extend(body.get("rules", []))
                return 200, {"rules": len(STATE.rules)}
            if method == "POST" and path == "/_fake/tokens/expire":
                for t in STATE.tokens.values():
                    t["expires_at"] = 0.0
                return 200, {"expired": len(STATE.tokens)}
            if method == "POST" and path == "/_fake/memberships/remove":
                # An admin removes a membership in the dashboard (not through the bot).
                return 200, {
                    "removed": STATE.memberships.pop(str(body.get("id", "")).lower(), None) is not None
                }
            if method == "POST" and path == "/_fake/memberships":
                mid = str(body.get("id") or uuid.uuid4()).lower()
                _load_seed({"memberships": [{**body, "id": mid}]})
                return 201, {"id": mid}
        raise _error(404, "not_found", "no such test endpoint")

    # -- the API ----------------------------------------------------------------------------------------

    def _caller(self) -> str:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise _error(401, "invalid_token", "Authorization header missing")
        tok = STATE.tokens.get(auth[len("Bearer ") :])
        if tok is None:
            raise _error(401, "invalid_token", "Token is invalid")
        if tok["expires_at"] <= time.time():
            raise _error(401, "expired_token", "Token has expired")
        return str(tok["user_id"])

    def _tokens(self, body: dict[str, Any]) -> tuple[int, Any]:
        if body.get("grant_type") != "password":
            raise _error(400, "unsupported_grant_type", "grant_type must be password")
        email = str(body.get("username", "")).lower()
        user = next((u for u in STATE.users.values() if u.get("email", "").lower() == email), None)
        if user is None or not user.get("password") or body.get("password") != user["password"]:
            raise _error(401, "invalid_credentials", "Invalid email or password")
        if user.get("otp") and not body.get("otp_token"):
            raise _error(401, "otp_token_required", "Two-factor authentication is required")
        lifetime = min(int(body.get("expires_in") or 3600), 7 * 24 * 3600)
        value = secrets.token_urlsafe(24)
        tid = str(uuid.uuid4())
        STATE.tokens[value] = {"user_id": user["id"], "expires_at": time.time() + lifetime}
        return 201, {
            "id": tid,
            "access_token": value,
            "token_type": "bearer",
            "expires_in": lifetime,
            "expires_at": int(time.time() + lifetime),
            "created_at": _now_iso(),
            "scope": body.get("scope", "manage"),
            "_type": "token",
            "_links": {"self": _link(f"/tokens/{tid}"), "user": _link(f"/users/{user['id']}"), "actor": None},
        }

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        seg = path.strip("/").split("/")
        if method == "POST" and seg == ["tokens"]:
            return self._tokens(body if isinstance(body, dict) else {})
        caller = self._caller()
        if method == "GET" and len(seg) == 2 and seg[0] == "organizations":
            o = STATE.orgs.get(seg[1].lower())
            if o is None:
                raise _error(404, "not_found", "Organization not found")
            return 200, {
                "id": o["id"],
                "name": o.get("name", ""),
                "sso_enforced": bool(o.get("sso_enforced", False)),
                "_type": "organization",
                "_links": {"self": _link(f"/organizations/{o['id']}")},
            }
        if method == "GET" and len(seg) == 3 and seg[0] == "organizations" and seg[2] in ("users", "roles"):
            org = seg[1].lower()
            if org not in STATE.orgs:
                raise _error(404, "not_found", "Organization not found")
            _sso_check(caller, org)
            role_ids = {r["id"] for r in STATE.roles.values() if r["organization_id"] == org}
            if seg[2] == "roles":
                items = [_role_json(STATE.roles[i]) for i in sorted(role_ids)]
            else:
                uids = sorted({m["user_id"] for m in STATE.memberships.values() if m["role_id"] in role_ids})
                items = [_user_json(STATE.users[u]) for u in uids if u in STATE.users]
            return 200, _page(path, query, seg[2], items)
        if method == "GET" and len(seg) == 2 and seg[0] == "roles":
            role = STATE.roles.get(seg[1].lower())
            if role is None or _sso_blocked(caller, role["organization_id"]):
                raise _error(404, "not_found", "Role not found")  # as Aptible hides what a token cannot see
            return 200, _role_json(role)
        if method == "GET" and len(seg) == 2 and seg[0] == "users":
            user = STATE.users.get(seg[1].lower())
            if user is None:
                raise _error(404, "not_found", "User not found")
            return 200, _user_json(user)
        if method == "GET" and len(seg) == 3 and seg[0] == "users" and seg[2] == "roles":
            uid = seg[1].lower()
            rids = sorted({m["role_id"] for m in STATE.memberships.values() if m["user_id"] == uid})
            return 200, _page(
                path, query, "roles", [_role_json(STATE.roles[r]) for r in rids if r in STATE.roles]
            )
        if len(seg) == 3 and seg[0] == "roles" and seg[2] == "memberships":
            role = STATE.roles.get(seg[1].lower())
            if role is None:
                raise _error(404, "not_found", "Role not found")
            _sso_check(caller, role["organization_id"])
            if method == "GET":
                ms = sorted(
                    (m for m in STATE.memberships.values() if m["role_id"] == role["id"]),
                    key=lambda m: m["id"],
                )
                return 200, _page(path, query, "memberships", [_membership_json(m) for m in ms])
            if method == "POST":
                if not _can_manage(caller, role):
                    raise _error(403, "forbidden", "You are not authorized to manage this role")
                user_url = str(body.get("user_url", "")) if isinstance(body, dict) else ""
                uid = user_url.rstrip("/").rsplit("/", 1)[-1].lower()
                if not user_url.startswith(STATE.base + "/users/") or uid not in STATE.users:
                    raise _error(422, "unprocessable_entity", "User can't be blank")
                if any(
                    m["role_id"] == role["id"] and m["user_id"] == uid for m in STATE.memberships.values()
                ):
                    raise _error(422, "unprocessable_entity", "User has already been taken")
                mid = str(uuid.uuid4())
                m = {
                    "id": mid,
                    "role_id": role["id"],
                    "user_id": uid,
                    "privileged": False,
                    "created_at": _now_iso(),
                }
                STATE.memberships[mid] = m
                return 201, _membership_json(m)
        if method == "GET" and len(seg) == 2 and seg[0] == "memberships":
            # Aptible::Auth::Membership.find(id): the membership as its role's collection lists it.
            m = STATE.memberships.get(seg[1].lower())
            if m is None or _sso_blocked(caller, STATE.roles[m["role_id"]]["organization_id"]):
                raise _error(404, "not_found", "Membership not found")
            return 200, _membership_json(m)
        if method == "DELETE" and len(seg) == 2 and seg[0] == "memberships":
            m = STATE.memberships.get(seg[1].lower())
            if m is None:
                raise _error(404, "not_found", "Membership not found")
            if not _can_manage(caller, STATE.roles[m["role_id"]]):
                raise _error(403, "forbidden", "You are not authorized to manage this role")
            del STATE.memberships[m["id"]]
            return 204, None
        raise _error(404, "not_found", f"no route for {method} {path}")

    def do_PUT(self) -> None:  # noqa: N802
        self._send(405, {"code": 405, "error": "method_not_allowed", "message": "PUT"})


def serve(
    seed: dict[str, Any], port: int = 0, page_size: int = 50, tls: tuple[str, str] | None = None
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    STATE.base = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    STATE.page_size = page_size
    _load_seed(seed)
    return server


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", required=True, help="JSON seed file")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--tls-cert", help="serve https with this certificate (PEM)")
    p.add_argument("--tls-key", help="and this key (PEM)")
    a = p.parse_args(argv)
    with open(a.seed) as f:
        seed = json.load(f)
    tls = (a.tls_cert, a.tls_key) if a.tls_cert else None
    server = serve(seed, a.port, a.page_size, tls)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


# -- the test side: start the server as a process and talk to its test endpoints --------------------------

#: The organization, roles and users of :func:`standard_seed` (ids as Aptible answers them: lower case).
ORG = "94a49e57-d046-4d9d-9dbf-f7711e337368"
OTHER_ORG = "0b0b0b0b-0000-4000-8000-000000000001"
ADMIN_ROLE = "24463ef7-1d6e-402e-a365-69cb6db80c6e"  # the bot is a Role Admin of it
RO_ROLE = "c7d5f21a-1d4e-4b39-9957-f8acabde2a3a"  # the bot is NOT a Role Admin of it
DEV_ROLE = "d0d0d0d0-0000-4000-8000-000000000002"  # everybody's base role: makes them organization users
FOREIGN_ROLE = "f0f0f0f0-0000-4000-8000-000000000003"  # a role of another organization
OWNER_ROLE = "f0f0f0f0-0000-4000-8000-000000000004"  # the organization's Owners role (nobody in it)
DEPLOY_OWNER_ROLE = "f0f0f0f0-0000-4000-8000-000000000005"  # type platform_owner (nobody in it)
BOT = "b0b0b0b0-0000-4000-8000-000000000010"
MFA_BOT = "b0b0b0b0-0000-4000-8000-000000000011"
ADA = "a0a0a0a0-0000-4000-8000-000000000020"
BOB = "a0a0a0a0-0000-4000-8000-000000000021"  # holds ADMIN_ROLE already (standing access)
TWIN1 = "a0a0a0a0-0000-4000-8000-000000000022"
TWIN2 = "a0a0a0a0-0000-4000-8000-000000000023"
OUTSIDER = "a0a0a0a0-0000-4000-8000-000000000024"  # a user of the other organization only
APPROVER = "a0a0a0a0-0000-4000-8000-000000000025"  # an approver who is an Aptible user (not of the role)
BOT_EMAIL = "bot@example.com"


def standard_seed(
    bot_password: str,
    *,
    users_extra: int = 0,
    bot_email: str = BOT_EMAIL,
    approver_email: str = "approver@example.com",
) -> dict[str, Any]:
    """An organization with a bot (Role Admin of ADMIN_ROLE only), Ada, Bob (already admin) and two users
    whose emails differ only by case; ``users_extra`` adds filler users to exercise pagination.

    Tests that store the bot's credentials in moto pass a random ``bot_email``: the secrets factory records
    every string of a JSON secret as a secret value, and a fixed address would then be "leaked" by anyone.
    """
    users = [
        {"id": BOT, "email": bot_email, "name": "Bot", "password": bot_password},
        {
            "id": MFA_BOT,
            "email": "mfa-bot@example.com",
            "name": "MFA bot",
            "password": bot_password,
            "otp": True,
        },
        {"id": ADA, "email": "Ada.Lovelace@Example.com", "name": "Ada"},
        {"id": BOB, "email": "bob@example.com", "name": "Bob"},
        {"id": TWIN1, "email": "Twin@example.com", "name": "Twin 1"},
        {"id": TWIN2, "email": "twin@example.com", "name": "Twin 2"},
        {"id": OUTSIDER, "email": "outsider@example.com", "name": "Outsider"},
        {"id": APPROVER, "email": approver_email, "name": "Approver"},
    ]
    users += [
        {"id": f"e0e0e0e0-0000-4000-8000-{i:012d}", "email": f"filler{i}@example.com", "name": f"F{i}"}
        for i in range(users_extra)
    ]
    memberships = [{"role_id": DEV_ROLE, "user_id": u["id"]} for u in users if u["id"] != OUTSIDER]
    memberships += [
        {"role_id": ADMIN_ROLE, "user_id": BOT, "privileged": True},
        {"role_id": ADMIN_ROLE, "user_id": MFA_BOT, "privileged": True},
        {"role_id": ADMIN_ROLE, "user_id": BOB},
        {"role_id": FOREIGN_ROLE, "user_id": OUTSIDER},
        {"role_id": FOREIGN_ROLE, "user_id": BOT, "privileged": True},
    ]
    return {
        "organizations": [{"id": ORG, "name": "Main"}, {"id": OTHER_ORG, "name": "Other"}],
        "users": users,
        "roles": [
            {"id": ADMIN_ROLE, "name": "Admin Role", "type": "platform_user", "organization_id": ORG},
            {"id": RO_ROLE, "name": "Read Only", "type": "platform_user", "organization_id": ORG},
            {"id": DEV_ROLE, "name": "Developers", "type": "platform_user", "organization_id": ORG},
            {"id": OWNER_ROLE, "name": "Owners", "type": "owner", "organization_id": ORG},
            {
                "id": DEPLOY_OWNER_ROLE,
                "name": "Deploy Owners",
                "type": "platform_owner",
                "organization_id": ORG,
            },
            {
                "id": FOREIGN_ROLE,
                "name": "Their Admin",
                "type": "platform_user",
                "organization_id": OTHER_ORG,
            },
        ],
        "memberships": memberships,
    }


@dataclass
class FakeAptible:
    process: subprocess.Popen[str]
    port: int
    ca_file: str | None = None  # the certificate, when it serves https

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import ssl

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        ctx = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:  # noqa: S310 - loopback test server
            raw = r.read()
        return json.loads(raw) if raw else None

    def memberships(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/memberships")["memberships"])

    def holds(self, role_id: str, user_id: str) -> bool:
        return any(
            m["role_id"] == role_id.lower() and m["user_id"] == user_id.lower() for m in self.memberships()
        )

    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/requests")["requests"])

    def faults(self, *rules: dict[str, Any], clear: bool = False) -> None:
        self._call("POST", "/_fake/faults", {"rules": list(rules), "clear": clear})

    def expire_tokens(self) -> None:
        self._call("POST", "/_fake/tokens/expire", {})

    def add_membership(
        self, role_id: str, user_id: str, privileged: bool = False, created_at: str | None = None
    ) -> str:
        """Add a membership as someone else did (``created_at`` back-dates it); its id."""
        body: dict[str, Any] = {"role_id": role_id, "user_id": user_id, "privileged": privileged}
        if created_at:
            body["created_at"] = created_at
        return str(self._call("POST", "/_fake/memberships", body)["id"])

    def remove_membership(self, membership_id: str) -> None:
        """Remove a membership as an admin does in the dashboard (not through the bot)."""
        self._call("POST", "/_fake/memberships/remove", {"id": membership_id})

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def self_signed_cert(directory: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key (openssl), for the https fake."""
    cert, key = os.path.join(directory, "fake-aptible.pem"), os.path.join(directory, "fake-aptible.key")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def start_fake_aptible(
    seed: dict[str, Any], seed_path: str, page_size: int = 2, tls: bool = False
) -> FakeAptible:
    """Write the seed (mode 0600: it holds the bot password) and start the server process (https if ``tls``)."""
    fd = os.open(seed_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(seed, f)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    extra: list[str] = []
    cert = None
    if tls:
        cert, key = self_signed_cert(os.path.dirname(seed_path))
        extra = ["--tls-cert", cert, "--tls-key", key]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.fake_aptible",
            "--seed",
            seed_path,
            "--page-size",
            str(page_size),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=root,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening "):
        proc.kill()
        raise RuntimeError(f"fake Aptible did not start: {line!r}")
    return FakeAptible(proc, int(line.split()[1]), cert)


if __name__ == "__main__":
    main()
