"""``flyte.Secret`` objects for AWS references: :func:`aws_secret` (re-exported by the adapter's package)."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from flytekitplugins_awssecrets.errors import InvalidReferenceError
from flytekitplugins_awssecrets.refs import SecretRef, parse_reference

if TYPE_CHECKING:
    import flyte

__all__ = ["aws_secret"]


def _with_fields(
    arn: str, json_key: str | None, version_stage: str | None, version_id: str | None
) -> SecretRef:
    ref = parse_reference(arn)
    for name, value in (("json_key", json_key), ("version_stage", version_stage), ("version_id", version_id)):
        if value is not None and (not isinstance(value, str) or ":" in value or not value):
            raise InvalidReferenceError(
                arn, f"{name}={value!r} must be a non-empty string without ':'", "text"
            )
    if version_stage is not None or version_id is not None:
        # An explicit version replaces any version written in the ARN's trailing fields.
        ref = SecretRef(
            ref.service,
            ref.partition,
            ref.region,
            ref.account,
            ref.name,
            ref.json_key,
            version_stage,
            version_id,
            ref.alias,
        )
    return parse_reference(str(ref.with_fields(json_key, None, None)))  # validated by the one parser


def aws_secret(
    arn: str,
    *,
    as_env_var: str | None = None,
    mount: bool = False,
    json_key: str | None = None,
    version_stage: str | None = None,
    version_id: str | None = None,
) -> flyte.Secret:
    """Build a ``flyte.Secret`` for an AWS secret, SSM parameter or alias.

    ``as_env_var="NAME"`` puts the value in exactly ``NAME``; ``mount=True`` (the default when no
    ``as_env_var`` is given) puts it in the file ``$FLYTE_SECRETS_DEFAULT_DIR/<lower(group)>/<lower(key)>``,
    as Flyte's AWS webhook does. ``json_key`` extracts one field of a JSON secret; ``version_stage`` /
    ``version_id`` pin a version (for SSM: a label / a version number).

    Example::

        DB = aws_secret("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-XyZ123",
                        json_key="password", as_env_var="DB_PASSWORD")

    Raises :class:`InvalidReferenceError` at once (at module import) for a malformed reference. Building one
    also installs the adapter's hook, so a task declared with it is served even without ``flyte.init()``.
    """
    import flyte

    from flytekitplugins_awssecrets.flyte2.entrypoint import load
    from flytekitplugins_awssecrets.flyte2.requests import FLYTE_MOUNT

    ref = _with_fields(arn, json_key, version_stage, version_id)
    if as_env_var is not None and not isinstance(as_env_var, str):
        raise InvalidReferenceError(arn, f"as_env_var={as_env_var!r}", "an environment variable name")
    try:
        secret = flyte.Secret(
            key=ref.key,
            group=ref.group,
            as_env_var=as_env_var or None,
            mount=pathlib.Path(FLYTE_MOUNT) if (mount or not as_env_var) else None,
        )
    except ValueError as e:
        raise InvalidReferenceError(arn, str(e), "as_env_var matching ^[A-Z_][A-Z0-9_]*$") from None
    load()
    return secret
