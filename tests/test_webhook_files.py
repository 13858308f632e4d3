"""Webhook files are used only where the cluster mode says the webhook serves them (issue 21, item 8).

Through real ``pyflyte serialize`` and ``pyflyte-execute``: in ``plugin`` mode a file left under the webhook
directory never wins over AWS; in ``webhook`` mode the webhook's own file is used where it is (never copied),
and ``get_secrets_file`` returns its path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flytekitplugins_awssecrets import split_arn
from tests.conftest import new_value
from tests.support.pod import run_pod, serialize_tasks


def _env(aws_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "_FSEC_"))}
    env.update(aws_env)
    env.update(extra)
    return env


def _webhook_file(root: Path, arn: str, value: str) -> Path:
    group, key = split_arn(arn)
    path = root / group.lower() / key.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value)
    return path


def _output(work: Path) -> str:
    from flyteidl.core import literals_pb2

    out = literals_pb2.LiteralMap()
    out.ParseFromString((work / "out" / "outputs.pb").read_bytes())
    return str(out.literals["o0"].scalar.primitive.string_value)


def _run(mode: str, arn: str, webhook: Path, aws_env: dict[str, str], tmp: Path) -> Any:
    env = _env(aws_env, GUARD_ARN=arn, FLYTE_AWS_SECRETS_WEBHOOK_DIR=str(webhook))
    specs = serialize_tasks(
        "tests.guarded",
        tmp / "spec",
        {**env, "FLYTE_AWS_SECRETS_CLUSTER_MODE": mode},
        "*guarded.wf.guarded_1.pb",
    )
    (spec,) = specs.values()
    # The pod's own settings say nothing of the mode: what registration decided is what counts.
    p = run_pod(spec, tmp / "pod", env)
    assert p.returncode == 0, p.stderr[-3000:]
    return _output(tmp / "pod")


def test_plugin_mode_never_reads_a_leftover_webhook_file(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    arn, _ = secrets_factory.secret(f"{unique}/leftover")
    _webhook_file(tmp_path / "webhook", arn, new_value("stale"))
    # The FILE request would read the stale file if it won; the ENV_VAR request always reads AWS.
    assert _run("plugin", arn, tmp_path / "webhook", aws_env, tmp_path) == "ran: file=mounted same=True"


def test_webhook_mode_uses_the_webhooks_own_file(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    arn, value = secrets_factory.secret(f"{unique}/served")
    _webhook_file(tmp_path / "webhook", arn, value)
    assert _run("webhook", arn, tmp_path / "webhook", aws_env, tmp_path) == "ran: file=webhook same=True"
