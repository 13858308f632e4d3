"""Flyte 2 (``flyte`` 2.x): the user's story through the real ``flyte`` CLI, ``flyte.run`` and the pod's ``a0``.

Each run is a subprocess against the moto server; tasks report fingerprints, never values. Tests marked
``flyte2_compat`` run again in a venv of the previous flyte minor (tests/test_flyte2_versions.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, fingerprint

flyte = pytest.importorskip("flyte")

pytestmark = pytest.mark.flyte2_compat

REGION_GROUP = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"


def _sha(value: str | bytes) -> str:
    b = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(b).hexdigest()[:16]


def _env(aws_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    env.update(aws_env)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    env["COLUMNS"] = "400"  # rich panels: no ARN wrapped across lines
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


TASKS = """
import asyncio, hashlib, json, os, pathlib
import flyte
from flytekitplugins_awssecrets.flyte2 import aws_secret

def sha(b):
    return hashlib.sha256(b if isinstance(b, bytes) else b.encode()).hexdigest()[:16]

MARKER = pathlib.Path(os.environ["T_MARKER"])
env = flyte.TaskEnvironment(
    "aws",
    secrets=[
        aws_secret(os.environ["T_ARN_A"], as_env_var="DB_PASSWORD"),
        aws_secret(os.environ["T_ARN_B"], json_key="token"),
        flyte.Secret(group=os.environ["T_PARAM_GROUP"], key=os.environ["T_PARAM_KEY"], as_env_var="PARAM"),
    ],
)
child_a = flyte.TaskEnvironment("child_a", secrets=[aws_secret(os.environ["T_ARN_A"], as_env_var="ONLY_A")])
child_b = flyte.TaskEnvironment("child_b", secrets=[aws_secret(os.environ["T_ARN_B"], as_env_var="ONLY_B")])
clash = flyte.TaskEnvironment("clash", secrets=[aws_secret(os.environ["T_ARN_B"], as_env_var="ONLY_A")])
plain = flyte.TaskEnvironment("plain", depends_on=[env, child_a, child_b, clash])


@env.task
async def main() -> str:
    MARKER.write_text("ran")
    db = os.environ["DB_PASSWORD"]
    d = pathlib.Path(os.environ["FLYTE_SECRETS_DEFAULT_DIR"])
    group, key = os.environ["T_FILE_PARTS"].split("|")
    f = d / group / key
    mode = oct(f.stat().st_mode & 0o777), oct(f.parent.parent.stat().st_mode & 0o777)
    out = json.dumps({"env": sha(db), "file": sha(f.read_bytes()),
                      "param": sha(os.environ["PARAM"]), "mode": mode, "dir": str(d)})
    if os.environ.get("T_RESULT"):
        pathlib.Path(os.environ["T_RESULT"]).write_text(out)
    return out


@child_a.task
async def a() -> str:
    first = os.environ["ONLY_A"]
    await asyncio.sleep(0.5)
    assert os.environ["ONLY_A"] == first
    return sha(first)


@child_b.task
async def b() -> str:
    first = os.environ["ONLY_B"]
    await asyncio.sleep(0.5)
    assert os.environ["ONLY_B"] == first
    return sha(first)


@clash.task
async def c() -> str:
    MARKER.write_text("clash ran")
    return "never"


@plain.task
async def siblings() -> str:
    before = "ONLY_A" in os.environ or "ONLY_B" in os.environ
    ra, rb = await asyncio.gather(a(), b())
    after = "ONLY_A" in os.environ or "ONLY_B" in os.environ
    return json.dumps({"a": ra, "b": rb, "parent_saw": [before, after]})


@plain.task
async def colliding() -> str:
    return "|".join(await asyncio.gather(a(), c()))


@plain.task
async def nothing() -> int:
    return 7
"""


class World(dict[str, Any]):
    """The test's secrets and paths; its repr (shown by pytest on a failure) holds no value."""

    def __repr__(self) -> str:
        return f"World(dir={self['dir']}, a={fingerprint(self['a'])}, b={fingerprint(self['b'])})"


@pytest.fixture
def world(tmp_path: Path, secrets_factory: Any, unique: str, aws_env: dict[str, str]) -> dict[str, Any]:
    arn_a, value_a = secrets_factory.secret(f"f2/{unique}/db")
    arn_b, value_b = secrets_factory.secret(f"f2/{unique}/api", {"token": "tok-" + unique * 2, "x": "y"})
    param_arn = secrets_factory.parameter(f"/f2/{unique}/param")
    group, key = param_arn.split(":parameter/", 1)
    (tmp_path / "tasks2.py").write_text(TASKS)
    ref_b = arn_b + ":token"
    g_b, k_b = ref_b.split(":secret:", 1)
    env = _env(
        aws_env,
        T_ARN_A=arn_a,
        T_ARN_B=arn_b,
        T_PARAM_GROUP=group + ":parameter/",
        T_PARAM_KEY=key,
        T_MARKER=str(tmp_path / "marker"),
        T_FILE_PARTS=f"{(g_b + ':secret:').lower()}|{k_b.lower()}",
    )
    return World(
        {
            "dir": tmp_path,
            "env": env,
            "a": value_a,
            "b": value_b["token"],
            "param_value_arn": param_arn,
            "arn_a": arn_a,
            "arn_b": arn_b,
            "factory": secrets_factory,
        }
    )


def _flyte_run(world: dict[str, Any], task: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(world["env"], **extra)
    return subprocess.run(
        [_bin("flyte"), "run", "--local", "tasks2.py", task],
        cwd=world["dir"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _python_run(
    world: dict[str, Any], task: str, init: bool = True, **extra: str
) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        f"""
        import flyte, json, sys
        import tasks2
        {"flyte.init()" if init else ""}
        try:
            r = flyte.run(tasks2.{task})
            print("RESULT=" + json.dumps(r.outputs()[0] if hasattr(r, "outputs") else str(r)))
        except Exception as e:
            print("ERROR=" + type(e).__name__ + ": " + str(e))
        print("FLYTEKIT=" + str("flytekit" in sys.modules))
        """
    )
    env = dict(world["env"], **extra)
    env["PYTHONPATH"] = f"{world['dir']}{os.pathsep}{env['PYTHONPATH']}"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=world["dir"], env=env, capture_output=True, text=True, timeout=240
    )


def _ssm_value(world: dict[str, Any]) -> str:
    name = "/" + world["param_value_arn"].split(":parameter/", 1)[1]
    c = world["factory"].client("ssm")
    return str(c.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])


def _leftovers() -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob("flyte-aws-secrets-*") if any(p.iterdir()))


def test_flyte_run_local_resolves_env_file_and_ssm_then_cleans_up(world: dict[str, Any]) -> None:
    before = _leftovers()
    p = _flyte_run(world, "main")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert (world["dir"] / "marker").read_text() == "ran"
    assert _sha(world["a"]) in out and _sha(world["b"]) in out and _sha(_ssm_value(world)) in out
    assert "'0o600'" in out.replace('"', "'") and "'0o700'" in out.replace('"', "'")
    for v in (world["a"], world["b"]):
        assert v not in out
    assert _leftovers() == before


def test_flyte_run_from_python_with_and_without_init(world: dict[str, Any]) -> None:
    for init in (True, False):
        p = _python_run(world, "main", init=init)
        assert "RESULT=" in p.stdout, (init, p.stdout[-2000:], p.stderr[-3000:])
        result = json.loads(json.loads(p.stdout.split("RESULT=", 1)[1].splitlines()[0]))
        assert result["env"] == _sha(world["a"])
        assert result["file"] == _sha(world["b"])
        assert result["param"] == _sha(_ssm_value(world))
        assert result["mode"] == ["0o600", "0o700"]
        assert not Path(result["dir"]).exists(), "the secrets directory outlived the task"
        assert "FLYTEKIT=False" in p.stdout, "a Flyte 2 run imported flytekit"


def test_concurrent_siblings_each_get_their_own_and_the_parent_none(world: dict[str, Any]) -> None:
    p = _python_run(world, "siblings")
    assert "RESULT=" in p.stdout, p.stdout[-2000:] + p.stderr[-3000:]
    result = json.loads(json.loads(p.stdout.split("RESULT=", 1)[1].splitlines()[0]))
    assert result == {
        "a": _sha(world["a"]),
        "b": _sha(json.dumps({"token": world["b"], "x": "y"})),
        "parent_saw": [False, False],
    }


def test_two_running_tasks_wanting_different_values_under_one_name_fail_before_code(
    world: dict[str, Any],
) -> None:
    p = _python_run(world, "colliding")
    out = p.stdout + p.stderr
    assert "ERROR=" in p.stdout, out[-3000:]
    assert "ONLY_A" in out and world["arn_a"] in out and world["arn_b"] in out
    assert not (world["dir"] / "marker").exists(), "the colliding task's code ran"
    assert world["a"] not in out


def test_missing_arns_fail_before_user_code_naming_every_reference(world: dict[str, Any]) -> None:
    missing = [REGION_GROUP + "f2-nope-AAAAAA", REGION_GROUP + "f2-gone-BBBBBB"]
    p = _flyte_run(world, "main", T_ARN_A=missing[0], T_ARN_B=missing[1])
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert not (world["dir"] / "marker").exists(), "user code ran although its secrets failed"
    for arn in missing:
        assert arn in out, f"{arn} not shown as written:\n{out[-3000:]}"
    assert "\U0001f92b" not in out  # rich's :secret: emoji
    q = _python_run(world, "main", T_ARN_A=missing[0], T_ARN_B=missing[1])
    err = q.stdout.split("ERROR=", 1)[1]
    assert all(arn in err for arn in missing), err[-2000:]


def test_no_aws_secret_and_disabled_plugin(world: dict[str, Any]) -> None:
    p = _flyte_run(world, "nothing")
    assert p.returncode == 0, (p.stdout + p.stderr)[-2000:]
    # Disabled: nothing is fetched, so the task's own os.environ read fails in user code.
    q = _python_run(world, "main", FLYTE_AWS_SECRETS_DISABLE="1")
    assert "ERROR=" in q.stdout and "'DB_PASSWORD'" in q.stdout.split("ERROR=", 1)[1], q.stdout[-2000:]
    assert (world["dir"] / "marker").read_text() == "ran"


def test_output_leak_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    (world["dir"] / "leaky.py").write_text(
        textwrap.dedent(
            """
            import os
            import flyte
            from flytekitplugins_awssecrets.flyte2 import aws_secret
            env = flyte.TaskEnvironment("leaky", secrets=[aws_secret(os.environ["T_ARN_A"], as_env_var="V")])

            @env.task
            async def leak() -> str:
                return "value:" + os.environ["V"]

            @env.task
            async def shout() -> str:
                import logging
                logging.getLogger("user").warning("the value is %s", os.environ["V"])
                raise ValueError("cannot use " + os.environ["V"])
            """
        )
    )
    p = subprocess.run(
        [_bin("flyte"), "run", "--local", "leaky.py", "leak"],
        cwd=world["dir"],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "SecretLeakError" in out or "leak" in out.lower(), out[-2000:]
    assert world["a"] not in out, fingerprint(world["a"])
    q = subprocess.run(
        [_bin("flyte"), "run", "--local", "leaky.py", "shout"],
        cwd=world["dir"],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = q.stdout + q.stderr
    assert q.returncode != 0 and "cannot use" in out and "ValueError" in out, out[-2000:]
    assert world["a"] not in out, "the value reached the log or the error: " + fingerprint(world["a"])


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
                  "env": MessageToDict(spec.task_template.container).get("env", [])}))
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
    assert not (world["dir"] / "marker").exists(), "user code ran in the pod although its secrets failed"
    assert not (tmp_path / "bad" / "outputs.pb").exists(), q.stdout[-1000:]


def test_spec_carries_the_requests_as_flyte_writes_them(world: dict[str, Any], tmp_path: Path) -> None:
    sc = _spec(world, "main", tmp_path)["security"]["secrets"]
    by_key = {s["key"]: s for s in sc}
    a_group, a_key = world["arn_a"].split(":secret:", 1)
    assert by_key[a_key] == {
        "group": a_group + ":secret:",
        "key": a_key,
        "mountRequirement": "ENV_VAR",
        "envVar": "DB_PASSWORD",
    }
    b_key = world["arn_b"].split(":secret:", 1)[1] + ":token"
    assert by_key[b_key]["mountRequirement"] == "FILE" and "envVar" not in by_key[b_key]
    assert len(sc) == 3


def test_import_flyte_and_init_load_the_adapter_without_boto3() -> None:
    code = textwrap.dedent(
        """
        import sys
        import flyte
        heavy = [m for m in ("boto3", "botocore", "flytekit") if m in sys.modules]
        assert not heavy, heavy
        from flytekitplugins_awssecrets.flyte2.hooks import installed
        assert not installed()
        flyte.init()
        assert installed(), "flyte.init() did not load the flyte.plugins.types entry point"
        heavy = [m for m in ("boto3", "botocore", "flytekit") if m in sys.modules]
        assert not heavy, heavy
        print("OK")
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.stdout.strip().endswith("OK"), p.stdout[-1000:] + p.stderr[-2000:]


def test_unknown_flyte_version_turns_the_adapter_off_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flytekitplugins_awssecrets.flyte2 import hooks

    monkeypatch.setattr(hooks, "_version", lambda: (2, 99))
    monkeypatch.setattr(hooks, "_warned", False)
    with pytest.warns(hooks.Flyte2AdapterDisabledWarning, match="2.99") as record:
        assert hooks.install() is False
        assert hooks.install() is False
    assert len(record) == 1


def test_requests_the_plugin_cannot_serve_are_typed_errors_naming_them() -> None:
    from flytekitplugins_awssecrets.errors import SecretResolutionError
    from flytekitplugins_awssecrets.flyte2 import aws_secret
    from flytekitplugins_awssecrets.flyte2.requests import aws_requests

    good = aws_secret(REGION_GROUP + "ok-AAAAAA", as_env_var="OK")
    moved = aws_secret(REGION_GROUP + "moved-AAAAAA")
    moved.mount = Path("/somewhere/else")  # type: ignore[assignment]
    bad_key = flyte.Secret(group=REGION_GROUP, key="bad name!", as_env_var="BAD")
    other = flyte.Secret(key="plain-secret")  # not ours: left to Flyte
    with pytest.raises(SecretResolutionError) as e:
        aws_requests([good, moved, bad_key, other])
    text = str(e.value)
    assert "/somewhere/else" in text and "bad name!" in text and "ok-AAAAAA" not in text
    assert [r.as_env_var for r in aws_requests([good, other])] == ["OK"]


def test_alias_json_key_and_all_or_nothing_in_process(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter's own steps, in this process: an alias with a JSON key, then a task whose second request
    collides with a running task's variable: nothing of it is placed, the running task keeps its value."""
    from flytekitplugins_awssecrets.errors import SecretResolutionError
    from flytekitplugins_awssecrets.flyte2 import aws_secret
    from flytekitplugins_awssecrets.flyte2.requests import aws_requests
    from flytekitplugins_awssecrets.flyte2.run import prepare
    from flytekitplugins_awssecrets.resolver import reset_process_state

    arn, value = secrets_factory.secret(f"f2/{unique}/alias", {"k": "kv-" + unique * 2})
    other, _ = secrets_factory.secret(f"f2/{unique}/other")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_ALIASES", json.dumps({"Aliased": arn}))
    reset_process_state()
    for name in ("ALIASED_K", "HELD", "NEW_ONE"):
        monkeypatch.delenv(name, raising=False)

    held, sensitive = prepare(
        aws_requests([aws_secret("Aliased", json_key="k", as_env_var="ALIASED_K")]), "t"
    )
    try:
        assert _sha(os.environ["ALIASED_K"]) == _sha(value["k"])
        assert sensitive.contains(os.environ["ALIASED_K"])
    finally:
        held.release()
    assert "ALIASED_K" not in os.environ

    first, _ = prepare(aws_requests([aws_secret(arn, as_env_var="HELD")]), "running")
    try:
        before = _sha(os.environ["HELD"])
        with pytest.raises(SecretResolutionError) as e:
            prepare(
                aws_requests([aws_secret(arn, as_env_var="NEW_ONE"), aws_secret(other, as_env_var="HELD")]),
                "late",
            )
        assert "HELD" in str(e.value) and other in str(e.value) and "'late'" in str(e.value)
        assert "NEW_ONE" not in os.environ, "a request was placed although its task failed"
        assert _sha(os.environ["HELD"]) == before
    finally:
        first.release()
    assert "HELD" not in os.environ


def test_a_file_the_webhook_mounted_is_taken_not_read_again(
    secrets_factory: Any, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a pod with Flyte's AWS webhook: a mount request the webhook served is taken from its file (the ARN
    below does not exist in AWS, so a read would fail); a missing one beside it is still named."""
    from flytekitplugins_awssecrets.errors import SecretResolutionError
    from flytekitplugins_awssecrets.flyte2 import aws_secret
    from flytekitplugins_awssecrets.flyte2.mount import DIR_ENV
    from flytekitplugins_awssecrets.flyte2.requests import aws_requests, file_parts
    from flytekitplugins_awssecrets.flyte2.run import prepare
    from flytekitplugins_awssecrets.resolver import reset_process_state
    from tests.conftest import new_value

    webhook = tmp_path / "etc-flyte-secrets"
    served = REGION_GROUP + f"served-{unique}-AAAAAA"
    value = new_value()
    target = webhook.joinpath(*file_parts(REGION_GROUP, f"served-{unique}-AAAAAA"))
    target.parent.mkdir(parents=True)
    target.write_text(value)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_WEBHOOK_DIR", str(webhook))
    reset_process_state()

    held, _ = prepare(aws_requests([aws_secret(served)]), "pod")
    try:
        ours = Path(os.environ[DIR_ENV]).joinpath(*file_parts(REGION_GROUP, f"served-{unique}-AAAAAA"))
        assert _sha(ours.read_text()) == _sha(value)
    finally:
        held.release()

    missing = REGION_GROUP + f"absent-{unique}-BBBBBB"
    with pytest.raises(SecretResolutionError) as e:
        prepare(aws_requests([aws_secret(served), aws_secret(missing)]), "pod")
    assert missing in str(e.value) and served not in str(e.value)
