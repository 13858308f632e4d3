"""Flyte 2 cluster modes: what the serialized spec carries, and what the pod (``a0`` from that spec) does.

The spec comes from flyte's own ``translate_task_to_wire`` on real ``TaskEnvironment`` tasks; the pod runs
the spec's container args as a pod runs them, against moto. Marked ``flyte2_compat``
(see tests/test_flyte2_versions.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flyte")

from tests.conftest import new_value  # noqa: E402
from tests.test_flyte2 import REGION_GROUP, _bin, _sha, make_world  # noqa: E402

pytestmark = pytest.mark.flyte2_compat

TASKS = """
import hashlib, json, os, pathlib
import flyte
from flyte.extras import ContainerTask
from flytekitplugins_awssecrets.flyte2 import aws_secret

def sha(b):
    return hashlib.sha256(b if isinstance(b, bytes) else b.encode()).hexdigest()[:16]

MARKER = pathlib.Path(os.environ["T_MARKER"])
SERVED = os.environ["T_SERVED"]  # a plain Secrets Manager ARN, requested as a file: the AWS webhook's form
env = flyte.TaskEnvironment(
    "modes",
    secrets=[
        aws_secret(SERVED),
        aws_secret(os.environ["T_ARN_A"], as_env_var="DB_PASSWORD"),
        aws_secret(os.environ["T_ARN_B"], json_key="token"),
        flyte.Secret(key="k8s-secret", group="k8s-group", as_env_var="K8S"),  # not ours: left as written
    ],
)
plain = flyte.TaskEnvironment("modes_plain", secrets=[flyte.Secret(key="only-k8s", as_env_var="ONLY_K8S")])


@env.task
async def main() -> str:
    MARKER.write_text("ran")
    d = pathlib.Path(os.environ["FLYTE_SECRETS_DEFAULT_DIR"])
    g, k = SERVED.split(":secret:")
    return json.dumps({"served": sha((d / (g + ":secret:").lower() / k.lower()).read_bytes()),
                       "env": sha(os.environ["DB_PASSWORD"])})


@plain.task
async def nothing() -> int:
    return 1


boxed = ContainerTask(name="boxed", image="alpine", command=["cat", "/etc/flyte/secrets/x"],
                      secrets=[aws_secret(os.environ["T_ARN_A"], as_env_var="DB_PASSWORD")])
boxes = flyte.TaskEnvironment.from_task("boxes", boxed)
"""

SPEC = """
import json, sys, pathlib
from google.protobuf.json_format import MessageToDict
from flyte.models import ActionID, SerializationContext
from flyte._internal.runtime.convert import Inputs
from flyte._internal.runtime.task_serde import translate_task_to_wire
from flyte._internal.runtime.taskrunner import replace_task_cli
import modes
ctx = SerializationContext(version="v1", project="p", domain="d", org="o", root_dir=pathlib.Path.cwd())
try:
    spec = translate_task_to_wire(getattr(modes, sys.argv[2]), ctx)
except Exception as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
    raise SystemExit(0)
tt = spec.task_template
args = list(tt.container.args)
if "a0" in args:
    action = ActionID(name="a0", run_name="r1", project="p", domain="d", org="o")
    args = replace_task_cli(args, Inputs.empty(), pathlib.Path(sys.argv[1]), action)
print(json.dumps({"args": args, "security": MessageToDict(tt.security_context).get("secrets", []),
                  "config": dict(tt.config)}))
"""


@pytest.fixture
def world(tmp_path: Path, secrets_factory: Any, unique: str, aws_env: dict[str, str]) -> dict[str, Any]:
    w = make_world(tmp_path, secrets_factory, unique, aws_env)
    served = REGION_GROUP + f"f2-served-{unique}-AbC123"  # not in AWS: only the webhook's file has it
    w["served"], w["served_value"] = served, new_value()
    w["env"]["T_SERVED"] = served
    (tmp_path / "modes.py").write_text(TASKS)
    hook = tmp_path / "webhook"
    g, k = served.split(":secret:")
    f = hook / (g + ":secret:").lower() / k.lower()
    f.parent.mkdir(parents=True)
    f.write_text(w["served_value"])
    w["webhook"] = hook
    return w


def _spec(world: dict[str, Any], task: str, out: Path, **extra: str) -> tuple[dict[str, Any], str]:
    out.mkdir(exist_ok=True)
    env = dict(world["env"], PYTHONPATH=f"{world['dir']}{os.pathsep}{world['env']['PYTHONPATH']}", **extra)
    p = subprocess.run(
        [sys.executable, "-c", SPEC, str(out), task],
        cwd=world["dir"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return dict(json.loads(p.stdout.strip().splitlines()[-1])), p.stderr


#: UntrustedSettingError's words (flyte records our error as code ``AwsSecrets`` with its message only).
UNTRUSTED = "in a pod this setting is taken only from the image's settings file"


def _pod(
    world: dict[str, Any], args: list[str], python: Path | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the spec's container args as a pod does; ``python``: with an image's interpreter (its settings)."""
    env = dict(world["env"], FLYTE_CLUSTERED_WORKER="1", _U_ORG_NAME="o", **extra)
    env["FLYTE_INTERNAL_EXECUTION_PROJECT"], env["FLYTE_INTERNAL_EXECUTION_DOMAIN"] = "p", "d"
    command = [_bin(args[0]), *args[1:]]
    if python is not None:
        command.insert(0, str(python))
    return subprocess.run(command, cwd=world["dir"], env=env, capture_output=True, text=True, timeout=240)


def _image(tmp: Path, webhook: Path) -> Path:
    """An image whose settings file says where the cluster's webhook mounts (a pod takes it only from there)."""
    from tests.support.image import fake_image

    return fake_image(tmp / "image", f"webhook_dir: {json.dumps(str(webhook))}\n")


def _keys(security: list[dict[str, Any]]) -> list[str]:
    return sorted(s["key"] for s in security)


def test_plugin_mode_keeps_aws_requests_out_of_the_spec_and_says_so(
    world: dict[str, Any], tmp_path: Path
) -> None:
    spec, err = _spec(world, "main", tmp_path / "out")
    # Only the request that is not ours reaches the security context (a webhook never sees an ARN).
    assert _keys(spec["security"]) == ["k8s-secret"]
    assert spec["args"][:4] == ["flyte-awssecrets-a0", "--cluster-mode", "plugin", "a0"]
    record = json.loads(spec["config"]["awssecrets.requests"])
    assert spec["config"]["awssecrets.mode"] == "plugin"
    assert sorted(r["served_by"] for r in record) == ["pod", "pod", "pod"]
    # One warning naming every request it moved, and why.
    warning = " ".join(
        line for line in err.splitlines() if "ClusterModeWarning" in line or "cluster mode" in line
    )
    assert "cluster mode plugin" in warning, err[-2000:]
    for arn in (world["served"], world["arn_a"], world["arn_b"] + ":token"):
        assert arn in warning, (arn, warning)
    # A task without AWS requests is serialized as flyte writes it.
    untouched, err2 = _spec(world, "nothing", tmp_path / "out2")
    assert untouched["args"][0] == "a0" and "awssecrets.mode" not in untouched["config"]
    assert _keys(untouched["security"]) == ["only-k8s"] and "cluster mode" not in err2


def test_webhook_mode_keeps_what_the_aws_webhook_serves(world: dict[str, Any], tmp_path: Path) -> None:
    spec, err = _spec(world, "main", tmp_path / "out", FLYTE_AWS_SECRETS_CLUSTER_MODES='{"p/d": "webhook"}')
    served_key = world["served"].split(":secret:")[1]
    assert _keys(spec["security"]) == sorted(["k8s-secret", served_key])
    kept = next(s for s in spec["security"] if s["key"] == served_key)
    assert kept["mountRequirement"] == "FILE" and "envVar" not in kept
    assert spec["args"][:4] == ["flyte-awssecrets-a0", "--cluster-mode", "webhook", "a0"]
    assert "kept for the cluster's AWS webhook: " + world["served"] in err, err[-2000:]
    assert world["arn_a"] in err and "as_env_var=DB_PASSWORD" in err


def test_a_container_task_the_plugin_cannot_serve_fails_registration(
    world: dict[str, Any], tmp_path: Path
) -> None:
    spec, _ = _spec(world, "boxed", tmp_path / "out")
    assert spec["error"].startswith("UnservableRequestError"), spec
    assert world["arn_a"] in spec["error"] and "a0" in spec["error"]


def test_the_pod_takes_the_mode_from_its_command_line(world: dict[str, Any], tmp_path: Path) -> None:
    """Webhook mode: the webhook's file (under the image's webhook_dir) is used (its ARN is not in AWS).
    Plugin mode: the same file is not trusted (no request was handed to a webhook); the pod's env claiming
    webhook mode is refused before user code."""
    python = _image(tmp_path, world["webhook"])
    spec, _ = _spec(world, "main", tmp_path / "w", FLYTE_AWS_SECRETS_CLUSTER_MODES='{"p/d": "webhook"}')
    p = _pod(world, spec["args"], python=python)
    assert (tmp_path / "w" / "outputs.pb").exists(), (p.stdout + p.stderr)[-3000:]
    out = (tmp_path / "w" / "outputs.pb").read_bytes().decode("utf-8", "replace")
    assert _sha(world["served_value"]) in out and _sha(world["a"]) in out
    (world["dir"] / "marker").unlink()

    spec, _ = _spec(world, "main", tmp_path / "p")
    q = _pod(world, spec["args"], python=python)
    error = (tmp_path / "p" / "error.pb").read_bytes().decode("utf-8", "replace")
    assert world["served"] in error and "AwsSecrets" in error, (q.stdout + q.stderr)[-3000:]
    assert not (world["dir"] / "marker").exists(), "user code ran although a request failed"
    (tmp_path / "p" / "error.pb").unlink()
    q = _pod(world, spec["args"], python=python, FLYTE_AWS_SECRETS_CLUSTER_MODE="webhook")
    error = (tmp_path / "p" / "error.pb").read_bytes().decode("utf-8", "replace")
    assert "setting 'cluster_mode'" in error and UNTRUSTED in error, (q.stdout + q.stderr)[-3000:]
    assert not (world["dir"] / "marker").exists(), "user code ran with the env's cluster mode"


def test_a_launchers_env_cannot_point_a_webhook_pod_at_files_it_planted(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """An execution's envs are the launcher's: pointing webhook_dir at a directory it filled (input files) is
    refused before user code, through the registered command and a bare ``a0`` alike; the planted value never
    reaches the task."""
    attacker = tmp_path / "inputs"
    g, k = world["served"].split(":secret:")
    planted = new_value("planted")
    f = attacker / (g + ":secret:").lower() / k.lower()
    f.parent.mkdir(parents=True)
    f.write_text(planted)
    python = _image(tmp_path, world["webhook"])
    image_file = str(tmp_path / "image" / "etc" / "flyte" / "aws-secrets.yaml")
    for name in ("routed", "bare"):
        out = tmp_path / name
        spec, _ = _spec(world, "main", out, FLYTE_AWS_SECRETS_CLUSTER_MODES='{"p/d": "webhook"}')
        args = spec["args"] if name == "routed" else spec["args"][3:]
        assert args[0] == ("flyte-awssecrets-a0" if name == "routed" else "a0")
        p = _pod(world, args, python=python, FLYTE_AWS_SECRETS_WEBHOOK_DIR=str(attacker))
        assert (out / "error.pb").exists(), (name, (p.stdout + p.stderr)[-3000:])
        error = (out / "error.pb").read_bytes().decode("utf-8", "replace")
        assert "setting 'webhook_dir'" in error and UNTRUSTED in error, (p.stdout + p.stderr)[-3000:]
        assert image_file in error
        assert not (world["dir"] / "marker").exists(), f"user code ran ({name})"
        assert not (out / "outputs.pb").exists()
        leaked = planted in error + p.stdout + p.stderr
        assert not leaked, f"the planted value reached the pod ({name})"


def test_a_pod_where_the_plugin_is_off_refuses_before_the_task_runner(
    world: dict[str, Any], tmp_path: Path
) -> None:
    spec, _ = _spec(world, "main", tmp_path / "off")
    p = _pod(world, spec["args"], FLYTE_AWS_SECRETS_DISABLE="1")
    assert p.returncode != 0
    assert "PluginInactiveError" in p.stderr or "turned off" in p.stderr, p.stderr[-2000:]
    assert "FLYTE_AWS_SECRETS_DISABLE" in p.stderr
    assert not (world["dir"] / "marker").exists()
    assert not (tmp_path / "off" / "outputs.pb").exists()


def test_a_pod_refuses_a_hostile_env_weakening_a_protected_setting(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """``a0`` is a pod: a launcher's env var turning the leak guard off (or pointing at another endpoint) is
    refused before user code, as for flytekit's pods."""
    for i, hostile in enumerate(
        (
            {"FLYTE_AWS_SECRETS_LEAK_GUARD": "false"},
            {"AWS_ENDPOINT_URL_SECRETSMANAGER": "http://attacker.example:80"},
        )
    ):
        spec, _ = _spec(world, "main", tmp_path / f"h{i}")
        # The registered command (flyte-awssecrets-a0 ... a0 ...), and a bare a0 (a template not routed).
        args = spec["args"] if i == 0 else spec["args"][3:]
        assert args[0] == ("flyte-awssecrets-a0" if i == 0 else "a0")
        p = _pod(world, args, **hostile)
        assert (tmp_path / f"h{i}" / "error.pb").exists(), (p.returncode, (p.stdout + p.stderr)[-3000:])
        error = (tmp_path / f"h{i}" / "error.pb").read_bytes().decode("utf-8", "replace")
        assert "UntrustedSettingError" in error or "setting '" in error, (p.stdout + p.stderr)[-3000:]
        assert not (world["dir"] / "marker").exists(), "user code ran with a weakened setting"
