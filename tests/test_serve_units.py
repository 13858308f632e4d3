"""The pure parts of ``serve``: Secret Agent framing, serve configuration, key picking. No server, no AWS."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flytekitplugins_awssecrets.errors import JsonKeyNotFoundError, SettingsError
from flytekitplugins_awssecrets.serve.agent_protocol import (
    MAGIC,
    AgentResponse,
    FrameError,
    decode_request,
    encode_frame,
    error_frame,
    parse_header,
    value_frame,
)
from flytekitplugins_awssecrets.serve.config import ServeConfig, load_serve_config, parse_endpoint, read_token
from flytekitplugins_awssecrets.serve.source import pick_key, secret_name_from_arn


@given(st.binary(max_size=2048))
def test_frame_round_trip(body: bytes) -> None:
    data = encode_frame(body)
    assert parse_header(data[:8], max_body=4096) == len(body)
    assert data[8:] == body


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=0, max_value=2**32 - 1))
def test_any_header_is_accepted_or_refused_never_crashes(magic: int, length: int) -> None:
    header = struct.pack(">II", magic, length)
    try:
        got = parse_header(header, max_body=1024)
    except FrameError as e:
        assert e.fatal
        assert magic != MAGIC or length > 1024
    else:
        assert magic == MAGIC and got == length <= 1024


@given(st.binary(max_size=512))
def test_any_body_is_a_request_or_a_non_fatal_error(body: bytes) -> None:
    try:
        decode_request(body)
    except FrameError as e:
        assert not e.fatal


def test_value_and_error_frames() -> None:
    doc = json.loads(value_frame("héllo")[8:])
    assert base64.b64decode(doc["SecretValue"]) == "héllo".encode()
    assert json.loads(error_frame("nope")[8:]) == {"Error": "nope"}
    assert "SecretValue" not in repr(AgentResponse(SecretValue="c2VjcmV0"))


def test_bad_request_messages_do_not_repeat_values() -> None:
    for body in (
        b'{"Resource": ["sv-not-echoed"]}',
        b"sv-not-echoed",
        b'{"SecretKey": 1, "x": "sv-not-echoed"}',
    ):
        with pytest.raises(FrameError) as e:
            decode_request(body)
        assert "sv-not-echoed" not in str(e.value)


def test_pick_key_literal_first_then_path() -> None:
    doc = json.dumps({"tls.crt": "A", "db": {"password": "B"}, "plain": "C"})
    assert pick_key("ref", doc, "tls.crt") == "A"
    assert pick_key("ref", doc, "db.password") == "B"
    assert pick_key("ref", doc, "plain") == "C"
    with pytest.raises(JsonKeyNotFoundError) as e:
        pick_key("ref", doc, "nope")
    assert "'nope'" in str(e.value) and "'plain'" not in str(e.value)  # no key names of the secret


@pytest.mark.parametrize(
    "arn, name",
    [
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbC123", "prod/db"),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:a-b-c-XyZ789", "a-b-c"),
    ],
)
def test_secret_name_from_arn(arn: str, name: str) -> None:
    assert secret_name_from_arn(arn) == name


def test_endpoints() -> None:
    assert parse_endpoint("127.0.0.1:3005").is_loopback
    assert parse_endpoint("[::1]:2773").is_loopback
    assert parse_endpoint("localhost:1").is_loopback
    assert not parse_endpoint("0.0.0.0:3005").is_loopback
    assert not parse_endpoint("example.com:3005").is_loopback
    for bad in ("3005", "host:", "host:99999", ":80"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_precedence_cli_over_env_over_secret_agent_file(tmp_path: Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(
        "service:\n  tcp:\n    endpoint: 127.0.0.1:4000\n  uds:\n    socket-path: /tmp/x.sock\n"
        "secret-manager:\n  aws:\n    region: us-east-1\nlog:\n  level: WARN\n"
    )
    cfg = load_serve_config({}, {}, str(f))
    assert (cfg.secret_agent, cfg.unix_socket, cfg.log_level) == ("127.0.0.1:4000", "/tmp/x.sock", "warning")
    env = {"PYFLYTE_AWSSECRETS_SERVE_SECRET_AGENT": "127.0.0.1:4001"}
    assert load_serve_config({}, env, str(f)).secret_agent == "127.0.0.1:4001"
    assert load_serve_config({"secret_agent": "off"}, env, str(f)).secret_agent_endpoint is None
    # Options not given (None) do not override.
    assert load_serve_config({"secret_agent": None}, env, str(f)).secret_agent == "127.0.0.1:4001"


def test_config_errors_name_the_source_and_never_the_token() -> None:
    with pytest.raises(SettingsError) as e:
        load_serve_config({}, {"PYFLYTE_AWSSECRETS_SERVE_MAX_CONNECTIONS": "lots"})
    assert "PYFLYTE_AWSSECRETS_SERVE_MAX_CONNECTIONS" in str(e.value)
    with pytest.raises(SettingsError) as e:
        load_serve_config({}, {"PYFLYTE_AWSSECRETS_SERVE_TOKN": "tok-not-shown"})
    assert "tok-not-shown" not in str(e.value) and "unknown serve setting" in str(e.value)
    assert "tok-not-shown" not in repr(load_serve_config({"token": "tok-not-shown"}, {}))


def test_non_loopback_needs_the_flag_and_then_warns() -> None:
    with pytest.raises(SettingsError, match="not a loopback address"):
        ServeConfig(http="0.0.0.0:2773").check()
    warnings = ServeConfig(http="0.0.0.0:2773", secret_agent="0.0.0.0:3005", allow_non_loopback=True).check()
    assert len(warnings) == 2 and all("NOT loopback" in w for w in warnings)
    assert "no authentication" in warnings[0] and "plain text" in warnings[0]


def test_token_sources(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    assert read_token(ServeConfig(token="direct"), {})[0] == "direct"
    assert read_token(ServeConfig(token=f"file://{f}"), {})[0] == "from-file"
    assert read_token(ServeConfig(token_file=str(f)), {})[0] == "from-file"
    assert read_token(ServeConfig(), {"AWS_TOKEN": f"file://{f}"})[0] == "from-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        read_token(ServeConfig(token_file=str(tmp_path / "empty")), {})


# --- the allow-list and Aerospike's base64 (issue 20 item 2, issue 21 item 12) ----------------------------------


def test_allow_list_entries_and_matching() -> None:
    from flytekitplugins_awssecrets.errors import SettingsError
    from flytekitplugins_awssecrets.refs import parse_reference
    from flytekitplugins_awssecrets.serve.allow import AllowList

    base = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    allow = AllowList.from_entries(["db", "team/*", base + "exact", base + "pre/*"], "option --allow")
    home = lambda: parse_reference(base + "x")  # noqa: E731
    ok = [base + "db-AbCdEf", base + "team/a", base + "exact-AbCdEf", base + "exact", base + "pre/x-AbCdEf"]
    for arn in ok:
        assert allow.check_arn(arn, parse_reference(arn), home) is None, arn
    no = [base + "dbx", base + "teamx", base + "exactly", base + "pre", base.replace("1234", "9999") + "db"]
    for arn in no:
        assert allow.check_arn(arn, parse_reference(arn), home) is not None, arn
    # What AWS answered decides in the end: a partial ARN that resolved to "db-AbCdEf" is not "db".
    ref = parse_reference(base + "db-AbCdEf")
    assert allow.check_served(base + "db-AbCdEf", ref, base + "db-AbCdEf-QwErTy", "db-AbCdEf", home)
    for bad in ("*", "", "a*b", "**", "arn:aws:secretsmanager:*", "arn:nonsense"):
        with pytest.raises(SettingsError) as e:
            AllowList.from_entries([bad], "option --allow")
        assert "allow" in str(e.value)


def test_strict_base64_is_aerospikes() -> None:
    from flytekitplugins_awssecrets.serve.agent_protocol import is_strict_base64

    good = [b"QUJD", b"QUI=", b"QQ==", b"QUJD\n", b"QUJDQUJD"]
    bad = [b"QUJD====", b"QUJD=", b"QU=I", b"QUJ", b"Q===", b"", b"QU JD", b"QUJD\nQUJD", b"QUJ-"]
    assert [is_strict_base64(v) for v in good] == [True] * len(good)
    assert [is_strict_base64(v) for v in bad] == [False] * len(bad)
