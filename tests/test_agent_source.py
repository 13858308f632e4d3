"""Reading through a local agent: the plugin's ``agent_url`` source against a real ``pyflyte-awssecrets serve``
process (its AWS Secrets Manager Agent HTTP API), with moto behind a counting proxy.

What matters to a dense node: many task processes share one AWS read per secret per TTL; AWS is read
directly only when ``agent_fallback`` says so, and only when the agent itself failed.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flytekitplugins_awssecrets import get_secret_values
from flytekitplugins_awssecrets.agent import AgentError
from flytekitplugins_awssecrets.errors import SecretNotFoundError, SecretResolutionError, SettingsError
from flytekitplugins_awssecrets.resolver import reset_process_state
from flytekitplugins_awssecrets.settings import load_settings
from tests.conftest import CREATED_VALUES, SecretFactory, remember
from tests.support.serve_clients import HiddenStr, ServeProcess, clean_env

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    token = HiddenStr(secrets.token_urlsafe(24))
    remember(token)
    path = tmp_path / "awssmatoken"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def agent(tmp_path: Path, token_file: Path, counting_proxy: Any) -> Iterator[ServeProcess]:
    """``serve`` with only its HTTP API, reading AWS through the counting proxy (clean_env copies AWS_*)."""
    srv = ServeProcess(
        ["--secret-agent", "off", "--http", "127.0.0.1:0", "--token-file", str(token_file)]
        # moto's whole account: these tests are about the agent source, not serve's allow-list.
        + ["--allow", "arn:aws:secretsmanager:us-east-1:123456789012:secret:*"],
        tmp_path / "serve",
        env=clean_env(),
    ).wait_ready()
    yield srv
    srv.stop()
    srv.assert_log_clean(CREATED_VALUES)


def _use_agent(monkeypatch: pytest.MonkeyPatch, url: str, token_file: Path, **extra: str) -> None:
    monkeypatch.setenv("FLYTE_AWS_SECRETS_AGENT_URL", url)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_AGENT_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("FLYTE_AWS_SECRETS_AGENT_FALLBACK", raising=False)
    for k, v in extra.items():
        monkeypatch.setenv(f"FLYTE_AWS_SECRETS_{k.upper()}", v)
    reset_process_state()


def test_tasks_share_one_read_per_secret_through_the_agent(
    agent: ServeProcess,
    token_file: Path,
    secrets_factory: SecretFactory,
    counting_proxy: Any,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text_arn, text = secrets_factory.secret(f"agent/{unique}/text")
    bin_arn, binary = secrets_factory.secret(f"agent/{unique}/bin", secrets.token_bytes(48))
    _use_agent(monkeypatch, f"http://127.0.0.1:{agent.http_port}", token_file)
    counting_proxy.reset_counts()
    pinned = f"{text_arn}::AWSCURRENT"
    assert get_secret_values([text_arn, bin_arn, pinned]) == [text, binary, text]
    first = dict(counting_proxy.calls)
    # serve read AWS (GetSecretValue per secret and version asked); this process made no AWS call itself.
    assert set(first) == {"GetSecretValue"} and first["GetSecretValue"] == 3, first
    for _ in range(3):  # three more task processes on the node, each with an empty cache of its own
        reset_process_state()
        assert get_secret_values([text_arn, bin_arn]) == [text, binary]
    assert dict(counting_proxy.calls) == first  # answered from serve's cache: no AWS call at all


def test_agent_errors_are_typed_and_aws_is_read_only_if_told_to(
    agent: ServeProcess,
    token_file: Path,
    tmp_path: Path,
    secrets_factory: SecretFactory,
    counting_proxy: Any,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arn, value = secrets_factory.secret(f"agent/{unique}/x")
    url = f"http://127.0.0.1:{agent.http_port}"
    # AWS's verdict, passed on by the agent: typed, and not read again from AWS even with fallback on.
    _use_agent(monkeypatch, url, token_file, agent_fallback="true")
    missing = arn.rsplit(":", 1)[0] + ":nope-" + unique
    counting_proxy.reset_counts()
    with pytest.raises(SecretResolutionError) as e:
        get_secret_values([missing])
    assert isinstance(e.value.errors[0], SecretNotFoundError)
    assert counting_proxy.calls["GetSecretValue"] == 1  # serve's read only

    # A wrong token: the agent's own refusal, typed, names the agent; no fallback unless told to.
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token")
    _use_agent(monkeypatch, url, wrong)
    counting_proxy.reset_counts()
    with pytest.raises(SecretResolutionError) as e:
        get_secret_values([arn])
    err = e.value.errors[0]
    assert isinstance(err, AgentError) and "Bad Token" in str(err) and url in str(err)
    assert counting_proxy.total() == 0

    # Nothing listens: retryable, and no AWS call without agent_fallback...
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    _use_agent(monkeypatch, dead, token_file)
    with pytest.raises(SecretResolutionError) as e:
        get_secret_values([arn])
    assert isinstance(e.value.errors[0], AgentError) and e.value.retryable
    assert "unreachable" in str(e.value)
    assert counting_proxy.total() == 0
    # ... and AWS directly with it (one GetSecretValue, the log says so).
    _use_agent(monkeypatch, dead, token_file, agent_fallback="true")
    assert get_secret_values([arn]) == [value]
    assert dict(counting_proxy.calls) == {"GetSecretValue": 1}
    for v in CREATED_VALUES:
        assert v not in str(e.value)


def test_agent_settings_are_checked() -> None:
    base = {"FLYTE_AWS_SECRETS_AGENT_TOKEN_FILE": "/var/run/awssmatoken"}
    ok = load_settings({**base, "FLYTE_AWS_SECRETS_AGENT_URL": "http://localhost:2773/"})
    assert ok.agent_url == "http://localhost:2773" and ok.agent_fallback is False
    with pytest.raises(SettingsError, match="not loopback"):
        load_settings({**base, "FLYTE_AWS_SECRETS_AGENT_URL": "http://10.0.0.7:2773"})
    allowed = load_settings(
        {
            **base,
            "FLYTE_AWS_SECRETS_AGENT_URL": "http://10.0.0.7:2773",
            "FLYTE_AWS_SECRETS_AGENT_ALLOW_NON_LOOPBACK": "true",
        }
    )
    assert allowed.agent_url == "http://10.0.0.7:2773"
    with pytest.raises(SettingsError) as e:
        load_settings({"FLYTE_AWS_SECRETS_AGENT_URL": "http://127.0.0.1:2773"})
    assert e.value.field == "agent_url" and "agent_token_file" in str(e.value)
    with pytest.raises(SettingsError, match="agent_url"):
        load_settings({**base, "FLYTE_AWS_SECRETS_AGENT_URL": "ftp://127.0.0.1:21"})
