"""Issue 20's attacks on ``serve``, each through a real ``pyflyte-awssecrets serve`` process against moto:
a token holder asking the HTTP API for secrets the configuration does not list (by name, by ARN, by a
partial ARN that AWS resolves to another secret), a server started without any list, HTTP request
smuggling through duplicate framing headers, and issue 21's Aerospike deviations (a request without
``Resource``, base64 with excess padding)."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import CREATED_VALUES, SecretFactory, new_value, remember
from tests.support.serve_clients import (
    SERVE_BIN,
    AgentClient,
    HiddenBytes,
    HiddenStr,
    ServeProcess,
    agent_config,
    clean_env,
    http_get,
    raw_http,
    value_of,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def token() -> str:
    t = HiddenStr(secrets.token_urlsafe(24))
    remember(t)
    return t


def _get(srv: ServeProcess, token: str, secret_id: str) -> tuple[int, bytes]:
    status, _, body = http_get(
        srv.http_port, "/secretsmanager/get?" + urllib.parse.urlencode({"secretId": secret_id}), token
    )
    return status, body


def _refused(status: int, body: bytes) -> None:
    assert status == 403, (status, body[:300])
    doc = json.loads(body)
    assert doc["__type"] == "AccessDeniedException" and "not in serve's allow-list" in doc["message"]
    for v in CREATED_VALUES:
        assert v not in body.decode(), "a refusal carries no value"


def test_http_api_serves_only_the_agent_files_resources(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str, token: str
) -> None:
    """The attack: a token holder reads any secret the server's credentials can read, by name or ARN."""
    listed, listed_value = secrets_factory.secret(f"serve/listed-{unique}", {"password": new_value()})
    other, _ = secrets_factory.secret(f"serve/other-{unique}", {"password": new_value()})
    cfg = agent_config(tmp_path / "agent.yaml", {"Db": listed})
    srv = ServeProcess(
        ["--config", str(cfg), "--http", "127.0.0.1:0"],
        tmp_path,
        env=clean_env(PYFLYTE_AWSSECRETS_SERVE_TOKEN=token),
    ).wait_ready()
    try:
        # Listed: by resource name, ARN, partial ARN and plain name.
        for sid in ("Db", listed, listed[: -len("-AbCdEf")], f"serve/listed-{unique}"):
            status, body = _get(srv, token, sid)
            assert status == 200 and json.loads(body)["SecretString"] == json.dumps(listed_value), sid
        # Not listed: refused by name, full ARN and partial ARN, and each refusal is logged.
        for sid in (f"serve/other-{unique}", other, other[: -len("-AbCdEf")]):
            _refused(*_get(srv, token, sid))
        assert srv.log().count(f"refused serve/other-{unique}") == 1
        assert srv.log().count(f"refused {other}") == 1
        # The Secret Agent protocol on the same server keeps to the resources too.
        with AgentClient(port=srv.sa_port) as c:
            assert "unknown resource" in c.request({"Resource": other})["Error"]
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_without_an_agent_file_serve_needs_an_allow_list(aws_env: dict[str, str], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t" * 32)
    token_file.chmod(0o600)
    r = subprocess.run(
        [
            SERVE_BIN,
            "serve",
            "--secret-agent",
            "off",
            "--http",
            "127.0.0.1:0",
            "--token-file",
            str(token_file),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--allow" in r.stderr and "Traceback" not in r.stderr
    assert "serving" not in r.stderr, "nothing was served"


def test_allow_list_of_names_arns_and_prefixes(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str, token: str
) -> None:
    by_name, v_name = secrets_factory.secret(f"app{unique}", {"k": new_value()})
    in_team, v_team = secrets_factory.secret(f"team{unique}/db", {"k": new_value()})
    by_arn, v_arn = secrets_factory.secret(f"arn{unique}", {"k": new_value()})
    other, _ = secrets_factory.secret(f"other{unique}", {"k": new_value()})
    # A secret whose name ends like AWS's random suffix: its ARN reads as the listed name "app<unique>".
    lookalike, _ = secrets_factory.secret(f"app{unique}-Zz9Zz9", {"k": new_value()})
    srv = ServeProcess(
        [
            "--http",
            "127.0.0.1:0",
            "--secret-agent",
            "off",
            "--allow",
            f"app{unique}",
            "--allow",
            f"team{unique}/*",
            "--allow",
            by_arn[: -len("-AbCdEf")],
        ],
        tmp_path,
        env=clean_env(PYFLYTE_AWSSECRETS_SERVE_TOKEN=token),
    ).wait_ready()
    try:
        for sid, value in (
            (f"app{unique}", v_name),
            (by_name, v_name),
            (f"team{unique}/db", v_team),
            (in_team, v_team),
            (f"arn{unique}", v_arn),
            (by_arn, v_arn),
        ):
            status, body = _get(srv, token, sid)
            assert status == 200 and json.loads(body)["SecretString"] == json.dumps(value), sid
        for sid in (f"other{unique}", other, f"team{unique}x", f"app{unique}-Zz9Zz9", lookalike):
            status, body = _get(srv, token, sid)
            _refused(status, body)
        # Another account's secret of a listed name is not the listed one.
        foreign = f"arn:aws:secretsmanager:us-east-1:210987654321:secret:app{unique}"
        _refused(*_get(srv, token, foreign))
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_http_framing_is_h11s_no_smuggling(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str, token: str
) -> None:
    """A second request hidden behind conflicting or duplicate framing headers is never served."""
    listed, _ = secrets_factory.secret(f"serve/frame-{unique}", {"k": new_value()})
    cfg = agent_config(tmp_path / "agent.yaml", {"Db": listed})
    srv = ServeProcess(
        ["--config", str(cfg), "--http", "127.0.0.1:0", "--secret-agent", "off"],
        tmp_path,
        env=clean_env(PYFLYTE_AWSSECRETS_SERVE_TOKEN=token),
    ).wait_ready()
    hidden = f"GET /v1/Db HTTP/1.1\r\nHost: x\r\nX-Aws-Parameters-Secrets-Token: {token}\r\n\r\n".encode()
    head = f"GET /ping HTTP/1.1\r\nHost: x\r\nX-Aws-Parameters-Secrets-Token: {token}\r\n"
    try:
        for framing in (
            f"Content-Length: 0\r\nContent-Length: {len(hidden)}\r\n",  # conflicting
            f"Content-Length: {len(hidden)}\r\nContent-Length: {len(hidden)}\r\n",  # duplicate
            f"Content-Length: {len(hidden)},{len(hidden)}\r\n",
            f"Transfer-Encoding: chunked\r\nContent-Length: {len(hidden)}\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ):
            answer = raw_http(srv.http_port, HiddenBytes((head + framing + "\r\n").encode() + hidden))
            status_line = answer.split(b"\r\n", 1)[0]
            assert status_line.startswith(b"HTTP/1.1 4") or status_line.startswith(b"HTTP/1.1 501"), framing
            assert answer.count(b"HTTP/1.1 ") == 1, f"the hidden request was answered: {framing!r}"
            assert b"SecretString" not in answer
        # Obsolete line folding and bare LF line endings are h11's call; whatever it decides, one request
        # gets at most one answer.
        for odd in (
            head + "X-Folded: a\r\n b\r\nConnection: close\r\n\r\n",
            (head + "Connection: close\r\n\r\n").replace("\r\n", "\n"),
        ):
            answer = raw_http(srv.http_port, HiddenBytes(odd.encode()))
            assert answer.count(b"HTTP/1.1 ") <= 1
        assert http_get(srv.http_port, "/v1/Db", token)[0] == 200, "still serving"
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_secret_agent_like_aerospike_resource_required_and_strict_base64(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str
) -> None:
    good, _ = secrets_factory.secret(f"serve/b64ok-{unique}", {"k": "QUJD", "pad": "QUI=\n"})
    bad, _ = secrets_factory.secret(
        f"serve/b64bad-{unique}", {"excess": "QUJD====", "inner": "QU=I", "short": "QUJ"}
    )
    cfg = agent_config(tmp_path / "agent.yaml", {"Good": good, "Bad": bad}, convert_to_base64=False)
    alone = agent_config(tmp_path / "alone.yaml", {"Good": good}, convert_to_base64=False)
    srv = ServeProcess(["--config", str(cfg)], tmp_path).wait_ready()
    one = ServeProcess(["--config", str(alone)], tmp_path / "one").wait_ready()
    try:
        with AgentClient(port=one.sa_port) as c:
            err = c.request({"SecretKey": "k"})["Error"]
            assert "Resource is required" in err, "even with one resource, as Aerospike's agent"
        with AgentClient(port=srv.sa_port) as c:
            assert value_of(c.request({"Resource": "Good", "SecretKey": "k"})) == b"ABC"
            assert value_of(c.request({"Resource": "Good", "SecretKey": "pad"})) == b"AB"
            for key in ("excess", "inner", "short"):
                err = c.request({"Resource": "Bad", "SecretKey": key})["Error"]
                assert "not base64" in err and f"'{key}'" in err, key
    finally:
        assert srv.stop() == 0
        assert one.stop() == 0
