"""The leak guard: a task's outputs must not contain a secret value resolved for it.

Seed 002 warns "do not return secret values from tasks, as this will expose secrets to the control plane".
The guard looks for the task's sensitive strings (:mod:`sensitive`: each value, the JSON leaves of it that
are credentials -- :mod:`leaves` decides, so an RDS secret's host and database name may be returned --, its
lines, and their base64, percent, JSON/``repr``-escaped and hex forms) in

1. the task's Python outputs before flytekit converts them (strings, bytes, dataclasses, pydantic models,
   dicts, lists, tuples, sets, objects' attributes and slots), so nothing has been uploaded yet; and
2. the serialised output literal map, as a second line for types the walk does not know.

It fails closed where it cannot look: an output that flytekit would pickle (typed ``Any``, or as a class
without a type transformer) or nesting deeper than the walk goes raises
:class:`~flytekitplugins_awssecrets.errors.UninspectableOutputError`, unless the ``allow_opaque_outputs``
setting accepts it.

A hit raises :class:`~flytekitplugins_awssecrets.errors.SecretLeakError` naming the reference and the output,
never the value, and saying how to keep a description apart from the secret (a JSON key, or marking the
field's key descriptive). Values shorter than 4 characters are not guarded: they would match ordinary text.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from flytekitplugins_awssecrets.errors import AwsSecretsError
from flytekitplugins_awssecrets.sensitive import SensitiveSet

__all__ = ["LeakScanner", "ACTIVE", "Opaque", "check_outputs", "leak_in"]

#: The scanner of the task running in this context (set by an adapter around user code).
ACTIVE: contextvars.ContextVar[LeakScanner | None] = contextvars.ContextVar(
    "awssecrets_leak_guard", default=None
)

_MAX_DEPTH = 128


class Opaque(Exception):
    """Where the walk cannot look into an output, and why."""

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        self.why = why


class LeakScanner:
    """Finds resolved values in outputs.

    Example::

        scanner = LeakScanner([("arn:...:secret:db", "s3cr3t-value")])
        scanner.scan_python({"o0": result})   # -> [("arn:...:secret:db", "o0.password")]
    """

    def __init__(
        self,
        values: Sequence[tuple[str, str | bytes]] | SensitiveSet,
        *,
        allow_opaque: bool = False,
    ) -> None:
        self.sensitive = values if isinstance(values, SensitiveSet) else SensitiveSet.build(values)
        self.allow_opaque = allow_opaque
        refs = self.sensitive.references
        self.first_reference = refs[0] if refs else ""

    def __repr__(self) -> str:
        return f"LeakScanner({len(self.sensitive)} patterns)"

    def __bool__(self) -> bool:
        return bool(self.sensitive)

    def scan_bytes(self, data: bytes, where: str) -> list[tuple[str, str]]:
        return [(ref, where) for ref in self.sensitive.find(data)]

    def scan_python(self, outputs: dict[str, Any]) -> list[tuple[str, str]]:
        """``(reference, where)`` for each value found; raises :class:`Opaque` where the walk cannot go."""
        hits: dict[str, str] = {}
        for name, obj in outputs.items():
            try:
                for path, blob in _leaves(obj, name, 0, set()):
                    for ref, where in self.scan_bytes(blob, path):
                        hits.setdefault(ref, where)
            except Opaque:
                if not self.allow_opaque:
                    raise
        return list(hits.items())


def _slot_names(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    return [n for n in names if n not in ("__dict__", "__weakref__")]


def _leaves(obj: Any, path: str, depth: int, seen: set[int]) -> Iterator[tuple[str, bytes]]:
    if depth > _MAX_DEPTH:
        raise Opaque(path, f"nested deeper than {_MAX_DEPTH} levels")
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
    for name in _slot_names(type(obj)):
        yield from _leaves(getattr(obj, name, None), f"{path}.{name}", depth + 1, seen)


def check_outputs(
    outputs: dict[str, Any],
    opaque: Callable[[], Sequence[str]] | None = None,
    opaque_why: str = "the SDK would store it opaquely",
) -> None:
    """Raise :class:`SecretLeakError` if the running task's outputs (name -> Python value) hold one of its
    secrets; see :func:`leak_in`. Nothing to do when no scanner is active in this context."""
    scanner = ACTIVE.get()
    if scanner:
        error = leak_in(scanner, outputs, opaque, opaque_why)
        if error is not None:
            raise error


def leak_in(
    scanner: LeakScanner,
    outputs: dict[str, Any],
    opaque: Callable[[], Sequence[str]] | None = None,
    opaque_why: str = "the SDK would store it opaquely",
) -> AwsSecretsError | None:
    """The error for outputs (name -> Python value) holding a secret, or None. ``opaque`` (asked only when
    needed) names the outputs the SDK would store where the guard cannot look (e.g. pickled): they fail
    closed with :class:`UninspectableOutputError` saying ``opaque_why``, unless the ``allow_opaque_outputs``
    setting accepts them. Where the error names an output's path, dict keys that are secrets are hidden."""
    from flytekitplugins_awssecrets.errors import SecretLeakError, UninspectableOutputError

    if opaque is not None and not scanner.allow_opaque:
        names = opaque()
        if names:
            return UninspectableOutputError(scanner.first_reference, repr(names[0]), opaque_why)
    try:
        hits = scanner.scan_python(outputs)
    except Opaque as e:
        return UninspectableOutputError(
            scanner.first_reference, repr(scanner.sensitive.hide_keys(e.where)), e.why
        )
    if hits:
        ref, where = hits[0]
        # The path names dict keys, and a key can be a secret itself.
        return SecretLeakError(ref, repr(scanner.sensitive.hide_keys(where)))
    return None
