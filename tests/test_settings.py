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


# --- which source a pod takes a setting from (issue 20, item 7) ----------------------------------------------


def test_pod_is_told_by_the_command_line_not_the_environment() -> None:
    from flytekitplugins_awssecrets.setting_sources import running_in_pod

    assert running_in_pod(["/usr/local/bin/pyflyte-execute", "--inputs", "x"])
    assert running_in_pod(["pyflyte-fast-execute"]) and running_in_pod(["/opt/venv/bin/pyflyte-map-execute"])
    assert running_in_pod(["/opt/venv/bin/a0", "--inputs", "x"])  # Flyte 2's container entry point
    # What registration puts in front of flytekit's entry point (podguard): a pod before argv is handed on.
    assert running_in_pod(["/opt/venv/bin/pyflyte-awssecrets-execute", "--cluster-mode", "plugin"])
    assert running_in_pod(["/site-packages/flytekit/bin/entrypoint.py", "pyflyte-execute"])
    assert not running_in_pod(["/usr/local/bin/pyflyte", "run", "wf.py", "wf"])
    assert not running_in_pod(["/usr/bin/python", "-c", "pyflyte-execute"]) and not running_in_pod([])


@pytest.fixture
def image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An image prefix (``sys.prefix``) whose settings file the test writes."""
    import sys

    monkeypatch.setattr(sys, "prefix", str(tmp_path / "image"))
    cfg = tmp_path / "image" / "etc" / "flyte" / "aws-secrets.yaml"
    cfg.parent.mkdir(parents=True)
    return cfg


def test_pod_reads_the_image_file_and_ignores_the_named_one(image: Path, tmp_path: Path) -> None:
    image.write_text(
        "agent_url: http://127.0.0.1:2773\nagent_token_file: /var/run/awssmatoken\ncache_ttl_seconds: 9\n"
    )
    s = load_settings({"FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS": "5"}, pod=True)
    assert s.agent_url == "http://127.0.0.1:2773" and s.cache_ttl_seconds == 5  # others: env still wins
    # The same variables as before, but now naming the image's own file or its own values: accepted.
    same = {
        "FLYTE_AWS_SECRETS_CONFIG": str(image),
        "FLYTE_AWS_SECRETS_AGENT_URL": "http://127.0.0.1:2773/",
        "FLYTE_AWS_SECRETS_LEAK_GUARD": "true",
    }
    assert load_settings(same, pod=True).agent_url == "http://127.0.0.1:2773"
    # Locally, nothing changes: the file the environment names, and the environment over it.
    other = tmp_path / "other.yaml"
    other.write_text("leak_guard: false\n")
    assert load_settings({"FLYTE_AWS_SECRETS_CONFIG": str(other)}, pod=False).leak_guard is False


@pytest.mark.parametrize(
    ("env", "field", "source"),
    [
        ({"FLYTE_AWS_SECRETS_AGENT_URL": "http://10.0.0.9:2773"}, "agent_url", "FLYTE_AWS_SECRETS_AGENT_URL"),
        (
            {"FLYTE_AWS_SECRETS_AGENT_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"},
            "agent_token_file",
            "FLYTE_AWS_SECRETS_AGENT_TOKEN_FILE",
        ),
        (
            {"FLYTE_AWS_SECRETS_AGENT_ALLOW_NON_LOOPBACK": "true"},
            "agent_allow_non_loopback",
            "FLYTE_AWS_SECRETS_AGENT_ALLOW_NON_LOOPBACK",
        ),
        ({"FLYTE_AWS_SECRETS_LEAK_GUARD": "false"}, "leak_guard", "FLYTE_AWS_SECRETS_LEAK_GUARD"),
        ({"FLYTE_AWS_SECRETS_REDACT_LOGS": "off"}, "redact_logs", "FLYTE_AWS_SECRETS_REDACT_LOGS"),
        ({"FLYTE_AWS_SECRETS_MOUNT_DIR": "/tmp/x"}, "mount_dir", "FLYTE_AWS_SECRETS_MOUNT_DIR"),
        (
            {"FLYTE_AWS_SECRETS_LEAK_GUARD_JSON_LEAVES": "credentials"},
            "leak_guard_json_leaves",
            "FLYTE_AWS_SECRETS_LEAK_GUARD_JSON_LEAVES",
        ),
        (
            {"FLYTE_AWS_SECRETS_DESCRIPTIVE_JSON_KEYS": '["password"]'},
            "descriptive_json_keys",
            "FLYTE_AWS_SECRETS_DESCRIPTIVE_JSON_KEYS",
        ),
        (
            {"FLYTE_AWS_SECRETS_TRUSTED_ENDPOINTS": '["https://evil.example"]'},
            "trusted_endpoints",
            "FLYTE_AWS_SECRETS_TRUSTED_ENDPOINTS",
        ),
        ({"FLYTE_AWS_SECRETS_CONFIG": "/tmp/mine.yaml"}, "config", "FLYTE_AWS_SECRETS_CONFIG"),
        (
            {"FLYTE_AWS_SECRETS_REFRESH_FLEET_PODS": "98761"},
            "refresh_fleet_pods",
            "FLYTE_AWS_SECRETS_REFRESH_FLEET_PODS",
        ),
        (
            {"FLYTE_AWS_SECRETS_WEBHOOK_DIR": "/tmp/launcher-inputs"},
            "webhook_dir",
            "FLYTE_AWS_SECRETS_WEBHOOK_DIR",
        ),
        ({"FLYTE_AWS_SECRETS_CLUSTER_MODE": "webhook"}, "cluster_mode", "FLYTE_AWS_SECRETS_CLUSTER_MODE"),
        (
            {"FLYTE_AWS_SECRETS_CLUSTER_MODES": '{"*/production": "webhook"}'},
            "cluster_modes",
            "FLYTE_AWS_SECRETS_CLUSTER_MODES",
        ),
        ({"AWS_ENDPOINT_URL": "https://collector.example"}, "trusted_endpoints", "AWS_ENDPOINT_URL"),
        ({"AWS_ENDPOINT_URL_STS": "http://169.254.0.9"}, "trusted_endpoints", "AWS_ENDPOINT_URL_STS"),
    ],
)
def test_pod_refuses_env_that_changes_a_protected_setting(
    image: Path, env: dict[str, str], field: str, source: str
) -> None:
    from flytekitplugins_awssecrets import UntrustedSettingError

    image.write_text("leak_guard: true\nleak_guard_json_leaves: all\n")
    with pytest.raises(UntrustedSettingError) as e:
        load_settings(env, pod=True)
    assert e.value.field == field and e.value.source == f"env var {source}"
    assert str(image) in str(e.value)
    assert all(v not in str(e.value) for v in env.values())  # the attacker's value is not echoed
    if field != "config":  # a local run judges the value on its merits only (agent_url wants a token file)
        try:
            load_settings(env, pod=False)
        except SettingsError as local:
            assert not isinstance(local, UntrustedSettingError)


def test_pod_accepts_env_equal_to_the_images_webhook_settings(image: Path) -> None:
    """Where the webhook mounts and which requests it serves: the image's; the same value in the env (a
    PodTemplate repeating it) changes nothing and is accepted, a different one is refused."""
    from flytekitplugins_awssecrets import UntrustedSettingError

    image.write_text(
        "webhook_dir: /var/flyte/secrets\ncluster_mode: webhook\n"
        'cluster_modes: {"ml/production": "webhook", "*/development": "plugin"}\n'
    )
    same = {
        "FLYTE_AWS_SECRETS_WEBHOOK_DIR": "/var/flyte/secrets/",
        "FLYTE_AWS_SECRETS_CLUSTER_MODE": "webhook",
        "FLYTE_AWS_SECRETS_CLUSTER_MODES": '{"*/development": "plugin", "ml/production": "webhook"}',
    }
    s = load_settings(same, pod=True)
    assert s.webhook_dir.rstrip("/") == "/var/flyte/secrets" and s.mode_for("ml", "production") == "webhook"
    assert load_settings({}, pod=True).mode_for("x", "development") == "plugin"
    with pytest.raises(UntrustedSettingError) as e:
        load_settings({**same, "FLYTE_AWS_SECRETS_CLUSTER_MODES": '{"ml/production": "webhook"}'}, pod=True)
    assert e.value.field == "cluster_modes"
    image.write_text("leak_guard: true\n")  # no webhook_dir: the default is the only value accepted
    assert load_settings({"FLYTE_AWS_SECRETS_WEBHOOK_DIR": "/etc/flyte/secrets"}, pod=True)
    with pytest.raises(UntrustedSettingError):
        load_settings({"FLYTE_AWS_SECRETS_WEBHOOK_DIR": "/etc/flyte/secrets/../../tmp"}, pod=True)


def test_pod_accepts_loopback_and_image_trusted_endpoints(image: Path) -> None:
    image.write_text("trusted_endpoints: ['https://vpce-1.secretsmanager.us-east-1.vpce.amazonaws.com']\n")
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": "https://vpce-1.secretsmanager.us-east-1.vpce.amazonaws.com:443/",
    }
    assert load_settings(env, pod=True).trusted_endpoints
