"""Workflows that misbehave on purpose, for the security tests. ARNs come from the environment."""

from __future__ import annotations

import base64
import logging
import os
import time
from dataclasses import dataclass

from flytekit import Secret, current_context, task, workflow

from flytekitplugins_awssecrets import aws_secret

ARN = os.environ.get("LEAKY_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:leaky/unset")
REQ = aws_secret(ARN)
FILE_REQ = aws_secret(ARN, mount_requirement=Secret.MountType.FILE)


@dataclass
class Report:
    name: str
    detail: str


@task(secret_requests=[REQ])
def returns_secret() -> str:
    return "token=" + current_context().secrets.get(REQ.group, REQ.key)


@task(secret_requests=[REQ])
def returns_b64_in_dataclass() -> Report:
    v = current_context().secrets.get(REQ.group, REQ.key)
    return Report(name="r", detail="blob:" + base64.b64encode(("xx" + v + "yy").encode()).decode())


@task(secret_requests=[REQ])
def logs_secret() -> int:
    v = current_context().secrets.get(REQ.group, REQ.key)
    logging.getLogger("user.code").warning("connecting with %s", v)
    logging.getLogger("flytekit").warning(f"flytekit saw {v}")
    return len(v)


@task(secret_requests=[FILE_REQ])
def holds_file(marker: str) -> int:
    path = current_context().secrets.get_secrets_file(FILE_REQ.group, FILE_REQ.key)
    with open(marker, "w") as f:
        f.write(path)
    time.sleep(120)
    return 0


@workflow
def leak_wf() -> str:
    return returns_secret()


@workflow
def log_wf() -> int:
    return logs_secret()


@workflow
def hold_wf(marker: str) -> int:
    return holds_file(marker=marker)
