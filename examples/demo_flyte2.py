"""The demo's Flyte 2 twin: the same secrets, declared with ``flyte.Secret`` and read with ``os.environ`` and
files, run by ``flyte run --local`` against an embedded moto server. No AWS account needed.

Run: ``python examples/demo_flyte2.py`` (needs ``pip install -e '.[demo,flyte2]'``). This file is both the
runner (``main``) and the tasks that ``flyte run --local examples/demo_flyte2.py call_api`` runs; against your
own AWS account, create the secrets that examples/demo.py creates and run that command.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import flyte

from flytekitplugins_awssecrets.flyte2 import aws_secret

HERE = Path(__file__).resolve().parent
ACCOUNT = os.environ.get("DEMO_ACCOUNT", "123456789012")
PREFIX = os.environ.get("DEMO_SECRET_PREFIX", "demo")
SM = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:"

env = flyte.TaskEnvironment(
    "demo_flyte2",
    secrets=[
        # Partial ARNs (no 6-character suffix) work; full ARNs from the console work too.
        aws_secret(f"{SM}{PREFIX}/api-key", as_env_var="API_KEY"),
        aws_secret(f"{SM}{PREFIX}/db", json_key="password", as_env_var="DB_PASSWORD"),
        # No as_env_var: a file, laid out as Flyte's AWS webhook lays it out.
        aws_secret(f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:{PREFIX}/tls-cert"),
        aws_secret(f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/{PREFIX}/feature-flag", as_env_var="FLAG"),
    ],
)


def fingerprint(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return f"len={len(data)} sha256={hashlib.sha256(data).hexdigest()[:12]}"


@env.task
async def call_api() -> str:
    secrets_dir = pathlib.Path(os.environ["FLYTE_SECRETS_DEFAULT_DIR"])
    cert = secrets_dir / f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:" / f"{PREFIX}/tls-cert"
    mode = oct(cert.stat().st_mode & 0o777)
    return "\n".join(
        [
            f"api key (as_env_var):         {fingerprint(os.environ['API_KEY'])}",
            f"db password (json_key):       {fingerprint(os.environ['DB_PASSWORD'])}",
            f"tls cert (file, eu-west-1):   {fingerprint(cert.read_bytes())} mode={mode}",
            f"feature flag (SSM parameter): {fingerprint(os.environ['FLAG'])}",
        ]
    )


def main() -> int:
    sys.path.insert(0, str(HERE))
    from demo import create_demo_secrets, start_embedded_moto  # the flytekit demo's, the same way

    server, aws = start_embedded_moto("awssecrets-demo2-")
    values = create_demo_secrets(PREFIX)
    print("Created in the embedded moto server (fingerprints only):")
    for name, v in values.items():
        print(f"  {name:22s} {fingerprint(v)}")
    print("\n$ flyte run --local examples/demo_flyte2.py call_api")
    try:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("flyte")), "run", "--local", str(Path(__file__)), "call_api"],
            env={**os.environ, **aws, "COLUMNS": "200"},
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.stop()
    out = proc.stdout + proc.stderr
    print(proc.stdout)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    leaked = [n for n, v in values.items() if v in out]
    if leaked:
        print(f"LEAK: values of {leaked} appeared in the output", file=sys.stderr)
        return 1
    expected = [fingerprint(v) for v in values.values()]
    missing = [n for n, fp in zip(values, expected, strict=True) if fp not in out]
    if missing:
        print(f"the task did not report {missing}", file=sys.stderr)
        return 1
    print("The Flyte 2 task received every secret; no value appeared in the output.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
