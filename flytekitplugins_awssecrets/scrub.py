"""Exceptions that leave a task without its secrets, whatever their type (issue 20, item 1).

:func:`~flytekitplugins_awssecrets.sensitive.scrub_exception` changes an exception in place: ``args``,
``__notes__``, attributes, and a class swap for a custom ``__str__``. That is not enough for types whose text
is computed elsewhere and whose class cannot be swapped: pydantic's ``ValidationError`` (Rust) prints the
input it was given, truncated (``input_value='p4ss...rd'``), so neither the value nor any of its encodings is
in the text, and no attribute of the Python object holds it. :func:`scrubbed_exception` walks the whole
graph (``__cause__``, ``__context__``, exception-group members, exceptions held in attributes such as
flytekit's ``FlyteUserRuntimeException._exc_value``), scrubs each one in place, and where an exception still
shows a secret (or is a pydantic error built from one), puts a stand-in in its place:

* its class has the original's name and module, and derives from
  :class:`~flytekitplugins_awssecrets.errors.ScrubbedError` and the original's nearest built-in base
  (``ValueError`` for a ``ValidationError``), so ``except ValueError`` still catches it;
* its message is the original's, redacted (for pydantic: the error list without inputs);
* it keeps the traceback, the (scrubbed) chain and the notes; ``original_type`` names the original class.

A parent whose text was built from a replaced child (flytekit's wrapper holds ``str(child)``) gets the
stand-in's text instead. The original is never raised again.

Example::

    err = scrubbed_exception(caught, sensitive)   # caught itself, scrubbed, or its stand-in
    raise err
"""

from __future__ import annotations

import contextlib
from typing import Any

from flytekitplugins_awssecrets.errors import ScrubbedError
from flytekitplugins_awssecrets.sensitive import MARKER, SensitiveSet, _scrub_one, scrub_value

__all__ = ["scrubbed_exception"]

_MAX_NODES = 1000


def _text(e: BaseException) -> str:
    try:
        return str(e)
    except Exception:  # noqa: BLE001 - a type that cannot print itself shows nothing
        return ""


def _shows(e: BaseException, sens: SensitiveSet) -> bool:
    """Whether ``e``'s own text (str, repr, and pydantic inputs) holds a sensitive string."""
    for fn in (str, repr):
        try:
            if sens.contains(fn(e)):
                return True
        except Exception:  # noqa: BLE001, S112 - text it cannot produce cannot leak either
            continue
    return _pydantic_inputs_sensitive(e, sens)


def _is_pydantic(e: BaseException) -> bool:
    return type(e).__module__.startswith(("pydantic", "pydantic_core")) and callable(
        getattr(e, "errors", None)
    )


def _pydantic_inputs_sensitive(e: BaseException, sens: SensitiveSet) -> bool:
    """pydantic truncates long inputs in its text: judge by the inputs themselves."""
    if not _is_pydantic(e):
        return False
    try:
        errors = e.errors()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not the pydantic error we know: judge it by its text only
        return False
    return any(scrub_value(err.get("input"), sens) != err.get("input") for err in errors)


def _pydantic_message(e: BaseException, sens: SensitiveSet) -> str:
    """pydantic's text without the inputs (and without ``ctx``, which can hold them)."""
    errors = e.errors(include_input=False, include_url=False, include_context=False)  # type: ignore[attr-defined]
    n = len(errors)
    lines = [f"{n} validation error{'s' if n != 1 else ''} for {getattr(e, 'title', '?')}"]
    for err in errors:
        lines.append(".".join(str(p) for p in err.get("loc", ())) or "(model)")
        lines.append(f"  {err.get('msg', '')} [type={err.get('type', '?')}, input omitted: it held a secret]")
    return sens.redact("\n".join(lines))


def _builtin_base(cls: type[BaseException]) -> type[Exception]:
    for klass in cls.__mro__:
        if klass.__module__ == "builtins" and issubclass(klass, Exception):
            return klass
    return Exception


def _stand_in(
    e: BaseException, sens: SensitiveSet, members: list[BaseException] | None = None
) -> BaseException:
    """A :class:`ScrubbedError` named like ``e`` (a group keeps its ``members``, given or its own)."""
    cls = type(e)
    ns: dict[str, Any] = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "original_type": f"{cls.__module__}.{cls.__qualname__}",
    }
    new: BaseException
    if isinstance(e, BaseExceptionGroup):
        members = list(e.exceptions) if members is None else members
        message = sens.redact(str(e.message))
        if all(isinstance(m, Exception) for m in members):
            new = type(cls.__name__, (ScrubbedError, ExceptionGroup), ns)(message, members)
        else:  # a group of BaseExceptions (KeyboardInterrupt...) cannot be an Exception
            new = BaseExceptionGroup(message, members)
    else:
        if _is_pydantic(e):
            try:
                message = _pydantic_message(e, sens)
            except Exception:  # noqa: BLE001
                message = MARKER
        else:
            message = sens.redact(_text(e)) or MARKER
        ns["__str__"] = lambda self: message
        ns["__repr__"] = lambda self: f"{cls.__name__}({message!r})"
        try:
            new = type(cls.__name__, (ScrubbedError, _builtin_base(cls)), ns)(message)
        except TypeError:  # a built-in base whose constructor wants more (UnicodeDecodeError)
            new = type(cls.__name__, (ScrubbedError,), ns)(message)
    new.__cause__ = e.__cause__
    new.__context__ = e.__context__
    new.__suppress_context__ = e.__suppress_context__
    notes = getattr(e, "__notes__", None)
    if isinstance(notes, list):
        new.__notes__ = [sens.redact(str(n)) for n in notes]
    return new.with_traceback(e.__traceback__)


class _Walk:
    def __init__(self, sens: SensitiveSet) -> None:
        self.sens = sens
        self.done: dict[int, BaseException] = {}
        self.subs: list[tuple[str, str]] = []  # (text of a replaced exception, text of its stand-in)

    def visit(self, e: BaseException) -> BaseException:
        if id(e) in self.done:
            return self.done[id(e)]
        self.done[id(e)] = e  # cycles (a context that points back) end here
        if len(self.done) > _MAX_NODES:
            return _stand_in(e, self.sens) if _shows(e, self.sens) else e
        before = _text(e)
        for attr in ("__cause__", "__context__"):
            child = getattr(e, attr, None)
            if isinstance(child, BaseException):
                new = self.visit(child)
                if new is not child:
                    setattr(e, attr, new)
        for name, value in list(getattr(e, "__dict__", {}).items()):
            if isinstance(value, BaseException) and not name.startswith("__"):
                new = self.visit(value)
                if new is not value:
                    with contextlib.suppress(Exception):
                        setattr(e, name, new)
        out = e
        if isinstance(e, BaseExceptionGroup):
            members = [self.visit(m) for m in e.exceptions]
            if any(m is not o for m, o in zip(members, e.exceptions, strict=True)):
                # A group's members cannot be swapped: a new group (a stand-in for a subclass, whose
                # ``derive`` would lose the name).
                if type(e) in (ExceptionGroup, BaseExceptionGroup):
                    out = _regroup(e, members)
                else:
                    self._substitute(e)
                    _scrub_one(e, self.sens)
                    out = _stand_in(e, self.sens, members)
        self._substitute(out)
        _scrub_one(out, self.sens)
        if _shows(out, self.sens):
            out = _stand_in(out, self.sens)
        if out is not e:
            after = _text(out)
            if before and before != after:
                self.subs.append((before, after))
        self.done[id(e)] = out
        return out

    def _substitute(self, e: BaseException) -> None:
        """A parent that copied a replaced child's text (``FlyteUserRuntimeException(str(child))``)."""
        if not self.subs:
            return

        def sub(v: Any) -> Any:
            if isinstance(v, str):
                for old, new in self.subs:
                    v = v.replace(old, new)
            return v

        with contextlib.suppress(Exception):
            e.args = tuple(sub(a) for a in e.args)
        for name, value in list(getattr(e, "__dict__", {}).items()):
            if isinstance(value, str) and not name.startswith("__"):
                with contextlib.suppress(Exception):
                    setattr(e, name, sub(value))


def _regroup(e: BaseExceptionGroup[Any], members: list[BaseException]) -> BaseException:
    """The group with its (replaced) members; same type where ``derive`` allows, chain and notes kept."""
    try:
        new: BaseException = e.derive(members)
    except Exception:  # noqa: BLE001 - a subclass with its own derive
        new = BaseExceptionGroup(str(getattr(e, "message", "")), members)
    new.__cause__, new.__context__ = e.__cause__, e.__context__
    new.__suppress_context__ = e.__suppress_context__
    notes = getattr(e, "__notes__", None)
    if isinstance(notes, list):
        new.__notes__ = list(notes)
    return new.with_traceback(e.__traceback__)


def scrubbed_exception(exc: BaseException, sens: SensitiveSet) -> BaseException:
    """``exc`` scrubbed in place, or its stand-in when it cannot be (see the module docstring)."""
    if not sens:
        return exc
    return _Walk(sens).visit(exc)
