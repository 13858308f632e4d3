"""Log redaction: while a task runs, resolved values in log records are replaced by ``[REDACTED]``.

It hooks record *creation* (``logging.setLogRecordFactory``) rather than handlers, so it covers every
logger (the root logger, flytekit's, the user's), handlers added later, and ``logging.lastResort`` alike.
The message is formatted once when the record is made and kept only if it holds no value; exception
text is formatted and redacted the same way.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["install_redaction", "redact_text", "MARKER"]

MARKER = "[REDACTED]"
_MIN_LEN = 4  # shorter values would redact ordinary words and numbers

_lock = threading.Lock()
_active: list[list[str]] = []  # one list of variants per running task (nested tasks stack)
_original_factory: Callable[..., logging.LogRecord] | None = None


def _variants(values: Sequence[str | bytes]) -> list[str]:
    out: set[str] = set()
    for v in values:
        s = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        for cand in (s, s.strip()):
            if len(cand) >= _MIN_LEN:
                out.add(cand)
                out.add(base64.b64encode(cand.encode()).decode())
    return sorted(out, key=len, reverse=True)


def redact_text(text: str, variants: Sequence[str]) -> str:
    for v in variants:
        if v in text:
            text = text.replace(v, MARKER)
    return text


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _original_factory is not None
    record = _original_factory(*args, **kwargs)
    with _lock:
        variants = [v for group in _active for v in group]
    if not variants:
        return record
    try:
        msg = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken record is logging's problem, not ours
        return record
    new = redact_text(msg, variants)
    if new != msg:
        record.msg, record.args = new, None
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        red = redact_text(text, variants)
        if red != text:
            # Formatters append exc_text as it is; without exc_info they never re-format the original.
            record.exc_text = red
            record.exc_info = None
    return record


def install_redaction(values: Sequence[str | bytes]) -> Callable[[], None]:
    """Redact ``values`` from every log record created until the returned function is called."""
    global _original_factory
    variants = _variants(values)
    with _lock:
        if _original_factory is None:
            _original_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_factory)
        _active.append(variants)

    def undo() -> None:
        global _original_factory
        with _lock:
            if variants in _active:
                _active.remove(variants)
            if not _active and _original_factory is not None:
                if logging.getLogRecordFactory() is _factory:
                    logging.setLogRecordFactory(_original_factory)
                _original_factory = None

    return undo
