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
from tests.support.shm import leftover_mounts

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
    return make_world(tmp_path, secrets_factory, unique, aws_env)


def make_world(tmp_path: Path, secrets_factory: Any, unique: str, aws_env: dict[str, str]) -> dict[str, Any]:
    """Secrets in moto (a secret, a JSON secret, an SSM parameter) and tasks2.py that asks for them."""
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


def _flyte_run(
    world: dict[str, Any], task: str, script: str = "tasks2.py", **extra: str
) -> subprocess.CompletedProcess[str]:
    """``flyte run --local <script> <task>`` in the world's directory, with its env and ``extra``."""
    env = dict(world["env"], **extra)
    return subprocess.run(
        [_bin("flyte"), "run", "--local", script, task],
        cwd=world["dir"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _python_run(
    world: dict[str, Any], task: str, init: bool = True, no_flytekit: bool = False, **extra: str
) -> subprocess.CompletedProcess[str]:
    # no_flytekit: a Flyte 2 user's environment without flytekit ("import flytekit" raises ImportError).
    code = textwrap.dedent(
        f"""
        import sys
        {'sys.modules["flytekit"] = None' if no_flytekit else ""}
        import flyte, json
        import tasks2
        {"flyte.init()" if init else ""}
        try:
            r = flyte.run(tasks2.{task})
            print("RESULT=" + json.dumps(r.outputs()[0] if hasattr(r, "outputs") else str(r)))
        except Exception as e:
            print("ERROR=" + type(e).__name__ + ": " + str(e))
        print("FLYTEKIT=" + str(sys.modules.get("flytekit") is not None))
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
    return leftover_mounts()


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
    # The last run cannot import flytekit at all: a Flyte 2 user does not need it.
    for init, no_flytekit in ((True, False), (False, False), (True, True)):
        p = _python_run(world, "main", init=init, no_flytekit=no_flytekit)
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
    p = _flyte_run(world, "leak", script="leaky.py")
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "SecretLeakError" in out or "leak" in out.lower(), out[-2000:]
    assert world["a"] not in out, fingerprint(world["a"])
    q = _flyte_run(world, "shout", script="leaky.py")
    out = q.stdout + q.stderr
    assert q.returncode != 0 and "cannot use" in out and "ValueError" in out, out[-2000:]
    assert world["a"] not in out, "the value reached the log or the error: " + fingerprint(world["a"])


def test_the_demos_flyte2_twin_runs_with_one_command() -> None:
    """Item 7: ``python examples/demo_flyte2.py`` as the README gives it (its own embedded moto server, no AWS
    settings from the environment); it checks every fingerprint and that no value was printed itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    p = subprocess.run(
        [sys.executable, "examples/demo_flyte2.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "The Flyte 2 task received every secret; no value appeared in the output." in out, out[-3000:]
    assert out.count("sha256=") >= 8, out[-3000:]  # four created, four received
