"""Every code block in the docs and the README is valid in its language: Python compiles, YAML and JSON
parse, shell passes ``bash -n``. A reader copies these; a broken one is a bug."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def _blocks() -> list[tuple[str, str, str]]:
    out = []
    for f in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, m in enumerate(_BLOCK.finditer(f.read_text(encoding="utf-8"))):
            out.append((f"{f.name}#{i}", m.group(1), m.group(2)))
    return out


@pytest.mark.parametrize(("where", "lang", "code"), _blocks(), ids=[b[0] for b in _blocks()])
def test_code_block_is_valid(where: str, lang: str, code: str) -> None:
    if lang == "python":
        compile(code, where, "exec")
    elif lang == "yaml":
        list(yaml.safe_load_all(code))
    elif lang == "json":
        json.loads(code)
    elif lang in ("bash", "sh"):
        p = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
