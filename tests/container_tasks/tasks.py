"""A ContainerTask with an AWS request: its container never runs flytekit, so the plugin cannot serve it."""

from __future__ import annotations

import os

from flytekit import ContainerTask, Secret

from flytekitplugins_awssecrets import aws_secret

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ct/value"
MOUNT = Secret.MountType.FILE if os.environ.get("CT_MOUNT") == "FILE" else Secret.MountType.ENV_VAR

raw = ContainerTask(
    name="ct_raw",
    image="alpine:3",
    command=["sh", "-c", "test -s /etc/flyte/secrets/x"],
    secret_requests=[aws_secret(ARN, mount_requirement=MOUNT)],
)
