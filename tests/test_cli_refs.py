"""``split`` and ``check``: the user points the command line at an ARN or at a workflow file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flytekitplugins_awssecrets.cli import main
from tests.conftest import ROOT, new_value

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


def test_check_covers_the_bot_credentials_of_aptible_tasks(
    tmp_path: Path, secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Aptible task names a strategy; its bot credentials are the operator file's, and check reads them."""
    from flytekitplugins_awssecrets.aptible.operator import clear_operator_cache
    from tests.support.aptible_fixtures import operator_yaml

    arn, _ = secrets_factory.secret(f"sym/{unique}/bot", {"username": f"bot-{unique}@example.com"})
    key = secrets_factory.client("kms").create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")

    class Host:
        url, ca_file = "https://auth.aptible.com", None

    op = tmp_path / "op.yaml"
    op.write_text(operator_yaml(Host(), arn, key["KeyMetadata"]["Arn"], "/flyte/x"))  # type: ignore[arg-type]
    flows = tmp_path / f"aptible_flows_{unique}.py"
    flows.write_text(
        "from flytekitplugins_awssecrets.aptible import AptibleAccessTask\n"
        "ok = AptibleAccessTask(name='ok', strategy='main-aptible-strategy')\n"
        "typo = AptibleAccessTask(name='typo', strategy='main-aptible-strategyy')\n"
    )
    monkeypatch.setenv("FLYTE_AWS_SECRETS_APTIBLE_OPERATOR_FILE", str(op))
    clear_operator_cache()
    r = _cli("check", "--format", "json", str(flows))
    assert r.exit_code == 1, r.output
    results = {(x["task"], x["request"].rsplit(":", 1)[-1]): x for x in json.loads(r.stdout)}
    assert results[("ok", "username")]["ok"] is True
    # The secret has no "password" key: check says so, as the connector would at its first request.
    assert results[("ok", "password")]["ok"] is False and "password" in results[("ok", "password")]["detail"]
    typo = next(x for (t, _), x in results.items() if t == "typo")
    assert (
        typo["ok"] is False and "UnknownStrategy" not in typo["detail"] and "not declared" in typo["detail"]
    )
    clear_operator_cache()


# -- output: references printed exactly, terminals, pipes, NO_COLOR, json -----------------------------------


def _run_in_pty(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run the CLI with its stdout on a pseudo-terminal (as a user's shell has it); returns what it printed."""
    import os
    import subprocess
    import sys
    import time

    master, slave = os.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "flytekitplugins_awssecrets.cli", *args],
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    p.wait(timeout=max(1.0, deadline - time.monotonic()))
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def _pty_env(columns: int, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    env.update(COLUMNS=str(columns), LINES="50", TERM="xterm-256color", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def test_check_table_prints_arns_exactly_and_fits_the_terminal(workflow_file: Path) -> None:
    import re

    ansi = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
    arns = _good_arns(workflow_file)
    for columns in (200, 90):
        raw = _run_in_pty(["check", str(workflow_file), "only_good"], _pty_env(columns))
        text = ansi.sub("", raw)
        assert "㊙" not in text
        for arn in arns:
            assert arn in text, (columns, text)  # never folded, never an emoji
        assert max(len(line) for line in text.splitlines()) <= columns, text
        assert "\x1b[" in raw and "32m" in raw  # a terminal gets colour ("ok" in green) ...
    raw = _run_in_pty(["check", str(workflow_file), "only_good"], _pty_env(200, NO_COLOR="1"))
    assert not re.search(r"\x1b\[[0-9;]*3[0-7]m", raw) and arns[0] in ansi.sub("", raw)  # ... unless NO_COLOR


def _good_arns(workflow_file: Path) -> list[str]:
    import re

    src = workflow_file.read_text()
    group = re.search(r"GOOD = Secret\(group=\'([^\']+)\', key=\'([^\']+)\'", src)
    assert group is not None
    return [group.group(1) + group.group(2), group.group(1) + group.group(2) + ":password"]


def test_check_without_a_terminal_prints_plain_rows(workflow_file: Path) -> None:
    r = _cli("check", str(workflow_file), "only_good")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["task", "request", "mount", "result", "detail"]
    assert all(arn in r.stdout for arn in _good_arns(workflow_file))
    assert not any(ch in r.stdout for ch in "┃│━─") and "\x1b[" not in r.stdout


def test_check_json_data_on_stdout_messages_on_stderr(workflow_file: Path) -> None:
    r = _cli("check", "--format", "json", str(workflow_file), "only_good")
    assert r.exit_code == 0
    assert [x["ok"] for x in json.loads(r.stdout)] == [True, True]
    assert "2 ok, 0 failed, 0 skipped" in r.stderr


def test_split_json_and_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    r = _cli("split", "--format", "json", SM_ARN)
    assert json.loads(r.stdout)["key"] == "prod/db-XyZ123"
    r = _cli("split", "TestingSecret")
    assert r.exit_code == 2 and "not an alias the settings define" in r.stderr
    monkeypatch.setenv("FLYTE_AWS_SECRETS_ALIASES", json.dumps({"TestingSecret": SM_ARN}))
    r = _cli("split", "TestingSecret:password")
    assert r.exit_code == 0 and "key:   TestingSecret:password" in r.stdout and SM_ARN in r.stderr


def test_check_verbose_says_where_things_come_from(
    workflow_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_env: dict[str, str]
) -> None:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("cache_ttl_seconds: 10\n")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CONFIG", str(cfg))
    monkeypatch.setenv("FLYTE_AWS_SECRETS_MAX_ATTEMPTS", "3")
    r = _cli("check", "-v", str(workflow_file), "only_good")
    assert r.exit_code == 0, r.output
    assert f"settings: file {cfg} (FLYTE_AWS_SECRETS_CONFIG)" in r.stderr
    assert (
        "env vars: FLYTE_AWS_SECRETS_CONFIG" not in r.stderr and "FLYTE_AWS_SECRETS_MAX_ATTEMPTS" in r.stderr
    )
    assert "credentials: env vars AWS_ACCESS_KEY_ID" in r.stderr
    url = aws_env["AWS_ENDPOINT_URL"]
    assert f"endpoint secretsmanager us-east-1: {url} (from env var AWS_ENDPOINT_URL)" in r.stderr


def test_check_invalid_settings_reported_once_exit_2(
    workflow_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS", "soon")
    r = _cli("check", str(workflow_file), "wf")
    assert r.exit_code == 2
    assert r.stderr.count("FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS") == 1 and "Value error" not in r.stderr


def test_check_unreachable_endpoint_is_named_and_tried_once(
    workflow_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.blackhole import Blackhole

    hole = Blackhole().start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", hole.url)
        monkeypatch.setenv("FLYTE_AWS_SECRETS_READ_TIMEOUT", "0.3")
        r = _cli("check", "--format", "json", str(workflow_file), "wf")
    finally:
        hole.stop()
    assert r.exit_code == 3  # an AWS or network error, as --help says
    failed = [x for x in json.loads(r.stdout) if x["ok"] is False]
    assert len(failed) == 5 and all(x["transient"] for x in failed)
    for x in failed:
        assert f"cannot reach endpoint {hole.url} (from env var AWS_ENDPOINT_URL)" in x["detail"], x["detail"]
        assert "after 2 attempts" in x["detail"]
    # The first (batched) round tries each of its calls connect_attempts (2) times; the per-request pass
    # reuses that verdict instead of trying every request again.
    assert hole.connections <= 2 * 4, hole.connections


MOUNTS = """
from flytekit import Secret, task, workflow
from flytekitplugins_awssecrets import aws_secret


@task(
    secret_requests=[
        aws_secret({a!r}, mount_requirement=Secret.MountType.ENV_VAR, env_var="TOKEN"),
        aws_secret({b!r}, mount_requirement=Secret.MountType.ENV_VAR, env_var="TOKEN"),
    ]
)
def shared_env() -> int:
    return 1


@task(secret_requests=[aws_secret({a!r}, mount_requirement=Secret.MountType.FILE)])
def as_file() -> int:
    return 1


@workflow
def env_wf() -> int:
    return shared_env()


@workflow
def file_wf() -> int:
    return as_file()
"""


@pytest.fixture
def mounts_file(tmp_path: Path, unique: str, secrets_factory: Any) -> tuple[Path, str, str]:
    a, _ = secrets_factory.secret(f"mnt/a-{unique}")
    b, _ = secrets_factory.secret(f"mnt/b-{unique}")
    f = tmp_path / f"mounts_{unique}.py"
    f.write_text(textwrap.dedent(MOUNTS).format(a=a, b=b))
    return f, a, b


def test_check_refuses_two_requests_on_one_env_var_like_pyflyte_run(
    mounts_file: tuple[Path, str, str],
) -> None:
    f, a, b = mounts_file
    r = _cli("check", "--format", "json", str(f), "env_wf")
    assert r.exit_code == 1, r.output
    by_request = {x["request"]: x for x in json.loads(r.stdout)}
    assert by_request[a]["ok"] is True
    assert by_request[b]["ok"] is False and not by_request[b]["transient"]
    assert f"collides with {a} at env_var TOKEN" in by_request[b]["detail"]


def test_check_refuses_file_secrets_on_disk_like_pyflyte_run(
    mounts_file: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flytekitplugins_awssecrets.mount import MEMORY_FILESYSTEMS, filesystem_type

    f, a, _ = mounts_file
    disk = tmp_path / "on-disk"
    disk.mkdir()
    if filesystem_type(disk) in MEMORY_FILESYSTEMS:
        pytest.skip("the temporary directory is a memory filesystem here")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_MOUNT_DIR", str(disk))
    r = _cli("check", "--format", "json", str(f), "file_wf")
    assert r.exit_code == 1, r.output
    (x,) = json.loads(r.stdout)
    assert x["ok"] is False and "not tmpfs/ramfs" in x["detail"] and str(disk) in x["detail"]
    monkeypatch.setenv("FLYTE_AWS_SECRETS_ALLOW_DISK_MOUNT", "true")
    assert _cli("check", str(f), "file_wf").exit_code == 0


def test_check_fails_a_region_typo_without_contacting_aws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.blackhole import Blackhole
    from tests.support.workflows import one_secret_workflow

    typo = SM_ARN.replace("us-east-1", "us-esat-1")
    # aws_secret() parses where it is declared: the module does not import (exit 2, the typed message).
    declared = one_secret_workflow(tmp_path / "typo_declared.py", typo)
    # A plain flytekit Secret is parsed by check, as by the task hook.
    plain = tmp_path / "typo_plain.py"
    group, key = typo.split(":secret:")
    plain.write_text(
        "from flytekit import Secret, task\n\n"
        f"@task(secret_requests=[Secret(group={group + ':secret:'!r}, key={key!r})])\n"
        "def t() -> int:\n    return 1\n"
    )
    hole = Blackhole().start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", hole.url)
        r_declared = _cli("check", str(declared), "wf")
        r_plain = _cli("check", "--format", "json", str(plain))
    finally:
        hole.stop()
    assert r_declared.exit_code == 2, r_declared.output
    assert "did you mean 'us-east-1'" in " ".join(r_declared.stderr.split())
    assert r_plain.exit_code == 1, r_plain.output
    (x,) = json.loads(r_plain.stdout)
    assert (
        "region 'us-esat-1' is not an AWS region" in x["detail"] and "did you mean 'us-east-1'" in x["detail"]
    )
    assert hole.connections == 0  # nothing to wait for: the reference itself is refused


def test_check_help_lists_the_exit_codes_it_uses() -> None:
    r = _cli("check", "--help")
    text = " ".join(r.stdout.split())
    for code in ("0 all resolve", "1 any request fails", "2 bad usage or invalid settings", "3 some request"):
        assert code in text
