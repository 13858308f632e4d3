"""The Aptible access flow through ``pyflyte run``, as a person runs it on a laptop.

AWS is the moto server (the bot's JSON credentials secret lives there), Aptible is the fake server; the
connector runs in the ``pyflyte run`` process through flytekit's AsyncConnectorExecutorMixin. The approval
gate reads the answer from stdin. Memberships are read from the fake server while the run is in progress.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.fake_aptible import (
    ADA,
    ADMIN_ROLE,
    ORG,
    RO_ROLE,
    FakeAptible,
)

BIN = Path(sys.executable).parent
ADA_EMAIL = "ada.lovelace@example.com"


@pytest.fixture
def run_env(
    aws_env: dict[str, str],
    secrets_factory: object,
    fake: FakeAptible,
    bot_password: str,
    bot_email: str,
    unique: str,
) -> dict[str, str]:
    arn, _ = secrets_factory.secret(  # type: ignore[attr-defined]
        f"sym/{unique}/aptible-bot-credentials", {"username": bot_email, "password": str(bot_password)}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    env.update(aws_env)
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "400",
            "APTIBLE_BOT_CREDENTIALS_ARN": arn,
            "APTIBLE_ORGANIZATION_ID": ORG,
            "APTIBLE_ADMIN_ROLE_ID": ADMIN_ROLE,
            "APTIBLE_RO_ROLE_ID": RO_ROLE,
            "APTIBLE_AUTH_URL": fake.url,
        }
    )
    return env


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

    def wait(self, timeout: float = 60) -> tuple[str, str]:
        self.proc.wait(timeout=timeout)
        return self.out_path.read_text(), self.err_path.read_text()


def watch(run: Run, fake: FakeAptible, answer: str, timeout: float = 180) -> tuple[str, str, bool]:
    """Answer the approval gate, then sample the fake's memberships until the run ends."""
    run.answer(answer)
    seen = False
    deadline = time.monotonic() + timeout
    while run.proc.poll() is None and time.monotonic() < deadline:
        seen = seen or fake.holds(ADMIN_ROLE, ADA)
        time.sleep(0.1)
    out, err = run.wait(timeout=30)
    return out, err, seen


def test_approved_request_is_granted_then_removed_when_the_duration_passes(
    run_env: dict[str, str], fake: FakeAptible, bot_password: str, tmp_path: Path
) -> None:
    run = Run(run_env, tmp_path, "--email", ADA_EMAIL, "--duration", "3s", "--reason", "INC-7")
    out, err, seen = watch(run, fake, "y\n")
    assert run.proc.returncode == 0, err[-3000:]
    assert seen, "the membership was never observed while the task ran"
    assert not fake.holds(ADMIN_ROLE, ADA)
    events = [
        line.split('"event": "')[1].split('"')[0] for line in err.splitlines() if line.startswith("AUDIT ")
    ]
    assert events == ["requested", "escalated", "expired", "de-escalated"]
    assert "pre_existing" in out and "revoked_at" in out  # the AccessGrant output is printed
    assert bot_password not in out and bot_password not in err


def test_a_refused_approval_grants_nothing(
    run_env: dict[str, str], fake: FakeAptible, tmp_path: Path
) -> None:
    before = fake.memberships()
    run = Run(run_env, tmp_path, "--email", ADA_EMAIL, "--duration", "3s", "--reason", "INC-8")
    out, err, seen = watch(run, fake, "n\n")
    assert run.proc.returncode != 0
    assert "did not approve" in (out + err)
    assert not seen and fake.memberships() == before
    assert fake.requests() == []  # the connector never even logged in


def test_a_too_long_request_fails_before_anything_changes(
    run_env: dict[str, str], fake: FakeAptible, bot_password: str, tmp_path: Path
) -> None:
    before = fake.memberships()
    run = Run(run_env, tmp_path, "--email", ADA_EMAIL, "--duration", "2 days", "--reason", "INC-9")
    out, err, _ = watch(run, fake, "y\n")
    assert run.proc.returncode != 0
    assert "DurationTooLongError" in err or "over the maximum" in err, err[-3000:]
    assert fake.memberships() == before
    assert bot_password not in out and bot_password not in err


def test_interrupting_the_run_removes_the_grant(
    run_env: dict[str, str], fake: FakeAptible, tmp_path: Path
) -> None:
    run = Run(run_env, tmp_path, "--email", ADA_EMAIL, "--duration", "10m", "--reason", "INC-10")
    run.answer("y\n")
    deadline = time.monotonic() + 180
    while not fake.holds(ADMIN_ROLE, ADA) and time.monotonic() < deadline and run.proc.poll() is None:
        time.sleep(0.1)
    assert fake.holds(ADMIN_ROLE, ADA), run.err_path.read_text()[-3000:]
    time.sleep(1.5)  # let the connector enter its polling loop, where flytekit's signal handler is installed
    run.proc.send_signal(signal.SIGINT)
    out, err = run.wait(timeout=60)
    assert not fake.holds(ADMIN_ROLE, ADA), err[-3000:]
    assert '"event": "aborted"' in err
