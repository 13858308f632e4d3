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
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Literal

from flytekitplugins_awssecrets.errors import AwsSecretsError
from flytekitplugins_awssecrets.manifest.model import Manifest

__all__ = ["Format", "ExportCollisionError", "variable_name", "variables", "render"]

Format = Literal["shell", "dotenv", "json"]

_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def variables(m: Manifest, prefix: str = "") -> list[tuple[str, str]]:
    """``(NAME, value)`` pairs in file order for a *decrypted* manifest; raises on collisions."""
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
