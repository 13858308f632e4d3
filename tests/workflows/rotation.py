"""Tasks that watch their secrets while the secret is rotated (for tests/test_rotation.py).

The ARN, the endpoint and the next value come from the environment. Each task rotates the secret itself
the way a Secrets Manager rotation function does (a new version staged AWSPENDING, then AWSCURRENT moved
to it) and reports what it saw as booleans only: no value ever reaches an output.
"""

from __future__ import annotations

import os
import threading
import time

from flytekit import Secret, current_context, task

from flytekitplugins_awssecrets import aws_secret

ARN = os.environ.get("ROTATING_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:rot/unset")
ANY_REQ = aws_secret(ARN)
FILE_REQ = aws_secret(ARN, mount_requirement=Secret.MountType.FILE, env_var="ROT_FILE")
ENV_REQ = aws_secret(ARN, mount_requirement=Secret.MountType.ENV_VAR, env_var="ROT_ENV")


def _client():  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "secretsmanager",
        region_name=ARN.split(":")[3],
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
    )


def _stage_pending(value: str) -> str:
    return str(
        _client().put_secret_value(SecretId=ARN, SecretString=value, VersionStages=["AWSPENDING"])[
            "VersionId"
        ]
    )


def _promote(version: str) -> None:
    c = _client()
    stages = c.describe_secret(SecretId=ARN)["VersionIdsToStages"]
    (current,) = [v for v, s in stages.items() if "AWSCURRENT" in s]
    c.update_secret_version_stage(
        SecretId=ARN, VersionStage="AWSCURRENT", MoveToVersionId=version, RemoveFromVersionId=current
    )


# deck_fields=(): only the decks the task adds (flytekit's dependency deck runs pip, seconds per task).
@task(secret_requests=[ANY_REQ, FILE_REQ, ENV_REQ], enable_deck=True, deck_fields=())
def rotating() -> str:
    ctx = current_context()
    g, k = ANY_REQ.group, ANY_REQ.key
    path = ctx.secrets.get_secrets_file(g, k)

    def read_any() -> str:
        return str(ctx.secrets.get(g, k))

    def read_file() -> str:
        with open(path, encoding="utf-8") as f:
            return f.read()

    first = read_any()
    new = os.environ["ROTATED_VALUE"]
    odd: list[int] = []  # lengths of anything a reader saw that was neither value (partial or empty)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            v = read_file()
            if v not in (first, new):
                odd.append(len(v))
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        same_at_start = read_file() == first == os.environ["ROT_ENV"]
        version = _stage_pending(new)
        time.sleep(float(os.environ.get("FLYTE_AWS_SECRETS_REFRESH_INTERVAL_SECONDS", "1")) * 3)
        pending_served = new in (read_any(), read_file())
        _promote(version)
        deadline = time.time() + 20
        while time.time() < deadline and not (read_any() == new and read_file() == new):
            time.sleep(0.05)
        any_new, file_new = read_any() == new, read_file() == new
        env_kept = os.environ["ROT_ENV"] == first
        path_env = os.environ["ROT_FILE"] == path
    finally:
        stop.set()
        watcher.join()
    return (
        f"same_at_start={same_at_start} pending_served={pending_served} any_new={any_new} "
        f"file_new={file_new} env_kept={env_kept} path_env={path_env} odd_reads={len(odd)}"
    )
