"""The operator file: what the connector's operator declares, in Sym's shapes (integration, targets, strategies).

A task template is user input; this file is not. Integrations (organization, bot credential references, auth
host), targets (role ids), strategies (targets, longest duration, approval policy), where request state is
kept and the identity mapping all come from here, and nothing of it can be set by a template. The path comes
from ``FLYTE_AWS_SECRETS_APTIBLE_OPERATOR_FILE``; the file is read once per process and validated with
pydantic; a problem is an :class:`~flytekitplugins_awssecrets.aptible.errors.OperatorConfigError` naming the
file and the field (``strategies[0].approval.kms_key_arn``).

Example (``/etc/flyte/aptible-operator.yaml``)::

    version: 1
    state: {ssm_prefix: /flyte/aptible-access, region: us-east-1}
    integrations:
      - type: aptible
        name: main-aptible
        external_id: 94a49e57-d046-4d9d-9dbf-f7711e337368
        settings:
          username_secret: arn:aws:secretsmanager:us-east-1:123456789012:secret:sym/main/aptible-bot-credentials-AbCdEf:username
          password_secret: arn:aws:secretsmanager:us-east-1:123456789012:secret:sym/main/aptible-bot-credentials-AbCdEf:password
    targets:
      - {type: aptible_role, name: main-aptible-admin-role, label: Admin Role,
         settings: {role_id: 24463EF7-1D6E-402E-A365-69CB6DB80C6E}}
    strategies:
      - type: aptible
        name: main-aptible-strategy
        integration: main-aptible
        targets: [main-aptible-admin-role]
        max_duration: PT1H
        approval: {kms_key_arn: "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}
"""

from __future__ import annotations

import os
import re
import threading
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flytekitplugins_awssecrets.aptible.errors import (
    OperatorConfigError,
    UnknownStrategyError,
    UnknownTargetError,
)
from flytekitplugins_awssecrets.aptible.models import DEFAULT_AUTH_URL, IdentitySpec, SecretReference
from flytekitplugins_awssecrets.links import doc_link

__all__ = [
    "OPERATOR_FILE_ENV",
    "OperatorIntegration",
    "OperatorTarget",
    "ApprovalPolicy",
    "OperatorStrategy",
    "StateStore",
    "OperatorConfig",
    "load_operator",
    "operator_file_path",
    "credential_arns",
    "clear_operator_cache",
]

#: The setting that names the operator file (an absolute path in the connector's image or a mounted ConfigMap).
OPERATOR_FILE_ENV = "FLYTE_AWS_SECRETS_APTIBLE_OPERATOR_FILE"

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_KMS_KEY = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:key/[0-9a-fA-F-]{36}$")
_SSM_PREFIX = re.compile(r"^(/[A-Za-z0-9_.\-]+)+$")
_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:.+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _name(kind: str, v: str) -> str:
    if not _NAME.match(v):
        raise ValueError(f"{kind} name {v!r} must be 1-128 letters, digits, '_', '.' or '-'")
    return v


class IntegrationSettings(BaseModel):
    """``settings`` of an integration: the bot's credential *references* (Sym's ``sym_secret`` ids)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    username_secret: SecretReference
    password_secret: SecretReference

    @field_validator("username_secret", "password_secret", mode="before")
    @classmethod
    def _ref(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return SecretReference.of(v)
            except Exception as e:  # noqa: BLE001 - InvalidReferenceError: reported as this field's error
                raise ValueError(str(e)) from None
        return v


class OperatorIntegration(BaseModel):
    """Sym's ``sym_integration`` (type ``aptible``): the organization, its bot and the auth host (https only).

    ``ca_bundle`` is a PEM file that verifies the auth host's certificate (for an auth host behind a private
    CA); by default the system's trust store is used.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["aptible"] = "aptible"
    name: str
    external_id: str
    auth_url: str = DEFAULT_AUTH_URL
    ca_bundle: str | None = None
    settings: IntegrationSettings

    _n = field_validator("name")(lambda v: _name("integration", v))

    @field_validator("external_id")
    @classmethod
    def _org(cls, v: str) -> str:
        if not _UUID.match(v):
            raise ValueError(f"{v!r} is not an organization UUID (copy it from the Aptible dashboard URL)")
        return v.lower()

    @field_validator("auth_url")
    @classmethod
    def _https(cls, v: str) -> str:
        # The bot's password is posted here: plain http would hand it to anyone on the path.
        if not re.match(r"^https://[^/\s@]+(/[^\s]*)?$", v):
            raise ValueError(f"{v!r} must be an https:// URL such as {DEFAULT_AUTH_URL}")
        return v.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _ca(cls, v: str | None) -> str | None:
        if v is not None and not os.path.isfile(v):
            raise ValueError(f"{v!r} is not a readable PEM file")
        return v

    @property
    def organization_id(self) -> str:
        return self.external_id


class TargetSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role_id: str

    @field_validator("role_id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        if not _UUID.match(v):
            raise ValueError(f"{v!r} is not a role UUID (it is in the role's dashboard URL)")
        return v.lower()  # Sym's docs show them upper-case; Aptible answers lower-case


class OperatorTarget(BaseModel):
    """Sym's ``sym_target`` (type ``aptible_role``): a role that may be requested, by ``name``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["aptible_role"] = "aptible_role"
    name: str
    label: str = ""
    settings: TargetSettings

    _n = field_validator("name")(lambda v: _name("target", v))

    @property
    def role_id(self) -> str:
        return self.settings.role_id


class ApprovalPolicy(BaseModel):
    """Who must approve, and how the connector checks it.

    * ``required`` (true): a grant waits for a valid approval. ``false`` only where the operator decides a
      strategy needs none (a local run then still asks at the terminal, defaulting to No).
    * ``kms_key_arn``: an asymmetric ``SIGN_VERIFY`` KMS key; only approvers may ``kms:Sign`` with it, the
      connector needs ``kms:Verify``.
    * ``signing_algorithm`` (``ECDSA_SHA_256``): as KMS names it, matching the key spec.
    * ``max_validity`` (1 hour): the longest an approval may be valid for.
    * ``wait`` (4 hours): how long a request waits for an approval before it fails.
    * ``approvers``: principal ARN -> email, for approvers whose AWS identity does not end in their email
      (an SSO role session usually does: ``.../AWSReservedSSO_Approver_x/ada@example.com``). The email then
      goes through the operator file's ``identity`` mapping to an Aptible user, as the requester's does.
    * ``allow_self_approval`` (false): when false, an approver who is the grantee (the same Aptible user,
      whatever the email) is refused, and so is an approver who maps to no Aptible user of the
      organization (nobody could tell them apart from the grantee).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    required: bool = True
    kms_key_arn: str | None = None
    signing_algorithm: Literal[
        "ECDSA_SHA_256", "ECDSA_SHA_384", "ECDSA_SHA_512", "RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_256"
    ] = "ECDSA_SHA_256"
    max_validity: timedelta = timedelta(hours=1)
    wait: timedelta = timedelta(hours=4)
    approvers: dict[str, str] = Field(default_factory=dict)
    allow_self_approval: bool = False

    @field_validator("kms_key_arn")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and not _KMS_KEY.match(v):
            raise ValueError(f"{v!r} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)")
        return v

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, v: dict[str, str]) -> dict[str, str]:
        for arn, email in v.items():
            if not _PRINCIPAL.match(arn):
                raise ValueError(f"{arn!r} is not an IAM or STS principal ARN")
            if not _EMAIL.match(email):
                raise ValueError(f"approver {arn!r}: {email!r} is not an email")
        return {k: e.casefold() for k, e in v.items()}

    @model_validator(mode="after")
    def _check(self) -> ApprovalPolicy:
        if self.required and self.kms_key_arn is None:
            raise ValueError("kms_key_arn is required unless required is false")
        if self.max_validity <= timedelta(0) or self.wait <= timedelta(0):
            raise ValueError("max_validity and wait must be positive")
        return self

    @property
    def key_region(self) -> str:
        m = _KMS_KEY.match(self.kms_key_arn or "")
        return m.group(1) if m else ""


class OperatorStrategy(BaseModel):
    """Sym's ``sym_strategy`` (type ``aptible``): an integration, its targets, the longest grant, approval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["aptible"] = "aptible"
    name: str
    integration: str
    targets: list[str] = Field(min_length=1)
    max_duration: timedelta = timedelta(days=1)
    approval: ApprovalPolicy = Field(default_factory=lambda: ApprovalPolicy.model_validate({}))
    #: A local ``pyflyte run`` reads the bot's credentials in the requester's process: refused unless true.
    local_runs: bool = False

    _n = field_validator("name")(lambda v: _name("strategy", v))

    @model_validator(mode="after")
    def _check(self) -> OperatorStrategy:
        if self.max_duration <= timedelta(0):
            raise ValueError("max_duration must be positive")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError("targets must be unique")
        return self


class StateStore(BaseModel):
    """Where pending requests, approvals and grant records live: SSM parameters under ``ssm_prefix``.

    The connector reads and writes ``<prefix>/<request>/request``, ``.../grant`` and ``.../abort``; approvers
    write ``.../approval`` (what they write is verified, so write access is no authority). When a request
    ends (access removed, aborted, timed out) every record but the grant record is deleted; the grant record
    (the request's outcome, which stops a repeated poll from granting again) is kept for ``retention``
    (7 days; at least every strategy's ``approval.wait``), then deleted by the connector's sweep.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ssm_prefix: str = "/flyte/aptible-access"
    region: str
    retention: timedelta = timedelta(days=7)

    @field_validator("ssm_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.rstrip("/")
        if not _SSM_PREFIX.match(v):
            raise ValueError(f"{v!r} is not an SSM path such as /flyte/aptible-access")
        return v


class OperatorConfig(BaseModel):
    """The whole operator file, cross-checked: every strategy's integration and targets exist."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1]
    state: StateStore
    integrations: list[OperatorIntegration] = Field(min_length=1)
    targets: list[OperatorTarget] = Field(min_length=1)
    strategies: list[OperatorStrategy] = Field(min_length=1)
    identity: IdentitySpec = Field(default_factory=IdentitySpec)

    @model_validator(mode="after")
    def _refs(self) -> OperatorConfig:
        for kind, items in (("integration", self.integrations), ("target", self.targets)):
            names = [i.name for i in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique: {', '.join(dupes)}")
        for n, s in enumerate(self.strategies):
            if self.state.retention < s.approval.wait:
                raise ValueError(
                    f"state.retention: {self.state.retention} is shorter than strategies[{n}].approval.wait "
                    f"{s.approval.wait} (a request's records must outlive its wait)"
                )
        ints = {i.name for i in self.integrations}
        tgts = {t.name for t in self.targets}
        for n, s in enumerate(self.strategies):
            if s.integration not in ints:
                raise ValueError(f"strategies[{n}].integration: no integration named {s.integration!r}")
            missing = [t for t in s.targets if t not in tgts]
            if missing:
                raise ValueError(f"strategies[{n}].targets: no target named {', '.join(map(repr, missing))}")
        return self

    def strategy(self, name: str) -> OperatorStrategy:
        """The strategy called ``name``, or :class:`UnknownStrategyError`."""
        for s in self.strategies:
            if s.name == name:
                return s
        raise UnknownStrategyError(name, [s.name for s in self.strategies])

    def integration_of(self, strategy: OperatorStrategy) -> OperatorIntegration:
        return next(i for i in self.integrations if i.name == strategy.integration)

    def target_of(self, strategy: OperatorStrategy, name: str) -> OperatorTarget:
        """The strategy's target ``name``, or :class:`UnknownTargetError` listing its targets."""
        if name in strategy.targets:
            return next(t for t in self.targets if t.name == name)
        raise UnknownTargetError(strategy.name, name, strategy.targets)


def operator_file_path() -> str:
    """The operator file's path from the setting; an :class:`OperatorConfigError` when unset."""
    path = os.environ.get(OPERATOR_FILE_ENV, "").strip()
    if not path:
        raise OperatorConfigError(
            f"${OPERATOR_FILE_ENV}",
            "",
            "is not set: the connector (and a local pyflyte run) needs the operator file",
            f"set {OPERATOR_FILE_ENV} to the operator file's path (see {doc_link('aptible', 'the-operator-file')})",
        )
    return path


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_operator(text: str, path: str) -> OperatorConfig:
    """Validate an operator file's text; errors name ``path`` and the field."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise OperatorConfigError(path, where, "is not valid YAML") from None
    if not isinstance(data, dict):
        raise OperatorConfigError(path, "", "must be a YAML mapping with version, state, integrations, ...")
    try:
        return OperatorConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = _loc(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid"))
        m = re.match(r"^Value error, (strategies\[\d+\]\.\w+|state\.retention): (.*)$", msg)
        if m:  # a cross-reference problem names its own field
            field, msg = m.group(1), m.group(2)
        else:
            msg = msg.removeprefix("Value error, ")
        raise OperatorConfigError(path, field, msg) from None
    except OperatorConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. AptibleConfigError from a validator: keep our message
        raise OperatorConfigError(path, "", str(e)) from None


_CACHE: dict[str, OperatorConfig] = {}
_LOCK = threading.Lock()


def load_operator(path: str | None = None) -> OperatorConfig:
    """The operator file at ``path`` (default: the setting), read and validated once per process."""
    path = path or operator_file_path()
    with _LOCK:
        cached = _CACHE.get(path)
        if cached is not None:
            return cached
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise OperatorConfigError(path, "", f"cannot be read ({type(e).__name__})") from None
        config = parse_operator(text, path)
        if config.identity.function:
            # Imported here, at load, so a typo stops the connector at start, not a request at 3 a.m.
            from flytekitplugins_awssecrets.aptible.identity import load_identity_function

            try:
                load_identity_function(config.identity.function)
            except Exception as e:  # noqa: BLE001 - AptibleConfigError: re-raised naming the field
                raise OperatorConfigError(path, "identity.function", str(e)) from None
        _CACHE[path] = config
        return config


def clear_operator_cache() -> None:
    """Forget loaded operator files (tests)."""
    with _LOCK:
        _CACHE.clear()


def credential_arns(task_or_strategy: Any, path: str | None = None) -> list[str]:
    """The bot credential references (ARN strings, with their JSON key) that a task or strategy uses.

    ``task_or_strategy`` is an :class:`~flytekitplugins_awssecrets.aptible.AptibleAccessTask` or a strategy
    name; the references are read from the operator file (``path``, default: the setting), which is the only
    place they are taken from::

        credential_arns("main-aptible-strategy")  # -> ["arn:...:secret:...:username", "arn:...:password"]
    """
    name = task_or_strategy if isinstance(task_or_strategy, str) else task_or_strategy.strategy_name
    config = load_operator(path)
    integration = config.integration_of(config.strategy(name))
    refs = [integration.settings.username_secret.reference, integration.settings.password_secret.reference]
    return list(dict.fromkeys(refs))


def connector_statements(strategy_names: list[str], path: str | None = None) -> list[dict[str, Any]]:
    """IAM statements the connector's role needs for ``strategy_names`` beyond reading the bot credentials.

    ``kms:Verify`` on each strategy's approval key, and the request, approval and grant records under the
    state store's SSM prefix (in the approval key's account where one is named, else any account)::

        connector_statements(["main-aptible-strategy"])
        # -> [{"Sid": "AptibleConnectorVerifyApprovals", "Action": ["kms:Verify"], ...}, ...]
    """
    config = load_operator(path)
    strategies = [config.strategy(n) for n in dict.fromkeys(strategy_names)]
    keys = sorted({s.approval.kms_key_arn for s in strategies if s.approval.kms_key_arn})
    accounts = sorted({k.split(":")[4] for k in keys}) or ["*"]
    statements: list[dict[str, Any]] = []
    if keys:
        statements.append(
            {
                "Sid": "AptibleConnectorVerifyApprovals",
                "Effect": "Allow",
                "Action": ["kms:Verify"],
                "Resource": keys,
            }
        )
    statements.append(
        {
            "Sid": "AptibleConnectorState",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter", "ssm:PutParameter", "ssm:DeleteParameter"],
            "Resource": [
                f"arn:aws:ssm:{config.state.region}:{a}:parameter{config.state.ssm_prefix}/*"
                for a in accounts
            ],
        }
    )
    statements.append(
        {
            # The sweep of ended requests' records (state.retention) lists the prefix itself.
            "Sid": "AptibleConnectorSweep",
            "Effect": "Allow",
            "Action": ["ssm:GetParametersByPath"],
            "Resource": [
                f"arn:aws:ssm:{config.state.region}:{a}:parameter{config.state.ssm_prefix}" for a in accounts
            ],
        }
    )
    return statements
