"""The manifest file without AWS: YAML that keeps its text, real validation, names, export and diff (pure)."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from flytekitplugins_awssecrets.manifest import export, yamlio
from flytekitplugins_awssecrets.manifest.diff import Entry, compare, desired_entries, same_key
from flytekitplugins_awssecrets.manifest.model import (
    ManifestError,
    load_manifest,
    manifest_to_yaml_data,
    parameter_full_name,
    parse_manifest,
    secret_full_name,
)

DATA = Path(__file__).parent / "data" / "manifest"


def test_psyml_readme_file_loads_unchanged() -> None:
    m = load_manifest(str(DATA / "psyml_readme.yml"))
    assert m.path == "/apps/superman/" and m.kmskey == "alias/superman"
    assert [p.name for p in m.parameters] == ["api_version", "api_token"]
    assert m.parameters[0].text() == "2"
    assert m.tags == {"cost_center": "team17", "project": "superman"}


def test_yaml_values_keep_the_text_their_author_wrote() -> None:
    # psyml defect: yaml.safe_load turned these into 83, True, None, 1.5, a date and False.
    m = load_manifest(str(DATA / "yaml_text.yml"))
    assert {p.name: p.text() for p in m.parameters} == {
        "octal": "0123",
        "yes_word": "yes",
        "tilde": "~",
        "decimal": "1.50",
        "date": "2024-01-02",
        "off": "off",
    }


def test_written_yaml_reads_back_identically_with_psyml_loader() -> None:
    m = load_manifest(str(DATA / "yaml_text.yml"))
    text = yamlio.dump(manifest_to_yaml_data(m))
    # psyml reads with yaml.safe_load: ambiguous strings must be quoted so they stay strings there too.
    data = yaml.safe_load(text)
    assert [p["value"] for p in data["parameters"]] == ["0123", "yes", "~", "1.50", "2024-01-02", "off"]


def test_validation_names_every_entry_and_field() -> None:
    with pytest.raises(ManifestError) as ei:
        load_manifest(str(DATA / "invalid.yml"))
    problems = ei.value.problems
    text = "\n".join(problems)
    assert "parameters[1] 'typo_field': descripton: unknown field" in text
    assert "parameters[2] 'bad_type': type: Input should be 'String'" in text
    assert (
        "parameters[3] 'fake_cipher': value: type 'securestring' (lowercase) means an encrypted value" in text
    )
    assert "parameters[4] 'tagged_int': value: must be text" in text
    assert not any("'ok'" in p for p in problems)
    # Validation is not `assert` (psyml's defect): it survives python -O.
    r = subprocess.run(
        [
            "python",
            "-O",
            "-c",
            f"from flytekitplugins_awssecrets.manifest.model import *; load_manifest({str(DATA / 'invalid.yml')!r})",
        ],
        capture_output=True,
        text=True,
        executable=__import__("sys").executable,
    )
    assert r.returncode != 0 and "ManifestError" in r.stderr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"region": "us-east-1", "parameters": []}, "top level: path: is required"),
        ({"path": "/a", "region": "mars-1", "parameters": []}, "top level: region: region 'mars-1'"),
        (
            {"path": "/a", "region": "us-east-1", "parameters": [], "extra": "x"},
            "top level: extra: unknown field",
        ),
        ({"path": "/a", "region": "us-east-1"}, "parameters: is required"),
        (["not", "a", "mapping"], "must be a mapping"),
        (
            {
                "path": "/a",
                "region": "us-east-1",
                "parameters": [{"name": "x", "type": "String", "value": ""}],
            },
            "parameters[0] 'x': value: is empty",
        ),
        (
            {
                "path": "/a",
                "region": "us-east-1",
                "parameters": [
                    {"name": "x", "type": "String", "value": "1"},
                    {"name": "/x", "type": "String", "value": "2"},
                ],
            },
            "parameters[1] and parameters[0] are both /a/x",
        ),
        (
            {
                "path": "/a",
                "region": "us-east-1",
                "parameters": [{"name": "x", "type": "String", "value": ["a"]}],
            },
            "a list is only allowed for type StringList",
        ),
        (
            {
                "path": "/a",
                "region": "us-east-1",
                "parameters": [],
                "secrets": [{"name": "s", "value": "{", "json": "true"}],
            },
            "secrets[0] 's': value: 'json: true' but the value is not valid JSON",
        ),
        (
            {"path": "/a", "region": "us-east-1", "parameters": [], "tags": {"aws:x": "1"}},
            "reserved by AWS",
        ),
    ],
)
def test_validation_messages(raw: object, expected: str) -> None:
    with pytest.raises(ManifestError) as ei:
        parse_manifest(raw, "f.yml")
    assert expected in str(ei.value)


def test_errors_and_reprs_never_show_values() -> None:
    secret = "hunter2-very-secret"
    raw = {
        "path": "/a",
        "region": "us-east-1",
        "parameters": [{"name": "p", "type": "SecureString", "value": secret, "bogus": secret}],
        "secrets": [{"name": "s", "value": secret, "json": "true"}],
    }
    with pytest.raises(ManifestError) as ei:
        parse_manifest(raw)
    assert secret not in str(ei.value) and secret not in repr(ei.value)
    raw["parameters"][0].pop("bogus")  # type: ignore[index]
    raw["secrets"][0].pop("json")  # type: ignore[index]
    m = parse_manifest(raw)
    assert secret not in repr(m) and secret not in str(m)
    assert secret not in repr(desired_entries(m))


def test_yaml_syntax_error_names_line_not_content(tmp_path: Path) -> None:
    f = tmp_path / "bad.yml"
    f.write_text("path: /a\nregion: us-east-1\nparameters:\n  - name: x\n    value: [hunter2-secret\n")
    with pytest.raises(ManifestError) as ei:
        load_manifest(str(f))
    assert "invalid YAML at line" in str(ei.value) and "hunter2" not in str(ei.value)


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "dup.yml"
    f.write_text("path: /a\npath: /b\nregion: us-east-1\nparameters: []\n")
    with pytest.raises(ManifestError, match="line 2: duplicate key 'path'"):
        load_manifest(str(f))


@pytest.mark.parametrize(
    ("path", "name", "expected"),
    [
        ("/apps/superman/", "api_token", "/apps/superman/api_token"),
        ("/apps/superman/", "/api_token", "/apps/superman/api_token"),  # psyml: //api_token
        ("/apps/superman", "db/password", "/apps/superman/db/password"),
        ("apps//x/", "/y/", "/apps/x/y"),
        ("/", "top", "/top"),
        ("", "top", "/top"),
    ],
)
def test_full_names_never_have_double_slashes(path: str, name: str, expected: str) -> None:
    assert parameter_full_name(path, name) == expected
    assert secret_full_name(path, name) == expected.lstrip("/")


def test_lowercase_types_map_to_ssm_spelling() -> None:
    m = parse_manifest(
        {
            "path": "/a",
            "region": "us-east-1",
            "parameters": [
                {"name": "a", "description": "", "type": "string", "value": "x"},
                {"name": "b", "description": "", "type": "stringlist", "value": "x,y"},
                {"name": "c", "description": "", "type": "SecureString", "value": "x"},
            ],
        }
    )
    assert [e.type for e in desired_entries(m)] == ["String", "StringList", "SecureString"]


def test_extended_file_stringlist_and_secrets() -> None:
    m = load_manifest(str(DATA / "extended.yml"))
    entries = {e.name: e for e in desired_entries(m)}
    assert entries["/apps/ext/hosts"].value.get_secret_value() == "a.example.com,b.example.com"
    assert entries["/apps/ext/ports"].type == "StringList"
    db = entries["apps/ext/db"]
    assert db.type == "json" and json.loads(db.value.get_secret_value()) == {
        "username": "app",
        "port": "5432",
    }
    assert db.tags == {"team": "platform", "tier": "gold"}
    assert json.loads(entries["apps/ext/raw_json"].value.get_secret_value())["port"] == 5432
    # Round trip: the mapping is written back as a mapping, hand-written JSON stays text.
    data = manifest_to_yaml_data(m)
    assert data["secrets"][0]["value"] == {"username": "app", "port": "5432"}
    assert data["secrets"][1]["json"] is True and isinstance(data["secrets"][1]["value"], str)
    assert data["parameters"][0]["value"] == ["a.example.com", "b.example.com"]
    again = parse_manifest(yamlio.load(yamlio.dump(data)))
    assert desired_entries(again) == desired_entries(m)


# -- export -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "prefix", "var"),
    [
        ("api_token", "", "API_TOKEN"),
        ("/api-token", "", "API_TOKEN"),
        ("db/pass.word", "", "DB_PASS_WORD"),
        ("9lives", "", "_9LIVES"),
        ("x", "app_", "APP_X"),
    ],
)
def test_variable_names(name: str, prefix: str, var: str) -> None:
    assert export.variable_name(name, prefix) == var


def test_export_collisions_are_an_error() -> None:
    m = parse_manifest(
        {
            "path": "/a",
            "region": "us-east-1",
            "parameters": [
                {"name": "db-pass", "type": "String", "value": "1"},
                {"name": "db/pass", "type": "String", "value": "2"},
            ],
        }
    )
    with pytest.raises(
        export.ExportCollisionError, match="DB_PASS: parameters\\[0\\] 'db-pass', parameters\\[1\\]"
    ):
        export.variables(m)


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_shell_export_round_trips_through_posix_quoting(value: str) -> None:
    line = export.render([("V", value)], "shell")
    assert shlex.split(line.removeprefix("export "))[0] == f"V={value}"


def test_shell_export_is_not_expanded_by_sh() -> None:
    tricky = 'it\'s $HOME `id` "q" \\n\nline2 $(echo no)'
    out = subprocess.run(
        ["sh", "-c", export.render([("V", tricky)], "shell") + 'printf %s "$V"'],
        capture_output=True,
        text=True,
    )
    assert out.stdout == tricky


_NASTY = [
    "plain",
    'it\'s $HOME `id` "q" \\n',
    "$(touch /tmp/awssecrets-pwned)",
    "`touch /tmp/awssecrets-pwned`",
    "a'b''c'" + "''",
    "\\",
    "trailing newlines\n\n",
    "\nleading",
    "tab\there\r\nCRLF",
    "!history !! ${x:-y} ${#} $'\\x41'",
    "unicode: héllo ✓ \u2028",
    "-----BEGIN KEY-----\nMIIB\n-----END KEY-----\n",
    "",
    " spaces ",
    "=equals=",
    "#not a comment",
]

_PRINT_DIGESTS = (
    "import hashlib, json, os, sys; "
    "print(json.dumps({n: hashlib.sha256(os.environ[n].encode()).hexdigest() for n in sys.argv[1:]}))"
)


def _sourced(text: str, names: list[str], how: str, tmp: Path) -> dict[str, str]:
    """What bash gives back after sourcing (``set -a; . file``) or eval-ing an export, as digests."""
    f = tmp / "app.env"
    f.write_text(text, encoding="utf-8")
    load = (
        f"set -a; . {shlex.quote(str(f))}; set +a"
        if how == "source"
        else f'eval "$(cat {shlex.quote(str(f))})"'
    )
    script = f"{load}; exec python3 -c {shlex.quote(_PRINT_DIGESTS)} {' '.join(names)}"
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp)
    assert p.returncode == 0, p.stderr[-500:]
    return dict(json.loads(p.stdout))


def test_exports_are_safe_to_source_and_round_trip_exactly(tmp_path: Path) -> None:
    marker = Path("/tmp/awssecrets-pwned")  # noqa: S108 - what the command substitutions would create
    marker.unlink(missing_ok=True)
    pairs = [(f"V{i}", v) for i, v in enumerate(_NASTY)]
    names = [n for n, _ in pairs]
    want = {n: hashlib.sha256(v.encode()).hexdigest() for n, v in pairs}
    for fmt, how in (("dotenv", "source"), ("shell", "eval"), ("shell", "source")):
        got = _sourced(export.render(pairs, fmt), names, how, tmp_path)  # type: ignore[arg-type]
        assert got == want, (fmt, how, [n for n in names if got.get(n) != want[n]])
    assert not marker.exists(), "sourcing the export ran a command embedded in a value"
    assert export.render([("A", "x'y")], "dotenv") == "A='x'\\''y'\n"
    assert json.loads(export.render(pairs, "json")) == dict(pairs)
    with pytest.raises(ValueError, match="V9: the value holds a NUL"):
        export.render([("V9", "a\x00b")], "dotenv")


@given(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40))
def test_dotenv_quoting_round_trips_any_text_in_sh(value: str) -> None:
    out = subprocess.run(
        ["sh", "-c", export.render([("V", value)], "dotenv") + 'printf %s "$V"'],
        capture_output=True,
        timeout=30,
    )
    assert out.stdout == value.encode("utf-8")


# -- diff (pure) ----------------------------------------------------------------------------------------------


def _e(name: str, value: str = "v", **kw: object) -> Entry:
    return Entry(
        kind="parameter", name=name, type=str(kw.pop("type", "String")), value=SecretStr(value), **kw
    )  # type: ignore[arg-type]


def test_compare_reports_each_kind_of_change() -> None:
    desired = [
        _e("/a/new"),
        _e("/a/same", tags={"t": "1"}),
        _e("/a/value", "new"),
        _e("/a/type", type="SecureString"),
        _e("/a/tags", tags={"t": "1", "u": "2"}),
    ]
    remote = {
        ("parameter", "/a/same"): _e("/a/same", tags={"t": "1", "aws:cloudformation:x": "y"}),
        ("parameter", "/a/value"): _e("/a/value", "old"),
        ("parameter", "/a/type"): _e("/a/type"),
        ("parameter", "/a/tags"): _e("/a/tags", tags={"t": "1", "old": "x"}),
        ("parameter", "/a/gone"): _e("/a/gone"),
    }
    changes = {c.name: c for c in compare(desired, remote)}
    assert set(changes) == {"/a/new", "/a/value", "/a/type", "/a/tags", "/a/gone"}
    assert changes["/a/new"].action == "add"
    assert changes["/a/value"].fields == ["value"]
    assert changes["/a/type"].fields == ["type"]
    assert changes["/a/tags"].action == "tags"
    assert changes["/a/tags"].tags_set == {"u": "2"} and changes["/a/tags"].tags_removed == ["old"]
    assert changes["/a/gone"].action == "remove"
    assert "old" not in changes["/a/value"].describe() and "new" not in changes["/a/value"].describe()
    assert not [c for c in compare(desired, remote, prune_scope=False) if c.action == "remove"]


def test_same_key_only_compares_like_forms() -> None:
    assert same_key("alias/a", "arn:aws:kms:us-east-1:123456789012:alias/a")
    assert not same_key("alias/a", "alias/b")
    assert same_key("alias/a", "1234abcd-12ab-34cd-56ef-1234567890ab")  # unknowable: not a change
    assert same_key(None, "alias/b")
