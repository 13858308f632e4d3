"""Log redaction: while a task runs, its sensitive strings in log records are replaced by ``[REDACTED]``.

What is sensitive is the task's :class:`~flytekitplugins_awssecrets.sensitive.SensitiveSet` (each value, its
JSON leaves and lines, and their common encodings). Two hooks, so that no logging configuration escapes:

* record *creation* (``logging.setLogRecordFactory``): the message (formatted once, with its arguments),
  the exception text and the stack text; this covers every logger, every handler (added before or later)
  and ``logging.lastResort``;
* ``logging.Logger.makeRecord``: the attributes given with ``extra=``, which logging sets only after the
  factory returned and which structured formatters (flytekit's JSON format) print.

A record is changed only when it holds a sensitive string: then its message becomes the redacted text
(``args`` dropped), its exception is replaced by the redacted traceback text, and each leaking ``extra``
attribute by a redacted copy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from flytekitplugins_awssecrets.sensitive import MARKER, SensitiveSet, scrub_value

__all__ = ["install_redaction", "redact_text", "redact_record", "MARKER"]

_lock = threading.Lock()
_active: list[SensitiveSet] = []  # one set per running task (nested tasks stack)
_original_factory: Callable[..., logging.LogRecord] | None = None
_original_make_record: Callable[..., logging.LogRecord] | None = None

# Attributes every LogRecord has; anything else on a record came from ``extra=`` (or a filter).
_STANDARD = set(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {"message", "asctime"}


def redact_text(text: str, variants: Sequence[str] | SensitiveSet) -> str:
    if isinstance(variants, SensitiveSet):
        return variants.redact(text)
    for v in variants:
        if v in text:
            text = text.replace(v, MARKER)
    return text


def _current() -> SensitiveSet | None:
    with _lock:
        sets = list(_active)
    if not sets:
        return None
    if len(sets) == 1:
        return sets[0]
    return SensitiveSet.union(sets)


def redact_record(record: logging.LogRecord, sens: SensitiveSet, *, extras: bool = False) -> None:
    """Remove ``sens`` from ``record`` in place (message and arguments, exception, stack, and extras)."""
    try:
        msg = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken record is logging's problem, not ours
        # logging.Handler.handleError prints the message and the arguments of a record it cannot format.
        msg = None
        record.msg = scrub_value(record.msg, sens)
        if record.args:
            record.args = scrub_value(record.args, sens)
    if msg is not None:
        new = sens.redact(msg)
        if new != msg:
            record.msg, record.args = new, None
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        red = sens.redact(text)
        if red != text:
            # Formatters append exc_text as it is; without exc_info they never re-format the original.
            record.exc_text = red
            record.exc_info = None
    if isinstance(record.exc_text, str):
        record.exc_text = sens.redact(record.exc_text)
    if isinstance(record.stack_info, str):
        record.stack_info = sens.redact(record.stack_info)
    if extras:
        for name, value in list(vars(record).items()):
            if name in _STANDARD:
                continue
            record.__dict__[name] = scrub_value(value, sens)


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _original_factory is not None
    record = _original_factory(*args, **kwargs)
    sens = _current()
    if sens:
        redact_record(record, sens)
    return record


def _make_record(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _original_make_record is not None
    record = _original_make_record(self, *args, **kwargs)
    sens = _current()
    if sens:
        redact_record(record, sens, extras=True)
    return record


def install_redaction(values: Sequence[str | bytes] | SensitiveSet) -> Callable[[], None]:
    """Redact ``values`` from every log record created until the returned function is called."""
    global _original_factory, _original_make_record
    sens = values if isinstance(values, SensitiveSet) else SensitiveSet.build([("", v) for v in values])
    with _lock:
        if _original_factory is None:
            _original_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_factory)
        if _original_make_record is None:
            _original_make_record = logging.Logger.makeRecord
            logging.Logger.makeRecord = _make_record  # type: ignore[method-assign]
        _active.append(sens)

    def undo() -> None:
        global _original_factory, _original_make_record
        with _lock:
            if any(s is sens for s in _active):
                _active.remove(sens)
            if not _active:
                if _original_factory is not None and logging.getLogRecordFactory() is _factory:
                    logging.setLogRecordFactory(_original_factory)
                _original_factory = None
                if _original_make_record is not None and logging.Logger.makeRecord is _make_record:
                    logging.Logger.makeRecord = _original_make_record  # type: ignore[method-assign]
                _original_make_record = None

    return undo
