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

from tests.conftest import CREATED_VALUES, SecretFactory, fingerprint, new_value
from tests.support.serve_clients import AgentClient, Hidden, ServeProcess, agent_config, frame, value_of

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


def test_single_resource_is_the_default_and_unix_socket(
    tmp_path: Path, secrets_factory: SecretFactory, unique: str
) -> None:
    value = new_value()
    arn, _ = secrets_factory.secret(f"serve/only-{unique}", {"password": value})
    sock = tmp_path / "agent.sock"
    cfg = agent_config(tmp_path / "agent.yaml", {"Only": arn}, unix={"path": str(sock)})
    srv = ServeProcess(["--config", str(cfg), "--http", "off"], tmp_path).wait_ready()
    try:
        assert srv.bound["unix_socket"] == str(sock)
        assert sock.stat().st_mode & 0o777 == 0o600, "only the server's user may connect"
        with AgentClient(unix=str(sock)) as c:
            assert value_of(c.request({"SecretKey": "password"})) == value.encode()
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
            assert value_of(c.request({})) == blob
            err = c.request({"SecretKey": "k"})["Error"]
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
