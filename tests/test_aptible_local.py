"""The Aptible access flow through ``pyflyte run``, as a person runs it on a laptop: the same operator file
and the same checks as the connector. AWS is the moto server (bot secret, request records, KMS), Aptible the
fake on https; the connector runs in the ``pyflyte run`` process (flytekit's AsyncConnectorExecutorMixin).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.support.aptible_fixtures import approve, aws_user_env, operator_yaml
from tests.support.fake_aptible import ADA, ADMIN_ROLE, FakeAptible

BIN = Path(sys.executable).parent
ADA_EMAIL = "ada.lovelace@example.com"


def run_env(aws_env: dict[str, str], operator: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    env.update(aws_env)
    env.update(
        {"PYTHONPATH": str(ROOT), "COLUMNS": "400", "FLYTE_AWS_SECRETS_APTIBLE_OPERATOR_FILE": str(operator)}
    )
    return env


@pytest.fixture
def no_approval_file(tmp_path: Path, tls_fake: FakeAptible, creds_arn: str, unique: str) -> Path:
    """An operator's own file: local runs allowed (whoever runs it may read the bot's credentials)."""
    path = tmp_path / "no-approval.yaml"
    path.write_text(
        operator_yaml(
            tls_fake, creds_arn, None, f"/flyte/local-{unique}", approval_required=False, local_runs=True
        )
    )
    return path


@pytest.fixture
def local_file(tmp_path: Path, tls_fake: FakeAptible, creds_arn: str, kms_key: str, unique: str) -> Path:
    """The approval strategy, with local runs allowed."""
    path = tmp_path / "local-approval.yaml"
    path.write_text(operator_yaml(tls_fake, creds_arn, kms_key, f"/flyte/local-{unique}", local_runs=True))
    return path


class Run:
    """A ``pyflyte run`` of the example in the background; output goes to files (pipes could fill up)."""

    def __init__(self, env: dict[str, str], tmp: Path, *args: str) -> None:
        self.out_path, self.err_path = tmp / "stdout.txt", tmp / "stderr.txt"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [str(BIN / "pyflyte"), "run", "examples/aptible_access.py", "aptible_access_flow", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                text=True,
            )

    def answer(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.close()

    def err(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float = 120) -> tuple[str, str]:
        self.proc.wait(timeout=timeout)
        return self.out_path.read_text(), self.err_path.read_text()


def until(cond: Any, run: Run, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if run.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("condition not met: " + run.err()[-3000:])
        time.sleep(0.2)


def test_an_approved_local_request_is_granted_then_removed(
    aws_env: dict[str, str],
    local_file: Path,
    tls_fake: FakeAptible,
    secrets_factory: Any,
    bot_password: str,
    tmp_path: Path,
    approver_email: str,
) -> None:
    run = Run(
        run_env(aws_env, local_file),
        tmp_path,
        "--email",
        ADA_EMAIL,
        "--duration",
        "3s",
        "--reason",
        "INC-7",
    )
    run.answer("")
    until(lambda: "pyflyte-awssecrets aptible approve r" in run.err(), run)
    # The printed command is complete: the approver runs it as it is.
    command = run.err().split("pyflyte-awssecrets aptible approve ")[1].splitlines()[0].split()
    rid = command[0]
    assert command[1:] == ["--operator-file", str(local_file)], command
    assert not tls_fake.holds(ADMIN_ROLE, ADA)
    done = approve(aws_user_env(secrets_factory, aws_env, approver_email), local_file, rid)
    assert done.returncode == 0, done.stderr[-2000:]
    until(lambda: tls_fake.holds(ADMIN_ROLE, ADA), run)
    out, err = run.wait()
    assert run.proc.returncode == 0, err[-3000:]
    assert not tls_fake.holds(ADMIN_ROLE, ADA)
    events = [
        line.split('"event": "')[1].split('"')[0] for line in err.splitlines() if line.startswith("AUDIT ")
    ]
    assert events == ["requested", "approval-requested", "escalated", "expired", "de-escalated"]
    assert "revoked_at" in out
    assert bot_password not in out and bot_password not in err


@pytest.mark.parametrize("answer", ["n\n", "\n", ""], ids=["no", "enter", "end-of-input"])
def test_the_local_prompt_defaults_to_no(
    aws_env: dict[str, str], no_approval_file: Path, tls_fake: FakeAptible, tmp_path: Path, answer: str
) -> None:
    before = tls_fake.memberships()
    run = Run(run_env(aws_env, no_approval_file), tmp_path, "--email", ADA_EMAIL, "--duration", "3s")
    run.answer(answer)
    out, err = run.wait()
    assert run.proc.returncode != 0
    assert "[y/N]" in err and "LocalApprovalDeniedError" in (out + err)
    assert tls_fake.memberships() == before


def test_a_too_long_request_fails_before_any_approval_is_asked(
    aws_env: dict[str, str], no_approval_file: Path, tls_fake: FakeAptible, bot_password: str, tmp_path: Path
) -> None:
    before = tls_fake.memberships()
    run = Run(run_env(aws_env, no_approval_file), tmp_path, "--email", ADA_EMAIL, "--duration", "2 days")
    run.answer("y\n")
    out, err = run.wait()
    assert run.proc.returncode != 0
    assert "DurationTooLongError" in err and "[y/N]" not in err, err[-3000:]
    assert tls_fake.memberships() == before
    assert bot_password not in out and bot_password not in err


def test_interrupting_the_run_removes_the_grant(
    aws_env: dict[str, str], no_approval_file: Path, tls_fake: FakeAptible, tmp_path: Path
) -> None:
    run = Run(run_env(aws_env, no_approval_file), tmp_path, "--email", ADA_EMAIL, "--duration", "10m")
    run.answer("y\n")
    until(lambda: tls_fake.holds(ADMIN_ROLE, ADA), run)
    time.sleep(1.5)  # let the connector enter its polling loop, where flytekit's signal handler is installed
    run.proc.send_signal(signal.SIGINT)
    out, err = run.wait(timeout=60)
    assert not tls_fake.holds(ADMIN_ROLE, ADA), err[-3000:]
    assert '"event": "aborted"' in err


def test_a_missing_bot_secret_is_one_typed_paragraph(
    aws_env: dict[str, str], tmp_path: Path, tls_fake: FakeAptible, unique: str
) -> None:
    path = tmp_path / "missing.yaml"
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sym/absent-AbCdEf"
    path.write_text(
        operator_yaml(tls_fake, missing, None, f"/flyte/m-{unique}", approval_required=False, local_runs=True)
    )
    run = Run(run_env(aws_env, path), tmp_path, "--email", ADA_EMAIL, "--duration", "5m")
    run.answer("")
    out, err = run.wait()
    assert run.proc.returncode != 0
    text = out + err
    assert "BotCredentialsError" in text and "secretsmanager:GetSecretValue" in text, text[-3000:]
    assert "sym/absent-AbCdEf" in text and "not found" in text
    assert "asyncio" not in text and "run_until_complete" not in text and "base_connector" not in text


def test_a_local_run_needs_the_operator_file_to_allow_it(
    aws_env: dict[str, str], operator_file: Path, tls_fake: FakeAptible, tmp_path: Path
) -> None:
    """The cluster's operator file (local_runs not set): a requester's pyflyte run is refused before the
    bot's credentials are read, so a requester never holds them."""
    run = Run(run_env(aws_env, operator_file), tmp_path, "--email", ADA_EMAIL, "--duration", "5m")
    run.answer("y\n")
    out, err = run.wait()
    assert run.proc.returncode != 0
    assert "LocalRunNotAllowedError" in err and "strategies[0].local_runs" in err, err[-3000:]
    assert [r for r in tls_fake.requests() if r["path"] == "/tokens"] == []  # the bot never logged in
    assert not tls_fake.holds(ADMIN_ROLE, ADA)
