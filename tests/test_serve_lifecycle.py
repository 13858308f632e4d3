"""``pyflyte-awssecrets serve`` as a process: one cache for both front ends, SIGTERM, loopback only, TLS,
start-up errors. The server is the console script; AWS is moto (behind a counting proxy where calls are
counted server side)."""

from __future__ import annotations

import http.client
import json
import secrets
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CREATED_VALUES, ROOT, SecretFactory, new_value, remember
from tests.support.serve_clients import (
    SERVE_BIN,
    TOKEN_HEADER,
    AgentClient,
    Hidden,
    HiddenStr,
    ServeProcess,
    agent_config,
    clean_env,
    http_get,
    raw_http,
    self_signed,
    value_of,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def token() -> str:
    t = HiddenStr(secrets.token_urlsafe(24))
    remember(t)
    return t


@pytest.fixture
def secret(secrets_factory: SecretFactory, unique: str) -> Hidden:
    value = {"password": new_value()}
    arn, _ = secrets_factory.secret(f"serve/life-{unique}", value)
    return Hidden(arn=arn, password=value["password"], value=json.dumps(value))


def _start(tmp: Path, secret: Hidden, token: str, *args: str) -> ServeProcess:
    cfg = agent_config(tmp / "agent.yaml", {"Db": secret["arn"]})
    return ServeProcess(
        ["--config", str(cfg), "--http", "127.0.0.1:0", *args],
        tmp,
        env=clean_env(PYFLYTE_AWSSECRETS_SERVE_TOKEN=token),
    ).wait_ready()


def test_both_front_ends_share_one_cache(
    tmp_path: Path, secret: Hidden, token: str, counting_proxy: Any
) -> None:
    srv = _start(tmp_path, secret, token)
    try:
        with AgentClient(port=srv.sa_port) as c:
            assert (
                value_of(c.request({"Resource": "Db", "SecretKey": "password"}))
                == secret["password"].encode()
            )
        status, _, body = http_get(srv.http_port, "/v1/Db", token)
        assert status == 200 and json.loads(body)["SecretString"] == secret["value"]
        status, _, body = http_get(srv.http_port, "/secretsmanager/get?secretId=" + secret["arn"], token)
        assert status == 200
        with AgentClient(port=srv.sa_port) as c:
            assert value_of(c.request({"Resource": "Db"}))
        reads = counting_proxy.calls["GetSecretValue"] + counting_proxy.calls["BatchGetSecretValue"]
        assert reads == 1, (
            f"expected one AWS read for both front ends, proxy saw {dict(counting_proxy.calls)}"
        )
        # refreshNow goes to AWS, and refreshes the entry the other front end reads.
        assert http_get(srv.http_port, "/v1/Db?refreshNow=1", token)[0] == 200
        assert counting_proxy.calls["GetSecretValue"] + counting_proxy.calls["BatchGetSecretValue"] == 2
        stats = json.loads(http_get(srv.http_port, "/healthz", token)[2])["cache"]
        assert stats["loads"] >= 2 and stats["hits"] >= 3
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_sigterm_shuts_down_cleanly(tmp_path: Path, secret: Hidden, token: str) -> None:
    sock = tmp_path / "a.sock"
    srv = _start(tmp_path, secret, token, "--unix-socket", str(sock))
    sa_port, http_port = srv.sa_port, srv.http_port
    # Idle keep-alive connections on every front end must not hold the shutdown up.
    idle = [
        socket.create_connection(("127.0.0.1", sa_port), timeout=5),
        socket.create_connection(("127.0.0.1", http_port), timeout=5),
    ]
    unix_idle = socket.socket(socket.AF_UNIX)
    unix_idle.connect(str(sock))
    idle.append(unix_idle)
    time.sleep(0.2)
    started = time.monotonic()
    assert srv.stop(signal.SIGTERM, timeout=15) == 0
    assert time.monotonic() - started < 5, "an idle connection delayed the shutdown"
    assert not sock.exists(), "the unix socket file is removed"
    assert not srv.ready_file.exists(), "the ready file is removed: the endpoint is gone"
    for port in (sa_port, http_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    for s in idle:
        s.settimeout(5)
        assert s.recv(1) == b"", "the server closed idle connections"
        s.close()
    log = srv.log()
    assert "received SIGTERM" in log and "stopped" in log and "Traceback" not in log


def test_stale_unix_socket_is_replaced_and_a_live_one_is_not(
    tmp_path: Path, secret: Hidden, token: str
) -> None:
    sock = tmp_path / "a.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))  # bound, never listening: what a killed server leaves behind
    stale.close()
    srv = _start(tmp_path, secret, token, "--unix-socket", str(sock))
    try:
        with AgentClient(unix=str(sock)) as c:
            assert value_of(c.request({"Resource": "Db", "SecretKey": "password"}))
        second = subprocess.run(
            [SERVE_BIN, "serve", "--secret-agent", "off", "--http", "off", "--unix-socket", str(sock)]
            + ["--allow", "Db"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2 and "in use by another server" in second.stderr
        assert sock.exists(), "the live server's socket was left alone"
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["--secret-agent", "0.0.0.0:0", "--http", "off"], {}, "is not a loopback address"),
        (["--http", "127.0.0.1:0", "--secret-agent", "off"], {}, "the HTTP front end needs a token"),
        (["--http", "nonsense"], {}, "'nonsense' is not host:port"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"], {}, "does not exist"),
        (["--http", "off"], {"PYFLYTE_AWSSECRETS_SERVE_BOGUS": "1"}, "unknown serve setting"),
        (["--http", "off"], {"FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS": "soon"}, "cache_ttl_seconds"),
        (["--secret-agent", "off", "--http", "off"], {}, "nothing to serve"),
        (["--http", "off"], {}, "serve needs an allow-list of what it may serve: pass --allow"),
        (["--http", "off", "--allow", "*"], {}, "'*' is not an entry"),
    ],
    ids=[
        "non-loopback",
        "no-token",
        "bad-endpoint",
        "tls-missing",
        "unknown-env",
        "bad-settings",
        "all-off",
        "no-allow-list",
        "allow-everything",
    ],
)
def test_start_up_errors_exit_2_with_a_clear_message(
    aws_env: dict[str, str], args: list[str], env: dict[str, str], expected: str
) -> None:
    r = subprocess.run(
        [SERVE_BIN, "serve", *args], env=clean_env(**env), capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert expected in r.stderr
    assert "Traceback" not in r.stderr


def test_address_in_use_is_a_clear_error(tmp_path: Path, secret: Hidden, token: str) -> None:
    srv = _start(tmp_path, secret, token)
    try:
        r = subprocess.run(
            [
                SERVE_BIN,
                "serve",
                "--http",
                "off",
                "--secret-agent",
                f"127.0.0.1:{srv.sa_port}",
                "--allow",
                "Db",
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{srv.sa_port}" in r.stderr
        assert srv.alive()
    finally:
        assert srv.stop() == 0


def test_tls_on_both_tcp_front_ends(tmp_path: Path, secret: Hidden, token: str) -> None:
    cert, key = self_signed(tmp_path)
    srv = _start(tmp_path, secret, token, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert srv.bound["tls"] is True
        client = ssl.create_default_context(cafile=str(cert))
        with AgentClient(port=srv.sa_port, tls=client) as c:
            assert (
                value_of(c.request({"Resource": "Db", "SecretKey": "password"}))
                == secret["password"].encode()
            )
        status, _, body = http_get(srv.http_port, "/v1/Db", token, tls=client)
        assert status == 200 and json.loads(body)["SecretString"] == secret["value"]
        # A plain-text client on the TLS port gets nothing useful and does not hurt the server.
        with socket.create_connection(("127.0.0.1", srv.sa_port), timeout=5) as s:
            s.sendall(b"GET /ping HTTP/1.1\r\n\r\n")
            s.settimeout(5)
            try:
                assert b"healthy" not in s.recv(1024)
            except (ConnectionResetError, TimeoutError):
                pass
        assert http_get(srv.http_port, "/ping", token, tls=client)[0] == 200
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_connection_limit_and_slow_clients(tmp_path: Path, secret: Hidden, token: str) -> None:
    srv = _start(
        tmp_path, secret, token, "--max-connections", "2", "--read-timeout", "1", "--header-timeout", "1"
    )
    held: list[AgentClient] = []
    kept: list[http.client.HTTPConnection] = []
    try:
        # Two connections that have been served (authenticated) and stay open fill max_connections.
        # Each is served as soon as it connects: one opened earlier would wait out header_timeout (1 s)
        # while the first read from AWS is made, on a loaded machine.
        for _ in range(2):
            held.append(AgentClient(port=srv.sa_port))
            assert value_of(held[-1].request({"Resource": "Db", "SecretKey": "password"}))
        with AgentClient(port=srv.sa_port) as extra:
            assert "connection limit" in extra.request({"Resource": "Db"})["Error"]
        # The same for HTTP, whose token holders have a budget of their own.
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=5)
            conn.request("GET", "/v1/Db", headers={TOKEN_HEADER: token})
            assert conn.getresponse().read() and conn.sock is not None  # kept alive
            kept.append(conn)
        # Over the limit: secrets are refused with 429, health checks still answer (3 spare connections).
        status, _, body = http_get(srv.http_port, "/v1/Db", token)
        assert (status, body) == (429, b"Connection limit exceeded")
        assert http_get(srv.http_port, "/ping", token)[0] == 200
        for c in held:
            c.close()
        for conn in kept:
            conn.close()
        held, kept = [], []
        time.sleep(0.3)
        assert http_get(srv.http_port, "/v1/Db", token)[0] == 200
        # A client that starts a message and stalls is answered and cut off after header_timeout (1 s).
        with AgentClient(port=srv.sa_port) as c:
            c.send_raw(b"\x51\xde\xc1\xcc\x00\x00\x00\x10{")
            started = time.monotonic()
            assert "not received within" in c.read_frame()["Error"]
            assert c.is_closed_by_server() and time.monotonic() - started < 5
        # Once served, the same holds with read_timeout (1 s).
        with AgentClient(port=srv.sa_port) as c:
            assert value_of(c.request({"Resource": "Db"}))
            c.send_raw(b"\x51\xde\xc1\xcc\x00\x00\x00\x10{")
            started = time.monotonic()
            assert "not received within" in c.read_frame()["Error"]
            assert c.is_closed_by_server() and time.monotonic() - started < 5
        # Same for an HTTP request head that never ends (slowloris).
        with socket.create_connection(("127.0.0.1", srv.http_port), timeout=5) as s:
            s.sendall(b"GET /ping HTTP/1.1\r\nX-Slow: 1\r\n")
            started = time.monotonic()
            assert s.recv(1024) == b"" and time.monotonic() - started < 5
        with AgentClient(port=srv.sa_port) as c:
            assert value_of(c.request({"Resource": "Db"}))
    finally:
        for c in held:
            c.close()
        for conn in kept:
            conn.close()
        assert srv.stop() == 0


def test_unauthenticated_connections_cannot_starve_authenticated_ones(
    tmp_path: Path, secret: Hidden, token: str
) -> None:
    """max_connections 5: sockets that never send the token (or anything) are kept apart, in a small budget
    whose oldest member is closed when another arrives, and are closed after header_timeout anyway."""
    srv = _start(
        tmp_path,
        secret,
        token,
        "--max-connections",
        "5",
        "--max-unauthenticated",
        "6",
        "--header-timeout",
        "3",
    )
    idle: list[socket.socket] = []
    try:
        # 5 idle sockets on each TCP front end, and 5 HTTP connections whose requests lack the token.
        for port in (srv.http_port, srv.sa_port):
            idle += [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=5)
            s.sendall(b"GET /v1/Db HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 403 " in s.recv(1024)
            idle.append(s)
        time.sleep(0.2)
        # A client with the token is served at once, on both front ends, far inside the header time-out.
        started = time.monotonic()
        status, _, body = http_get(srv.http_port, "/v1/Db", token, timeout=5)
        assert status == 200 and json.loads(body)["SecretString"] == secret["value"]
        with AgentClient(port=srv.sa_port, timeout=5) as c:
            assert (
                value_of(c.request({"Resource": "Db", "SecretKey": "password"}))
                == secret["password"].encode()
            )
        assert time.monotonic() - started < 2, "the authenticated clients waited"
        # Five authenticated connections are still allowed while the idle ones are open.
        served = [AgentClient(port=srv.sa_port, timeout=5) for _ in range(5)]
        try:
            for c in served:
                assert value_of(c.request({"Resource": "Db"}))
        finally:
            for c in served:
                c.close()
        # The oldest idle sockets were closed to make room; the rest go after header_timeout.
        health = json.loads(http_get(srv.http_port, "/healthz", token)[2])
        assert health["evicted_unauthenticated"] >= 15 - 6
        time.sleep(3.5)
        for s in idle:
            s.settimeout(5)
            try:
                data = s.recv(1024)
            except ConnectionResetError:
                data = b""
            assert data == b"", "an unauthenticated connection outlived header_timeout"
    finally:
        for s in idle:
            s.close()
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_many_concurrent_clients_one_aws_read(
    tmp_path: Path, secret: Hidden, token: str, counting_proxy: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    srv = _start(tmp_path, secret, token)

    def agent(_: int) -> bytes:
        with AgentClient(port=srv.sa_port) as c:
            return value_of(c.request({"Resource": "Db", "SecretKey": "password"}))

    def http(_: int) -> bytes:
        return http_get(srv.http_port, "/v1/Db", token)[2]

    try:
        with ThreadPoolExecutor(32) as pool:
            a = list(pool.map(agent, range(40)))
            h = list(pool.map(http, range(40)))
        assert set(a) == {secret["password"].encode()}
        assert {json.loads(b)["SecretString"] for b in h} == {secret["value"]}
        reads = counting_proxy.calls["GetSecretValue"] + counting_proxy.calls["BatchGetSecretValue"]
        assert reads == 1, f"single-flight: 80 concurrent requests, {reads} AWS reads"
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_required_tags_apply_to_both_front_ends(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str, token: str
) -> None:
    tagged, _ = secrets_factory.secret(f"serve/tagged-{unique}", {"k": new_value()}, tags={"flyte": "yes"})
    bare, _ = secrets_factory.secret(f"serve/bare-{unique}", {"k": new_value()})
    cfg = agent_config(tmp_path / "agent.yaml", {"Tagged": tagged, "Bare": bare})
    srv = ServeProcess(
        ["--config", str(cfg), "--http", "127.0.0.1:0"],
        tmp_path,
        env=clean_env(PYFLYTE_AWSSECRETS_SERVE_TOKEN=token, FLYTE_AWS_SECRETS_REQUIRED_TAGS='{"flyte": "*"}'),
    ).wait_ready()
    try:
        with AgentClient(port=srv.sa_port) as c:
            assert value_of(c.request({"Resource": "Tagged", "SecretKey": "k"}))
            err = c.request({"Resource": "Bare", "SecretKey": "k"})["Error"]
            assert "required tag 'flyte' is missing" in err
        status, _, body = http_get(srv.http_port, "/v1/Bare", token)
        assert status == 400 and json.loads(body)["__type"] == "AccessDeniedException"
        assert http_get(srv.http_port, "/v1/Tagged", token)[0] == 200
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_resources_follow_the_settings_file(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str, secret: Hidden, token: str
) -> None:
    srv = _start(tmp_path, secret, token)
    try:
        with AgentClient(port=srv.sa_port) as c:
            assert "unknown resource 'Later'" in c.request({"Resource": "Later"})["Error"]
        later = new_value()
        arn, _ = secrets_factory.secret(f"serve/later-{unique}", later)
        time.sleep(0.05)  # a distinct modification time
        agent_config(tmp_path / "agent.yaml", {"Db": secret["arn"], "Later": arn})
        with AgentClient(port=srv.sa_port) as c:
            assert value_of(c.request({"Resource": "Later"})) == later.encode()
        # A file broken while serving: a clear error per request, and the server stays up.
        (tmp_path / "agent.yaml").write_text("secret-manager: [not, a, mapping\n")
        with AgentClient(port=srv.sa_port) as c:
            assert "not valid YAML" in c.request({"Resource": "Db"})["Error"]
        status, _, body = http_get(srv.http_port, "/healthz", token)
        assert status == 503 and "not valid YAML" in json.loads(body)["error"]
        assert http_get(srv.http_port, "/ping", token)[0] == 200, "ping says the process is alive"
        assert srv.alive()
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_secret_agent_clients_without_the_token_cannot_starve_http_clients_with_it(
    tmp_path: Path, secret: Hidden, token: str
) -> None:
    """The Secret Agent protocol has no authentication, so any local process may fill its connections; the
    HTTP front end's token holders keep their own budget."""
    srv = _start(tmp_path, secret, token, "--max-connections", "3")
    held: list[AgentClient] = []
    try:
        for _ in range(3):
            c = AgentClient(port=srv.sa_port, timeout=5)
            assert "Error" in c.request({"Resource": "no-such-resource"})  # well-formed: counted, kept open
            held.append(c)
        status, _, body = http_get(srv.http_port, "/v1/Db", token, timeout=5)
        assert status == 200 and json.loads(body)["SecretString"] == secret["value"]
    finally:
        for c in held:
            c.close()
        assert srv.stop() == 0
    srv.assert_log_clean([*CREATED_VALUES, token])


def test_a_config_file_cannot_open_a_non_loopback_listener(aws_env: dict[str, str], tmp_path: Path) -> None:
    """A Secret Agent file is copied between hosts and read by tasks: it may name 0.0.0.0 (refused), but it
    cannot also allow it; only whoever starts the server can."""
    import yaml

    doc = yaml.safe_load((ROOT / "tests" / "data" / "serve" / "seed004_any_interface.yml").read_text())
    doc["x-awssecrets"] = {"serve": {"allow_non_loopback": True}}
    path = tmp_path / "agent.yml"
    path.write_text(yaml.safe_dump(doc))
    r = subprocess.run(
        [SERVE_BIN, "serve", "--config", str(path)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "x-awssecrets.serve.allow_non_loopback" in r.stderr and "--allow-non-loopback" in r.stderr
    assert "serving" not in r.stderr


def test_a_client_without_the_token_cannot_write_lines_into_the_log(
    tmp_path: Path, secret: Hidden, token: str
) -> None:
    srv = _start(tmp_path, secret, token)
    try:
        forged = "2026-01-01 00:00:00,000 INFO flytekitplugins_awssecrets.serve: http GET /v1/Db -> 200 ok"
        answer = raw_http(srv.http_port, f"GET /v1/x\n{forged.replace(' ', '_')} HTTP/1.1\r\n\r\n".encode())
        assert b" 400 " in answer.split(b"\r\n", 1)[0]
        assert not any(line.startswith("2026-01-01") for line in srv.log().splitlines())
    finally:
        assert srv.stop() == 0
