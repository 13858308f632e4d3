"""The real console script, as a user (or CI) runs it: a subprocess against the moto server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import new_value

SCRIPT = shutil.which("pyflyte-awssecrets", path=os.path.dirname(sys.executable)) or ""
pytestmark = pytest.mark.skipif(not SCRIPT, reason="console script not installed (pip install -e .)")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["split"],
        ["check"],
        ["policy"],
        ["manifest"],
        *[
            ["manifest", c]
            for c in ("encrypt", "decrypt", "save", "nuke", "refresh", "export", "diff", "sync")
        ],
    ],
)
def test_help_everywhere(command: list[str]) -> None:
    r = run(*command, "--help")
    assert r.returncode == 0 and "Usage:" in r.stdout


def test_help_does_not_import_heavy_modules() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "flytekitplugins_awssecrets.cli",
            "manifest",
            "sync",
            "--help",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert not imported & {"boto3", "botocore", "flytekit", "pydantic", "yaml"}


def test_split_exit_codes() -> None:
    r = run("split", "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-XyZ123")
    assert r.returncode == 0 and "Secret(group=" in r.stdout
    r = run("split", "arn:aws:nope")
    assert r.returncode == 2 and "invalid reference" in r.stderr


def test_manifest_story_through_the_console_script(
    tmp_path: Path, unique: str, aws_env: dict[str, str]
) -> None:
    env = {"PSYML_KEY_ALIAS": f"alias/sub-{unique}"}
    token = new_value()
    f = tmp_path / "app.yml"
    f.write_text(
        yaml.safe_dump(
            {
                "path": f"/sub{unique}/",
                "region": "us-east-1",
                "kmskey": "alias/aws/ssm",
                "parameters": [
                    {"name": "api_token", "description": "t", "type": "SecureString", "value": token},
                    {"name": "level", "description": "", "type": "String", "value": "yes"},
                ],
            },
            sort_keys=False,
        )
    )
    r = run("manifest", "encrypt", "--create-key", "--in-place", str(f), env=env)
    assert r.returncode == 0, r.stderr
    assert token not in f.read_text()
    r = run("manifest", "diff", str(f), env=env)
    assert r.returncode == 1 and r.stdout.count("+ parameter") == 2
    r = run("manifest", "sync", str(f), env=env)
    assert r.returncode == 0, r.stderr
    assert "sync: 2 changed, 0 failed, 0 unchanged" in r.stderr
    r = run("manifest", "diff", str(f), env=env)
    assert r.returncode == 0
    # eval the export lines in a real shell and compare there: the value never reaches this process's output.
    check = 'eval "$("$SCRIPT" manifest export "$FILE")" && test "$API_TOKEN" = "$EXPECTED" && test "$LEVEL" = yes'
    r = subprocess.run(
        ["sh", "-c", check],
        env={**os.environ, **env, "SCRIPT": SCRIPT, "FILE": str(f), "EXPECTED": token},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    r = run("manifest", "nuke", "--yes", str(f), env=env)
    assert (
        r.returncode == 0
        and r.stderr.count(": deleted") == 2
        and "nuke: 2 deleted, 0 already absent" in r.stderr
    )


def test_invalid_manifest_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "bad.yml"
    f.write_text("path: /a\nregion: us-east-1\nparameters:\n  - name: x\n    type: Strin\n    value: 1\n")
    r = run("manifest", "save", str(f))
    assert r.returncode == 2
    assert "parameters[0] 'x': type: Input should be 'String'" in r.stderr
    assert "Traceback" not in r.stderr
