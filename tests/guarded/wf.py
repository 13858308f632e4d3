"""A task with FILE and ENV_VAR requests of one secret, for the pod entry point tests (ARN from GUARD_ARN)."""

from __future__ import annotations

import os

from flytekit import Secret, current_context, task, workflow

from flytekitplugins_awssecrets import aws_secret

ARN = os.environ.get("GUARD_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:guard/unset")
FILE_REQ = aws_secret(ARN, mount_requirement=Secret.MountType.FILE)
ENV_REQ = aws_secret(ARN, mount_requirement=Secret.MountType.ENV_VAR, env_var="GUARD_TOKEN")


@task(secret_requests=[FILE_REQ, ENV_REQ])
def guarded() -> str:
    path = current_context().secrets.get_secrets_file(FILE_REQ.group, FILE_REQ.key)
    files_dir = os.environ.get("FLYTE_AWS_SECRETS_FILES_DIR")
    if os.environ.get("GUARD_MARKER"):
        with open(os.environ["GUARD_MARKER"], "w") as f:
            f.write("ran")
    # Where the test's webhook mounts (in a pod the plugin takes it from the image's settings file).
    webhook_dir = os.environ.get("GUARD_WEBHOOK_DIR", "/etc/flyte/secrets")
    if files_dir and path.startswith(files_dir + "/"):
        where = "mounted"
    elif path.startswith(webhook_dir + "/"):
        where = "webhook"
    else:
        where = "elsewhere"
    with open(path) as f:
        same = f.read() == os.environ["GUARD_TOKEN"]
    return f"ran: file={where} same={same}"


@workflow
def guarded_wf() -> str:
    return guarded()
