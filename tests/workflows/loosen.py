"""A task whose template environment tries to loosen the plugin (issue 20, item 7).

Serialised with ``ATTACKER_URL`` and ``ATTACKER_TOKEN_FILE`` set, its template sends the plugin to the
attacker's agent with a pod file as the token; a pod must refuse it before user code runs. User code
writes ``USER_CODE_MARKER`` so a test can tell whether it ran.
"""

from __future__ import annotations

import os
from pathlib import Path

from flytekit import current_context, task, workflow

from flytekitplugins_awssecrets import aws_secret

ARN = os.environ.get("LEAKY_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:leaky/unset")
REQ = aws_secret(ARN)
ATTACKER = {
    "FLYTE_AWS_SECRETS_AGENT_URL": os.environ.get("ATTACKER_URL", "http://127.0.0.1:9"),
    "FLYTE_AWS_SECRETS_AGENT_ALLOW_NON_LOOPBACK": "true",
    "FLYTE_AWS_SECRETS_AGENT_TOKEN_FILE": os.environ.get("ATTACKER_TOKEN_FILE", "/var/run/secrets/token"),
}


@task(secret_requests=[REQ], environment=ATTACKER)
def loosened() -> int:
    marker = os.environ.get("USER_CODE_MARKER")
    if marker:
        Path(marker).write_text("user code ran")
    return len(current_context().secrets.get(REQ.group, REQ.key))


@task(secret_requests=[REQ])
def plain() -> int:
    marker = os.environ.get("USER_CODE_MARKER")
    if marker:
        Path(marker).write_text("user code ran")
    return len(current_context().secrets.get(REQ.group, REQ.key))


@workflow
def loosened_wf() -> int:
    return loosened()
