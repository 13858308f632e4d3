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
    except RecursionError:
        raise SecretNotJsonError(reference, json_key, "is JSON nested too deeply to read") from None


def _kind(node: Any) -> str:
    if isinstance(node, dict):
        return f"an object with {len(node)} key{'s' if len(node) != 1 else ''}"
    if isinstance(node, list):
        return f"a list of {len(node)}"
    return f"a {type(node).__name__}, not an object"


def extract_json_key(reference: str, raw: str | bytes, json_key: str) -> str:
    """Return the value at ``json_key`` in the JSON document ``raw`` as text.

    Errors name the reference, the key and the segment where the path broke, and what is there (an object
    with 3 keys, a list of 2): never a value, and never the names of keys, which can themselves be secret
    (a map of tokens to owners).
    """
    doc = _load(reference, raw, json_key)
    if not isinstance(doc, dict):
        raise SecretNotJsonError(reference, json_key, f"is JSON but not an object (a {type(doc).__name__})")
    node: Any = doc
    segments = split_json_path(json_key)
    for i, seg in enumerate(segments):
        if isinstance(node, dict) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and seg.isdigit() and int(seg) < len(node):
            node = node[int(seg)]
        else:
            at = "the top level" if i == 0 else f"segment {i + 1} of {len(segments)}"
            raise JsonKeyNotFoundError(reference, json_key, at=at, found=_kind(node))
    if node is None:
        raise SecretNotJsonError(reference, json_key, "holds null at that key")
    try:
        return as_text(node)
    except RecursionError:
        raise SecretNotJsonError(reference, json_key, "is JSON nested too deeply to read") from None


def as_text(node: Any) -> str:
    """The text form of a JSON node: strings as they are, everything else as compact JSON."""
    if isinstance(node, str):
        return node
    return json.dumps(node, separators=(",", ":"), ensure_ascii=False)
