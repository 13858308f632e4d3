"""The docs as a reader meets them: the built site, the links messages print, the commands pages show.

* every link a message of the package prints names a page (and heading) that ``mkdocs build`` makes, at the
  address mkdocs.yml publishes; no message sends pip users to a ``docs/*.md`` path they do not have;
* the navigation is grouped by job, Aptible in its own section, every page in it;
* every ``pyflyte-awssecrets`` command in a code block names a real command with options it has;
* every error class is in an errors table; troubleshooting's headings are messages the code really prints;
* every ``pip install flytekitplugins-awssecrets`` from the index says that it needs the release.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from flytekitplugins_awssecrets.links import DOCS_URL
from tests.conftest import ROOT

BIN = Path(sys.executable).parent
PACKAGE = ROOT / "flytekitplugins_awssecrets"
PAGES = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^ *```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^ *```\s*$", re.M | re.S)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    p = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def _message_links() -> list[tuple[str, str, str]]:
    """``(where, page, anchor)`` of every docs link the package's code builds or writes out."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = str(path.relative_to(ROOT))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "doc_link":
                args = [a.value for a in node.args if isinstance(a, ast.Constant)]
                assert len(args) == len(node.args), f"{where}:{node.lineno}: doc_link takes literals"
                found.append((f"{where}:{node.lineno}", args[0], args[1] if len(args) > 1 else ""))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOCS_URL in node.value:
                for m in re.finditer(re.escape(DOCS_URL) + r"([\w-]+)/(?:#([\w-]+))?", node.value):
                    found.append((f"{where}:{node.lineno}", m.group(1), m.group(2) or ""))
    return found


def test_site_url_is_where_messages_point() -> None:
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert cfg["site_url"] == DOCS_URL


def test_every_docs_link_in_a_message_resolves_on_the_built_site(site: Path) -> None:
    links = _message_links()
    assert len(links) >= 8  # credentials, security, aptible (4), settings, serve
    for where, page, anchor in links:
        html = site / page / "index.html"
        assert html.exists(), f"{where}: {DOCS_URL}{page}/ is not a page of the site"
        if anchor:
            assert f'id="{anchor}"' in html.read_text(), f"{where}: {page}/ has no heading #{anchor}"


def test_no_message_points_to_a_checkout_path() -> None:
    """Strings a user can see (messages, command help) link the published site, not docs/*.md."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        skip = {id(tree.body[0].value)} if tree.body and isinstance(tree.body[0], ast.Expr) else set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.body and isinstance(node.body[0], ast.Expr):
                skip.add(id(node.body[0].value))  # a class's docstring is for developers
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
                and re.search(r"docs/\w+\.md", node.value)
            ):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bad == []


def test_nav_is_grouped_by_job_with_aptible_on_its_own() -> None:
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    groups = {next(iter(e)): next(iter(e.values())) for e in cfg["nav"]}
    assert list(groups)[:6] == [
        "Home",
        "Use secrets in tasks",
        "Run on a cluster",
        "Manifests",
        "Local endpoint",
        "Aptible access",
    ]
    assert (
        groups["Aptible access"] == "aptible.md" and groups["Local endpoint"] == "serve.md"
    )  # tabs of their own
    cluster = [next(iter(p.values())) for p in groups["Run on a cluster"]]
    assert cluster[0] == "quickstart-eks.md" and "migrate-webhook.md" in cluster

    def pages(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [p for n in node for p in pages(n)]
        return [p for v in node.values() for p in pages(v)]

    assert sorted(pages(cfg["nav"])) == sorted(p.name for p in PAGES)
    assert "stylesheets/extra.css" in cfg["extra_css"]
    css = (ROOT / "docs" / "stylesheets" / "extra.css").read_text()
    assert "pre-wrap" in css  # code blocks wrap instead of hiding behind a scrollbar


# -- commands shown in the docs ------------------------------------------------------------------------------


def _doc_commands() -> list[tuple[str, list[str]]]:
    """Every ``pyflyte-awssecrets ...`` invocation of the docs and the README: in bash and YAML blocks, after
    a ``$`` prompt in console/text blocks, and in inline code that is a whole command."""
    out = []
    for page in [*PAGES, ROOT / "README.md"]:
        text = page.read_text()
        lines_of: list[str] = []
        for m in FENCE.finditer(text):
            body = m.group("body").replace("\\\n", " ")
            if m.group("lang") in ("bash", "sh", "yaml"):
                lines_of += body.splitlines()
            else:
                lines_of += [ln[2:] for ln in body.splitlines() if ln.startswith("$ ")]
        prose = FENCE.sub("", text).replace("\n", " ")
        lines_of += [
            c
            for c in re.findall(r"`(pyflyte-awssecrets [^`]+)`", prose)
            if not re.search(r"[|\[<]|\.\.\.", c)
        ]
        for line in lines_of:
            for part in re.split(r"&&|\|\||\||;|\$\(|`", line):
                part = part.split(" #")[0].strip().removeprefix("- run:").strip()
                if part.startswith("pyflyte-awssecrets "):
                    try:
                        words = shlex.split(part.split(">")[0])
                    except ValueError:
                        continue
                    out.append((f"{page.name}: {part}", words[1:]))
    return out


DOC_COMMANDS = _doc_commands()


def test_doc_commands_were_found() -> None:
    assert len(DOC_COMMANDS) > 20
    assert any("--yes" in words and "sync" in words for _, words in DOC_COMMANDS)  # migrate-psyml's CI


@pytest.mark.parametrize(("where", "words"), DOC_COMMANDS, ids=[w for w, _ in DOC_COMMANDS])
def test_every_command_in_the_docs_exists_with_the_flags_shown(where: str, words: list[str]) -> None:
    from flytekitplugins_awssecrets.cli import main

    cmd: click.Command = main
    rest = list(words)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(click.Context(cmd), rest[0])
        assert sub is not None, f"{where}: no command {rest[0]!r}"
        cmd, rest = sub, rest[1:]
    options = {o: p for p in cmd.params if isinstance(p, click.Option) for o in [*p.opts, *p.secondary_opts]}
    i = 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("-") and word not in ("-", "--"):
            name, _, value = word.partition("=")
            assert name in options, f"{where}: {cmd.name} has no option {name}"
            opt = options[name]
            if not opt.is_flag and not value and i + 1 < len(rest):
                value = rest[i + 1]
                i += 1
            if isinstance(opt.type, click.Choice) and value and "|" not in value and "$" not in value:
                opt.type.convert(value, opt, None)  # raises on a value the option refuses
        i += 1


def test_format_is_text_or_json_on_every_command_that_prints_for_people() -> None:
    """``--format`` means the same on every command: ``text`` for people, ``json`` for scripts; other
    choices are output languages (``policy``'s terraform, ``export``'s shell/dotenv)."""
    from flytekitplugins_awssecrets.cli import main
    from flytekitplugins_awssecrets.cli_output import FormatChoice

    def walk(cmd: click.Command, path: str) -> list[tuple[str, click.Command]]:
        if isinstance(cmd, click.Group):
            return [
                x
                for name in cmd.list_commands(click.Context(cmd))
                for x in walk(cmd.get_command(click.Context(cmd), name), f"{path} {name}")  # type: ignore[arg-type]
            ]
        return [(path, cmd)]

    seen = {}
    for path, cmd in walk(main, "pyflyte-awssecrets"):
        for p in cmd.params:
            if isinstance(p, click.Option) and "--format" in p.opts:
                seen[path] = list(p.type.choices)  # type: ignore[attr-defined]
                languages = {"terraform", "shell", "dotenv"}
                if not languages & set(p.type.choices):  # type: ignore[attr-defined]
                    assert isinstance(p.type, FormatChoice) and p.default == "text", path
    assert seen["pyflyte-awssecrets check"] == ["text", "json"]
    assert seen["pyflyte-awssecrets aptible list"] == ["text", "json"]
    assert {seen[f"pyflyte-awssecrets manifest {c}"][0] for c in ("diff", "save", "sync", "nuke")} == {"text"}


def test_old_format_name_still_works_and_is_hidden(tmp_path: Path) -> None:
    wf = tmp_path / "empty_wf.py"
    wf.write_text("x = 1\n")
    for fmt in ("table", "text"):
        p = subprocess.run(
            [str(BIN / "pyflyte-awssecrets"), "check", "--format", fmt, str(wf)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0 and "no secret requests found" in p.stdout, p.stderr
    help_ = subprocess.run(
        [str(BIN / "pyflyte-awssecrets"), "check", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    assert "[text|json]" in help_ and "table" not in help_


# -- what pages say ---------------------------------------------------------------------------------------------


def _classes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [n.name for n in tree.body if isinstance(n, ast.ClassDef)]


def _section(page: str, heading: str) -> str:
    text = (ROOT / "docs" / page).read_text()
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_every_error_class_is_in_an_errors_table() -> None:
    core = _section("index.md", "Errors")
    missing = [c for c in _classes(PACKAGE / "errors.py") if c != "AwsSecretsError" and f"`{c}`" not in core]
    assert missing == [], f"docs/index.md's errors table lacks {missing}"
    aptible = _section("aptible.md", "Errors")
    names = _classes(PACKAGE / "aptible" / "errors.py") + ["StateStoreError"]
    missing = [c for c in names if f"| `{c}` |" not in aptible]
    assert missing == [], f"docs/aptible.md's errors table lacks {missing}"


def _real_messages() -> list[str]:
    """Messages as the code builds them, for the failures troubleshooting.md names."""
    from botocore.exceptions import ClientError, NoCredentialsError

    from flytekitplugins_awssecrets.errors import AwsSecretsError, EndpointUnreachableError
    from flytekitplugins_awssecrets.extract import extract_json_key
    from flytekitplugins_awssecrets.fetch import translate_error
    from flytekitplugins_awssecrets.refs import parse_reference
    from flytekitplugins_awssecrets.settings import load_settings

    ref = parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db")
    out = []
    for code in (
        "AccessDeniedException",
        "ResourceNotFoundException",
        "DecryptionFailure",
        "ThrottlingException",
    ):
        err = ClientError({"Error": {"Code": code, "Message": "m"}}, "GetSecretValue")
        out.append(str(translate_error(ref, err)))
    out.append(str(translate_error(ref, NoCredentialsError())))
    out.append(
        str(
            EndpointUnreachableError(
                "arn:...", "http://127.0.0.1:4566", "env var AWS_ENDPOINT_URL", "connection refused"
            )
        )
    )
    for env in ({"FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS": "soon"},):
        try:
            load_settings(env)
        except AwsSecretsError as e:
            out.append(str(e))
    try:
        extract_json_key("arn:...", '{"password": "x", "user": "y"}', "passwd")
    except AwsSecretsError as e:
        out.append(str(e))
    from flytekitplugins_awssecrets.errors import (
        RefreshIntervalError,
        SecretNotFoundError,
        SecretRefreshError,
    )
    from flytekitplugins_awssecrets.refresh import minimum_interval

    out.append(str(SecretRefreshError(SecretNotFoundError(str(ref)), "16:00:00 UTC")))
    minimum, arithmetic = minimum_interval(20, 0, 1000)
    out.append(str(RefreshIntervalError(5, minimum, arithmetic)))
    from flytekitplugins_awssecrets.errors import CredentialsRejectedError, SecretLeakError

    out.append(str(CredentialsRejectedError(str(ref), "UnrecognizedClientException", "env vars")))
    try:
        parse_reference("arn:aws:secretsmanager:us-esat-1:123456789012:secret:prod/db")
    except AwsSecretsError as e:
        out.append(str(e))
    out.append("SecretLeakError: " + str(SecretLeakError(str(ref), "'o0'")))
    from flytekitplugins_awssecrets.errors import UntrustedSettingError

    try:  # a pod whose environment names another agent
        load_settings({"FLYTE_AWS_SECRETS_AGENT_URL": "http://10.0.0.9:2773"}, pod=True)
    except UntrustedSettingError as e:
        out.append("UntrustedSettingError: " + str(e))
    out += _mount_messages(str(ref))
    return out


def _mount_messages(ref: str) -> list[str]:
    """Messages of the pod guard, the FILE-on-disk check, concurrent tasks and ANY with env_var."""
    from flytekitplugins_awssecrets.errors import (
        ConcurrentMountError,
        FileMountOnDiskError,
        PluginInactiveError,
    )
    from flytekitplugins_awssecrets.mount import any_with_env_var

    off = "the plugin is turned off in this pod (FLYTE_AWS_SECRETS_DISABLE='1')"
    return [
        str(PluginInactiveError("t", [ref], off, "unset it")),
        str(FileMountOnDiskError(ref, "/dev/shm", "ext4")),
        str(ConcurrentMountError(ref, "environment variable TOKEN")),
        str(any_with_env_var(ref, "TOKEN")),
    ]


def _command_messages() -> list[str]:
    """What ``serve`` and ``manifest`` say for the failures troubleshooting.md names under a command."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    from flytekitplugins_awssecrets.cli import main
    from flytekitplugins_awssecrets.manifest import yamlio
    from flytekitplugins_awssecrets.manifest.crypto import FileKeyMismatchError
    from flytekitplugins_awssecrets.manifest.export import UnsafeVariableNameError
    from flytekitplugins_awssecrets.serve.secret_agent import _answer

    token = {"PYFLYTE_AWSSECRETS_SERVE_TOKEN": "t0k3n-for-the-docs-test-0123456789"}
    args = ["serve", "--http", "127.0.0.1:0", "--secret-agent", "off"]
    out = [CliRunner().invoke(main, args, env=token).output]
    ctx = SimpleNamespace(source=SimpleNamespace(resources=lambda: {"Db": "arn:...:secret:db"}))
    frame, _ = _answer(ctx, SimpleNamespace(Resource=None))  # type: ignore[arg-type]
    out.append(frame.decode("utf-8", "replace"))
    out.append(str(UnsafeVariableNameError({"PATH": "parameters[2] 'path'"})))
    key = "arn:aws:kms:us-east-1:123456789012:key/"
    out.append(str(FileKeyMismatchError("app.yml", key + "A", key + "B", "PSYML_KEY_ALIAS")))
    try:
        yamlio.load("region: us-east-1\nparameters: {}\nx: 1\n? [a, b]\n: 2\n")
    except yamlio.YamlError as e:
        out.append(str(e))
    return out


def test_troubleshooting_headings_are_messages_the_code_prints() -> None:
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    # "### `message`", or "### `command`: `message`" for what one command prints.
    headings = [m[1] for m in re.findall(r"^### (`[^`]+`: )?`(.+)`$", text, re.M)]
    assert len(headings) >= 7
    messages = _real_messages() + _command_messages()
    for h in headings:
        pattern = ".*".join(re.escape(part) for part in re.split(r"\s*\.\.\.\s*|<ARN>", h))
        assert any(re.search(pattern, m) for m in messages), f"no real message matches `{h}`"


def test_every_index_install_says_it_needs_the_release() -> None:
    """`pip install flytekitplugins-awssecrets` (from the index) is never shown as working today."""
    files = [*PAGES, ROOT / "README.md", *sorted((ROOT / "examples").glob("*.py"))]
    pattern = re.compile(
        r"pip install ['\"]?flytekitplugins-awssecrets\b|packages=\[\"flytekitplugins-awssecrets"
    )
    hits = 0
    for f in files:
        lines = f.read_text().splitlines()
        for i, line in enumerate(lines):
            if pattern.search(line):
                hits += 1
                near = " ".join(lines[max(0, i - 3) : i + 4]).lower()
                assert "publish" in near, (
                    f"{f.name}:{i + 1}: say that this works once the package is published"
                )
    assert hits >= 5


def test_migrate_psyml_ci_steps_run_in_ci(tmp_path: Path, unique: str, aws_env: dict[str, str]) -> None:
    """migrate-psyml.md's CI excerpt, run as CI runs it (no terminal): the diff shows the change, the sync
    with --prune deletes what the file dropped. Without --yes the same sync would stop with exit 2."""
    import os

    block = next(
        m.group("body")
        for m in FENCE.finditer((ROOT / "docs" / "migrate-psyml.md").read_text())
        if "params.yml" in m.group("body")
    )
    steps = [s["run"] for s in yaml.safe_load(block) if "pyflyte-awssecrets" in s["run"]]
    assert len(steps) == 2
    (tmp_path / "config").mkdir()
    path = f"/ci{unique}/"
    entries = [{"name": n, "type": "String", "value": "v"} for n in ("a", "b", "c")]
    manifest = {"path": path, "region": "us-east-1", "parameters": entries}
    (tmp_path / "config" / "prod.yml").write_text(yaml.safe_dump(manifest))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_AWS_SECRETS_"))} | aws_env
    env["PATH"] = f"{BIN}:{env['PATH']}"

    def run(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = [run(s) for s in steps]
    assert [p.returncode for p in first] == [0, 0], [p.stderr[-1500:] for p in first]
    manifest["parameters"] = [entries[0], entries[2]]  # `b` dropped from the file: the sync prunes it
    (tmp_path / "config" / "prod.yml").write_text(yaml.safe_dump(manifest))
    diff, sync = (run(s) for s in steps)
    assert diff.returncode == 0 and f"- parameter {path}b" in diff.stdout, diff.stdout + diff.stderr
    assert sync.returncode == 0 and "sync: 1 changed" in sync.stderr, sync.stderr[-1500:]
    manifest["parameters"] = entries[:1]  # `c` dropped too, but this sync lacks --yes: nothing happens
    (tmp_path / "config" / "prod.yml").write_text(yaml.safe_dump(manifest))
    refused = run(steps[1].replace("--yes ", ""))
    assert refused.returncode == 2 and "pass --yes" in refused.stderr, refused.stderr[-1500:]
    assert f"- parameter {path}c" in run(steps[0]).stdout  # still there
