"""The leak guard catches secrets, not descriptions: an RDS-shaped secret's host, engine and database name may
appear in a task's output; its password may not (issue 21, item 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from flytekit import current_context, task

from flytekitplugins_awssecrets import aws_secret
from flytekitplugins_awssecrets.errors import SecretLeakError
from flytekitplugins_awssecrets.leaves import LeafPolicy, looks_generated
from flytekitplugins_awssecrets.sensitive import SensitiveSet
from tests.conftest import ROOT, new_value, remember

BIN = Path(sys.executable).parent

DESCRIPTION = "loaded via postgres on db.internal/analytics"


def _rds(password: str) -> dict[str, Any]:
    """The shape AWS gives an RDS (or Redshift) secret."""
    return {
        "engine": "postgres",
        "host": "db.internal",
        "port": 5432,
        "dbname": "analytics",
        "username": "app_user",
        "password": password,
        "dbInstanceIdentifier": "analytics-db-1",
    }


def _rds_secret(secrets_factory: Any, name: str) -> tuple[str, str]:
    """Create an RDS-shaped secret; only its password is recorded as a value for the suite's leak check,
    because the other fields are what this test expects to see in outputs."""
    password = new_value()
    arn = secrets_factory.client("secretsmanager").create_secret(
        Name=name, SecretString=json.dumps(_rds(password))
    )["ARN"]
    remember(password)
    return str(arn), password


# -- the policy ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "leaf", "sensitive"),
    [
        (("engine",), "postgres", False),
        (("host",), "db.internal", False),
        (("dbname",), "analytics", False),
        (("username",), "app_user", False),
        (("dbInstanceIdentifier",), "analytics-db-1", False),
        (("password",), "hunter22", True),
        (("apiKey",), "plainword", True),
        (("client_secret",), "x" * 8, True),
        (("PRIVATE_KEY_ID",), "abc", True),
        (("auth", "user"), "admin", True),  # under a credential-like key, a descriptive key does not help
        (("db_url",), "postgres://app:pw@db/x", True),
        (("note",), "kq8Zr2-Pw0vLxT", True),  # unknown key, generated-looking value
        (("note",), "nightly backup", False),  # unknown key, prose
        ((), "kq8Zr2-Pw0vLxT", True),  # a list leaf without a key
    ],
)
def test_leaf_policy_decides_per_leaf(path: tuple[str, ...], leaf: str, sensitive: bool) -> None:
    assert LeafPolicy().is_sensitive(path, leaf) is sensitive


def test_leaf_policy_settings_mark_and_widen() -> None:
    marked = LeafPolicy(sensitive_keys=frozenset({"host"}), descriptive_keys=frozenset({"warehouse"}))
    assert marked.is_sensitive(("host",), "db.internal")
    assert not marked.is_sensitive(("warehouse",), "Wh-9fK2xQ7pL")
    credentials_win = LeafPolicy(descriptive_keys=frozenset({"apikey"}))
    assert credentials_win.is_sensitive(("apiKey",), "x")
    assert LeafPolicy("all").is_sensitive(("engine",), "postgres")
    assert looks_generated(new_value()) and not looks_generated("analytics")


def test_sensitive_set_keeps_credentials_and_whole_json_key_values() -> None:
    password = new_value()
    value = json.dumps(_rds(password))
    sens = SensitiveSet.build([("ref", value)], LeafPolicy())
    assert sens.find(password.encode()) == ["ref"]
    assert sens.find(value.encode()) == ["ref"]  # the whole value always
    assert sens.find(DESCRIPTION.encode()) == []
    # Without a policy (and for a JSON-key request's chosen value) every leaf is guarded.
    assert SensitiveSet.build([("ref", value)]).find(b"db.internal") == ["ref"]
    assert SensitiveSet.build([("ref", value)], LeafPolicy(), whole={"ref"}).find(b"db.internal") == ["ref"]


# -- as the user meets it --------------------------------------------------------------------------------------

WORKFLOW = """
from flytekit import current_context, task, workflow
from flytekitplugins_awssecrets import aws_secret
import json

DB = aws_secret({arn!r})


@task(secret_requests=[DB])
def describe() -> str:
    s = json.loads(current_context().secrets.get(DB.group, DB.key))
    return f"loaded via {{s['engine']}} on {{s['host']}}/{{s['dbname']}}"


@task(secret_requests=[DB])
def leak() -> str:
    return "the password is " + json.loads(current_context().secrets.get(DB.group, DB.key))["password"]


@workflow
def describe_wf() -> str:
    return describe()


@workflow
def leak_wf() -> str:
    return leak()
"""


def _pyflyte_run(wf: Path, name: str, aws_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_"))}
    env.update(aws_env, PYTHONPATH=str(ROOT), COLUMNS="300")
    return subprocess.run(
        [str(BIN / "pyflyte"), "run", str(wf), name],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=wf.parent,
    )


def test_pyflyte_run_description_passes_password_fails(
    tmp_path: Path, aws_env: dict[str, str], secrets_factory: Any, unique: str
) -> None:
    arn, password = _rds_secret(secrets_factory, f"rds/{unique}")
    wf = tmp_path / "rds_flow.py"
    wf.write_text(textwrap.dedent(WORKFLOW).format(arn=arn))

    ok = _pyflyte_run(wf, "describe_wf", aws_env)
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-3000:].replace(password, "<password>")
    assert DESCRIPTION in " ".join((ok.stdout + ok.stderr).split())

    bad = _pyflyte_run(wf, "leak_wf", aws_env)
    text = " ".join((bad.stdout + bad.stderr).split())
    assert bad.returncode != 0
    assert password not in bad.stdout + bad.stderr
    assert "SecretLeakError" in text and arn in text and "task output 'o0'" in text, text[-3000:]
    assert "JSON key" in text and "FLYTE_AWS_SECRETS_DESCRIPTIVE_JSON_KEYS" in text


def test_json_key_request_keeps_the_chosen_value_sensitive(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, _ = _rds_secret(secrets_factory, f"rds/{unique}")
    host = aws_secret(arn + ":host")

    @task(secret_requests=[host])
    def where() -> str:
        return "host " + current_context().secrets.get(host.group, host.key)

    with pytest.raises(SecretLeakError) as e:
        where()
    assert e.value.reference == arn + ":host"


@pytest.mark.parametrize(
    ("var", "value"),
    [("FLYTE_AWS_SECRETS_LEAK_GUARD_JSON_LEAVES", "all"), ("FLYTE_AWS_SECRETS_SENSITIVE_JSON_KEYS", "host")],
)
def test_settings_make_descriptive_leaves_sensitive(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    arn, _ = _rds_secret(secrets_factory, f"rds/{unique}")
    db = aws_secret(arn)

    @task(secret_requests=[db])
    def describe() -> str:
        s = json.loads(current_context().secrets.get(db.group, db.key))
        return f"loaded via {s['engine']} on {s['host']}/{s['dbname']}"

    assert describe() == DESCRIPTION
    monkeypatch.setenv(var, value)
    with pytest.raises(SecretLeakError):
        describe()


def test_descriptive_keys_setting_lets_a_custom_field_through(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = new_value()
    arn = secrets_factory.client("secretsmanager").create_secret(
        Name=f"wh/{unique}", SecretString=json.dumps({"warehouse": "Wh-9fK2xQ7pL", "token": token})
    )["ARN"]
    remember(token)
    wh = aws_secret(arn)

    @task(secret_requests=[wh])
    def which() -> str:
        return "warehouse " + json.loads(current_context().secrets.get(wh.group, wh.key))["warehouse"]

    with pytest.raises(SecretLeakError):
        which()  # generated-looking, under a key the policy does not know
    monkeypatch.setenv("FLYTE_AWS_SECRETS_DESCRIPTIVE_JSON_KEYS", "warehouse")
    assert which() == "warehouse Wh-9fK2xQ7pL"
