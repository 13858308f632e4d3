"""The Secret Agent front end of ``pyflyte-awssecrets serve``, as a client in another language sees it.

The server runs as its own process (the console script) against moto server; the client is written from
the protocol description only. Every test ends by checking that the server is still alive and that its
log holds no secret value.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CREATED_VALUES, SecretFactory, fingerprint, new_value, remember
from tests.support.serve_clients import (
    AgentClient,
    Hidden,
    ServeProcess,
    agent_config,
    frame,
    self_signed,
    value_of,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def two_secrets(secrets_factory: SecretFactory, unique: str) -> dict[str, tuple[str, dict[str, str]]]:
    db = {"username": f"user-{unique}", "password": new_value(), "tls.crt": new_value("crt")}
    api = {"token": new_value()}
    return Hidden(
        Db=secrets_factory.secret(f"serve/db-{unique}", db),
        Api=secrets_factory.secret(f"serve/api-{unique}", api),
    )


@pytest.fixture
def server(tmp_path: Path, two_secrets: dict[str, tuple[str, dict[str, str]]]) -> Iterator[ServeProcess]:
    cfg = agent_config(tmp_path / "agent.yaml", {name: arn for name, (arn, _) in two_secrets.items()})
    srv = ServeProcess(
        ["--config", str(cfg), "--http", "off", "--max-body-bytes", "1024", "--read-timeout", "5"], tmp_path
    ).wait_ready()
    yield srv
    assert srv.alive(), f"the server died:\n{srv.log()[-2000:]}"
    assert srv.stop() == 0
    srv.assert_log_clean(CREATED_VALUES)


def _still_serves(srv: ServeProcess, expected: str) -> None:
    with AgentClient(port=srv.sa_port) as c:
        got = value_of(c.request({"Resource": "Db", "SecretKey": "password"}))
    assert got == expected.encode(), f"got {fingerprint(got)}, expected {fingerprint(expected)}"


def test_reads_a_key_and_the_whole_secret(
    server: ServeProcess, two_secrets: dict[str, tuple[str, dict[str, str]]]
) -> None:
    _, db = two_secrets["Db"]
    with AgentClient(port=server.sa_port) as c:
        # Several requests on one connection, as long-lived clients do.
        assert value_of(c.request({"Resource": "Db", "SecretKey": "password"})) == db["password"].encode()
        assert value_of(c.request({"Resource": "Db", "SecretKey": "username"})) == db["username"].encode()
        # A key containing a dot is a plain top-level key first (Secret Agent clients know no paths).
        assert value_of(c.request({"Resource": "Db", "SecretKey": "tls.crt"})) == db["tls.crt"].encode()
        # No key: the whole secret, as stored.
        assert json.loads(value_of(c.request({"Resource": "Db"}))) == db
        assert json.loads(value_of(c.request({"Resource": "Api", "SecretKey": ""}))) == two_secrets["Api"][1]


def test_resource_is_required_when_several_are_configured(server: ServeProcess) -> None:
    with AgentClient(port=server.sa_port) as c:
        err = c.request({"SecretKey": "password"})["Error"]
    assert "Resource is required" in err and "'Api'" in err and "'Db'" in err


def test_resource_is_required_even_when_one_is_configured_and_unix_socket(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str
) -> None:
    value = new_value()
    arn, _ = secrets_factory.secret(f"serve/only-{unique}", {"password": value})
    sock = tmp_path / "agent.sock"
    cfg = agent_config(tmp_path / "agent.yaml", {"Only": arn}, uds={"socket-path": str(sock)})
    srv = ServeProcess(["--config", str(cfg), "--http", "off"], tmp_path).wait_ready()
    try:
        assert srv.bound["unix_socket"] == str(sock)
        assert sock.stat().st_mode & 0o777 == 0o600, "only the server's user may connect"
        with AgentClient(unix=str(sock)) as c:
            # As Aerospike's agent (and its client's test): no Resource is an error, however many exist.
            err = c.request({"SecretKey": "password"})["Error"]
            assert "Resource is required" in err and "'Only'" in err
            assert value_of(c.request({"Resource": "Only", "SecretKey": "password"})) == value.encode()
        with AgentClient(port=srv.sa_port) as c:
            assert value_of(c.request({"Resource": "Only", "SecretKey": "password"})) == value.encode()
    finally:
        assert srv.stop() == 0
    assert not sock.exists(), "the socket file is removed on shutdown"
    srv.assert_log_clean(CREATED_VALUES)


def test_unknown_resource_and_key_are_clear_errors(
    server: ServeProcess, two_secrets: dict[str, tuple[str, dict[str, str]]]
) -> None:
    with AgentClient(port=server.sa_port) as c:
        err = c.request({"Resource": "Nope", "SecretKey": "password"})["Error"]
        assert "unknown resource 'Nope'" in err and "'Db'" in err
        err = c.request({"Resource": "Db", "SecretKey": "pasword"})["Error"]
        # Names the resource and the key; never a value, nor the secret's key names (they can be secret).
        assert "'pasword' not found" in err and "'password'" not in err and "Db" in err
        for v in two_secrets["Db"][1].values():
            assert v not in err
        # The connection is still usable after errors.
        assert value_of(c.request({"Resource": "Db", "SecretKey": "password"}))


def test_binary_secret_is_served_as_its_bytes(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str
) -> None:
    blob = b"\x00\xff" + new_value().encode()
    arn, _ = secrets_factory.secret(f"serve/bin-{unique}", blob)
    cfg = agent_config(tmp_path / "agent.yaml", {"Blob": arn})
    srv = ServeProcess(["--config", str(cfg), "--http", "off"], tmp_path).wait_ready()
    try:
        with AgentClient(port=srv.sa_port) as c:
            assert value_of(c.request({"Resource": "Blob"})) == blob
            err = c.request({"Resource": "Blob", "SecretKey": "k"})["Error"]
            assert "binary" in err
    finally:
        assert srv.stop() == 0


# --- bad input never crashes the server -------------------------------------------------------------------


def test_wrong_magic_is_answered_then_closed(
    server: ServeProcess, two_secrets: dict[str, tuple[str, dict[str, str]]]
) -> None:
    with AgentClient(port=server.sa_port) as c:
        c.send_raw(frame(b'{"Resource": "Db"}', magic=0xDEADBEEF))
        err = c.read_frame()["Error"]
        assert "bad magic 0xDEADBEEF" in err
        assert c.is_closed_by_server(), "after a bad header the stream is out of step: closed"
    _still_serves(server, two_secrets["Db"][1]["password"])


def test_length_above_the_maximum_is_refused_without_reading_it(
    server: ServeProcess, two_secrets: dict[str, tuple[str, dict[str, str]]]
) -> None:
    with AgentClient(port=server.sa_port) as c:
        # Announce 4 GiB - 1 and send nothing: the server must not wait for (or allocate) it.
        c.send_raw(struct.pack(">II", 0x51DEC1CC, 0xFFFFFFFF))
        err = c.read_frame()["Error"]
        assert "exceeds the maximum of 1024 bytes" in err
        assert c.is_closed_by_server()
    with AgentClient(port=server.sa_port) as c:
        # An oversized body actually sent.
        body = json.dumps({"Resource": "Db", "SecretKey": "x" * 2000}).encode()
        c.send_raw(frame(body))
        assert "exceeds the maximum" in c.read_frame()["Error"]
    _still_serves(server, two_secrets["Db"][1]["password"])


@pytest.mark.parametrize(
    "data, expected",
    [
        (struct.pack(">I", 0x51DEC1CC), "truncated header: 4 of 8 bytes"),
        (frame(b'{"Resource": "Db"}', length=100), "truncated body: 18 of 100 bytes"),
    ],
    ids=["header", "body"],
)
def test_truncated_messages_are_answered_then_closed(
    server: ServeProcess, two_secrets: dict[str, tuple[str, dict[str, str]]], data: bytes, expected: str
) -> None:
    with AgentClient(port=server.sa_port) as c:
        c.send_raw(data)
        c.shutdown_write()  # the client is done sending: what came is all there is
        assert expected in c.read_frame()["Error"]
        assert c.is_closed_by_server()
    _still_serves(server, two_secrets["Db"][1]["password"])


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"not json at all", "body is not valid JSON"),
        (b"\xff\xfe\x00", "body is not UTF-8"),
        (b"[1, 2]", "must be a JSON object, not a list"),
        (b'{"Resource": 5}', "Resource: must be a string"),
        (b'{"Resource": "Db", "Extra": 1}', "Extra: unknown field"),
        (b"", "body is not valid JSON"),
    ],
    ids=["not-json", "not-utf8", "array", "not-string", "unknown-field", "empty"],
)
def test_bad_bodies_get_an_error_and_the_connection_stays_usable(
    server: ServeProcess, two_secrets: dict[str, tuple[str, dict[str, str]]], body: bytes, expected: str
) -> None:
    with AgentClient(port=server.sa_port) as c:
        c.send_raw(frame(body))
        err = c.read_frame()["Error"]
        assert expected in err
        # A framed body that is wrong does not break framing: the same connection goes on.
        got = value_of(c.request({"Resource": "Db", "SecretKey": "password"}))
        assert got == two_secrets["Db"][1]["password"].encode()


def test_client_that_vanishes_mid_message_does_not_hurt(
    server: ServeProcess, two_secrets: dict[str, tuple[str, dict[str, str]]]
) -> None:
    for data in (b"\x51", frame(b'{"Resource": "Db"}', length=50), frame(b'{"Resource": "Db"}')):
        s = socket.create_connection(("127.0.0.1", server.sa_port), timeout=5)
        s.sendall(data)
        # RST instead of FIN: the nastiest way to leave.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    _still_serves(server, two_secrets["Db"][1]["password"])


# --- Secret Agent files served as they are configured ------------------------------------------------------


def _seed_file(path: Path, resources: dict[str, str], **kw: object) -> Path:
    """Seed 004's shape: service.tcp, secret-manager.aws (no convert-to-base64: Aerospike's default, false)."""
    return agent_config(path, resources, convert_to_base64=None, **kw)  # type: ignore[arg-type]


def test_seed_shaped_file_serves_the_secret_agent_protocol_only_and_needs_no_token(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str
) -> None:
    """Aerospike stores multi-line values base64-encoded and leaves convert-to-base64 false: the client
    must get the decoded value, not a double encoding."""
    import base64

    pem = ("-----BEGIN CERTIFICATE-----\n" + new_value("cert") + "\n-----END CERTIFICATE-----\n").encode()
    remember(pem.decode())
    stored = base64.b64encode(pem).decode()  # base64 -w0
    remember(stored)
    cert_arn, _ = secrets_factory.secret(f"serve/cert-{unique}", stored + "\n")  # trailing newline: allowed
    db_arn, db = secrets_factory.secret(
        f"serve/db64-{unique}",
        {"password": base64.b64encode(b"pw-" + unique.encode()).decode(), "plain": new_value()},
    )
    cfg = _seed_file(tmp_path / "agent.yaml", {"Cert": cert_arn, "Db": db_arn})
    # No token anywhere, no --http: a TCP-only file must start (issue 16).
    srv = ServeProcess(["--config", str(cfg)], tmp_path).wait_ready()
    try:
        assert set(srv.bound) == {"secret_agent", "pid", "tls"}, "only what the file configures"
        with AgentClient(port=srv.sa_port) as c:
            assert value_of(c.request({"Resource": "Cert"})) == pem
            assert (
                value_of(c.request({"Resource": "Db", "SecretKey": "password"})) == b"pw-" + unique.encode()
            )
            err = c.request({"Resource": "Db", "SecretKey": "plain"})["Error"]
            assert "resource 'Db'" in err and "key 'plain'" in err and "not base64" in err
            assert db["plain"] not in err
        log = srv.log()
        assert "convert-to-base64 false" in log
        assert "serving secret agent on 127.0.0.1:" in log and "serving http" not in log
        assert "ignored" not in log, "the start-up log must not say serve's sections are ignored"
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean(CREATED_VALUES)


def test_convert_to_base64_true_encodes_the_stored_value(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str
) -> None:
    text = "line one\nline two " + new_value() + "\n"
    remember(text)
    arn, _ = secrets_factory.secret(f"serve/text-{unique}", text)
    cfg = agent_config(tmp_path / "agent.yaml", {"Text": arn}, convert_to_base64=True)
    srv = ServeProcess(["--config", str(cfg)], tmp_path).wait_ready()
    try:
        with AgentClient(port=srv.sa_port) as c:
            # The client strips trailing whitespace of SecretValue, never of the decoded value.
            assert value_of(c.request({"Resource": "Text"})) == text.encode()
    finally:
        assert srv.stop() == 0
    srv.assert_log_clean(CREATED_VALUES)


def test_uds_only_file_listens_on_the_socket_only(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str
) -> None:
    value = new_value()
    arn, _ = secrets_factory.secret(f"serve/uds-{unique}", {"k": value})
    sock = tmp_path / "agent.sock"
    cfg = agent_config(tmp_path / "agent.yaml", {"Only": arn}, endpoint=None, uds={"socket-path": str(sock)})
    srv = ServeProcess(["--config", str(cfg)], tmp_path).wait_ready()
    try:
        assert set(srv.bound) == {"unix_socket", "pid", "tls"}
        with AgentClient(unix=str(sock)) as c:
            assert value_of(c.request({"Resource": "Only", "SecretKey": "k"})) == value.encode()
    finally:
        assert srv.stop() == 0


def test_tls_and_mutual_tls_from_the_file(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str
) -> None:
    import ssl

    value = new_value()
    arn, _ = secrets_factory.secret(f"serve/tls-{unique}", {"k": value})
    cert, key = self_signed(tmp_path)
    client_cert, client_key = self_signed(tmp_path, "client")
    tls = {"cert-file": str(cert), "key-file": str(key)}
    for mutual in (False, True):
        cfg = agent_config(
            tmp_path / "agent.yaml",
            {"Db": arn},
            tcp={
                "endpoint": "127.0.0.1:0",
                "tls": {**tls, **({"ca-file": str(client_cert)} if mutual else {})},
            },
        )
        srv = ServeProcess(["--config", str(cfg)], tmp_path).wait_ready()
        try:
            assert srv.bound["tls"] is True
            client = ssl.create_default_context(cafile=str(cert))
            if mutual:
                with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
                    with AgentClient(port=srv.sa_port, tls=client) as c:
                        c.request({"Resource": "Db", "SecretKey": "k"})
                client.load_cert_chain(str(client_cert), str(client_key))
            with AgentClient(port=srv.sa_port, tls=client) as c:
                assert value_of(c.request({"Resource": "Db", "SecretKey": "k"})) == value.encode()
            # Plain text on the TLS port gets nothing.
            with socket.create_connection(("127.0.0.1", srv.sa_port), timeout=5) as s:
                s.sendall(frame(b'{"SecretKey": "k"}'))
                s.settimeout(5)
                try:
                    assert b"SecretValue" not in s.recv(4096)
                except (ConnectionResetError, TimeoutError):
                    pass
            assert "mutual TLS" in srv.log() if mutual else "(TLS)" in srv.log()
        finally:
            assert srv.stop() == 0
    srv.assert_log_clean(CREATED_VALUES)


def test_seed_file_as_aerospike_writes_it_is_refused_naming_the_key(
    tmp_path: Path, aws_env: dict[str, str]
) -> None:
    import subprocess

    from tests.support.serve_clients import SERVE_BIN, clean_env

    cfg = _seed_file(
        tmp_path / "agent.yaml",
        {"TestingSecret": "arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j"},
        endpoint="0.0.0.0:3005",
    )
    r = subprocess.run(
        [SERVE_BIN, "serve", "--config", str(cfg)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert (
        "'service.tcp.endpoint'" in r.stderr and str(cfg) in r.stderr and "--allow-non-loopback" in r.stderr
    )
    assert "Traceback" not in r.stderr
