"""A pod that cannot serve its AWS requests fails before user code, saying why (issue 21, item 1).

Registration takes the plugin's requests out of the spec; it also routes the container command through the
plugin's console script, so the pod itself carries the need for the plugin. Tested through real
``pyflyte serialize`` and the spec's command run as a pod runs it: in this venv (plugin on, plugin turned
off) and in a venv that has flytekit and not the plugin.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flytekit import ImageSpec, Secret, task
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.tools.translator import get_serializable

from flytekitplugins_awssecrets import aws_secret
from flytekitplugins_awssecrets.flytekit.podguard import SCRIPT, route_args
from tests.conftest import ROOT
from tests.support.pod import BIN, run_pod


def _env(aws_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "_FSEC_"))}
    env.update(aws_env)
    env.update(extra)
    return env


def _venv_without_plugin() -> Path:
    """A venv with this venv's flytekit and every other package, but not the plugin (no pip: a view of this
    venv's site-packages without the plugin's files, kept under .venv-compat/)."""
    import flytekit

    site = Path(flytekit.__file__).resolve().parent.parent
    key = hashlib.sha256(str(sorted(p.name for p in site.iterdir())).encode()).hexdigest()[:10]
    venv = ROOT / ".venv-compat" / f"no-plugin-{key}"
    if (venv / ".complete").exists():
        return venv
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = venv / "lib" / ver / "site-packages"
    for p in site.iterdir():
        if "awssecrets" in p.name.lower():
            continue  # the plugin's code, metadata (entry points) and editable-install hooks
        (target / p.name).unlink(missing_ok=True) if (target / p.name).is_symlink() else None
        if not (target / p.name).exists():
            (target / p.name).symlink_to(p)
    from importlib.metadata import distribution

    for ep in distribution("flytekit").entry_points:
        if ep.group == "console_scripts":
            module, func = ep.value.split(":")
            script = venv / "bin" / ep.name
            script.write_text(
                f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"
            )
            script.chmod(0o755)
    (venv / ".complete").write_text("ok")
    return venv


@pytest.fixture(scope="module")
def guarded_spec(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    env["GUARD_ARN"] = "arn:aws:secretsmanager:us-east-1:123456789012:secret:guard/registered"
    folder = tmp_path_factory.mktemp("guard") / "spec"
    folder.mkdir()
    from flyteidl.admin import task_pb2

    p = subprocess.run(
        [str(BIN / "pyflyte"), "--pkgs", "tests.guarded", "serialize", "--image", "registry.example/app:1"]
        + ["workflows", "-f", str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    (f,) = folder.glob("*guarded.wf.guarded_1.pb")
    spec = task_pb2.TaskSpec()
    spec.ParseFromString(f.read_bytes())
    return spec, p.stderr


def test_registration_routes_the_command_and_says_so(guarded_spec: tuple[Any, str]) -> None:
    spec, stderr = guarded_spec
    args = list(spec.template.container.args)
    assert args[:4] == [SCRIPT, "--cluster-mode", "plugin", "pyflyte-execute"], args
    assert not [s for s in spec.template.security_context.secrets if s.group.startswith("arn:")]
    assert f"its container command runs through {SCRIPT}" in stderr
    assert "fails before user code" in stderr


def test_routing_covers_fast_execute_and_is_idempotent() -> None:
    fast = [
        "pyflyte-fast-execute",
        "--additional-distribution",
        "s3://x",
        "--",
        "pyflyte-execute",
        "--inputs",
        "i",
    ]
    routed = route_args(fast, "webhook")
    assert routed == [
        SCRIPT,
        "--cluster-mode",
        "webhook",
        "pyflyte-fast-execute",
        "--additional-distribution",
    ] + [
        "s3://x",
        "--",
        SCRIPT,
        "--cluster-mode",
        "webhook",
        "pyflyte-execute",
        "--inputs",
        "i",
    ]
    assert route_args(routed, "webhook") == routed


def test_pod_with_the_plugin_runs_the_task(
    guarded_spec: tuple[Any, str], aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    arn, _ = secrets_factory.secret(f"{unique}/guard")
    spec, _ = guarded_spec
    p = run_pod(spec, tmp_path / "pod", _env(aws_env, GUARD_ARN=arn))
    assert p.returncode == 0, p.stderr[-3000:]
    from flyteidl.core import literals_pb2

    out = literals_pb2.LiteralMap()
    out.ParseFromString((tmp_path / "pod" / "out" / "outputs.pb").read_bytes())
    text = out.literals["o0"].scalar.primitive.string_value
    assert text == "ran: file=mounted same=True"


def test_pod_with_the_plugin_turned_off_fails_naming_requests_and_setting(
    guarded_spec: tuple[Any, str], aws_env: dict[str, str], tmp_path: Path
) -> None:
    from flyteidl.core import errors_pb2, execution_pb2

    spec, _ = guarded_spec
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:guard/registered"
    p = run_pod(spec, tmp_path / "pod", _env(aws_env, GUARD_ARN=arn, FLYTE_AWS_SECRETS_DISABLE="1"))
    doc = errors_pb2.ErrorDocument()
    doc.ParseFromString((tmp_path / "pod" / "out" / "error.pb").read_bytes())
    assert doc.error.origin == execution_pb2.ExecutionError.USER, p.stderr[-2000:]
    message = doc.error.message
    assert "PluginInactiveError" in message or "AWS requests" in message, message
    assert arn in message and "FLYTE_AWS_SECRETS_DISABLE" in message and "user code was not run" in message
    assert not (tmp_path / "pod" / "out" / "outputs.pb").exists()


def test_pod_without_the_plugin_fails_at_its_first_command(
    guarded_spec: tuple[Any, str], tmp_path: Path
) -> None:
    venv = _venv_without_plugin()
    # The venv is real: flytekit runs there, and nothing of the plugin is importable or registered.
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import flytekit, importlib.util, importlib.metadata as m;"
            "print(importlib.util.find_spec('flytekitplugins_awssecrets') is None,"
            "[e.name for e in m.entry_points(group='flytekit.plugins') if 'awssecrets' in e.name])",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.stdout.strip() == "True []", probe.stderr[-2000:]
    spec, _ = guarded_spec
    assert (venv / "bin" / "pyflyte-execute").exists()
    with pytest.raises(FileNotFoundError) as e:
        run_pod(spec, tmp_path / "pod", {"PATH": str(venv / "bin")}, bin_dir=venv / "bin")
    assert SCRIPT in str(e.value)
    assert not (tmp_path / "pod" / "out" / "outputs.pb").exists()


# --- registration: ImageSpec without the plugin, ANY with env_var --------------------------------------------


def _settings() -> SerializationSettings:
    return SerializationSettings(
        image_config=ImageConfig(default_image=Image(name="d", fqn="r/app", tag="1"))
    )


ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:guard/image"


def test_registration_warns_when_an_image_spec_lacks_the_plugin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # flytekit asks the registry whether the image exists; there is no registry here.
    monkeypatch.setattr(ImageSpec, "exist", lambda self: True)
    without = ImageSpec(name="no-plugin", packages=["pandas"], registry="r.example")
    with_it = ImageSpec(
        name="with-plugin", packages=["flytekitplugins-awssecrets>=0.1"], registry="r.example"
    )

    @task(secret_requests=[aws_secret(ARN)], container_image=without)
    def lacking() -> int:
        return 1

    @task(secret_requests=[aws_secret(ARN)], container_image=with_it)
    def having() -> int:
        return 1

    get_serializable({}, _settings(), lacking)
    err = capsys.readouterr().err
    assert "WARNING" in err and "'no-plugin'" in err and "does not install flytekitplugins-awssecrets" in err
    get_serializable({}, _settings(), having)
    assert "WARNING" not in capsys.readouterr().err


def test_any_with_env_var_is_refused_at_registration_and_before_a_local_run() -> None:
    req = Secret(group=aws_secret(ARN).group, key=aws_secret(ARN).key, env_var="TOKEN")
    assert req.mount_requirement == Secret.MountType.ANY

    @task(secret_requests=[req])
    def t() -> int:
        return 1

    with pytest.raises(Exception) as e:
        get_serializable({}, _settings(), t)
    assert "ANY with env_var='TOKEN'" in str(e.value) and ARN in str(e.value)
    from flytekitplugins_awssecrets.errors import SecretResolutionError

    with pytest.raises(SecretResolutionError) as local:
        t()
    assert "ANY with env_var='TOKEN'" in str(local.value)
