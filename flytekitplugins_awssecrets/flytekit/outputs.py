"""A flytekit task's outputs for the leak guard: named as its interface names them, and those flytekit
would store as a pickle (which the guard cannot look into once serialised) singled out."""

from __future__ import annotations

from typing import Any

from flytekitplugins_awssecrets.leakguard import check_outputs

__all__ = ["check_native_outputs"]


def check_native_outputs(task: Any, native_outputs: Any) -> None:
    """Raise :class:`SecretLeakError` if the running task's Python outputs hold one of its secrets."""
    names = list(getattr(getattr(task, "python_interface", None), "outputs", {}) or {})
    if len(names) > 1 and isinstance(native_outputs, tuple):
        outputs = dict(zip(names, native_outputs, strict=False))
    else:
        outputs = {names[0] if names else "o0": native_outputs}
    check_outputs(
        outputs, lambda: _opaque_outputs(task, list(outputs)), "flytekit would store it as a pickle"
    )


def _pickled(literal_type: Any) -> bool:
    """Whether flytekit stores a value of this literal type (or a part of it) as a pickle."""
    if literal_type is None:
        return False
    blob = getattr(literal_type, "blob", None)
    if blob is not None and getattr(blob, "format", "") == "PythonPickle":
        return True
    if _pickled(getattr(literal_type, "collection_type", None)):
        return True
    if _pickled(getattr(literal_type, "map_value_type", None)):
        return True
    union = getattr(literal_type, "union_type", None)
    return union is not None and any(_pickled(v) for v in union.variants)


def _opaque_outputs(task: Any, names: list[str]) -> list[str]:
    types = getattr(getattr(task, "python_interface", None), "outputs", {}) or {}
    out = []
    for name in names:
        t = types.get(name)
        if t is None:
            continue
        try:
            from flytekit.core.type_engine import TypeEngine

            lt = TypeEngine.to_literal_type(t)
        except Exception:  # noqa: BLE001, S112 - flytekit will report the type itself
            continue
        if _pickled(lt):
            out.append(name)
    return out
