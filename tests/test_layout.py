"""Item 5 of issue 23: one core that knows neither SDK, and one adapter per SDK.

The core is the package's top-level modules (references, settings, resolver, cache, strategies, mounts,
sensitive values, errors, ...). The adapters are ``flytekitplugins_awssecrets.flytekit`` and
``flytekitplugins_awssecrets.flyte2``. A request's walk reads adapter -> core -> adapter: the core never
calls back into an adapter by import (adapters hand it callables: names, "already present"), so a third
SDK is a new adapter only.
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PKG = Path(__file__).resolve().parent.parent / "flytekitplugins_awssecrets"
ADAPTERS = ("flytekitplugins_awssecrets.flytekit", "flytekitplugins_awssecrets.flyte2")
#: Command-line tools and products built on the plugin, not part of the resolution core.
TOOLS = {"cli", "cli_refs", "cli_output", "policy"}
#: What the core may never import: either SDK, an adapter, or a product built on top.
FORBIDDEN = (
    "flytekit",
    "flyte",
    *ADAPTERS,
    *(f"flytekitplugins_awssecrets.{p}" for p in ("aptible", "manifest", "serve", "cli")),
)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (lazy imports count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _hits(imported: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(i for i in imported if any(i == f or i.startswith(f + ".") for f in forbidden))


def core_modules() -> list[Path]:
    return [p for p in sorted(PKG.glob("*.py")) if p.stem not in TOOLS | {"__init__"}]


def test_the_core_imports_neither_sdk_nor_an_adapter() -> None:
    modules = core_modules()
    assert {"refs", "settings", "resolver", "cache", "strategies", "mount", "sensitive", "errors"} <= {
        p.stem for p in modules
    }
    bad = {p.stem: _hits(_imports(p), FORBIDDEN) for p in modules}
    assert not {k: v for k, v in bad.items() if v}, bad


def test_adapters_do_not_import_each_other() -> None:
    for own, other in (ADAPTERS, ADAPTERS[::-1]):
        folder = PKG / own.rsplit(".", 1)[1]
        bad = {p.name: _hits(_imports(p), (other,)) for p in folder.glob("*.py")}
        assert not {k: v for k, v in bad.items() if v}, (own, bad)


def test_only_the_flytekit_adapter_imports_flytekit() -> None:
    """flytekit is imported in its adapter (and by the tools and the Aptible task type built on it)."""
    flyte2 = {p.name: _hits(_imports(p), ("flytekit",)) for p in (PKG / "flyte2").glob("*.py")}
    assert not {k: v for k, v in flyte2.items() if v}, flyte2
    flytekit = {p.name: _hits(_imports(p), ("flyte",)) for p in (PKG / "flytekit").glob("*.py")}
    assert not {k: v for k, v in flytekit.items() if v}, flytekit


def test_the_core_resolves_with_neither_sdk_importable(secrets_factory: Any, unique: str) -> None:
    """The core on its own, in a process where ``import flytekit`` and ``import flyte`` fail: it resolves a
    secret from AWS (moto) and mounts it as a file with SDK-free names, then removes it."""
    arn, value = secrets_factory.secret(f"{unique}/core")
    code = f"""
import hashlib, os, sys
from pathlib import Path
sys.modules["flytekit"] = None   # "import flytekit" raises ImportError
sys.modules["flyte"] = None
from flytekitplugins_awssecrets.resolver import resolve_requests, resolve_values
from flytekitplugins_awssecrets.mount import MountSession
from flytekitplugins_awssecrets.refs import parse_reference

class Request:  # what a third SDK's adapter would hand the core
    def __init__(self, group, key, mount):
        self.group, self.key, self.group_version, self.env_var = group, key, None, None
        self.mount_requirement = type("M", (), {{"name": mount}})()

ref = parse_reference({arn!r})
[v] = resolve_values([{arn!r}])
[r] = resolve_requests([Request(ref.group, ref.key, "FILE")], task="third-sdk")
root = Path(sys.argv[1])
with MountSession(root, allow_disk=True) as session:
    session.mount([r])
    [path] = [p for p in root.rglob("*") if p.is_file()]
    assert oct(path.stat().st_mode & 0o777) == "0o600", oct(path.stat().st_mode)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(v.encode()).hexdigest()
assert not [p for p in root.rglob("*") if p.is_file()], "left behind"
loaded = [m for m in sys.modules if m.startswith(("flytekit.", "flyte.", "flytekitplugins_awssecrets.flytekit", "flytekitplugins_awssecrets.flyte2"))]
assert not loaded, loaded
print("sha256", hashlib.sha256(v.encode()).hexdigest())
"""
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"core-{unique}"
    root.mkdir()
    p = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == ["sha256", hashlib.sha256(value.encode()).hexdigest()]
    assert value not in p.stdout + p.stderr
