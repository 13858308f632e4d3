"""Secrets rotated while a task runs (issue 25): refresh of ANY and FILE values, the task's record and its
"AWS secrets" deck. Through a pod's own command (``pyflyte-execute`` of a serialised spec) and real flytekit
tasks in-process, against moto server.

moto 5.2 answers a stage-less GetSecretValue with the old version after UpdateSecretVersionStage moves
AWSCURRENT (AWS answers with the new one). A refresh names the stage it follows (``VersionStage=AWSCURRENT``),
which AWS and moto answer alike, so these tests rotate exactly as a rotation function does on AWS.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from flytekit import Secret, current_context, task

from flytekitplugins_awssecrets import (
    RefreshIntervalError,
    SecretResolutionError,
    aws_secret,
    current_record,
    recent_records,
    refresh_secrets,
)
from flytekitplugins_awssecrets.flytekit.deck import render
from tests.conftest import fingerprint, new_value
from tests.support.pod import run_pod, serialize_tasks
from tests.test_security import _env


def _forms(value: str) -> list[str]:
    """A value and the parts of it a careless renderer could show: prefixes, suffix, its hashes."""
    import hashlib

    b = value.encode()
    return [value, value[:8], value[-8:], hashlib.sha256(b).hexdigest()[:12], hashlib.md5(b).hexdigest()[:12]]  # noqa: S324


def _assert_no_value(text: str, *values: str) -> None:
    found = [fingerprint(v) for v in values for f in _forms(v) if f in text]
    assert not found, f"a value (or a part or hash of one) is in the text: {found}"


@pytest.fixture
def rotating_secret(secrets_factory: Any, unique: str) -> tuple[str, str, str]:
    """(ARN, first value, the value the task rotates to)."""
    arn, first = secrets_factory.secret(f"{unique}/rotating")
    return arn, first, new_value("rot")


def test_pod_follows_rotation_in_file_and_any_keeps_env_and_writes_deck_and_record(
    rotating_secret: tuple[str, str, str], aws_env: dict[str, str], tmp_path: Path
) -> None:
    arn, first, new = rotating_secret
    env = _env(
        aws_env,
        ROTATING_ARN=arn,
        ROTATED_VALUE=new,
        # 1 s is what the quota allows for one secret at the default fleet of 1,000 pods (refresh_fleet_pods
        # is the image's to set in a pod, see test_settings).
        FLYTE_AWS_SECRETS_REFRESH_INTERVAL_SECONDS="1",
        FLYTE_SDK_LOGGING_LEVEL="20",
        FLYTE_SDK_RICH_TRACEBACKS="0",  # a pod's log: one JSON object per record
    )
    specs = serialize_tasks("tests.workflows", tmp_path / "spec", env, "*rotation.rotating_1.pb")
    (spec,) = specs.values()
    p = run_pod(spec, tmp_path / "pod", env)
    out = tmp_path / "pod" / "out"
    assert p.returncode == 0 and (out / "outputs.pb").exists(), p.stderr[-3000:]
    from flyteidl.core import literals_pb2

    lm = literals_pb2.LiteralMap()
    lm.ParseFromString((out / "outputs.pb").read_bytes())
    report = lm.literals["o0"].scalar.primitive.string_value
    assert report == (
        "same_at_start=True pending_served=False any_new=True file_new=True env_kept=True path_env=True odd_reads=0"
    )
    # The deck, as the pod uploads it next to the outputs.
    deck = (out / "deck.html").read_text()
    assert "AWS secrets" in deck and arn in deck and "AWSCURRENT" in deck and "GetSecretValue" in deck
    assert re.search(r"\d+ \(every 1 s\)", deck), "refresh count and interval are shown"
    # The record: one JSON line in the pod log, with the versions read and the refreshes.
    lines = [
        json.loads(json.loads(line)["message"])
        for line in p.stderr.splitlines()
        if "awssecrets.task_record" in line and line.startswith("{")
    ]
    assert len(lines) == 1
    rec = lines[0]
    assert [r["mount"] for r in rec["reads"]] == ["ANY", "FILE", "ENV_VAR"]
    any_row, file_row, env_row = rec["reads"]
    assert any_row["refreshes"] >= 1 and file_row["refreshes"] >= 1 and env_row["refreshes"] == 0
    assert env_row["refresh_interval_seconds"] is None
    assert any_row["version_id"] and "AWSCURRENT" in any_row["version_stages"]
    assert file_row["mounted_as"].startswith("file /") and env_row["mounted_as"].startswith("env ROT_ENV")
    _assert_no_value(deck + p.stdout + p.stderr + json.dumps(rec), first, new)


def _task_over(arn: str) -> tuple[Any, Any]:
    req = aws_secret(arn)
    f_req = aws_secret(arn, mount_requirement=Secret.MountType.FILE)
    return req, f_req


def test_failed_refresh_keeps_the_last_good_value_and_warns(
    secrets_factory: Any,
    rotating_secret: tuple[str, str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    arn, first, _ = rotating_secret
    monkeypatch.setenv("FLYTE_AWS_SECRETS_REFRESH_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_REFRESH_FLEET_PODS", "1")
    req, f_req = _task_over(arn)
    seen: dict[str, Any] = {}

    @task(secret_requests=[req, f_req])
    def t() -> int:
        ctx = current_context()
        secrets_factory.client("secretsmanager").delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        rec = current_record()
        assert rec is not None
        deadline = __import__("time").time() + 10
        while rec.reads[0].refresh_failures < 1 and __import__("time").time() < deadline:
            __import__("time").sleep(0.05)
        seen["failures"] = rec.reads[0].refresh_failures
        seen["any_kept"] = ctx.secrets.get(req.group, req.key) == first
        with open(ctx.secrets.get_secrets_file(f_req.group, f_req.key)) as fh:
            seen["file_kept"] = fh.read() == first
        return 1

    with caplog.at_level(logging.WARNING, logger="flytekitplugins_awssecrets"):
        assert t() == 1
    assert (
        seen == {"failures": seen["failures"], "any_kept": True, "file_kept": True} and seen["failures"] >= 1
    )
    warnings = [r for r in caplog.records if "refresh failed" in r.getMessage()]
    assert (
        warnings and arn in warnings[0].getMessage() and "keeps the value read at" in warnings[0].getMessage()
    )
    _assert_no_value(caplog.text, first)


def test_refresh_secrets_now_without_an_interval_adds_no_thread(
    secrets_factory: Any, rotating_secret: tuple[str, str, str]
) -> None:
    arn, first, new = rotating_secret
    req, f_req = _task_over(arn)
    seen: dict[str, Any] = {}

    @task(secret_requests=[req, f_req])
    def t() -> int:
        ctx = current_context()
        seen["threads"] = [
            th.name for th in threading.enumerate() if th.name.startswith("awssecrets-refresh")
        ]
        secrets_factory.client("secretsmanager").put_secret_value(SecretId=arn, SecretString=new)
        seen["before"] = ctx.secrets.get(req.group, req.key) == first
        seen["changed"] = refresh_secrets()
        seen["any_new"] = ctx.secrets.get(req.group, req.key) == new
        with open(ctx.secrets.get_secrets_file(f_req.group, f_req.key)) as fh:
            seen["file_new"] = fh.read() == new
        seen["mode"] = oct(os.stat(ctx.secrets.get_secrets_file(f_req.group, f_req.key)).st_mode & 0o777)
        return 1

    assert t() == 1
    assert seen == {
        "threads": [],
        "before": True,
        "changed": 2,
        "any_new": True,
        "file_new": True,
        "mode": "0o600",
    }
    with pytest.raises(RuntimeError, match="running task"):
        refresh_secrets()


def test_refreshed_value_is_redacted_and_guarded(
    secrets_factory: Any, rotating_secret: tuple[str, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The new value joins the task's sensitive set: logs redact it and an output holding it fails."""
    arn, _, new = rotating_secret
    req, _ = _task_over(arn)

    @task(secret_requests=[req])
    def t() -> str:
        secrets_factory.client("secretsmanager").put_secret_value(SecretId=arn, SecretString=new)
        refresh_secrets()
        logging.getLogger("user").warning("token is %s", current_context().secrets.get(req.group, req.key))
        return "x" + str(current_context().secrets.get(req.group, req.key))

    with caplog.at_level(logging.WARNING), pytest.raises(Exception) as info:
        t()
    assert "SecretLeakError" in type(info.value).__name__ or "appears in the task output" in str(info.value)
    _assert_no_value(caplog.text + str(info.value), new)


def test_interval_below_the_fleet_quota_is_refused_with_the_numbers(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arns = [secrets_factory.secret(f"{unique}/q{i}")[0] for i in range(20)]
    monkeypatch.setenv("FLYTE_AWS_SECRETS_REFRESH_INTERVAL_SECONDS", "5")
    ran: list[int] = []

    @task(secret_requests=[aws_secret(a) for a in arns])
    def t() -> int:
        ran.append(1)
        return 1

    with pytest.raises(SecretResolutionError) as info:
        t()
    assert not ran
    (err,) = info.value.errors
    assert isinstance(err, RefreshIntervalError) and err.minimum == 20
    assert (
        "1000 pods x 20 secret(s)" in str(err) and "= 20 s" in str(err) and "refresh_fleet_pods" in str(err)
    )
    assert not [th for th in threading.enumerate() if th.name.startswith("awssecrets-refresh")]


def test_overrides_per_reference_and_no_thread_left(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = secrets_factory.secret(f"{unique}/often")
    b, _ = secrets_factory.secret(f"{unique}/never")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_REFRESH_INTERVAL_SECONDS", "600")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_REFRESH_OVERRIDES", json.dumps({a: 2, b: 0}))
    seen: dict[str, Any] = {}

    @task(secret_requests=[aws_secret(a), aws_secret(b)])
    def t() -> int:
        rec = current_record()
        assert rec is not None
        seen["intervals"] = [r.refresh_interval for r in rec.reads]
        seen["threads"] = len([th for th in threading.enumerate() if th.name == "awssecrets-refresh"])
        return 1

    assert t() == 1
    assert seen == {"intervals": [2.0, None], "threads": 1}
    assert not [th for th in threading.enumerate() if th.name == "awssecrets-refresh"]
    rec = recent_records()[-1]
    assert rec.ended_at is not None and [r.reference for r in rec.reads] == [a, b]


def test_deck_only_for_tasks_with_aws_secrets_and_decks_on(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, value = secrets_factory.secret(f"{unique}/deck", {"username": "app", "password": new_value()})
    req = aws_secret(arn, json_key="password", mount_requirement=Secret.MountType.ENV_VAR, env_var="PW")
    names: dict[str, list[str]] = {}

    @task(secret_requests=[req], enable_deck=True, deck_fields=())
    def with_deck() -> int:
        names["with"] = [d.name for d in current_context().decks]
        return 1

    @task(secret_requests=[req], deck_fields=())
    def decks_off() -> int:
        names["off"] = [d.name for d in current_context().decks]
        return 1

    @task(enable_deck=True, deck_fields=())
    def no_secrets() -> int:
        names["none"] = [d.name for d in current_context().decks]
        return 1

    assert with_deck() == 1 and decks_off() == 1 and no_secrets() == 1
    assert "AWS secrets" in names["with"]
    assert "AWS secrets" not in names["off"] and "AWS secrets" not in names["none"]
    monkeypatch.setenv("FLYTE_AWS_SECRETS_DECK", "always")
    assert decks_off() == 1 and "AWS secrets" in names["off"]
    html = render(recent_records()[-1])
    assert arn in html and "password" in html and "env PW" in html and "GetSecretValue" in html
    _assert_no_value(html, value["password"])
