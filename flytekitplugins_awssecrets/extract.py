"""What is done to a fetched payload: JSON-key extraction and decoding. Pure functions, no I/O.

A JSON key is a dotted path into a JSON object: ``db.password`` reads ``{"db": {"password": ...}}``. A
segment made only of digits indexes a list (``hosts.0``). A key that itself contains a dot is written with a
backslash before the dot (``tls\\.crt``); ``\\\\`` is a literal backslash.

A string or number is returned as its text; an object or list as compact JSON; ``null`` is an error (a
secret that is null is almost always a mistake, and an empty string would hide it).
"""

from __future__ import annotations

import json
from typing import Any

from flytekitplugins_awssecrets.errors import JsonKeyNotFoundError, SecretNotJsonError

__all__ = ["split_json_path", "extract_json_key", "as_text"]


def split_json_path(path: str) -> list[str]:
    """Split a dotted path, honouring ``\\.`` (literal dot) and ``\\\\`` (literal backslash)."""
    parts: list[str] = []
    cur: list[str] = []
    it = iter(path)
    for ch in it:
        if ch == "\\":
            nxt = next(it, "")
            cur.append(nxt if nxt in (".", "\\") else "\\" + nxt)
        elif ch == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _load(reference: str, raw: str | bytes, json_key: str) -> Any:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretNotJsonError(reference, json_key, "is binary, not UTF-8 JSON") from None
    try:
        return json.loads(raw)
    except ValueError:
        # Never chain: JSONDecodeError.doc is the whole secret.
        raise SecretNotJsonError(reference, json_key, "is not valid JSON") from None


def _keys_of(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [str(k) for k in node]
    if isinstance(node, list):
        return [str(i) for i in range(len(node))]
    return []


def extract_json_key(reference: str, raw: str | bytes, json_key: str) -> str:
    """Return the value at ``json_key`` in the JSON document ``raw`` as text.

    Errors name the reference and key and list the available keys at the level where the path broke,
    never a value.
    """
    doc = _load(reference, raw, json_key)
    if not isinstance(doc, dict):
        raise SecretNotJsonError(reference, json_key, f"is JSON but not an object (a {type(doc).__name__})")
    node: Any = doc
    for i, seg in enumerate(split_json_path(json_key)):
        level_keys = _keys_of(node)
        if isinstance(node, dict) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and seg.isdigit() and int(seg) < len(node):
            node = node[int(seg)]
        else:
            available = level_keys if i else _keys_of(doc)
            raise JsonKeyNotFoundError(reference, json_key, available)
    if node is None:
        raise SecretNotJsonError(reference, json_key, "holds null at that key")
    return as_text(node)


def as_text(node: Any) -> str:
    """The text form of a JSON node: strings as they are, everything else as compact JSON."""
    if isinstance(node, str):
        return node
    return json.dumps(node, separators=(",", ":"), ensure_ascii=False)
