"""A task that fails with exceptions whose text does not come from ``args`` (issue 20, item 1).

pydantic's ``ValidationError`` (Rust) built from the secret, as text and as bytes, a ``PydanticCustomError``
whose message is formatted from its context, an exception with its own ``__repr__``, all inside an
``ExceptionGroup`` whose ``__cause__`` is another ``ValidationError``. The value comes from ``LEAKY_ARN``.
"""

from __future__ import annotations

import base64
import logging
import os

from flytekit import current_context, task, workflow
from pydantic import BaseModel
from pydantic_core import PydanticCustomError

from flytekitplugins_awssecrets import aws_secret

ARN = os.environ.get("LEAKY_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:leaky/unset")
REQ = aws_secret(ARN)
SHORT_ARN = os.environ.get("SHORT_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:leaky/short")
SHORT_REQ = aws_secret(SHORT_ARN)


class Port(BaseModel):
    port: int


class Shows(Exception):
    """Text only in ``__repr__``: ``str()`` is empty."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._shown = "".join(reversed(secret))[::-1]

    def __repr__(self) -> str:
        return f"Shows(secret={self._shown!r})"


def _validation_error(value: object) -> Exception:
    try:
        Port(port=value)  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 - the error itself is what the task raises
        return e
    raise AssertionError("pydantic accepted a non-integer")


@task(secret_requests=[REQ, SHORT_REQ])
def raises_exotic() -> int:
    ctx = current_context()
    v = ctx.secrets.get(REQ.group, REQ.key)
    short = ctx.secrets.get(SHORT_REQ.group, SHORT_REQ.key)
    basic = base64.b64encode(f"svc:{short}".encode()).decode()
    logging.getLogger("flytekit").debug("calling with Authorization: Basic %s", basic)
    members = [
        _validation_error(v),
        _validation_error(v.encode()),
        PydanticCustomError("bad_value", "refused {value}", {"value": v}),
        Shows(v),
        KeyError(f"Authorization: Basic {basic}"),
    ]
    cause = _validation_error(v + "-cause")
    if members:
        raise ExceptionGroup("several failures", members) from cause
    return len(v)


@workflow
def exotic_wf() -> int:
    return raises_exotic()
