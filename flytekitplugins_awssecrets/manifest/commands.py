"""``pyflyte-awssecrets manifest``: psyml's commands, all of them working, plus Secrets Manager entries.

Every command takes the manifest FILE. Output that is the product (an encrypted file, a decrypted file, export
lines, a diff) goes to stdout; progress, reports and errors go to stderr. Exit codes: 0 success, 1 ``diff``
found differences, 2 bad usage or input (invalid file, ciphertext that does not decrypt, export collision),
3 an AWS or network error -- including a save/sync/nuke where some writes failed.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from flytekitplugins_awssecrets.cli_output import format_option
from flytekitplugins_awssecrets.errors import AwsSecretsError

if TYPE_CHECKING:  # pydantic models are imported when a command runs, not for --help
    from flytekitplugins_awssecrets.manifest.model import Manifest

F = TypeVar("F", bound=Callable[..., Any])

EXIT_DIFFERENT = 1
EXIT_INPUT = 2
EXIT_AWS = 3
#: Up to this many outcomes, a report lists every entry; above it only failures (unless some failed).
LIST_ALL_UP_TO = 50


def _err(text: str) -> None:
    click.echo(text, err=True)


def _handle_errors(fn: F) -> F:
    """Map the typed errors to messages on stderr and the documented exit codes, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import pydantic

        from flytekitplugins_awssecrets.manifest.awsclient import AwsCallError

        try:
            return fn(*args, **kwargs)
        except AwsCallError as e:
            _err(f"error: {e}")
            sys.exit(EXIT_AWS)
        except pydantic.ValidationError as e:
            # Its str() shows the input; list only where and what (the manifest loader does the same).
            where = "; ".join(
                f"{'.'.join(map(str, x['loc']))}: {str(x['msg']).removeprefix('Value error, ')}"
                for x in e.errors(include_input=False)
            )
            _err(f"error: invalid entry: {where}")
            sys.exit(EXIT_INPUT)
        except (AwsSecretsError, ValueError) as e:
            # ManifestError, DecryptError, ExportCollisionError and "still encrypted": the input's fault.
            # None of them carries a value (they are built from names and field paths only).
            _err(f"error: {e}")
            sys.exit(EXIT_INPUT)

    return wrapper  # type: ignore[return-value]


def _load(path: str) -> Manifest:
    from flytekitplugins_awssecrets.manifest.model import load_manifest

    return load_manifest(path)


def _plain(m: Manifest) -> Manifest:
    from flytekitplugins_awssecrets.manifest.crypto import PsymlCipher, decrypted_values

    return decrypted_values(m, PsymlCipher() if m.encrypted_any else None)


def _yaml_text(m: Manifest) -> str:
    from flytekitplugins_awssecrets.manifest import yamlio
    from flytekitplugins_awssecrets.manifest.model import manifest_to_yaml_data

    return yamlio.dump(manifest_to_yaml_data(m))


def _edited_text(file: str, old: Manifest, new: Manifest) -> str:
    """FILE's own text with only the changed values replaced (comments, order, quoting kept); if its YAML
    is beyond an in-place edit, the whole file re-written, said loudly."""
    from flytekitplugins_awssecrets.manifest.roundtrip import RoundTripError, apply_changes

    with open(file, encoding="utf-8") as f:
        text = f.read()
    try:
        return apply_changes(text, old, new)
    except RoundTripError as e:
        _err(f"warning: {file}: could not keep the file's layout ({e}); writing it in full, comments dropped")
        return _yaml_text(new)


def _check_in_place_target(path: str) -> str:
    """The file ``-i`` replaces: ``path``, or the target of the symlink ``path`` (written through, so the
    link stays a link). A link whose target does not exist is refused, naming the link."""
    real = os.path.realpath(path)
    if os.path.islink(path) and not os.path.isfile(real):
        from flytekitplugins_awssecrets.manifest.model import ManifestError

        raise ManifestError(path, [f"is a symbolic link to {real}, which is not a regular file; not writing"])
    return real


def _write_file(path: str, text: str, private: bool = False) -> None:
    """Replace ``path`` atomically (write a temporary file, then rename), keeping its mode. A symlink is
    written through: its target is replaced, in the target's directory, and the link is kept."""
    if os.path.islink(path):
        path = _check_in_place_target(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600 if private else 0o644
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".manifest-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600 if private else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _emit(text: str, output: str | None, in_place: bool, source: str, private: bool = False) -> None:
    if in_place:
        _write_file(source, text)
        _err(f"wrote {source}")
    elif output and output != "-":
        _write_file(output, text, private)
        _err(f"wrote {output}")
    else:
        click.echo(text, nl=False)


def _output_options(fn: F) -> F:
    fn = click.option(
        "-o", "--output", type=click.Path(dir_okay=False), help="Write here instead of stdout."
    )(fn)
    return click.option("-i", "--in-place", is_flag=True, help="Rewrite FILE itself (atomically).")(fn)


def _write_options(fn: F) -> F:
    fn = click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")(fn)
    fn = click.option(
        "--concurrency",
        type=click.IntRange(1, 64),
        default=8,
        show_default=True,
        help="Writes in flight at once (throttling is retried with backoff).",
    )(fn)
    fn = format_option("json: the report as one JSON object on stdout (messages stay on stderr).")(fn)
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Show progress (default: from 20 writes; a bar on a terminal, a line every 10 s without one).",
    )(fn)


FILE = click.argument("file", type=click.Path(exists=True, dir_okay=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def manifest() -> None:
    """Keep SSM parameters and Secrets Manager secrets in a committed, KMS-encrypted YAML file.

    Reads psyml's format unchanged. The file key is PSYML_KEY_ALIAS (default alias/psyml) in
    PSYML_KEY_REGION (default ap-southeast-2). Exit codes: 0 ok, 1 diff found differences, 2 bad input,
    3 AWS error or some writes failed.
    """


@manifest.command()
@FILE
@_output_options
@click.option("--create-key", is_flag=True, help="Create the file key and its alias if they do not exist.")
@click.option(
    "--key",
    "key_opt",
    metavar="ALIAS|ARN",
    help="The file key for new values [PSYML_KEY_ALIAS, else alias/psyml].",
)
@click.option(
    "--use-file-key",
    is_flag=True,
    help="Encrypt new values under the file's own encrypted_with key although it is not the file key.",
)
@click.option("--dry-run", is_flag=True, help="List the values that would be encrypted; call no KMS Encrypt.")
@_handle_errors
def encrypt(
    file: str,
    output: str | None,
    in_place: bool,
    create_key: bool,
    key_opt: str | None,
    use_file_key: bool,
    dry_run: bool,
) -> None:
    """Encrypt every plain SecureString value (and secret) of FILE with the file key.

    The file key is the operator's (--key, else PSYML_KEY_ALIAS, else alias/psyml), in PSYML_KEY_REGION,
    else the region of the file's encrypted_with key, else the manifest's region. A file whose
    encrypted_with names another key is refused (both named) unless --use-file-key.

    Only the encrypted values change (an encrypted parameter's type becomes `securestring`, as psyml
    writes it); comments, order, quoting and layout of the rest of FILE are kept byte for byte. Prints the
    result on stdout unless -i/-o is given.
    """
    from flytekitplugins_awssecrets.manifest.crypto import (
        PsymlCipher,
        _region_of,
        encrypt_manifest,
        file_key_region,
        key_alias,
    )

    m = _load(file)
    todo = [f"parameter {p.name}" for p in m.parameters if p.type == "SecureString"]
    todo += [f"secret {s.name}" for s in m.secrets if not s.encrypted]
    if dry_run:
        for t in todo:
            _err(f"would encrypt {t}")
        _err(f"encrypt: {len(todo)} value(s) would be encrypted (dry run)")
        return
    if in_place:
        _check_in_place_target(file)
    source = "--key" if key_opt else ("PSYML_KEY_ALIAS" if os.environ.get("PSYML_KEY_ALIAS") else "default")
    alias = key_opt or key_alias()
    region, why = file_key_region(m)
    if _region_of(alias):
        region, why = str(_region_of(alias)), "the region in the --key ARN"
    cipher = PsymlCipher(region=region, alias=alias)
    key = None
    if not (use_file_key and m.encrypted_with):
        key, created = cipher.find_or_create_key(create_key)
        if created:
            _err(f"created KMS key {key} with alias {alias} in {region} ({why})")
    encrypted = encrypt_manifest(
        m, cipher, key, use_file_key=use_file_key, file=file, key_source=f"{source} {alias} in {region}"
    )
    _emit(_edited_text(file, m, encrypted), output, in_place, file)
    _err(f"encrypt: {len(todo)} value(s) encrypted under {encrypted.encrypted_with}")


@manifest.command()
@FILE
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write here (mode 0600) instead of stdout."
)
@_handle_errors
def decrypt(file: str, output: str | None) -> None:
    """Print FILE with every value decrypted (plain text: do not commit the output)."""
    _emit(_yaml_text(_plain(_load(file))), output, False, file, private=True)


@manifest.command()
@FILE
@_output_options
@click.option("--force", is_flag=True, help="Re-encrypt even if FILE is already under the current key.")
@click.option("--dry-run", is_flag=True, help="Say whether a refresh is needed; write nothing.")
@_handle_errors
def refresh(file: str, output: str | None, in_place: bool, force: bool, dry_run: bool) -> None:
    """Re-encrypt FILE under the key the alias points at now (after a key change or rotation)."""
    from flytekitplugins_awssecrets.manifest.crypto import PsymlCipher, file_key_region, refresh_manifest

    m = _load(file)
    if in_place:
        _check_in_place_target(file)
    cipher = PsymlCipher(region=file_key_region(m)[0])
    current = cipher.key_arn()
    needed = force or m.encrypted_with != current
    if dry_run:
        _err(f"refresh: {'would re-encrypt under ' + current if needed else 'already under the current key'}")
        return
    new, changed = refresh_manifest(m, cipher, force)
    if not changed:
        # psyml raised here; an unchanged file is not an error, but printing it keeps `refresh f > g` safe.
        _err("refresh: already encrypted with the current key; nothing to do (--force to re-encrypt)")
        if not in_place:
            with open(file, encoding="utf-8") as f:
                _emit(f.read(), output, False, file)
        return
    _emit(_edited_text(file, m, new), output, in_place, file)
    _err(f"refresh: re-encrypted under {current}")


_WOULD = {
    "add": "would add",
    "update": "would update",
    "tags": "would update tags",
    "remove": "would remove (delete)",
}


def _planned(action: str) -> str:
    """A dry run's action as a sentence: "would update tags", not "would tags"."""
    if action.startswith("already gone"):
        return "already absent: nothing to delete"
    return _WOULD.get(action, f"would {action}")


def _report(report: Any, verbose: bool = False, fmt: str = "text") -> None:
    """Print a write report on stderr (or as JSON on stdout); a partly applied change always lists what
    succeeded and failed."""
    failed = report.failed
    if fmt == "json":
        from flytekitplugins_awssecrets.cli_output import print_json

        print_json(
            {
                "command": report.command,
                "dry_run": report.dry_run,
                "counts": report.counts(),
                "outcomes": [o.model_dump() for o in report.outcomes],
            }
        )
    else:
        list_all = verbose or failed or len(report.outcomes) <= LIST_ALL_UP_TO
        for o in report.outcomes:
            if o.ok and list_all:
                _err(f"  ok     {o.kind} {o.name}: {_planned(o.action) if report.dry_run else o.action}")
        for o in failed:
            _err(f"  FAILED {o.kind} {o.name}: {o.action}: {o.detail}")
        if not list_all:
            _err(f"  ({len(report.outcomes) - len(failed)} entries not listed; -v lists them)")
    _err(report.summary())
    if failed:
        sys.exit(EXIT_AWS)


def _confirm_deletion(what: str, yes: bool) -> None:
    """Deleting needs a person at a terminal saying yes, or --yes: never a silent delete in a pipe."""
    if yes:
        return
    if not sys.stdin.isatty():
        _err(f"error: refusing to delete {what} without confirmation: no terminal to ask; pass --yes")
        sys.exit(EXIT_INPUT)
    click.confirm(f"Delete {what}?", abort=True, err=True)


@manifest.command()
@FILE
@_write_options
@click.option("-v", "--verbose", is_flag=True, help="List every entry, however many.")
@_handle_errors
def save(file: str, dry_run: bool, concurrency: int, fmt: str, progress: bool | None, verbose: bool) -> None:
    """Write every entry of FILE to AWS (values, types, descriptions, KMS keys, tags)."""
    from flytekitplugins_awssecrets.manifest import store

    m = _plain(_load(file))
    report = store.save(m, store.Clients(m.region, concurrency), dry_run=dry_run, progress=progress)
    _report(report, verbose, fmt)


def _recovery_option(fn: F) -> F:
    fn = click.option(
        "--recovery-days",
        type=click.IntRange(7, 30),
        default=30,
        show_default=True,
        help="Recovery window for deleted Secrets Manager secrets.",
    )(fn)
    return click.option(
        "--force-delete-without-recovery",
        is_flag=True,
        help="Delete secrets at once, with no recovery window.",
    )(fn)


@manifest.command()
@FILE
@_write_options
@_recovery_option
@click.option(
    "-y", "--yes", is_flag=True, help="Delete without asking (needed without a terminal, e.g. in CI)."
)
@click.option("-v", "--verbose", is_flag=True, help="List every entry, however many.")
@_handle_errors
def nuke(
    file: str,
    dry_run: bool,
    concurrency: int,
    fmt: str,
    progress: bool | None,
    recovery_days: int,
    force_delete_without_recovery: bool,
    yes: bool,
    verbose: bool,
) -> None:
    """Delete every entry FILE lists from AWS; entries already gone are reported, not errors.

    Asks for confirmation on a terminal; without one (CI, a pipe) it refuses unless --yes is given.
    --dry-run reads which entries exist and says which would be deleted and which are already absent.
    """
    from flytekitplugins_awssecrets.manifest import store

    m = _load(file)  # deleting needs names only: no decryption, no KMS permission
    n = len(m.parameters) + len(m.secrets)
    if not dry_run:
        _confirm_deletion(f"{n} entries listed in {file} from {m.region}", yes)
    days = None if force_delete_without_recovery else recovery_days
    clients = store.Clients(m.region, concurrency)
    report = store.nuke(m, clients, dry_run=dry_run, recovery_days=days, progress=progress)
    _report(report, verbose, fmt)


@manifest.command()
@FILE
@click.option("--listed-only", is_flag=True, help="Compare only the entries FILE lists (no 'removed').")
@format_option("json: a list of changes on stdout (values are never in it).")
@_handle_errors
def diff(file: str, listed_only: bool, fmt: str) -> None:
    """Show what differs between FILE and AWS: added, changed, removed, tag changes. Values are masked.

    Exit code 0 when AWS matches FILE, 1 when something differs.
    """
    from flytekitplugins_awssecrets.manifest import store

    m = _plain(_load(file))
    changes = store.plan(m, store.Clients(m.region), "listed" if listed_only else "path")
    if fmt == "json":
        from flytekitplugins_awssecrets.cli_output import print_json

        print_json([c.model_dump(exclude={"label"}) | {"line": c.describe()} for c in changes])
    else:
        for c in changes:
            click.echo(c.describe())
    total = len(m.parameters) + len(m.secrets)
    if not changes:
        _err(f"diff: AWS matches {file} ({total} entries)")
        return
    _err(f"diff: {len(changes)} difference(s); `manifest sync` applies them (removals need --prune)")
    sys.exit(EXIT_DIFFERENT)


@manifest.command()
@FILE
@click.option("--prune", is_flag=True, help="Also delete entries under `path` that FILE no longer lists.")
@_write_options
@_recovery_option
@click.option(
    "-y", "--yes", is_flag=True, help="Delete pruned entries without asking (needed without a terminal)."
)
@click.option("-v", "--verbose", is_flag=True, help="List every entry, however many.")
@_handle_errors
def sync(
    file: str,
    prune: bool,
    dry_run: bool,
    concurrency: int,
    fmt: str,
    progress: bool | None,
    recovery_days: int,
    force_delete_without_recovery: bool,
    yes: bool,
    verbose: bool,
) -> None:
    """Write only what differs between FILE and AWS; add and remove tags; delete extras with --prune.

    With --prune, deletions are confirmed on a terminal; without one they need --yes, or nothing is
    written at all.
    """
    from flytekitplugins_awssecrets.manifest import store

    m = _plain(_load(file))
    days = None if force_delete_without_recovery else recovery_days
    clients = store.Clients(m.region, concurrency)

    def confirm(removals: list[Any]) -> bool:
        for c in removals[:LIST_ALL_UP_TO]:
            _err(f"  to delete: {c.kind} {c.name}")
        _confirm_deletion(f"{len(removals)} entries under {m.path} that {file} no longer lists", yes)
        return True

    report = store.sync(
        m,
        clients,
        prune=prune,
        dry_run=dry_run,
        recovery_days=days,
        progress=progress,
        confirm_removals=confirm,
    )
    _report(report, verbose, fmt)


@manifest.command(name="export")
@FILE
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["shell", "dotenv", "json"]),
    default="shell",
    show_default=True,
    help="shell: export NAME='value' lines to eval; dotenv: NAME='value' lines to source; json: one object.",
)
@click.option("--prefix", default="", help="Put this before every variable name (e.g. APP_).")
@click.option(
    "--allow-name",
    "allow_names",
    multiple=True,
    metavar="NAME",
    help="Export this variable although it changes how shells or interpreters run (PATH, LD_PRELOAD, ...); "
    "repeatable.",
)
@_handle_errors
def export_(file: str, fmt: str, prefix: str, allow_names: tuple[str, ...]) -> None:
    """Print FILE's values as environment variables (decrypted: handle the output as a secret).

    Names: the entry name without leading/trailing '/', other characters than letters, digits and '_'
    replaced by '_', upper-cased; two entries with the same variable name are an error, and so are names
    that change how shells, loaders or interpreters run (PATH, BASH_ENV, LD_*, PYTHON*, ...) unless
    --allow-name NAME is given. Use: eval "$(pyflyte-awssecrets manifest export FILE)".
    """
    from flytekitplugins_awssecrets.manifest import export as ex

    m = _plain(_load(file))
    click.echo(ex.render(ex.variables(m, prefix, allow_names), fmt), nl=False)  # type: ignore[arg-type]


__all__ = ["manifest"]
