"""Issue 20's attacks on the manifest CLI (and issue 21's ``--create-key`` report), each through the real
``pyflyte-awssecrets`` command in a subprocess, against moto where KMS is needed:

* a manifest whose entries export as ``BASH_ENV``, ``LD_PRELOAD`` and ``PATH`` (plain Strings, lower case in
  the file) ran the author's script for whoever ``eval``-ed the export;
* a manifest whose ``encrypted_with`` names its author's key got new SecureStrings encrypted under it;
* ``-i`` on a symlinked manifest replaced the link with a regular file;
* a complex YAML mapping key escaped as a ``TypeError`` traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flytekitplugins_awssecrets.manifest.crypto import PsymlCipher
from tests.conftest import CREATED_VALUES, new_value

pytestmark = pytest.mark.timeout(180)

CLI = str(Path(sys.executable).parent / "pyflyte-awssecrets")
ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    r = subprocess.run([CLI, "manifest", *args], env=full, capture_output=True, text=True, timeout=120)
    for v in CREATED_VALUES:
        assert v not in r.stderr, "a value in the command's messages"
    return r


def _manifest(path: Path, params: list[dict[str, Any]], **extra: Any) -> Path:
    doc = {"path": "/app/", "region": "us-east-1", "kmskey": "alias/aws/ssm", **extra, "parameters": params}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _string(name: str, value: str) -> dict[str, str]:
    return {"name": name, "description": "d", "type": "String", "value": value}


def test_export_refuses_names_that_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"touch {marker}\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    f = _manifest(
        tmp_path / "m.yml",
        [
            _string("bash_env", str(evil)),
            _string("ld_preload", str(tmp_path / "evil.so")),
            _string("path", str(bindir)),
            _string("db_host", "db.internal"),
        ],
    )
    r = _run("export", str(f))
    assert r.returncode == 2 and r.stdout == "", "nothing printed, so nothing to eval"
    for var, entry in (("BASH_ENV", "bash_env"), ("LD_PRELOAD", "ld_preload"), ("PATH", "path")):
        assert f"{var} (from parameters[" in r.stderr and f"'{entry}'" in r.stderr
    assert "--allow-name" in r.stderr and "Traceback" not in r.stderr
    assert _run("export", "--format", "json", str(f)).stdout == ""
    # The attack as it ran: eval the export, then any bash -c. The script never runs.
    attack = f'eval "$({CLI} manifest export {f})"; bash -c true'
    subprocess.run(
        ["bash", "-c", attack], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=120
    )
    assert not marker.exists(), "BASH_ENV from the manifest ran its script"
    # Only names the caller allows, one by one, case-insensitively.
    r = _run("export", "--allow-name", "bash_env", "--allow-name", "LD_PRELOAD", str(f))
    assert r.returncode == 2 and "PATH (from" in r.stderr and "BASH_ENV" not in r.stderr and r.stdout == ""
    r = _run(
        "export", "--allow-name", "BASH_ENV", "--allow-name", "LD_PRELOAD", "--allow-name", "PATH", str(f)
    )
    assert r.returncode == 0 and "export BASH_ENV=" in r.stdout and "export DB_HOST='db.internal'" in r.stdout
    # A prefix makes them harmless names.
    r = _run("export", "--prefix", "APP_", str(f))
    assert r.returncode == 0 and "export APP_PATH=" in r.stdout


def test_complex_yaml_key_is_a_typed_error(tmp_path: Path) -> None:
    f = tmp_path / "m.yml"
    f.write_text("path: /app/\nregion: us-east-1\nparameters:\n  - ? [name, other]\n    : x\n")
    r = _run("export", str(f))
    assert r.returncode == 2 and r.stdout == ""
    assert "line 4: a mapping key must be a plain name, not a sequence" in r.stderr
    assert "Traceback" not in r.stderr and "TypeError" not in r.stderr


@pytest.fixture
def keys(aws_env: dict[str, str], unique: str) -> dict[str, str]:
    """The operator's file key (behind an alias) and a key the manifest's author controls."""
    alias = f"alias/ops-{unique}"
    ours = PsymlCipher(region="us-east-1", alias=alias).key_arn(create=True)
    theirs = PsymlCipher(region="us-east-1")._kms().create_key()["KeyMetadata"]["Arn"]
    return {"alias": alias, "ours": ours, "theirs": theirs}


def test_encrypt_uses_the_operators_key_not_the_files(tmp_path: Path, keys: dict[str, str]) -> None:
    secret = new_value()
    f = _manifest(
        tmp_path / "m.yml",
        [{"name": "token", "description": "d", "type": "SecureString", "value": secret}],
        encrypted_with=keys["theirs"],
    )
    before = f.read_bytes()
    r = _run("encrypt", "-i", str(f), PSYML_KEY_ALIAS=keys["alias"])
    assert r.returncode == 2, r.stderr
    assert keys["theirs"] in r.stderr and keys["ours"] in r.stderr and "--use-file-key" in r.stderr
    assert f.read_bytes() == before, "the file is untouched"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".manifest-")], "no temporary file left"
    # --key names the operator's key just as well; still refused.
    r = _run("encrypt", "--key", keys["alias"], str(f))
    assert r.returncode == 2 and r.stdout == ""
    # On purpose, the file's key is used, and says so.
    r = _run("encrypt", "--use-file-key", "-i", str(f), PSYML_KEY_ALIAS=keys["alias"])
    assert r.returncode == 0 and keys["theirs"] in r.stderr
    assert yaml.safe_load(f.read_text())["encrypted_with"] == keys["theirs"]
    # A file without encrypted_with goes under the operator's key.
    g = _manifest(
        tmp_path / "g.yml", [{"name": "token", "description": "d", "type": "SecureString", "value": secret}]
    )
    r = _run("encrypt", "-i", str(g), PSYML_KEY_ALIAS=keys["alias"])
    assert r.returncode == 0 and yaml.safe_load(g.read_text())["encrypted_with"] == keys["ours"]


def test_create_key_says_which_key_where_and_why(
    tmp_path: Path, aws_env: dict[str, str], unique: str
) -> None:
    params = [{"name": "token", "description": "d", "type": "SecureString", "value": new_value()}]
    f = _manifest(tmp_path / "m.yml", params)
    env = {k: v for k, v in os.environ.items() if k != "PSYML_KEY_REGION"}
    r = subprocess.run(
        [CLI, "manifest", "encrypt", "--create-key", "-i", str(f)],
        env={**env, "PYTHONPATH": str(ROOT), "PSYML_KEY_ALIAS": f"alias/new-{unique}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    arn = yaml.safe_load(f.read_text())["encrypted_with"]
    assert arn.startswith("arn:aws:kms:us-east-1:"), "the manifest's region, not psyml's Sydney default"
    assert (
        f"created KMS key {arn} with alias alias/new-{unique} in us-east-1 (the manifest's region" in r.stderr
    )
    # Asked for by the environment: psyml's way.
    g = _manifest(tmp_path / "g.yml", params)
    r = _run(
        "encrypt",
        "--create-key",
        "-i",
        str(g),
        PSYML_KEY_ALIAS=f"alias/eu-{unique}",
        PSYML_KEY_REGION="eu-west-1",
    )
    assert r.returncode == 0 and "in eu-west-1 (PSYML_KEY_REGION)" in r.stderr


def test_in_place_writes_through_a_symlink(tmp_path: Path, keys: dict[str, str]) -> None:
    real_dir = tmp_path / "config"
    real_dir.mkdir()
    target = _manifest(
        real_dir / "app.yml",
        [{"name": "token", "description": "d", "type": "SecureString", "value": new_value()}],
    )
    target.chmod(0o640)
    link = tmp_path / "app.yml"
    link.symlink_to(target)
    r = _run("encrypt", "-i", str(link), PSYML_KEY_ALIAS=keys["alias"])
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and link.resolve() == target, "the link is still a link"
    assert yaml.safe_load(target.read_text())["encrypted_with"] == keys["ours"]
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in real_dir.iterdir()) == ["app.yml"], "no temporary file left"
