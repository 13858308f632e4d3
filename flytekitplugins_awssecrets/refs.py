"""Secret references: parsing and formatting, pure (no I/O, no boto3).

A reference is what a task asks for. Three shapes are accepted:

* a Secrets Manager ARN, full (``...:secret:prod/db-XyZ123``) or partial (``...:secret:prod/db``);
* an SSM Parameter Store ARN (``arn:aws:ssm:us-east-1:123456789012:parameter/prod/db/password``);
* an alias (``TestingSecret``) that the settings map to one of the above, so each environment can point it
  elsewhere.

Either ARN may carry the trailing fields ECS task definitions use, ``<arn>:<json-key>:<version-stage>:<version-id>``
(empty fields allowed, trailing empty fields dropped). For SSM, the version stage is a parameter *label* and
the version id a parameter *version number*.

In flytekit terms an ARN splits into ``group`` (up to and including ``:secret:`` or ``:parameter/``) and
``key`` (the rest, trailing fields included), so that ``current_context().secrets.get(group, key)`` works.
Aliases use the group :data:`ALIAS_GROUP`.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Literal

from flytekitplugins_awssecrets.errors import InvalidReferenceError

__all__ = [
    "ALIAS_GROUP",
    "SecretRef",
    "parse_reference",
    "reference_from_request",
    "split_arn",
    "is_aws_group",
]

Service = Literal["secretsmanager", "ssm"]

logger = logging.getLogger("flytekitplugins_awssecrets")

#: The flytekit group of a request that names an alias rather than an ARN.
ALIAS_GROUP = "awssecrets:alias:"

_PARTITION_REGION = {"aws": None, "aws-cn": "cn-", "aws-us-gov": "us-gov-"}
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_SM_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_SSM_NAME = re.compile(r"^[A-Za-z0-9_.\-/]{1,2048}$")
_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]{0,255}$")
_VERSION_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_SSM_VERSION = re.compile(r"^\d{1,10}$")
_STAGE = re.compile(r"^[A-Za-z0-9_.\-]{1,256}$")

_SM_SHAPE = "arn:<aws|aws-cn|aws-us-gov>:secretsmanager:<region>:<12-digit account>:secret:<name>[-<6 chars>][:<json-key>[:<version-stage>[:<version-id>]]]"
_SSM_SHAPE = "arn:<aws|aws-cn|aws-us-gov>:ssm:<region>:<12-digit account>:parameter/<name>[:<json-key>[:<label>[:<version>]]]"
_ANY_SHAPE = f"a Secrets Manager ARN ({_SM_SHAPE}), an SSM parameter ARN ({_SSM_SHAPE}) or an alias"


@dataclass(frozen=True)
class SecretRef:
    """A parsed reference. ``str(ref)`` is the reference as written back (never a value).

    Example::

        >>> ref = parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-XyZ123:password")
        >>> ref.region, ref.name, ref.json_key
        ('us-east-1', 'prod/db-XyZ123', 'password')
    """

    service: Service | None
    partition: str
    region: str
    account: str
    #: Secrets Manager: the name as written (with the 6-char suffix when the ARN is full);
    #: SSM: the parameter name (with its leading ``/`` when hierarchical); alias: the alias.
    name: str
    json_key: str | None = None
    version_stage: str | None = None
    version_id: str | None = None
    alias: str | None = None

    # -- identity -------------------------------------------------------------------------------------------
    @property
    def is_alias(self) -> bool:
        return self.alias is not None and self.service is None

    @property
    def group(self) -> str:
        if self.service is None:
            return ALIAS_GROUP
        if self.service == "secretsmanager":
            return f"arn:{self.partition}:secretsmanager:{self.region}:{self.account}:secret:"
        return f"arn:{self.partition}:ssm:{self.region}:{self.account}:parameter/"

    @property
    def base_key(self) -> str:
        """The key without trailing fields: what the cluster's AWS webhook is handed."""
        if self.service == "ssm":
            return self.name.lstrip("/")
        return self.name if self.service else (self.alias or "")

    @property
    def key(self) -> str:
        fields = [self.json_key or "", self.version_stage or "", self.version_id or ""]
        while fields and not fields[-1]:
            fields.pop()
        return ":".join([self.base_key, *fields])

    @property
    def arn(self) -> str:
        """The ARN without trailing fields (partial when the reference was partial)."""
        if self.service is None:
            raise ValueError("an alias has no ARN until the settings resolve it")
        return self.group + self.base_key

    @property
    def full_arn(self) -> bool:
        """True when a Secrets Manager ARN ends in the 6-character suffix AWS adds."""
        return self.service == "secretsmanager" and bool(_SUFFIX.search(self.name))

    @property
    def fetch_id(self) -> tuple[str, ...]:
        """What identifies one AWS read: requests differing only by JSON key share it."""
        return (
            self.service or "alias",
            self.partition,
            self.region,
            self.account,
            self.name,
            self.version_stage or "",
            self.version_id or "",
        )

    def with_fields(
        self, json_key: str | None, version_stage: str | None, version_id: str | None
    ) -> SecretRef:
        return SecretRef(
            self.service,
            self.partition,
            self.region,
            self.account,
            self.name,
            json_key if json_key is not None else self.json_key,
            version_stage if version_stage is not None else self.version_stage,
            version_id if version_id is not None else self.version_id,
            self.alias,
        )

    def __str__(self) -> str:
        if self.service is None:
            return ALIAS_GROUP + self.key
        return self.group + self.key


_GROUP_PARTITION = r"arn:(?:aws|aws-cn|aws-us-gov)"
_GROUP_PLACE = r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}:\d{12}"
#: A Secrets Manager group, with or without the trailing ':' (flytekit and the AWS webhook accept both).
_SM_GROUP = re.compile(rf"^{_GROUP_PARTITION}:secretsmanager:{_GROUP_PLACE}:secret:?$")
#: An SSM group, with or without the trailing '/'.
_SSM_GROUP = re.compile(rf"^{_GROUP_PARTITION}:ssm:{_GROUP_PLACE}:parameter/?$")


@functools.lru_cache(maxsize=4096)
def is_aws_group(group: str | None) -> bool:
    """True when a flytekit ``Secret.group`` is one this plugin claims (cached: it is asked on hot paths).

    Claimed are :data:`ALIAS_GROUP`, a well-formed Secrets Manager group (``arn:<partition>:secretsmanager:
    <region>:<account>:secret:``, the trailing ``:`` optional), a well-formed SSM group (``...:parameter/``,
    the trailing ``/`` optional), and a whole well-formed ARN written in the group. Anything else, even if it
    starts with ``arn:``, is left to flytekit untouched (logged at debug level once per group).
    """
    if not group or not isinstance(group, str):
        return False
    if group == ALIAS_GROUP or _SM_GROUP.match(group) or _SSM_GROUP.match(group):
        return True
    if not group.startswith("arn:"):
        return False
    try:
        # The shape decides what is ours; a region typo is then reported as our error, not left to flytekit.
        _parse_arn(group, known_region=False)
    except InvalidReferenceError as e:
        logger.debug(
            "secret group %r is not an AWS reference this plugin parses (%s); left to flytekit",
            group,
            e.reason,
        )
        return False
    return True


def _fail(text: str, bad: str, expected: str = _ANY_SHAPE) -> InvalidReferenceError:
    return InvalidReferenceError(text, bad, expected)


def _check_trailing(
    text: str, service: Service, fields: list[str]
) -> tuple[str | None, str | None, str | None]:
    shape = _SM_SHAPE if service == "secretsmanager" else _SSM_SHAPE
    if len(fields) > 3:
        raise _fail(text, f"too many ':' fields after the name ({len(fields)}; at most 3)", shape)
    fields = fields + [""] * (3 - len(fields))
    json_key, stage, version = (f or None for f in fields)
    if stage is not None and not _STAGE.match(stage):
        raise _fail(text, f"version stage {stage!r} has characters AWS does not allow", shape)
    if version is not None:
        pattern = _VERSION_ID if service == "secretsmanager" else _SSM_VERSION
        if not pattern.match(version):
            what = "a version id" if service == "secretsmanager" else "a version number"
            raise _fail(text, f"{version!r} is not {what}", shape)
    if service == "secretsmanager" and stage and version:
        # GetSecretValue accepts both only when they point at the same version; we keep it simple and strict.
        raise _fail(text, "give a version stage or a version id, not both", shape)
    return json_key, stage, version


def _parse_arn(text: str, *, known_region: bool = True) -> SecretRef:
    """Parse an ARN; with ``known_region``, its region must also be one AWS has (see :mod:`regions`)."""
    parts = text.split(":", 5)
    if len(parts) < 6:
        raise _fail(text, f"an ARN has 6 ':'-separated parts, this one has {len(parts)}")
    _, partition, service, region, account, rest = parts
    if partition not in _PARTITION_REGION:
        raise _fail(text, f"unknown partition {partition!r} (aws, aws-cn or aws-us-gov)")
    if service not in ("secretsmanager", "ssm"):
        raise _fail(text, f"service {service!r} is neither secretsmanager nor ssm")
    shape = _SM_SHAPE if service == "secretsmanager" else _SSM_SHAPE
    if not _REGION.match(region):
        raise _fail(text, f"region {region!r} is not a region name like us-east-1", shape)
    prefix = _PARTITION_REGION[partition]
    if prefix and not region.startswith(prefix):
        raise _fail(text, f"region {region!r} is not in partition {partition!r}", shape)
    if prefix is None and (region.startswith("cn-") or region.startswith("us-gov-")):
        raise _fail(text, f"region {region!r} belongs to another partition than 'aws'", shape)
    if known_region:
        from flytekitplugins_awssecrets.regions import region_problem

        problem = region_problem(region, partition)
        if problem:
            raise _fail(text, problem, shape)
    if not _ACCOUNT.match(account):
        raise _fail(text, f"account {account!r} is not a 12-digit account id", shape)
    if service == "secretsmanager":
        if not rest.startswith("secret:"):
            raise _fail(text, "a Secrets Manager ARN continues with 'secret:<name>'", shape)
        name, *fields = rest[len("secret:") :].split(":")
        if not name:
            raise _fail(text, "the secret name is empty", shape)
        if not _SM_NAME.match(name):
            raise _fail(text, f"secret name {name!r} has characters AWS does not allow", shape)
        json_key, stage, version = _check_trailing(text, "secretsmanager", fields)
        return SecretRef("secretsmanager", partition, region, account, name, json_key, stage, version)
    if not rest.startswith("parameter/"):
        raise _fail(text, "an SSM ARN continues with 'parameter/<name>'", shape)
    path, *fields = rest[len("parameter/") :].split(":")
    if not path or path.startswith("/") or path.endswith("/") or "//" in path:
        raise _fail(text, f"parameter name {path!r} is empty or has an empty path segment", shape)
    if not _SSM_NAME.match(path):
        raise _fail(text, f"parameter name {path!r} has characters SSM does not allow", shape)
    name = "/" + path if "/" in path else path
    json_key, label, version = _check_trailing(text, "ssm", fields)
    return SecretRef("ssm", partition, region, account, name, json_key, label, version)


def _parse_alias(text: str) -> SecretRef:
    alias, *fields = text.split(":")
    if not _ALIAS.match(alias):
        raise _fail(text, f"{alias!r} is neither an ARN nor a valid alias name")
    if len(fields) > 3:
        raise _fail(text, f"too many ':' fields after the alias ({len(fields)}; at most 3)")
    fields = fields + [""] * (3 - len(fields))
    json_key, stage, version = (f or None for f in fields)
    return SecretRef(None, "", "", "", alias, json_key, stage, version, alias=alias)


def parse_reference(text: str) -> SecretRef:
    """Parse an ARN (with optional ECS-style trailing fields) or an alias into a :class:`SecretRef`.

    Raises :class:`~flytekitplugins_awssecrets.errors.InvalidReferenceError` naming the bad part.
    """
    if not isinstance(text, str):
        raise InvalidReferenceError(repr(type(text)), "a reference must be a string", _ANY_SHAPE)
    text = text.strip()
    if not text:
        raise _fail("''", "the reference is empty")
    if text.startswith("arn:"):
        return _parse_arn(text)
    if text.startswith(ALIAS_GROUP):
        return _parse_alias(text[len(ALIAS_GROUP) :])
    return _parse_alias(text)


def reference_from_request(
    group: str | None, key: str | None, group_version: str | None = None
) -> SecretRef | None:
    """The reference behind a flytekit ``Secret(group, key, group_version)``, or None if it is not ours.

    A request whose group is claimed (see :func:`is_aws_group`) but whose key, or ``group_version``, is not
    valid raises :class:`~flytekitplugins_awssecrets.errors.InvalidReferenceError`.
    """
    if not is_aws_group(group):
        return None
    assert group is not None
    if group == ALIAS_GROUP:
        ref = _parse_alias(key or "")
    elif _SM_GROUP.match(group) or _SSM_GROUP.match(group):
        sep = ":" if ":secretsmanager:" in group else "/"
        base = group if group.endswith(sep) else group + sep
        if not key:
            raise _fail(group, "the key is empty: give the secret or parameter name as the key")
        ref = _parse_arn(base + key)
    else:
        # A whole ARN in the group with no key is accepted too (seed 002 users sometimes do this).
        if key:
            raise _fail(group + key, "the group must end with ':secret:' or ':parameter/'")
        ref = _parse_arn(group)
    if group_version:
        ref = _with_group_version(ref, group_version)
    return ref


def _with_group_version(ref: SecretRef, group_version: str) -> SecretRef:
    """Apply flytekit's ``group_version`` as the version id (SSM: version number), validated here."""
    if ref.service == "ssm":
        if not _SSM_VERSION.match(group_version):
            raise _fail(str(ref), f"group_version {group_version!r} is not an SSM version number", _SSM_SHAPE)
    elif not _VERSION_ID.match(group_version):
        raise _fail(str(ref), f"group_version {group_version!r} is not a version id", _SM_SHAPE)
    if ref.version_id is not None and ref.version_id != group_version:
        raise _fail(
            str(ref), f"group_version {group_version!r} differs from the version id in the key", "one version"
        )
    if ref.service == "secretsmanager" and ref.version_stage:
        raise _fail(str(ref), "give a version stage or a version id (group_version), not both", _SM_SHAPE)
    return ref.with_fields(None, None, group_version)


def split_arn(arn: str) -> tuple[str, str]:
    """Split a secret or parameter ARN into flytekit's ``(group, key)``.

    >>> split_arn("arn:aws:secretsmanager:eu-west-1:123456789012:secret:tls-cert-QwErTy")
    ('arn:aws:secretsmanager:eu-west-1:123456789012:secret:', 'tls-cert-QwErTy')
    """
    if not isinstance(arn, str) or not arn.strip().startswith("arn:"):
        raise InvalidReferenceError(str(arn), "not an ARN", _ANY_SHAPE)
    ref = _parse_arn(arn.strip())
    return ref.group, ref.key
