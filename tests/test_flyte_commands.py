"""The plugin through flytekit's own commands, as users and pods run them:

* ``pyflyte run`` of the example workflow (local execution);
* ``pyflyte serialize`` of the examples, and the task spec it writes (what the cluster would see);
* ``pyflyte-execute`` run with the exact arguments of that spec, inputs and output prefix on local paths.

The captured stdout/stderr of every run, and the outputs it writes, are checked for the secret values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, remember
from tests.support.image import fake_image
from tests.support.pod import run_pod, serialize_tasks
from tests.support.shm import leftover_mounts

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.compat


def _env(aws_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "_FSEC_"))}
    env.update(aws_env)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "400"  # rich wraps error text at the terminal width
    return env


@pytest.fixture
def demo_secrets(
    aws_env: dict[str, str], unique: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, str]]:
    for k, v in aws_env.items():
        monkeypatch.setenv(k, v)
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from demo import create_demo_secrets
    finally:
        sys.path.pop(0)
    prefix = f"t{unique}"
    values = create_demo_secrets(prefix)
    for v in values.values():
        remember(v)
    return prefix, values


def _assert_no_values(values: dict[str, str], *texts: str | bytes) -> None:
    for t in texts:
        s = t.decode("utf-8", "replace") if isinstance(t, bytes) else t
        for name, v in values.items():
            leaked = v in s  # computed apart, so a failure message cannot show the value
            assert not leaked, f"value of {name} leaked"


def test_pyflyte_run_local(aws_env: dict[str, str], demo_secrets: tuple[str, dict[str, str]]) -> None:
    prefix, values = demo_secrets
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", "examples/secrets_demo.py", "demo_wf"],
        cwd=ROOT,
        env=_env(aws_env, DEMO_SECRET_PREFIX=prefix),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    from examples.demo import fingerprint

    for v in values.values():
        assert fingerprint(v) in p.stdout
    assert "mode=0o600" in p.stdout
    _assert_no_values(values, p.stdout, p.stderr)


def test_pyflyte_run_reports_every_failing_reference(aws_env: dict[str, str], unique: str) -> None:
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", "examples/secrets_demo.py", "demo_wf"],
        cwd=ROOT,
        env=_env(aws_env, DEMO_SECRET_PREFIX=f"absent{unique}"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode != 0
    out = " ".join((p.stdout + p.stderr).split())  # rich wraps long lines
    assert "4 secret requests could not be resolved; user code was not run" in out
    for name in ("api-key", "db:password", "tls-cert", "feature-flag"):
        assert f"absent{unique}/{name}" in out


def _serialize(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    return serialize_tasks("tests.modes", folder, env, "*.call_api_*.pb")


def test_serialized_spec_keeps_aws_requests_from_the_k8s_webhook(
    aws_env: dict[str, str], tmp_path: Path
) -> None:
    specs = _serialize(tmp_path / "plugin", _env(aws_env))
    template = specs["examples.secrets_demo.call_api"].template
    assert list(template.security_context.secrets) == []
    record = json.loads(template.config["awssecrets.requests"])
    assert [r["served_by"] for r in record] == ["pod"] * 4
    assert template.config["awssecrets.mode"] == "plugin"

    specs = _serialize(tmp_path / "webhook", _env(aws_env, FLYTE_AWS_SECRETS_CLUSTER_MODE="webhook"))
    template = specs["examples.secrets_demo.call_api"].template
    kept = sorted((s.group, s.key, s.mount_requirement) for s in template.security_context.secrets)
    # Only what the AWS webhook serves as written stays, unchanged: the JSON-key ENV_VAR request and SSM
    # are resolved in the pod, and the record says so.
    from flyteidl.core import security_pb2

    assert kept == [
        ("arn:aws:secretsmanager:eu-west-1:123456789012:secret:", "demo/tls-cert", security_pb2.Secret.FILE),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:", "demo/api-key", security_pb2.Secret.ANY),
    ]
    record = {r["key"]: r["served_by"] for r in json.loads(template.config["awssecrets.requests"])}
    assert record == {
        "demo/api-key": "webhook",
        "demo/db:password": "pod",
        "demo/tls-cert": "webhook",
        "demo/feature-flag": "pod",
    }


def test_pod_runs_pyflyte_execute_from_the_spec(
    aws_env: dict[str, str], demo_secrets: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    prefix, values = demo_secrets
    env = _env(aws_env, DEMO_SECRET_PREFIX=prefix)
    spec = _serialize(tmp_path / "spec", env)["examples.secrets_demo.call_api"]
    p = run_pod(spec, tmp_path / "pod", env)
    assert p.returncode == 0, p.stderr[-3000:]
    out_dir = tmp_path / "pod" / "out"
    assert not (out_dir / "error.pb").exists(), (out_dir / "error.pb").read_bytes()[:2000]
    from flyteidl.core import literals_pb2

    outputs = literals_pb2.LiteralMap()
    outputs.ParseFromString((out_dir / "outputs.pb").read_bytes())
    text = outputs.literals["o0"].scalar.primitive.string_value
    from examples.demo import fingerprint

    for v in values.values():
        assert fingerprint(v) in text
    _assert_no_values(values, p.stdout, p.stderr, (out_dir / "outputs.pb").read_bytes())
    # Nothing was left behind on the memory filesystem by this pod (nor by any process that has ended).
    assert not leftover_mounts()


def test_pod_failure_is_a_user_error_naming_the_references(
    aws_env: dict[str, str], tmp_path: Path, unique: str
) -> None:
    env = _env(aws_env, DEMO_SECRET_PREFIX=f"gone{unique}")
    spec = _serialize(tmp_path / "spec", env)["examples.secrets_demo.call_api"]
    run_pod(spec, tmp_path / "pod", env)
    from flyteidl.core import errors_pb2, execution_pb2

    doc = errors_pb2.ErrorDocument()
    doc.ParseFromString((tmp_path / "pod" / "out" / "error.pb").read_bytes())
    assert doc.error.kind == errors_pb2.ContainerError.NON_RECOVERABLE
    assert doc.error.origin == execution_pb2.ExecutionError.USER
    assert f"gone{unique}/api-key" in doc.error.message and "not found" in doc.error.message
    assert not (tmp_path / "pod" / "out" / "outputs.pb").exists()


def test_pod_in_webhook_mode_reads_the_mounted_files(
    aws_env: dict[str, str], demo_secrets: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """A cluster whose secret webhook is the AWS type: it mounts every request left in the spec (whole
    secrets) under <dir>/<lower(group)>/<lower(key)>; the plugin reads them and calls AWS only for what the
    webhook does not serve as written (the JSON-key ENV_VAR request, SSM)."""
    import boto3

    from tests.support.proxy import CountingProxy

    prefix, values = demo_secrets
    proxy = CountingProxy(aws_env["AWS_ENDPOINT_URL"]).start()
    try:
        env = _env(aws_env, DEMO_SECRET_PREFIX=prefix)
        # The mode is registration's (the pod's command line says it), not the pod's environment.
        spec = _serialize(tmp_path / "spec", {**env, "FLYTE_AWS_SECRETS_CLUSTER_MODE": "webhook"})[
            "examples.secrets_demo.call_api"
        ]
        # Play the webhook: mount exactly what the spec hands it.
        mounted = tmp_path / "etc-flyte-secrets"
        for s in spec.template.security_context.secrets:
            region = s.group.split(":")[3]
            sm = boto3.client("secretsmanager", region_name=region, endpoint_url=aws_env["AWS_ENDPOINT_URL"])
            value = sm.get_secret_value(SecretId=s.group + s.key)["SecretString"]
            path = mounted / s.group.lower() / s.key.lower()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value)
        env.update(AWS_ENDPOINT_URL=proxy.url)
        # Where the webhook mounts is the image's setting: a pod never takes it from its environment.
        python = fake_image(tmp_path / "image", f"webhook_dir: {json.dumps(str(mounted))}\n")
        p = run_pod(spec, tmp_path / "pod", env, python=python)
        assert p.returncode == 0, p.stderr[-3000:]
        from flyteidl.core import literals_pb2

        outputs = literals_pb2.LiteralMap()
        outputs.ParseFromString((tmp_path / "pod" / "out" / "outputs.pb").read_bytes())
        text = outputs.literals["o0"].scalar.primitive.string_value
        from examples.demo import fingerprint

        for v in values.values():
            assert fingerprint(v) in text  # the db password came out of the mounted JSON by its key
        assert dict(proxy.calls) == {"GetSecretValue": 1, "GetParameters": 1}
        _assert_no_values(values, p.stdout, p.stderr)
    finally:
        proxy.stop()
