"""Comparing what the file wants with what AWS holds: pure functions, no I/O, values never shown.

An :class:`Entry` is one parameter or secret, either as the file wants it (built by
:func:`desired_entries` from a *decrypted* manifest) or as read from AWS. :func:`compare` returns one
:class:`Change` per entry that differs. Tags are compared only when the file manages them (a ``tags:`` key at
the top, or on a secret); keys starting with ``aws:`` belong to AWS and are never removed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from flytekitplugins_awssecrets.manifest.model import Manifest, parameter_full_name, secret_full_name

__all__ = ["Kind", "Entry", "Change", "desired_entries", "compare", "same_key"]

Kind = Literal["parameter", "secret"]


class Entry(BaseModel):
    """One parameter or secret with everything we compare. ``value`` is masked in every repr.

    Example::

        Entry(kind="parameter", name="/apps/x/token", type="SecureString", value=SecretStr("..."))
    """

    model_config = ConfigDict(frozen=True)

    kind: Kind
    #: The AWS name (SSM: with the leading slash; Secrets Manager: without).
    name: str
    #: Where it is in the file, for messages: ``parameters[2] 'api_token'`` (empty for entries read from AWS).
    label: str = ""
    #: SSM type (String, SecureString, StringList); ``json`` or ``string`` for a secret.
    type: str
    value: SecretStr
    description: str = ""
    kms_key: str | None = None
    #: ``None`` means "not managed" (file) or "not read" (AWS).
    tags: dict[str, str] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)


class Change(BaseModel):
    """One difference between the file and AWS.

    ``action`` is ``add`` (missing in AWS), ``update`` (``fields`` says which: value, type, description,
    kmskey), ``tags`` (only tags differ) or ``remove`` (in AWS under the path, not in the file).

    Example::

        Change(kind="parameter", name="/apps/x/token", action="update", fields=["value"])
    """

    model_config = ConfigDict(frozen=True)

    kind: Kind
    name: str
    label: str = ""
    action: Literal["add", "update", "tags", "remove"]
    fields: list[str] = Field(default_factory=list)
    tags_set: dict[str, str] = Field(default_factory=dict)
    tags_removed: list[str] = Field(default_factory=list)

    def describe(self) -> str:
        """One line, values masked: ``~ parameter /apps/x/token: value, tags +team -old``."""
        sign = {"add": "+", "update": "~", "tags": "~", "remove": "-"}[self.action]
        parts = list(self.fields)
        tag_bits = [f"+{k}" for k in sorted(self.tags_set)] + [f"-{k}" for k in sorted(self.tags_removed)]
        if tag_bits:
            parts.append("tags " + " ".join(tag_bits))
        what = {"add": "new", "remove": "not in the file"}.get(self.action, ", ".join(parts))
        if self.action == "add" and tag_bits:
            what += ", " + parts[-1]
        return f"{sign} {self.kind} {self.name}: {what}"


def desired_entries(m: Manifest) -> list[Entry]:
    """The entries a *decrypted* manifest wants in AWS (raises if a value is still encrypted)."""
    out: list[Entry] = []
    for i, p in enumerate(m.parameters):
        if p.encrypted:
            raise ValueError(f"parameters[{i}] {p.name!r} is still encrypted; decrypt the manifest first")
        out.append(
            Entry(
                kind="parameter",
                name=parameter_full_name(m.path, p.name),
                label=f"parameters[{i}] {p.name!r}",
                type=p.ssm_type,
                value=SecretStr(p.text()),
                description=p.description,
                kms_key=m.kmskey if p.secure else None,
                tags=dict(m.tags) if m.tags is not None else None,
            )
        )
    for i, s in enumerate(m.secrets):
        if s.encrypted:
            raise ValueError(f"secrets[{i}] {s.name!r} is still encrypted; decrypt the manifest first")
        out.append(
            Entry(
                kind="secret",
                name=secret_full_name(m.path, s.name),
                label=f"secrets[{i}] {s.name!r}",
                type="json" if s.is_json else "string",
                value=s.value,
                description=s.description,
                kms_key=s.kmskey,
                tags=m.secret_tags(s),
            )
        )
    return out


def _key_form(key: str) -> str:
    """``alias/x`` or ``key/<id>`` from any of the forms KMS accepts (id, alias, their ARNs)."""
    if key.startswith("arn:"):
        key = key.split(":", 5)[-1]
    if key.startswith(("alias/", "key/")):
        return key
    return "key/" + key


def same_key(wanted: str | None, actual: str | None) -> bool:
    """True unless both keys are known, of the same form (alias or key id), and differ.

    AWS may report an alias as a key id; comparing an alias with an id would then rewrite the entry on every
    sync, so a mixed pair counts as the same.
    """
    if wanted is None or actual is None:
        return True
    a, b = _key_form(wanted), _key_form(actual)
    if a.split("/", 1)[0] != b.split("/", 1)[0]:
        return True
    return a == b


def _same_value(want: Entry, have: Entry) -> bool:
    w, h = want.value.get_secret_value(), have.value.get_secret_value()
    if w == h:
        return True
    if want.type == "json":
        try:
            return bool(json.loads(w) == json.loads(h))
        except (ValueError, RecursionError):
            return False
    return False


def compare(
    desired: Iterable[Entry], remote: Mapping[tuple[str, str], Entry], prune_scope: bool = True
) -> list[Change]:
    """Changes that would make AWS match the file, in file order, then removals sorted by name.

    ``remote`` holds what was read from AWS. With ``prune_scope`` every remote entry the file does not list
    becomes a ``remove`` change (the caller read the whole path).
    """
    changes: list[Change] = []
    wanted_keys: set[tuple[str, str]] = set()
    for want in desired:
        wanted_keys.add(want.key)
        have = remote.get(want.key)
        tags_set, tags_removed = _tag_delta(want.tags, None if have is None else have.tags)
        if have is None:
            changes.append(
                Change(kind=want.kind, name=want.name, label=want.label, action="add", tags_set=tags_set)
            )
            continue
        fields: list[str] = []
        if not _same_value(want, have):
            fields.append("value")
        if want.kind == "parameter" and want.type != have.type:
            fields.append("type")
        if want.description != have.description:
            fields.append("description")
        if not same_key(want.kms_key, have.kms_key):
            fields.append("kmskey")
        if fields or tags_set or tags_removed:
            changes.append(
                Change(
                    kind=want.kind,
                    name=want.name,
                    label=want.label,
                    action="update" if fields else "tags",
                    fields=fields,
                    tags_set=tags_set,
                    tags_removed=tags_removed,
                )
            )
    if prune_scope:
        for key in sorted(k for k in remote if k not in wanted_keys):
            changes.append(Change(kind=remote[key].kind, name=remote[key].name, action="remove"))
    return changes


def _tag_delta(want: dict[str, str] | None, have: dict[str, str] | None) -> tuple[dict[str, str], list[str]]:
    if want is None:
        return {}, []
    have = have or {}
    tags_set = {k: v for k, v in want.items() if have.get(k) != v}
    removed = sorted(k for k in have if k not in want and not k.lower().startswith("aws:"))
    return tags_set, removed
