"""The AWS Secrets Manager Agent HTTP API of ``pyflyte-awssecrets serve``, as curl or an SDK sees it.

The server is its own process against moto; the client is ``http.client`` plus raw sockets, written from the
API description (AWS's agent: GetSecretValue's JSON, the SSRF token header, status codes).
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CREATED_VALUES, SecretFactory, new_value, remember
from tests.support.serve_clients import (
    TOKEN_HEADER,
    Hidden,
    HiddenStr,
    ServeProcess,
    agent_config,
    clean_env,
    http_get,
    raw_http,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def secret(secrets_factory: SecretFactory, unique: str) -> Hidden:
    value = {"password": new_value()}
    arn, _ = secrets_factory.secret(f"serve/http-{unique}", value)
    return Hidden(arn=arn, name=f"serve/http-{unique}", value=json.dumps(value))


@pytest.fixture
def token() -> str:
    t = HiddenStr(secrets.token_urlsafe(24))
    remember(t)  # the token must not show up in logs either
    return t


@pytest.fixture
def server(tmp_path: Path, secret: Hidden, token: str) -> Iterator[ServeProcess]:
    cfg = agent_config(tmp_path / "agent.yaml", {"Db": secret["arn"]})
    (tmp_path / "token").write_text(token + "\n")
    srv = ServeProcess(
        ["--config", str(cfg), "--secret-agent", "off", "--http", "127.0.0.1:0"],
        tmp_path,
        env=clean_env(AWS_TOKEN=f"file://{tmp_path / 'token'}"),  # AWS's agent's way to give the token
    ).wait_ready()
    yield srv
    assert srv.alive(), f"the server died:\n{srv.log()[-2000:]}"
    assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def _get(srv: ServeProcess, token: str | None, **params: str) -> tuple[int, dict[str, str], bytes]:
    return http_get(srv.http_port, "/secretsmanager/get?" + urllib.parse.urlencode(params), token)


def test_get_secret_value_shape(server: ServeProcess, secret: Hidden, token: str) -> None:
    # By full ARN, partial ARN, alias, and plain name (AWS's agent's usual form).
    partial = secret["arn"][: -len("-AbCdEf")]
    for secret_id in (secret["arn"], partial, "Db", secret["name"]):
        status, headers, body = _get(server, token, secretId=secret_id)
        assert status == 200, body[:300]
        assert headers["content-type"] == "application/json"
        assert headers["cache-control"] == "no-store"
        doc = json.loads(body)
        assert doc["ARN"] == secret["arn"]
        assert doc["Name"] == secret["name"]
        assert doc["SecretString"] == secret["value"]
        assert doc["VersionStages"] == ["AWSCURRENT"]
        assert doc["VersionId"] and "SecretBinary" not in doc
        # The version's creation time as Secrets Manager reports it (epoch seconds, like AWS's agent).
        assert isinstance(doc["CreatedDate"], float) and abs(doc["CreatedDate"] - time.time()) < 3600


def test_path_style_and_keep_alive(server: ServeProcess, secret: Hidden, token: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        for path in ("/v1/Db", "/v1/" + urllib.parse.quote(secret["arn"], safe=""), "/ping"):
            conn.request("GET", path, headers={TOKEN_HEADER: token})
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, body[:300]
            if path != "/ping":
                assert json.loads(body)["SecretString"] == secret["value"]
    finally:
        conn.close()


def test_token_and_request_rules(server: ServeProcess, secret: Hidden, token: str) -> None:
    arn = secret["arn"]
    # Missing or wrong token: 403, whatever the path (an unknown path does not reveal itself without it).
    assert _get(server, None, secretId=arn)[0] == 403
    status, _, body = _get(server, token[:-1] + "x", secretId=arn)
    assert (status, body) == (403, b"Bad Token")
    assert http_get(server.http_port, "/nowhere", None)[0] == 403
    assert http_get(server.http_port, "/nowhere", token)[:3:2] == (404, b"Not found")
    # The other header AWS's agent accepts.
    assert http_get(server.http_port, "/v1/Db", headers={"X-Vault-Token": token})[0] == 200
    # A request relayed by a proxy is refused even with the token.
    status, _, body = http_get(server.http_port, "/v1/Db", token, headers={"X-Forwarded-For": "10.0.0.1"})
    assert (status, body) == (400, b"Forwarded")
    assert http_get(server.http_port, "/v1/Db", token, method="POST")[::2] == (405, b"Not allowed")
    # Health checks too carry the token: /healthz shows what the server serves and its cache counters.
    for path in ("/ping", "/healthz"):
        assert http_get(server.http_port, path, None)[::2] == (403, b"Bad Token")
        assert http_get(server.http_port, path, "wrong-token")[::2] == (403, b"Bad Token")
    assert http_get(server.http_port, "/ping", token)[::2] == (200, b"healthy")
    status, _, body = http_get(server.http_port, "/healthz", token)
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_open_health_answers_probes_without_the_token(tmp_path: Path, secret: Hidden, token: str) -> None:
    """For a probe that cannot send a header (as AWS's agent's /ping): health checks only, never secrets."""
    cfg = agent_config(tmp_path / "agent.yaml", {"Db": secret["arn"]})
    (tmp_path / "token").write_text(token + "\n")
    srv = ServeProcess(
        ["--config", str(cfg), "--secret-agent", "off", "--http", "127.0.0.1:0"],
        tmp_path,
        env=clean_env(AWS_TOKEN=f"file://{tmp_path / 'token'}", PYFLYTE_AWSSECRETS_SERVE_OPEN_HEALTH="true"),
    ).wait_ready()
    try:
        assert http_get(srv.http_port, "/ping", None)[::2] == (200, b"healthy")
        assert http_get(srv.http_port, "/healthz", None)[0] == 200
        assert http_get(srv.http_port, "/v1/Db", None)[::2] == (403, b"Bad Token")
        assert http_get(srv.http_port, "/v1/Db", token)[0] == 200
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


@pytest.mark.parametrize(
    "query, status, expected",
    [
        ("versionStage=AWSCURRENT", 400, b"missing parameter secretId"),
        ("secretId=Db&bogus=1", 400, b"unknown parameter: bogus"),
        ("secretId=Db&refreshNow=maybe", 400, b"invalid refreshNow value"),
        # Not listed (the file's resources are the allow-list): refused before AWS is asked, so a client
        # cannot even learn whether they exist.
        ("secretId=NoSuchAlias", 403, b"not in serve's allow-list"),
        (
            "secretId=arn:aws:secretsmanager:us-east-1:123456789012:secret:absent-AbCdEf",
            403,
            b"not in serve's allow-list",
        ),
        ("secretId=arn:aws:secretsmanager:nowhere", 400, b"InvalidParameterException"),
        ("secretId=Db&versionId=abc&versionStage=AWSCURRENT", 400, b"not both"),
        ("secretId=some:thing", 400, b"a secret name has no ':'"),
        ("secretId=Db&versionId=00000000-0000-0000-0000-000000000000", 400, b"ResourceNotFoundException"),
    ],
)
def test_query_errors(server: ServeProcess, token: str, query: str, status: int, expected: bytes) -> None:
    got, headers, body = http_get(server.http_port, "/secretsmanager/get?" + query, token)
    assert got == status and expected in body, body[:300]
    if body.startswith(b"{"):
        doc = json.loads(body)
        assert set(doc) == {"__type", "message"}, "AWS's JSON 1.1 error shape"
    # Still serving.
    assert http_get(server.http_port, "/v1/Db", token)[0] == 200


def test_malformed_and_oversized_requests(server: ServeProcess, token: str) -> None:
    port = server.http_port
    assert raw_http(port, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_http(port, b"GET /ping HTTP/1.1\r\nno-colon-here\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET /ping HTTP/1.1\r\nX-Pad: " + b"a" * 200_000 + b"\r\n\r\n"
    assert raw_http(port, huge).startswith(b"HTTP/1.1 431 ")
    body_req = b"GET /v1/Db HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    assert raw_http(port, body_req).startswith(b"HTTP/1.1 400 ")
    # A client that sends half a request and leaves.
    assert raw_http(port, b"GET /secretsmanager/get?secretId=Db HTTP/1.1\r\nHost: x", half_close=True) == b""
    assert http_get(port, "/v1/Db", token)[0] == 200


def test_refresh_now_and_version_stage(
    server: ServeProcess, secret: Hidden, token: str, secrets_factory: SecretFactory
) -> None:
    assert json.loads(_get(server, token, secretId="Db")[2])["SecretString"] == secret["value"]
    rotated = json.dumps({"password": new_value()})
    remember(rotated)
    secrets_factory.client("secretsmanager").put_secret_value(SecretId=secret["arn"], SecretString=rotated)
    # Within the TTL the cache answers, as AWS's agent does...
    assert json.loads(_get(server, token, secretId="Db")[2])["SecretString"] == secret["value"]
    # ...unless the client asks for a refresh.
    doc = json.loads(_get(server, token, secretId="Db", refreshNow="true")[2])
    assert doc["SecretString"] == rotated
    assert json.loads(_get(server, token, secretId="Db")[2])["SecretString"] == rotated
    prev = json.loads(_get(server, token, secretId="Db", versionStage="AWSPREVIOUS")[2])
    assert prev["SecretString"] == secret["value"] and prev["VersionStages"] == ["AWSPREVIOUS"]
    pinned = json.loads(_get(server, token, secretId=secret["arn"], versionId=prev["VersionId"])[2])
    assert pinned["SecretString"] == secret["value"] and pinned["VersionId"] == prev["VersionId"]
    # Stages of a version asked for by id come from Secrets Manager, not from the request.
    assert pinned["VersionStages"] == ["AWSPREVIOUS"]


def test_binary_secret(tmp_path: Path, secrets_factory: SecretFactory, unique: str, token: str) -> None:
    blob = b"\x00\x01\xfe" + new_value().encode()
    arn, _ = secrets_factory.secret(f"serve/blob-{unique}", blob)
    cfg = agent_config(tmp_path / "agent.yaml", {"Blob": arn})
    srv = ServeProcess(
        ["--config", str(cfg), "--secret-agent", "off", "--http", "127.0.0.1:0"],
        tmp_path,
        env=clean_env(PYFLYTE_AWSSECRETS_SERVE_TOKEN=token),
    ).wait_ready()
    try:
        status, _, body = http_get(srv.http_port, "/v1/Blob", token)
        doc = json.loads(body)
        assert status == 200 and "SecretString" not in doc
        assert base64.b64decode(doc["SecretBinary"]) == blob
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_http_front_end_asked_for_in_the_file_with_aws_token_conventions(
    tmp_path: Path, secret: Hidden, token: str
) -> None:
    """x-awssecrets.serve turns the HTTP front end on for a Secret Agent file; the token comes from one of
    AWS's agent's default variables; ssrf_headers replaces the header names, as AWS's setting does; a
    token file that others can read is a loud warning."""
    cfg = agent_config(
        tmp_path / "agent.yaml",
        {"Db": secret["arn"]},
        endpoint=None,
        additions={"serve": {"http": "127.0.0.1:0", "ssrf_headers": ["X-My-Token"]}},
    )
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o644)
    srv = ServeProcess(
        ["--config", str(cfg)],
        tmp_path,
        env=clean_env(AWS_CONTAINER_AUTHORIZATION_TOKEN=f"file://{tmp_path / 'token'}"),
    ).wait_ready()
    try:
        assert set(srv.bound) == {"http", "pid", "tls"}
        status, _, body = http_get(srv.http_port, "/v1/Db", headers={"X-My-Token": token})
        assert status == 200 and json.loads(body)["SecretString"] == secret["value"]
        assert http_get(srv.http_port, "/v1/Db", token)[0] == 403, "only the configured header carries it"
        log = srv.log()
        assert "env var AWS_CONTAINER_AUTHORIZATION_TOKEN" in log
        assert "readable by every user" in log
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])
