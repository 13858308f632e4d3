"""One pod of P8: import, say ready, wait for the common start signal, read the secrets, report one JSON line.

    python -m benchmarks.fleet_child plugin|boto3 ARN_FILE

Protocol on stdio: the child prints ``ready`` once its imports are done, then blocks on stdin until the
parent writes ``go <epoch seconds>`` (the same instant for every child); then it reads the secrets and
prints ``{"ok": ..., "seconds": ..., "digest": ..., "error": ..., "retryable": ...}``. ``seconds`` runs from
the common instant to the last secret in hand. No value is printed: ``digest`` is a sha256 of them all.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time


def main(argv: list[str]) -> int:
    mode, arn_file = argv[0], argv[1]
    with open(arn_file, encoding="utf-8") as f:
        arns = f.read().split()
    # Imports happen before the start signal: every pod of a map task has done them before it reads. A
    # pod runs under pyflyte-execute, so flytekit (which loads the plugin's entry point) is imported in both.
    import flytekit  # noqa: F401

    # A task module that declares secret requests has built flytekit Secret objects, which import flytekit's
    # plugin registry (an entry-point scan), before the task runs.
    import flytekit.configuration.plugin  # noqa: F401

    if mode == "boto3":
        import boto3
    else:
        import botocore.session  # noqa: F401  (the plugin imports it on the first read)

        # The plugin's own modules too (the settings model needs pydantic), as the loop's has boto3.
        import flytekitplugins_awssecrets.resolver  # noqa: F401
        from flytekitplugins_awssecrets import get_secret_values
        from flytekitplugins_awssecrets.errors import AwsSecretsError
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    start = float(line[1]) if len(line) == 2 and line[0] == "go" else time.time()
    out: dict[str, object] = {"ok": False}
    cpu = time.process_time()
    try:
        if mode == "boto3":
            session = boto3.session.Session()
            sm = session.client("secretsmanager", region_name="us-east-1")
            values: list[str | bytes] = []
            for a in arns:
                if ":ssm:" in a:
                    name = "/" + a.split(":parameter/", 1)[1]
                    ssm = session.client("ssm", region_name="us-east-1")
                    values.append(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
                else:
                    values.append(sm.get_secret_value(SecretId=a)["SecretString"])
        else:
            values = get_secret_values(arns)
        out["ok"] = True
        digest = hashlib.sha256()
        for v in values:
            digest.update(v if isinstance(v, bytes) else v.encode())
        out["digest"] = digest.hexdigest()
    except Exception as e:  # noqa: BLE001 - reported by type: the measure is what kind of failure it is
        out["error"] = type(e).__name__
        out["typed"] = mode != "boto3" and isinstance(e, AwsSecretsError)
        out["retryable"] = bool(getattr(e, "retryable", False))
    out["seconds"] = time.time() - start
    out["cpu"] = time.process_time() - cpu
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
