"""Just-in-time Aptible access with approval: request, approve, escalate, expire (Sym's Aptible flow).

Run it locally (the connector runs in-process; ``flytekit.approve`` asks on the terminal)::

    pyflyte run examples/aptible_access.py aptible_access_flow \\
        --email ada@example.com --target main-aptible-admin-role --duration 30m --reason "INC-42"

Answer ``y`` at ``[Approval Gate]`` (or pipe it: ``echo y | pyflyte run ...``). The bot's credentials are
read from AWS Secrets Manager by the connector, with the process's AWS credentials. The values below are
Sym's example; each can be replaced through the environment (``APTIBLE_BOT_CREDENTIALS_ARN``,
``APTIBLE_ORGANIZATION_ID``, ``APTIBLE_ADMIN_ROLE_ID``, ``APTIBLE_RO_ROLE_ID``, ``APTIBLE_AUTH_URL``).

On a cluster, the approval is given in the Flyte console, and the grant is made by the
``pyflyte serve connector`` deployment (see docs/aptible.md).
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta

from flytekit import approve, task, workflow

from flytekitplugins_awssecrets import aws_secret
from flytekitplugins_awssecrets.aptible import (
    AccessGrant,
    AptibleAccessStrategy,
    AptibleAccessTask,
    AptibleIntegration,
    AptibleRole,
)

CREDS = os.environ.get(
    "APTIBLE_BOT_CREDENTIALS_ARN",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:sym/main/aptible-bot-credentials-AbCdEf",
)

integration = AptibleIntegration(
    name="main-aptible",
    organization_id=os.environ.get("APTIBLE_ORGANIZATION_ID", "94a49e57-d046-4d9d-9dbf-f7711e337368"),
    username_secret=aws_secret(CREDS, json_key="username"),
    password_secret=aws_secret(CREDS, json_key="password"),
    # None: the connector's FLYTE_AWS_SECRETS_APTIBLE_AUTH_URL, else https://auth.aptible.com
    auth_url=os.environ.get("APTIBLE_AUTH_URL") or None,
)

admin_prod = AptibleRole(
    name="main-aptible-admin-role",
    label="Admin Role",
    role_id=os.environ.get("APTIBLE_ADMIN_ROLE_ID", "24463EF7-1D6E-402E-A365-69CB6DB80C6E"),
)
admin_ro = AptibleRole(
    name="main-aptible-ro-role",
    label="Read-only Role",
    role_id=os.environ.get("APTIBLE_RO_ROLE_ID", "C7D5F21A-1D4E-4B39-9957-F8ACABDE2A3A"),
)

strategy = AptibleAccessStrategy(
    name="main-aptible-strategy",
    integration=integration,
    targets=[admin_prod, admin_ro],
    max_duration=timedelta(days=1),
)

aptible_access = AptibleAccessTask(name="aptible_access", strategy=strategy)


@task
def describe_request(email: str, target: str, duration: timedelta, reason: str) -> str:
    """What the approver sees."""
    return f"{email} asks for {target} for {duration}: {reason}"


@workflow
def aptible_access_flow(
    email: str,
    target: str = "main-aptible-admin-role",
    duration: timedelta = timedelta(minutes=30),
    reason: str = "",
) -> AccessGrant:
    summary = describe_request(email=email, target=target, duration=duration, reason=reason)
    approved = approve(summary, "approve-aptible-access", timeout=timedelta(hours=4))
    grant = aptible_access(email=email, target=target, duration=duration, reason=reason)
    approved >> grant  # no grant before the approval
    return grant


# Show the audit trail on the terminal when run locally; on a cluster, route this logger to your log pipeline.
_audit = logging.getLogger("flytekitplugins_awssecrets.aptible.audit")
if not _audit.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("AUDIT %(message)s"))
    _audit.addHandler(_handler)
    _audit.setLevel(logging.INFO)
