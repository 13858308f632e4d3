"""Flyte 2 adapter steps in this process: import cost, the version guard, bad requests, aliases, all-or-nothing
placement, and the webhook's files. Marked ``flyte2_compat`` (see tests/test_flyte2_versions.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

flyte = pytest.importorskip("flyte")

from tests.conftest import ROOT  # noqa: E402
from tests.test_flyte2 import REGION_GROUP, _sha  # noqa: E402

pytestmark = pytest.mark.flyte2_compat


def test_import_flyte_and_init_load_the_adapter_without_boto3() -> None:
    code = textwrap.dedent(
        """
        import sys
        import flyte
        heavy = [m for m in ("boto3", "botocore", "flytekit") if m in sys.modules]
        assert not heavy, heavy
        flyte.init()
        from flytekitplugins_awssecrets.flyte2.entrypoint import state
        assert state.get("adapter") == "loaded", "flyte.init() did not load the flyte.plugins.types entry point"
        # flyte's task runner is patched when flyte imports it, not imported by the plugin at init.
        lazy = [m for m in ("flyte._internal.runtime.taskrunner", "flyte._internal.runtime.task_serde") if m in sys.modules]
        assert not lazy, lazy
        from flytekitplugins_awssecrets.flyte2.hooks import installed
        assert installed(), "run_task was not patched when the task runner was imported"
        heavy = [m for m in ("boto3", "botocore", "flytekit") if m in sys.modules]
        assert not heavy, heavy
        print("OK")
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.stdout.strip().endswith("OK"), p.stdout[-1000:] + p.stderr[-2000:]


def test_unknown_flyte_version_turns_the_adapter_off_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flytekitplugins_awssecrets.flyte2 import hooks

    monkeypatch.setattr(hooks, "_version", lambda: (2, 99))
    monkeypatch.setattr(hooks, "_warned", False)
    with pytest.warns(hooks.Flyte2AdapterDisabledWarning, match="2.99") as record:
        assert hooks.install() is False
        assert hooks.install() is False
    assert len(record) == 1


def test_requests_the_plugin_cannot_serve_are_typed_errors_naming_them() -> None:
    from flytekitplugins_awssecrets.errors import SecretResolutionError
    from flytekitplugins_awssecrets.flyte2 import aws_secret
    from flytekitplugins_awssecrets.flyte2.requests import aws_requests

    good = aws_secret(REGION_GROUP + "ok-AAAAAA", as_env_var="OK")
    moved = aws_secret(REGION_GROUP + "moved-AAAAAA")
    moved.mount = Path("/somewhere/else")  # type: ignore[assignment]
    bad_key = flyte.Secret(group=REGION_GROUP, key="bad name!", as_env_var="BAD")
    other = flyte.Secret(key="plain-secret")  # not ours: left to Flyte
    with pytest.raises(SecretResolutionError) as e:
        aws_requests([good, moved, bad_key, other])
    text = str(e.value)
    assert "/somewhere/else" in text and "bad name!" in text and "ok-AAAAAA" not in text
    assert [r.as_env_var for r in aws_requests([good, other])] == ["OK"]


def test_alias_json_key_and_all_or_nothing_in_process(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter's own steps, in this process: an alias with a JSON key, then a task whose second request
    collides with a running task's variable: nothing of it is placed, the running task keeps its value."""
    from flytekitplugins_awssecrets.errors import SecretResolutionError
    from flytekitplugins_awssecrets.flyte2 import aws_secret
    from flytekitplugins_awssecrets.flyte2.requests import aws_requests
    from flytekitplugins_awssecrets.flyte2.run import prepare
    from flytekitplugins_awssecrets.resolver import reset_process_state

    arn, value = secrets_factory.secret(f"f2/{unique}/alias", {"k": "kv-" + unique * 2})
    other, _ = secrets_factory.secret(f"f2/{unique}/other")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_ALIASES", json.dumps({"Aliased": arn}))
    reset_process_state()
    for name in ("ALIASED_K", "HELD", "NEW_ONE"):
        monkeypatch.delenv(name, raising=False)

    held, sensitive, *_ = prepare(
        aws_requests([aws_secret("Aliased", json_key="k", as_env_var="ALIASED_K")]), "t"
    )
    try:
        assert _sha(os.environ["ALIASED_K"]) == _sha(value["k"])
        assert sensitive.contains(os.environ["ALIASED_K"])
    finally:
        held.release()
    assert "ALIASED_K" not in os.environ

    first, *_ = prepare(aws_requests([aws_secret(arn, as_env_var="HELD")]), "running")
    try:
        before = _sha(os.environ["HELD"])
        with pytest.raises(SecretResolutionError) as e:
            prepare(
                aws_requests([aws_secret(arn, as_env_var="NEW_ONE"), aws_secret(other, as_env_var="HELD")]),
                "late",
            )
        assert "HELD" in str(e.value) and other in str(e.value) and "'late'" in str(e.value)
        # Flyte 2 names variables exactly as as_env_var: the fix must not speak of flytekit's upper-casing.
        assert "another as_env_var" in str(e.value) and "upper-cases" not in str(e.value)
        assert "NEW_ONE" not in os.environ, "a request was placed although its task failed"
        assert _sha(os.environ["HELD"]) == before
    finally:
        first.release()
    assert "HELD" not in os.environ


def test_a_file_the_webhook_mounted_is_taken_not_read_again(
    secrets_factory: Any, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a pod with Flyte's AWS webhook: a mount request the webhook served is taken from its file (the ARN
    below does not exist in AWS, so a read would fail); a missing one beside it is still named."""
    from flytekitplugins_awssecrets.errors import SecretResolutionError
    from flytekitplugins_awssecrets.flyte2 import aws_secret
    from flytekitplugins_awssecrets.flyte2.mount import DIR_ENV
    from flytekitplugins_awssecrets.flyte2.requests import aws_requests, file_parts
    from flytekitplugins_awssecrets.flyte2.run import prepare
    from flytekitplugins_awssecrets.resolver import reset_process_state
    from tests.conftest import new_value

    webhook = tmp_path / "etc-flyte-secrets"
    served = REGION_GROUP + f"served-{unique}-AAAAAA"
    value = new_value()
    target = webhook.joinpath(*file_parts(REGION_GROUP, f"served-{unique}-AAAAAA"))
    target.parent.mkdir(parents=True)
    target.write_text(value)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_WEBHOOK_DIR", str(webhook))
    reset_process_state()
    from flytekitplugins_awssecrets.flyte2 import pod

    # A local run never takes a webhook file (there is no webhook): AWS is asked, and this ARN is not there.
    with pytest.raises(SecretResolutionError):
        prepare(aws_requests([aws_secret(served)]), "local")
    # A pod registered for a webhook cluster (flyte-awssecrets-a0 --cluster-mode webhook) takes it.
    monkeypatch.setattr(pod, "_registered_mode", "webhook")
    held, *_ = prepare(aws_requests([aws_secret(served)]), "pod")
    try:
        ours = Path(os.environ[DIR_ENV]).joinpath(*file_parts(REGION_GROUP, f"served-{unique}-AAAAAA"))
        assert _sha(ours.read_text()) == _sha(value)
    finally:
        held.release()

    missing = REGION_GROUP + f"absent-{unique}-BBBBBB"
    with pytest.raises(SecretResolutionError) as e:
        prepare(aws_requests([aws_secret(served), aws_secret(missing)]), "pod")
    assert missing in str(e.value) and served not in str(e.value)


BAD_TASKS = """
import json, os, pathlib
import flyte
from flytekitplugins_awssecrets.flyte2 import aws_secret

moved = aws_secret(os.environ["T_ARN_A"])
moved.mount = pathlib.Path("/somewhere/else")  # flyte refuses it at declaration; a plugin may not get past it
bad = flyte.TaskEnvironment("bad", secrets=[
    aws_secret(os.environ["T_ARN_A"], as_env_var="GOOD"),
    flyte.Secret(group="arn:aws:secretsmanager:us-east-1:12345:secret:", key="short-account-AbC123", as_env_var="X"),
    moved,
])
top = flyte.TaskEnvironment("top", depends_on=[bad])


@bad.task
async def victim() -> str:
    pathlib.Path(os.environ["T_MARKER"]).write_text("ran")
    return "never"


@top.task
async def caller() -> str:
    try:
        await victim()
        error = ""
    except Exception as e:
        error = type(e).__name__ + ": " + str(e)
    return json.dumps({"error": error, "good_seen": "GOOD" in os.environ,
                       "dir": os.environ.get("FLYTE_SECRETS_DEFAULT_DIR")})
"""


def test_bad_requests_fail_before_user_code_naming_each_with_nothing_placed(
    secrets_factory: Any, unique: str, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """An ARN-looking group the plugin cannot parse and a ``mount`` flyte does not allow, beside a good request:
    one typed error naming both, no user code, and the good one never placed."""
    from tests.test_flyte2 import _env, _leftovers

    arn, _ = secrets_factory.secret(f"f2/{unique}/good")
    (tmp_path / "badtasks.py").write_text(BAD_TASKS)
    env = _env(aws_env, T_ARN_A=arn, T_MARKER=str(tmp_path / "marker"))
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    code = "import flyte, badtasks; flyte.init(); print('RESULT=' + flyte.run(badtasks.caller).outputs()[0])"
    before = _leftovers()
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert "RESULT=" in p.stdout, (p.stdout + p.stderr)[-3000:]
    result = json.loads(p.stdout.split("RESULT=", 1)[1].splitlines()[0])
    error = result["error"]
    assert "arn:aws:secretsmanager:us-east-1:12345:secret:short-account-AbC123" in error, error
    assert "/somewhere/else" in error and "/etc/flyte/secrets" in error, error
    assert "2 secret requests" in error or error.count("invalid reference") == 2, error
    assert not (tmp_path / "marker").exists(), "user code ran although its requests were bad"
    assert result["good_seen"] is False and result["dir"] is None
    assert _leftovers() == before


def test_environ_views_are_per_context_and_the_real_mapping_comes_back() -> None:
    """The overlay behind ``os.environ`` in this process: two asyncio tasks at once each read, iterate, copy
    and delete only their own names; a name of the real environment shows through; the same mapping object is
    put back after the last view (the values here are not secrets)."""
    import asyncio

    from flytekitplugins_awssecrets.flyte2 import environ

    real = os.environ._data  # type: ignore[attr-defined]
    os.environ["T_VIEW_REAL"] = "real"
    seen: dict[str, Any] = {}

    async def task(name: str) -> None:
        scope = environ.enter({name: "v-" + name})
        try:
            await asyncio.sleep(0.05)  # both views exist now
            seen[name] = (
                os.environ.get(name),
                os.getenv("T_VIEW_REAL"),
                sorted(k for k in os.environ if k.startswith("T_VIEW_")),
                sorted(k for k in os.environ.copy() if k.startswith("T_VIEW_")),
                os.environb.get(name.encode()),
            )
            del os.environ[name]
            seen[name + "/deleted"] = name in os.environ
        finally:
            environ.leave(scope)

    async def main() -> None:
        await asyncio.gather(task("T_VIEW_A"), task("T_VIEW_B"))

    try:
        asyncio.run(main())
    finally:
        os.environ.pop("T_VIEW_REAL", None)
    for mine in ("T_VIEW_A", "T_VIEW_B"):
        assert seen[mine] == (
            "v-" + mine,
            "real",
            sorted([mine, "T_VIEW_REAL"]),
            sorted([mine, "T_VIEW_REAL"]),
            ("v-" + mine).encode(),
        )
        assert seen[mine + "/deleted"] is False
    assert os.environ._data is real and os.environb._data is real  # type: ignore[attr-defined]
    assert not environ.installed() and "T_VIEW_A" not in os.environ


def test_a_pod_template_container_running_a0_is_routed_and_others_are_not() -> None:
    """A task with a pod template carries its command in the pod spec's containers (flyte needs the kubernetes
    client to build one, so the template is built here): the container that runs ``a0`` is routed, idempotently;
    a sidecar is left alone."""
    from flyteidl2.core import tasks_pb2
    from google.protobuf.json_format import MessageToDict

    from flytekitplugins_awssecrets.flyte2.cluster import _route_template

    tt = tasks_pb2.TaskTemplate()
    tt.k8s_pod.pod_spec.update(
        {
            "containers": [
                {"name": "primary", "args": ["a0", "--inputs", "x", "--resolver", "r", "mod", "m"]},
                {"name": "sidecar", "args": ["sleep", "1"]},
            ]
        }
    )
    assert _route_template(tt, "webhook") is True
    assert _route_template(tt, "plugin") is True  # re-serialized: the mode is replaced, not stacked
    containers = {c["name"]: c["args"] for c in MessageToDict(tt.k8s_pod.pod_spec)["containers"]}
    assert containers["primary"] == [
        "flyte-awssecrets-a0",
        "--cluster-mode",
        "plugin",
        "a0",
        "--inputs",
        "x",
        "--resolver",
        "r",
        "mod",
        "m",
    ]
    assert containers["sidecar"] == ["sleep", "1"]
    plain = tasks_pb2.TaskTemplate()
    plain.container.args.extend(["cat", "/etc/flyte/secrets/x"])
    assert _route_template(plain, "plugin") is False and list(plain.container.args)[0] == "cat"
