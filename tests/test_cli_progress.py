"""Long steps say what they are doing, and machine-readable output where the docs promise it.

* ``manifest nuke`` counts entries, not API calls: 500 deletions read ``500/500``, not ``50/50`` (SSM
  deletes 10 names per call);
* ``manifest diff`` (and ``sync``, which diffs first) shows a spinner on a terminal while it reads AWS and
  one summary line in any case;
* ``aptible list --format json`` prints the waiting requests as JSON.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from flytekitplugins_awssecrets.cli import main
from flytekitplugins_awssecrets.manifest import store

BIN = Path(sys.executable).parent


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _manifest(path: Path, prefix: str, n: int) -> Path:
    params = [{"name": f"p{i:03d}", "type": "String", "value": "v"} for i in range(n)]
    path.write_text(yaml.safe_dump({"path": prefix, "region": "us-east-1", "parameters": params}))
    return path


def test_nuke_progress_counts_every_deletion(
    tmp_path: Path, unique: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 500
    f = _manifest(tmp_path / "m.yml", f"/nuke{unique}/", n)
    r = _cli("manifest", "save", "--no-progress", str(f))
    assert r.exit_code == 0, [ln for ln in r.stderr.splitlines() if "FAILED" in ln][:3]
    monkeypatch.setattr(store, "PROGRESS_INTERVAL", 0.0)  # a line at every completion
    r = _cli("manifest", "nuke", "--yes", "--force-delete-without-recovery", str(f))
    assert r.exit_code == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("progress: ")]
    assert lines[-1].startswith(f"progress: {n}/{n} done, 0 failed"), lines[-3:]
    # Counted in entries all along (the calls were 50: the old count read "50/50"), never past the total.
    counts = [int(ln.split()[1].split("/")[0]) for ln in lines]
    assert (
        counts == sorted(counts) and counts[-1] == n and all(ln.split()[1].endswith(f"/{n}") for ln in lines)
    )
    assert f"nuke: {n} deleted, 0 already absent, 0 failed" in r.stderr


def test_diff_says_what_it_read_without_a_terminal(
    tmp_path: Path, unique: str, aws_env: dict[str, str]
) -> None:
    f = _manifest(tmp_path / "m.yml", f"/diff{unique}/", 3)
    assert _cli("manifest", "save", str(f)).exit_code == 0
    r = _cli("manifest", "diff", str(f))
    assert r.exit_code == 0 and r.stdout == ""  # stdout stays data only
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("read "))
    assert line.startswith(f"read 3 parameters, 0 secrets (everything under /diff{unique}/) from AWS in ")
    r = _cli("manifest", "diff", "--listed-only", str(f))
    assert "read 3 parameters, 0 secrets (the 3 listed entries) from AWS in " in r.stderr
    r = _cli("manifest", "nuke", "--dry-run", str(f))  # reads which entries exist, names only
    assert "read the names of the 3 listed entries (3 exist) from AWS in " in r.stderr


def test_diff_shows_a_spinner_on_a_terminal(tmp_path: Path, unique: str, aws_env: dict[str, str]) -> None:
    """stderr on a pseudo-terminal: rich draws the status line while AWS is read, then the summary."""
    f = _manifest(tmp_path / "m.yml", f"/tty{unique}/", 25)
    assert _cli("manifest", "save", "--no-progress", str(f)).exit_code == 0
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws_env
    env.update(TERM="xterm", COLUMNS="120")
    env.pop("NO_COLOR", None)
    p = subprocess.Popen(
        [str(BIN / "pyflyte-awssecrets"), "manifest", "diff", str(f)],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = p.communicate(timeout=120)
    os.close(leader)
    text = seen.decode(errors="replace")
    assert p.returncode == 0 and out == b""
    assert f"reading everything under /tty{unique}/ from AWS" in text
    assert "read 25 parameters, 0 secrets" in text


def test_aptible_list_json(aws_env: dict[str, str], unique: str, secrets_factory: Any) -> None:
    prefix = f"/aptible{unique}/requests"
    ssm = secrets_factory.client("ssm")
    record = {
        "request_id": "r-1",
        "execution_id": "ex-1",
        "strategy": "main-aptible-strategy",
        "target": "admin",
        "email": "ada@example.com",
        "duration_seconds": 900,
        "reason": "deploy",
        "requested_at": "2026-12-03T10:00:00+00:00",
        "kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "signing_algorithm": "RSASSA_PSS_SHA_256",
        "max_validity_seconds": 900,
    }
    ssm.put_parameter(Name=f"{prefix}/r-1/request", Value=json.dumps(record), Type="String")
    ssm.put_parameter(
        Name=f"{prefix}/r-2/request", Value=json.dumps(record | {"request_id": "r-2"}), Type="String"
    )
    ssm.put_parameter(Name=f"{prefix}/r-2/grant", Value="{}", Type="String")  # granted: not waiting
    r = _cli("aptible", "list", "--prefix", prefix, "--region", "us-east-1", "--format", "json")
    assert r.exit_code == 0, r.stderr
    listed = json.loads(r.stdout)
    assert [x["request_id"] for x in listed] == ["r-1"]
    assert listed[0]["email"] == "ada@example.com" and listed[0]["duration_seconds"] == 900
    r = _cli("aptible", "list", "--prefix", f"/none{unique}", "--region", "us-east-1", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []
    r = _cli("aptible", "list", "--prefix", prefix, "--region", "us-east-1")
    assert "r-1  ada@example.com -> admin" in r.stdout
