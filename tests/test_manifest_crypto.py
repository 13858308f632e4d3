"""Encryption of manifest files against the moto server, and compatibility with psyml 0.2.2 in both
directions, by running psyml itself (``python -m psyml``) against the same server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from flytekitplugins_awssecrets.cli import main
from flytekitplugins_awssecrets.manifest.crypto import PsymlCipher
from tests.conftest import fingerprint, new_value

KEY_REGION = "ap-southeast-2"  # psyml's default, kept so that the defaults are what is tested


@pytest.fixture
def psyml_key(aws_env: dict[str, str], unique: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh file key behind a fresh alias; PSYML_KEY_ALIAS points at it for us and for psyml."""
    alias = f"alias/psyml-{unique}"
    monkeypatch.setenv("PSYML_KEY_ALIAS", alias)
    # psyml's default region, asked for by the environment as a psyml user's would (psyml needs it too).
    monkeypatch.setenv("PSYML_KEY_REGION", KEY_REGION)
    return PsymlCipher(region=KEY_REGION, alias=alias).key_arn(create=True)


def _manifest(tmp_path: Path, unique: str, params: list[dict[str, Any]], name: str = "m.yml") -> Path:
    f = tmp_path / name
    f.write_text(
        yaml.safe_dump(
            {"path": f"/t{unique}/", "region": "us-east-1", "kmskey": "alias/aws/ssm", "parameters": params},
            sort_keys=False,
        )
    )
    return f


def _psyml(*args: str) -> subprocess.CompletedProcess[str]:
    # psyml builds its KMS client at import time from the environment: a fresh process sees PSYML_KEY_ALIAS.
    return subprocess.run(
        [sys.executable, "-m", "psyml", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_encrypt_then_decrypt_round_trip(tmp_path: Path, unique: str, psyml_key: str) -> None:
    secret = new_value()
    f = _manifest(
        tmp_path,
        unique,
        [
            {"name": "token", "description": "t", "type": "SecureString", "value": secret},
            {"name": "version", "description": "v", "type": "String", "value": "0123"},
        ],
    )
    r = _cli("manifest", "encrypt", "-i", str(f))
    assert r.exit_code == 0, r.stderr
    enc = yaml.safe_load(f.read_text())
    assert secret not in f.read_text() and secret not in r.output
    assert enc["encrypted_with"] == psyml_key
    # Only the encrypted entry's type changes (to psyml's ciphertext marker); the rest stay as written.
    assert [p["type"] for p in enc["parameters"]] == ["securestring", "String"]
    assert enc["parameters"][1]["value"] == "0123"

    r = _cli("manifest", "decrypt", str(f))
    assert r.exit_code == 0
    dec = yaml.safe_load(r.stdout)
    assert dec["parameters"][0]["value"] == secret, fingerprint(dec["parameters"][0]["value"])
    assert dec["parameters"][0]["type"] == "SecureString" and "encrypted_with" not in dec


def test_encrypting_again_keeps_existing_ciphertexts(tmp_path: Path, unique: str, psyml_key: str) -> None:
    f = _manifest(
        tmp_path, unique, [{"name": "a", "description": "", "type": "SecureString", "value": new_value()}]
    )
    assert _cli("manifest", "encrypt", "-i", str(f)).exit_code == 0
    first = yaml.safe_load(f.read_text())["parameters"][0]["value"]
    data = yaml.safe_load(f.read_text())
    data["parameters"].append({"name": "b", "description": "", "type": "SecureString", "value": new_value()})
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert _cli("manifest", "encrypt", "-i", str(f)).exit_code == 0
    again = yaml.safe_load(f.read_text())["parameters"]
    assert again[0]["value"] == first and again[1]["type"] == "securestring"


def test_ciphertext_is_bound_to_its_entry_name(tmp_path: Path, unique: str, psyml_key: str) -> None:
    f = _manifest(
        tmp_path, unique, [{"name": "a", "description": "", "type": "SecureString", "value": new_value()}]
    )
    assert _cli("manifest", "encrypt", "-i", str(f)).exit_code == 0
    f.write_text(f.read_text().replace("name: a", "name: renamed"))
    r = _cli("manifest", "decrypt", str(f))
    assert r.exit_code == 2
    assert "renamed: the ciphertext does not decrypt for this entry name" in r.stderr


def test_missing_file_key_says_how_to_create_it(
    tmp_path: Path, unique: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSYML_KEY_ALIAS", f"alias/none-{unique}")
    f = _manifest(
        tmp_path, unique, [{"name": "a", "description": "", "type": "SecureString", "value": new_value()}]
    )
    r = _cli("manifest", "encrypt", str(f))
    assert r.exit_code == 3 and "--create-key" in r.stderr
    r = _cli("manifest", "encrypt", "--create-key", "-i", str(f))
    assert r.exit_code == 0
    assert ":key/" in yaml.safe_load(f.read_text())["encrypted_with"]


def test_key_region_and_alias_are_honoured(
    tmp_path: Path, unique: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSYML_KEY_REGION", "eu-west-1")
    monkeypatch.setenv("PSYML_KEY_ALIAS", f"alias/eu-{unique}")
    f = _manifest(
        tmp_path, unique, [{"name": "a", "description": "", "type": "SecureString", "value": new_value()}]
    )
    assert _cli("manifest", "encrypt", "--create-key", "-i", str(f)).exit_code == 0
    assert yaml.safe_load(f.read_text())["encrypted_with"].startswith("arn:aws:kms:eu-west-1:")


def test_refresh_re_encrypts_under_the_current_key(tmp_path: Path, unique: str, psyml_key: str) -> None:
    secret = new_value()
    f = _manifest(
        tmp_path, unique, [{"name": "a", "description": "", "type": "SecureString", "value": secret}]
    )
    assert _cli("manifest", "encrypt", "-i", str(f)).exit_code == 0
    r = _cli("manifest", "refresh", "-i", str(f))
    assert r.exit_code == 0 and "nothing to do" in r.stderr
    # Point the alias at a new key: refresh moves the file over.
    kms = PsymlCipher(region=KEY_REGION)._kms()
    new_key = kms.create_key()["KeyMetadata"]
    kms.update_alias(AliasName=os.environ["PSYML_KEY_ALIAS"], TargetKeyId=new_key["KeyId"])
    r = _cli("manifest", "refresh", "--dry-run", str(f))
    assert "would re-encrypt" in r.stderr and yaml.safe_load(f.read_text())["encrypted_with"] == psyml_key
    assert _cli("manifest", "refresh", "-i", str(f)).exit_code == 0
    assert yaml.safe_load(f.read_text())["encrypted_with"] == new_key["Arn"]
    r = _cli("manifest", "decrypt", str(f))
    assert yaml.safe_load(r.stdout)["parameters"][0]["value"] == secret


# -- psyml 0.2.2 itself, both directions ---------------------------------------------------------------------


def test_psyml_encrypts_we_decrypt(tmp_path: Path, unique: str, psyml_key: str) -> None:
    secret = new_value()
    f = _manifest(
        tmp_path,
        unique,
        [
            {"name": "api_token", "description": "secret", "type": "SecureString", "value": secret},
            {"name": "api_version", "description": "plain", "type": "String", "value": "2"},
        ],
    )
    p = _psyml("encrypt", str(f))
    assert p.returncode == 0, p.stderr[-2000:]
    enc = tmp_path / "by-psyml.yml"
    enc.write_text(p.stdout)
    assert secret not in p.stdout
    r = _cli("manifest", "decrypt", str(enc))
    assert r.exit_code == 0, r.stderr
    dec = yaml.safe_load(r.stdout)
    assert [x["value"] for x in dec["parameters"]] == [secret, "2"]


def test_we_encrypt_psyml_decrypts(tmp_path: Path, unique: str, psyml_key: str) -> None:
    secret = new_value()
    f = _manifest(
        tmp_path,
        unique,
        [
            {"name": "api_token", "description": "secret", "type": "SecureString", "value": secret},
            {"name": "api_version", "description": "plain", "type": "String", "value": "0123"},
        ],
    )
    assert _cli("manifest", "encrypt", "-i", str(f)).exit_code == 0
    p = _psyml("decrypt", str(f))
    assert p.returncode == 0, p.stderr[-2000:]
    dec = yaml.safe_load(p.stdout)
    assert [x["value"] for x in dec["parameters"]] == [secret, "0123"]
    # And psyml's refresh/encrypt accept our file as their input.
    assert _psyml("encrypt", str(f)).returncode == 0


def test_psyml_save_and_ours_agree_on_what_is_stored(
    tmp_path: Path, unique: str, psyml_key: str, secrets_factory: Any
) -> None:
    """psyml's save of an encrypted file sends the lowercase type (real SSM rejects it; moto stores it as is);
    ours sends SecureString, with the file's kmskey."""
    secret = new_value()
    f = _manifest(
        tmp_path, unique, [{"name": "tok", "description": "d", "type": "SecureString", "value": secret}]
    )
    assert _cli("manifest", "encrypt", "-i", str(f)).exit_code == 0
    ssm = secrets_factory.client("ssm")
    p = _psyml("save", str(f))
    assert p.returncode == 0, p.stderr[-2000:]
    assert (
        ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [f"/t{unique}/tok"]}])[
            "Parameters"
        ][0]["Type"]
        == "securestring"
    )  # psyml's defect, documented in docs/migrate-psyml.md
    r = _cli("manifest", "save", str(f))
    assert r.exit_code == 0, r.stderr
    got = ssm.get_parameter(Name=f"/t{unique}/tok", WithDecryption=True)["Parameter"]
    assert got["Type"] == "SecureString" and got["Value"] == secret


def test_secrets_and_stringlists_through_encrypt_save_and_decrypt(
    tmp_path: Path, unique: str, psyml_key: str, secrets_factory: Any
) -> None:
    password = new_value()
    f = tmp_path / "ext.yml"
    f.write_text(
        yaml.safe_dump(
            {
                "path": f"/x{unique}",
                "region": "us-east-1",
                "parameters": [
                    {"name": "hosts", "description": "", "type": "StringList", "value": ["a", "b"]}
                ],
                "secrets": [{"name": "db", "value": {"user": "app", "password": password}}],
            },
            sort_keys=False,
        )
    )
    r = _cli("manifest", "encrypt", "--dry-run", str(f))
    assert r.exit_code == 0 and "would encrypt secret db" in r.stderr and r.stdout == ""
    assert _cli("manifest", "encrypt", "-i", str(f)).exit_code == 0
    enc = yaml.safe_load(f.read_text())
    assert password not in f.read_text()
    assert enc["secrets"][0]["encrypted"] is True and enc["secrets"][0]["json"] is True
    assert enc["parameters"][0] == {
        "name": "hosts",
        "description": "",
        "type": "StringList",  # not encrypted: left as written
        "value": ["a", "b"],
    }
    r = _cli("manifest", "save", "--progress", str(f))
    assert r.exit_code == 0, r.stderr
    stored = secrets_factory.client("secretsmanager").get_secret_value(SecretId=f"x{unique}/db")[
        "SecretString"
    ]
    assert yaml.safe_load(stored) == {"user": "app", "password": password}
    out = tmp_path / "plain.yml"
    assert _cli("manifest", "decrypt", "-o", str(out), str(f)).exit_code == 0
    assert out.stat().st_mode & 0o777 == 0o600  # plain text: private to the user
    dec = yaml.safe_load(out.read_text())
    assert dec["secrets"][0] == {"name": "db", "value": {"user": "app", "password": password}}
    assert _cli("manifest", "diff", str(f)).exit_code == 0
