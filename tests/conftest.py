"""Test session: one moto server process on loopback, and a registry of every secret value the suite creates.

Values are random and recorded so that tests (and the whole-suite leak check) can assert that none of them
ever shows up in output, logs or errors. Tests print fingerprints (length, sha256 prefix), never values.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as _random
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.leakcheck import CREATED_VALUES  # noqa: E402  (see tests/support/leakcheck.py)
from tests.support.moto_server import MotoServer, aws_test_env, start_moto_server  # noqa: E402

# Shared fixtures of the Aptible tests (bot credentials, a seeded fake Aptible server).
pytest_plugins = ["tests.support.aptible_fixtures"]


def new_value(prefix: str = "sv") -> str:
    """A random secret value, recorded for the leak check."""
    v = f"{prefix}-{_random.token_urlsafe(18)}"
    CREATED_VALUES.add(v)
    return v


def remember(value: str | bytes) -> None:
    text = value if isinstance(value, str) else value.decode("latin-1")
    if len(text) >= 6:  # "app", "u": ordinary words in JSON secrets, not values worth guarding
        CREATED_VALUES.add(text)


def fingerprint(value: str | bytes) -> str:
    b = value.encode() if isinstance(value, str) else value
    return f"len={len(b)} sha256={hashlib.sha256(b).hexdigest()[:12]}"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = start_moto_server(str(log))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def aws_env(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return aws_test_env(moto_server.url, str(tmp_path_factory.mktemp("awshome")))


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Every test sees boto3 pointed at moto (when it asks for moto) and never at real AWS."""
    for k in list(os.environ):
        if k.startswith(("FLYTE_AWS_SECRETS_", "AWS_")):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if "aws_env" in request.fixturenames:
        for k, v in request.getfixturevalue("aws_env").items():
            monkeypatch.setenv(k, v)
    from flytekitplugins_awssecrets.resolver import reset_process_state

    reset_process_state()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


class SecretFactory:
    """Creates secrets and parameters in moto with random, recorded values."""

    def __init__(self, env: dict[str, str]) -> None:
        import boto3

        self._env = env
        self._boto3 = boto3

    def client(self, service: str, region: str = "us-east-1") -> Any:
        return self._boto3.client(
            service,
            region_name=region,
            endpoint_url=self._env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def secret(
        self,
        name: str,
        value: str | bytes | dict[str, Any] | None = None,
        region: str = "us-east-1",
        tags: dict[str, str] | None = None,
    ) -> tuple[str, Any]:
        """Create a secret; returns (full ARN, value as stored)."""
        if value is None:
            value = new_value()
        if isinstance(value, dict):
            for v in value.values():
                if isinstance(v, str):
                    remember(v)
            stored: Any = json.dumps(value)
        else:
            stored = value
        remember(stored)
        kwargs: dict[str, Any] = {"Name": name}
        kwargs["SecretBinary" if isinstance(stored, bytes) else "SecretString"] = stored
        if tags:
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        arn = self.client("secretsmanager", region).create_secret(**kwargs)["ARN"]
        return arn, value

    def parameter(
        self, name: str, value: str | None = None, region: str = "us-east-1", secure: bool = True
    ) -> str:
        if value is None:
            value = new_value("pv")
        remember(value)
        c = self.client("ssm", region)
        c.put_parameter(Name=name, Value=value, Type="SecureString" if secure else "String", Overwrite=True)
        arn = c.get_parameter(Name=name)["Parameter"]["ARN"]
        return str(arn)


@pytest.fixture
def secrets_factory(aws_env: dict[str, str]) -> SecretFactory:
    return SecretFactory(aws_env)


@pytest.fixture
def counting_proxy(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A proxy in front of moto that counts calls server side; the plugin talks to moto through it."""
    from tests.support.proxy import CountingProxy

    proxy = CountingProxy(aws_env["AWS_ENDPOINT_URL"]).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.stop()


# --- the whole-suite leak check -------------------------------------------------------------------------------

_LEAKS: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A test whose captured output or failure text holds a created value (or an encoding of one) fails,
    and the text that held it is not shown. This runs where the test ran (with ``-n``, in the xdist worker
    that created the values, before the report goes to the controller), so it holds in parallel runs too."""
    from tests.support.leakcheck import find_leaks

    sections = list(report.sections)
    if report.longrepr is not None:
        sections.append((f"failure text ({report.when})", report.longreprtext))
    titles = find_leaks(sorted(CREATED_VALUES), sections)
    if not titles:
        return
    for title in titles:
        line = f"{report.nodeid}: {title}"
        if line not in _LEAKS:  # later phases repeat the sections of earlier ones
            _LEAKS.append(line)
    report.outcome = "failed"
    report.longrepr = "secret value leaked into test output: " + ", ".join(titles) + " (text withheld)"
    report.sections = [
        (t, "(withheld: holds a secret value)" if t in titles else text) for t, text in report.sections
    ]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _LEAKS:
        terminalreporter.section("secret values leaked into test output")
        for line in _LEAKS:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _LEAKS:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
