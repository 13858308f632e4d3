"""flytekitplugins-awssecrets: AWS Secrets Manager and SSM Parameter Store secrets for Flyte tasks.

Installed, the plugin registers itself through flytekit's ``flytekit.plugins`` entry point; tasks declare
secrets as usual and read them with ``flytekit.current_context().secrets.get(group, key)``, locally with
``pyflyte run``, in a pod (``pyflyte-execute``) and in plain Python.

Public API:

* :func:`aws_secret` -- build a flytekit ``Secret`` from an ARN or alias (JSON key, version, mount).
* :func:`split_arn` -- split an ARN into flytekit's ``(group, key)``.
* :func:`parse_reference` and :class:`SecretRef` -- the parsed form of a reference.
* :func:`get_secret_value` / :func:`get_secret_values` -- resolve references outside a task (connectors, scripts).
* :func:`refresh_secrets` -- re-read the running task's ``ANY`` and ``FILE`` secrets now (rotation).
* :func:`current_record` / :func:`recent_records` -- what a task read (references, versions, timings; no
  values), also logged as one JSON line per task and shown in the "AWS secrets" deck.
* :mod:`flytekitplugins_awssecrets.errors` -- the typed errors, re-exported here.

Importing this package imports neither boto3 nor pydantic models and does no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flytekitplugins_awssecrets.errors import (
    AwsSecretsError,
    BinaryToEnvVarError,
    CredentialsRejectedError,
    FileMountOnDiskError,
    InvalidReferenceError,
    JsonKeyNotFoundError,
    MissingTagError,
    MountCollisionError,
    RefreshIntervalError,
    SecretAccessDeniedError,
    SecretDecryptionError,
    SecretFetchError,
    SecretLeakError,
    SecretNotFoundError,
    SecretNotJsonError,
    SecretRefreshError,
    SecretResolutionError,
    SecretThrottledError,
    SettingsError,
    UninspectableOutputError,
    UnknownAliasError,
    UnservableRequestError,
)
from flytekitplugins_awssecrets.record import current_record, recent_records
from flytekitplugins_awssecrets.refs import ALIAS_GROUP, SecretRef, parse_reference, split_arn

if TYPE_CHECKING:
    from flytekit.models.security import Secret

__all__ = [
    "ALIAS_GROUP",
    "AwsSecretsError",
    "BinaryToEnvVarError",
    "FileMountOnDiskError",
    "InvalidReferenceError",
    "JsonKeyNotFoundError",
    "MissingTagError",
    "MountCollisionError",
    "RefreshIntervalError",
    "CredentialsRejectedError",
    "SecretAccessDeniedError",
    "SecretDecryptionError",
    "SecretFetchError",
    "SecretLeakError",
    "SecretNotFoundError",
    "SecretNotJsonError",
    "SecretRefreshError",
    "SecretRef",
    "SecretResolutionError",
    "SecretThrottledError",
    "SettingsError",
    "UninspectableOutputError",
    "UnknownAliasError",
    "UnservableRequestError",
    "aws_secret",
    "current_record",
    "get_secret_value",
    "get_secret_values",
    "parse_reference",
    "recent_records",
    "refresh_secrets",
    "split_arn",
]

#: The one place the version is written: setup.cfg reads it (``attr:``), the release workflow checks the
#: tag against it, and CHANGELOG.md has a section for it (tests/test_release.py).
__version__ = "0.1.0"


def aws_secret(
    arn: str,
    *,
    json_key: str | None = None,
    version_stage: str | None = None,
    version_id: str | None = None,
    mount_requirement: Any = None,
    env_var: str | None = None,
    group_version: str | None = None,
) -> Secret:
    """Build a plain flytekit ``Secret`` for an AWS secret, parameter or alias.

    ``json_key`` extracts one field of a JSON secret (a dotted path for nested keys; ``\\.`` for a literal
    dot, a number indexes a list). ``version_stage``/``version_id`` pin a version (for SSM: a label / a
    version number). ``mount_requirement``, ``env_var`` and ``group_version`` mean what they mean to flytekit
    (``group_version`` is the version id, for SSM the version number, and is validated here).

    Example::

        DB_PASSWORD = aws_secret(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-XyZ123",
            json_key="password",
            mount_requirement=Secret.MountType.ENV_VAR,
            env_var="DB_PASSWORD",
        )

    Raises :class:`InvalidReferenceError` at once (so at module import) for a malformed reference.
    """
    from flytekit.models.security import Secret

    ref = parse_reference(arn)
    for field, value in (
        ("json_key", json_key),
        ("version_stage", version_stage),
        ("version_id", version_id),
    ):
        if value is not None and (not isinstance(value, str) or ":" in value or not value):
            raise InvalidReferenceError(
                arn, f"{field}={value!r} must be a non-empty string without ':'", "text"
            )
    if version_stage is None and version_id is None:
        merged = ref.with_fields(json_key, None, None)
    else:
        # An explicit version replaces any version written in the ARN's trailing fields.
        merged = type(ref)(
            ref.service,
            ref.partition,
            ref.region,
            ref.account,
            ref.name,
            json_key if json_key is not None else ref.json_key,
            version_stage,
            version_id,
            ref.alias,
        )
    merged = parse_reference(str(merged))  # validate the combination once more, through the one parser
    mount = Secret.MountType.ANY if mount_requirement is None else mount_requirement
    if not isinstance(mount, Secret.MountType):
        raise InvalidReferenceError(
            arn, f"mount_requirement={mount_requirement!r}", "a flytekit Secret.MountType"
        )
    if group_version is not None:
        from flytekitplugins_awssecrets.refs import reference_from_request

        if not isinstance(group_version, str) or not group_version:
            raise InvalidReferenceError(arn, f"group_version={group_version!r}", "a non-empty string")
        reference_from_request(merged.group, merged.key, group_version)  # raises if it does not fit
    return Secret(
        group=merged.group,
        key=merged.key,
        group_version=group_version,
        mount_requirement=mount,
        env_var=env_var,
    )


def get_secret_values(references: list[Any]) -> list[str | bytes]:
    """Resolve several references (strings or flytekit ``Secret`` objects) together, outside of a task.

    Uses the same batching, cache and credentials as task resolution. Raises
    :class:`SecretResolutionError` listing every reference that failed.
    """
    from flytekitplugins_awssecrets.resolver import resolve_values

    return resolve_values(references)


def get_secret_value(reference: Any) -> str | bytes:
    """Resolve one reference (string or flytekit ``Secret``) outside of a task; see :func:`get_secret_values`."""
    return get_secret_values([reference])[0]


def refresh_secrets() -> int:
    """Re-read the running task's ``ANY`` and ``FILE`` AWS secrets now; returns how many changed.

    For code that learns a credential was rotated (an authentication failure) before the next scheduled
    refresh, or for tasks without ``refresh_interval_seconds``. See :mod:`flytekitplugins_awssecrets.refresh`.
    """
    from flytekitplugins_awssecrets.refresh import refresh_secrets as _refresh

    return _refresh()
