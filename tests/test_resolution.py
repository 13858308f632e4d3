"""Resolution in-process, through real flytekit tasks called as Python functions, against moto server.

Call counts are taken server side by a proxy in front of moto.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from flytekit import Secret, current_context, task, workflow

from flytekitplugins_awssecrets import (
    BinaryToEnvVarError,
    JsonKeyNotFoundError,
    MountCollisionError,
    SecretNotFoundError,
    SecretResolutionError,
    aws_secret,
    get_secret_value,
    split_arn,
)
from tests.conftest import new_value


def _partial(name: str, region: str = "us-east-1") -> str:
    return f"arn:aws:secretsmanager:{region}:123456789012:secret:{name}"


def test_any_env_file_and_cleanup(secrets_factory: Any, counting_proxy: Any, unique: str) -> None:
    api_arn, api = secrets_factory.secret(f"{unique}/api-key")
    db_arn, db = secrets_factory.secret(f"{unique}/db", {"username": "app", "password": new_value()})
    cert_arn, cert = secrets_factory.secret(f"{unique}/tls-cert", region="eu-west-1")
    API = aws_secret(api_arn)
    DB = aws_secret(
        db_arn, json_key="password", mount_requirement=Secret.MountType.ENV_VAR, env_var="DB_PASSWORD"
    )
    G, K = split_arn(cert_arn)
    CERT = Secret(group=G, key=K, mount_requirement=Secret.MountType.FILE, env_var="CERT_PATH")
    seen: dict[str, Any] = {}

    @task(secret_requests=[API, DB, CERT])
    def call_api() -> int:
        ctx = current_context()
        seen["api"] = ctx.secrets.get(API.group, API.key) == api
        seen["db"] = os.environ["DB_PASSWORD"] == db["password"]
        seen["db_flytekit"] = ctx.secrets.get(DB.group, DB.key) == db["password"]
        path = ctx.secrets.get_secrets_file(G, K)
        seen["path"] = path
        seen["cert"] = Path(path).read_text() == cert
        seen["cert_env"] = os.environ["CERT_PATH"] == path
        seen["file_mode"] = stat.S_IMODE(os.stat(path).st_mode)
        seen["dir_mode"] = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
        return 1

    assert call_api() == 1
    assert seen["api"] and seen["db"] and seen["db_flytekit"] and seen["cert"] and seen["cert_env"]
    assert seen["file_mode"] == 0o600 and seen["dir_mode"] == 0o700
    assert seen["path"].startswith("/dev/shm/")
    # After the task: environment restored, file gone, memory cleared.
    assert "DB_PASSWORD" not in os.environ and "CERT_PATH" not in os.environ
    assert not os.path.exists(seen["path"])
    from flytekit.core.context_manager import SecretsManager

    with pytest.raises(ValueError):
        SecretsManager().get(API.group, API.key)
    # One GetSecretValue per secret (the default read strategy; see strategies.py), all at once.
    assert counting_proxy.calls == {"GetSecretValue": 3}, counting_proxy.calls


@pytest.mark.parametrize(
    ("strategy", "calls"), [("get", {"GetSecretValue": 40}), ("batch", {"BatchGetSecretValue": 2})]
)
def test_forty_secrets_then_cache(
    secrets_factory: Any,
    counting_proxy: Any,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
    calls: dict[str, int],
) -> None:
    monkeypatch.setenv("FLYTE_AWS_SECRETS_READ_STRATEGY", strategy)
    arns = [secrets_factory.secret(f"{unique}/s{i}")[0] for i in range(40)]
    reqs = [aws_secret(a) for a in arns]

    @task(secret_requests=reqs)
    def many() -> int:
        ctx = current_context()
        return sum(1 for r in reqs if ctx.secrets.get(r.group, r.key))

    counting_proxy.reset_counts()
    assert many() == 40
    assert counting_proxy.calls == calls
    assert many() == 40  # within the TTL: no call at all
    assert counting_proxy.calls == calls


def test_cache_ttl_zero_refetches(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS", "0")
    arn, _ = secrets_factory.secret(f"{unique}/x")
    counting_proxy.reset_counts()
    get_secret_value(arn)
    get_secret_value(arn)
    assert counting_proxy.total() == 2


def test_all_failures_named_and_user_code_not_run(secrets_factory: Any, unique: str) -> None:
    arn, _ = secrets_factory.secret(f"{unique}/db", {"user": "u", "password": new_value()})
    ran = []

    @task(
        secret_requests=[
            aws_secret(_partial(f"{unique}/missing-one")),
            aws_secret(arn, json_key="passwd"),
            aws_secret(f"arn:aws:ssm:us-east-1:123456789012:parameter/{unique}/nope"),
        ]
    )
    def t() -> int:
        ran.append(1)
        return 1

    with pytest.raises(SecretResolutionError) as e:
        t()
    assert not ran
    kinds = {type(x) for x in e.value.errors}
    assert kinds == {SecretNotFoundError, JsonKeyNotFoundError}
    msg = str(e.value)
    assert f"{unique}/missing-one" in msg and "'passwd'" in msg and f"{unique}/nope" in msg
    assert "no match at the top level (there: an object with 2 keys)" in msg and "'user'" not in msg


def test_version_stage_and_id(secrets_factory: Any, unique: str) -> None:
    arn, old = secrets_factory.secret(f"{unique}/rotating")
    client = secrets_factory.client("secretsmanager")
    new = new_value()
    vid = client.put_secret_value(SecretId=arn, SecretString=new)["VersionId"]
    assert get_secret_value(arn) == new
    assert get_secret_value(aws_secret(arn, version_stage="AWSPREVIOUS")) == old
    assert get_secret_value(aws_secret(arn, version_id=vid)) == new


def test_binary_secret_file_rb_and_env_error(secrets_factory: Any, unique: str) -> None:
    blob = os.urandom(64) + b"\x00\xff"
    arn, _ = secrets_factory.secret(f"{unique}/blob", blob)
    FILE = aws_secret(arn, mount_requirement=Secret.MountType.FILE)
    ANYB = aws_secret(arn)
    got: dict[str, bytes] = {}

    @task(secret_requests=[FILE])
    def read_file() -> int:
        ctx = current_context()
        got["file"] = Path(ctx.secrets.get_secrets_file(FILE.group, FILE.key)).read_bytes()
        return 1

    @task(secret_requests=[ANYB])
    def read_mem() -> int:
        got["mem"] = current_context().secrets.get(ANYB.group, ANYB.key, encode_mode="rb")
        return 1

    @task(secret_requests=[aws_secret(arn, mount_requirement=Secret.MountType.ENV_VAR)])
    def env() -> int:
        return 1

    read_file()
    read_mem()
    assert got["file"] == blob and got["mem"] == blob.strip()
    with pytest.raises(SecretResolutionError) as e:
        env()
    assert isinstance(e.value.errors[0], BinaryToEnvVarError)


def test_case_collisions_are_errors(secrets_factory: Any, unique: str) -> None:
    a, _ = secrets_factory.secret(f"{unique}/Token")
    b, _ = secrets_factory.secret(f"{unique}/token")

    @task(secret_requests=[aws_secret(_partial(f"{unique}/Token")), aws_secret(_partial(f"{unique}/token"))])
    def t() -> int:
        return 1

    with pytest.raises(SecretResolutionError) as e:
        t()
    assert any(isinstance(x, MountCollisionError) for x in e.value.errors)
    assert "collides with" in str(e.value)
    # The fix says how flytekit names them (the Flyte 2 adapter says its own, tests/test_flyte2_units.py).
    assert "flytekit upper-cases environment variable names" in str(e.value)
    assert "another env_var" in str(e.value)


def test_value_already_present_wins_without_a_call(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    arn, _ = secrets_factory.secret(f"{unique}/present")
    req = aws_secret(arn, mount_requirement=Secret.MountType.ENV_VAR)
    preset = new_value()
    name = "_FSEC_" + "_".join(p.upper() for p in (req.group, req.key))
    monkeypatch.setenv(name, preset)

    @task(secret_requests=[req])
    def t() -> bool:
        return current_context().secrets.get(req.group, req.key) == preset

    counting_proxy.reset_counts()
    assert t()
    assert counting_proxy.total() == 0
    assert os.environ[name] == preset  # left as it was


def test_local_run_never_reads_a_webhook_file_and_applies_the_json_key_to_aws(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Locally no webhook serves anything: a file left under the webhook directory never wins over AWS (issue
    21, item 8; the pod's webhook mode, where the JSON key is applied to the webhook's file, is in
    tests/test_webhook_files.py and tests/test_flyte_commands.py)."""
    pw = new_value()
    db_arn, _ = secrets_factory.secret(f"{unique}/web", {"password": pw})
    group, key = split_arn(db_arn)
    d = tmp_path / "flyte-secrets" / group.lower()
    (d / unique.lower()).mkdir(parents=True)
    (d / key.lower()).write_text(json.dumps({"password": new_value("stale")}))
    monkeypatch.setenv("FLYTE_AWS_SECRETS_WEBHOOK_DIR", str(tmp_path / "flyte-secrets"))
    req = aws_secret(db_arn, json_key="password")

    @task(secret_requests=[req])
    def t() -> bool:
        return current_context().secrets.get(req.group, req.key) == pw

    counting_proxy.reset_counts()
    assert t()
    assert counting_proxy.calls == {"GetSecretValue": 1}, counting_proxy.calls


def test_non_aws_groups_behave_as_without_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_FSEC_MYGROUP_MYKEY", "plain")

    @task(secret_requests=[Secret(group="mygroup", key="mykey")])
    def t() -> str:
        return str(current_context().secrets.get("mygroup", "mykey"))

    assert t() == "plain"

    @task(secret_requests=[Secret(group="othergroup", key="k")])
    def missing() -> str:
        return str(current_context().secrets.get("othergroup", "k"))

    with pytest.raises(ValueError, match="Unable to find secret"):
        missing()


def test_ssm_parameters_batched(secrets_factory: Any, counting_proxy: Any, unique: str) -> None:
    arns = [secrets_factory.parameter(f"/{unique}/p{i}") for i in range(12)]
    flat = secrets_factory.parameter(f"{unique}-flat", secure=False)
    reqs = [aws_secret(a) for a in arns + [flat]]

    @task(secret_requests=reqs)
    def t() -> int:
        ctx = current_context()
        return len({ctx.secrets.get(r.group, r.key) for r in reqs})

    counting_proxy.reset_counts()
    assert t() == 13
    assert counting_proxy.calls == {"GetParameters": 2}


def test_workflow_of_tasks(secrets_factory: Any, unique: str) -> None:
    arn, v = secrets_factory.secret(f"{unique}/wf")
    req = aws_secret(arn)

    @task(secret_requests=[req])
    def a() -> int:
        return len(current_context().secrets.get(req.group, req.key))

    @workflow
    def wf() -> int:
        return a()

    assert wf() == len(v)
