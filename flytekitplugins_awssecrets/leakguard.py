"""The leak guard: a task's outputs must not contain a secret value resolved for it.

Seed 002 warns "do not return secret values from tasks, as this will expose secrets to the control plane".
The guard looks for each resolved value, as it is and base64-encoded (standard and URL-safe, at every
byte alignment, so a value inside a larger encoded blob is found too), in

1. the task's Python outputs before flytekit converts them (strings, bytes, dataclasses, pydantic models,
   dicts, lists, tuples, sets), so nothing has been uploaded yet; and
2. the serialised output literal map, as a second line for types the walk does not know.

A hit raises :class:`~flytekitplugins_awssecrets.errors.SecretLeakError` naming the reference and the output,
never the value. Values shorter than 4 characters are not guarded: they would match ordinary text.
"""

from __future__ import annotations

import base64
import contextvars
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["LeakScanner", "ACTIVE", "check_native_outputs"]

#: The scanner of the task running in this context (set by :mod:`runtime` around user code).
ACTIVE: contextvars.ContextVar[LeakScanner | None] = contextvars.ContextVar(
    "awssecrets_leak_guard", default=None
)

_MIN_LEN = 4
_MIN_B64 = 8
_MAX_DEPTH = 64


def _needles(value: str | bytes) -> list[bytes]:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    out: set[bytes] = set()
    for v in {raw, raw.strip()}:
        if len(v) < _MIN_LEN:
            continue
        out.add(v)
        for offset in range(3):
            part = v[offset:]
            full = (len(part) // 3) * 3
            if full == 0:
                continue
            enc = base64.b64encode(part[:full])
            if len(enc) >= _MIN_B64:
                out.add(enc)
                out.add(enc.translate(bytes.maketrans(b"+/", b"-_")))
    return sorted(out, key=len, reverse=True)


class LeakScanner:
    """Finds resolved values in outputs.

    Example::

        scanner = LeakScanner([("arn:...:secret:db", "s3cr3t-value")])
        scanner.scan_python({"o0": result})   # -> [("arn:...:secret:db", "o0.password")]
    """

    def __init__(self, values: Sequence[tuple[str, str | bytes]]) -> None:
        self._needles = [(ref, n) for ref, v in values for n in _needles(v)]

    def __repr__(self) -> str:
        return f"LeakScanner({len(self._needles)} patterns)"

    def __bool__(self) -> bool:
        return bool(self._needles)

    def scan_bytes(self, data: bytes, where: str) -> list[tuple[str, str]]:
        hits: dict[str, str] = {}
        for ref, n in self._needles:
            if ref not in hits and n in data:
                hits[ref] = where
        return list(hits.items())

    def scan_python(self, outputs: dict[str, Any]) -> list[tuple[str, str]]:
        hits: dict[str, str] = {}
        for name, obj in outputs.items():
            for path, blob in _leaves(obj, name, 0, set()):
                for ref, where in self.scan_bytes(blob, path):
                    hits.setdefault(ref, where)
        return list(hits.items())


def _leaves(obj: Any, path: str, depth: int, seen: set[int]) -> Iterator[tuple[str, bytes]]:
    if depth > _MAX_DEPTH:
        return
    if isinstance(obj, str):
        yield path, obj.encode("utf-8", "surrogatepass")
        return
    if isinstance(obj, bytes | bytearray | memoryview):
        yield path, bytes(obj)
        return
    if obj is None or isinstance(obj, bool | int | float | complex):
        return
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(k, f"{path}.<key>", depth + 1, seen)
            yield from _leaves(
                v, f"{path}[{k!r}]" if isinstance(k, str | int) else f"{path}[...]", depth + 1, seen
            )
        return
    if isinstance(obj, list | tuple | set | frozenset):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}[{i}]", depth + 1, seen)
        return
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _leaves(getattr(obj, f.name, None), f"{path}.{f.name}", depth + 1, seen)
        return
    dump = getattr(obj, "model_dump", None)
    if callable(dump) and not isinstance(obj, type):
        try:
            data = dump()
        except Exception:  # noqa: BLE001 - an odd model is still checked as serialised literals
            return
        yield from _leaves(data, path, depth + 1, seen)
        return
    fields = getattr(obj, "__dict__", None)
    if isinstance(fields, dict):
        yield from _leaves(fields, path, depth + 1, seen)


def check_native_outputs(task: Any, native_outputs: Any) -> None:
    """Raise :class:`SecretLeakError` if the running task's Python outputs hold one of its secrets."""
    scanner = ACTIVE.get()
    if not scanner:
        return
    names = list(getattr(getattr(task, "python_interface", None), "outputs", {}) or {})
    if len(names) > 1 and isinstance(native_outputs, tuple):
        outputs = dict(zip(names, native_outputs, strict=False))
    else:
        outputs = {names[0] if names else "o0": native_outputs}
    hits = scanner.scan_python(outputs)
    if hits:
        from flytekitplugins_awssecrets.errors import SecretLeakError

        ref, where = hits[0]
        raise SecretLeakError(ref, f"{where!r}")
