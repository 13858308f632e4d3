"""``split`` and ``check``: the user points the command line at an ARN or at a workflow file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flytekitplugins_awssecrets.cli import main
from tests.conftest import new_value

SM_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-XyZ123"


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_split_prints_group_key_and_a_secret_line() -> None:
    r = _cli("split", SM_ARN + ":password")
    assert r.exit_code == 0
    assert r.stdout.splitlines() == [
        "group: arn:aws:secretsmanager:us-east-1:123456789012:secret:",
        "key:   prod/db-XyZ123:password",
        "Secret(group='arn:aws:secretsmanager:us-east-1:123456789012:secret:', key='prod/db-XyZ123:password')",
    ]


def test_split_ssm_parameter() -> None:
    r = _cli("split", "arn:aws:ssm:eu-west-1:123456789012:parameter/app/db/password")
    assert r.exit_code == 0
    assert "key:   app/db/password" in r.stdout


@pytest.mark.parametrize(
    ("arn", "message"),
    [
        ("not-an-arn", "not an ARN"),
        ("arn:aws:s3:us-east-1:123456789012:bucket/x", "service 's3' is neither secretsmanager nor ssm"),
        ("arn:aws:secretsmanager:us-east-1:1234:secret:x", "account '1234' is not a 12-digit account id"),
    ],
)
def test_split_bad_arn_exits_2_with_the_typed_message(arn: str, message: str) -> None:
    r = _cli("split", arn)
    assert r.exit_code == 2 and message in r.stderr and r.stdout == ""


WORKFLOW = """
from flytekit import Secret, task, workflow, conditional, map_task, LaunchPlan

GOOD = Secret(group={good_group!r}, key={good_key!r})
JSON_OK = Secret(group={good_group!r}, key={json_ok!r})
JSON_MISSING = Secret(group={good_group!r}, key={json_missing!r})
MISSING = Secret(group={good_group!r}, key="prod/missing-{unique}")
PARAM = Secret(group={param_group!r}, key={param_key!r})
OTHER = Secret(group="plain-k8s-group", key="k")


@task(secret_requests=[GOOD, JSON_OK])
def uses_good() -> int:
    return 1


@task(secret_requests=[JSON_MISSING])
def uses_missing_key(x: int) -> int:
    return x


@task(secret_requests=[MISSING, OTHER])
def in_branch(x: int) -> int:
    return x


@task(secret_requests=[PARAM])
def mapped(x: int) -> int:
    return x


@task
def no_secrets(x: int) -> int:
    return x


@workflow
def sub(x: int) -> int:
    return uses_missing_key(x=x)


@workflow
def wf() -> int:
    a = uses_good()
    b = sub(x=a)
    c = conditional("c").if_(b > 0).then(in_branch(x=b)).else_().then(no_secrets(x=b))
    map_task(mapped)(x=[1, 2])
    return c


@workflow
def only_good() -> int:
    return uses_good()


lp = LaunchPlan.get_or_create(only_good, name="only_good_lp_{unique}")
"""


@pytest.fixture
def workflow_file(tmp_path: Path, unique: str, secrets_factory: Any) -> Path:
    arn, _ = secrets_factory.secret(
        f"prod/db-{unique}", {"user": "app", "password": new_value()}, tags={"team": "a"}
    )
    param_arn = secrets_factory.parameter(f"/app{unique}/token")
    group, key = arn.split(":secret:")[0] + ":secret:", arn.split(":secret:")[1]
    pgroup, pkey = param_arn.split(":parameter/")[0] + ":parameter/", param_arn.split(":parameter/")[1]
    pkg = tmp_path / f"proj{unique}"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("X = 1\n")
    f = pkg / "flows.py"
    f.write_text(
        "from . import helpers  # a relative import: the package must be importable as pyflyte run makes it\n"
        + textwrap.dedent(WORKFLOW).format(
            good_group=group,
            good_key=key,
            json_ok=key + ":password",
            json_missing=key + ":nope",
            param_group=pgroup,
            param_key=pkey,
            unique=unique,
        )
    )
    return f


def test_check_workflow_reports_each_request_and_exits_1(workflow_file: Path, unique: str) -> None:
    r = _cli("check", str(workflow_file), "wf")
    assert r.exit_code == 1, r.output
    # GOOD, JSON_OK, PARAM (in a map task) | JSON_MISSING (sub-workflow), MISSING (branch) | OTHER
    assert "3 ok, 2 failed, 1 skipped" in r.stdout and "FAILED" in r.stdout
    r = _cli("check", "--format", "json", str(workflow_file), "wf")
    assert r.exit_code == 1
    results = json.loads(r.stdout)
    by_task: dict[str, list[bool | None]] = {}
    for x in results:
        by_task.setdefault(x["task"].rsplit(".", 1)[-1], []).append(x["ok"])
    assert by_task == {
        "uses_good": [True, True],
        "uses_missing_key": [False],  # in a sub-workflow
        "in_branch": [False, None],  # in a conditional branch; the k8s secret is flytekit's
        "mapped": [True],  # in a map task
    }
    results = {(x["task"].rsplit(".", 1)[-1], x["request"].rsplit(":", 1)[-1]): x for x in results}
    detail = results[("uses_missing_key", "nope")]["detail"]
    assert "JSON key 'nope' not found" in detail and "an object with 2 keys" in detail
    assert "'password'" not in detail and "'user'" not in detail  # key names can be secret too
    assert "not found" in results[("in_branch", f"prod/missing-{unique}")]["detail"]


def test_check_only_good_workflow_passes(workflow_file: Path) -> None:
    r = _cli("check", str(workflow_file), "only_good")
    assert r.exit_code == 0, r.output
    assert "2 ok, 0 failed, 0 skipped" in r.stdout
    r = _cli("check", str(workflow_file), "lp")  # a launch plan works too
    assert r.exit_code == 0


def test_check_whole_module_without_workflow(workflow_file: Path) -> None:
    r = _cli("check", str(workflow_file))
    assert r.exit_code == 1
    assert "3 ok, 2 failed, 1 skipped" in r.stdout


def test_check_reports_missing_required_tag(workflow_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_AWS_SECRETS_REQUIRED_TAGS", json.dumps({"team": "b"}))
    r = _cli("check", str(workflow_file), "only_good")
    assert r.exit_code == 1
    r = _cli("check", "--format", "json", str(workflow_file), "only_good")
    assert all("required tag 'team' is 'a', expected 'b'" in x["detail"] for x in json.loads(r.stdout))


def test_check_never_prints_values(workflow_file: Path) -> None:
    from tests.conftest import CREATED_VALUES

    r = _cli("check", str(workflow_file))
    assert not [v for v in CREATED_VALUES if v in r.output]


def test_check_bad_usage_exits_2(workflow_file: Path, tmp_path: Path) -> None:
    r = _cli("check", str(workflow_file), "no_such_wf")
    assert r.exit_code == 2 and "no workflow, launch plan or task named 'no_such_wf'" in r.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("import does_not_exist_anywhere\n")
    r = _cli("check", str(broken))
    assert r.exit_code == 2 and "ModuleNotFoundError" in r.stderr
