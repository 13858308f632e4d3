"""Access control against a moto server that enforces IAM: denied reads name the action and resource to
grant, and a role without BatchGetSecretValue still reads its secrets one by one.

Also the error translation for failures moto cannot produce (KMS decryption, throttling codes), as unit
tests on botocore's own exception type.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from flytekitplugins_awssecrets import (
    SecretAccessDeniedError,
    SecretDecryptionError,
    SecretResolutionError,
    SecretThrottledError,
    get_secret_values,
    parse_reference,
)
from flytekitplugins_awssecrets.fetch import translate_error
from tests.conftest import SecretFactory
from tests.support.moto_server import MotoServer, aws_test_env, start_moto_server
from tests.support.proxy import CountingProxy


@pytest.fixture(scope="module")
def iam_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, dict[str, str]]]:
    server = start_moto_server(str(tmp_path_factory.mktemp("iam-moto") / "log"))
    env = aws_test_env(server.url, str(tmp_path_factory.mktemp("home")))
    yield server, env
    server.stop()


def _enforce(server: MotoServer) -> None:
    req = urllib.request.Request(
        server.url + "/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(req, timeout=10)


def _user(factory: SecretFactory, name: str, actions: list[str]) -> dict[str, str]:
    iam = factory.client("iam")
    iam.create_user(UserName=name)
    if actions:
        doc = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        }
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(doc))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_denied_and_batch_fallback(
    iam_moto: tuple[MotoServer, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, env = iam_moto
    factory = SecretFactory(env)
    arns = [factory.secret(f"iam/s{i}")[0] for i in range(3)]
    values = [factory.client("secretsmanager").get_secret_value(SecretId=a)["SecretString"] for a in arns]
    reader = _user(factory, "reader", ["secretsmanager:GetSecretValue"])
    nobody = _user(factory, "nobody", [])
    _enforce(server)
    proxy = CountingProxy(server.url).start()
    try:
        for k, v in {**env, **reader, "AWS_ENDPOINT_URL": proxy.url}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("FLYTE_AWS_SECRETS_READ_STRATEGY", "batch")
        # No BatchGetSecretValue permission: one denied batch, then one GetSecretValue each.
        assert get_secret_values(arns) == values
        assert proxy.calls == {"BatchGetSecretValue": 1, "GetSecretValue": 3}

        from flytekitplugins_awssecrets.resolver import reset_process_state

        reset_process_state()
        for k, v in nobody.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(SecretResolutionError) as e:
            get_secret_values(arns[:1])
        err = e.value.errors[0]
        assert isinstance(err, SecretAccessDeniedError)
        assert err.action == "secretsmanager:GetSecretValue" and err.resource == arns[0]
        assert "grant secretsmanager:GetSecretValue on " + arns[0] in str(e.value)
        for v in values:
            assert v not in str(e.value)
    finally:
        proxy.stop()


def _client_error(code: str, status: int = 400, message: str = "m") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetSecretValue",
    )


@pytest.mark.parametrize(
    ("code", "status", "kind", "retryable"),
    [
        ("DecryptionFailure", 400, SecretDecryptionError, False),
        ("ThrottlingException", 400, SecretThrottledError, True),
        ("InternalServiceError", 500, SecretThrottledError, True),
        ("AccessDeniedException", 400, SecretAccessDeniedError, False),
    ],
)
def test_error_translation(code: str, status: int, kind: type, retryable: bool) -> None:
    ref = parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:x")
    err = translate_error(ref, _client_error(code, status, "Access to KMS is not allowed\x00\n" + "z" * 1000))
    assert isinstance(err, kind) and err.retryable == retryable
    assert "\x00" not in str(err) and len(str(err)) < 900
    if isinstance(err, SecretAccessDeniedError):
        # A partial ARN cannot name the exact resource: the hint says so with a wildcard suffix.
        assert err.resource.endswith(":secret:x-??????")


def test_throttled_after_retries_is_typed_and_retryable(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, secrets_factory: Any, unique: str
) -> None:
    from tests.support.proxy import Faults

    arn, _ = secrets_factory.secret(f"{unique}/t")
    proxy = CountingProxy(aws_env["AWS_ENDPOINT_URL"], faults=Faults(rate=1.0, kinds=("throttle",))).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("FLYTE_AWS_SECRETS_MAX_ATTEMPTS", "3")
        with pytest.raises(SecretResolutionError) as e:
            get_secret_values([arn])
        assert isinstance(e.value.errors[0], SecretThrottledError) and e.value.retryable
        assert proxy.calls["GetSecretValue"] == 3  # botocore's attempts, all throttled
    finally:
        proxy.stop()
