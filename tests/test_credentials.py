"""Credential modes, cross-account reads, aliases and tag scoping, against moto server.

A proxy in front of moto records which access key signed each call, so each test sees from the server
side which credentials the plugin used.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from flytekit import current_context, task

from flytekitplugins_awssecrets import (
    MissingTagError,
    SecretResolutionError,
    UnknownAliasError,
    aws_secret,
    get_secret_value,
    get_secret_values,
)
from tests.support.imds import MetadataServer


def _ttl0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS", "0")


def _role(factory: Any, name: str, account: str = "123456789012") -> str:
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    if account == "123456789012":
        return str(
            factory.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))[
                "Role"
            ]["Arn"]
        )
    return f"arn:aws:iam::{account}:role/{name}"


def test_static_keys_from_settings(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, value = secrets_factory.secret(f"{unique}/s")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_ACCESS_KEY_ID", "AKIASTATIC0000000001")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_SECRET_ACCESS_KEY", "static-secret")
    assert get_secret_value(arn) == value
    assert counting_proxy.keys_for("GetSecretValue") == ["AKIASTATIC0000000001"]


def test_static_keys_in_a_world_readable_file_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("access_key_id: AKIAFILE000000000001\nsecret_access_key: from-file\n")
    os.chmod(cfg, 0o644)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CONFIG", str(cfg))
    from flytekitplugins_awssecrets.settings import load_settings

    with caplog.at_level(logging.WARNING):
        s = load_settings()
    assert s.access_key_id == "AKIAFILE000000000001"
    assert "readable by other users" in caplog.text and "chmod 600" in caplog.text
    assert "from-file" not in caplog.text and "from-file" not in repr(s)


def test_named_profile(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    arn, value = secrets_factory.secret(f"{unique}/p")
    creds = tmp_path / "credentials"
    creds.write_text("[dev]\naws_access_key_id = AKIAPROFILE000000001\naws_secret_access_key = dev-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_PROFILE", "dev")
    assert get_secret_value(arn) == value
    assert counting_proxy.keys_for("GetSecretValue") == ["AKIAPROFILE000000001"]


def test_assume_role_with_external_id_refreshes(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, value = secrets_factory.secret(f"{unique}/r")
    role = _role(secrets_factory, f"reader-{unique}")
    monkeypatch.setenv(
        "FLYTE_AWS_SECRETS_ASSUME_ROLE",
        json.dumps(
            {
                "role_arn": role,
                "external_id": "ext-123",
                "session_name": "flyte-test",
                "duration_seconds": 900,
            }
        ),
    )
    _ttl0(monkeypatch)
    assert get_secret_value(arn) == value
    assert get_secret_value(arn) == value
    body = counting_proxy.sts_bodies[0]
    assert (
        "ExternalId=ext-123" in body
        and "RoleSessionName=flyte-test" in body
        and "DurationSeconds=900" in body
    )
    used = counting_proxy.keys_for("GetSecretValue")
    assert all(k != "testing" for k in used), "the assumed role's keys must sign the reads"
    # 900 s credentials are inside botocore's refresh window, so each use refreshes them first.
    assert counting_proxy.calls["AssumeRole"] >= 2
    assert counting_proxy.keys_for("AssumeRole")[0] == "testing"


def test_web_identity_irsa(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    arn, value = secrets_factory.secret(f"{unique}/w")
    role = _role(secrets_factory, f"irsa-{unique}")
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZmFrZSJ9.c2ln")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_ROLE_ARN", role)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    assert get_secret_value(arn) == value
    assert counting_proxy.calls["AssumeRoleWithWebIdentity"] == 1


def test_two_accounts_in_one_task(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_arn, local_value = secrets_factory.secret(f"{unique}/local")
    other_role = _role(secrets_factory, f"cross-{unique}", account="111111111111")
    sts = secrets_factory.client("sts")
    c = sts.assume_role(RoleArn=other_role, RoleSessionName="setup")["Credentials"]
    import boto3

    other_sm = boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=secrets_factory._env["AWS_ENDPOINT_URL"],
        aws_access_key_id=c["AccessKeyId"],
        aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"],
    )
    from tests.conftest import new_value

    other_value = new_value()
    other_arn = other_sm.create_secret(Name=f"{unique}/remote", SecretString=other_value)["ARN"]
    assert ":111111111111:" in other_arn
    monkeypatch.setenv("FLYTE_AWS_SECRETS_ACCOUNT_ROLES", json.dumps({"111111111111": other_role}))
    reqs = [aws_secret(local_arn), aws_secret(other_arn)]

    @task(secret_requests=reqs)
    def both() -> bool:
        ctx = current_context()
        return (
            ctx.secrets.get(reqs[0].group, reqs[0].key) == local_value
            and ctx.secrets.get(reqs[1].group, reqs[1].key) == other_value
        )

    counting_proxy.reset_counts()
    assert both()
    keys = counting_proxy.keys_for("GetSecretValue")
    assert "testing" in keys and len(set(keys)) == 2, keys
    assert counting_proxy.calls["AssumeRole"] == 1
    assert other_role in counting_proxy.sts_bodies[0].replace("%3A", ":").replace("%2F", "/")


def test_rotated_credentials_file_is_reread(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    arn, value = secrets_factory.secret(f"{unique}/rot")
    creds = tmp_path / "credentials"

    def write(akid: str) -> None:
        creds.write_text(
            f"[default]\naws_access_key_id = {akid}\naws_secret_access_key = s\naws_session_token = t\n"
        )

    write("ASIAFIRST00000000001")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CREDENTIALS_FILE", str(creds))
    _ttl0(monkeypatch)
    assert get_secret_value(arn) == value
    time.sleep(0.01)
    write("ASIASECOND0000000002")
    assert get_secret_value(arn) == value
    assert counting_proxy.keys_for("GetSecretValue") == ["ASIAFIRST00000000001", "ASIASECOND0000000002"]


def test_instance_metadata_credentials(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, value = secrets_factory.secret(f"{unique}/imds")
    imds = MetadataServer("AccessToSecrets", "ASIAIMDS000000000001", "imds-secret", "imds-token").start()
    try:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
        assert get_secret_value(arn) == value
        assert counting_proxy.keys_for("GetSecretValue") == ["ASIAIMDS000000000001"]
        assert "PUT /latest/api/token" in imds.requests
    finally:
        imds.stop()


def test_aliases_point_each_environment_elsewhere(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prod, prod_v = secrets_factory.secret(f"{unique}/prod", {"user": "p"})
    dev, dev_v = secrets_factory.secret(f"{unique}/dev", {"user": "d"})
    req = aws_secret("TestingSecret", json_key="user")

    @task(secret_requests=[req])
    def who() -> str:
        return str(current_context().secrets.get(req.group, req.key))

    monkeypatch.setenv("FLYTE_AWS_SECRETS_ALIASES", json.dumps({"TestingSecret": prod}))
    assert who() == "p"
    monkeypatch.setenv("FLYTE_AWS_SECRETS_ALIASES", json.dumps({"TestingSecret": dev}))
    assert who() == "d"
    monkeypatch.setenv("FLYTE_AWS_SECRETS_ALIASES", json.dumps({"Other": dev, "Third": prod}))
    with pytest.raises(SecretResolutionError) as e:
        who()
    err = e.value.errors[0]
    assert isinstance(err, UnknownAliasError) and "known aliases: Other, Third" in str(err)


def test_secret_agent_config_file_works_as_settings(
    secrets_factory: Any,
    counting_proxy: Any,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    arn, value = secrets_factory.secret(f"{unique}/TestingSecret", {"password": "pw-" + unique})
    role = _role(secrets_factory, f"agent-{unique}")
    cfg = tmp_path / "secret-agent.yaml"
    cfg.write_text(
        f"""service:
  tcp:
    endpoint: 0.0.0.0:3005

secret-manager:
  aws:
    region: us-west-1
    resources:
      TestingSecret: {arn}
    assume-role: {role}
    access-key-id: AKIAAGENT00000000001 # key id of user SecretAgent
    secret-access-key: agent-secret

log:
  level: info
"""
    )
    os.chmod(cfg, 0o600)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CONFIG", str(cfg))
    with caplog.at_level(logging.INFO):
        assert get_secret_value(aws_secret("TestingSecret", json_key="password")) == "pw-" + unique
    assert counting_proxy.keys_for("AssumeRole") == ["AKIAAGENT00000000001"]
    assert "section 'service' is not used" in caplog.text and "section 'log' is not used" in caplog.text


def test_required_tags(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, _ = secrets_factory.secret(f"{unique}/good", tags={"SymEnv": "main"})
    wrong, _ = secrets_factory.secret(f"{unique}/wrong", tags={"SymEnv": "staging"})
    bare, _ = secrets_factory.secret(f"{unique}/bare")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_REQUIRED_TAGS", '{"SymEnv": "main"}')
    counting_proxy.reset_counts()
    with pytest.raises(SecretResolutionError) as e:
        get_secret_values([good, wrong, bare])
    errs = {err.reference: err for err in e.value.errors}
    assert set(errs) == {wrong, bare} and all(isinstance(x, MissingTagError) for x in errs.values())
    assert "required tag 'SymEnv' is 'staging', expected 'main'" in str(errs[wrong])
    assert "required tag 'SymEnv' is missing" in str(errs[bare])
    assert counting_proxy.calls["DescribeSecret"] == 3
    get_secret_values([good])
    get_secret_values([good])
    assert counting_proxy.calls["DescribeSecret"] == 3  # cached with the value


def test_service_specific_endpoint_variable(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.proxy import CountingProxy

    arn, value = secrets_factory.secret(f"{unique}/ep")
    proxy = CountingProxy(os.environ["AWS_ENDPOINT_URL"]).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens here
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", proxy.url)
        assert get_secret_value(arn) == value
        assert proxy.calls["GetSecretValue"] == 1
    finally:
        proxy.stop()
