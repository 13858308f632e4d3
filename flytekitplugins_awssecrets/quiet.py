"""Keeping botocore, boto3 and urllib3 quiet while secrets are read.

At DEBUG level botocore logs every response body (``Response body: b'{"SecretString": ...}'``) and request
parameters; urllib3 logs URLs. A user's ``logging.basicConfig(level=logging.DEBUG)`` is enough to send those
to the task log. :func:`aws_logs_quieted` raises these loggers, and every existing logger below them (so a
level set on ``botocore.parsers`` does not escape), to WARNING for as long as a resolution runs, and puts the
user's levels back afterwards. Nested and concurrent resolutions share one quiet period.
:func:`quiet_aws_loggers` does the same for good (``serve``).

Example::

    with aws_logs_quieted():
        client.get_secret_value(SecretId=arn)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = ["NOISY_LOGGERS", "aws_logs_quieted", "quiet_aws_loggers"]

#: Loggers that may print request or response bodies, or URLs with query strings.
NOISY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "aiobotocore")

_lock = threading.Lock()
_depth = 0
_saved: dict[str, int] = {}


def _targets(names: Sequence[str]) -> list[logging.Logger]:
    """The named loggers, and every logger below them with a level of its own.

    A logger without one (``NOTSET``) takes the level of its nearest ancestor that has one, which is then
    one of these: raising it as well would change nothing, and every ``setLevel`` clears the level caches of
    all the process's loggers (thousands in a flytekit process: ~10 ms per resolution for 40 of them).
    """
    out = [logging.getLogger(n) for n in names]
    for name, obj in list(logging.Logger.manager.loggerDict.items()):
        if (
            isinstance(obj, logging.Logger)
            and obj.level != logging.NOTSET
            and name.startswith(tuple(n + "." for n in names))
        ):
            out.append(obj)
    return out


def quiet_aws_loggers(extra: Sequence[str] = ()) -> None:
    """Set the AWS client loggers (and ``extra`` ones) to WARNING for the rest of the process."""
    for lg in _targets([*NOISY_LOGGERS, *extra]):
        if lg.level < logging.WARNING:
            lg.setLevel(logging.WARNING)


@contextmanager
def aws_logs_quieted() -> Iterator[None]:
    """Within the block, the AWS client loggers log nothing below WARNING, whatever the user configured."""
    global _depth
    with _lock:
        if _depth == 0:
            for lg in _targets(NOISY_LOGGERS):
                if lg.level < logging.WARNING:
                    _saved[lg.name] = lg.level
                    lg.setLevel(logging.WARNING)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for name, level in _saved.items():
                    logging.getLogger(name).setLevel(level)
                _saved.clear()
