"""Flyte 2 in the pod: ``a0`` run as a pod runs it, from the serialized task spec, and what that spec carries.

Shares the tasks and fixtures of tests/test_flyte2.py; marked ``flyte2_compat`` (see tests/test_flyte2_versions.py).
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

from tests.test_flyte2 import REGION_GROUP, _bin, _sha, _ssm_value, make_world  # noqa: E402

pytestmark = pytest.mark.flyte2_compat


@pytest.fixture
def world(tmp_path: Path, secrets_factory: Any, unique: str, aws_env: dict[str, str]) -> dict[str, Any]:
    return make_world(tmp_path, secrets_factory, unique, aws_env)


SPEC = """
import json, sys, pathlib
from google.protobuf.json_format import MessageToDict
from flyte.models import ActionID, SerializationContext
from flyte._internal.runtime.convert import Inputs
from flyte._internal.runtime.task_serde import translate_task_to_wire
from flyte._internal.runtime.taskrunner import replace_task_cli
import tasks2
ctx = SerializationContext(version="v1", project="p", domain="d", org="o", root_dir=pathlib.Path.cwd())
spec = translate_task_to_wire(getattr(tasks2, sys.argv[2]), ctx)
action = ActionID(name="a0", run_name="r1", project="p", domain="d", org="o")
args = replace_task_cli(list(spec.task_template.container.args), Inputs.empty(), pathlib.Path(sys.argv[1]), action)
print(json.dumps({"args": args, "security": MessageToDict(spec.task_template.security_context),
                  "env": MessageToDict(spec.task_template.container).get("env", []),
                  "config": dict(spec.task_template.config)}))
"""


def _spec(world: dict[str, Any], task: str, out: Path) -> dict[str, Any]:
    env = dict(world["env"], PYTHONPATH=f"{world['dir']}{os.pathsep}{world['env']['PYTHONPATH']}")
    p = subprocess.run(
        [sys.executable, "-c", SPEC, str(out), task],
        cwd=world["dir"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def _pod(world: dict[str, Any], task: str, out: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``a0`` as a pod runs it: the serialized spec's container args, the execution's env vars. A clustered
    worker runs without a controller (no control plane here); the task runner path is the same."""
    out.mkdir()
    args = _spec(world, task, out)["args"]
    env = dict(world["env"], FLYTE_CLUSTERED_WORKER="1", _U_ORG_NAME="o", **extra)
    env["FLYTE_INTERNAL_EXECUTION_PROJECT"], env["FLYTE_INTERNAL_EXECUTION_DOMAIN"] = "p", "d"
    return subprocess.run(
        [_bin(args[0]), *args[1:]], cwd=world["dir"], env=env, capture_output=True, text=True, timeout=240
    )


def test_pod_a0_resolves_from_the_serialized_spec_before_user_code(
    world: dict[str, Any], tmp_path: Path
) -> None:
    p = _pod(world, "main", tmp_path / "ok", T_RESULT=str(tmp_path / "result.json"))
    assert (tmp_path / "ok" / "outputs.pb").exists(), (p.stdout + p.stderr)[-3000:]
    assert not (tmp_path / "ok" / "error.pb").exists()
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["env"], result["file"], result["param"]) == (
        _sha(world["a"]),
        _sha(world["b"]),
        _sha(_ssm_value(world)),
    )
    assert not Path(result["dir"]).exists()
    for v in (world["a"], world["b"]):
        assert (
            v not in p.stdout + p.stderr and v.encode() not in (tmp_path / "ok" / "outputs.pb").read_bytes()
        )
    (world["dir"] / "marker").unlink()

    missing = [REGION_GROUP + "f2-pod-nope-AAAAAA", REGION_GROUP + "f2-pod-gone-BBBBBB"]
    q = _pod(world, "main", tmp_path / "bad", T_ARN_A=missing[0], T_ARN_B=missing[1])
    error = (tmp_path / "bad" / "error.pb").read_bytes().decode("utf-8", "replace")
    assert all(arn in error for arn in missing), error[-2000:]
    assert "AwsSecrets" in error
    from flyteidl2.core import execution_pb2

    doc = execution_pb2.ErrorDocument.FromString((tmp_path / "bad" / "error.pb").read_bytes())
    # A secret that does not exist fails every attempt alike: Flyte must not retry it.
    assert doc.error.kind == execution_pb2.ContainerError.NON_RECOVERABLE, doc.error
    assert doc.error.origin == execution_pb2.ExecutionError.USER, doc.error
    assert not (world["dir"] / "marker").exists(), "user code ran in the pod although its secrets failed"
    assert not (tmp_path / "bad" / "outputs.pb").exists(), q.stdout[-1000:]


def test_spec_records_the_requests_as_written_and_keeps_them_from_the_webhook(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """In the default ``plugin`` cluster mode no AWS request reaches the security context (a webhook would act
    on it); the template's config records each as written (tests/test_flyte2_cluster.py: both modes)."""
    spec = _spec(world, "main", tmp_path)
    assert spec["security"].get("secrets", []) == []
    record = {r["key"]: r for r in json.loads(spec["config"]["awssecrets.requests"])}
    a_group, a_key = world["arn_a"].split(":secret:", 1)
    assert record[a_key] == {
        "group": a_group + ":secret:",
        "key": a_key,
        "as_env_var": "DB_PASSWORD",
        "mount": False,
        "served_by": "pod",
    }
    b_key = world["arn_b"].split(":secret:", 1)[1] + ":token"
    assert record[b_key]["mount"] is True and record[b_key]["as_env_var"] is None
    assert len(record) == 3 and spec["args"][:3] == ["flyte-awssecrets-a0", "--cluster-mode", "plugin"]
