"""Flyte 2 tasks follow rotation too (issue 25, item 2): the same core refresher and record as flytekit's,
through the real ``flyte run --local``. A file mount is replaced atomically with the new AWSCURRENT value
while the task runs; an ``as_env_var`` value never changes; the task's record is one JSON log line.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import new_value
from tests.test_flyte2 import _bin, _env

pytest.importorskip("flyte")

TASK = """
import os, pathlib, time
import boto3
import flyte
from flytekitplugins_awssecrets import recent_records
from flytekitplugins_awssecrets.flyte2 import aws_secret

ARN = os.environ["ROT_ARN"]
env = flyte.TaskEnvironment("rot", secrets=[aws_secret(ARN), aws_secret(ARN, as_env_var="ROT_ENV")])


@env.task
async def rotating() -> str:
    d = pathlib.Path(os.environ["FLYTE_SECRETS_DEFAULT_DIR"])
    (path,) = [p for p in d.rglob("*") if p.is_file()]
    first = path.read_text()
    c = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    new = os.environ["ROT_NEW"]
    version = c.put_secret_value(SecretId=ARN, SecretString=new, VersionStages=["AWSPENDING"])["VersionId"]
    time.sleep(3)
    pending_served = path.read_text() == new
    stages = c.describe_secret(SecretId=ARN)["VersionIdsToStages"]
    (current,) = [v for v, s in stages.items() if "AWSCURRENT" in s]
    c.update_secret_version_stage(SecretId=ARN, VersionStage="AWSCURRENT", MoveToVersionId=version,
                                  RemoveFromVersionId=current)
    deadline = time.time() + 20
    while time.time() < deadline and path.read_text() != new:
        time.sleep(0.05)
    return (f"pending_served={pending_served} file_new={path.read_text() == new} "
            f"env_kept={os.environ['ROT_ENV'] == first} mode={oct(path.stat().st_mode & 0o777)}")
"""


def test_flyte2_file_follows_rotation_env_does_not(
    secrets_factory: Any, aws_env: dict[str, str], unique: str, tmp_path: Path
) -> None:
    arn, first = secrets_factory.secret(f"{unique}/rot2")
    new = new_value("rot2")
    (tmp_path / "rot_tasks.py").write_text(textwrap.dedent(TASK))
    env = _env(
        aws_env,
        ROT_ARN=arn,
        ROT_NEW=new,
        FLYTE_AWS_SECRETS_REFRESH_INTERVAL_SECONDS="1",
        FLYTE_AWS_SECRETS_REFRESH_FLEET_PODS="1",
    )
    p = subprocess.run(
        [_bin("flyte"), "run", "--local", "rot_tasks.py", "rotating"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "pending_served=False file_new=True env_kept=True mode=0o600" in out, out[-3000:]
    assert first not in out and new not in out
