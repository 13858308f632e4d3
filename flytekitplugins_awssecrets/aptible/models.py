"""What a team declares: Sym's Terraform resources for Aptible, as pydantic models.

=========================================  ==========================================
Sym (Terraform)                            here
=========================================  ==========================================
``sym_secret`` (path + ``json_key``)       :func:`~flytekitplugins_awssecrets.aws_secret`
``sym_integration`` ``type="aptible"``     :class:`AptibleIntegration`
``sym_target`` ``type="aptible_role"``     :class:`AptibleRole`
``sym_strategy`` ``type="aptible"``        :class:`AptibleAccessStrategy`
``sym_flow``                               :class:`~flytekitplugins_awssecrets.aptible.AptibleAccessTask`
                                           in a workflow with ``flytekit.approve``
=========================================  ==========================================

The models serialise (``model_dump(mode="json")``) into the task template's ``custom`` field, so the
connector needs nothing but the template. Secrets are kept as *references* (flytekit group and key, plus
the JSON key for reading), never as values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flytekitplugins_awssecrets.aptible.errors import AptibleConfigError, UnknownTargetError

__all__ = [
    "SecretReference",
    "AptibleIntegration",
    "AptibleRole",
    "AptibleAccessStrategy",
    "IdentitySpec",
    "AptibleTaskConfig",
    "AccessGrant",
    "DEFAULT_AUTH_URL",
]

#: Where Aptible's auth API lives unless the integration or ``FLYTE_AWS_SECRETS_APTIBLE_AUTH_URL`` says otherwise.
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


def _to_ref(value: Any) -> Any:
    if value is None or isinstance(value, SecretReference):
        return value
    try:
        return SecretReference.of(value)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - InvalidReferenceError and friends, re-raised as a field error
        raise ValueError(str(e)) from None


class AptibleIntegration(BaseModel):
    """The Aptible organization and the bot user that acts in it (Sym's ``sym_integration``, type ``aptible``).

    ``organization_id`` is Sym's ``external_id`` (the UUID in the dashboard URL). ``username_secret`` and
    ``password_secret`` point at the bot's credentials in AWS Secrets Manager; they are read only in the
    connector process. ``auth_url`` overrides the auth host (default: the connector's
    ``FLYTE_AWS_SECRETS_APTIBLE_AUTH_URL``, else ``https://auth.aptible.com``).

    Example::

        integration = AptibleIntegration(
            name="main-aptible",
            organization_id="94a49e57-d046-4d9d-9dbf-f7711e337368",
            username_secret=aws_secret(CREDS, json_key="username"),
            password_secret=aws_secret(CREDS, json_key="password"),
        )
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["aptible"] = "aptible"
    name: str
    organization_id: str
    username_secret: SecretReference
    password_secret: SecretReference
    auth_url: str | None = None

    _name = field_validator("name")(lambda v: _check_name("integration", v))
    _org = field_validator("organization_id")(lambda v: _check_uuid("organization_id", v).lower())
    _secrets = field_validator("username_secret", "password_secret", mode="before")(_to_ref)

    @field_validator("auth_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", v):
            raise ValueError(f"auth_url {v!r} must be an http(s) URL such as {DEFAULT_AUTH_URL}")
        return v.rstrip("/")


class AptibleRole(BaseModel):
    """An Aptible role that may be requested (Sym's ``sym_target``, type ``aptible_role``).

    ``name`` is what requesters pass as ``target``; ``label`` is for humans; ``role_id`` is the UUID in the
    role's dashboard URL.

    Example::

        admin_prod = AptibleRole(name="main-aptible-admin-role", label="Admin Role",
                                 role_id="24463EF7-1D6E-402E-A365-69CB6DB80C6E")
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["aptible_role"] = "aptible_role"
    name: str
    label: str = ""
    role_id: str

    _name = field_validator("name")(lambda v: _check_name("target", v))
    # Sym's docs show role ids upper-case; Aptible's API answers them lower-case.
    _role = field_validator("role_id")(lambda v: _check_uuid("role_id", v).lower())

    @model_validator(mode="after")
    def _default_label(self) -> AptibleRole:
        if not self.label:
            object.__setattr__(self, "label", self.name)
        return self


class AptibleAccessStrategy(BaseModel):
    """Which roles of which integration may be granted, and for how long at most (Sym's ``sym_strategy``).

    Example::

        strategy = AptibleAccessStrategy(name="main-aptible-strategy", integration=integration,
                                         targets=[admin_prod], max_duration=timedelta(days=1))
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["aptible"] = "aptible"
    name: str
    integration: AptibleIntegration
    targets: list[AptibleRole] = Field(min_length=1)
    max_duration: timedelta = timedelta(days=1)

    _name = field_validator("name")(lambda v: _check_name("strategy", v))

    @model_validator(mode="after")
    def _check(self) -> AptibleAccessStrategy:
        if self.max_duration <= timedelta(0):
            raise ValueError("max_duration must be positive")
        names = [t.name for t in self.targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique: {', '.join(dupes)}")
        return self

    def target(self, name: str) -> AptibleRole:
        """The target called ``name``; raises :class:`UnknownTargetError` listing the known ones."""
        for t in self.targets:
            if t.name == name:
                return t
        raise UnknownTargetError(self.name, name, [t.name for t in self.targets])


class IdentitySpec(BaseModel):
    """How a requester's email becomes an Aptible user (Sym's ``get_identity``), in serialisable form.

    ``mapping`` maps an email (matched case-insensitively) to an Aptible user id or to another email.
    ``function`` is ``"module:qualname"`` of a function ``(email: str) -> str | None`` imported in the
    connector process; ``None`` from it means "match the email as usual".
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


class AptibleTaskConfig(BaseModel):
    """Everything the connector needs, as stored in the task template's ``custom``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    strategy: AptibleAccessStrategy
    identity: IdentitySpec = Field(default_factory=IdentitySpec)


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
