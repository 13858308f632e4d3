"""Aerospike Secret Agent configuration files, as ``serve`` and tasks read them.

The table "Aerospike key -> what serve does" in docs/serve.md is parsed and each row checked against the
real files in tests/data/serve: an honoured key (or a project addition) loads, and the same file without
it gives the field the row names another value; a refused key fails at start with an error naming it;
every key of those files has a row. No server, no AWS: these are the loaders serve runs at start.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from flytekitplugins_awssecrets.errors import SettingsError
from flytekitplugins_awssecrets.serve.agent_protocol import NotBase64Error, secret_value_frame
from flytekitplugins_awssecrets.serve.config import ServeConfig, load_serve_config, read_token
from flytekitplugins_awssecrets.settings import Settings, load_settings
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data" / "serve"
DOC = ROOT / "docs" / "serve.md"


@dataclass(frozen=True)
class Row:
    key: str
    status: str
    target: str  # "serve" or "settings"
    field: str
    file: str

    def __str__(self) -> str:
        return f"{self.key} ({self.status}, {self.file})"


def _rows() -> list[Row]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Secret Agent configuration files", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("Aerospike key", "---"):
            continue
        key = re.findall(r"`([^`]+)`", cells[0])[0]
        target, field = re.fullmatch(r"(serve|settings) `(\w+)`", cells[3]).groups()  # type: ignore[union-attr]
        file = re.fullmatch(r"`([\w.]+)`", cells[4]).group(1)  # type: ignore[union-attr]
        rows.append(Row(key, cells[1], target, field, file))
    return rows


ROWS = _rows()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Relative paths in the files (cert.pem, the socket) resolve here, as they would in the agent's cwd."""
    for name in ("cert.pem", "key.pem", "ca.pem", "token"):
        (tmp_path / name).write_text("placeholder\n")
        (tmp_path / name).chmod(0o600)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _load(path: Path) -> tuple[ServeConfig, Settings]:
    """What ``serve --config PATH`` checks before it listens (tasks run the settings part)."""
    cfg = load_serve_config({}, {}, str(path))
    cfg.check()
    return cfg, load_settings({"FLYTE_AWS_SECRETS_CONFIG": str(path)})


def _paths(node: Any, prefix: str = "") -> list[str]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            out.append(path)
            if path != "secret-manager.aws.resources":  # its children are names, not keys
                out += _paths(v, path)
    return out


def _matches(row_key: str, path: str) -> bool:
    if row_key.endswith(".<field>"):
        return path.startswith(row_key[: -len("<field>")])
    return path == row_key or path.startswith(row_key + ".")


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    doc = yaml.safe_load(yaml.safe_dump(doc))
    parts = key.removesuffix(".<field>").split(".")
    node = doc
    for p in parts[:-1]:
        node = node[p]
    del node[parts[-1]]
    return doc


def _value(cfg: ServeConfig, settings: Settings, row: Row) -> Any:
    return getattr(cfg if row.target == "serve" else settings, row.field)


def test_the_table_has_every_kind_of_row() -> None:
    assert len(ROWS) >= 20
    assert {r.status for r in ROWS} == {"honoured", "refused", "addition"}
    for must in (
        "service.tcp.endpoint",
        "service.tcp.tls.cert-file",
        "service.tcp.tls.key-file",
        "service.tcp.tls.ca-file",
        "service.uds.socket-path",
        "secret-manager.aws.convert-to-base64",
        "secret-manager.aws.resources",
        "secret-manager.aws.assume-role",
        "secret-manager.aws.access-key-id",
        "secret-manager.aws.secret-access-key",
        "log.level",
    ):
        assert any(r.key == must and r.status == "honoured" for r in ROWS), must


@pytest.mark.parametrize("row", [r for r in ROWS if r.status != "refused"], ids=str)
def test_honoured_keys_load_and_change_what_the_row_says(row: Row, workdir: Path) -> None:
    path = DATA / row.file
    doc = yaml.safe_load(path.read_text())
    assert any(_matches(row.key, p) for p in _paths(doc)), f"{row.file} does not use {row.key}"
    cfg, settings = _load(path)
    with_key = _value(cfg, settings, row)
    stripped = workdir / f"without-{row.file}"
    stripped.write_text(yaml.safe_dump(_without(doc, row.key)))
    try:
        without_key = _value(*_load(stripped), row)
    except SettingsError:
        return  # the rest of the file needs the key: it is read
    assert with_key != without_key, f"{row.key} made no difference to {row.target} {row.field}"


@pytest.mark.parametrize("row", [r for r in ROWS if r.status == "refused"], ids=str)
def test_refused_keys_fail_at_start_naming_the_key(row: Row, workdir: Path) -> None:
    path = DATA / row.file
    assert any(_matches(row.key, p) for p in _paths(yaml.safe_load(path.read_text())))
    with pytest.raises(SettingsError) as e:
        _load(path)
    assert f"'{row.key}'" in str(e.value) and str(path) in str(e.value)


def test_every_key_of_the_data_files_has_a_row() -> None:
    files = sorted(DATA.glob("*.yml"))
    assert {r.file for r in ROWS} == {f.name for f in files}, "a data file without a row, or the reverse"
    for f in files:
        for p in _paths(yaml.safe_load(f.read_text())):
            assert any(_matches(r.key, p) or r.key.startswith(p + ".") for r in ROWS), f"{f.name}: {p}"


# --- what a Secret Agent file means for serve ------------------------------------------------------------------


def test_a_tcp_only_file_serves_only_the_secret_agent_protocol(workdir: Path) -> None:
    cfg, settings = _load(DATA / "tcp_only.yml")
    assert (cfg.secret_agent, cfg.http, cfg.unix_socket) == ("127.0.0.1:3005", "off", None)
    assert cfg.convert_to_base64 is False, "Aerospike's default"
    assert settings.aliases == {
        "TestingSecret": "arn:aws:secretsmanager:us-west-1:999999999999:secret:TestingSecret-tN6s2j"
    }
    cfg, _ = _load(DATA / "uds_only.yml")
    assert (cfg.secret_agent, cfg.http, cfg.unix_socket) == ("off", "off", "secret-agent.sock")
    # Options still win: the HTTP front end can be added to a file that has none.
    assert load_serve_config({"http": "127.0.0.1:0"}, {}, str(DATA / "tcp_only.yml")).http == "127.0.0.1:0"
    # The plugin's own settings format keeps the defaults.
    plain = workdir / "plugin.yml"
    plain.write_text("cache_ttl_seconds: 60\n")
    cfg = load_serve_config({}, {}, str(plain))
    assert (cfg.secret_agent, cfg.http, cfg.convert_to_base64) == ("127.0.0.1:3005", "127.0.0.1:2773", True)


def test_non_loopback_names_the_file_key(workdir: Path) -> None:
    with pytest.raises(SettingsError) as e:
        _load(DATA / "seed004_any_interface.yml")
    assert "'service.tcp.endpoint'" in str(e.value) and "--allow-non-loopback" in str(e.value)
    cfg = load_serve_config({"allow_non_loopback": True}, {}, str(DATA / "seed004_any_interface.yml"))
    assert "NOT loopback" in cfg.check()[0]


def test_additions_are_read_and_a_setting_given_twice_is_refused(workdir: Path) -> None:
    cfg, settings = _load(DATA / "additions.yml")
    assert (cfg.http, cfg.token_file, cfg.max_connections) == ("127.0.0.1:2773", "token", 50)
    assert settings.cache_ttl_seconds == 60
    twice = workdir / "twice.yml"
    doc = yaml.safe_load((DATA / "tcp_only.yml").read_text())
    doc["x-awssecrets"] = {"serve": {"secret_agent": "127.0.0.1:4000"}}
    twice.write_text(yaml.safe_dump(doc))
    with pytest.raises(SettingsError, match="x-awssecrets.serve.secret_agent.*set it once"):
        _load(twice)
    doc["x-awssecrets"] = {"serve": {"max_conections": 5}}
    twice.write_text(yaml.safe_dump(doc))
    with pytest.raises(SettingsError, match="x-awssecrets.serve.max_conections.*unknown serve setting"):
        _load(twice)


def test_bad_values_name_the_key(workdir: Path) -> None:
    doc = yaml.safe_load((DATA / "tcp_only.yml").read_text())
    f = workdir / "bad.yml"
    for key, mutate in (
        (
            "secret-manager.aws.convert-to-base64",
            lambda d: d["secret-manager"]["aws"].update({"convert-to-base64": "maybe"}),
        ),
        ("log.level", lambda d: d["log"].update({"level": "loud"})),
        ("service.tcp.endpoint", lambda d: d["service"]["tcp"].update({"endpoint": "nonsense"})),
        ("service.tcp.tls", lambda d: d["service"]["tcp"].update({"tls": {"cert-file": "cert.pem"}})),
    ):
        bad = yaml.safe_load(yaml.safe_dump(doc))
        mutate(bad)
        f.write_text(yaml.safe_dump(bad))
        with pytest.raises(SettingsError) as e:
            _load(f)
        assert f"'{key}'" in str(e.value), (key, str(e.value))


def test_tasks_read_the_same_file(caplog: pytest.LogCaptureFixture) -> None:
    """convert-to-base64 and the serve sections must not break tasks that read the file as settings, and
    the notice must not claim that serve ignores them."""
    with caplog.at_level(logging.INFO):
        for name in ("convert_to_base64.yml", "tls.yml", "uds_only.yml", "additions.yml"):
            load_settings({"FLYTE_AWS_SECRETS_CONFIG": str(DATA / name)})
    assert "ignored" not in caplog.text
    assert "pyflyte-awssecrets serve reads it" in caplog.text


# --- convert-to-base64 ---------------------------------------------------------------------------------------


def test_convert_to_base64_false_sends_the_stored_base64_as_is() -> None:
    import base64
    import json

    stored = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nline\n").decode() + "\n"
    doc = json.loads(secret_value_frame(stored, convert_to_base64=False, reference="r")[8:])
    assert doc["SecretValue"] == stored, "sent as it is, not encoded again"
    doc = json.loads(secret_value_frame("plain", convert_to_base64=True, reference="r")[8:])
    assert base64.b64decode(doc["SecretValue"]) == b"plain"
    for not_b64 in ("not base64!", "YWJj\nZGVm", "", "   ", b"\xff\x00"):
        with pytest.raises(NotBase64Error) as e:
            secret_value_frame(not_b64, convert_to_base64=False, reference="resource 'Db' key 'k'")
        assert "resource 'Db' key 'k'" in str(e.value) and "base64 -w0" in str(e.value)


# --- the HTTP token ------------------------------------------------------------------------------------------


def test_token_from_aws_agents_environment_variables_in_order(tmp_path: Path) -> None:
    cfg = ServeConfig()
    assert read_token(cfg, {"AWS_SESSION_TOKEN": "s", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "c"})[0] == "s"
    got = read_token(cfg, {"AWS_CONTAINER_AUTHORIZATION_TOKEN": "c"})
    assert got == ("c", "env var AWS_CONTAINER_AUTHORIZATION_TOKEN")
    assert read_token(cfg, {"AWS_TOKEN": "t", "AWS_SESSION_TOKEN": "s"})[0] == "t"
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    f.chmod(0o600)
    assert read_token(cfg, {"AWS_SESSION_TOKEN": f"file://{f}"})[0] == "from-file"
    only = ServeConfig(ssrf_env_variables="AWS_TOKEN")  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="needs a token"):
        read_token(only, {"AWS_SESSION_TOKEN": "s"})
    assert ServeConfig(ssrf_headers="X-A, X-B").ssrf_headers == ("X-A", "X-B")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ServeConfig(ssrf_headers=["bad header"])  # type: ignore[arg-type]


def test_token_file_readable_by_others_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "tok"
    f.write_text("t0ken\n")
    for mode, expected in (
        (0o644, "readable by every user"),
        (0o640, "readable by its group"),
        (0o600, None),
    ):
        f.chmod(mode)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert read_token(ServeConfig(token_file=str(f)), {})[0] == "t0ken"
        if expected:
            assert expected in caplog.text and "chmod 600" in caplog.text
        else:
            assert "readable" not in caplog.text
        assert "t0ken" not in caplog.text


def test_a_token_written_in_a_readable_file_is_a_warning(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    doc = yaml.safe_load((DATA / "tcp_only.yml").read_text())
    doc["x-awssecrets"] = {"serve": {"http": "127.0.0.1:0", "token": "in-the-file-t0ken"}}
    f = workdir / "agent.yml"
    f.write_text(yaml.safe_dump(doc))
    for mode, warned in ((0o644, True), (0o600, False)):
        f.chmod(mode)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            cfg = load_serve_config({}, {}, str(f))
        assert read_token(cfg, {})[0] == "in-the-file-t0ken"
        assert ("readable by other users" in caplog.text) is warned
        assert "in-the-file-t0ken" not in caplog.text
