"""The read strategies against AWS's quotas: the default never spends the batch quota; ``batch`` spends no
retries on a throttled batch and moves to single reads at once. moto behind the proxy's token buckets,
which answer ``ThrottlingException`` as AWS does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flytekitplugins_awssecrets import get_secret_values
from flytekitplugins_awssecrets.errors import SecretFetchError
from flytekitplugins_awssecrets.fetch import Fetched, parse_payload
from flytekitplugins_awssecrets.refs import parse_reference
from flytekitplugins_awssecrets.resolver import get_resolver, reset_process_state
from tests.conftest import SecretFactory
from tests.support.proxy import CountingProxy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def scarce_batch(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingProxy]:
    """A proxy whose BatchGetSecretValue bucket holds one request and refills once in ~17 minutes."""
    proxy = CountingProxy(aws_env["AWS_ENDPOINT_URL"], quotas={("BatchGetSecretValue",): 0.001}).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.stop()


def test_batch_throttled_moves_to_single_reads_at_once(
    scarce_batch: CountingProxy,
    secrets_factory: SecretFactory,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYTE_AWS_SECRETS_READ_STRATEGY", "batch")
    reset_process_state()
    made = [secrets_factory.secret(f"{unique}/s{i}") for i in range(6)]
    arns, values = [a for a, _ in made], [v for _, v in made]
    assert get_secret_values(arns[:2]) == values[:2]
    assert scarce_batch.calls == {"BatchGetSecretValue": 1}
    # The bucket is empty: one batch call, throttled, no botocore retry on it; the secrets at once one by one.
    scarce_batch.reset_counts()
    assert get_secret_values(arns[2:4]) == values[2:4]
    assert scarce_batch.calls == {"BatchGetSecretValue": 1, "GetSecretValue": 2}
    assert scarce_batch.throttled == {"BatchGetSecretValue": 1}
    # After a throttle the process leaves the batch API alone for a while.
    scarce_batch.reset_counts()
    assert get_secret_values(arns[4:]) == values[4:]
    assert scarce_batch.calls == {"GetSecretValue": 2}


def test_default_never_calls_the_batch_api(
    scarce_batch: CountingProxy, secrets_factory: SecretFactory, unique: str
) -> None:
    made = [secrets_factory.secret(f"{unique}/d{i}") for i in range(25)]
    assert get_secret_values([a for a, _ in made]) == [v for _, v in made]
    assert scarce_batch.calls == {"GetSecretValue": 25}
    assert get_secret_values([a for a, _ in made]) == [v for _, v in made]  # within the TTL: no call
    assert scarce_batch.total() == 25


def test_ssm_clients_use_adaptive_retries(
    counting_proxy: Any, secrets_factory: SecretFactory, unique: str
) -> None:
    arn = secrets_factory.parameter(f"/{unique}/p")
    get_secret_values([arn])
    clients = get_resolver().factory._clients  # noqa: SLF001 - which retry mode each API got
    modes = {k[0]: c.meta.config.retries["mode"] for k, c in clients.items()}
    assert modes == {"ssm": "adaptive"}


def test_payload_without_string_or_binary_is_retryable_and_not_cached() -> None:
    ref = parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf")
    got = parse_payload(ref, {"ARN": ref.arn, "Name": "db", "VersionId": "v1"})
    assert isinstance(got, SecretFetchError) and got.retryable
    assert "neither SecretString nor SecretBinary" in str(got)
    assert isinstance(parse_payload(ref, {"SecretBinary": b"\x00\x01"}), Fetched)
    b64 = parse_payload(ref, {"SecretBinary": "AAE="}, binary_is_base64=True)
    assert isinstance(b64, Fetched) and b64.value == b"\x00\x01"
    bad = parse_payload(ref, {"SecretBinary": "not base64!"}, binary_is_base64=True)
    assert isinstance(bad, SecretFetchError) and bad.retryable
    # The cache keeps values only: an error result is loaded again next time.
    from flytekitplugins_awssecrets.cache import TTLCache

    cache: TTLCache[str, Fetched] = TTLCache(300)
    loads = []

    def loader(keys: list[str]) -> dict[str, Fetched | BaseException]:
        loads.append(keys)
        return {k: got for k in keys}

    cache.get_many(["k"], loader)
    cache.get_many(["k"], loader)
    assert len(loads) == 2
