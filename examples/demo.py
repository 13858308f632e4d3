"""The main demo: an embedded moto server, demo secrets created in it, and ``pyflyte run`` of a workflow
that reads them. No AWS account needed. Run: ``python examples/demo.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def fingerprint(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return f"len={len(data)} sha256={hashlib.sha256(data).hexdigest()[:12]}"


def create_demo_secrets(prefix: str) -> dict[str, str]:
    """Create the secrets examples/secrets_demo.py reads (boto3 as configured by the environment).

    Returns name -> the value the task will receive (for the database, the password inside the JSON).
    """
    import boto3

    password = secrets.token_urlsafe(24)
    values = {
        f"{prefix}/api-key": secrets.token_urlsafe(24),
        f"{prefix}/db": password,
        f"{prefix}/tls-cert": "-----BEGIN CERTIFICATE-----\n"
        + secrets.token_hex(64)
        + "\n-----END CERTIFICATE-----\n",
        f"{prefix}/feature-flag": secrets.token_hex(8),
    }
    us = boto3.client("secretsmanager", "us-east-1")
    us.create_secret(Name=f"{prefix}/api-key", SecretString=values[f"{prefix}/api-key"])
    us.create_secret(Name=f"{prefix}/db", SecretString=json.dumps({"username": "app", "password": password}))
    boto3.client("secretsmanager", "eu-west-1").create_secret(
        Name=f"{prefix}/tls-cert", SecretString=values[f"{prefix}/tls-cert"]
    )
    boto3.client("ssm", "us-east-1").put_parameter(
        Name=f"/{prefix}/feature-flag", Value=values[f"{prefix}/feature-flag"], Type="SecureString"
    )
    return values


def start_embedded_moto(prefix: str) -> tuple[Any, dict[str, str]]:
    """A moto server on loopback, and this process's AWS environment pointed at it (and away from any real
    AWS configuration); returns the server and those variables (for child processes)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    home = tempfile.mkdtemp(prefix=prefix)
    aws = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.path.join(home, "none"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    os.environ.update(aws)
    return server, aws


def main() -> int:
    server, aws = start_embedded_moto("awssecrets-demo-")
    env = {**os.environ, **aws}
    values = create_demo_secrets("demo")
    print("Created in the embedded moto server (fingerprints only):")
    for name, v in values.items():
        print(f"  {name:22s} {fingerprint(v)}")
    print("\n$ pyflyte run examples/secrets_demo.py demo_wf")
    pyflyte = str(Path(sys.executable).with_name("pyflyte"))
    try:
        proc = subprocess.run(
            [pyflyte, "run", str(HERE / "secrets_demo.py"), "demo_wf"],
            env=env,
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.stop()
    out = proc.stdout + proc.stderr
    leaked = [n for n, v in values.items() if v in out]
    print(proc.stdout)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    if leaked:
        print(f"LEAK: values of {leaked} appeared in the output", file=sys.stderr)
        return 1
    # The plugin's own notices (e.g. where FILE secrets went on a machine without a memory filesystem).
    notices = [line.strip() for line in proc.stderr.splitlines() if "flytekitplugins-awssecrets:" in line]
    for line in notices:
        print(line)
    print("The task received every secret; no value appeared in the output.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
