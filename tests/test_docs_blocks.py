"""Every code block in docs/ and the README is valid as written: a newcomer copies them.

Each fenced block must name its language. Python must compile, YAML and JSON must parse, shell must pass
``bash -n``, HCL must have balanced braces; ``text`` and ``console`` blocks (program output) are free text.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```\s*$", re.M | re.S
)
CHECKED = {"python", "yaml", "json", "bash", "sh", "hcl", "dockerfile"}
FREE = {"text", "console", "ini"}


def _blocks() -> list[tuple[str, int, str, str]]:
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            body = "\n".join(ln[len(m.group("indent")) :] for ln in m.group("body").splitlines())
            out.append((f"{page.relative_to(ROOT)}:{line}", line, m.group("lang"), body))
    return out


BLOCKS = _blocks()


def test_blocks_were_found() -> None:
    assert len(BLOCKS) > 40  # the extraction works (the docs hold dozens of blocks)


@pytest.mark.parametrize(("where", "line", "lang", "body"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_code_block_is_valid(where: str, line: int, lang: str, body: str, tmp_path: Path) -> None:
    assert lang in CHECKED | FREE, f"{where}: a code block must name its language ({sorted(CHECKED | FREE)})"
    if lang == "python":
        compile(body, where, "exec")
    elif lang == "yaml":
        list(yaml.safe_load_all(body))
    elif lang == "json":
        json.loads(body)
    elif lang in ("bash", "sh"):
        script = tmp_path / "block.sh"
        script.write_text(body + "\n")
        p = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"{where}: {p.stderr}"
    elif lang == "hcl":
        assert body.count("{") == body.count("}") and body.count("[") == body.count("]"), where
    elif lang == "dockerfile":
        assert all(
            ln.split()[0].isupper()
            for ln in body.splitlines()
            if ln.strip() and not ln.startswith((" ", "#"))
        ), where


def test_manifest_samples_load_as_manifests() -> None:
    """The sample manifest in the docs is a valid manifest (no placeholder that fails to load)."""
    from flytekitplugins_awssecrets.manifest import yamlio
    from flytekitplugins_awssecrets.manifest.model import parse_manifest

    samples = [
        b for b in BLOCKS if b[0].startswith("docs/manifest.md") and b[2] == "yaml" and "path:" in b[3]
    ]
    assert samples
    for where, _, _, body in samples:
        m = parse_manifest(yamlio.load(body, where), where)
        assert m.encrypted_with is None and m.parameters, where
