"""docs/quickstart-eks.md, run as far as a machine without a cluster can: its workflow file, its `sed`, its
secret, ``pyflyte run`` of both workflows, the policy its command writes and the Pod Identity trust policy,
both created in moto's IAM (which refuses a malformed policy document)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3

from tests.conftest import ROOT, remember

BIN = Path(sys.executable).parent
DOC = (ROOT / "docs" / "quickstart-eks.md").read_text()
REGION = "eu-west-1"  # not the file's us-east-1: the doc's sed must move the ARN


def _block(lang: str, contains: str) -> str:
    blocks = [b for b in re.findall(rf"```{lang}\n(.*?)```", DOC, re.S) if contains in b]
    assert len(blocks) == 1, f"expected one {lang} block with {contains!r}"
    return blocks[0]


def _env(aws_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "PYTHON"))}
    env.update(
        aws_env, AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION, COLUMNS="200", ACCOUNT_ID="123456789012"
    )
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)  # the plugin from this checkout (test_release.py covers the wheel)
    return env


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quickstart_from_secret_to_policy(aws_env: dict[str, str], unique: str, tmp_path: Path) -> None:
    env = _env(aws_env)
    # 2. the secret, as the doc's create-secret command makes it (no AWS CLI here: the same call in boto3)
    create = shlex.split(_block("bash", "create-secret").replace("\\\n", " "))
    secret_string = create[create.index("--secret-string") + 1]
    name = create[create.index("--name") + 1]
    assert name == "quickstart/db"
    sm = boto3.client("secretsmanager", REGION)
    try:
        sm.create_secret(Name=name, SecretString=secret_string)
    except sm.exceptions.ResourceExistsException:  # a rerun against the same session's moto
        sm.put_secret_value(SecretId=name, SecretString=secret_string)
    remember(json.loads(secret_string)["password"])

    # 3. the workflow file and the sed that puts the account and region in
    (tmp_path / "quickstart.py").write_text(_block("python", "def hello_wf"))
    p = _bash(_block("bash", "sed -i.bak"), tmp_path, env)
    assert p.returncode == 0, p.stderr
    assert (
        f"arn:aws:secretsmanager:{REGION}:123456789012:secret:quickstart/db"
        in (tmp_path / "quickstart.py").read_text()
    )

    # ... and the local run the doc shows, with its output
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", "quickstart.py", "hello_wf"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    shown = _block("text", "got the password").strip()
    assert (
        shown.split(" sha256=")[0] in p.stdout
    )  # same length: the doc's secret string has a 9-char password
    leaked = json.loads(secret_string)["password"] in p.stdout + p.stderr
    assert not leaked

    # 4. the policy command, then create-policy's document as IAM (moto) accepts it
    policy_cmd = next(
        ln for ln in _block("bash", "pyflyte-awssecrets policy").splitlines() if "policy " in ln
    )
    p = _bash(policy_cmd, tmp_path, env)
    assert p.returncode == 0, p.stderr
    document = (tmp_path / "task-secrets-policy.json").read_text()
    statements = json.loads(document)["Statement"]
    assert statements == [
        {
            "Sid": "ReadSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": [f"arn:aws:secretsmanager:{REGION}:123456789012:secret:quickstart/db-??????"],
        }
    ]
    iam = boto3.client("iam", "us-east-1")
    arn = iam.create_policy(PolicyName=f"flyte-quickstart-secrets-{unique}", PolicyDocument=document)[
        "Policy"
    ]["Arn"]

    # 5b. the Pod Identity role, with the doc's trust policy, and the policy attached
    heredoc = _block("bash", "pods.eks.amazonaws.com")
    trust = heredoc.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    role = f"flyte-quickstart-secrets-{unique}"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
    iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    got: Any = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    statement = (json.loads(got) if isinstance(got, str) else got)["Statement"][0]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]

    # 8. the debug workflow: check -v from inside a task, with the report the doc shows
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", "quickstart.py", "debug_wf"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    report = _block("text", "exit 0").strip().splitlines()
    out = p.stdout.splitlines()
    assert out[out.index(report[0]) + 1].startswith("settings: "), p.stdout[-2000:]
    row = report[-2].replace(":us-east-1:", f":{REGION}:").split()
    assert [ln.split() for ln in out if ln.startswith("quickstart.connect")] == [row]
    assert report[-1] in out and report[-3].split() == next(
        ln.split() for ln in out if ln.startswith("task ")
    )
