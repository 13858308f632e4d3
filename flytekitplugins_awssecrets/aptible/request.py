"""What a task template may carry: the strategy's name, and the inputs target, email, duration and reason.

A template is user input (anyone who can register a workflow writes one). Its ``custom`` holds
``{"version": 2, "strategy": "<name>"}`` and nothing else; its inputs are ``email``, ``target``,
``duration`` and ``reason``. Any other key -- a host, a credential reference, a target list, a maximum, an
identity hook -- is refused with a :class:`~flytekitplugins_awssecrets.aptible.errors.TemplateFieldError`
naming it, before anything is read or sent. Everything else comes from the operator file.

Example::

    request = from_template({"version": 2, "strategy": "main-aptible-strategy"}, {"email": ..., ...})
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from flytekitplugins_awssecrets.aptible.errors import DurationTooLongError, TemplateFieldError

__all__ = [
    "TEMPLATE_VERSION",
    "CUSTOM_FIELDS",
    "INPUT_FIELDS",
    "AccessRequest",
    "from_template",
    "request_id",
]

#: The version of ``custom`` this connector reads (1 carried the whole strategy and is refused).
TEMPLATE_VERSION = 2
CUSTOM_FIELDS = ("version", "strategy")
INPUT_FIELDS = ("email", "target", "duration", "reason")

_EMAIL = re.compile(r"^[^@\s]{1,128}@[^@\s]{1,255}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class AccessRequest(BaseModel):
    """The five things a requester chooses; nothing else of a template is read.

    Example::

        AccessRequest(strategy="main-aptible-strategy", target="main-aptible-admin-role",
                      email="ada@example.com", duration=timedelta(hours=1), reason="INC-42")
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str
    target: str
    email: str
    duration: timedelta
    reason: str = ""


def _string(field: str, value: Any, pattern: re.Pattern[str] | None = None, limit: int = 256) -> str:
    if not isinstance(value, str):
        raise TemplateFieldError(field, f"must be a string, not {type(value).__name__}")
    text = value.strip()
    if _CONTROL.search(text):
        # Approvers read these on a terminal: no escape sequence may rewrite what they see.
        raise TemplateFieldError(field, "contains control characters")
    if len(text) > limit or (pattern is not None and not pattern.match(text)):
        raise TemplateFieldError(field, "is not valid here")
    return text


def _literal_value(name: str, lit: Any) -> Any:
    """A primitive of a flyteidl Literal (protobuf or flytekit model), read without the type engine."""
    scalar = getattr(lit, "scalar", None)
    prim = getattr(scalar, "primitive", None)
    if prim is None:
        raise TemplateFieldError(f"inputs.{name}", "must be a primitive")
    if name == "duration":
        d: Any = getattr(prim, "duration", None)
        if hasattr(d, "ToTimedelta"):  # protobuf Duration
            return d.ToTimedelta()
        return d
    return getattr(prim, "string_value", None)


def from_template(custom: Any, inputs: Any, config: Any = None) -> AccessRequest:
    """The request a template and its inputs make, or a :class:`TemplateFieldError` naming the bad field.

    ``inputs`` is a flyteidl ``LiteralMap`` (or a plain mapping of values, as tests and local runs use).
    """
    problems: list[tuple[str, str]] = []

    def bad(field: str, problem: str = "is not allowed in an aptible_access task") -> None:
        problems.append((field, problem))

    def checked(field: str, value: Any, pattern: re.Pattern[str] | None, limit: int = 256) -> str:
        try:
            return _string(field, value, pattern, limit)
        except TemplateFieldError as e:
            bad(field, e.reason)
            return ""

    if custom is None:
        custom = {}
    if not isinstance(custom, Mapping):
        raise TemplateFieldError("custom", "must be a mapping")
    for key in custom:
        if key not in CUSTOM_FIELDS:
            bad(f"custom.{key}")
    if custom.get("version") != TEMPLATE_VERSION:
        bad(
            "custom.version",
            f"is {custom.get('version')!r}, this connector reads {TEMPLATE_VERSION}: re-register the workflow "
            "with this plugin version (strategies now live in the operator file)",
        )
    for key in dict(config or {}):
        bad(f"config.{key}")
    strategy = checked("custom.strategy", custom.get("strategy"), _NAME)

    literals = getattr(inputs, "literals", None)
    values: dict[str, Any] = {}
    items: list[tuple[str, Any]] = []
    if literals is not None:
        items = [(name, literals[name]) for name in literals]
    elif isinstance(inputs, Mapping):
        items = list(inputs.items())
    for name, value in items:
        if name not in INPUT_FIELDS:
            bad(f"inputs.{name}")
            continue
        try:
            values[name] = _literal_value(name, value) if literals is not None else value
        except TemplateFieldError as e:
            bad(e.field, e.reason)
    for name in ("email", "target", "duration"):
        if values.get(name) is None and not any(f == f"inputs.{name}" for f, _ in problems):
            bad(f"inputs.{name}", "is required")
    duration = values.get("duration")
    if duration is not None and not isinstance(duration, timedelta):
        bad("inputs.duration", "must be a duration")
    target = checked("inputs.target", values["target"], _NAME) if values.get("target") is not None else ""
    email = checked("inputs.email", values["email"], _EMAIL) if values.get("email") is not None else ""
    reason = checked("inputs.reason", values.get("reason") or "", None, 2000)
    if problems:
        # Every offending field at once: one refusal, one audit record, one round trip to fix.
        raise TemplateFieldError(problems[0][0], problems[0][1], problems[1:])
    assert isinstance(duration, timedelta)
    if duration <= timedelta(0):
        raise DurationTooLongError(strategy, duration, duration)
    return AccessRequest(strategy=strategy, target=target, email=email, duration=duration, reason=reason)


def request_id(execution_id: str, request: AccessRequest) -> str:
    """A stable id of one request of one execution: a repeated ``CreateTask`` gets the same id."""
    body = json.dumps(
        {
            "execution_id": execution_id,
            "strategy": request.strategy,
            "target": request.target,
            "email": request.email.casefold(),
            "duration_seconds": int(request.duration.total_seconds()),
            # What approvers read: a second CreateTask with another reason is another request.
            "reason": request.reason,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "r" + hashlib.sha256(body.encode()).hexdigest()[:23]
