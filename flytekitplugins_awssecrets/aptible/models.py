"""Shared value types of the Aptible access strategy: secret references, the identity mapping, the grant.

What the operator declares (integrations, targets, strategies) is in
:mod:`flytekitplugins_awssecrets.aptible.operator`; what a request carries is in
:mod:`flytekitplugins_awssecrets.aptible.request`. Secrets are kept as *references* (flytekit group and key,
plus the JSON key for reading), never as values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flytekitplugins_awssecrets.aptible.errors import AptibleConfigError

__all__ = ["SecretReference", "IdentitySpec", "AccessGrant", "DEFAULT_AUTH_URL"]

#: Where Aptible's auth API lives unless the operator file's integration says otherwise.
DEFAULT_AUTH_URL = "https://auth.aptible.com"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{kind} name {value!r} must be 1-128 letters, digits, '_', '.' or '-'")
    return value


def _check_uuid(kind: str, value: str) -> str:
    if not _UUID.match(value):
        raise ValueError(f"{kind} {value!r} is not a UUID (copy it from the Aptible dashboard URL)")
    return value


class SecretReference(BaseModel):
    """A secret as the template stores it: flytekit's ``group``/``key`` and the JSON key, never a value.

    Built from what :func:`~flytekitplugins_awssecrets.aws_secret` returns, or from an ARN string::

        SecretReference.of(aws_secret(CREDS, json_key="password"))
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str
    key: str | None = None
    group_version: str | None = None
    #: Informational (it is also inside ``key``): which field of the JSON secret is read.
    json_key: str | None = None

    @property
    def reference(self) -> str:
        """The reference string the resolver takes (an ARN with its trailing fields, or an alias)."""
        return self.group + (self.key or "")

    @classmethod
    def of(cls, value: Any) -> SecretReference:
        """Accept a flytekit ``Secret``, an ARN/alias string, a mapping or a :class:`SecretReference`."""
        from flytekitplugins_awssecrets.refs import parse_reference, reference_from_request

        if isinstance(value, SecretReference):
            return value
        if isinstance(value, str):
            ref = parse_reference(value)
            return cls(group=ref.group, key=ref.key or None, json_key=ref.json_key)
        if isinstance(value, Mapping):
            return cls.model_validate(dict(value))
        group = getattr(value, "group", None)
        if not isinstance(group, str):
            raise ValueError(
                f"expected aws_secret(...), an ARN string or a mapping, got {type(value).__name__}"
            )
        parsed = reference_from_request(
            group, getattr(value, "key", None), getattr(value, "group_version", None)
        )
        if parsed is None:
            raise ValueError(f"secret group {group!r} is not an AWS reference; build it with aws_secret(...)")
        return cls(
            group=group,
            key=getattr(value, "key", None) or None,
            group_version=getattr(value, "group_version", None) or None,
            json_key=parsed.json_key,
        )

    @model_validator(mode="after")
    def _parses(self) -> SecretReference:
        from flytekitplugins_awssecrets.refs import reference_from_request

        # Fail where the strategy is declared, not in the connector at 3 a.m.
        if reference_from_request(self.group, self.key, self.group_version) is None:
            raise ValueError(f"secret group {self.group!r} is not an AWS reference")
        return self


class IdentitySpec(BaseModel):
    """How a requester's email becomes an Aptible user (Sym's ``get_identity``): the operator file's ``identity``.

    ``mapping`` maps an email (matched case-insensitively) to an Aptible user id or to another email.
    ``function`` is ``"module:qualname"`` of a function ``(email: str) -> str | None`` imported in the
    connector process, named by the operator only; ``None`` from it means "match the email as usual".
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mapping: dict[str, str] = Field(default_factory=dict)
    function: str | None = None

    @field_validator("mapping")
    @classmethod
    def _lower_keys(cls, v: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, val in v.items():
            if not _EMAIL.match(k):
                raise ValueError(f"identity key {k!r} is not an email")
            if not (_UUID.match(val) or _EMAIL.match(val)):
                raise ValueError(f"identity of {k!r} must be an Aptible user id (UUID) or an email")
            out[k.casefold()] = val.lower() if _UUID.match(val) else val
        return out

    @field_validator("function")
    @classmethod
    def _function(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", v):
            raise ValueError(f"{v!r} is not 'module:qualname'")
        return v

    @classmethod
    def of(
        cls, value: Mapping[str, str] | Callable[[str], str | None] | str | IdentitySpec | None
    ) -> IdentitySpec:
        """Accept a mapping, a module-level function, ``"module:qualname"`` or ``None``."""
        if value is None:
            return cls()
        if isinstance(value, IdentitySpec):
            return value
        if isinstance(value, Mapping):
            return cls(mapping=dict(value))
        if isinstance(value, str):
            if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", value):
                raise AptibleConfigError("identity", f"{value!r} is not 'module:qualname'")
            return cls(function=value)
        if callable(value):
            module = getattr(value, "__module__", None)
            qualname = getattr(value, "__qualname__", None)
            if not module or not qualname or "<" in qualname or module == "__main__":
                raise AptibleConfigError(
                    "identity",
                    f"{value!r} cannot be imported by the connector",
                    "define the function at module level in an importable module",
                )
            return cls(function=f"{module}:{qualname}")
        raise AptibleConfigError("identity", f"unsupported {type(value).__name__}", "a mapping or a function")


class AccessGrant(BaseModel):
    """The result of an access request, once the access has ended (the task's output).

    ``pre_existing`` is true when the user already held the role: nothing was added, nothing was removed,
    and ``membership_id`` is the standing membership. ``revoked_at`` is when the membership was removed
    (``None`` when it was pre-existing).

    Example::

        grant = aptible_access(email="ada@example.com", target="main-aptible-admin-role",
                               duration=timedelta(hours=1), reason="INC-42")
    """

    model_config = ConfigDict(frozen=True)

    email: str
    target: str
    user_id: str
    role_id: str
    membership_id: str
    pre_existing: bool
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
