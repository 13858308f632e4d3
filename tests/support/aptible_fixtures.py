"""Fixtures every Aptible test shares: the bot's password and email, and a fake Aptible server seeded with
them. Loaded by ``tests/conftest.py`` as a pytest plugin; a test module that needs another seed defines its
own ``fake``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, fingerprint, new_value
from tests.support.fake_aptible import (
    ADMIN_ROLE,
    ORG,
    RO_ROLE,
    FakeAptible,
    standard_seed,
    start_fake_aptible,
)


class Password(str):
    """The bot password; its repr is a fingerprint so a failing test's report never shows it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<password {fingerprint(str(self))}>"


@pytest.fixture
def bot_password() -> str:
    return Password(new_value("aptible-pw"))


@pytest.fixture
def bot_email(unique: str) -> str:
    return f"bot-{unique}@example.com"


@pytest.fixture
def approver_email(unique: str) -> str:
    """The approver of the stories: an IAM user of that name in moto, and an Aptible user of the fake."""
    return f"approver-{unique}@example.com"


@pytest.fixture
def fake(tmp_path: Path, bot_password: str, bot_email: str, approver_email: str) -> Iterator[FakeAptible]:
    server = start_fake_aptible(
        standard_seed(bot_password, bot_email=bot_email, approver_email=approver_email),
        str(tmp_path / "seed.json"),
    )
    yield server
    server.stop()


# -- the operator's side: bot credentials in moto, a KMS signing key, an operator file --------------------


@pytest.fixture
def tls_fake(tmp_path: Path, bot_password: str, bot_email: str, approver_email: str) -> Iterator[FakeAptible]:
    """The fake Aptible on https (the operator file accepts https auth hosts only)."""
    d = tmp_path / "tls-fake"
    d.mkdir()
    server = start_fake_aptible(
        standard_seed(bot_password, bot_email=bot_email, approver_email=approver_email),
        str(d / "seed.json"),
        tls=True,
    )
    yield server
    server.stop()


@pytest.fixture
def creds_arn(secrets_factory: Any, bot_password: str, bot_email: str, unique: str) -> str:
    arn, _ = secrets_factory.secret(
        f"sym/{unique}/aptible-bot-credentials", {"username": bot_email, "password": str(bot_password)}
    )
    return str(arn)


@pytest.fixture
def kms_key(secrets_factory: Any) -> str:
    """An asymmetric signing key in moto: the strategy's approval key."""
    kms = secrets_factory.client("kms")
    return str(kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"])


DEFAULT_TARGETS = {"main-aptible-admin-role": ADMIN_ROLE.upper(), "main-aptible-ro-role": RO_ROLE}


def operator_yaml(
    fake: FakeAptible,
    creds_arn: str,
    kms_key: str | None,
    prefix: str,
    *,
    approval_required: bool = True,
    max_duration: str = "PT1H",
    targets: dict[str, str] | None = None,
    extra: str = "",
    local_runs: bool = False,
    approval_extra: str = "",
) -> str:
    """An operator file as an operator writes one, for the fake Aptible, the bot secret and the KMS key."""
    targets = targets or DEFAULT_TARGETS
    approval = (
        f'{{required: true, kms_key_arn: "{kms_key}", max_validity: PT1H, wait: PT10M{approval_extra}}}'
        if approval_required
        else "{required: false}"
    )
    target_lines = "".join(
        f"  - type: aptible_role\n    name: {name}\n    settings: {{role_id: {role}}}\n"
        for name, role in targets.items()
    )
    return f"""\
version: 1
state: {{ssm_prefix: {prefix}, region: us-east-1}}
integrations:
  - type: aptible
    name: main-aptible
    external_id: {ORG}
    auth_url: {fake.url}
{f"    ca_bundle: {fake.ca_file}" + chr(10) if fake.ca_file else ""}    settings:
      username_secret: "{creds_arn}:username"
      password_secret: "{creds_arn}:password"
targets:
{target_lines}strategies:
  - type: aptible
    name: main-aptible-strategy
    integration: main-aptible
    targets: [{", ".join(targets)}]
    max_duration: {max_duration}
    approval: {approval}
    local_runs: {str(local_runs).lower()}
{extra}"""


@pytest.fixture
def operator_file(tmp_path: Path, tls_fake: FakeAptible, creds_arn: str, kms_key: str, unique: str) -> Path:
    path = tmp_path / "aptible-operator.yaml"
    # The operator maps company handles to Aptible users: ada@corp.example is Ada.
    identity = 'identity: {mapping: {"ada@corp.example": "Ada.Lovelace@Example.com"}}\n'
    path.write_text(operator_yaml(tls_fake, creds_arn, kms_key, f"/flyte/aptible-{unique}", extra=identity))
    return path


def aws_user_env(secrets_factory: Any, aws_env: dict[str, str], name: str) -> dict[str, str]:
    """AWS credentials of a new IAM user in moto (``sts:GetCallerIdentity`` answers its ARN)."""
    iam = secrets_factory.client("iam")
    try:
        iam.create_user(UserName=name)
    except Exception:  # noqa: BLE001 - EntityAlreadyExists: moto is shared by the session
        pass
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        **aws_env,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def approve(
    env: dict[str, str], operator: Path, request_id: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``pyflyte-awssecrets aptible approve`` as the person whose AWS credentials are in ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "pyflyte-awssecrets"),
            "aptible",
            "approve",
            request_id,
            "--operator-file",
            str(operator),
            "--yes",
            *extra,
        ],
        env={**base, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
