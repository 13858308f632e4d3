"""Webhook files are used only where the cluster mode says the webhook serves them (issue 21, item 8).

Through real ``pyflyte serialize`` and ``pyflyte-execute``: in ``plugin`` mode a file left under the webhook
directory never wins over AWS; in ``webhook`` mode the webhook's own file is used where it is (never copied),
and ``get_secrets_file`` returns its path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flytekitplugins_awssecrets import split_arn
from tests.conftest import new_value
from tests.support.image import fake_image
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


def _image(tmp: Path, webhook: Path) -> Path:
    """An image whose settings file says where the cluster's webhook mounts (a pod takes it only from there)."""
    return fake_image(tmp / "image", f"webhook_dir: {json.dumps(str(webhook))}\n")


def _spec(mode: str, env: dict[str, str], tmp: Path) -> Any:
    specs = serialize_tasks(
        "tests.guarded",
        tmp / f"spec-{mode}",
        {**env, "FLYTE_AWS_SECRETS_CLUSTER_MODE": mode},
        "*guarded.wf.guarded_1.pb",
    )
    (spec,) = specs.values()
    return spec


def _run(mode: str, arn: str, webhook: Path, aws_env: dict[str, str], tmp: Path) -> Any:
    env = _env(aws_env, GUARD_ARN=arn, GUARD_WEBHOOK_DIR=str(webhook))
    spec = _spec(mode, env, tmp)
    # The pod's own settings say nothing of the mode: what registration decided is what counts.
    p = run_pod(spec, tmp / "pod", env, python=_image(tmp, webhook))
    assert p.returncode == 0, p.stderr[-3000:]
    return _output(tmp / "pod")


def _error(work: Path) -> Any:
    from flyteidl.core import errors_pb2

    if not (work / "out" / "error.pb").exists():
        return None
    doc = errors_pb2.ErrorDocument()
    doc.ParseFromString((work / "out" / "error.pb").read_bytes())
    return doc


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


def test_a_launchers_env_cannot_point_the_pod_at_files_it_planted(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    """An execution's envs are the launcher's: in a webhook-mode pod, pointing ``webhook_dir`` at a directory
    it filled (input files land in the pod) is refused before user code, as is claiming webhook mode for a
    task registered for the plugin; flytekit's own ``FLYTE_SECRETS_DEFAULT_DIR`` is not a place the plugin
    reads values from. The planted value never reaches the task; the image's ``webhook_dir`` keeps working."""
    from flyteidl.core import errors_pb2, execution_pb2

    arn, value = secrets_factory.secret(f"{unique}/attacked")
    real, attacker = tmp_path / "webhook", tmp_path / "inputs"
    _webhook_file(real, arn, value)
    planted = new_value("planted")
    _webhook_file(attacker, arn, planted)
    marker = tmp_path / "ran"
    env = _env(aws_env, GUARD_ARN=arn, GUARD_WEBHOOK_DIR=str(real), GUARD_MARKER=str(marker))
    python = _image(tmp_path, real)
    image_file = str(tmp_path / "image" / "etc" / "flyte" / "aws-secrets.yaml")
    webhook_spec = _spec("webhook", env, tmp_path)
    hostile = [
        ("webhook_dir", webhook_spec, {"FLYTE_AWS_SECRETS_WEBHOOK_DIR": str(attacker)}),
        # A plugin-mode task: the webhook served nothing, so no file may be read, whatever the env says.
        (
            "cluster_mode",
            _spec("plugin", env, tmp_path),
            {"FLYTE_AWS_SECRETS_CLUSTER_MODE": "webhook"},
        ),
        (
            "cluster_modes",
            _spec("plugin", env, tmp_path / "again"),
            {"FLYTE_AWS_SECRETS_CLUSTER_MODES": '{"*/development": "webhook"}'},
        ),
    ]
    for i, (setting, spec, extra) in enumerate(hostile):
        work = tmp_path / f"pod{i}"
        p = run_pod(spec, work, {**env, **extra}, python=python)
        doc = _error(work)
        assert doc is not None, (setting, p.stderr[-3000:])
        message = doc.error.message
        assert "UntrustedSettingError" in message and f"setting {setting!r}" in message, message[-1500:]
        assert image_file in message  # the fix names the image's file
        assert doc.error.kind == errors_pb2.ContainerError.NON_RECOVERABLE
        assert doc.error.origin == execution_pb2.ExecutionError.USER
        assert not marker.exists(), f"user code ran with a hostile {setting}"
        assert not (work / "out" / "outputs.pb").exists()
        leaked = planted in message + p.stdout + p.stderr
        assert not leaked, f"the planted value reached the pod ({setting})"

    # flytekit's own variables are the launcher's too: the plugin reads webhook files only under the image's
    # webhook_dir and takes no _FSEC_ variable in a pod, so the task gets the webhook's file (AWS's value)
    # and AWS's value, not the planted one (which would also show as file=mounted).
    from flytekitplugins_awssecrets.flytekit.names import flytekit_names

    group, key = split_arn(arn)
    flytekits = {"FLYTE_SECRETS_DEFAULT_DIR": str(attacker), flytekit_names(group, key, None)[0]: planted}
    work = tmp_path / "pod-flytekit-vars"
    p = run_pod(webhook_spec, work, {**env, **flytekits}, python=python)
    assert _error(work) is None, p.stderr[-3000:]
    assert _output(work) == "ran: file=webhook same=True"
    leaked = planted in p.stdout + p.stderr
    assert not leaked
