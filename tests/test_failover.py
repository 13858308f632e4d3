"""Replica failover: a secret replicated to a second region is read there when its primary region fails with
a network error, a 5xx or throttling, and never on a 4xx. Two regions on moto (a real replica made with
``ReplicaRegions``), behind the fault-injecting proxy that fails only the primary region's requests.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flytekitplugins_awssecrets import get_secret_values
from flytekitplugins_awssecrets.errors import (
    SecretAccessDeniedError,
    SecretFetchError,
    SecretNotFoundError,
    SecretResolutionError,
    SecretThrottledError,
)
from flytekitplugins_awssecrets.resolver import reset_process_state
from flytekitplugins_awssecrets.settings import load_settings
from tests.conftest import CREATED_VALUES, SecretFactory, new_value, remember
from tests.support.proxy import Faults

pytestmark = pytest.mark.timeout(120)

PRIMARY, REPLICA = "us-east-1", "us-west-2"


@pytest.fixture
def replicated(secrets_factory: SecretFactory, unique: str) -> tuple[str, str]:
    """A secret in PRIMARY with a replica in REPLICA; returns (primary ARN, value), shown by fingerprint."""
    value = new_value()
    remember(value)
    sm = secrets_factory.client("secretsmanager", PRIMARY)
    arn = sm.create_secret(
        Name=f"failover/{unique}", SecretString=value, AddReplicaRegions=[{"Region": REPLICA}]
    )["ARN"]
    return _Hidden((str(arn), value))


class _Hidden(tuple):  # type: ignore[type-arg]
    """pytest shows fixture values of a failing test with repr(): never the value."""

    def __repr__(self) -> str:
        return f"({self[0]!r}, <value len={len(self[1])}>)"


@pytest.fixture
def failover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_AWS_SECRETS_FAILOVER_REGIONS", f'{{"{PRIMARY}": ["{REPLICA}"]}}')
    monkeypatch.setenv("FLYTE_AWS_SECRETS_MAX_ATTEMPTS", "2")  # keep botocore's backoff short
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_READ_TIMEOUT", "1")
    reset_process_state()


@pytest.mark.parametrize(
    ("kind", "primary_error"),
    [("5xx", "503"), ("throttle", "ThrottlingException"), ("reset", "network"), ("slow", "network")],
)
def test_primary_down_reads_the_replica_and_says_so(
    replicated: tuple[str, str],
    failover: None,
    counting_proxy: Any,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    primary_error: str,
) -> None:
    arn, value = replicated
    counting_proxy.faults = Faults(rate=1.0, kinds=(kind,), regions=(PRIMARY,), slow_seconds=2.0)
    counting_proxy.reset_counts()
    with caplog.at_level(logging.WARNING, logger="flytekitplugins_awssecrets"):
        assert get_secret_values([arn]) == [value]
    assert counting_proxy.by_region[("GetSecretValue", PRIMARY)] == 2  # botocore's attempts, all failed
    assert counting_proxy.by_region[("GetSecretValue", REPLICA)] == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"from its replica in {REPLICA}" in logged and arn in logged
    for v in CREATED_VALUES:
        assert v not in logged and v not in caplog.text


@pytest.mark.parametrize("kind", ["denied"])
def test_no_failover_on_a_4xx(
    replicated: tuple[str, str],
    failover: None,
    counting_proxy: Any,
    secrets_factory: SecretFactory,
    unique: str,
    kind: str,
) -> None:
    arn, _ = replicated
    counting_proxy.faults = Faults(rate=1.0, kinds=(kind,), regions=(PRIMARY,))
    counting_proxy.reset_counts()
    with pytest.raises(SecretResolutionError) as e:
        get_secret_values([arn])
    assert isinstance(e.value.errors[0], SecretAccessDeniedError)
    assert counting_proxy.by_region[("GetSecretValue", REPLICA)] == 0
    # Not found in the primary is not a reason to look elsewhere either, even where a same-named one exists.
    counting_proxy.faults = Faults()
    name = f"failover/only-west-{unique}"
    secrets_factory.secret(name, region=REPLICA)
    partial = arn.rsplit(":", 1)[0] + ":" + name
    counting_proxy.reset_counts()
    with pytest.raises(SecretResolutionError) as e:
        get_secret_values([partial])
    assert isinstance(e.value.errors[0], SecretNotFoundError)
    assert counting_proxy.by_region[("GetSecretValue", REPLICA)] == 0


def test_both_regions_down_is_a_retryable_error_naming_the_secret(
    replicated: tuple[str, str], failover: None, counting_proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    arn, value = replicated
    counting_proxy.faults = Faults(rate=1.0, kinds=("5xx",), regions=(PRIMARY, REPLICA))
    with caplog.at_level(logging.WARNING, logger="flytekitplugins_awssecrets"):
        with pytest.raises(SecretResolutionError) as e:
            get_secret_values([arn])
    assert isinstance(e.value.errors[0], SecretThrottledError | SecretFetchError) and e.value.retryable
    assert arn in str(e.value) and value not in str(e.value)
    assert f"replica of {arn} in {REPLICA} failed too" in caplog.text


def test_without_the_setting_there_is_no_failover(
    replicated: tuple[str, str], counting_proxy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_AWS_SECRETS_MAX_ATTEMPTS", "1")
    arn, _ = replicated
    counting_proxy.faults = Faults(rate=1.0, kinds=("5xx",), regions=(PRIMARY,))
    counting_proxy.reset_counts()
    with pytest.raises(SecretResolutionError):
        get_secret_values([arn])
    assert counting_proxy.by_region[("GetSecretValue", REPLICA)] == 0


def test_failover_settings() -> None:
    s = load_settings({"FLYTE_AWS_SECRETS_FAILOVER_REGIONS": '["us-west-2", "eu-west-1"]'})
    assert s.failover_regions == {"*": ("us-west-2", "eu-west-1")}
    s = load_settings({"FLYTE_AWS_SECRETS_FAILOVER_REGIONS": '{"us-east-1": "us-west-2"}'})
    assert s.failover_regions == {"us-east-1": ("us-west-2",)}
    from flytekitplugins_awssecrets.errors import SettingsError

    with pytest.raises(SettingsError, match="failover_regions"):
        load_settings({"FLYTE_AWS_SECRETS_FAILOVER_REGIONS": '{"us-east-1": ["nowhere"]}'})
    with pytest.raises(SettingsError, match="its own failover"):
        load_settings({"FLYTE_AWS_SECRETS_FAILOVER_REGIONS": '{"us-east-1": ["us-east-1"]}'})
