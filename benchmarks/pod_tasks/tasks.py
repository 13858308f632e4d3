# mypy: disable-error-code="untyped-decorator"
# (flytekit ships no type information, so its @task and @workflow decorators are untyped)
"""The tasks P5 runs as pods: the same trivial task with 20 AWS secret requests, with none, and doing what
task code does without the plugin (building a boto3 client; reading the 20 secrets with it one by one).

The secrets are named by partial ARN (no 6-character suffix), as users write them; ``BENCH_P5_PREFIX``
gives each benchmark run its own. Each task returns a number, never a value.
"""

from __future__ import annotations

import os

from flytekit import current_context, task, workflow

from flytekitplugins_awssecrets import aws_secret

ACCOUNT = "123456789012"
PREFIX = os.environ.get("BENCH_P5_PREFIX", "p5")
COUNT = 20
NAMES = [f"{PREFIX}/s{i:03d}" for i in range(COUNT)]
SECRETS = [aws_secret(f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{n}") for n in NAMES]


@task(secret_requests=SECRETS)
def with_secrets() -> int:
    ctx = current_context()
    return sum(len(ctx.secrets.get(s.group, s.key)) for s in SECRETS)  # total length: proves they arrived


@task
def without_secrets() -> int:
    return 0


@task
def boto3_client_only() -> int:
    """The floor for any task that reads AWS: import boto3 and build one client, no request."""
    import boto3

    boto3.session.Session().client("secretsmanager", region_name="us-east-1")
    return 0


@task
def boto3_loop() -> int:
    """What task code does without the plugin: one ``get_secret_value`` per secret."""
    import boto3

    sm = boto3.session.Session().client("secretsmanager", region_name="us-east-1")
    return sum(len(sm.get_secret_value(SecretId=n)["SecretString"]) for n in NAMES)


@workflow
def pod_wf() -> tuple[int, int, int, int]:
    return with_secrets(), without_secrets(), boto3_client_only(), boto3_loop()
