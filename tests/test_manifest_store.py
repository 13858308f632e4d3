"""save, diff, sync, nuke and export against the moto server: the user's story, command by command."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from flytekitplugins_awssecrets.cli import main
from flytekitplugins_awssecrets.manifest import store
from flytekitplugins_awssecrets.manifest.model import load_manifest
from tests.conftest import new_value


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def base(unique: str, aws_env: dict[str, str]) -> dict[str, Any]:
    """A plain (unencrypted) manifest under a path of its own; no KMS file key needed."""
    return {
        "path": f"/app{unique}/",
        "region": "us-east-1",
        "kmskey": "alias/aws/ssm",
        "tags": {"team": "platform"},
        "parameters": [
            {"name": "api_version", "description": "plain", "type": "String", "value": "0123"},
            {"name": "/api_token", "description": "secret", "type": "SecureString", "value": new_value()},
            {"name": "hosts", "description": "list", "type": "stringlist", "value": "a,b"},
        ],
        "secrets": [
            {"name": "db", "description": "login", "value": {"user": "app", "password": new_value()}}
        ],
    }


def _ssm(secrets_factory: Any) -> Any:
    return secrets_factory.client("ssm")


def test_save_writes_every_entry_with_types_tags_and_no_double_slash(
    tmp_path: Path, base: dict[str, Any], secrets_factory: Any, unique: str
) -> None:
    f = _write(tmp_path / "m.yml", base)
    r = _cli("manifest", "save", str(f))
    assert r.exit_code == 0, r.stderr
    assert "save: 4 written, 0 failed" in r.stderr
    ssm = _ssm(secrets_factory)
    got = {
        p["Name"]: p
        for p in ssm.get_parameters_by_path(Path=f"/app{unique}", Recursive=True, WithDecryption=True)[
            "Parameters"
        ]
    }
    assert set(got) == {f"/app{unique}/api_version", f"/app{unique}/api_token", f"/app{unique}/hosts"}
    assert got[f"/app{unique}/api_version"]["Value"] == "0123"
    assert got[f"/app{unique}/api_token"]["Type"] == "SecureString"
    assert got[f"/app{unique}/api_token"]["Value"] == base["parameters"][1]["value"]
    assert got[f"/app{unique}/hosts"]["Type"] == "StringList"  # lowercase in the file, SSM's spelling sent
    tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=f"/app{unique}/hosts")["TagList"]
    assert tags == [{"Key": "team", "Value": "platform"}]
    sm = secrets_factory.client("secretsmanager")
    secret = sm.get_secret_value(SecretId=f"app{unique}/db")
    assert json.loads(secret["SecretString"]) == base["secrets"][0]["value"]
    desc = sm.describe_secret(SecretId=f"app{unique}/db")
    assert desc["Description"] == "login" and {"Key": "team", "Value": "platform"} in desc["Tags"]


def test_diff_then_sync_writes_only_what_differs(
    tmp_path: Path, base: dict[str, Any], secrets_factory: Any, unique: str
) -> None:
    f = _write(tmp_path / "m.yml", base)
    r = _cli("manifest", "diff", str(f))
    assert r.exit_code == 1 and r.stdout.count("+ ") == 4
    assert _cli("manifest", "save", str(f)).exit_code == 0
    r = _cli("manifest", "diff", str(f))
    assert r.exit_code == 0, r.stdout
    assert "AWS matches" in r.stderr

    ssm = _ssm(secrets_factory)
    ssm.put_parameter(Name=f"/app{unique}/extra", Value="x", Type="String")
    ssm.add_tags_to_resource(
        ResourceType="Parameter",
        ResourceId=f"/app{unique}/api_version",
        Tags=[{"Key": "stale", "Value": "1"}],
    )
    base["parameters"][0]["value"] = "0124"
    base["parameters"][2]["description"] = "changed"
    base["secrets"][0]["value"]["password"] = new_value()
    _write(f, base)
    r = _cli("manifest", "diff", str(f))
    assert r.exit_code == 1
    lines = sorted(r.stdout.splitlines())
    assert lines == sorted(
        [
            f"~ parameter /app{unique}/api_version: value, tags -stale",
            f"~ parameter /app{unique}/hosts: description",
            f"~ secret app{unique}/db: value",
            f"- parameter /app{unique}/extra: not in the file",
        ]
    )
    assert base["secrets"][0]["value"]["password"] not in r.output

    calls = Counter[str]()
    clients = store.Clients("us-east-1")
    clients.ssm.meta.events.register("before-call.ssm.*", lambda model, **_: calls.update([model.name]))
    clients.secretsmanager.meta.events.register(
        "before-call.secretsmanager.*", lambda model, **_: calls.update([model.name])
    )
    m = load_manifest(str(f))
    report = store.sync(m, clients)
    assert report.ok and report.unchanged == 1 and len(report.outcomes) == 3
    assert (
        calls["PutParameter"] == 2 and calls["PutSecretValue"] == 1 and calls["RemoveTagsFromResource"] == 1
    )
    assert calls["CreateSecret"] == 0 and calls["DeleteParameters"] == 0  # no --prune: extra is kept
    assert ssm.get_parameter(Name=f"/app{unique}/extra")["Parameter"]["Value"] == "x"

    r = _cli("manifest", "sync", "--prune", "--dry-run", str(f))
    assert r.exit_code == 0 and "would remove" in r.stderr
    assert ssm.get_parameter(Name=f"/app{unique}/extra")
    r = _cli("manifest", "sync", "--prune", str(f))  # no terminal to confirm on, no --yes: nothing happens
    assert r.exit_code == 2 and "pass --yes" in r.stderr
    assert ssm.get_parameter(Name=f"/app{unique}/extra")
    r = _cli("manifest", "sync", "--prune", "--yes", str(f))
    assert r.exit_code == 0, r.stderr
    assert _cli("manifest", "diff", str(f)).exit_code == 0
    assert not ssm.get_parameters(Names=[f"/app{unique}/extra"])["Parameters"]


def test_dry_run_writes_nothing(
    tmp_path: Path, base: dict[str, Any], secrets_factory: Any, unique: str
) -> None:
    f = _write(tmp_path / "m.yml", base)
    for command in ("save", "sync", "nuke"):
        r = _cli("manifest", command, "--dry-run", str(f))
        assert r.exit_code == 0, r.stderr
        assert "would" in r.stderr
    assert not _ssm(secrets_factory).get_parameters_by_path(Path=f"/app{unique}")["Parameters"]


def test_nuke_deletes_listed_entries_and_reports_ones_already_gone(
    tmp_path: Path, base: dict[str, Any], secrets_factory: Any, unique: str
) -> None:
    f = _write(tmp_path / "m.yml", base)
    assert _cli("manifest", "save", str(f)).exit_code == 0
    ssm = _ssm(secrets_factory)
    ssm.delete_parameter(Name=f"/app{unique}/hosts")
    ssm.put_parameter(Name=f"/app{unique}/unlisted", Value="keep", Type="String")
    r = _cli("manifest", "nuke", "--force-delete-without-recovery", str(f))
    assert r.exit_code == 2 and "refusing to delete" in r.stderr  # no terminal and no --yes
    assert ssm.get_parameter(Name=f"/app{unique}/api_token")
    r = _cli("manifest", "nuke", "--dry-run", str(f))  # says what would really happen
    assert r.exit_code == 0, r.stderr
    assert f"parameter /app{unique}/hosts: already absent" in r.stderr
    assert f"parameter /app{unique}/api_token: would delete" in r.stderr
    assert "nuke: 3 would be deleted, 1 already absent, 0 failed" in r.stderr
    r = _cli("manifest", "nuke", "--yes", "--force-delete-without-recovery", str(f))
    assert r.exit_code == 0, r.stderr
    assert "nuke: 3 deleted, 1 already absent, 0 failed" in r.stderr
    assert f"parameter /app{unique}/hosts: already gone" in r.stderr
    assert f"parameter /app{unique}/api_token: deleted" in r.stderr
    names = [p["Name"] for p in ssm.get_parameters_by_path(Path=f"/app{unique}")["Parameters"]]
    assert names == [f"/app{unique}/unlisted"]
    r = _cli("manifest", "nuke", "--yes", str(f))  # everything gone now: still exit 0, all reported
    assert r.exit_code == 0 and r.stderr.count("already gone") == 4
    assert "nuke: 0 deleted, 4 already absent, 0 failed" in r.stderr
    r = _cli("manifest", "nuke", "--yes", "--format", "json", str(f))
    data = json.loads(r.stdout)
    assert data["counts"] == {"changed": 0, "already_absent": 4, "failed": 0, "unchanged": 0}
    # A secret in its recovery window comes back on the next save.
    assert _cli("manifest", "save", str(f)).exit_code == 0
    assert _cli("manifest", "nuke", "-y", str(f)).exit_code == 0  # default: 30-day recovery window
    r = _cli("manifest", "save", str(f))
    assert r.exit_code == 0, r.stderr
    assert _cli("manifest", "diff", "--listed-only", str(f)).exit_code == 0


def test_export_formats(tmp_path: Path, base: dict[str, Any], aws_env: dict[str, str]) -> None:
    f = _write(tmp_path / "m.yml", base)
    token = base["parameters"][1]["value"]
    r = _cli("manifest", "export", str(f))
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "export API_VERSION='0123'"
    assert lines[1] == f"export API_TOKEN='{token}'"  # leading slash stripped (psyml: _API_TOKEN)
    assert lines[2] == "export HOSTS='a,b'"
    assert lines[3].startswith("export DB='{")
    r = _cli("manifest", "export", "--format", "json", "--prefix", "APP_", str(f))
    assert json.loads(r.stdout)["APP_API_TOKEN"] == token
    r = _cli("manifest", "export", "-f", "dotenv", str(f))
    assert r.stdout.splitlines()[0] == "API_VERSION='0123'"
    base["parameters"].append({"name": "api-version", "description": "", "type": "String", "value": "x"})
    _write(f, base)
    r = _cli("manifest", "export", str(f))
    assert (
        r.exit_code == 2
        and "API_VERSION: parameters[0] 'api_version', parameters[3] 'api-version'" in r.stderr
    )
    assert r.stdout == ""


def _inject_failures(monkeypatch: pytest.MonkeyPatch, fail_names: set[str], echo_value: bool = False) -> None:
    """Make PutParameter / CreateSecret fail for some names, the way AWS answers (a ClientError), in-process."""
    real = store.make_client

    class _Http:
        status_code = 400
        headers: dict[str, str] = {}

    def make(service: str, region: str, max_pool: int = 10) -> Any:
        client = real(service, region, max_pool)

        def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            context["test_api_params"] = dict(params)

        def maybe_fail(context: dict[str, Any], **_: Any) -> Any:
            params = context.get("test_api_params", {})
            name = params.get("Name") or params.get("SecretId")
            if name in fail_names:
                message = "Rate exceeded"
                if echo_value:  # what a real ValidationException does: echo the input
                    value = params.get("Value") or params.get("SecretString")
                    message = f"1 validation error detected: Value '{value}' at 'value' failed to satisfy constraint"
                return _Http(), {"Error": {"Code": "ValidationException", "Message": message}}
            return None

        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f"before-parameter-build.{service}.*", remember)
        client.meta.events.register(f"before-call.{service}.*", maybe_fail)
        return client

    monkeypatch.setattr(store, "make_client", make)


def test_half_applied_sync_is_never_silent(
    tmp_path: Path, base: dict[str, Any], secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = _write(tmp_path / "m.yml", base)
    _inject_failures(monkeypatch, {f"/app{unique}/api_token", f"app{unique}/db"}, echo_value=True)
    r = _cli("manifest", "sync", str(f))
    assert r.exit_code == 3
    assert f"ok     parameter /app{unique}/api_version: added" in r.stderr
    assert f"FAILED parameter /app{unique}/api_token: add: ValidationException" in r.stderr
    assert f"FAILED secret app{unique}/db: add" in r.stderr
    assert "sync: 2 changed, 2 failed, 0 unchanged -- AWS is now partly updated" in r.stderr
    assert base["parameters"][1]["value"] not in r.output  # the echoed value was scrubbed
    assert base["secrets"][0]["value"]["password"] not in r.output
    assert _ssm(secrets_factory).get_parameter(Name=f"/app{unique}/api_version")


def test_reads_are_batched_and_paginated(
    tmp_path: Path, unique: str, secrets_factory: Any, aws_env: dict[str, str]
) -> None:
    n = 25
    data = {
        "path": f"/big{unique}",
        "region": "us-east-1",
        "parameters": [
            {"name": f"p{i:03d}", "description": "", "type": "String", "value": str(i)} for i in range(n)
        ],
    }
    m = load_manifest(str(_write(tmp_path / "big.yml", data)))
    clients = store.Clients("us-east-1", concurrency=16)
    calls = Counter[str]()
    clients.ssm.meta.events.register("before-call.ssm.*", lambda model, **_: calls.update([model.name]))
    report = store.save(m, clients, progress=True)
    assert report.ok and calls["PutParameter"] == n and len(report.outcomes) == n
    calls.clear()
    assert store.plan(m, clients, "listed") == []
    assert calls["GetParameters"] == 3  # 10 names per call
    calls.clear()
    assert store.plan(m, clients, "path") == []
    # 10 per page for values (the API maximum); moto pages DescribeParameters by 10 too (AWS: up to 50)
    assert calls["GetParametersByPath"] == 3 and calls["DescribeParameters"] <= 3
    calls.clear()
    report = store.nuke(m, clients)
    assert calls["DeleteParameters"] == 3 and [o.action for o in report.outcomes] == ["deleted"] * n


def test_invalid_file_exits_2_without_aws(tmp_path: Path) -> None:
    r = _cli("manifest", "save", str(Path(__file__).parent / "data" / "manifest" / "invalid.yml"))
    assert r.exit_code == 2 and "parameters[1] 'typo_field': descripton: unknown field" in r.stderr


def test_aws_unreachable_exits_3(
    tmp_path: Path, base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setattr("flytekitplugins_awssecrets.manifest.awsclient.MAX_ATTEMPTS", 1)
    r = _cli("manifest", "diff", str(_write(tmp_path / "m.yml", base)))
    assert (
        r.exit_code == 3
        and "cannot reach endpoint http://127.0.0.1:9 (from env var AWS_ENDPOINT_URL)" in r.stderr
    )


def test_prune_refuses_the_root_path(tmp_path: Path, aws_env: dict[str, str]) -> None:
    data = {"path": "/", "region": "us-east-1", "parameters": [{"name": "x", "type": "String", "value": "1"}]}
    r = _cli("manifest", "sync", "--prune", "--dry-run", str(_write(tmp_path / "root.yml", data)))
    assert r.exit_code == 2 and "would delete the whole account" in r.stderr


def test_json_reports_for_scripts(tmp_path: Path, base: dict[str, Any], unique: str) -> None:
    f = _write(tmp_path / "m.yml", base)
    r = _cli("manifest", "diff", "--format", "json", str(f))
    assert r.exit_code == 1
    changes = json.loads(r.stdout)  # stdout is JSON only; the summary is on stderr
    assert {c["action"] for c in changes} == {"add"} and len(changes) == 4 and "difference" in r.stderr
    r = _cli("manifest", "save", "--format", "json", str(f))
    report = json.loads(r.stdout)
    assert report["command"] == "save" and report["counts"]["changed"] == 4
    assert all(o["ok"] for o in report["outcomes"])
    r = _cli("manifest", "sync", "--format", "json", str(f))
    assert json.loads(r.stdout)["counts"] == {"changed": 0, "already_absent": 0, "failed": 0, "unchanged": 4}
    r = _cli("manifest", "diff", "--format", "json", str(f))
    assert r.exit_code == 0 and json.loads(r.stdout) == []


def test_long_run_without_terminal_prints_progress_lines(
    tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch, aws_env: dict[str, str]
) -> None:
    monkeypatch.setattr(store, "PROGRESS_INTERVAL", 0.0)  # every completion prints a line
    params = [{"name": f"p{i}", "type": "String", "value": "v"} for i in range(store.PROGRESS_MIN + 5)]
    f = _write(tmp_path / "m.yml", {"path": f"/prog{unique}/", "region": "us-east-1", "parameters": params})
    r = _cli("manifest", "save", str(f))
    assert r.exit_code == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("progress: ")]
    n = len(params)
    assert lines and lines[-1].startswith(f"progress: {n}/{n} done, 0 failed")
    r = _cli("manifest", "save", "--no-progress", str(f))
    assert "progress: " not in r.stderr


def test_dry_run_wording_is_a_sentence() -> None:
    from flytekitplugins_awssecrets.manifest.commands import _planned

    assert _planned("tags") == "would update tags"
    assert _planned("add") == "would add" and _planned("already gone") == "already absent: nothing to delete"


def test_progress_lines_come_at_a_steady_interval(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(store, "PROGRESS_INTERVAL", 0.05)
    gates = [threading.Event() for _ in range(4)]

    def work(i: int) -> store.Outcome:
        gates[i].wait(timeout=10)
        return store.Outcome(kind="parameter", name=f"p{i}", action="added", ok=i != 2)

    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = [pool.submit(work, i) for i in range(4)]
        releaser = threading.Thread(
            target=lambda: [(threading.Event().wait(0.12), g.set()) for g in gates], daemon=True
        )
        releaser.start()
        results = store._with_progress_lines(futures)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("progress: ")]
    assert [o.name for o in results] == ["p0", "p1", "p2", "p3"]
    # One task finishes every ~0.12 s and a line is due every 0.05 s: lines appear while work goes on,
    # not only at the end.
    assert len(lines) >= 3 and lines[-1].startswith("progress: 4/4 done, 1 failed")
