"""The connector as a cluster runs it: a real ``pyflyte serve connector`` process, driven over gRPC the way
FlytePropeller drives an async connector (CreateTask, GetTask until a terminal phase, DeleteTask on abort).

AWS is the moto server (the bot's credentials are read there, by the connector process only), Aptible is
the fake server. The fake's memberships are checked at each step; the connector's output is checked for
the bot password.
"""

from __future__ import annotations

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
from tests.support.fake_aptible import (
    ADA,
    ADMIN_ROLE,
    BOB,
    ORG,
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


@pytest.fixture
def creds_arn(secrets_factory: Any, bot_password: str, bot_email: str, unique: str) -> str:
    arn, _ = secrets_factory.secret(
        f"sym/{unique}/aptible-bot-credentials", {"username": bot_email, "password": str(bot_password)}
    )
    return str(arn)


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


@pytest.fixture
def connector(aws_env: dict[str, str], tmp_path: Path, fake: FakeAptible) -> Iterator[Connector]:
    port, metrics = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    env.update(aws_env)
    env["PYTHONPATH"] = _connector_pythonpath(tmp_path)
    # As a deployment does: the integrations name no auth host, the connector's environment does.
    env["FLYTE_AWS_SECRETS_APTIBLE_AUTH_URL"] = fake.url
    env["FLYTE_AWS_SECRETS_APTIBLE_BACKOFF_INITIAL_SECONDS"] = "0.05"
    env["FLYTE_AWS_SECRETS_APTIBLE_BACKOFF_MAX_SECONDS"] = "0.2"
    log = tmp_path / "connector.log"
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
                "flytekitplugins_awssecrets.aptible.connector",
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
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
    creds_arn: str, fake: FakeAptible, email: str, target: str, duration: timedelta
) -> tuple[Any, Any]:
    """Serialise an AptibleAccessTask as ``pyflyte register`` would, and its inputs as Propeller sends them."""
    from flytekit import FlyteContextManager
    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.core.type_engine import TypeEngine
    from flytekit.tools.translator import get_serializable

    from flytekitplugins_awssecrets import aws_secret
    from flytekitplugins_awssecrets.aptible import (
        AptibleAccessStrategy,
        AptibleAccessTask,
        AptibleIntegration,
        AptibleRole,
    )

    integration = AptibleIntegration(
        name="main-aptible",
        organization_id=ORG,
        username_secret=aws_secret(creds_arn, json_key="username"),
        password_secret=aws_secret(creds_arn, json_key="password"),
    )
    strategy = AptibleAccessStrategy(
        name="main-aptible-strategy",
        integration=integration,
        targets=[AptibleRole(name="main-aptible-admin-role", label="Admin Role", role_id=ADMIN_ROLE.upper())],
        max_duration=timedelta(hours=1),
    )
    task = AptibleAccessTask(name="aptible_access", strategy=strategy)
    settings = SerializationSettings(ImageConfig.auto_default_image(), project="p", domain="d", version="v1")
    template = get_serializable(OrderedDict(), settings, task).template.to_flyte_idl()
    ctx = FlyteContextManager.current_context()
    inputs = TypeEngine.dict_to_literal_map(
        ctx,
        {"email": email, "target": target, "duration": duration, "reason": "INC-77"},
        {"email": str, "target": str, "duration": timedelta, "reason": str},
    ).to_flyte_idl()
    return template, inputs


def execution_metadata() -> agent_pb2.TaskExecutionMetadata:
    return agent_pb2.TaskExecutionMetadata(
        task_execution_id=identifier_pb2.TaskExecutionIdentifier(
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                node_id="n1",
                execution_id=identifier_pb2.WorkflowExecutionIdentifier(
                    project="p", domain="d", name="exec42"
                ),
            ),
            retry_attempt=0,
        )
    )


def create(c: Connector, template: Any, inputs: Any) -> bytes:
    resp = c.stub.CreateTask(
        agent_pb2.CreateTaskRequest(
            template=template,
            inputs=inputs,
            output_prefix="/tmp/unused",
            task_execution_metadata=execution_metadata(),
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


def test_create_holds_then_get_removes_at_expiry_and_returns_the_grant(
    connector: Connector, fake: FakeAptible, creds_arn: str, bot_password: str
) -> None:
    template, inputs = template_and_inputs(
        creds_arn, fake, ADA_EMAIL, "main-aptible-admin-role", timedelta(seconds=3)
    )
    meta = create(connector, template, inputs)
    assert fake.holds(ADMIN_ROLE, ADA)
    first = get(connector, meta)
    assert first.phase == RUNNING and "held until" in first.message
    assert fake.holds(ADMIN_ROLE, ADA)

    res, messages = poll_until_terminal(connector, meta)
    assert res.phase == SUCCEEDED, res.message
    assert not fake.holds(ADMIN_ROLE, ADA) and fake.holds(ADMIN_ROLE, BOB)
    grant = grant_of(res)
    assert grant.user_id == ADA and grant.role_id == ADMIN_ROLE and not grant.pre_existing
    assert grant.revoked_at is not None and grant.revoked_at >= grant.expires_at
    assert grant.expires_at - grant.granted_at == timedelta(seconds=3)

    events = audit_events(connector)
    assert [e["event"] for e in events] == ["requested", "escalated", "expired", "de-escalated"]
    assert {e["execution_id"] for e in events} == {"p/d/exec42/n1/0"}
    assert bot_password not in connector.output() and bot_password not in bytes(meta).decode()


def test_delete_while_running_removes_the_grant(
    connector: Connector, fake: FakeAptible, creds_arn: str, bot_password: str
) -> None:
    template, inputs = template_and_inputs(
        creds_arn, fake, ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=30)
    )
    meta = create(connector, template, inputs)
    assert get(connector, meta).phase == RUNNING and fake.holds(ADMIN_ROLE, ADA)
    delete(connector, meta)
    assert not fake.holds(ADMIN_ROLE, ADA)
    delete(connector, meta)  # Propeller may repeat an abort: the second finds the membership gone
    events = [e["event"] for e in audit_events(connector)]
    assert events == ["requested", "escalated", "aborted", "aborted"]
    assert [e.get("already_gone") for e in audit_events(connector) if e["event"] == "aborted"] == [
        False,
        True,
    ]
    assert bot_password not in connector.output()


def test_removal_happens_even_when_aptible_answers_5xx(
    connector: Connector, fake: FakeAptible, creds_arn: str, bot_password: str
) -> None:
    template, inputs = template_and_inputs(
        creds_arn, fake, ADA_EMAIL, "main-aptible-admin-role", timedelta(seconds=2)
    )
    meta = create(connector, template, inputs)
    # More failures than one GetTask's attempts (5): a poll answers RUNNING "removal pending", a later one
    # removes.
    fake.faults(
        {"method": "DELETE", "path_prefix": "/memberships/", "action": "status", "status": 503, "count": 7}
    )
    time.sleep(2.1)
    res, messages = poll_until_terminal(connector, meta, timeout=120)
    assert res.phase == SUCCEEDED, res.message
    assert any("removal pending" in m for m in messages)
    assert not fake.holds(ADMIN_ROLE, ADA)
    deletes = [r["status"] for r in fake.requests() if r["method"] == "DELETE"]
    assert deletes[:7] == [503] * 7 and deletes[-1] == 204
    assert bot_password not in connector.output()


def test_a_refused_request_fails_create_and_changes_nothing(
    connector: Connector, fake: FakeAptible, creds_arn: str, bot_password: str
) -> None:
    before = fake.memberships()
    template, inputs = template_and_inputs(
        creds_arn, fake, "twin@example.com", "main-aptible-admin-role", timedelta(minutes=5)
    )
    with pytest.raises(grpc.RpcError) as info:
        create(connector, template, inputs)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "AmbiguousIdentityError" in info.value.details()
    assert fake.memberships() == before
    assert bot_password not in info.value.details() and bot_password not in connector.output()


def test_standing_access_is_reported_and_kept(
    connector: Connector, fake: FakeAptible, creds_arn: str
) -> None:
    template, inputs = template_and_inputs(
        creds_arn, fake, "bob@example.com", "main-aptible-admin-role", timedelta(seconds=1)
    )
    meta = create(connector, template, inputs)
    time.sleep(1.1)
    res, _ = poll_until_terminal(connector, meta)
    assert res.phase == SUCCEEDED
    grant = grant_of(res)
    assert grant.pre_existing and grant.revoked_at is None and grant.user_id == BOB
    assert fake.holds(ADMIN_ROLE, BOB)
