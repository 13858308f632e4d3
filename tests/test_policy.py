"""``policy``: the IAM policy a workflow needs, checked against moto (IAM accepts it; what it names exists)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flytekitplugins_awssecrets import policy as policy_module
from flytekitplugins_awssecrets.cli import main
from tests.conftest import new_value

WORKFLOW = """
from flytekit import Secret, task, workflow
from flytekitplugins_awssecrets import aws_secret

FULL = aws_secret({full!r}, json_key="password")
PARTIAL = aws_secret({partial!r})
CMK = aws_secret({cmk!r})
PARAM = aws_secret({param!r})
ALIASED = aws_secret("DbAlias")
OTHER = Secret(group="k8s", key="x")

@task(secret_requests=[FULL, PARTIAL])
def a() -> int:
    return 1

@task(secret_requests=[CMK, PARAM, ALIASED, OTHER])
def b(x: int) -> int:
    return x

@workflow
def wf() -> int:
    return b(x=a())

@workflow
def only_a() -> int:
    return a()
"""


@pytest.fixture
def setup(
    tmp_path: Path, unique: str, secrets_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    kms = secrets_factory.client("kms")
    key_arn = kms.create_key(Description="cmk")["KeyMetadata"]["Arn"]
    full, _ = secrets_factory.secret(f"pol{unique}/db", {"password": new_value()})
    partial_full, _ = secrets_factory.secret(f"pol{unique}/api")
    sm = secrets_factory.client("secretsmanager")
    cmk_value = new_value()
    cmk = sm.create_secret(Name=f"pol{unique}/cmk", SecretString=cmk_value, KmsKeyId=key_arn)["ARN"]
    aliased, _ = secrets_factory.secret(f"pol{unique}/aliased")
    param = secrets_factory.parameter(f"/pol{unique}/token")
    partial = partial_full[: -len("-XXXXXX")]
    monkeypatch.setenv("FLYTE_AWS_SECRETS_ALIASES", json.dumps({"DbAlias": aliased}))
    f = tmp_path / f"pol_wf_{unique}.py"
    f.write_text(textwrap.dedent(WORKFLOW).format(full=full, partial=partial, cmk=cmk, param=param))
    return {
        "file": f,
        "full": full,
        "partial": partial,
        "cmk": cmk,
        "param": param,
        "aliased": aliased,
        "key": key_arn,
    }


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _statements(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in doc["Statement"]}


def test_policy_names_exact_arns_and_iam_accepts_it(setup: dict[str, Any], secrets_factory: Any) -> None:
    r = _cli("policy", str(setup["file"]), "wf")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    st = _statements(doc)
    assert set(st) == {"ReadSecrets", "ReadParameters"}  # no BatchGetSecretValue, no tags, no KMS
    assert st["ReadSecrets"]["Action"] == ["secretsmanager:GetSecretValue"]
    assert sorted(st["ReadSecrets"]["Resource"]) == sorted(
        [setup["full"], setup["partial"] + "-??????", setup["cmk"], setup["aliased"]]
    )
    assert st["ReadParameters"] == {
        "Sid": "ReadParameters",
        "Effect": "Allow",
        "Action": ["ssm:GetParameters"],
        "Resource": [setup["param"]],
    }
    assert "--resolve-kms" in r.stderr
    # IAM (moto validates policy documents) accepts it ...
    iam = secrets_factory.client("iam")
    iam.create_policy(PolicyName=f"p{abs(hash(setup['full'])) % 10**8}", PolicyDocument=r.stdout)
    # ... and every secret and parameter it names exists.
    sm, ssm = secrets_factory.client("secretsmanager"), secrets_factory.client("ssm")
    for res in st["ReadSecrets"]["Resource"]:
        if res.endswith("-??????"):
            name = res.split(":secret:")[1][: -len("-??????")]
            matches = sm.list_secrets(Filters=[{"Key": "name", "Values": [name]}])["SecretList"]
            assert [
                m for m in matches if re.fullmatch(re.escape(name) + r"-\w{6}", m["ARN"].split(":secret:")[1])
            ]
        else:
            assert sm.describe_secret(SecretId=res)["ARN"] == res
    for res in st["ReadParameters"]["Resource"]:
        assert ssm.get_parameters(Names=["/" + res.split(":parameter/")[1]])["Parameters"]


def test_policy_for_one_workflow_only(setup: dict[str, Any]) -> None:
    doc = json.loads(_cli("policy", str(setup["file"]), "only_a").stdout)
    st = _statements(doc)
    assert set(st) == {"ReadSecrets"}
    assert sorted(st["ReadSecrets"]["Resource"]) == sorted([setup["full"], setup["partial"] + "-??????"])


def test_resolve_kms_adds_decrypt_for_customer_managed_keys_only(
    setup: dict[str, Any], secrets_factory: Any
) -> None:
    r = _cli("policy", "--resolve-kms", str(setup["file"]), "wf")
    assert r.exit_code == 0, r.stderr
    st = _statements(json.loads(r.stdout))
    kms = [s for sid, s in st.items() if sid.startswith("DecryptWithKey")]
    assert [s["Resource"] for s in kms] == [[setup["key"]]]
    assert kms[0]["Condition"] == {
        "StringEquals": {"kms:ViaService": ["secretsmanager.us-east-1.amazonaws.com"]}
    }
    secrets_factory.client("iam").create_policy(
        PolicyName=f"k{abs(hash(setup['key'])) % 10**8}", PolicyDocument=r.stdout
    )


def test_required_tags_add_the_metadata_reads(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_AWS_SECRETS_REQUIRED_TAGS", json.dumps({"team": "*"}))
    st = _statements(json.loads(_cli("policy", str(setup["file"]), "wf").stdout))
    assert st["ReadSecrets"]["Action"] == ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    assert st["ReadParameters"]["Action"] == ["ssm:GetParameters", "ssm:ListTagsForResource"]


def test_terraform_output(setup: dict[str, Any]) -> None:
    r = _cli("policy", "--format", "terraform", "--name", "task", str(setup["file"]), "only_a")
    assert r.exit_code == 0
    tf = r.stdout
    assert tf.startswith('data "aws_iam_policy_document" "task" {') and tf.count("{") == tf.count("}")
    assert 'actions   = ["secretsmanager:GetSecretValue"]' in tf
    assert json.dumps(setup["partial"] + "-??????") in tf and json.dumps(setup["full"]) in tf


def test_batch_statement_only_for_a_batching_read_strategy() -> None:
    from flytekitplugins_awssecrets.refs import parse_reference

    ref = parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbCdEf")
    without = _statements(policy_module.build_policy(policy_module.PolicyInputs(secrets=[ref])))
    assert "BatchReadSecrets" not in without
    batched = _statements(policy_module.build_policy(policy_module.PolicyInputs(secrets=[ref], batch=True)))
    assert batched["BatchReadSecrets"]["Resource"] == ["*"]


def test_extra_reference_providers_are_included(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = "arn:aws:secretsmanager:us-east-1:123456789012:secret:aptible/bot-QwErTy"
    seen: list[Any] = []

    def provider(module: Any, workflow: str | None) -> list[str]:
        seen.append((module.__name__, workflow))
        return [bot]

    monkeypatch.setattr(policy_module, "EXTRA_REFERENCE_PROVIDERS", [provider])
    st = _statements(json.loads(_cli("policy", str(setup["file"]), "only_a").stdout))
    assert bot in st["ReadSecrets"]["Resource"] and seen[0][1] == "only_a"


def test_unknown_alias_exits_2(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYTE_AWS_SECRETS_ALIASES")
    r = _cli("policy", str(setup["file"]), "wf")
    assert r.exit_code == 2 and "DbAlias" in r.stderr and "unknown alias" in r.stderr


def test_the_docs_show_what_the_generator_prints() -> None:
    """docs/cluster.md shows the policy once, as `policy` prints it: the example must be the generator's."""
    from flytekitplugins_awssecrets.refs import parse_reference

    text = (Path(__file__).resolve().parent.parent / "docs" / "cluster.md").read_text()
    block = re.search(r"```json\n(\{\n  \"Version\".*?)```", text, re.S)
    assert block is not None
    shown = json.loads(block.group(1))
    inputs = policy_module.PolicyInputs(
        secrets=[
            parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-XyZ123:password"),
            parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api"),
        ],
        parameters=[parse_reference("arn:aws:ssm:us-east-1:123456789012:parameter/prod/token")],
        kms_keys={
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab": {"secretsmanager"}
        },
    )
    assert shown == policy_module.build_policy(inputs)
    for page in ("cluster.md", "credentials.md"):  # no hand-written copy of the read policy elsewhere
        other = (Path(__file__).resolve().parent.parent / "docs" / page).read_text()
        assert other.count('"secretsmanager:GetSecretValue"') <= (1 if page == "cluster.md" else 0)
