"""Formatting a decrypted manifest as environment variables: pure functions, no I/O.

Naming (documented in docs/manifest.md): an entry's *name as written in the file* (not the full AWS path),
with leading and trailing ``/`` removed, every character other than a letter, digit or ``_`` replaced by
``_``, upper-cased, and prefixed with ``prefix``; a name that would start with a digit gets a leading ``_``.
``db/password`` becomes ``DB_PASSWORD``, ``/api-token`` becomes ``API_TOKEN``. Two entries that map to the
same variable are an error (:class:`ExportCollisionError`), never a silent overwrite.

Formats:

* ``shell``: ``export NAME='value'`` lines for ``eval "$(pyflyte-awssecrets manifest export f.yml)"``; single
  quotes, with ``'`` written as ``'\\''``, so nothing in a value is expanded;
* ``dotenv``: ``NAME='value'``, quoted exactly as ``shell`` (without ``export``), so that
  ``set -a; . ./app.env`` expands and runs nothing in a value (no ``$``, backtick or ``\\`` is special inside
  single quotes) and gives back every value byte for byte, newlines included. Other dotenv readers
  (python-dotenv, docker compose) agree for values without ``'`` or ``\\``: python-dotenv reads ``\\\\`` and
  ``\\'`` inside single quotes as escapes, and ``'`` is written ``'\\''`` (close, escaped quote, reopen);
* ``json``: one object ``{"NAME": "value"}``.

A StringList is its comma-joined text; a JSON secret its JSON text.

Names that change how a shell, the dynamic loader or an interpreter runs (``PATH``, ``BASH_ENV``,
``LD_PRELOAD``, ``PYTHONPATH``, ...: :data:`UNSAFE_NAMES` and :data:`UNSAFE_PREFIXES`, the one list) are
refused, whatever case the entry was written in (``bash_env`` exports as ``BASH_ENV``), with
:class:`UnsafeVariableNameError` naming every such entry, unless the caller allows that very name: the
manifest is written by whoever may open a pull request, and ``eval "$(... export)"`` runs in the shell of
whoever deploys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Literal

from flytekitplugins_awssecrets.errors import AwsSecretsError
from flytekitplugins_awssecrets.manifest.model import Manifest

__all__ = [
    "Format",
    "ExportCollisionError",
    "UnsafeVariableNameError",
    "UNSAFE_NAMES",
    "UNSAFE_PREFIXES",
    "is_unsafe_name",
    "variable_name",
    "variables",
    "render",
]

Format = Literal["shell", "dotenv", "json"]

_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


#: Variables that make a shell, the loader or an interpreter run other code or read other files. Upper
#: case: names are compared after upper-casing, as export writes them.
UNSAFE_NAMES = frozenset(
    {
        # shells
        "PATH", "IFS", "ENV", "BASH_ENV", "PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND", "SHELLOPTS",
        "BASHOPTS", "CDPATH", "GLOBIGNORE", "FPATH", "ZDOTDIR", "HOME", "SHELL", "HISTFILE", "TMPDIR",
        "MAIL", "MAILPATH", "EDITOR", "VISUAL", "PAGER", "BROWSER", "LESSOPEN", "LESSCLOSE",
        "SSH_ASKPASS", "SUDO_ASKPASS", "TERMINFO",
        # the C library and loader
        "GCONV_PATH", "HOSTALIASES", "LOCPATH", "NLSPATH", "RESOLV_HOST_CONF", "MALLOC_CONF",
        # interpreters and runtimes
        "NODE_OPTIONS", "NODE_PATH", "CLASSPATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
        "RUBYOPT", "PHPRC", "PHP_INI_SCAN_DIR", "TCLLIBPATH", "R_PROFILE", "R_PROFILE_USER",
        # where tools send requests or whom they trust
        "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "OPENSSL_CONF", "OPENSSL_ENGINES", "AWS_CA_BUNDLE",
        "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "KUBECONFIG", "DOCKER_HOST",
    }
)  # fmt: skip
#: Families of such variables (``LD_PRELOAD``, ``DYLD_INSERT_LIBRARIES``, ``PYTHONSTARTUP``, ``PERL5OPT``,
#: ``GIT_SSH_COMMAND``, ``BASH_FUNC_...``, ``AWS_ENDPOINT_URL_S3``).
UNSAFE_PREFIXES = (
    "LD_", "DYLD_", "PYTHON", "PERL", "RUBY", "GEM_", "BUNDLE_", "NODE_", "NPM_CONFIG_", "LUA_", "GIT_",
    "BASH_", "ZSH", "KSH", "AWS_ENDPOINT_URL",
)  # fmt: skip


def is_unsafe_name(var: str) -> bool:
    """Whether ``var`` (any case) is one of :data:`UNSAFE_NAMES` or starts with an :data:`UNSAFE_PREFIXES`.

    >>> is_unsafe_name("bash_env"), is_unsafe_name("LD_PRELOAD"), is_unsafe_name("DB_PASSWORD")
    (True, True, False)
    """
    upper = var.upper()
    return upper in UNSAFE_NAMES or upper.startswith(UNSAFE_PREFIXES)


class UnsafeVariableNameError(AwsSecretsError, ValueError):
    """Entries whose variable would change how a shell, loader or interpreter runs (exit 2, nothing printed).

    Example::

        try:
            variables(manifest)
        except UnsafeVariableNameError as e:
            print(e.names)  # {"BASH_ENV": "parameters[0] 'bash_env'"}
    """

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        shown = "; ".join(f"{var} (from {who})" for var, who in sorted(names.items()))
        super().__init__(
            "export",
            f"refusing to export variables that change how shells, loaders or interpreters run: {shown}",
            "rename the entries, use --prefix, or pass --allow-name NAME for each one you mean to set",
        )


class ExportCollisionError(AwsSecretsError, ValueError):
    """Two or more entries map to the same environment variable name.

    Example::

        try:
            variables(manifest)
        except ExportCollisionError as e:
            print(e.collisions)  # {"DB_PASS": ["parameters[0] 'db-pass'", "secrets[1] 'db/pass'"]}
    """

    def __init__(self, collisions: dict[str, list[str]]) -> None:
        self.collisions = collisions
        shown = "; ".join(f"{var}: {', '.join(who)}" for var, who in sorted(collisions.items()))
        super().__init__("export", f"entries map to the same variable name: {shown}", "rename one of them")


def variable_name(name: str, prefix: str = "") -> str:
    """The environment variable for an entry name.

    >>> variable_name("/db/pass-word", prefix="app_")
    'APP_DB_PASS_WORD'
    """
    var = _NOT_IDENT.sub("_", prefix + name.strip("/")).upper()
    if not var or var[0].isdigit():
        var = "_" + var
    return var


def variables(m: Manifest, prefix: str = "", allow_names: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``(NAME, value)`` pairs in file order for a *decrypted* manifest; raises on collisions and on unsafe
    names (:func:`is_unsafe_name`) not in ``allow_names`` (compared case-insensitively)."""
    if prefix and not _IDENT.match(prefix.rstrip("_") + "_"):
        raise ValueError(f"prefix {prefix!r} must be letters, digits and '_', not starting with a digit")
    entries: list[tuple[str, str, str]] = []
    for i, p in enumerate(m.parameters):
        if p.encrypted:
            raise ValueError(f"parameters[{i}] {p.name!r} is still encrypted")
        entries.append((variable_name(p.name, prefix), f"parameters[{i}] {p.name!r}", p.text()))
    for i, s in enumerate(m.secrets):
        if s.encrypted:
            raise ValueError(f"secrets[{i}] {s.name!r} is still encrypted")
        value = s.value.get_secret_value()
        entries.append((variable_name(s.name, prefix), f"secrets[{i}] {s.name!r}", value))
    allowed = {n.upper() for n in allow_names}
    unsafe = {
        var: label
        for var, label, _ in entries
        if (not _IDENT.match(var) or is_unsafe_name(var)) and var.upper() not in allowed
    }
    if unsafe:
        raise UnsafeVariableNameError(unsafe)
    seen: dict[str, list[str]] = {}
    for var, label, _ in entries:
        seen.setdefault(var, []).append(label)
    collisions = {var: labels for var, labels in seen.items() if len(labels) > 1}
    if collisions:
        raise ExportCollisionError(collisions)
    return [(var, value) for var, _, value in entries]


def shell_quote(value: str) -> str:
    """POSIX single-quoting: nothing inside is expanded; ``'`` becomes ``'\\''``.

    A NUL cannot be held by a shell variable at all, so it is refused rather than silently cut short.
    """
    if "\x00" in value:
        raise ValueError("a value holds a NUL character, which no environment variable can hold")
    return "'" + value.replace("'", "'\\''") + "'"


def dotenv_quote(value: str) -> str:
    """The same single-quoting as :func:`shell_quote`: a sourced ``.env`` file expands nothing."""
    return shell_quote(value)


def render(pairs: Sequence[tuple[str, str]], fmt: Format = "shell") -> str:
    """The text to print for ``pairs`` in ``fmt`` (ends with a newline when not empty)."""
    if fmt == "json":
        return json.dumps(dict(pairs), indent=2, ensure_ascii=False) + "\n"
    for var, value in pairs:
        if "\x00" in value:
            raise ValueError(
                f"{var}: the value holds a NUL character, which no environment variable can hold"
            )
    if fmt == "dotenv":
        lines = [f"{var}={dotenv_quote(value)}" for var, value in pairs]
    else:
        lines = [f"export {var}={shell_quote(value)}" for var, value in pairs]
    return "".join(line + "\n" for line in lines)
