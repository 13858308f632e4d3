"""Reference parsing: every accepted shape, and a typed error naming the bad part for the rest."""

from __future__ import annotations

import subprocess
import sys

import pytest
from flytekit import Secret

from flytekitplugins_awssecrets import InvalidReferenceError, aws_secret, parse_reference, split_arn
from flytekitplugins_awssecrets.refs import ALIAS_GROUP, reference_from_request

SM = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"


def test_split_arn_matches_seed_002() -> None:
    assert split_arn(SM + "prod/api-key-AbCdEf") == (SM, "prod/api-key-AbCdEf")
    group, key = split_arn("arn:aws:secretsmanager:eu-west-1:123456789012:secret:tls-cert-QwErTy")
    assert group == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:"
    assert key == "tls-cert-QwErTy"


@pytest.mark.parametrize(
    ("arn", "partition", "region"),
    [
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbCdEf", "aws", "us-east-1"),
        ("arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:a-AbCdEf", "aws-cn", "cn-north-1"),
        ("arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:a", "aws-us-gov", "us-gov-west-1"),
    ],
)
def test_partitions(arn: str, partition: str, region: str) -> None:
    ref = parse_reference(arn)
    assert (ref.partition, ref.region, ref.account) == (partition, region, "123456789012")


def test_full_and_partial() -> None:
    assert parse_reference(SM + "prod/db-XyZ123").full_arn
    assert not parse_reference(SM + "prod/db").full_arn
    assert parse_reference(SM + "prod/db").arn == SM + "prod/db"


def test_ecs_trailing_fields() -> None:
    ref = parse_reference(SM + "prod/db-XyZ123:password:AWSPREVIOUS")
    assert (ref.name, ref.json_key, ref.version_stage, ref.version_id) == (
        "prod/db-XyZ123",
        "password",
        "AWSPREVIOUS",
        None,
    )
    ref = parse_reference(SM + "prod/db-XyZ123:::0f1c2d3e-aaaa-bbbb-cccc-111122223333")
    assert ref.json_key is None and ref.version_id == "0f1c2d3e-aaaa-bbbb-cccc-111122223333"
    assert ref.key == "prod/db-XyZ123:::0f1c2d3e-aaaa-bbbb-cccc-111122223333"
    # Trailing empty fields are dropped when formatting.
    assert parse_reference(SM + "prod/db-XyZ123:password::").key == "prod/db-XyZ123:password"


def test_ssm_parameter_arns() -> None:
    ref = parse_reference("arn:aws:ssm:us-east-1:123456789012:parameter/prod/db/password")
    assert ref.service == "ssm" and ref.name == "/prod/db/password"
    assert ref.group == "arn:aws:ssm:us-east-1:123456789012:parameter/"
    assert ref.key == "prod/db/password"
    flat = parse_reference("arn:aws:ssm:us-east-1:123456789012:parameter/flat")
    assert flat.name == "flat"
    assert split_arn("arn:aws:ssm:eu-west-1:123456789012:parameter/a/b:json") == (
        "arn:aws:ssm:eu-west-1:123456789012:parameter/",
        "a/b:json",
    )


def test_aws_secret_is_a_plain_flytekit_secret() -> None:
    s = aws_secret(
        SM + "prod/db-XyZ123",
        json_key="password",
        mount_requirement=Secret.MountType.ENV_VAR,
        env_var="DB_PASSWORD",
    )
    assert type(s) is Secret
    assert (s.group, s.key, s.env_var) == (SM, "prod/db-XyZ123:password", "DB_PASSWORD")
    assert s.mount_requirement == Secret.MountType.ENV_VAR
    # It serialises like any other secret.
    assert Secret.from_flyte_idl(s.to_flyte_idl()) == s
    assert reference_from_request(s.group, s.key, s.group_version) == parse_reference(
        SM + "prod/db-XyZ123:password"
    )


def test_aws_secret_versions_and_alias() -> None:
    s = aws_secret(SM + "prod/db", version_stage="AWSPREVIOUS")
    assert s.key == "prod/db::AWSPREVIOUS"
    alias = aws_secret("TestingSecret", json_key="user")
    assert (alias.group, alias.key) == (ALIAS_GROUP, "TestingSecret:user")


def test_group_version_is_a_version_id() -> None:
    ref = reference_from_request(SM, "prod/db-XyZ123", "v-1234")
    assert ref is not None and ref.version_id == "v-1234"


def test_non_aws_groups_are_not_ours() -> None:
    assert reference_from_request("my-k8s-secret", "token", None) is None
    assert reference_from_request(None, "x", None) is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("arn:aws:secretsmanager:us-east-1:123456789012", "6 ':'-separated parts"),
        ("arn:aws-xx:secretsmanager:us-east-1:123456789012:secret:a", "unknown partition"),
        ("arn:aws:s3:us-east-1:123456789012:secret:a", "neither secretsmanager nor ssm"),
        ("arn:aws:secretsmanager:useast1:123456789012:secret:a", "region 'useast1'"),
        ("arn:aws:secretsmanager:cn-north-1:123456789012:secret:a", "belongs to another partition"),
        ("arn:aws-cn:secretsmanager:us-east-1:123456789012:secret:a", "not in partition 'aws-cn'"),
        ("arn:aws:secretsmanager:us-east-1:1234:secret:a", "12-digit"),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secrets:a", "secret:<name>"),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:", "name is empty"),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:a b", "characters AWS does not allow"),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:a:k:s:v:extra", "too many"),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:a::AWSCURRENT:abc-123", "not both"),
        ("arn:aws:ssm:us-east-1:123456789012:parameter//x", "empty path segment"),
        ("arn:aws:ssm:us-east-1:123456789012:parameter/x:::notanumber", "version number"),
        ("arn:aws:ssm:us-east-1:123456789012:param/x", "parameter/<name>"),
        ("not a valid alias!", "neither an ARN nor a valid alias"),
        ("", "empty"),
    ],
)
def test_malformed_references_name_the_bad_part(text: str, needle: str) -> None:
    with pytest.raises(InvalidReferenceError) as e:
        parse_reference(text)
    assert needle in str(e.value)
    assert "expected" in str(e.value)


def test_split_arn_rejects_aliases() -> None:
    with pytest.raises(InvalidReferenceError, match="not an ARN"):
        split_arn("TestingSecret")


def test_malformed_reference_fails_at_module_import(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mod = tmp_path / "bad_workflow.py"
    mod.write_text(
        "from flytekitplugins_awssecrets import aws_secret\n"
        "X = aws_secret('arn:aws:secretsmanager:us-east-1:12345:secret:x')\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", "import bad_workflow"], cwd=tmp_path, capture_output=True, text=True
    )
    assert p.returncode != 0
    assert "InvalidReferenceError" in p.stderr and "account '12345' is not a 12-digit account id" in p.stderr


# -- regions are checked where they are read (issue 21, item 7) ---------------------------------------------


@pytest.mark.parametrize(
    ("region", "partition", "suggestion"),
    [
        ("us-esat-1", "aws", "us-east-1"),
        ("eu-wset-2", "aws", "eu-west-2"),
        ("cn-nrth-1", "aws-cn", "cn-north-1"),
        ("us-gov-wst-1", "aws-us-gov", "us-gov-west-1"),
    ],
)
def test_a_region_typo_is_refused_with_a_suggestion(region: str, partition: str, suggestion: str) -> None:
    arn = f"arn:{partition}:secretsmanager:{region}:123456789012:secret:db"
    with pytest.raises(InvalidReferenceError) as e:
        parse_reference(arn)
    assert f"region {region!r} is not an AWS region in partition {partition!r}" in str(e.value)
    assert f"did you mean {suggestion!r}" in str(e.value)
    # A flytekit Secret with that group is still this plugin's, and fails with the same typed error.
    with pytest.raises(InvalidReferenceError, match="did you mean"):
        reference_from_request(arn.split(":secret:")[0] + ":secret:", "db", None)


def test_every_region_botocore_knows_is_accepted() -> None:
    from botocore.session import get_session

    session = get_session()
    for partition in ("aws", "aws-cn", "aws-us-gov"):
        regions = session.get_available_regions("secretsmanager", partition_name=partition)
        assert regions, partition
        for region in regions:
            parse_reference(f"arn:{partition}:secretsmanager:{region}:123456789012:secret:x")
            parse_reference(f"arn:{partition}:ssm:{region}:123456789012:parameter/x")


def test_extra_regions_let_a_new_region_through(monkeypatch: pytest.MonkeyPatch) -> None:
    arn = "arn:aws:secretsmanager:xx-newregion-1:123456789012:secret:x"
    with pytest.raises(InvalidReferenceError, match="FLYTE_AWS_SECRETS_EXTRA_REGIONS"):
        parse_reference(arn)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_EXTRA_REGIONS", '["xx-newregion-1"]')
    assert parse_reference(arn).region == "xx-newregion-1"


def test_split_with_a_region_typo_exits_non_zero() -> None:
    p = subprocess.run(
        [
            str(__import__("pathlib").Path(sys.executable).parent / "pyflyte-awssecrets"),
            "split",
            "arn:aws:secretsmanager:us-esat-1:123456789012:secret:prod/db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and p.stdout == ""
    assert "did you mean 'us-east-1'" in p.stderr


def test_settings_regions_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from flytekitplugins_awssecrets.errors import SettingsError
    from flytekitplugins_awssecrets.settings import load_settings

    for env, field in (
        ({"FLYTE_AWS_SECRETS_REGION": "us-eastt-1"}, "region"),
        ({"FLYTE_AWS_SECRETS_FAILOVER_REGIONS": '{"us-east-1": ["us-wset-2"]}'}, "failover_regions"),
        (
            {"FLYTE_AWS_SECRETS_ALIASES": '{"Db": "' + SM.replace("us-east-1", "us-esat-1") + 'db"}'},
            "aliases",
        ),
    ):
        with pytest.raises(SettingsError) as e:
            load_settings(env)
        assert e.value.field == field and "did you mean" in str(e.value), str(e.value)
    # The escape hatch, from the same settings file as the alias that needs it.
    cfg = tmp_path / "settings.yaml"
    cfg.write_text(
        "extra_regions: [xx-newregion-1]\n"
        "aliases:\n  Db: arn:aws:secretsmanager:xx-newregion-1:123456789012:secret:db\n"
    )
    s = load_settings({"FLYTE_AWS_SECRETS_CONFIG": str(cfg)})
    assert s.extra_regions == ("xx-newregion-1",)
    with pytest.raises(SettingsError, match="extra_regions"):
        load_settings({"FLYTE_AWS_SECRETS_EXTRA_REGIONS": "not a region"})


def test_manifest_region_typo_is_a_typed_validation_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from flytekitplugins_awssecrets.manifest.model import ManifestError, load_manifest

    f = tmp_path / "app.yml"
    f.write_text("path: /app\nregion: us-eastt-1\nparameters: []\n")
    with pytest.raises(ManifestError) as e:
        load_manifest(str(f))
    assert "region" in str(e.value) and "did you mean 'us-east-1'" in str(e.value)
