"""Settings: precedence (env over file over defaults) and errors that name field, source and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from flytekitplugins_awssecrets import SettingsError
from flytekitplugins_awssecrets.settings import load_settings


def test_precedence_env_over_file_over_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "cache_ttl_seconds: 60\nmax_concurrency: 4\naliases:\n  A: arn:aws:secretsmanager:us-east-1:123456789012:secret:a\n"
    )
    env = {"FLYTE_AWS_SECRETS_CONFIG": str(cfg), "FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS": "5"}
    s = load_settings(env)
    assert s.cache_ttl_seconds == 5  # env wins
    assert s.max_concurrency == 4  # file
    assert s.batch_size == 20  # default
    assert s.aliases == {"A": "arn:aws:secretsmanager:us-east-1:123456789012:secret:a"}


@pytest.mark.parametrize(
    ("env", "file", "field", "source", "problem"),
    [
        (
            {"FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS": "soon"},
            None,
            "cache_ttl_seconds",
            "env var FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS",
            "valid number",
        ),
        ({}, "cluster_mode: sidecar\n", "cluster_mode", "key 'cluster_mode'", "'plugin' or 'webhook'"),
        ({}, "aliases:\n  X: not-an-arn\n", "aliases", "key 'aliases'", "must point at an ARN"),
        (
            {},
            "account_roles:\n  '12': arn:aws:iam::123456789012:role/r\n",
            "account_roles",
            "key 'account_roles'",
            "12 digits",
        ),
        ({}, "assume_role: arn:aws:iam::123:role/r\n", "assume_role", "key 'assume_role'", "pattern"),
        ({}, "cache_tl_seconds: 3\n", "cache_tl_seconds", "key 'cache_tl_seconds'", "unknown setting"),
        (
            {"FLYTE_AWS_SECRETS_CAHCE": "1"},
            None,
            "cahce",
            "env var FLYTE_AWS_SECRETS_CAHCE",
            "no setting has a similar name; valid names: https://",
        ),
        (
            {"FLYTE_AWS_SECRETS_CACHE_TTL": "1"},
            None,
            "cache_ttl",
            "env var FLYTE_AWS_SECRETS_CACHE_TTL",
            "did you mean FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS? valid names: https://",
        ),
        (
            {"FLYTE_AWS_SECRETS_MAX_CONCURENCY": "1"},
            None,
            "max_concurency",
            "env var FLYTE_AWS_SECRETS_MAX_CONCURENCY",
            "did you mean FLYTE_AWS_SECRETS_MAX_CONCURRENCY?",
        ),
        (
            {"FLYTE_AWS_SECRETS_ALIASES": "{broken"},
            None,
            "aliases",
            "env var FLYTE_AWS_SECRETS_ALIASES",
            "not valid JSON",
        ),
    ],
)
def test_invalid_settings_name_field_source_and_expectation(
    tmp_path: Path, env: dict[str, str], file: str | None, field: str, source: str, problem: str
) -> None:
    env = dict(env)
    if file is not None:
        cfg = tmp_path / "s.yaml"
        cfg.write_text(file)
        env["FLYTE_AWS_SECRETS_CONFIG"] = str(cfg)
    with pytest.raises(SettingsError) as e:
        load_settings(env)
    msg = str(e.value)
    assert e.value.field == field and source in msg and problem in msg, msg


def test_secret_values_never_in_settings_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("access_key_id: AKIA1\nsecret_access_key: [not, a, string, hunter2-secret]\n")
    with pytest.raises(SettingsError) as e:
        load_settings({"FLYTE_AWS_SECRETS_CONFIG": str(cfg)})
    assert "hunter2" not in str(e.value)


def test_missing_and_broken_config_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({"FLYTE_AWS_SECRETS_CONFIG": str(tmp_path / "nope.yaml")})
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(SettingsError, match="not valid YAML at line"):
        load_settings({"FLYTE_AWS_SECRETS_CONFIG": str(bad)})
