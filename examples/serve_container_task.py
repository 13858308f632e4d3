"""A ``ContainerTask`` in plain shell that reads a secret with curl through ``pyflyte-awssecrets serve``.

The container starts the endpoint itself (the image has the plugin, curl and jq), with a fresh random token
and port 0, waits for the ready file, asks for the secret in AWS Secrets Manager Agent's API, and writes a
fingerprint of one JSON key (never the value) to its output. The pod's AWS identity (IRSA, Pod Identity)
reads the secret; nothing AWS-specific is in the image.

The shell script is :data:`SCRIPT`; ``tests/test_serve_example.py`` runs it as is against moto::

    sh -c "$SCRIPT" example <secretId> <output dir>

Register it like any task (``pyflyte register examples/serve_container_task.py``) after pointing the
ImageSpec at your registry; ``secret_id`` is an ARN, a secret name or an alias of the settings.
"""

from __future__ import annotations

import os

from flytekit import ContainerTask, ImageSpec, kwtypes, workflow

#: POSIX sh. $1: secretId; $2: the output directory. The value stays in a shell variable of this process.
SCRIPT = r"""
set -eu
secret_id="$1"
out="$2"
umask 077
work=$(mktemp -d)
# A fresh token only this task knows: other processes on the node cannot use the endpoint.
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
# --allow: the endpoint serves this one secret and refuses every other, whoever asks.
pyflyte-awssecrets serve --secret-agent off --http 127.0.0.1:0 --allow="$secret_id" \
    --token-file "$work/token" --ready-file "$work/ready" 2> "$work/serve.log" &
server=$!
cleanup() {
    kill -TERM "$server" 2> /dev/null || true
    wait "$server" || echo "serve exited with $?" >&2
    rm -rf "$work"
}
trap cleanup EXIT
i=0
while [ ! -s "$work/ready" ]; do
    i=$((i + 1))
    if [ "$i" -gt 300 ] || ! kill -0 "$server" 2> /dev/null; then
        echo "the secrets endpoint did not start:" >&2
        cat "$work/serve.log" >&2
        exit 1
    fi
    sleep 0.1
done
addr=$(jq -r .http "$work/ready")

# The API answers GetSecretValue's JSON; SecretString holds the secret (here a JSON object). An error is
# AWS's JSON error ({"__type": ..., "message": ...}), which names the secret but holds no value.
if ! doc=$(curl -sS --fail-with-body --max-time 30 \
    -H "X-Aws-Parameters-Secrets-Token: $(cat "$work/token")" \
    --get --data-urlencode "secretId=$secret_id" "http://$addr/secretsmanager/get"); then
    echo "could not read $secret_id: $doc" >&2
    exit 1
fi
password=$(printf '%s' "$doc" | jq -er '.SecretString | fromjson | .password')

# ... use "$password" here (a database client, a deploy tool). Show only a fingerprint.
printf '%s' "$password" | sha256sum | cut -c1-12 > "$out/fingerprint"
echo "read secret: sha256 prefix $(cat "$out/fingerprint")"
"""

# The plugin from a wheel built in this checkout (`python -m pip wheel --no-deps -w dist .`, run pyflyte from
# the checkout's root): ImageSpec copies it in and installs it. Once the package is published on PyPI,
# `packages=["flytekitplugins-awssecrets"]` replaces `copy` and `commands`.
WHEEL = "dist/flytekitplugins_awssecrets-0.1.0-py3-none-any.whl"
image = ImageSpec(
    name="awssecrets-serve-example",
    apt_packages=["curl", "jq"],
    copy=[WHEEL],
    commands=[f"uv pip install /root/{WHEEL}"],
    registry=os.environ.get("IMAGE_REGISTRY", "localhost:30000"),
)

read_with_curl = ContainerTask(
    name="read_with_curl",
    image=image,
    input_data_dir="/var/inputs",
    output_data_dir="/var/outputs",
    inputs=kwtypes(secret_id=str),
    outputs=kwtypes(fingerprint=str),
    command=["/bin/sh", "-c", SCRIPT, "read_with_curl", "{{.inputs.secret_id}}", "/var/outputs"],
    environment={"AWS_REGION": os.environ.get("AWS_REGION", "us-east-1")},
)


@workflow
def serve_wf(secret_id: str = "prod/db") -> str:  # noqa: S107 - a secret name, not a value
    return read_with_curl(secret_id=secret_id)
