"""The connector as a cluster runs it: a real ``pyflyte serve connector`` process, driven over gRPC the way
FlytePropeller drives an async connector (CreateTask, GetTask until a terminal phase, DeleteTask on abort).

AWS is the moto server (the bot's credentials are read there, by the connector process only), Aptible is
the fake server. The fake's memberships are checked at each step; the connector's output is checked for
the bot password.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from flyteidl.admin import agent_pb2
from flyteidl.core import execution_pb2, identifier_pb2
from flyteidl.service.agent_pb2_grpc import AsyncAgentServiceStub

from tests.conftest import ROOT
from tests.support.aptible_fixtures import approve, aws_user_env, operator_yaml
from tests.support.fake_aptible import (
    ADA,
    ADMIN_ROLE,
    BOB,
    ORG,
    OTHER_ORG,
    RO_ROLE,
    TWIN1,
    FakeAptible,
)
from tests.support.moto_server import free_port

BIN = Path(sys.executable).parent
ADA_EMAIL = "ada.lovelace@example.com"
RUNNING, SUCCEEDED, FAILED = (
    execution_pb2.TaskExecution.RUNNING,
    execution_pb2.TaskExecution.SUCCEEDED,
    execution_pb2.TaskExecution.FAILED,
)


@dataclass
class Connector:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    stub: Any
    channel: Any

    def output(self) -> str:
        return self.log.read_text(errors="replace")


# ``pyflyte serve connector`` needs flytekit[connector], whose one extra dependency is prometheus_client (for
# metrics). The project venv does not have it; this stand-in counts nothing and serves nothing, and is put on
# the connector process's path only when the real package is missing. A deployment installs
# ``flytekit[connector]``.
_PROMETHEUS_STANDIN = """
class _Metric:
    def __init__(self, *a, **k): pass
    def labels(self, *a, **k): return self
    def inc(self, *a, **k): pass
    def observe(self, *a, **k): pass
    def time(self):
        import contextlib
        return contextlib.nullcontext()
Counter = Summary = Gauge = Histogram = _Metric
def start_http_server(*a, **k): pass
"""


def _connector_pythonpath(tmp_path: Path) -> str:
    import importlib.util

    paths = [str(ROOT)]
    if importlib.util.find_spec("prometheus_client") is None:
        shim = tmp_path / "prometheus-standin"
        shim.mkdir()
        (shim / "prometheus_client.py").write_text(_PROMETHEUS_STANDIN)
        paths.append(str(shim))
    return os.pathsep.join(paths)


def start_connector(
    tmp_path: Path, aws_env: dict[str, str], operator: Path, stdin: int | None = None
) -> tuple[Any, int, Path]:
    port, metrics = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    env.update(aws_env)
    env["PYTHONPATH"] = _connector_pythonpath(tmp_path)
    # As a deployment does: everything the connector may do is in the operator file.
    env["FLYTE_AWS_SECRETS_APTIBLE_OPERATOR_FILE"] = str(operator)
    env["FLYTE_AWS_SECRETS_APTIBLE_BACKOFF_INITIAL_SECONDS"] = "0.05"
    env["FLYTE_AWS_SECRETS_APTIBLE_BACKOFF_MAX_SECONDS"] = "0.2"
    log = tmp_path / f"connector-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "pyflyte"),
                "serve",
                "connector",
                "--port",
                str(port),
                "--prometheus_port",
                str(metrics),
                "--modules",
                "flytekitplugins_awssecrets.aptible.startup",
            ],
            cwd=tmp_path,
            env=env,
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, port, log


@pytest.fixture
def connector(aws_env: dict[str, str], tmp_path: Path, operator_file: Path) -> Iterator[Connector]:
    with running_connector(tmp_path, aws_env, operator_file) as c:
        yield c


@contextlib.contextmanager
def running_connector(tmp_path: Path, aws_env: dict[str, str], operator_file: Path) -> Iterator[Connector]:
    """A started connector, ready for gRPC; stopped on exit."""
    proc, port, log = start_connector(tmp_path, aws_env, operator_file)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    ready = grpc.channel_ready_future(channel)
    deadline = time.monotonic() + 120
    while True:
        try:
            ready.result(timeout=0.5)
            break
        except grpc.FutureTimeoutError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("connector did not start: " + log.read_text(errors="replace")[-3000:])
    yield Connector(proc, port, log, AsyncAgentServiceStub(channel), channel)
    channel.close()
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def template_and_inputs(
    email: str, target: str, duration: timedelta, custom: dict[str, Any] | None = None, **extra_inputs: Any
) -> tuple[Any, Any]:
    """Serialise an AptibleAccessTask as ``pyflyte register`` would, and its inputs as Propeller sends them.

    ``custom`` replaces the template's ``custom`` (what an attacker hand-builds); ``extra_inputs`` add inputs.
    """
    from flytekit import FlyteContextManager
    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.core.type_engine import TypeEngine
    from flytekit.tools.translator import get_serializable
    from google.protobuf import json_format

    from flytekitplugins_awssecrets.aptible import AptibleAccessTask

    task = AptibleAccessTask(name="aptible_access", strategy="main-aptible-strategy")
    settings = SerializationSettings(ImageConfig.auto_default_image(), project="p", domain="d", version="v1")
    template = get_serializable(OrderedDict(), settings, task).template.to_flyte_idl()
    if custom is not None:
        template.custom.Clear()
        json_format.ParseDict(custom, template.custom)
    ctx = FlyteContextManager.current_context()
    values = {"email": email, "target": target, "duration": duration, "reason": "INC-77", **extra_inputs}
    types = {k: type(v) if not isinstance(v, timedelta) else timedelta for k, v in values.items()}
    inputs = TypeEngine.dict_to_literal_map(ctx, values, types).to_flyte_idl()
    return template, inputs


def execution_metadata(name: str = "exec42") -> agent_pb2.TaskExecutionMetadata:
    return agent_pb2.TaskExecutionMetadata(
        task_execution_id=identifier_pb2.TaskExecutionIdentifier(
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                node_id="n1",
                execution_id=identifier_pb2.WorkflowExecutionIdentifier(project="p", domain="d", name=name),
            ),
            retry_attempt=0,
        )
    )


def create(c: Connector, template: Any, inputs: Any, execution: str = "exec42") -> bytes:
    resp = c.stub.CreateTask(
        agent_pb2.CreateTaskRequest(
            template=template,
            inputs=inputs,
            output_prefix="/tmp/unused",
            task_execution_metadata=execution_metadata(execution),
        ),
        timeout=60,
    )
    return bytes(resp.resource_meta)


def category() -> agent_pb2.TaskCategory:
    return agent_pb2.TaskCategory(name="aptible_access", version=0)


def get(c: Connector, meta: bytes) -> Any:
    return c.stub.GetTask(
        agent_pb2.GetTaskRequest(task_category=category(), resource_meta=meta), timeout=60
    ).resource


def delete(c: Connector, meta: bytes) -> None:
    c.stub.DeleteTask(agent_pb2.DeleteTaskRequest(task_category=category(), resource_meta=meta), timeout=60)


def poll_until_terminal(c: Connector, meta: bytes, timeout: float = 60) -> tuple[Any, list[str]]:
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = get(c, meta)
        messages.append(res.message)
        if res.phase != RUNNING:
            return res, messages
        time.sleep(0.5)
    raise AssertionError(f"still RUNNING after {timeout}s: {messages[-3:]}")


def grant_of(resource: Any) -> Any:
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.literals import Literal

    from flytekitplugins_awssecrets.aptible import AccessGrant

    lit = Literal.from_flyte_idl(resource.outputs.literals["o0"])
    return TypeEngine.to_python_value(FlyteContextManager.current_context(), lit, AccessGrant)


def audit_events(c: Connector) -> list[dict[str, Any]]:
    out = []
    for line in c.output().splitlines():
        line = line.strip()
        if line.startswith("{") and '"event"' in line:
            out.append(json.loads(line))
    return out


# -- helpers of the stories below -----------------------------------------------------------------------


class AttackerHost:
    """A second listener standing for the attacker's host: it records every request it receives."""

    def __init__(self) -> None:
        import http.server
        import threading

        hits: list[str] = []

        class H(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                hits.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_DELETE = _any  # noqa: N815

            def log_message(self, *a: Any) -> None:
                pass

        self.hits = hits
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def attacker() -> Iterator[AttackerHost]:
    host = AttackerHost()
    yield host
    host.stop()


def request_id_of(meta: bytes) -> str:
    from flytekitplugins_awssecrets.aptible.connector import AptibleGrantMeta

    return str(AptibleGrantMeta.decode(meta).request_id)


def old_style_custom(attacker_url: str, secret_arn: str) -> dict[str, Any]:
    """What the old AptibleAccessTask put in ``custom``, with an attacker's choices in it."""
    return {
        "version": 1,
        "strategy": {
            "type": "aptible",
            "name": "main-aptible-strategy",
            "integration": {
                "type": "aptible",
                "name": "main-aptible",
                "organization_id": ORG,
                "username_secret": {"group": secret_arn, "key": None},
                "password_secret": {"group": secret_arn, "key": None},
                "auth_url": attacker_url,
            },
            "targets": [{"type": "aptible_role", "name": "admin", "label": "Admin", "role_id": ADMIN_ROLE}],
            "max_duration": "P3650D",
        },
        "identity": {"mapping": {}, "function": "os:system"},
    }


def assert_nothing_happened(fake: FakeAptible, attacker: AttackerHost, before: list[dict[str, Any]]) -> None:
    assert attacker.hits == []  # nothing was sent to the template's host
    assert fake.memberships() == before  # nothing granted
    assert [r for r in fake.requests() if r["path"] == "/tokens"] == []  # the bot never even logged in


# -- the four attacks of the security review: nothing sent, nothing granted, nothing executed ----------


def test_attack_1_a_template_auth_host_is_refused_and_receives_nothing(
    connector: Connector, tls_fake: FakeAptible, creds_arn: str, attacker: AttackerHost
) -> None:
    before = tls_fake.memberships()
    for custom, field in [
        ({"version": 2, "strategy": "main-aptible-strategy", "auth_url": attacker.url}, "custom.auth_url"),
        (old_style_custom(attacker.url, creds_arn), "custom.identity"),
    ]:
        template, inputs = template_and_inputs(
            ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5), custom
        )
        with pytest.raises(grpc.RpcError) as info:
            create(connector, template, inputs)
        assert "TemplateFieldError" in info.value.details() and field in info.value.details()
    assert_nothing_happened(tls_fake, attacker, before)


def test_attack_2_a_template_credential_reference_is_refused(
    connector: Connector, tls_fake: FakeAptible, secrets_factory: Any, attacker: AttackerHost, unique: str
) -> None:
    other, _ = secrets_factory.secret(f"prod/{unique}/database-password")
    before = tls_fake.memberships()
    custom = {"version": 2, "strategy": "main-aptible-strategy", "password_secret": other}
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5), custom)
    with pytest.raises(grpc.RpcError) as info:
        create(connector, template, inputs)
    assert "custom.password_secret" in info.value.details()
    # An extra input is refused the same way.
    template, inputs = template_and_inputs(
        ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5), None, username_secret=other
    )
    with pytest.raises(grpc.RpcError) as info:
        create(connector, template, inputs)
    assert "inputs.username_secret" in info.value.details()
    assert_nothing_happened(tls_fake, attacker, before)


def test_attack_3_no_long_grant_and_no_grant_without_approval(
    connector: Connector, tls_fake: FakeAptible, creds_arn: str, attacker: AttackerHost
) -> None:
    before = tls_fake.memberships()
    # Targets, maximum and organization from the template: refused before anything is read.
    template, inputs = template_and_inputs(
        ADA_EMAIL, "admin", timedelta(days=3650), old_style_custom(attacker.url, creds_arn)
    )
    with pytest.raises(grpc.RpcError):
        create(connector, template, inputs)
    # A well-formed template asking for 10 years: over the operator's maximum.
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(days=3650))
    with pytest.raises(grpc.RpcError) as info:
        create(connector, template, inputs)
    assert "DurationTooLongError" in info.value.details()
    assert_nothing_happened(tls_fake, attacker, before)
    # A valid request without an approval waits; nothing is granted however often it is polled.
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5))
    meta = create(connector, template, inputs)
    for _ in range(3):
        res = get(connector, meta)
        assert res.phase == RUNNING and "waiting for approval" in res.message
    assert tls_fake.memberships() == before and attacker.hits == []


def test_attack_4_a_template_identity_hook_is_never_imported(
    connector: Connector, tls_fake: FakeAptible, attacker: AttackerHost, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    before = tls_fake.memberships()
    custom = {
        "version": 2,
        "strategy": "main-aptible-strategy",
        "identity": {"function": "os:system", "mapping": {}},
    }
    # A valid email and a shell command at once: os.system(email) would create the marker.
    template, inputs = template_and_inputs(
        f"touch${{IFS}}{marker};#@example.com", "main-aptible-admin-role", timedelta(minutes=5), custom
    )
    with pytest.raises(grpc.RpcError) as info:
        create(connector, template, inputs)
    assert "custom.identity" in info.value.details()
    time.sleep(0.5)
    assert list(tmp_path.glob("pwned*")) == []
    assert_nothing_happened(tls_fake, attacker, before)


# -- approval: a valid one grants, then the grant is removed; bad ones are refused -----------------------


def test_an_approved_request_is_granted_then_removed(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    secrets_factory: Any,
    aws_env: dict[str, str],
    bot_password: str,
    unique: str,
) -> None:
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(seconds=3))
    meta = create(connector, template, inputs)
    rid = request_id_of(meta)
    assert get(connector, meta).phase == RUNNING and not tls_fake.holds(ADMIN_ROLE, ADA)
    approver = aws_user_env(secrets_factory, aws_env, f"approver-{unique}@example.com")
    listed = subprocess.run(
        [str(BIN / "pyflyte-awssecrets"), "aptible", "list", "--operator-file", str(operator_file)],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **approver},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rid in listed.stdout and ADA_EMAIL in listed.stdout, listed.stderr[-2000:]
    done = approve(approver, operator_file, rid)
    assert done.returncode == 0, done.stderr[-2000:]

    res = get(connector, meta)
    assert res.phase == RUNNING and "held until" in res.message, res.message
    assert tls_fake.holds(ADMIN_ROLE, ADA)
    res, _ = poll_until_terminal(connector, meta)
    assert res.phase == SUCCEEDED, res.message
    assert not tls_fake.holds(ADMIN_ROLE, ADA) and tls_fake.holds(ADMIN_ROLE, BOB)
    grant = grant_of(res)
    assert grant.user_id == ADA and not grant.pre_existing and grant.revoked_at is not None
    # A lost SUCCEEDED answer makes Propeller poll again: the grant record says it is over; no second grant.
    again = get(connector, meta)
    assert again.phase == SUCCEEDED and not tls_fake.holds(ADMIN_ROLE, ADA)
    # The request is over: its records are gone but the outcome, which the sweep deletes after retention.
    import yaml

    from flytekitplugins_awssecrets.aptible.records import StateStoreClient

    prefix = yaml.safe_load(operator_file.read_text())["state"]["ssm_prefix"]
    ssm = secrets_factory.client("ssm")
    left = ssm.get_parameters_by_path(Path=f"{prefix}/{rid}", Recursive=True)["Parameters"]
    assert [p["Name"].rsplit("/", 1)[-1] for p in left] == ["grant"]
    assert StateStoreClient(prefix, "us-east-1").sweep(timedelta(0)) == [rid]
    assert ssm.get_parameters_by_path(Path=prefix, Recursive=True)["Parameters"] == []
    assert get(connector, meta).phase == RUNNING  # a poll after the sweep: no approval, nothing granted
    assert not tls_fake.holds(ADMIN_ROLE, ADA)

    events = audit_events(connector)
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["requested", "approval-requested"] and kinds[-2:] == ["expired", "de-escalated"]
    escalated = next(e for e in events if e["event"] == "escalated")
    assert escalated["approved_by"].endswith(f"user/approver-{unique}@example.com")
    assert escalated["approver_email"] == f"approver-{unique}@example.com"
    # Every call carried Aptible's media types.
    assert {r["accept"] for r in tls_fake.requests()} == {"application/hal+json, application/json"}
    assert bot_password not in connector.output() and bot_password not in meta.decode(errors="replace")


def _signed_record(
    secrets_factory: Any, rid: str, meta: bytes, key: str, approver_arn: str, expires: int
) -> str:
    import base64

    from flytekitplugins_awssecrets.aptible.approval import ApprovalRecord, canonical
    from flytekitplugins_awssecrets.aptible.connector import AptibleGrantMeta

    m = AptibleGrantMeta.decode(meta)
    msg = canonical(
        request_id=rid,
        execution_id=m.execution_id,
        email=m.email,
        strategy=m.strategy,
        target=m.target,
        duration_seconds=m.duration_seconds,
        reason=m.reason,
        expires_at=expires,
        approver_arn=approver_arn,
    )
    sig = secrets_factory.client("kms").sign(
        KeyId=key, Message=msg, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
    )["Signature"]
    return ApprovalRecord(
        request_id=rid,
        execution_id=m.execution_id,
        email=m.email,
        strategy=m.strategy,
        target=m.target,
        duration_seconds=m.duration_seconds,
        reason=m.reason,
        expires_at=expires,
        approver_arn=approver_arn,
        approved_at="2026-01-01T00:00:00+00:00",
        kms_key_arn=key,
        signing_algorithm="ECDSA_SHA_256",
        signature=base64.b64encode(sig).decode(),
    ).model_dump_json()


def test_forged_other_key_replayed_expired_and_self_approvals_are_refused(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    kms_key: str,
    secrets_factory: Any,
    aws_env: dict[str, str],
    unique: str,
) -> None:
    import yaml

    prefix = yaml.safe_load(operator_file.read_text())["state"]["ssm_prefix"]
    ssm = secrets_factory.client("ssm")

    def put(rid: str, value: str) -> None:
        ssm.put_parameter(Name=f"{prefix}/{rid}/approval", Value=value, Type="String", Overwrite=True)

    def refused(meta: bytes, why: str) -> None:
        res = get(connector, meta)
        assert res.phase == RUNNING and "refused" in res.message and why in res.message, res.message
        assert not tls_fake.holds(ADMIN_ROLE, ADA)

    before = tls_fake.memberships()
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5))
    meta = create(connector, template, inputs, execution="exec-a")
    rid = request_id_of(meta)
    approver_arn = f"arn:aws:iam::123456789012:user/approver-{unique}@example.com"
    soon = int(time.time()) + 600

    # Forged: a well-formed record with a made-up signature.
    forged = json.loads(_signed_record(secrets_factory, rid, meta, kms_key, approver_arn, soon))
    forged["signature"] = "AAAA" + forged["signature"][4:]
    put(rid, json.dumps(forged))
    refused(meta, "does not verify")
    # Signed with another key (one the requester may use), claiming to be the strategy's key.
    other_key = secrets_factory.client("kms").create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")
    other = json.loads(
        _signed_record(secrets_factory, rid, meta, other_key["KeyMetadata"]["Arn"], approver_arn, soon)
    )
    other["kms_key_arn"] = kms_key
    put(rid, json.dumps(other))
    refused(meta, "does not verify")
    # Replayed: a valid approval of another request (another execution) copied onto this one.
    meta_b = create(connector, template, inputs, execution="exec-b")
    put(rid, _signed_record(secrets_factory, request_id_of(meta_b), meta_b, kms_key, approver_arn, soon))
    refused(meta, "another request")
    # Expired.
    put(rid, _signed_record(secrets_factory, rid, meta, kms_key, approver_arn, int(time.time()) - 1))
    refused(meta, "expired")
    # Self-approval: the requester holds kms:Sign too, but an approver must be somebody else. `approve`
    # refuses to sign; a record signed by hand is refused by the connector.
    ada = aws_user_env(secrets_factory, aws_env, ADA_EMAIL)
    done = approve(ada, operator_file, rid)
    assert done.returncode == 1 and "self-approval" in done.stderr, done.stderr[-2000:]
    ada_arn = f"arn:aws:iam::123456789012:user/{ADA_EMAIL}"
    put(rid, _signed_record(secrets_factory, rid, meta, kms_key, ada_arn, soon))
    refused(meta, "self-approval")
    refused(meta, "self-approval")  # polled again: the same approval is not audited again
    events = [e for e in audit_events(connector) if e["event"] == "approval-refused"]
    # One record per refused approval (forged, other key, replayed, expired, self), not one per poll.
    assert len(events) == 5, [e["error"] for e in events]
    assert tls_fake.memberships() == before
    assert not any(r["method"] == "POST" and "/memberships" in r["path"] for r in tls_fake.requests())


def test_delete_before_approval_means_never_granted_and_delete_after_removes(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    secrets_factory: Any,
    aws_env: dict[str, str],
    unique: str,
) -> None:
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=30))
    meta = create(connector, template, inputs, execution="exec-abort-early")
    delete(connector, meta)
    approver = aws_user_env(secrets_factory, aws_env, f"approver-{unique}@example.com")
    approve(approver, operator_file, request_id_of(meta))  # too late: the request is gone
    res = get(connector, meta)
    assert res.phase == FAILED and not tls_fake.holds(ADMIN_ROLE, ADA)

    meta = create(connector, template, inputs, execution="exec-abort-late")
    assert approve(approver, operator_file, request_id_of(meta)).returncode == 0
    assert "held until" in get(connector, meta).message and tls_fake.holds(ADMIN_ROLE, ADA)
    delete(connector, meta)
    assert not tls_fake.holds(ADMIN_ROLE, ADA)
    delete(connector, meta)  # Propeller may repeat an abort


def test_a_refused_request_fails_create_and_changes_nothing(
    connector: Connector, tls_fake: FakeAptible, bot_password: str
) -> None:
    before = tls_fake.memberships()
    shown: dict[str, str] = {}
    for email, target, error in [
        ("twin@example.com", "main-aptible-admin-role", "AccessRequestRefusedError"),
        ("nobody@example.com", "main-aptible-admin-role", "AccessRequestRefusedError"),
        (ADA_EMAIL, "main-aptible-ro-role", "BotNotRoleAdminError"),
        (ADA_EMAIL, "no-such-target", "UnknownTargetError"),
    ]:
        template, inputs = template_and_inputs(email, target, timedelta(minutes=5))
        with pytest.raises(grpc.RpcError) as info:
            create(connector, template, inputs)
        assert error in info.value.details(), info.value.details()
        assert bot_password not in info.value.details()
        shown[email] = info.value.details()
    # Whether an email is at Aptible once, twice or not at all: the requester reads the same words (but the
    # request id); the operator's audit log has the reason.
    assert (
        shown["twin@example.com"].split("request r")[0] == shown["nobody@example.com"].split("request r")[0]
    )
    assert not any(w in shown["nobody@example.com"] for w in ("Identity", "Ambiguous", "no Aptible user"))
    failed = [e for e in audit_events(connector) if e["event"] == "failed" and e.get("step") == "prepare"]
    kinds = {e["email"]: e["error"]["type"] for e in failed}
    assert kinds["twin@example.com"] == "AmbiguousIdentityError"
    assert kinds["nobody@example.com"] == "IdentityNotFoundError"
    template, inputs = template_and_inputs(
        ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5), {"version": 2, "strategy": "nope"}
    )
    with pytest.raises(grpc.RpcError) as info:
        create(connector, template, inputs)
    assert "UnknownStrategyError" in info.value.details()
    assert tls_fake.memberships() == before
    assert bot_password not in connector.output()


def test_standing_access_is_reported_and_kept(connector: Connector, tls_fake: FakeAptible) -> None:
    template, inputs = template_and_inputs("bob@example.com", "main-aptible-admin-role", timedelta(seconds=1))
    meta = create(connector, template, inputs)
    time.sleep(1.1)
    res, _ = poll_until_terminal(connector, meta)
    assert res.phase == SUCCEEDED
    grant = grant_of(res)
    assert grant.pre_existing and grant.revoked_at is None and grant.user_id == BOB
    assert tls_fake.holds(ADMIN_ROLE, BOB)


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda t: t.replace("auth_url: https://", "auth_url: http://"), "integrations[0].auth_url"),
        (
            lambda t: t.replace("targets: [main-aptible-admin-role,", "targets: [typo-role,"),
            "strategies[0].targets",
        ),
        (lambda t: t.replace("kms_key_arn:", "kms_key:"), "strategies[0].approval.kms_key"),
    ],
)
def test_a_malformed_operator_file_stops_the_connector_at_start(
    tmp_path: Path, aws_env: dict[str, str], operator_file: Path, mangle: Any, field: str
) -> None:
    bad = tmp_path / "bad-operator.yaml"
    bad.write_text(mangle(operator_file.read_text()))
    proc, _, log = start_connector(tmp_path, aws_env, bad)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the connector started with a malformed operator file")
    out = log.read_text(errors="replace")
    assert proc.returncode != 0
    assert str(bad) in out and field in out, out[-2000:]


# -- review of issue 12: what Propeller hands back, and what others can write under the state prefix -------


def _forged(meta: bytes, **changes: Any) -> bytes:
    """``meta`` as an attacker with the gRPC port rewrites it: GetTask/DeleteTask take it from the caller."""
    from flytekitplugins_awssecrets.aptible.connector import AptibleGrantMeta

    fields = {**AptibleGrantMeta.decode(meta).__dict__, **changes}
    return bytes(AptibleGrantMeta(**fields).encode())


def test_a_forged_resource_meta_grants_nothing(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    secrets_factory: Any,
    aws_env: dict[str, str],
    unique: str,
) -> None:
    before = tls_fake.memberships()
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5))
    meta = create(connector, template, inputs, execution="exec-forge")
    # No approval, another role, another organization, ten years, another target: each GetTask and
    # DeleteTask with a rewritten meta is refused before anything is asked of Aptible.
    for changes in (
        {"approval_required": False},
        {"approval_required": False, "duration_seconds": 10 * 365 * 86400},
        {"role_id": RO_ROLE},
        {"organization_id": OTHER_ORG},
        {"target": "main-aptible-ro-role"},
        {"requested_at": "2099-01-01T00:00:00+00:00"},
    ):
        res = get(connector, _forged(meta, **changes))
        assert res.phase == FAILED and "refused" in res.message, (changes, res.message)
        with pytest.raises(grpc.RpcError):
            delete(connector, _forged(meta, **changes))
    assert tls_fake.memberships() == before
    assert not any(r["method"] == "POST" and "/memberships" in r["path"] for r in tls_fake.requests())
    # An approval given for Ada cannot be spent on another user by swapping the user id.
    approver = aws_user_env(secrets_factory, aws_env, f"approver-{unique}@example.com")
    assert approve(approver, operator_file, request_id_of(meta)).returncode == 0
    res = get(connector, _forged(meta, user_id=TWIN1))
    assert res.phase == FAILED and "user id" in res.message, res.message
    assert tls_fake.memberships() == before
    # The untouched meta is granted as approved.
    assert "held until" in get(connector, meta).message and tls_fake.holds(ADMIN_ROLE, ADA)
    delete(connector, meta)
    assert not tls_fake.holds(ADMIN_ROLE, ADA)


def test_a_grant_record_written_by_someone_else_grants_nothing(
    connector: Connector, tls_fake: FakeAptible, operator_file: Path, secrets_factory: Any
) -> None:
    import yaml

    prefix = yaml.safe_load(operator_file.read_text())["state"]["ssm_prefix"]
    ssm = secrets_factory.client("ssm")
    before = tls_fake.memberships()
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5))
    meta = create(connector, template, inputs, execution="exec-claim")
    rid = request_id_of(meta)
    # Someone who may write under the prefix (an approver, before the docs' IAM policy narrowed it) writes a
    # "granting" claim with no approval behind it: dated a year ahead (which would also make it "standing"),
    # then dated now, naming an approver.
    from datetime import UTC, datetime

    for claim, why in (
        ({"state": "granting", "at": "2027-12-01T00:00:00+00:00"}, "not one this connector wrote"),
        (
            {
                "state": "granting",
                "at": datetime.now(UTC).isoformat(),
                "approved_by": "arn:aws:iam::1:user/x",
            },
            "names no valid approval",
        ),
    ):
        ssm.put_parameter(
            Name=f"{prefix}/{rid}/grant", Value=json.dumps(claim), Type="String", Overwrite=True
        )
        res = get(connector, meta)
        assert res.phase == FAILED and why in res.message, res.message
        assert tls_fake.memberships() == before


def test_a_rewritten_grant_record_neither_extends_nor_keeps_the_grant(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    secrets_factory: Any,
    aws_env: dict[str, str],
    unique: str,
) -> None:
    import yaml

    prefix = yaml.safe_load(operator_file.read_text())["state"]["ssm_prefix"]
    ssm = secrets_factory.client("ssm")
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(seconds=2))
    meta = create(connector, template, inputs, execution="exec-extend")
    rid = request_id_of(meta)
    approver = aws_user_env(secrets_factory, aws_env, f"approver-{unique}@example.com")
    assert approve(approver, operator_file, rid).returncode == 0
    assert "held until" in get(connector, meta).message and tls_fake.holds(ADMIN_ROLE, ADA)
    # The grantee, able to write the record, dates the grant a year ahead, calls it standing access and
    # points it at Bob's membership: the grant still ends on time, Ada's membership goes, Bob's stays.
    name = f"{prefix}/{rid}/grant"
    record = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    bob = next(m for m in tls_fake.memberships() if m["user_id"] == BOB and m["role_id"] == ADMIN_ROLE)
    record.update(at="2027-12-01T00:00:00+00:00", standing=True, membership_id=bob["id"])
    ssm.put_parameter(Name=name, Value=json.dumps(record), Type="String", Overwrite=True)
    res, _ = poll_until_terminal(connector, meta, timeout=30)
    assert res.phase == SUCCEEDED, res.message
    assert not tls_fake.holds(ADMIN_ROLE, ADA) and tls_fake.holds(ADMIN_ROLE, BOB)


def test_a_grpc_request_cannot_pass_for_a_local_run(
    aws_env: dict[str, str], tmp_path: Path, tls_fake: FakeAptible, creds_arn: str, unique: str
) -> None:
    # A strategy without approval: a local run asks at the terminal. A CreateTask without an execution id
    # must not make the connector ask its own terminal (an operator running it in a shell would be asked
    # to confirm an attacker's request; a held-open stdin would block the service).
    operator = tmp_path / "no-approval.yaml"
    operator.write_text(
        operator_yaml(tls_fake, creds_arn, None, f"/flyte/aptible-{unique}", approval_required=False)
    )
    proc, port, log = start_connector(tmp_path, aws_env, operator, stdin=subprocess.PIPE)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=120)
        stub = AsyncAgentServiceStub(channel)
        before = tls_fake.memberships()
        template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5))
        for metadata in (None, agent_pb2.TaskExecutionMetadata()):
            request = agent_pb2.CreateTaskRequest(
                template=template, inputs=inputs, output_prefix="/tmp/unused"
            )
            if metadata is not None:
                request.task_execution_metadata.CopyFrom(metadata)
            with pytest.raises(grpc.RpcError) as info:
                stub.CreateTask(request, timeout=20)
            assert "task_execution_metadata" in (info.value.details() or ""), info.value.details()
        # A project called "local" is a cluster execution like any other: no prompt, granted (no approval).
        request = agent_pb2.CreateTaskRequest(
            template=template,
            inputs=inputs,
            output_prefix="/tmp/unused",
            task_execution_metadata=execution_metadata(),
        )
        request.task_execution_metadata.task_execution_id.node_execution_id.execution_id.project = "local"
        meta = bytes(stub.CreateTask(request, timeout=20).resource_meta)
        c = Connector(proc, port, log, stub, channel)
        assert "held until" in get(c, meta).message and tls_fake.holds(ADMIN_ROLE, ADA)
        delete(c, meta)
        assert not tls_fake.holds(ADMIN_ROLE, ADA)
        assert "[y/N]" not in log.read_text(errors="replace")
        assert tls_fake.memberships() == before
    finally:
        channel.close()
        proc.terminate()
        proc.wait(timeout=15)


def test_an_abort_while_the_grant_is_being_made_leaves_no_grant(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    secrets_factory: Any,
    aws_env: dict[str, str],
    unique: str,
) -> None:
    import threading

    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=30))
    meta = create(connector, template, inputs, execution="exec-abort-race")
    approver = aws_user_env(secrets_factory, aws_env, f"approver-{unique}@example.com")
    assert approve(approver, operator_file, request_id_of(meta)).returncode == 0
    # Aptible is slow to add the membership; the execution is aborted meanwhile (Propeller's DeleteTask),
    # and Propeller polls no more after an abort.
    tls_fake.faults({"method": "POST", "path_prefix": "/roles/", "action": "delay", "seconds": 3, "count": 1})
    polled: dict[str, Any] = {}
    poller = threading.Thread(target=lambda: polled.setdefault("res", get(connector, meta)))
    poller.start()
    time.sleep(1.5)
    delete(connector, meta)
    poller.join(timeout=60)
    time.sleep(0.5)
    assert not tls_fake.holds(ADMIN_ROLE, ADA), "the membership outlived the aborted execution"


def test_a_forged_user_id_at_expiry_removes_nobody_else(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    secrets_factory: Any,
    aws_env: dict[str, str],
    unique: str,
) -> None:
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(seconds=2))
    meta = create(connector, template, inputs, execution="exec-expiry-user")
    approver = aws_user_env(secrets_factory, aws_env, f"approver-{unique}@example.com")
    assert approve(approver, operator_file, request_id_of(meta)).returncode == 0
    assert "held until" in get(connector, meta).message and tls_fake.holds(ADMIN_ROLE, ADA)
    time.sleep(2.5)
    # Once the grant is over, a GetTask naming Bob (standing admin) as the user must not remove Bob.
    res = get(connector, _forged(meta, user_id=BOB))
    assert res.phase == FAILED and "user id" in res.message, res.message
    assert tls_fake.holds(ADMIN_ROLE, BOB)
    res, _ = poll_until_terminal(connector, meta, timeout=30)
    assert res.phase == SUCCEEDED and not tls_fake.holds(ADMIN_ROLE, ADA) and tls_fake.holds(ADMIN_ROLE, BOB)
