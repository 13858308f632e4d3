"""The second attack review's Aptible findings, each tried against a real ``pyflyte serve connector`` over
gRPC (and the approver's CLI), with moto for AWS and the fake Aptible: the attack has no effect.

* abort/expiry remove only what the request created (a record naming someone else's membership, a path, the
  bot's own Role Admin membership, a made-up id);
* self-approval is judged on Aptible identities (an approver email the operator maps to the grantee; an
  approver who maps to nobody), and ``aptible approve`` refuses before signing what the connector refuses;
* ``reason`` is signed and part of the request id; CreateTask errors do not tell which emails exist; a
  refused CreateTask is one audit record naming every offending field; ``approve`` signs only with the
  operator file's key.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.support.aptible_fixtures import approve, aws_user_env
from tests.support.fake_aptible import ADA, ADMIN_ROLE, BOB, BOT, FakeAptible
from tests.test_aptible_connector import (
    ADA_EMAIL,
    BIN,
    RUNNING,
    Connector,
    _signed_record,
    audit_events,
    create,
    delete,
    get,
    request_id_of,
    running_connector,
    template_and_inputs,
)


@pytest.fixture
def connector(aws_env: dict[str, str], tmp_path: Path, operator_file: Path) -> Iterator[Connector]:
    with running_connector(tmp_path, aws_env, operator_file) as c:
        yield c


def _prefix(operator_file: Path) -> str:
    return str(yaml.safe_load(operator_file.read_text())["state"]["ssm_prefix"])


def _granted(
    connector: Connector, operator_file: Path, approver: dict[str, str], execution: str, minutes: int = 30
) -> bytes:
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=minutes))
    meta = create(connector, template, inputs, execution=execution)
    done = approve(approver, operator_file, request_id_of(meta))
    assert done.returncode == 0, done.stderr[-2000:]
    res = get(connector, meta)
    assert res.phase == RUNNING and "held until" in res.message, res.message
    return meta


def _membership(fake: FakeAptible, user: str) -> dict[str, Any]:
    return next(m for m in fake.memberships() if m["user_id"] == user and m["role_id"] == ADMIN_ROLE)


def test_abort_removes_only_the_membership_this_request_created(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    secrets_factory: Any,
    aws_env: dict[str, str],
    approver_email: str,
) -> None:
    """Whoever may write the grant record names another membership in it, then the execution is aborted."""
    ssm = secrets_factory.client("ssm")
    approver = aws_user_env(secrets_factory, aws_env, approver_email)
    bob, bot = _membership(tls_fake, BOB), _membership(tls_fake, BOT)
    # Bob's standing admin, a path that would make the bot DELETE a role, the bot's own Role Admin
    # membership (a later grant would be unremovable), an id that names nothing.
    for n, forged in enumerate(
        [bob["id"], f"../roles/{ADMIN_ROLE}", bot["id"], "0e0e0e0e-0000-4000-8000-000000000999"]
    ):
        meta = _granted(connector, operator_file, approver, f"exec-abort-forged-{n}")
        ada = _membership(tls_fake, ADA)
        name = f"{_prefix(operator_file)}/{request_id_of(meta)}/grant"
        record = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
        record.update(membership_id=forged, standing=False)
        ssm.put_parameter(Name=name, Value=json.dumps(record), Type="String", Overwrite=True)
        delete(connector, meta)
        assert not tls_fake.holds(ADMIN_ROLE, ADA), forged  # this request's grant is gone
        assert tls_fake.holds(ADMIN_ROLE, BOB) and _membership(tls_fake, BOT)["privileged"], forged
        deletes = [r["path"] for r in tls_fake.requests() if r["method"] == "DELETE"]
        assert deletes[-1] == f"/memberships/{ada['id']}" and not any("/roles" in p for p in deletes)
    kept = [e for e in audit_events(connector) if e["event"] == "kept"]
    notes = " | ".join(str(e.get("note") or e.get("error")) for e in kept)
    assert "another user's" in notes and "MembershipIdError" in notes, notes


def test_a_standing_membership_found_at_abort_is_kept(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    secrets_factory: Any,
    aws_env: dict[str, str],
    approver_email: str,
) -> None:
    """While Ada's grant is held, an admin removes it and gives Ada a membership dated long before the
    request (standing access): the abort finds the record's membership gone and keeps the standing one."""
    approver = aws_user_env(secrets_factory, aws_env, approver_email)
    meta = _granted(connector, operator_file, approver, "exec-abort-standing")
    tls_fake.remove_membership(_membership(tls_fake, ADA)["id"])
    standing = tls_fake.add_membership(ADMIN_ROLE, ADA, created_at="2025-01-01T00:00:00.000Z")
    delete(connector, meta)
    assert tls_fake.holds(ADMIN_ROLE, ADA) and _membership(tls_fake, ADA)["id"] == standing
    assert any(e["event"] == "kept" and "standing" in str(e.get("note")) for e in audit_events(connector))


def test_self_approval_is_judged_on_aptible_identities(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    kms_key: str,
    secrets_factory: Any,
    aws_env: dict[str, str],
    unique: str,
) -> None:
    """The operator file maps ada@corp.example to Ada. Ada, signing as that identity, is refused by
    ``approve`` and (signed by hand) by the connector; an approver who is no Aptible user is refused too."""
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5))
    meta = create(connector, template, inputs, execution="exec-self-mapped")
    rid = request_id_of(meta)
    ssm = secrets_factory.client("ssm")
    soon = int(time.time()) + 600
    before = tls_fake.memberships()

    ada_alias = aws_user_env(secrets_factory, aws_env, "ada@corp.example")
    done = approve(ada_alias, operator_file, rid)
    assert done.returncode == 1 and "self-approval" in done.stderr and "not signed" in done.stderr
    assert "approved" not in done.stdout

    for arn, why in [
        ("arn:aws:iam::123456789012:user/ada@corp.example", "grantee's Aptible user"),
        (f"arn:aws:iam::123456789012:user/stranger-{unique}@example.com", "maps to no single Aptible user"),
    ]:
        record = _signed_record(secrets_factory, rid, meta, kms_key, arn, soon)
        ssm.put_parameter(
            Name=f"{_prefix(operator_file)}/{rid}/approval", Value=record, Type="String", Overwrite=True
        )
        for _ in range(3):
            res = get(connector, meta)
            assert res.phase == RUNNING and "refused" in res.message and why in res.message, res.message
    assert tls_fake.memberships() == before
    refusals = [e for e in audit_events(connector) if e["event"] == "approval-refused"]
    assert len(refusals) == 2  # once per approval, not once per poll


def test_approve_tells_the_truth_before_it_signs(
    connector: Connector,
    operator_file: Path,
    secrets_factory: Any,
    aws_env: dict[str, str],
    approver_email: str,
    unique: str,
) -> None:
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5))
    meta = create(connector, template, inputs, execution="exec-approve-truth")
    rid = request_id_of(meta)
    # The run's message gives the complete command.
    assert f"aptible approve {rid} --operator-file " in get(connector, meta).message
    ssm = secrets_factory.client("ssm")
    approval = f"{_prefix(operator_file)}/{rid}/approval"

    def no_approval() -> bool:
        return not ssm.get_parameters(Names=[approval])["Parameters"]

    # An ARN that does not end in an email, and no approvers mapping: the connector could not tell who.
    robot = aws_user_env(secrets_factory, aws_env, f"ops-robot-{unique}")
    done = approve(robot, operator_file, rid)
    assert done.returncode == 1 and "cannot tell who" in done.stderr and "approvers" in done.stderr
    # Longer than the strategy's max_validity (1 hour).
    approver = aws_user_env(secrets_factory, aws_env, approver_email)
    done = approve(approver, operator_file, rid, "--valid-for", "7200")
    assert done.returncode == 1 and "max_validity" in done.stderr
    assert no_approval()
    # Without the operator file there is no key to trust: a usage error naming the option.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))}
    bare = subprocess.run(
        [str(BIN / "pyflyte-awssecrets"), "aptible", "approve", rid, "--prefix", _prefix(operator_file)]
        + ["--region", "us-east-1", "--yes"],
        env={**base, **approver},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bare.returncode == 2 and "--operator-file" in bare.stderr and no_approval()
    # A request record rewritten to name the requester's own key: refused, naming both keys.
    name = f"{_prefix(operator_file)}/{rid}/request"
    pending = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    theirs = secrets_factory.client("kms").create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")
    good_key, pending["kms_key_arn"] = pending["kms_key_arn"], theirs["KeyMetadata"]["Arn"]
    ssm.put_parameter(Name=name, Value=json.dumps(pending), Type="String", Overwrite=True)
    done = approve(approver, operator_file, rid)
    assert done.returncode == 1 and good_key in done.stderr and pending["kms_key_arn"] in done.stderr
    assert no_approval()
    pending["kms_key_arn"] = good_key
    # A request record whose email was changed: it no longer hashes to its id.
    pending["email"] = "bob@example.com"
    ssm.put_parameter(Name=name, Value=json.dumps(pending), Type="String", Overwrite=True)
    done = approve(approver, operator_file, rid)
    assert done.returncode == 1 and "does not hash" in done.stderr and no_approval()
    pending["email"] = ADA_EMAIL
    ssm.put_parameter(Name=name, Value=json.dumps(pending), Type="String", Overwrite=True)
    # A good approval: human-readable times, and the connector agrees.
    done = approve(approver, operator_file, rid)
    assert done.returncode == 0, done.stderr[-2000:]
    assert " UTC (in 14 min" in done.stdout or " UTC (in 15 min" in done.stdout, done.stdout
    assert "is an Aptible user" in done.stderr  # what only the connector can check is said
    assert "held until" in get(connector, meta).message
    delete(connector, meta)


def test_reason_is_signed_and_part_of_the_request_id(
    connector: Connector,
    tls_fake: FakeAptible,
    operator_file: Path,
    secrets_factory: Any,
    aws_env: dict[str, str],
    approver_email: str,
) -> None:
    """A second CreateTask of the same execution with another reason is another request: the approval
    given for the first reason does not grant it."""
    template, inputs = template_and_inputs(ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5))
    first = create(connector, template, inputs, execution="exec-reason")
    template, inputs = template_and_inputs(
        ADA_EMAIL, "main-aptible-admin-role", timedelta(minutes=5), reason="drop the prod database"
    )
    second = create(connector, template, inputs, execution="exec-reason")
    assert request_id_of(first) != request_id_of(second)
    approver = aws_user_env(secrets_factory, aws_env, approver_email)
    assert approve(approver, operator_file, request_id_of(first)).returncode == 0
    ssm = secrets_factory.client("ssm")
    prefix = _prefix(operator_file)
    record = ssm.get_parameter(Name=f"{prefix}/{request_id_of(first)}/approval")["Parameter"]["Value"]
    forged = json.loads(record)
    forged.update(request_id=request_id_of(second), reason="drop the prod database")
    ssm.put_parameter(
        Name=f"{prefix}/{request_id_of(second)}/approval", Value=json.dumps(forged), Type="String"
    )
    res = get(connector, second)
    assert res.phase == RUNNING and "refused" in res.message and "does not verify" in res.message, res.message
    assert not tls_fake.holds(ADMIN_ROLE, ADA)
    delete(connector, second)
    delete(connector, first)


def test_a_refused_create_is_one_audit_record_naming_every_field(connector: Connector) -> None:
    custom = {"version": 2, "strategy": "main-aptible-strategy", "auth_url": "https://evil.example"}
    template, inputs = template_and_inputs(
        "not an email", "main-aptible-admin-role", timedelta(minutes=5), custom, username_secret="x"
    )
    before = len(audit_events(connector))
    with pytest.raises(grpc.RpcError) as info:
        create(connector, template, inputs)
    for field in ("custom.auth_url", "inputs.username_secret", "inputs.email"):
        assert field in info.value.details(), info.value.details()
    time.sleep(0.3)
    new = audit_events(connector)[before:]
    assert len(new) == 1 and new[0]["event"] == "failed", new
    assert set(new[0]["fields"].split(",")) == {"custom.auth_url", "inputs.username_secret", "inputs.email"}
