"""flytekit ``Secret`` objects for AWS references: :func:`aws_secret` (re-exported by the package)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flytekitplugins_awssecrets.errors import InvalidReferenceError
from flytekitplugins_awssecrets.refs import parse_reference

if TYPE_CHECKING:
    from flytekit.models.security import Secret

__all__ = ["aws_secret"]


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
