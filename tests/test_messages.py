"""The smaller messages a newcomer meets: each says what was wrong and how to fix it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flytekitplugins_awssecrets.errors import SecretResolutionError, SettingsError
from tests.conftest import ROOT
from tests.support.workflows import one_secret_workflow

BIN = Path(sys.executable).parent


def test_missing_credentials_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flytekitplugins_awssecrets.resolver import resolve_values

    missing = tmp_path / "nope" / "credentials"
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CREDENTIALS_FILE", str(missing))
    with pytest.raises(SecretResolutionError) as info:
        resolve_values(["arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbCdEf"])
    text = str(info.value)
    assert f"the credentials_file {str(missing)!r} does not exist" in text
    assert "unexpected" not in text


def test_settings_errors_carry_no_pydantic_prefix() -> None:
    from flytekitplugins_awssecrets.settings import load_settings

    with pytest.raises(SettingsError) as info:
        load_settings({"FLYTE_AWS_SECRETS_ALIASES": '{"a": "not-an-arn"}'})
    assert "Value error" not in str(info.value) and "alias 'a' must point at an ARN" in str(info.value)


def test_serve_answers_a_missing_region_with_400() -> None:
    from flytekitplugins_awssecrets.serve.http_api import error_response

    resp = error_response(SettingsError("region", "settings", "a plain secret name needs a region"))
    assert resp.status == 400


def test_duplicate_manifest_names_are_listed_with_other_problems(tmp_path: Path) -> None:
    from flytekitplugins_awssecrets.manifest.model import ManifestError, load_manifest

    f = tmp_path / "m.yml"
    f.write_text(
        "path: /a/\nregion: us-east-1\nparameters:\n"
        "  - {name: x, type: String, value: a}\n"
        "  - {name: x, type: String, value: b}\n"
        "  - {name: y, type: Bogus, value: c}\n"
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(str(f))
    text = str(info.value)
    assert "parameters[2] 'y': type:" in text and "parameters[1] and parameters[0] are both /a/x" in text


def test_plugin_log_line_visible_under_pyflyte_run(
    tmp_path: Path, aws_env: dict[str, str], secrets_factory: Any
) -> None:
    arn, _ = secrets_factory.secret(f"logs/{tmp_path.name[-12:]}")
    wf = one_secret_workflow(tmp_path / "wf_logs.py", arn)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_"))}
    env.update(aws_env, PYTHONPATH=str(ROOT), COLUMNS="300", FLYTE_SDK_LOGGING_LEVEL="20")
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", str(wf), "wf"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    # flytekit's rich handler wraps lines at 80 columns without a terminal: match across the wrap.
    assert re.search(r"1\s+AWS\s+secret\s+request\(s\)\s+mounted", p.stdout + p.stderr), p.stdout[-2000:]


def test_credentials_file_removed_while_running_is_named(
    tmp_path: Path, aws_env: dict[str, str], secrets_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flytekitplugins_awssecrets.resolver import resolve_values

    arn, _ = secrets_factory.secret(f"credfile/{tmp_path.name[-12:]}")
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS", "0")
    assert len(resolve_values([arn])) == 1
    creds.unlink()
    with pytest.raises(SecretResolutionError) as info:
        resolve_values([arn])
    assert "credentials_file" in str(info.value) and "no longer exists" in str(info.value)
    assert "unexpected" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "shown", "hidden"),
    [
        (
            "<ErrorResponse><Error><Code>X</Code><Message>The token is invalid.</Message></Error></ErrorResponse>",
            "The token is invalid.",
            "<Error",
        ),
        (
            "<html><head><title>502</title></head><body>gateway of acme-proxy</body></html>",
            "not shown",
            "acme-proxy",
        ),
        ("403: <!DOCTYPE html><html><body>acme-proxy</body></html>", "403: (the endpoint", "acme-proxy"),
        (
            '<?xml version="1.0"?><Response><Errors><Error><Code>Y</Code></Error></Errors></Response>',
            "not shown",
            "<?xml",
        ),
    ],
)
def test_no_raw_xml_or_html_reaches_a_message(text: str, shown: str, hidden: str) -> None:
    from flytekitplugins_awssecrets.errors import SecretFetchError, clean_aws_message

    assert shown in clean_aws_message(text) and hidden not in clean_aws_message(text)
    assert hidden not in str(SecretFetchError("arn:aws:secretsmanager:us-east-1:123456789012:secret:x", text))
