"""Writing ``encrypt`` and ``refresh`` results into the author's own file, changing only what they change.

The manifest is the file people review in pull requests: re-emitting it from data (what psyml does) drops
every comment, re-quotes scalars, re-indents lists and lower-cases every type. Here the original text is
kept and only the spans that must change are replaced:

* the value of each entry whose value changed (a parameter's ``value``; a secret's ``value``), with the
  ``type`` of an encrypted ``SecureString`` parameter written ``securestring`` (the lowercase spelling is what
  marks a value as ciphertext, for psyml and for us);
* ``encrypted: true`` (and ``json: true`` for a JSON secret) added under a newly encrypted secret;
* ``encrypted_with`` replaced, or added after ``kmskey`` / ``region``.

ruamel.yaml's composer finds each node's exact start and end in the text; nothing is re-emitted. The
result is loaded again with the manifest loader and must equal the manifest it stands for, or nothing is
written (:class:`RoundTripError`). Reading manifests stays with PyYAML (:mod:`.yamlio`).

Example::

    text = open("m.yml").read()
    new_text = apply_changes(text, old_manifest, encrypted_manifest)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flytekitplugins_awssecrets.manifest.model import Manifest

__all__ = ["apply_changes", "RoundTripError"]


class RoundTripError(ValueError):
    """The file's layout could not be kept (an anchor, a tag, a key written twice...): names the entry."""


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


def _compose(text: str) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="rt").compose(text)


def _key(node: Any, key: str) -> tuple[Any, Any] | None:
    """``(key node, value node)`` of ``key`` in a mapping node."""
    if getattr(node, "id", "") != "mapping":
        return None
    for k, v in node.value:
        if getattr(k, "id", "") == "scalar" and k.value == key:
            return k, v
    return None


def _scalar_text(value: str, like: Any) -> str:
    """``value`` written as the node it replaces was: the same quotes, else plain."""
    style = getattr(like, "style", None) if getattr(like, "id", "") == "scalar" else None
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"':
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _replace_node(text: str, node: Any, value: str) -> _Edit:
    """Replace a value node (scalar, block scalar, flow or block collection) by a one-line scalar."""
    start, end = node.start_mark.index, node.end_mark.index
    new = _scalar_text(value, node)
    if "\n" in text[start:end]:
        # A block scalar or block mapping ends at the start of the next key; keep that line's indentation.
        line_start = text.rfind("\n", 0, end) + 1
        tail = text[line_start:end]
        new += "\n" + (tail if tail.strip() == "" else "")
    return _Edit(start, end, new)


def _insert_after(text: str, node: Any, key_column: int, lines: list[str]) -> _Edit:
    """Insert ``key: value`` lines, at ``key_column``, after the line where ``node`` ends."""
    end = node.end_mark.index
    if "\n" in text[node.start_mark.index : end] and text[text.rfind("\n", 0, end) + 1 : end].strip() == "":
        at = text.rfind("\n", 0, end) + 1  # a multi-line node already ends at the start of a line
    else:
        nl = text.find("\n", end)
        at = len(text) if nl < 0 else nl + 1
    prefix = "" if at == 0 or text[at - 1 : at] == "\n" else "\n"
    return _Edit(at, at, prefix + "".join(" " * key_column + line + "\n" for line in lines))


def apply_changes(text: str, old: Manifest, new: Manifest) -> str:
    """``text`` (the file ``old`` was loaded from) with the changes that turn ``old`` into ``new``.

    Raises :class:`RoundTripError` when the edited text would not load as ``new``.
    """
    root = _compose(text)
    if getattr(root, "id", "") != "mapping":
        raise RoundTripError("the manifest is not a YAML mapping")
    edits: list[_Edit] = []

    params = _key(root, "parameters")
    p_nodes = list(params[1].value) if params and getattr(params[1], "id", "") == "sequence" else []
    for i, (a, b) in enumerate(zip(old.parameters, new.parameters, strict=True)):
        if a.text() == b.text() and a.type.lower() == b.type.lower():
            continue
        if i >= len(p_nodes):
            raise RoundTripError(f"parameters[{i}] {a.name!r}: not found in the file")
        value = _key(p_nodes[i], "value")
        type_ = _key(p_nodes[i], "type")
        if value is None or type_ is None:
            raise RoundTripError(f"parameters[{i}] {a.name!r}: no value or type in the file")
        if a.text() != b.text():
            edits.append(_replace_node(text, value[1], b.text()))
        if a.type != b.type:
            edits.append(_replace_node(text, type_[1], b.type))

    secrets = _key(root, "secrets")
    s_nodes = list(secrets[1].value) if secrets and getattr(secrets[1], "id", "") == "sequence" else []
    for i, (sa, sb) in enumerate(zip(old.secrets, new.secrets, strict=True)):
        if sa.value.get_secret_value() == sb.value.get_secret_value() and sa.encrypted == sb.encrypted:
            continue
        if i >= len(s_nodes):
            raise RoundTripError(f"secrets[{i}] {sa.name!r}: not found in the file")
        value = _key(s_nodes[i], "value")
        if value is None:
            raise RoundTripError(f"secrets[{i}] {sa.name!r}: no value in the file")
        edits.append(_replace_node(text, value[1], sb.value.get_secret_value()))
        added: list[str] = []
        for flag, wanted in (("encrypted", sb.encrypted), ("json", sb.is_json and sb.encrypted)):
            present = _key(s_nodes[i], flag)
            if present is not None:
                if wanted and str(present[1].value).lower() != "true":
                    edits.append(_replace_node(text, present[1], "true"))
            elif wanted:
                added.append(f"{flag}: true")
        if added:
            edits.append(_insert_after(text, value[1], value[0].start_mark.column, added))

    if old.encrypted_with != new.encrypted_with:
        current = _key(root, "encrypted_with")
        if current is not None and new.encrypted_with is not None:
            edits.append(_replace_node(text, current[1], new.encrypted_with))
        elif new.encrypted_with is not None:
            after = _key(root, "kmskey") or _key(root, "region") or _key(root, "path")
            if after is None:
                raise RoundTripError("no kmskey, region or path key to put encrypted_with after")
            edits.append(
                _insert_after(
                    text, after[1], after[0].start_mark.column, [f"encrypted_with: {new.encrypted_with}"]
                )
            )
        else:
            raise RoundTripError("removing encrypted_with is not an in-place edit")

    out = text
    for e in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        out = out[: e.start] + e.text + out[e.end :]
    _verify(out, new)
    return out


def _verify(text: str, want: Manifest) -> None:
    """The edited text must load as ``want``: same entries, values, types, flags and key."""
    from flytekitplugins_awssecrets.manifest import yamlio
    from flytekitplugins_awssecrets.manifest.model import parse_manifest

    got = parse_manifest(yamlio.load(text, "<edited manifest>"))
    same = (
        got.encrypted_with == want.encrypted_with
        and [(p.name, p.type.lower(), p.text()) for p in got.parameters]
        == [(p.name, p.type.lower(), p.text()) for p in want.parameters]
        and [(s.name, s.encrypted, s.is_json, s.value.get_secret_value()) for s in got.secrets]
        == [(s.name, s.encrypted, s.is_json, s.value.get_secret_value()) for s in want.secrets]
    )
    if not same:
        raise RoundTripError(
            "the edited file would not read back as the encrypted manifest; nothing was written "
            "(write it out in full with -o instead of -i, or simplify the file's YAML)"
        )
