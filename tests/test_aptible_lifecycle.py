"""Escalation and de-escalation in-process, with the operator file the connector reads: moto (bot secret,
SSM request records, KMS) and the fake Aptible on https.

The story: every refusal is typed and happens before anything changes; a strategy without approval grants
at the first poll, holds, then removes, and never grants twice; a Deploy Owner bot may grant custom roles;
an SSO-enforced organization says so; a membership created with an empty answer is adopted, not orphaned;
a retried CreateTask after the grant is recognised from the grant record and Aptible's answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flytekitplugins_awssecrets.aptible import lifecycle
from flytekitplugins_awssecrets.aptible.audit import AUDIT_LOGGER
from flytekitplugins_awssecrets.aptible.client import clear_token_cache
from flytekitplugins_awssecrets.aptible.errors import (
    AccessRequestRefusedError,
    AmbiguousIdentityError,
    AptiblePreconditionError,
    BotCredentialsError,
    BotNotRoleAdminError,
    DurationTooLongError,
    IdentityNotFoundError,
    LocalApprovalDeniedError,
    LocalRunNotAllowedError,
    RoleNotFoundError,
    RoleOrganizationMismatchError,
    SsoEnforcedError,
    UnknownStrategyError,
    UnknownTargetError,
)
from flytekitplugins_awssecrets.aptible.operator import OperatorConfig, clear_operator_cache, load_operator
from flytekitplugins_awssecrets.aptible.request import AccessRequest
from tests.support.aptible_fixtures import operator_yaml
from tests.support.fake_aptible import (
    ADA,
    ADMIN_ROLE,
    BOB,
    BOT,
    DEPLOY_OWNER_ROLE,
    FOREIGN_ROLE,
    ORG,
    RO_ROLE,
    TWIN1,
    FakeAptible,
    standard_seed,
    start_fake_aptible,
)

MISSING_ROLE = "99999999-0000-4000-8000-000000000999"
TARGETS = {"admin": ADMIN_ROLE, "read-only": RO_ROLE, "theirs": FOREIGN_ROLE, "ghost": MISSING_ROLE}
EXEC = "proj/dev/ex1/n0/0"


def identity_by_handle(email: str) -> str | None:
    """An identity hook as an operator would write one: company handles map to Aptible emails."""
    return "Ada.Lovelace@Example.com" if email == "ada@corp.example" else None


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    clear_token_cache()
    clear_operator_cache()
    yield
    clear_token_cache()
    clear_operator_cache()


@pytest.fixture
def make_config(tmp_path: Path, tls_fake: FakeAptible, creds_arn: str, kms_key: str, unique: str) -> Any:
    def make(extra: str = "", fake: FakeAptible | None = None, **kwargs: Any) -> OperatorConfig:
        path = tmp_path / f"operator-{time.monotonic_ns()}.yaml"
        kwargs.setdefault("approval_required", False)
        kwargs.setdefault("local_runs", True)
        path.write_text(
            operator_yaml(
                fake or tls_fake,
                creds_arn,
                kms_key,
                f"/flyte/lc-{unique}",
                targets=TARGETS,
                extra=extra,
                **kwargs,
            )
        )
        return load_operator(str(path))

    return make


@pytest.fixture
def audit_log() -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(json.loads(record.getMessage()))

    handler = _Collect()
    logger = logging.getLogger(AUDIT_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)


def req(
    email: str = "ada.lovelace@example.com", target: str = "admin", seconds: float = 1.0
) -> AccessRequest:
    return AccessRequest(
        strategy="main-aptible-strategy",
        target=target,
        email=email,
        duration=timedelta(seconds=seconds),
        reason="INC-1",
    )


def prepare(config: OperatorConfig, request: AccessRequest, execution: str = EXEC) -> lifecycle.GrantState:
    return asyncio.run(lifecycle.prepare(config, request, execution))


def advance(config: OperatorConfig, state: lifecycle.GrantState) -> lifecycle.Progress:
    return asyncio.run(lifecycle.advance(config, state))


def changes(fake: FakeAptible) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["method"] in ("POST", "DELETE") and r["path"] != "/tokens"]


def test_without_approval_the_first_poll_grants_then_the_grant_is_removed_once(
    make_config: Any, tls_fake: FakeAptible, audit_log: list[dict[str, Any]], bot_password: str
) -> None:
    config = make_config()
    state = prepare(config, req(seconds=1.5))
    assert not state.pre_existing and state.user_id == ADA and not tls_fake.holds(ADMIN_ROLE, ADA)
    assert changes(tls_fake) == []  # CreateTask changes nothing
    assert "held until" in advance(config, state).message and tls_fake.holds(ADMIN_ROLE, ADA)
    assert advance(config, state).grant is None
    time.sleep(1.6)
    done = advance(config, state)
    assert (
        done.grant is not None and done.grant.revoked_at is not None and not tls_fake.holds(ADMIN_ROLE, ADA)
    )
    assert tls_fake.holds(ADMIN_ROLE, BOB)
    # Polled again after the end (a lost answer, another replica): no second grant.
    assert advance(config, state).grant is not None and not tls_fake.holds(ADMIN_ROLE, ADA)
    assert sum(1 for r in changes(tls_fake) if r["method"] == "POST") == 1
    kinds = [r["event"] for r in audit_log]
    assert kinds == ["requested", "escalated", "expired", "de-escalated"]
    assert bot_password not in json.dumps(audit_log)


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (req(seconds=7200), DurationTooLongError),
        (req(target="prod-root"), UnknownTargetError),
        (req(target="theirs"), RoleOrganizationMismatchError),
        (req(target="ghost"), RoleNotFoundError),
        (req(target="read-only"), BotNotRoleAdminError),
        (req("nobody@example.com"), IdentityNotFoundError),
        (req("outsider@example.com"), IdentityNotFoundError),
        (req("TWIN@example.com"), AmbiguousIdentityError),
    ],
    ids=[
        "too-long",
        "unknown-target",
        "other-org",
        "missing-role",
        "not-role-admin",
        "no-user",
        "user-of-other-org",
        "two-users",
    ],
)
def test_each_refusal_is_a_typed_error_before_anything_changes_or_is_asked(
    make_config: Any,
    tls_fake: FakeAptible,
    audit_log: list[dict[str, Any]],
    request_: AccessRequest,
    error: type[Exception],
    secrets_factory: Any,
    unique: str,
) -> None:
    config = make_config(approval_required=True)
    before = tls_fake.memberships()
    # Whether an email is at Aptible is the organization's to know: the requester sees one refusal.
    shown = AccessRequestRefusedError if error in (IdentityNotFoundError, AmbiguousIdentityError) else error
    with pytest.raises(shown) as info:
        prepare(config, request_)
    assert isinstance(info.value, AptiblePreconditionError)
    assert tls_fake.memberships() == before and changes(tls_fake) == []
    # No approval was asked for: no request record was published.
    ssm = secrets_factory.client("ssm")
    assert ssm.get_parameters_by_path(Path=f"/flyte/lc-{unique}", Recursive=True)["Parameters"] == []
    # One audit record per refused request, with the reason and the field.
    assert [r["event"] for r in audit_log] == ["failed"]
    assert audit_log[0]["error"]["type"] == error.__name__


def test_an_unknown_strategy_is_refused(make_config: Any) -> None:
    with pytest.raises(UnknownStrategyError, match="main-aptible-strategy"):
        prepare(make_config(), req().model_copy(update={"strategy": "root"}))


def test_a_deploy_owner_bot_is_role_admin_of_custom_roles(make_config: Any, tls_fake: FakeAptible) -> None:
    """Aptible: a Deploy Owner (platform_owner) is implicitly Role Admin of every custom role."""
    config = make_config()
    with pytest.raises(BotNotRoleAdminError):
        prepare(config, req(target="read-only"))
    tls_fake.add_membership(DEPLOY_OWNER_ROLE, BOT)
    state = prepare(config, req(target="read-only"), execution="p/d/e2/n0/0")
    advance(config, state)
    assert tls_fake.holds(RO_ROLE, ADA)


def test_an_sso_enforced_organization_says_so(
    tmp_path: Path, make_config: Any, bot_password: str, bot_email: str
) -> None:
    seed = standard_seed(bot_password, bot_email=bot_email)
    seed["organizations"][0]["sso_enforced"] = True
    d = tmp_path / "sso"
    d.mkdir()
    fake = start_fake_aptible(seed, str(d / "seed.json"), tls=True)
    try:
        config = make_config(fake=fake)
        with pytest.raises(SsoEnforcedError, match="enforces SSO") as info:
            prepare(config, req())
        assert "allowlist" in str(info.value) and ORG in str(info.value)
        assert changes(fake) == []
    finally:
        fake.stop()


@pytest.mark.parametrize("body", ["", "not json", '{"_type": "membership"}'])
def test_a_created_membership_with_an_unreadable_answer_is_adopted_and_removed(
    make_config: Any, tls_fake: FakeAptible, body: str
) -> None:
    config = make_config()
    state = prepare(config, req(seconds=0.5))
    tls_fake.faults(
        {"method": "POST", "path_prefix": "/roles/", "action": "apply_then_body", "body": body, "count": 1}
    )
    assert "held until" in advance(config, state).message
    assert tls_fake.holds(ADMIN_ROLE, ADA)
    time.sleep(0.6)
    assert advance(config, state).grant is not None
    assert not tls_fake.holds(ADMIN_ROLE, ADA)  # no orphan


def test_a_retried_create_after_the_grant_is_not_standing_access(
    make_config: Any, tls_fake: FakeAptible
) -> None:
    """A fresh process (another replica) repeats the CreateTask: the grant record and Aptible's membership
    say the membership is this request's, so it is still removed at the end."""
    config = make_config()
    first = prepare(config, req(seconds=0.5))
    advance(config, first)
    clear_operator_cache()
    clear_token_cache()
    again = prepare(make_config(), req(seconds=0.5))
    assert again.request_id == first.request_id and not again.pre_existing
    other = prepare(config, req(seconds=0.5), execution="p/d/other/n0/0")
    assert other.pre_existing  # another execution sees it as standing access
    time.sleep(0.6)
    assert advance(config, again).grant is not None and not tls_fake.holds(ADMIN_ROLE, ADA)


def test_abort_before_the_grant_means_it_is_never_made(make_config: Any, tls_fake: FakeAptible) -> None:
    config = make_config()
    state = prepare(config, req(seconds=60))
    assert asyncio.run(lifecycle.abort(config, state)) is False
    with pytest.raises(Exception, match="aborted"):
        advance(config, state)
    assert not tls_fake.holds(ADMIN_ROLE, ADA) and changes(tls_fake) == []


@pytest.mark.parametrize(
    ("identity", "email"),
    [
        (f'{{mapping: {{"ada@corp.example": "{ADA.upper()}"}}}}', "ada@corp.example"),
        ("{mapping: {ADA@corp.example: ada.lovelace@example.com}}", "ada@Corp.example"),
        ("{function: 'tests.test_aptible_lifecycle:identity_by_handle'}", "ada@corp.example"),
        (f'{{mapping: {{"twin@example.com": "{TWIN1}"}}}}', "twin@example.com"),
    ],
    ids=["mapping-to-id", "mapping-to-email", "function", "mapping-resolves-ambiguity"],
)
def test_the_operator_identity_maps_requesters_to_aptible_users(
    make_config: Any, identity: str, email: str
) -> None:
    state = prepare(make_config(extra=f"identity: {identity}\n"), req(email))
    assert state.user_id == (TWIN1 if "twin" in email else ADA)


def test_a_local_run_asks_and_defaults_to_no(
    make_config: Any, tls_fake: FakeAptible, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    config = make_config()
    for answer in ["\n", "", "nope\n"]:
        monkeypatch.setattr("sys.stdin", io.StringIO(answer))
        with pytest.raises(LocalApprovalDeniedError):
            prepare(config, req(), execution="local")
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    state = prepare(config, req(), execution="local")
    assert state.execution_id.startswith("local/") and changes(tls_fake) == []


def test_a_missing_bot_secret_is_a_typed_error(
    tmp_path: Path, tls_fake: FakeAptible, kms_key: str, unique: str, aws_env: dict[str, str]
) -> None:
    path = tmp_path / "op.yaml"
    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sym/absent-AbCdEf"
    path.write_text(operator_yaml(tls_fake, missing, kms_key, f"/flyte/m-{unique}", targets=TARGETS))
    with pytest.raises(BotCredentialsError, match="main-aptible") as info:
        prepare(load_operator(str(path)), req())
    assert "secretsmanager:GetSecretValue" in str(info.value)


def test_a_grant_record_that_cannot_be_written_leaves_no_membership(
    make_config: Any, tls_fake: FakeAptible, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSM refuses (not throttles) the 'granted' record after the membership was added: the task fails and
    Propeller will not poll again, so the membership is taken back before the error is raised."""
    from flytekitplugins_awssecrets.aptible.approval import StateStoreClient, StateStoreError

    real = StateStoreClient.set_grant

    def refusing(self: StateStoreClient, rid: str, value: dict[str, Any]) -> None:
        if value.get("state") == "granted":
            raise StateStoreError("SSM grant", "PutParameter failed: AccessDeniedException", retryable=False)
        real(self, rid, value)

    monkeypatch.setattr(StateStoreClient, "set_grant", refusing)
    config = make_config()
    state = prepare(config, req(seconds=60))
    with pytest.raises(StateStoreError):
        advance(config, state)
    assert not tls_fake.holds(ADMIN_ROLE, ADA)


def test_an_abort_that_ssm_refuses_to_record_still_removes_the_grant(
    make_config: Any, tls_fake: FakeAptible, monkeypatch: pytest.MonkeyPatch, audit_log: list[dict[str, Any]]
) -> None:
    """SSM refuses every write once the grant is held (ParameterLimitExceeded: the standard-parameter quota
    is used up): the abort removes the membership first, and the failed records leave no access."""
    from flytekitplugins_awssecrets.aptible.records import StateStoreClient, StateStoreError

    config = make_config()
    state = prepare(config, req(seconds=600))
    assert "held until" in advance(config, state).message and tls_fake.holds(ADMIN_ROLE, ADA)

    def refusing(self: StateStoreClient, name: str, value: str, overwrite: bool) -> bool:
        raise StateStoreError(f"SSM {name}", "PutParameter failed: ParameterLimitExceeded", retryable=False)

    monkeypatch.setattr(StateStoreClient, "_put", refusing)
    assert asyncio.run(lifecycle.abort(config, state)) is True
    assert not tls_fake.holds(ADMIN_ROLE, ADA)
    steps = [e.get("step") for e in audit_log if e["event"] == "failed"]
    assert "abort-mark" in steps and "end-records" in steps
    assert [e for e in audit_log if e["event"] == "aborted"][-1]["removed"] is True


def test_the_cluster_file_refuses_local_runs_before_reading_the_bot_secret(
    make_config: Any, tls_fake: FakeAptible, audit_log: list[dict[str, Any]]
) -> None:
    config = make_config(local_runs=False)
    with pytest.raises(LocalRunNotAllowedError, match=r"strategies\[0\]\.local_runs"):
        prepare(config, req(), execution="local")
    assert [r for r in tls_fake.requests() if r["path"] == "/tokens"] == []
    (failed,) = [e for e in audit_log if e["event"] == "failed"]
    assert failed["fields"] == "strategies[0].local_runs" and "requested" not in [
        e["event"] for e in audit_log
    ]
