"""``encrypt -i`` and ``refresh -i`` on a file people review: only the encrypted values' lines change."""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from tests.conftest import new_value
from tests.test_manifest_crypto import _cli, _psyml, psyml_key  # noqa: F401 - the fixture, reused

COMMENTED = """\
# Parameters of the superman app.   (11 comments in this file: every one must survive)
path: /t{unique}/            # every entry lives under this path
region: us-east-1
kmskey: alias/aws/ssm        # SSM's own key

tags:
  cost_center: team17        # billing
  project: superman

parameters:
  # plain values first
  - name: api_version
    description: "The version of the API, not a secret."
    type: String
    value: '0123'            # quoted: a leading zero
  - name: api_token
    description: the token
    type: SecureString       # plain until encrypt
    value: "{token}"
  - name: hosts
    description: targets
    type: StringList
    value:
        - a.example.com
        - b.example.com      # odd indentation, kept

secrets:
  # Secrets Manager entries
  - name: db
    description: database login
    value: {{username: app, password: "{password}"}}   # a mapping
    kmskey: alias/db
  - name: tls_key
    value: |
      {pem}
    tags: {{tier: gold}}
# the end
"""


def _changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0))
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def test_encrypt_in_place_changes_only_the_encrypted_values(
    tmp_path: Path,
    unique: str,
    psyml_key: str,  # noqa: F811
) -> None:
    token, password, pem = new_value(), new_value(), new_value()
    f = tmp_path / "m.yml"
    original = COMMENTED.format(unique=unique, token=token, password=password, pem=pem)
    f.write_text(original)
    assert original.count("#") == 11

    r = _cli("manifest", "encrypt", "-i", str(f))
    assert r.exit_code == 0, r.stderr
    after = f.read_text()
    assert token not in after and password not in after and pem not in after
    assert after.count("#") == 11
    removed, added = _changed_lines(original, after)
    # Exactly the lines that held the three values and the token's type, plus the added key and flags.
    # (Compared as key names only, so that a failure never prints a value.)
    names = sorted(line.split(":")[0].strip() for line in removed if pem not in line)
    assert names == ["type", "value", "value", "value"], names
    assert sum(pem in line for line in removed) == 1  # the block scalar's content line
    assert any(line.startswith("encrypted_with: arn:aws:kms:") for line in added)
    assert "    encrypted: true" in added and "    json: true" in added
    # The token's line keeps its comment and quoting; the type is psyml's ciphertext marker.
    assert any(line.startswith('    value: "') and line.endswith('"') for line in added)
    assert "    type: securestring       # plain until encrypt" in added
    # Every other line is byte for byte what it was.
    untouched = [line for line in original.splitlines() if line not in removed]
    assert all(line in after.splitlines() for line in untouched)

    # Our own reader and psyml read the result; decrypting gives the values back.
    r = _cli("manifest", "decrypt", str(f))
    assert r.exit_code == 0, r.stderr
    dec = yaml.safe_load(r.stdout)
    assert [p["value"] for p in dec["parameters"][:2]] == ["0123", token]

    # refresh -i --force re-encrypts: again only value lines change, comments stay.
    r = _cli("manifest", "refresh", "-i", "--force", str(f))
    assert r.exit_code == 0, r.stderr
    again = f.read_text()
    removed, added = _changed_lines(after, again)
    assert removed and all(line.strip().startswith("value:") for line in removed), len(removed)
    assert again.count("#") == 11


def test_psyml_reads_an_in_place_encrypted_commented_file(
    tmp_path: Path,
    unique: str,
    psyml_key: str,  # noqa: F811
) -> None:
    token = new_value()
    # psyml knows String and SecureString parameters only: the same commented file without StringList and
    # secrets.
    text = COMMENTED.format(unique=unique, token=token, password="", pem="").split("  - name: hosts")[0]
    f = tmp_path / "p.yml"
    f.write_text(text)
    assert _cli("manifest", "encrypt", "-i", str(f)).exit_code == 0
    assert f.read_text().count("#") == text.count("#")
    p = _psyml("decrypt", str(f))
    assert p.returncode == 0, p.stderr[-2000:]
    assert [x["value"] for x in yaml.safe_load(p.stdout)["parameters"]][:2] == ["0123", token]
