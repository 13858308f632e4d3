"""Security guarantees, each with the test behind it (see docs/security.md):
leak guard, log redaction, fault tolerance, concurrency, process death, and the suite-wide leak check.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flytekit import current_context, task
from pydantic import BaseModel

from flytekitplugins_awssecrets import (
    AwsSecretsError,
    SecretLeakError,
    SecretResolutionError,
    aws_secret,
    get_secret_value,
)
from flytekitplugins_awssecrets.leakguard import LeakScanner
from tests.conftest import ROOT, new_value
from tests.support.pod import run_pod, serialize_tasks
from tests.support.proxy import CountingProxy, Faults

BIN = Path(sys.executable).parent


def _env(aws_env: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "_FSEC_"))}
    env.update(aws_env, PYTHONPATH=str(ROOT), COLUMNS="400", **extra)
    return env


# --- leak guard ----------------------------------------------------------------------------------------------


@dataclass
class Inner:
    note: str


class Model(BaseModel):
    items: list[str]


def test_scanner_finds_values_in_nested_outputs_and_base64() -> None:
    v = new_value()
    s = LeakScanner([("ref-A", v)])
    assert s.scan_python({"o0": {"a": [Inner(note=f"x{v}y")]}}) == [("ref-A", "o0['a'][0].note")]
    assert s.scan_python({"o0": Model(items=["ok", v])})[0][0] == "ref-A"
    for prefix in ("", "a", "ab", "abc"):
        blob = base64.b64encode((prefix + v + "tail").encode()).decode()
        assert s.scan_python({"o0": blob}), prefix
        assert s.scan_python({"o0": base64.urlsafe_b64encode((prefix + v).encode()).decode()})
    assert s.scan_python({"o0": ("fine", 1, None, b"bytes")}) == []
    assert s.scan_bytes(("prefix" + v).encode(), "literal") == [("ref-A", "literal")]


def test_task_returning_its_secret_fails_naming_the_reference(secrets_factory: Any, unique: str) -> None:
    arn, v = secrets_factory.secret(f"{unique}/leak")
    req = aws_secret(arn)

    @task(secret_requests=[req])
    def leaky() -> str:
        return "value: " + current_context().secrets.get(req.group, req.key)

    @task(secret_requests=[req])
    def leaky_b64() -> Inner:
        return Inner(
            note=base64.b64encode(current_context().secrets.get(req.group, req.key).encode()).decode()
        )

    for t in (leaky, leaky_b64):
        with pytest.raises(SecretLeakError) as e:
            t()
        assert e.value.reference == arn and v not in str(e.value)


def test_leak_guard_can_be_turned_off(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn, v = secrets_factory.secret(f"{unique}/allowed")
    req = aws_secret(arn)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_LEAK_GUARD", "false")

    @task(secret_requests=[req])
    def deliberate() -> int:
        return len(current_context().secrets.get(req.group, req.key))

    assert deliberate() == len(v)


def _serialize_and_run(env: dict[str, str], tmp: Path, task_name: str) -> Path:
    specs = serialize_tasks("tests.workflows", tmp / "spec", env, f"*.{task_name}_*.pb")
    (spec,) = specs.values()
    p = run_pod(spec, tmp, env)
    (tmp / "log.txt").write_text(p.stdout + p.stderr)
    return tmp / "out"


def test_pod_leak_writes_no_outputs(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    arn, v = secrets_factory.secret(f"{unique}/podleak")
    for name in ("returns_secret", "returns_b64_in_dataclass"):
        out = _serialize_and_run(_env(aws_env, LEAKY_ARN=arn), tmp_path / name, name)
        assert not (out / "outputs.pb").exists()
        from flyteidl.core import errors_pb2, execution_pb2

        doc = errors_pb2.ErrorDocument()
        doc.ParseFromString((out / "error.pb").read_bytes())
        assert "SecretLeakError" in doc.error.message and arn in doc.error.message
        assert doc.error.origin == execution_pb2.ExecutionError.USER
        assert v not in doc.error.message and v not in (tmp_path / name / "log.txt").read_text()


# --- redaction -----------------------------------------------------------------------------------------------


def test_logs_are_redacted_during_pyflyte_run(
    aws_env: dict[str, str], secrets_factory: Any, unique: str
) -> None:
    arn, v = secrets_factory.secret(f"{unique}/logged")
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", "tests/workflows/leaky.py", "log_wf"],
        cwd=ROOT, env=_env(aws_env, LEAKY_ARN=arn, FLYTE_SDK_LOGGING_LEVEL="20"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-2000:]
    assert v not in out
    assert "connecting with [REDACTED]" in out and "flytekit saw [REDACTED]" in out


def test_redaction_in_process(secrets_factory: Any, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    arn, v = secrets_factory.secret(f"{unique}/inproc")
    req = aws_secret(arn)

    @task(secret_requests=[req])
    def chatty() -> int:
        logging.getLogger("app").warning("using %s now", current_context().secrets.get(req.group, req.key))
        return 1

    with caplog.at_level(logging.WARNING):
        chatty()
    assert "using [REDACTED] now" in caplog.text and v not in caplog.text


# --- fault injection -----------------------------------------------------------------------------------------


def test_two_hundred_resolutions_under_thirty_percent_faults(
    secrets_factory: Any, aws_env: dict[str, str], unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flytekitplugins_awssecrets.resolver import resolve_requests

    # One set of secrets per worker thread: concurrent resolutions of the same secrets would share one
    # in-flight call (single flight), and each of the 200 must make its own.
    sets = [[secrets_factory.secret(f"{unique}/w{w}/f{i}") for i in range(3)] for w in range(8)]
    slot = threading.local()
    next_slot = iter(range(8))
    proxy = CountingProxy(
        aws_env["AWS_ENDPOINT_URL"], faults=Faults(rate=0.3, slow_seconds=1.2, seed=7)
    ).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS", "0")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_MAX_ATTEMPTS", "3")
    # Bound: 3 attempts x (time-out + the slowest fault) + botocore's standard backoff (at most 1 s, then 2 s).
    bound = 3 * (0.5 + 1.2) + 3 + 2
    outcomes: dict[str, int] = {"ok": 0, "typed": 0}
    lock = threading.Lock()

    def one(_: int) -> None:
        if not hasattr(slot, "i"):
            with lock:
                slot.i = next(next_slot)
        secrets = sets[slot.i]
        reqs = [aws_secret(a) for a, _ in secrets]
        t0 = time.monotonic()
        try:
            got = resolve_requests(reqs)
            assert [r.value for r in got] == [v for _, v in secrets], "partial or wrong values"
            kind = "ok"
        except SecretResolutionError as e:
            assert all(isinstance(x, AwsSecretsError) for x in e.errors)
            kind = "typed"
        elapsed = time.monotonic() - t0
        assert elapsed < bound, f"a resolution took {elapsed:.1f}s"
        with lock:
            outcomes[kind] += 1

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(200)))
    finally:
        proxy.stop()
    assert outcomes["ok"] + outcomes["typed"] == 200
    assert outcomes["ok"] > 100, outcomes  # retries recover most faults
    assert sum(proxy.faulted.values()) > 50 and set(proxy.faulted) == {"throttle", "5xx", "reset", "slow"}


def test_no_partial_mounts_under_faults(
    secrets_factory: Any, aws_env: dict[str, str], unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    arns = [
        secrets_factory.secret(f"{unique}/pm{i}", region=r)[0]
        for i, r in enumerate(["us-east-1", "eu-west-1", "us-east-1"])
    ]
    reqs = [aws_secret(a) for a in arns]
    proxy = CountingProxy(
        aws_env["AWS_ENDPOINT_URL"], faults=Faults(rate=0.4, kinds=("5xx", "reset"), seed=3)
    ).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS", "0")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_MAX_ATTEMPTS", "2")
    started = []

    @task(secret_requests=reqs)
    def needs_all() -> int:
        ctx = current_context()
        started.append(sum(1 for r in reqs if ctx.secrets.get(r.group, r.key)))
        return 1

    failures = 0
    try:
        for _ in range(30):
            try:
                needs_all()
            except SecretResolutionError:
                failures += 1
    finally:
        proxy.stop()
    assert started and all(n == 3 for n in started)
    assert failures > 0 and len(started) + failures == 30


# --- concurrency ---------------------------------------------------------------------------------------------


def test_sixty_four_threads_one_call(secrets_factory: Any, counting_proxy: Any, unique: str) -> None:
    arn, v = secrets_factory.secret(f"{unique}/hot")
    counting_proxy.latency = 0.2  # keep the first call in flight while the others arrive
    barrier = threading.Barrier(64)

    def one(_: int) -> str | bytes:
        barrier.wait(10)
        return get_secret_value(arn)

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64), timeout=60))
    assert results == [v] * 64
    assert counting_proxy.total() == 1


def test_no_deadlock_under_load(secrets_factory: Any, counting_proxy: Any, unique: str) -> None:
    arns = [secrets_factory.secret(f"{unique}/load{i}")[0] for i in range(30)]
    from flytekitplugins_awssecrets import get_secret_values

    def one(i: int) -> int:
        subset = [arns[(i + k) % 30] for k in range(7)]
        return len(get_secret_values(subset))

    with ThreadPoolExecutor(32) as pool:
        assert list(pool.map(one, range(256), timeout=120)) == [7] * 256


# --- process death -------------------------------------------------------------------------------------------


def _start_holder(aws_env: dict[str, str], arn: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    marker = tmp / "path.txt"
    proc = subprocess.Popen(
        [str(BIN / "pyflyte"), "run", "tests/workflows/leaky.py", "hold_wf", "--marker", str(marker)],
        cwd=ROOT, env=_env(aws_env, LEAKY_ARN=arn), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists() or not marker.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, "the task never mounted its secret"
        time.sleep(0.1)
    return proc, marker.read_text()


def _filesystem_type(path: str) -> str:
    best = ("", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mnt, fstype, *_ = line.split()
        if path.startswith(mnt.rstrip("/") + "/") and len(mnt) > len(best[0]):
            best = (mnt, fstype)
    return best[1]


def test_sigterm_removes_secret_files(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    arn, _ = secrets_factory.secret(f"{unique}/term")
    proc, path = _start_holder(aws_env, arn, tmp_path)
    assert os.path.exists(path)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert not os.path.exists(path)
    assert not os.path.exists(os.path.dirname(os.path.dirname(path)))


def test_sigkill_leaves_nothing_on_persistent_disk(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    arn, _ = secrets_factory.secret(f"{unique}/kill")
    proc, path = _start_holder(aws_env, arn, tmp_path)
    assert _filesystem_type(path) == "tmpfs", "FILE secrets must live on a memory filesystem"
    proc.kill()
    proc.wait(60)
    # SIGKILL runs no handler: the file is only in memory, and the next process sweeps it.
    assert _filesystem_type(path) == "tmpfs"
    from flytekitplugins_awssecrets.mountdirs import _sweep_stale

    _sweep_stale(Path("/dev/shm"))
    assert not os.path.exists(path)


def test_secret_values_never_in_reprs(secrets_factory: Any, unique: str) -> None:
    from flytekitplugins_awssecrets.fetch import Fetched
    from flytekitplugins_awssecrets.mount import Resolved
    from flytekitplugins_awssecrets.refs import parse_reference
    from flytekitplugins_awssecrets.resolver import get_resolver

    arn, doc = secrets_factory.secret(f"{unique}/repr", {"password": new_value()})
    v = get_secret_value(arn)
    assert isinstance(v, str)
    ref = parse_reference(arn)
    texts = [
        repr(Fetched(v)),
        repr(Resolved("g", "k", None, "ANY", None, ref, v)),
        repr(get_resolver()),
        repr(get_resolver().cache),
    ]
    leaked = any(v in t or doc["password"] in t for t in texts)
    assert not leaked


# --- settings a task cannot change (issue 20, item 7) -------------------------------------------------------


def _template_env(spec: Any) -> dict[str, str]:
    """What a pod's container gets from its task template (Flyte writes it into the pod spec)."""
    return {kv.key: kv.value for kv in spec.template.container.env}


@pytest.fixture(scope="module")
def loosen_specs(tmp_path_factory: pytest.TempPathFactory, aws_env: dict[str, str]) -> dict[str, Any]:
    """tests.workflows serialised with the attacker's agent (a loopback listener) in loosen.py's template."""
    from tests.support.blackhole import Blackhole

    hole = Blackhole().start()
    token = tmp_path_factory.mktemp("pod-files") / "irsa-token"
    token.write_text("a pod's one-line token file")
    env = _env(aws_env, ATTACKER_URL=hole.url, ATTACKER_TOKEN_FILE=str(token))
    specs = serialize_tasks("tests.workflows", tmp_path_factory.mktemp("loosen") / "spec", env, "*_1.pb")
    return {"hole": hole, **{k.rsplit(".", 1)[-1]: v for k, v in specs.items() if ".loosen." in k}}


def _error_of(work: Path) -> str | None:
    from flyteidl.core import errors_pb2

    path = work / "out" / "error.pb"
    if not path.exists():
        return None
    doc = errors_pb2.ErrorDocument()
    doc.ParseFromString(path.read_bytes())
    return str(doc.error.message)


def test_pod_refuses_a_template_env_that_sends_the_token_elsewhere(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, loosen_specs: dict[str, Any], tmp_path: Path
) -> None:
    hole = loosen_specs["hole"]
    arn, _ = secrets_factory.secret(f"{unique}/loosen")
    spec = loosen_specs["loosened"]
    assert _template_env(spec)["FLYTE_AWS_SECRETS_AGENT_URL"] == hole.url  # the template carries it
    marker = tmp_path / "ran"
    env = {**_env(aws_env, LEAKY_ARN=arn, USER_CODE_MARKER=str(marker)), **_template_env(spec)}
    before = hole.connections
    p = run_pod(spec, tmp_path / "pod", env)
    message = _error_of(tmp_path / "pod")
    assert message is not None, p.stderr[-3000:]
    assert "UntrustedSettingError" in message and "setting 'agent_url'" in message
    assert "env var FLYTE_AWS_SECRETS_AGENT_URL" in message and "etc/flyte/aws-secrets.yaml" in message
    assert not marker.exists(), "user code ran"
    assert hole.connections == before, "something was sent to the attacker's agent"
    assert not (tmp_path / "pod" / "out" / "outputs.pb").exists()


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("FLYTE_AWS_SECRETS_LEAK_GUARD", "false", "setting 'leak_guard'"),
        ("FLYTE_AWS_SECRETS_REDACT_LOGS", "0", "setting 'redact_logs'"),
        ("FLYTE_AWS_SECRETS_ALLOW_DISK_MOUNT", "true", "setting 'allow_disk_mount'"),
        ("FLYTE_AWS_SECRETS_CONFIG", "{tmp}/attacker.yaml", "setting 'config'"),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "https://collector.invalid", "AWS_ENDPOINT_URL_SECRETS_MANAGER"),
    ],
)
def test_pod_refuses_execution_envs_that_loosen_the_plugin(
    aws_env: dict[str, str],
    secrets_factory: Any,
    unique: str,
    loosen_specs: dict[str, Any],
    tmp_path: Path,
    var: str,
    value: str,
    named: str,
) -> None:
    """An execution's ``envs`` (what someone who may only launch writes) land in the same environment."""
    arn, _ = secrets_factory.secret(f"{unique}/envs")
    (tmp_path / "attacker.yaml").write_text("leak_guard: false\n")
    marker = tmp_path / "ran"
    env = _env(aws_env, LEAKY_ARN=arn, USER_CODE_MARKER=str(marker), **{var: value.format(tmp=tmp_path)})
    p = run_pod(loosen_specs["plain"], tmp_path / "pod", env)
    message = _error_of(tmp_path / "pod")
    assert message is not None, p.stderr[-3000:]
    assert "UntrustedSettingError" in message and named in message, message[-1500:]
    assert not marker.exists(), "user code ran"


def test_pod_takes_protected_settings_from_the_image_file(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, loosen_specs: dict[str, Any], tmp_path: Path
) -> None:
    """The image's file decides; an env value equal to the image's changes nothing and is accepted."""
    from tests.support.image import fake_image

    arn, _ = secrets_factory.secret(f"{unique}/image")
    python = fake_image(tmp_path / "image", "leak_guard: true\nredact_logs: true\n")
    marker = tmp_path / "ran"
    env = _env(aws_env, LEAKY_ARN=arn, USER_CODE_MARKER=str(marker), FLYTE_AWS_SECRETS_LEAK_GUARD="true")
    p = run_pod(loosen_specs["plain"], tmp_path / "pod", env, python=python)
    assert _error_of(tmp_path / "pod") is None, p.stderr[-3000:]
    assert marker.exists() and (tmp_path / "pod" / "out" / "outputs.pb").exists()
    env["FLYTE_AWS_SECRETS_LEAK_GUARD"] = "false"
    p = run_pod(loosen_specs["plain"], tmp_path / "pod2", env, python=python)
    message = _error_of(tmp_path / "pod2")
    assert message is not None and "setting 'leak_guard'" in message, p.stderr[-3000:]
    assert str(tmp_path / "image" / "etc" / "flyte" / "aws-secrets.yaml") in message


def test_local_run_keeps_env_settings(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    """``pyflyte run`` is not a pod: the environment (and the file it names) still configure the plugin."""
    arn, _ = secrets_factory.secret(f"{unique}/local")
    cfg = tmp_path / "local.yaml"
    cfg.write_text("redact_logs: false\n")
    env = _env(
        aws_env, LEAKY_ARN=arn, FLYTE_AWS_SECRETS_CONFIG=str(cfg), FLYTE_AWS_SECRETS_LEAK_GUARD="false"
    )
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", "tests/workflows/loosen.py", "plain"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]  # what a pod refuses, a local run accepts
    assert "UntrustedSettingError" not in p.stdout + p.stderr
