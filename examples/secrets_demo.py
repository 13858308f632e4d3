"""A workflow that reads AWS secrets in every way a task can ask for them.

Run it against the demo's embedded moto server with ``python examples/demo.py``, or against your own AWS
account after creating the secrets named below (``pyflyte run examples/secrets_demo.py demo_wf``).
The task reports what it received as fingerprints (length and sha256 prefix), never the values.
"""

from __future__ import annotations

import hashlib
import os

from flytekit import Secret, current_context, task, workflow

from flytekitplugins_awssecrets import aws_secret, split_arn

ACCOUNT = os.environ.get("DEMO_ACCOUNT", "123456789012")
# Lets tests give each run its own secrets; the demo uses the default.
PREFIX = os.environ.get("DEMO_SECRET_PREFIX", "demo")

# Partial ARNs (no 6-character suffix) work everywhere; full ARNs from the console work too.
API_KEY = aws_secret(f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{PREFIX}/api-key")
DB_PASSWORD = aws_secret(
    f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{PREFIX}/db",
    json_key="password",
    mount_requirement=Secret.MountType.ENV_VAR,
    env_var="DB_PASSWORD",
)
GROUP, KEY = split_arn(f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:{PREFIX}/tls-cert")
TLS_CERT = Secret(group=GROUP, key=KEY, mount_requirement=Secret.MountType.FILE)
FEATURE_FLAG = aws_secret(f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/{PREFIX}/feature-flag")


def fingerprint(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return f"len={len(data)} sha256={hashlib.sha256(data).hexdigest()[:12]}"


@task(secret_requests=[API_KEY, DB_PASSWORD, TLS_CERT, FEATURE_FLAG])
def call_api() -> str:
    ctx = current_context()
    key = ctx.secrets.get(API_KEY.group, API_KEY.key)
    password = os.environ["DB_PASSWORD"]
    cert_path = ctx.secrets.get_secrets_file(GROUP, KEY)
    with open(cert_path, "rb") as f:
        cert = f.read()
    flag = ctx.secrets.get(FEATURE_FLAG.group, FEATURE_FLAG.key)
    mode = oct(os.stat(cert_path).st_mode & 0o777)
    return "\n".join(
        [
            f"api key (ANY, in memory):     {fingerprint(key)}",
            f"db password (ENV_VAR, json):  {fingerprint(password)}",
            f"tls cert (FILE, eu-west-1):   {fingerprint(cert)} mode={mode}",
            f"feature flag (SSM parameter): {fingerprint(flag)}",
        ]
    )


@workflow
def demo_wf() -> str:
    return call_api()
