"""JSON-key extraction: nested paths, escaped dots, list indexes; errors never show a value."""

from __future__ import annotations

import json

import pytest

from flytekitplugins_awssecrets import JsonKeyNotFoundError, SecretNotJsonError
from flytekitplugins_awssecrets.extract import extract_json_key, split_json_path
from tests.conftest import new_value

REF = "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"


def test_paths() -> None:
    assert split_json_path("a.b") == ["a", "b"]
    assert split_json_path(r"tls\.crt") == ["tls.crt"]
    assert split_json_path(r"a\\.b") == ["a\\", "b"]


def test_extract_nested_escaped_and_indexed() -> None:
    pw = new_value()
    doc = json.dumps({"db": {"password": pw, "port": 5432}, "tls.crt": "C", "hosts": ["h0", "h1"], "n": None})
    assert extract_json_key(REF, doc, "db.password") == pw
    assert extract_json_key(REF, doc, "db.port") == "5432"
    assert extract_json_key(REF, doc, r"tls\.crt") == "C"
    assert extract_json_key(REF, doc, "hosts.1") == "h1"
    assert extract_json_key(REF, doc, "db") == json.dumps(
        {"password": pw, "port": 5432}, separators=(",", ":")
    )
    assert extract_json_key(REF, doc.encode(), "hosts.0") == "h0"
    with pytest.raises(SecretNotJsonError, match="null"):
        extract_json_key(REF, doc, "n")


def test_missing_key_names_no_key_and_no_value() -> None:
    pw, owner_token = new_value(), new_value("tok")
    doc = json.dumps({"username": "u", "password": pw, "owners": {owner_token: "alice"}})
    with pytest.raises(JsonKeyNotFoundError) as e:
        extract_json_key(REF, doc, "passwd")
    msg = str(e.value)
    assert "'passwd'" in msg and "top level" in msg and "3 keys" in msg
    # Key names can be secret themselves (tokens -> owners): neither top-level nor nested keys are listed.
    assert "username" not in msg and "password" not in msg
    with pytest.raises(JsonKeyNotFoundError) as e:
        extract_json_key(REF, doc, "owners.nobody")
    msg = str(e.value) + repr(e.value) + repr(vars(e.value))
    assert "segment 2 of 2" in msg and "1 key" in msg
    assert owner_token not in msg and pw not in msg


def test_deep_nesting_is_a_typed_error() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for doc in (deep, '{"a": ' + deep + "}"):
        with pytest.raises(SecretNotJsonError, match="nested too deeply|not an object"):
            extract_json_key(REF, doc, "a")


def test_not_json_never_chains_the_decoder_error() -> None:
    raw = new_value() + " {not json"
    with pytest.raises(SecretNotJsonError) as e:
        extract_json_key(REF, raw, "k")
    assert raw not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__
    with pytest.raises(SecretNotJsonError, match="not an object"):
        extract_json_key(REF, "[1, 2]", "k")
    with pytest.raises(SecretNotJsonError, match="binary"):
        extract_json_key(REF, b"\xff\xfe", "k")
