"""The sensitive strings of one task: what log redaction, the leak guard and exception scrubbing look for.

Built once per task (:func:`SensitiveSet.build`) from the values resolved for it. For every value the set
holds

* the value, and the value stripped;
* each string leaf of the value when it is a JSON object or list (``{"password": "..."}`` -> the password)
  that the task's :class:`~flytekitplugins_awssecrets.leaves.LeafPolicy` calls sensitive (credentials and
  generated-looking strings, not ``host`` or ``engine``; every leaf of a value chosen by a JSON key), and
  each line of a multi-line value (a PEM key logged one line at a time);

and, for each of those, its common encodings: base64 (standard and URL-safe, at every byte alignment, so a
value inside a larger encoded blob is found too), percent-encoding (``quote``, ``quote_plus``), JSON and
``repr`` escaping, and hex (lower and upper case). Strings shorter than :data:`MIN_LEN` characters are left
out: they would match ordinary text.

Example::

    sens = SensitiveSet.build([("arn:...:secret:db", value)])
    sens.redact(f"password={value}")       # -> "password=[REDACTED]"
    sens.find(b"..." )                      # -> ["arn:...:secret:db"] when the bytes hold a form of it
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any
from urllib.parse import quote, quote_plus

from flytekitplugins_awssecrets.leaves import LeafPolicy

__all__ = ["SensitiveSet", "MIN_LEN", "MARKER", "scrub_value", "scrub_exception"]

MARKER = "[REDACTED]"
MIN_LEN = 4
_MIN_B64 = 8
_MAX_JSON_LEAVES = 10_000
_MAX_DEPTH = 64
_PEM_ARMOR = re.compile(r"-----(BEGIN|END) [A-Z0-9 ]+-----$")


def _json_parts(text: str) -> tuple[list[tuple[tuple[str, ...], str]], set[str]]:
    """String leaves (each with the object keys on its path, outermost first) and object keys of ``text``
    when it is a JSON object or list (bounded; malformed input gives none)."""
    if not text.lstrip().startswith(("{", "[")):
        return [], set()
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return [], set()
    out: list[tuple[tuple[str, ...], str]] = []
    keys: set[str] = set()
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(doc, 0, ())]
    while stack and len(out) + len(keys) < _MAX_JSON_LEAVES:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            out.append((path, node))
        elif depth < _MAX_DEPTH and isinstance(node, dict):
            keys.update(str(k) for k in node)
            stack.extend((v, depth + 1, (*path, str(k))) for k, v in node.items())
        elif depth < _MAX_DEPTH and isinstance(node, list):
            stack.extend((v, depth + 1, path) for v in node)
    return out, keys


def _json_leaves(text: str, policy: LeafPolicy | None = None) -> list[str]:
    """The string leaves of ``text``: all of them, or those ``policy`` calls sensitive (see :mod:`leaves`)."""
    return [leaf for path, leaf in _json_parts(text)[0] if policy is None or policy.is_sensitive(path, leaf)]


def _json_keys(value: str | bytes) -> set[str]:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return set()
    return _json_parts(value)[1]


def _bases(value: str | bytes, policy: LeafPolicy | None = None) -> set[bytes]:
    """The raw forms (UTF-8 bytes) to look for: the value, stripped, its JSON leaves (those ``policy`` calls
    sensitive; all without one) and its lines."""
    if isinstance(value, bytes):
        raw = value
        try:
            text: str | None = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    else:
        raw, text = value.encode("utf-8", "surrogatepass"), value
    out = {raw, raw.strip()}
    if text is not None:
        parts: list[str] = []
        for part in (text, *_json_leaves(text, policy)):
            parts.append(part)
            if "\n" in part or "\r" in part:
                # A PEM key logged one line at a time; its armor lines are public and the same in every key.
                parts += [ln for ln in part.splitlines() if not _PEM_ARMOR.match(ln.strip())]
        for p in parts:
            out.add(p.encode("utf-8", "surrogatepass"))
            out.add(p.strip().encode("utf-8", "surrogatepass"))
    return {b for b in out if len(b) >= MIN_LEN}


def _encodings(raw: bytes) -> set[bytes]:
    out = {raw, raw.hex().encode(), raw.hex().upper().encode()}
    for offset in range(3):
        part = raw[offset:]
        full = (len(part) // 3) * 3
        if full:
            enc = base64.b64encode(part[:full])
            if len(enc) >= _MIN_B64:
                out.add(enc)
                out.add(enc.translate(bytes.maketrans(b"+/", b"-_")))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        for form in (
            quote(text, safe=""),
            quote(text),
            quote_plus(text, safe=""),
            quote_plus(text),
            json.dumps(text)[1:-1],
            json.dumps(text, ensure_ascii=False)[1:-1],
            repr(text)[1:-1],
            ascii(text)[1:-1],
        ):
            out.add(form.encode("utf-8", "surrogatepass"))
    return {b for b in out if len(b) >= MIN_LEN}


class SensitiveSet:
    """Every form of a task's resolved values that must not leave the task, each with its reference.

    The repr shows only how many patterns it holds.
    """

    def __init__(self, pairs: Iterable[tuple[str, bytes]], key_names: Iterable[str] = ()) -> None:
        #: Object keys of the resolved JSON values: not secret enough to redact everywhere ("password"), but
        #: never shown in the plugin's own messages, where a key can be a token (a map of tokens to owners).
        self.key_names = frozenset(key_names)
        unique = dict.fromkeys(pairs)
        self._pairs: list[tuple[str, bytes]] = sorted(unique, key=lambda p: len(p[1]), reverse=True)
        texts: dict[str, None] = {}
        for _, b in self._pairs:
            try:
                texts[b.decode("utf-8")] = None
            except UnicodeDecodeError:
                texts[b.decode("latin-1")] = None
        self.texts: list[str] = sorted(texts, key=len, reverse=True)

    @classmethod
    def build(
        cls,
        values: Sequence[tuple[str, str | bytes]],
        policy: LeafPolicy | None = None,
        whole: Collection[str] = (),
    ) -> SensitiveSet:
        """The set for ``(reference, value)`` pairs.

        ``policy`` chooses the JSON leaves that are sensitive (:mod:`leaves`; every leaf without one); the
        values of the references in ``whole`` (requests with a JSON key) keep every leaf.
        """
        keys = {k for _, v in values for k in _json_keys(v)}
        return cls(
            (
                (ref, n)
                for ref, v in values
                for base in _bases(v, None if ref in whole else policy)
                for n in _encodings(base)
            ),
            keys,
        )

    @classmethod
    def union(cls, sets: Iterable[SensitiveSet]) -> SensitiveSet:
        """One set holding the patterns of ``sets`` (nested tasks)."""
        sets = list(sets)
        return cls((pair for s in sets for pair in s._pairs), (k for s in sets for k in s.key_names))

    def absorb(self, other: SensitiveSet) -> None:
        """Add ``other``'s patterns to this set in place (a secret refreshed while its task runs: the log
        redaction and the leak guard that hold this set then know the new value too, and keep the old)."""
        merged = SensitiveSet.union([self, other])
        # Whole attributes are swapped, so a reader in another thread sees the old or the new lists.
        self.key_names = merged.key_names
        self._pairs = merged._pairs
        self.texts = merged.texts

    @property
    def references(self) -> list[str]:
        """The references whose values this set holds, each once."""
        return list(dict.fromkeys(ref for ref, _ in self._pairs))

    def __repr__(self) -> str:
        return f"SensitiveSet({len(self._pairs)} patterns)"

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def find(self, data: bytes) -> list[str]:
        """References (in order of first hit, each once) of the values some form of which is in ``data``."""
        hits: dict[str, None] = {}
        for ref, n in self._pairs:
            if ref not in hits and n in data:
                hits[ref] = None
        return list(hits)

    def contains(self, text: str) -> bool:
        return any(t in text for t in self.texts)

    def hide_keys(self, path: str) -> str:
        """An output path (``o0['k'][0]``) with the resolved values' JSON keys as ``[<key>]``, and redacted."""
        for k in self.key_names:
            path = path.replace(f"[{k!r}]", "[<key>]")
        return self.redact(path)

    def redact(self, text: str) -> str:
        """``text`` with every sensitive string replaced by ``[REDACTED]`` (longest first)."""
        for t in self.texts:
            if t in text:
                text = text.replace(t, MARKER)
        return text


def _safe_repr(obj: Any) -> str:
    try:
        return repr(obj) + " " + str(obj)
    except Exception:  # noqa: BLE001 - an object that cannot describe itself cannot leak through that either
        return ""


def scrub_value(obj: Any, sens: SensitiveSet, depth: int = 0) -> Any:
    """A copy of ``obj`` without sensitive strings: text is redacted, containers are rebuilt, and any other
    object whose ``repr``/``str`` shows a sensitive string is replaced by its redacted ``repr``."""
    if isinstance(obj, str):
        return sens.redact(obj)
    if isinstance(obj, bytes | bytearray):
        text = bytes(obj).decode("utf-8", "surrogateescape")
        red = sens.redact(text)
        return obj if red == text else red.encode("utf-8", "surrogateescape")
    if obj is None or isinstance(obj, bool | int | float | complex):
        return obj
    if depth >= _MAX_DEPTH:
        return MARKER if sens.contains(_safe_repr(obj)) else obj
    if isinstance(obj, dict):
        return {scrub_value(k, sens, depth + 1): scrub_value(v, sens, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        items = [scrub_value(v, sens, depth + 1) for v in obj]
        if isinstance(obj, list):
            return items
        return type(obj)(items) if type(obj) in (tuple, set, frozenset) else tuple(items)
    if isinstance(obj, BaseException):
        scrub_exception(obj, sens)
        return obj
    text = _safe_repr(obj)
    return sens.redact(repr(obj)) if sens.contains(text) else obj


# Attributes of built-in exceptions that their str() uses but that are not in ``args`` or ``__dict__``.
_BUILTIN_TEXT_ATTRS = ("filename", "filename2", "strerror", "msg", "text", "reason", "object", "name", "path")


def scrub_exception(exc: BaseException, sens: SensitiveSet) -> None:
    """Remove sensitive strings from ``exc`` in place, and from every exception it links to.

    Scrubbed: ``args``, ``__notes__``, string (and container) attributes, the text attributes of built-in
    exceptions (``OSError.filename``, ``UnicodeError.object``...), and the same for ``__cause__``,
    ``__context__``, the members of an exception group and flytekit's wrapped ``value``. The type and the
    traceback are kept, so the error still says what failed and where. If ``str(exc)`` still shows a
    sensitive string (a custom ``__str__``), the instance is given a subclass of its own type whose
    ``__str__`` and ``__repr__`` return the redacted text.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        _scrub_one(e, sens)
        linked = [e.__cause__, e.__context__, getattr(e, "value", None)]
        linked += list(getattr(e, "exceptions", ()) or ())
        todo.extend(x for x in linked if isinstance(x, BaseException))


def _scrub_one(e: BaseException, sens: SensitiveSet) -> None:
    notes = getattr(e, "__notes__", None)
    # Some exception types refuse new args or attributes; the fallback at the end handles them.
    with contextlib.suppress(Exception):
        e.args = tuple(scrub_value(a, sens) for a in e.args)
    if isinstance(notes, list):
        e.__notes__ = [scrub_value(n, sens) for n in notes]  # type: ignore[attr-defined]
    for name, value in list(getattr(e, "__dict__", {}).items()):
        if name.startswith("__") or isinstance(value, BaseException):
            continue
        with contextlib.suppress(Exception):
            setattr(e, name, scrub_value(value, sens))
    for name in _BUILTIN_TEXT_ATTRS:
        if name in getattr(e, "__dict__", {}):
            continue
        value = getattr(e, name, None)
        if isinstance(value, str | bytes):
            new = scrub_value(value, sens)
            if new != value:
                with contextlib.suppress(Exception):
                    setattr(e, name, new)
    text = _safe_repr(e)
    if sens.contains(text):
        _override_text(e, sens)


def _override_text(e: BaseException, sens: SensitiveSet) -> None:
    """Last resort for an exception whose own ``__str__`` shows a value: same type name, redacted text."""
    try:
        message = sens.redact(str(e))
    except Exception:  # noqa: BLE001
        message = MARKER
    try:
        shown = sens.redact(repr(e))
    except Exception:  # noqa: BLE001
        shown = f"{type(e).__name__}({MARKER!r})"
    cls = type(e)
    sub = type(
        cls.__name__,
        (cls,),
        {
            "__str__": lambda self: message,
            "__repr__": lambda self: shown,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        },
    )
    try:
        e.__class__ = sub
    except TypeError:
        # Built-in exception types cannot change class; their text comes from args, already redacted.
        e.args = (message,)
