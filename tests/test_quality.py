"""The project's own checks, run as part of the suite so that CI's one command covers them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint_and_format() -> None:
    p = _run(str(BIN / "ruff"), "check", "flytekitplugins_awssecrets", "tests", "examples", "benchmarks")
    assert p.returncode == 0, p.stdout[-4000:]
    p = _run(
        str(BIN / "ruff"),
        "format",
        "--check",
        "flytekitplugins_awssecrets",
        "tests",
        "examples",
        "benchmarks",
    )
    assert p.returncode == 0, p.stdout[-4000:]


def test_mypy_strict() -> None:
    p = _run(str(BIN / "mypy"))
    assert p.returncode == 0, p.stdout[-4000:]


def test_docs_build_strict(tmp_path: Path) -> None:
    p = _run(str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site"))
    assert p.returncode == 0, p.stderr[-4000:]


def test_import_flytekit_loads_plugin_without_boto3_or_io() -> None:
    code = """
import sys
import flytekit
assert "flytekitplugins_awssecrets.flytekit.hooks" in sys.modules, "plugin not loaded by the entry point"
heavy = [m for m in ("boto3", "botocore", "flytekitplugins_awssecrets.resolver") if m in sys.modules]
# Import the plugin again with an audit hook: it may read its own modules, nothing else.
for name in [m for m in sys.modules if m.startswith("flytekitplugins_awssecrets")]:
    del sys.modules[name]
io = []
def hook(event, args):
    if event == "open" and not str(args[0]).endswith((".py", ".pyc")) and "__pycache__" not in str(args[0]):
        io.append(str(args[0]))
    elif event in ("socket.connect", "subprocess.Popen"):
        io.append(event)
sys.addaudithook(hook)
import flytekitplugins_awssecrets.flytekit.entrypoint  # what the entry points load: installs the hooks again
print(repr((heavy, io)))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    heavy, io = eval(p.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr
    assert heavy == []
    assert [f for f in io if "flytekitplugins_awssecrets" not in f] == []


def test_package_ships_py_typed() -> None:
    assert (ROOT / "flytekitplugins_awssecrets" / "py.typed").exists()


def test_docs_site_is_material_with_grouped_nav_of_every_page() -> None:
    import yaml

    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert cfg["theme"]["name"] == "material" and cfg["site_url"].startswith("https://")
    assert all(isinstance(entry, dict) for entry in cfg["nav"])
    groups = [next(iter(e.values())) for e in cfg["nav"]]
    assert sum(isinstance(g, list) for g in groups) >= 3  # grouped, not one flat row of pages

    def pages(items: list[object]) -> list[str]:
        out: list[str] = []
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out.extend(pages(value) if isinstance(value, list) else [str(value)])
        return out

    listed = pages(cfg["nav"])
    on_disk = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(listed) == on_disk and "troubleshooting.md" in listed
