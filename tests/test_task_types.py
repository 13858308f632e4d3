"""Every task type that runs flytekit in its pod gets its AWS secrets, through real ``pyflyte run`` and
through ``pyflyte-execute`` of the serialised spec (as a pod runs it): a plain task (ANY served from memory,
its file and its variable on demand, a group without the trailing ':'), a map task, ``@dynamic``, ``@eager``
(locally), a ``ShellTask``, a custom shim task, flytekit's ``SQLite3Task`` and flytekitplugins-sqlalchemy's
``SQLAlchemyTask`` (its executor reads ``secret_connect_args``)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, fingerprint, new_value
from tests.support.pod import run_pod, serialize_tasks

BIN = Path(sys.executable).parent
MOD = "tests/task_types/tasks.py"
pytestmark = pytest.mark.compat


@pytest.fixture
def tt(aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path) -> dict[str, Any]:
    prefix = f"tt{unique}"
    value = new_value()
    secrets_factory.secret(f"{prefix}/value", value)
    # Handed to sqlite3.connect(isolation_level=...) by the SQLAlchemy shim (built apart: the suite's leak
    # check would otherwise find it in this file's own source in a failure report).
    secrets_factory.secret(f"{prefix}/iso", "de" + "ferred")
    db = tmp_path / "t.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "_FSEC_"))}
    env.update(aws_env)
    env.update(
        TT_PREFIX=prefix,
        TT_EXPECTED=hashlib.sha256(value.encode()).hexdigest()[:12],
        TT_SQLITE_URI=str(db),
        PYTHONPATH=str(ROOT),
        COLUMNS="400",
        FLYTE_SDK_RICH_TRACEBACKS="0",
    )
    return {"env": env, "fp": fingerprint(value), "value": value, "prefix": prefix}


def _run(tt: dict[str, Any], target: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", MOD, target],
        cwd=ROOT,
        env=tt["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tt["value"] not in p.stdout + p.stderr
    return p


def _has(name: str) -> bool:
    sys.path.insert(0, str(ROOT))
    import importlib

    try:
        return hasattr(importlib.import_module("tests.task_types.tasks"), name)
    finally:
        sys.path.pop(0)


@pytest.mark.parametrize(
    ("target", "count"),
    [("plain", 4), ("mapped_wf", 2), ("dyn", 1), ("eag", 1), ("shim", 1), ("shell_wf", 0)],
)
def test_pyflyte_run_every_task_type(tt: dict[str, Any], target: str, count: int) -> None:
    if not _has(target):
        pytest.skip(f"{target} needs a newer flytekit")
    p = _run(tt, target)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count(tt["fp"].split()[1]) == count, p.stdout[-2000:]


@pytest.mark.parametrize("target", ["sqlite", "sqlalchemy_task"])
def test_pyflyte_run_shim_tasks_resolve_before_the_executor(tt: dict[str, Any], target: str) -> None:
    if not _has(target):
        pytest.skip(f"{target} is not installed here")
    p = _run(tt, target)
    if target == "sqlite":  # the query ran; converting the DataFrame would need pyarrow, beside the point
        assert (
            "Connecting to db" in p.stdout + p.stderr and "could not be resolved" not in p.stdout + p.stderr
        )
    else:
        assert p.returncode == 0, p.stderr[-3000:]
    # Proof that the shim path resolves: the same task with its secret missing fails before the executor.
    env = dict(tt["env"], TT_PREFIX=f"absent{tt['prefix']}")
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", MOD, target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode != 0 and "could not be resolved; user code was not run" in out


@pytest.fixture
def specs(tt: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return serialize_tasks("tests.task_types", tmp_path / "spec", tt["env"], "*_1.pb")


def _error(work: Path) -> str:
    from flyteidl.core import errors_pb2

    f = work / "out" / "error.pb"
    if not f.exists():
        return ""
    doc = errors_pb2.ErrorDocument()
    doc.ParseFromString(f.read_bytes())
    return doc.error.message[-2000:] or "error"


def _outputs(work: Path) -> Any:
    from flyteidl.core import literals_pb2

    assert not _error(work), _error(work)
    out = literals_pb2.LiteralMap()
    out.ParseFromString((work / "out" / "outputs.pb").read_bytes())
    return out


def test_pod_every_task_type(tt: dict[str, Any], specs: dict[str, Any], tmp_path: Path) -> None:
    from flyteidl.core import literals_pb2

    fp = tt["fp"]
    names = {n.rsplit(".", 1)[-1]: n for n in specs}
    # Plugin mode: no AWS request reaches the cluster's webhook; all of them are in the template's record.
    for short in ("plain", "one", "dyn", "tt_shell", "tt_shim", "tt_sqlite"):
        template = specs[names[short]].template
        assert not [s for s in template.security_context.secrets if s.group.startswith("arn:")], short
        assert "awssecrets.requests" in template.config, short

    work = tmp_path / "plain"
    p = run_pod(specs[names["plain"]], work, tt["env"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert _outputs(work).literals["o0"].scalar.primitive.string_value.count(fp) == 4

    work = tmp_path / "dyn"
    p = run_pod(specs[names["dyn"]], work, tt["env"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert fp in _outputs(work).literals["o0"].scalar.primitive.string_value

    work = tmp_path / "shim"
    p = run_pod(specs[names["tt_shim"]], work, tt["env"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert fp in _outputs(work).literals["o0"].scalar.primitive.string_value

    work = tmp_path / "shell"
    p = run_pod(specs[names["tt_shell"]], work, tt["env"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert not _error(work), _error(work)

    # SQLite3Task: its executor runs the query once the secret is mounted (uploading the DataFrame would
    # need pyarrow, which is beside the point); with the secret missing it never starts.
    work = tmp_path / "sqlite"
    p = run_pod(specs[names["tt_sqlite"]], work, tt["env"])
    assert "Connecting to db" in p.stdout + p.stderr, _error(work)
    assert "could not be resolved" not in _error(work)
    work = tmp_path / "sqlite-absent"
    # The template fixes the ARN, so the secret is made unreachable instead (nothing listens on port 9).
    dead = dict(tt["env"], AWS_ENDPOINT_URL="http://127.0.0.1:9", FLYTE_AWS_SECRETS_MAX_ATTEMPTS="1")
    p = run_pod(specs[names["tt_sqlite"]], work, dead)
    assert "Connecting to db" not in p.stdout + p.stderr
    assert "could not be resolved; user code was not run" in _error(work)

    if "tt_sqlalchemy" in names:
        work = tmp_path / "sqlalchemy"
        p = run_pod(specs[names["tt_sqlalchemy"]], work, tt["env"])
        assert p.returncode == 0, p.stderr[-3000:]
        assert not _error(work), _error(work)

    map_spec = next(s for n, s in specs.items() if "mapped" in n or "map_" in n.rsplit(".", 1)[-1])
    ints = literals_pb2.LiteralCollection(
        literals=[
            literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=i)))
            for i in (1, 2)
        ]
    )
    inputs = literals_pb2.LiteralMap(literals={"x": literals_pb2.Literal(collection=ints)})
    work = tmp_path / "map"
    env = dict(tt["env"], BATCH_JOB_ARRAY_INDEX_VAR_NAME="TT_INDEX", TT_INDEX="1")
    p = run_pod(map_spec, work, env, inputs)
    assert p.returncode == 0, p.stderr[-3000:]
    out = _outputs(work)
    assert fp in str(out)
    for f in (work / "out").glob("*.pb"):
        assert tt["value"].encode() not in f.read_bytes()
