"""A wrong or dead endpoint: every command and task fails fast and says which endpoint, and from where.

Two kinds of dead endpoint, both on loopback: a port nothing listens on (connection refused) and a
"blackhole" that accepts connections and never answers (read time-out). No test times anything: the
blackhole counts connections server side, which is one per attempt, and the errors report the attempts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flytekitplugins_awssecrets.errors import EndpointUnreachableError, SecretResolutionError
from flytekitplugins_awssecrets.settings import Settings
from tests.conftest import ROOT
from tests.support.blackhole import Blackhole, refused_url
from tests.support.workflows import one_secret_workflow

BIN = Path(sys.executable).parent
SM = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"
SSM = "arn:aws:ssm:us-east-1:123456789012:parameter/prod/token"


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def _resolve_error(*arns: str) -> list[EndpointUnreachableError]:
    from flytekitplugins_awssecrets.resolver import resolve_values

    with pytest.raises(SecretResolutionError) as info:
        resolve_values(list(arns))
    errors = info.value.errors
    assert all(isinstance(e, EndpointUnreachableError) for e in errors), [str(e) for e in errors]
    return errors  # type: ignore[return-value]


def test_defaults_bound_an_unreachable_endpoint_to_about_10_s() -> None:
    s = Settings()
    worst = s.connect_attempts * max(s.connect_timeout, s.read_timeout) + (s.connect_attempts - 1) * 1.0
    assert worst <= 10.0  # botocore's backoff before the one retry is at most 1 s


def test_refused_endpoint_is_named_with_its_variable(creds: None, monkeypatch: pytest.MonkeyPatch) -> None:
    url = refused_url()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    errors = _resolve_error(SM, SSM)
    by_ref = {e.reference: e for e in errors}
    assert by_ref[SM].source == "env var AWS_ENDPOINT_URL_SECRETS_MANAGER"
    assert by_ref[SSM].source == "env var AWS_ENDPOINT_URL"
    for e in errors:
        assert e.endpoint == url and "connection failed" in str(e) and "after 2 attempts" in str(e)
        assert e.retryable


def test_blackhole_uses_the_configured_attempts(creds: None, monkeypatch: pytest.MonkeyPatch) -> None:
    hole = Blackhole().start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", hole.url)
        monkeypatch.setenv("FLYTE_AWS_SECRETS_READ_TIMEOUT", "0.3")
        monkeypatch.setenv("FLYTE_AWS_SECRETS_CONNECT_ATTEMPTS", "3")
        (err,) = _resolve_error(SM)
    finally:
        hole.stop()
    assert "no answer within the read time-out" in str(err) and "after 3 attempts" in str(err)
    assert hole.connections == 3  # one connection per attempt, then it stops: max_attempts (5) is not used


def test_throttling_still_gets_max_attempts(creds: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from flytekitplugins_awssecrets.credentials import limit_connection_retries

    class _Meta:
        class service_model:  # noqa: N801 - botocore's shape
            class service_id:  # noqa: N801
                @staticmethod
                def hyphenize() -> str:
                    return "secrets-manager"

        def __init__(self) -> None:
            import botocore.hooks

            self.events = botocore.hooks.HierarchicalEmitter()

    class _Client:
        meta = _Meta()

    c = _Client()
    limit_connection_retries(c, 2)
    from botocore.exceptions import EndpointConnectionError

    conn = EndpointConnectionError(endpoint_url="http://x")
    ask = c.meta.events.emit
    assert ask("needs-retry.secrets-manager.GetSecretValue", attempts=1, caught_exception=conn)[0][1] is None
    assert ask("needs-retry.secrets-manager.GetSecretValue", attempts=2, caught_exception=conn)[0][1] is False
    # A throttled answer (no exception) is left to botocore's own retry handler.
    assert ask("needs-retry.secrets-manager.GetSecretValue", attempts=4, caught_exception=None)[0][1] is None


def _cli_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    env.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(ROOT),
        COLUMNS="400",
    )
    return env


@pytest.mark.parametrize("command", [["diff"], ["encrypt"], ["sync", "--dry-run"]])
def test_manifest_commands_name_the_endpoint(command: list[str], tmp_path: Path) -> None:
    url = refused_url()
    f = tmp_path / "m.yml"
    f.write_text(
        "path: /apps/x/\nregion: us-east-1\nparameters:\n  - name: a\n    type: SecureString\n    value: v1\n"
    )
    p = subprocess.run(
        [str(BIN / "pyflyte-awssecrets"), "manifest", command[0], *command[1:], str(f)],
        env=_cli_env(url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 3, p.stderr
    assert f"cannot reach endpoint {url} (from env var AWS_ENDPOINT_URL)" in p.stderr, p.stderr
    assert "after 2 attempts" in p.stderr


def test_pyflyte_run_task_names_the_endpoint(tmp_path: Path) -> None:
    url = refused_url()
    wf = one_secret_workflow(tmp_path / "wf_unreachable.py", SM)
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", str(wf), "wf"],
        env=_cli_env(url),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert f"cannot reach endpoint {url}" in out and "env var AWS_ENDPOINT_URL" in out, out[-3000:]


def test_assumed_role_sts_call_fails_fast_and_names_its_variable(
    creds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STS (credentials for an assumed role) gets the same time-outs and attempts as the reads."""
    hole = Blackhole().start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", hole.url)
        monkeypatch.setenv("FLYTE_AWS_SECRETS_ASSUME_ROLE", "arn:aws:iam::123456789012:role/Reader")
        monkeypatch.setenv("FLYTE_AWS_SECRETS_READ_TIMEOUT", "0.3")
        (err,) = _resolve_error(SM)
    finally:
        hole.stop()
    assert err.source == "env var AWS_ENDPOINT_URL_STS" and err.endpoint == hole.url
    assert hole.connections == 2


def test_endpoint_source_and_no_userinfo_in_messages() -> None:
    from flytekitplugins_awssecrets.credentials import endpoint_origin, endpoint_source

    assert endpoint_origin("http://user:pw@127.0.0.1:9/x") == "http://127.0.0.1:9"
    env = {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_SSM": "http://b:2"}
    assert endpoint_source("ssm", "http://b:2/", env) == "env var AWS_ENDPOINT_URL_SSM"
    assert endpoint_source("ssm", "http://a:1/", env) == "env var AWS_ENDPOINT_URL"
    assert endpoint_source("secretsmanager", "http://b:2/", env) == "env var AWS_ENDPOINT_URL_SSM"
    assert (
        endpoint_source("ssm", "https://ssm.eu-west-1.amazonaws.com/", env)
        == "botocore's default for the region"
    )
    assert endpoint_source("ssm", "http://c:3/", env).startswith("the AWS config file")
    ignored = {**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}
    assert not endpoint_source("ssm", "http://b:2/", ignored).startswith("env var")
