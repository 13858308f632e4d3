"""Installable today, releasable tomorrow: the documented wheel command, a clean venv, a task image, a release.

* the one wheel command the docs show builds a wheel that, installed into a venv of its own (no checkout on
  the path), runs ``pyflyte run`` of the example workflow against moto;
* ``ImageSpec`` as the docs write it really puts that wheel into the image: flytekit's own builder writes the
  build context (the Dockerfile and the files it copies), which is all that can be checked without docker;
* the version is written once; ``python -m build`` makes an sdist and a wheel that ``twine check --strict``
  accepts; the release workflow is valid YAML with the jobs and permissions trusted publishing needs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, remember

BIN = Path(sys.executable).parent
VERSION_FILE = ROOT / "flytekitplugins_awssecrets" / "__init__.py"


def _version() -> str:
    m = re.search(r'^__version__ = "([^"]+)"$', VERSION_FILE.read_text(), re.M)
    assert m, "__version__ is not written as a plain string literal (the release workflow reads it so)"
    return m.group(1)


def _doc_block(page: str, lang: str, contains: str) -> str:
    text = (ROOT / page).read_text()
    blocks = [b for b in re.findall(rf"```{lang}\n(.*?)```", text, re.S) if contains in b]
    assert blocks, f"{page}: no {lang} block containing {contains!r}"
    return blocks[0]


def _documented_wheel_command() -> list[str]:
    """The wheel command of docs/index.md's install section, as a user types it after `cd` to the checkout."""
    block = _doc_block("docs/index.md", "bash", "pip wheel")
    line = next(ln for ln in block.splitlines() if "pip wheel" in ln)
    cmd = shlex.split(line.split("&&")[-1])
    assert cmd[:4] == ["python", "-m", "pip", "wheel"], cmd
    return [sys.executable, *cmd[1:]]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built exactly as docs/index.md says, into a copy of dist/ of our own."""
    out = tmp_path_factory.mktemp("wheel")
    cmd = _documented_wheel_command()
    cmd[cmd.index("-w") + 1] = str(out / "dist")
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    wheels = list((out / "dist").glob("*.whl"))
    assert [w.name for w in wheels] == [f"flytekitplugins_awssecrets-{_version()}-py3-none-any.whl"]
    return wheels[0]


def test_version_is_written_once_and_has_a_changelog_entry() -> None:
    cfg = (ROOT / "setup.cfg").read_text()
    assert re.search(r"^version = attr: flytekitplugins_awssecrets.__version__$", cfg, re.M)
    assert "version" not in (ROOT / "pyproject.toml").read_text().split("[tool")[0]
    assert re.search(rf"^## {re.escape(_version())}\b", (ROOT / "CHANGELOG.md").read_text(), re.M)


def test_wheel_holds_the_package_typing_and_entry_points(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = z.read(info).decode()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "flytekitplugins_awssecrets/py.typed" in names
    assert "flytekitplugins_awssecrets/aptible/connector.py" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))]
    assert "[flytekit.plugins]" in entry_points and "pyflyte-awssecrets =" in entry_points
    assert f"\nVersion: {_version()}\n" in meta


def test_sdist_and_wheel_build_and_pass_twine_check(tmp_path: Path) -> None:
    """What the release workflow does before publishing, here so that CI catches a broken package first."""
    p = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    v = _version()
    built = sorted(f.name for f in tmp_path.iterdir())
    assert built == [
        f"flytekitplugins_awssecrets-{v}-py3-none-any.whl",
        f"flytekitplugins_awssecrets-{v}.tar.gz",
    ]
    p = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert p.stdout.count("PASSED") == 2


def test_release_workflow_publishes_with_trusted_publishing_on_a_tag() -> None:
    wf: dict[Any, Any] = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
    trigger = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert trigger == {"push": {"tags": ["v*"]}}
    assert wf["permissions"] == {"contents": "read"}  # nothing more than reading, except where needed
    build, publish = wf["jobs"]["build"], wf["jobs"]["publish"]
    runs = "\n".join(s.get("run", "") for s in build["steps"])
    assert "python -m build" in runs and "twine check --strict dist/*" in runs
    assert "GITHUB_REF_NAME" in runs and "CHANGELOG.md" in runs
    assert publish["needs"] == "build" and publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    uses = [s["uses"] for s in publish["steps"]]
    assert uses[-1] == "pypa/gh-action-pypi-publish@release/v1"
    assert not any("password" in str(s.get("with", {})) for s in publish["steps"])  # no stored token
    for step in build["steps"]:
        if "run" in step:
            p = subprocess.run(["bash", "-n"], input=step["run"], capture_output=True, text=True, timeout=30)
            assert p.returncode == 0, (step["run"], p.stderr)


def test_the_workflows_tag_check_reads_the_version(tmp_path: Path) -> None:
    """The workflow's version check, run here: the right tag passes, another tag fails."""
    wf = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
    script = next(s["run"] for s in wf["jobs"]["build"]["steps"] if "GITHUB_REF_NAME" in s.get("run", ""))
    for tag, ok in ((f"v{_version()}", True), ("v99.0.0", False)):
        env = {**os.environ, "GITHUB_REF_NAME": tag}
        p = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
        assert (p.returncode == 0) is ok, (tag, p.stdout, p.stderr)


def test_imagespec_from_the_docs_copies_and_installs_the_wheel(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/index.md's ``from_wheel`` ImageSpec, through flytekit's own default builder up to `docker build`.

    ``packages=`` cannot name a local wheel with this builder: it installs from a requirements file that is
    the only file bound into that step. ``copy=`` adds the file after that step, and ``commands=`` run after
    the copy with uv on the path, so the documented pair installs the wheel.
    """
    from flytekit.image_spec.default_builder import create_docker_context

    block = _doc_block("docs/index.md", "python", "from_wheel")
    project = tmp_path / "project"
    (project / "dist").mkdir(parents=True)
    (project / "dist" / wheel.name).write_bytes(wheel.read_bytes())
    monkeypatch.chdir(project)  # ImageSpec's copy paths are relative to where pyflyte runs
    scope: dict[str, Any] = {}
    exec(compile(block, "docs/index.md", "exec"), scope)  # noqa: S102 - our own documentation
    context = tmp_path / "context"
    context.mkdir()
    create_docker_context(scope["from_wheel"], context)
    dockerfile = (context / "Dockerfile").read_text()
    copied = context / "dist" / wheel.name
    assert copied.read_bytes() == wheel.read_bytes()
    copy_at = dockerfile.index(f"COPY --chown=flytekit dist/{wheel.name} /root/dist/")
    install_at = dockerfile.index(f"uv pip install /root/dist/{wheel.name}")
    assert copy_at < install_at
    # The install runs as root with uv mounted, before the image switches to the flytekit user.
    assert install_at < dockerfile.index("USER flytekit")
    run_line = dockerfile[dockerfile.rindex("RUN", 0, install_at) : install_at]
    assert "--mount=from=uv" in run_line


def test_plain_dockerfile_from_the_docs_copies_the_built_wheel(wheel: Path) -> None:
    block = _doc_block("docs/index.md", "dockerfile", "COPY")
    copies = [ln.split()[1] for ln in block.splitlines() if ln.startswith("COPY")]
    assert copies == [f"dist/{wheel.name}"], copies
    assert f"pip install --no-cache-dir /tmp/{wheel.name}" in block


def _clean_venv(wheel: Path) -> Path:
    """A venv with the wheel's dependencies from the index (built once per setup.cfg) and, each run, this
    wheel itself; no checkout on its path."""
    key = hashlib.sha256((ROOT / "setup.cfg").read_bytes()).hexdigest()[:10]
    venv = ROOT / ".venv-compat" / f"wheel-{key}"
    py = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        # As the README's commands do: the pip a venv starts with can backtrack for a long time.
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True, timeout=600)
        p = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert p.returncode == 0, p.stderr[-3000:]
        (venv / ".complete").touch()
    p = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return venv


def test_wheel_in_a_clean_venv_runs_the_example_with_pyflyte_run(
    wheel: Path, aws_env: dict[str, str], unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = _clean_venv(wheel)
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from demo import create_demo_secrets, fingerprint
    finally:
        sys.path.pop(0)
    prefix = f"w{unique}"
    values = create_demo_secrets(prefix)
    for v in values.values():
        remember(v)
    workdir = tmp_path / "user"
    workdir.mkdir()
    (workdir / "secrets_demo.py").write_text((ROOT / "examples" / "secrets_demo.py").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_", "PYTHON"))}
    env.update(aws_env, DEMO_SECRET_PREFIX=prefix, COLUMNS="400")
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import flytekitplugins_awssecrets as m; print(m.__file__)"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr  # the wheel, not the checkout
    p = subprocess.run(
        [str(venv / "bin" / "pyflyte"), "run", "secrets_demo.py", "demo_wf"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    for v in values.values():
        assert fingerprint(v) in p.stdout
        leaked = v in p.stdout + p.stderr
        assert not leaked


def test_docs_workflow_publishes_the_site_url() -> None:
    """The docs are deployed where mkdocs.yml's site_url (and the messages' links) say they are."""
    from flytekitplugins_awssecrets.links import DOCS_URL

    wf: dict[Any, Any] = yaml.safe_load((ROOT / ".github/workflows/docs.yml").read_text())
    assert wf.get("on", wf.get(True)) == {"push": {"branches": ["main"]}}
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert any("mkdocs build --strict" in s.get("run", "") for s in build["steps"])
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["steps"][-1]["uses"].startswith("actions/deploy-pages@")
    assert re.fullmatch(r"https://[\w-]+\.github\.io/[\w-]+/", DOCS_URL)  # a GitHub Pages address
