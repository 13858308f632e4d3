"""The shell of ``examples/serve_container_task.py`` runs as it would in the container: ``sh -c SCRIPT``,
starting ``pyflyte-awssecrets serve`` and reading a secret with curl and jq, against moto."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SecretFactory, new_value
from tests.support.serve_clients import SERVE_BIN, Hidden, clean_env

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq"),
]


@pytest.fixture
def script() -> str:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from serve_container_task import SCRIPT
    finally:
        sys.path.pop(0)
    return str(SCRIPT)


def _run(script: str, secret_id: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(PATH=f"{Path(SERVE_BIN).parent}:/usr/bin:/bin")
    return subprocess.run(
        ["/bin/sh", "-c", script, "read_with_curl", secret_id, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_container_script_reads_a_key_with_curl(
    script: str, secrets_factory: SecretFactory, unique: str, tmp_path: Path
) -> None:
    value = Hidden(password=new_value(), user="app")
    name = f"serve/example-{unique}"
    secrets_factory.secret(name, dict(value))
    r = _run(script, name, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    expected = hashlib.sha256(value["password"].encode()).hexdigest()[:12]
    assert (tmp_path / "fingerprint").read_text().strip() == expected
    for v in value.values():
        if len(v) > 6:
            assert v not in r.stdout + r.stderr
    assert not any(tmp_path.glob("tmp*")), "the script cleans up"


def test_container_script_fails_clearly_on_a_missing_secret(
    script: str, aws_env: dict[str, str], tmp_path: Path
) -> None:
    r = _run(script, "serve/does-not-exist", tmp_path)
    assert r.returncode != 0
    # curl --fail-with-body shows AWS's error shape, which names the secret.
    err = json.loads(r.stderr[r.stderr.index("{") : r.stderr.rindex("}") + 1])
    assert err["__type"] == "ResourceNotFoundException" and "serve/does-not-exist" in err["message"]
