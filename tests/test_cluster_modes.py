"""What reaches the cluster, per cluster mode, and the hooks that decide it.

Through real ``pyflyte serialize`` and ``pyflyte-execute`` where the cluster is concerned; in-process
through flytekit's own translator for launch plans and per-project/domain modes.
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

from tests.conftest import ROOT
from tests.support.pod import run_pod, serialize_tasks

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.compat


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "_FSEC_"))}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="400", AWS_EC2_METADATA_DISABLED="true")
    env.update(extra)
    return env


def _serialize(package: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True)
    return subprocess.run(
        [
            str(BIN / "pyflyte"),
            "--pkgs",
            package,
            "serialize",
            "--image",
            "registry.example/app:1",
            "workflows",
            "-f",
            str(folder),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_registration_says_what_it_did(tmp_path: Path) -> None:
    p = _serialize("tests.modes", tmp_path / "w", _env(FLYTE_AWS_SECRETS_CLUSTER_MODE="webhook"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert (
        "task examples.secrets_demo.call_api (cluster mode webhook): 2 AWS requests kept for the cluster's "
        "webhook, 2 resolved in the pod"
    ) in p.stdout + p.stderr


def test_container_task_fails_registration_in_plugin_mode(tmp_path: Path) -> None:
    p = _serialize("tests.container_tasks", tmp_path / "p", _env())
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode != 0
    assert "UnservableRequestError" in out or "does not run flytekit in its pod" in out
    assert "ct_raw" in out and "arn:aws:secretsmanager:us-east-1:123456789012:secret:ct/value" in out
    assert "pyflyte-awssecrets serve" in out and "webhook" in out
    assert not list((tmp_path / "p").glob("*.pb"))


def test_container_task_in_webhook_mode(tmp_path: Path) -> None:
    # ENV_VAR: the AWS webhook would refuse it, and nothing else can serve it: registration fails.
    p = _serialize("tests.container_tasks", tmp_path / "env", _env(FLYTE_AWS_SECRETS_CLUSTER_MODE="webhook"))
    assert p.returncode != 0 and "does not serve it as written" in " ".join((p.stdout + p.stderr).split())
    # FILE with a plain key: kept in the spec exactly as written, for the webhook to mount.
    env = _env(FLYTE_AWS_SECRETS_CLUSTER_MODE="webhook", CT_MOUNT="FILE")
    specs = serialize_tasks("tests.container_tasks", tmp_path / "file", env, "*_1.pb")
    (spec,) = specs.values()
    (s,) = spec.template.security_context.secrets
    assert (s.group, s.key) == ("arn:aws:secretsmanager:us-east-1:123456789012:secret:", "ct/value")
    assert json.loads(spec.template.config["awssecrets.requests"])[0]["served_by"] == "webhook"


def test_misconfiguration_is_a_user_error_at_registration_and_in_the_pod(
    aws_env: dict[str, str], tmp_path: Path
) -> None:
    env = _env(**aws_env)
    spec = serialize_tasks("tests.modes", tmp_path / "spec", env, "*.call_api_*.pb")[
        "examples.secrets_demo.call_api"
    ]
    bad = dict(env, FLYTE_AWS_SECRETS_CACHE_TTL="5")
    p = _serialize("tests.modes", tmp_path / "bad", bad)
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode != 0
    assert "FLYTE_AWS_SECRETS_CACHE_TTL" in out and "FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS" in out

    run_pod(spec, tmp_path / "pod", bad)
    from flyteidl.core import errors_pb2, execution_pb2

    doc = errors_pb2.ErrorDocument()
    doc.ParseFromString((tmp_path / "pod" / "out" / "error.pb").read_bytes())
    assert doc.error.kind == errors_pb2.ContainerError.NON_RECOVERABLE
    assert doc.error.origin == execution_pb2.ExecutionError.USER
    assert "FLYTE_AWS_SECRETS_CACHE_TTL" in doc.error.message and "valid names" in doc.error.message


# --- in-process: launch plans, modes per project/domain --------------------------------------------------------


def _settings(project: str = "ml", domain: str = "production") -> Any:
    from flytekit.configuration import Image, ImageConfig, SerializationSettings

    return SerializationSettings(
        project=project,
        domain=domain,
        version="v1",
        image_config=ImageConfig(default_image=Image(name="d", fqn="r/app", tag="1")),
    )


def test_mode_per_project_and_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import OrderedDict

    from flytekit.tools.translator import get_serializable

    from examples.secrets_demo import call_api

    monkeypatch.setenv(
        "FLYTE_AWS_SECRETS_CLUSTER_MODES", '{"ml/production": "webhook", "*/development": "plugin"}'
    )
    prod = get_serializable(OrderedDict(), _settings("ml", "production"), call_api)
    dev = get_serializable(OrderedDict(), _settings("ml", "development"), call_api)
    assert (
        prod.template.config["awssecrets.mode"] == "webhook"
        and len(prod.template.security_context.secrets) == 2
    )
    assert dev.template.config["awssecrets.mode"] == "plugin" and not dev.template.security_context.secrets
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CLUSTER_MODES", '{"ml": "webhook"}')
    from flytekit.exceptions.user import FlyteUserException

    with pytest.raises(FlyteUserException, match="cluster_modes"):
        get_serializable(OrderedDict(), _settings("other", "x"), call_api)


def test_launch_plan_requests_are_never_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import OrderedDict

    from flytekit import LaunchPlan, Secret
    from flytekit.exceptions.user import FlyteUserException
    from flytekit.models.security import SecurityContext
    from flytekit.tools.translator import get_serializable

    from examples.secrets_demo import demo_wf
    from flytekitplugins_awssecrets import aws_secret

    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:lp/token"
    env_req = aws_secret(arn, mount_requirement=Secret.MountType.ENV_VAR)
    lp = LaunchPlan.get_or_create(demo_wf, name="lp_env", security_context=SecurityContext(secrets=[env_req]))
    with pytest.raises(FlyteUserException, match="launch plan 'lp_env'.*declare the request on the task"):
        get_serializable(OrderedDict(), _settings(), lp)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CLUSTER_MODE", "webhook")
    lp = LaunchPlan.get_or_create(
        demo_wf, name="lp_file", security_context=SecurityContext(secrets=[aws_secret(arn)])
    )
    out = get_serializable(OrderedDict(), _settings(), lp)
    assert [s.key for s in out.spec.security_context.secrets] == ["lp/token"]


# --- the hooks ------------------------------------------------------------------------------------------------

_ORDER_SCRIPT = textwrap.dedent(
    """
    import functools, os, sys
    os.environ["FLYTE_AWS_SECRETS_DISABLE"] = "1"
    import flytekit  # the plugin stays off until this script installs it
    from flytekit.core.base_task import PythonTask
    from flytekitplugins_awssecrets.flytekit import hooks as flyte

    calls = []

    def other_plugin():
        original = PythonTask.dispatch_execute

        @functools.wraps(original)
        def dispatch_execute(self, *args, **kwargs):
            calls.append("other")
            return original(self, *args, **kwargs)

        PythonTask.dispatch_execute = dispatch_execute

    if sys.argv[1] == "other-first":
        other_plugin(); flyte.install(); flyte.install()
    else:
        flyte.install(); other_plugin(); flyte.install()
    first = PythonTask.dispatch_execute
    flyte.install()
    assert PythonTask.dispatch_execute is first, "install() is idempotent"
    del os.environ["FLYTE_AWS_SECRETS_DISABLE"]

    from flytekit import task, current_context
    from flytekitplugins_awssecrets import aws_secret
    S = aws_secret(os.environ["ORDER_ARN"])

    @task(secret_requests=[S])
    def t() -> int:
        return len(current_context().secrets.get(S.group, S.key))

    print("len", t(), "calls", calls)
    """
)


@pytest.mark.parametrize("order", ["other-first", "ours-first"])
def test_hooks_compose_with_another_plugin_in_any_order(
    order: str, aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    arn, value = secrets_factory.secret(f"order{unique}")
    script = tmp_path / "order.py"  # flytekit reads a task's source: a file, not `python -c`
    script.write_text(_ORDER_SCRIPT)
    p = subprocess.run(
        [sys.executable, str(script), order],
        cwd=ROOT,
        env=_env(**aws_env, ORDER_ARN=arn),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"len {len(value)} calls ['other']" in p.stdout


def test_a_failing_plugin_never_breaks_import_flytekit() -> None:
    script = (
        "import sys, warnings; warnings.simplefilter('always')\n"
        "sys.modules['flytekitplugins_awssecrets.flytekit.hooks'] = None  # the hooks module cannot be imported\n"
        "import flytekit\n"
        "from flytekitplugins_awssecrets.flytekit import entrypoint as entrypoints\n"
        "from flytekit.core.base_task import PythonTask\n"
        "print(entrypoints.state['core'].split(':')[0], hasattr(PythonTask.dispatch_execute, '__awssecrets_patched__'))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == ["failed", "False"]
    assert p.stderr.count("PluginDisabledWarning") == 1 and "flytekit works without it" in p.stderr


def test_disable_guards_both_entry_points() -> None:
    script = (
        "import sys, flytekit\n"
        "from flytekitplugins_awssecrets.flytekit import entrypoint as entrypoints\n"
        "from flytekit.core.base_task import PythonTask\n"
        "print(sorted(entrypoints.state.values()), 'flytekitplugins_awssecrets.aptible.connector' in sys.modules,"
        " hasattr(PythonTask.dispatch_execute, '__awssecrets_patched__'))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=_env(FLYTE_AWS_SECRETS_DISABLE="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "['disabled', 'disabled'] False False"


def test_arn_ish_groups_are_left_to_flytekit(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from flytekitplugins_awssecrets.refs import is_aws_group, reference_from_request

    with caplog.at_level(logging.DEBUG, logger="flytekitplugins_awssecrets"):
        assert not is_aws_group("arn:aws:s3:::my-bucket")
        assert reference_from_request("arn:aws:iam::123456789012:role/x", "k") is None
    assert "left to flytekit" in caplog.text
    # The forms flytekit and the AWS webhook accept: a group without its trailing ':'.
    ref = reference_from_request("arn:aws:secretsmanager:us-east-1:123456789012:secret", "prod/db-XyZ123")
    assert ref is not None and ref.name == "prod/db-XyZ123"


def test_a_request_the_plugin_does_not_parse_is_served_by_flytekit(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``arn:``-ish group the plugin does not parse is left alone: flytekit's own variable serves it, and
    no AWS call is made (there is no AWS endpoint in this test)."""
    from flytekit import Secret, current_context, task

    req = Secret(group="arn:aws:s3:::bucket", key="token")
    monkeypatch.setenv("_FSEC_ARN:AWS:S3:::BUCKET_TOKEN", "from-flytekit")

    @task(secret_requests=[req])
    def t() -> int:
        return len(current_context().secrets.get(req.group, req.key))

    assert t() == len("from-flytekit")


def test_group_version_is_validated_when_the_request_is_built() -> None:
    from flytekitplugins_awssecrets import InvalidReferenceError, aws_secret

    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db"
    assert aws_secret(arn, group_version="v-1").group_version == "v-1"
    with pytest.raises(InvalidReferenceError, match="not a version id"):
        aws_secret(arn, group_version="bad version!")
    with pytest.raises(InvalidReferenceError, match="not both"):
        aws_secret(arn, version_stage="AWSPREVIOUS", group_version="v-1")


def test_container_task_run_locally_fails_before_its_container(tmp_path: Path) -> None:
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", "tests/container_tasks/tasks.py", "raw"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode != 0
    assert "ContainerTask runs its own container" in out and "pyflyte-awssecrets serve" in out


def test_entry_points_load_what_this_flytekit_supports() -> None:
    script = (
        "import importlib.util, flytekit\n"
        "from flytekitplugins_awssecrets.flytekit import entrypoint as entrypoints\n"
        "has = importlib.util.find_spec('flytekit.extend.backend.base_connector') is not None\n"
        "print(entrypoints.state['core'], entrypoints.state['aptible'], has)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-3000:]
    core, aptible, has_connector_base = p.stdout.split()
    assert core == "loaded"
    # Without flytekit's connector base classes (flytekit < 1.16) the connector is simply not registered.
    assert aptible == ("loaded" if has_connector_base == "True" else "unavailable")
    assert "Warning" not in p.stderr


def test_wrappers_pass_every_argument_through() -> None:
    """A keyword a future flytekit adds reaches flytekit untouched, and the wrapper keeps its metadata."""
    from flytekitplugins_awssecrets.flytekit import hooks as flyte

    seen: list[Any] = []

    def dispatch_execute(self: Any, ctx: Any, input_literal_map: Any, *, new_keyword: int = 0) -> str:
        seen.append((ctx, input_literal_map, new_keyword))
        return "out"

    wrapped = flyte._wrap_dispatch(dispatch_execute)
    assert wrapped.__wrapped__ is dispatch_execute and wrapped.__name__ == "dispatch_execute"
    assert wrapped(object(), "ctx", input_literal_map="lm", new_keyword=7) == "out"
    assert seen == [("ctx", "lm", 7)]

    def get(
        self: Any,
        group: Any = None,
        key: Any = None,
        group_version: Any = None,
        encode_mode: str = "r",
        future: Any = None,
    ) -> Any:
        return (group, key, future)

    assert flyte._wrap_get(get)(object(), "g", key="k", future=1) == ("g", "k", 1)
