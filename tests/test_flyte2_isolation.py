"""Flyte 2 local runs: tasks sharing one process each see only their own secrets.

Through the real ``flyte run --local`` and ``flyte.run`` against moto: three concurrent siblings (two async,
one sync) with different variable names and files, a parent that starts a child and reads while it runs, a
child without secrets under a parent with some, and a subprocess. Tasks report what they saw as names and
fingerprints, never values. Marked ``flyte2_compat`` (see tests/test_flyte2_versions.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flyte")

from tests.test_flyte2 import _flyte_run, _leftovers, _sha, make_world  # noqa: E402

pytestmark = pytest.mark.flyte2_compat

TASKS = """
import asyncio, hashlib, json, os, pathlib, subprocess, sys, time
import flyte
from flytekitplugins_awssecrets.flyte2 import aws_secret

NAMES = ("ONLY_A", "ONLY_B", "ONLY_C", "PARENT_S")
STARTED, SEEN = set(), set()


def sha(b):
    return hashlib.sha256(b if isinstance(b, bytes) else b.encode()).hexdigest()[:16]


def files():
    d = os.environ.get("FLYTE_SECRETS_DEFAULT_DIR")
    if not d:
        return None, []
    return d, sorted(sha(p.read_bytes()) for p in pathlib.Path(d).rglob("*") if p.is_file())


def look():
    d, fs = files()
    return {
        "getitem": {n: sha(os.environ[n]) for n in NAMES if n in os.environ},
        "getenv": sorted(n for n in NAMES if os.getenv(n) is not None),
        "iter": sorted(n for n in os.environ if n in NAMES),
        "copy": sorted(n for n in os.environ.copy() if n in NAMES),
        "dir": d, "files": fs,
    }


def barrier(group, me, n):
    group.add(me)
    deadline = time.monotonic() + 20
    while len(group) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(group) >= n, f"{me}: only {sorted(group)} ran together"


async def abarrier(group, me, n):
    group.add(me)
    deadline = time.monotonic() + 20
    while len(group) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(group) >= n, f"{me}: only {sorted(group)} ran together"


A = aws_secret(os.environ["T_ARN_A"], as_env_var="ONLY_A")
env_a = flyte.TaskEnvironment("iso_a", secrets=[A, aws_secret(os.environ["T_ARN_A"])])
env_b = flyte.TaskEnvironment("iso_b", secrets=[aws_secret(os.environ["T_ARN_B"], as_env_var="ONLY_B"),
                                                 aws_secret(os.environ["T_ARN_B"], json_key="token")])
env_c = flyte.TaskEnvironment("iso_c", secrets=[
    flyte.Secret(group=os.environ["T_PARAM_GROUP"], key=os.environ["T_PARAM_KEY"], as_env_var="ONLY_C")])
env_p = flyte.TaskEnvironment("iso_p", secrets=[aws_secret(os.environ["T_ARN_B"], as_env_var="PARENT_S")],
                              depends_on=[env_a, env_b, env_c])
plain = flyte.TaskEnvironment("iso_plain", depends_on=[env_p])


@env_a.task
async def a(n: int) -> str:
    await abarrier(STARTED, "a", n)
    seen = look()
    child = subprocess.run([sys.executable, "-c", "import os; print(sorted(k for k in os.environ if k.startswith('ONLY_')))"],
                           capture_output=True, text=True).stdout.strip()
    handed = subprocess.run([sys.executable, "-c", "import os; print(sorted(k for k in os.environ if k.startswith('ONLY_')))"],
                            capture_output=True, text=True, env=os.environ.copy()).stdout.strip()
    await abarrier(SEEN, "a", n)
    return json.dumps(dict(seen, subprocess=child, handed=handed))


@env_b.task
async def b(n: int) -> str:
    await abarrier(STARTED, "b", n)
    seen = look()
    await abarrier(SEEN, "b", n)
    return json.dumps(seen)


@env_c.task
def c(n: int) -> str:
    barrier(STARTED, "c", n)
    seen = look()
    barrier(SEEN, "c", n)
    return json.dumps(seen)


@plain.task
async def siblings() -> str:
    ra, rb, rc = await asyncio.gather(a(3), b(3), c.aio(3))
    return json.dumps({"a": json.loads(ra), "b": json.loads(rb), "c": json.loads(rc), "after": look(),
                       "data": type(os.environ._data).__name__})


@plain.task
async def nosecret() -> str:
    return json.dumps(look())


@env_p.task
async def parent() -> str:
    before = look()
    STARTED.clear(); SEEN.clear()
    t = asyncio.create_task(a(2))
    await abarrier(STARTED, "parent", 2)
    during = look()
    await abarrier(SEEN, "parent", 2)
    child = json.loads(await t)
    after = look()
    inner = json.loads(await nosecret())
    return json.dumps({"before": before, "during": during, "after": after, "child": child, "nosecret": inner})


@plain.task
async def family() -> str:
    r = await parent()
    return json.dumps({"parent": json.loads(r), "after": look(), "data": type(os.environ._data).__name__})
"""


@pytest.fixture
def world(tmp_path: Path, secrets_factory: Any, unique: str, aws_env: dict[str, str]) -> dict[str, Any]:
    w = make_world(tmp_path, secrets_factory, unique, aws_env)
    (tmp_path / "iso.py").write_text(TASKS)
    return w


def _run_python(world: dict[str, Any], task: str) -> dict[str, Any]:
    code = textwrap.dedent(
        f"""
        import flyte, json, os
        import iso
        flyte.init()
        r = flyte.run(iso.{task})
        print("RESULT=" + json.dumps(json.loads(r.outputs()[0])
              | {{"driver": type(os.environ._data).__name__}}))
        """
    )
    env = dict(world["env"], PYTHONPATH=f"{world['dir']}{os.pathsep}{world['env']['PYTHONPATH']}")
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=world["dir"], env=env, capture_output=True, text=True, timeout=240
    )
    assert "RESULT=" in p.stdout, (p.stdout + p.stderr)[-4000:]
    return dict(json.loads(p.stdout.split("RESULT=", 1)[1].splitlines()[0]))


def _own(seen: dict[str, Any], names: list[str]) -> None:
    """``seen`` shows exactly ``names`` of the secret names, through every way of reading the environment."""
    assert sorted(seen["getitem"]) == names, seen
    assert seen["getenv"] == seen["iter"] == seen["copy"] == names, seen


def test_concurrent_siblings_each_see_only_their_own_names_and_files(world: dict[str, Any]) -> None:
    before = _leftovers()
    r = _run_python(world, "siblings")
    a, b, c = r["a"], r["b"], r["c"]
    _own(a, ["ONLY_A"])
    _own(b, ["ONLY_B"])
    _own(c, ["ONLY_C"])
    assert a["getitem"]["ONLY_A"] == _sha(world["a"])
    # Each task has its own secrets directory holding its own files only; a task without files has none.
    assert a["files"] == [_sha(world["a"])] and b["files"] == [_sha(world["b"])]
    assert a["dir"] != b["dir"] and c["dir"] is None
    # A subprocess inherits the real environment only; handing os.environ on passes the task's own.
    assert a["subprocess"] == "[]" and a["handed"] == "['ONLY_A']"
    _own(r["after"], [])
    assert r["after"]["dir"] is None
    assert r["data"] == "_Overlay" or r["data"] == "dict"
    assert r["driver"] == "dict", "os.environ was not given its own mapping back after the run"
    assert not any(Path(d).exists() for d in (a["dir"], b["dir"]))
    assert _leftovers() == before


def test_a_parent_never_sees_its_childrens_secrets_nor_a_child_its_parents(world: dict[str, Any]) -> None:
    r = _run_python(world, "family")
    p = r["parent"]
    for when in ("before", "during", "after"):
        _own(p[when], ["PARENT_S"])
        assert p[when]["dir"] is None, when  # the child's files are not the parent's
    assert p["during"]["getitem"]["PARENT_S"] == _sha(json.dumps({"token": world["b"], "x": "y"}))
    _own(p["child"], ["ONLY_A"])
    _own(p["nosecret"], [])
    _own(r["after"], [])
    assert r["driver"] == "dict"


def test_siblings_are_isolated_through_the_flyte_cli(world: dict[str, Any]) -> None:
    before = _leftovers()
    p = _flyte_run(world, "siblings", script="iso.py")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    flat = out.replace("\\", "").replace("\n", "")
    # Each sibling's own names and nothing else (the output is the JSON of what they saw).
    for mine in ("ONLY_A", "ONLY_B", "ONLY_C"):
        assert f'"getenv": ["{mine}"]' in flat, flat[-3000:]
    for many in ('"ONLY_A", "ONLY_B"', '"ONLY_A", "ONLY_C"', '"ONLY_B", "ONLY_C"'):
        assert f'"getenv": [{many}' not in flat, flat[-3000:]
    assert world["a"] not in out and world["b"] not in out
    assert _leftovers() == before
