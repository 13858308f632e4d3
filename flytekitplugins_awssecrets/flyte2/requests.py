"""What a Flyte 2 task asked for: ``flyte.Secret`` objects turned into core references and mount instructions.

Pure (no I/O, no boto3, no flytekit): a ``flyte.Secret(key, group, mount, as_env_var)`` whose group this plugin
claims (see :func:`~flytekitplugins_awssecrets.refs.is_aws_group`) becomes one :class:`AwsRequest`:

* ``as_env_var="NAME"`` -- the value goes into exactly ``NAME``;
* ``mount="/etc/flyte/secrets"`` -- the value goes into the file ``<lower(group)>/<lower(key)>`` (a ``/`` in
  the key makes directories) under the task's secrets directory, as Flyte's AWS webhook lays it out.

Flyte writes the spec the same way (``task_serde.get_security_context``: ENV_VAR when there is a name, FILE
otherwise), so what runs locally and what the cluster sees agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flytekitplugins_awssecrets.errors import AwsSecretsError, InvalidReferenceError
from flytekitplugins_awssecrets.mount import ENV, FILE
from flytekitplugins_awssecrets.refs import SecretRef, is_aws_group, reference_from_request

__all__ = ["FLYTE_MOUNT", "AwsRequest", "aws_requests", "file_parts"]

#: The only ``mount`` flyte 2 accepts (``flyte._secret.Secret.__post_init__``).
FLYTE_MOUNT = "/etc/flyte/secrets"


@dataclass(frozen=True)
class AwsRequest:
    """One AWS secret request of a Flyte 2 task, in the shape the core resolver reads.

    ``mount_requirement`` and ``env_var`` are the names :func:`~flytekitplugins_awssecrets.resolver.
    resolve_requests` reads; ``as_env_var``/``file`` say where the adapter puts the value.

    Example::

        [req] = aws_requests([flyte.Secret(group="arn:aws:secretsmanager:...:secret:", key="db-AbC123",
                                           as_env_var="DB")])
        req.as_env_var  # "DB"
    """

    group: str
    key: str
    ref: SecretRef
    as_env_var: str | None
    file: bool
    group_version: str | None = None

    @property
    def mount_requirement(self) -> Any:
        return _Mount(FILE if self.file and not self.as_env_var else ENV)

    @property
    def env_var(self) -> str | None:
        return self.as_env_var


@dataclass(frozen=True)
class _Mount:
    name: str


def file_parts(group: str, key: str) -> list[str]:
    """Where Flyte's AWS webhook puts a secret, relative to its secrets directory."""
    return [group.lower(), *key.lower().split("/")]


#: A group that names AWS Secrets Manager or SSM but that the plugin does not parse. flytekit has other secret
#: providers to leave such a group to; Flyte 2 has none locally, and the AWS webhook would fail it in the pod,
#: so the adapter names it instead of letting the task's code run without it.
_AWS_LOOKING = re.compile(r"^arn:[^:]*:(secretsmanager|ssm):")


def _one(secret: Any) -> AwsRequest | None:
    group = getattr(secret, "group", None)
    if not is_aws_group(group):
        if isinstance(group, str) and _AWS_LOOKING.match(group):
            key = str(getattr(secret, "key", "") or "")
            raise InvalidReferenceError(
                f"{group}{key}",
                "not a Secrets Manager or SSM reference the plugin parses",
                "group='arn:<partition>:secretsmanager:<region>:<12-digit account>:secret:' and "
                "key='<name>-<6 characters>' (or an SSM '...:parameter/' group), e.g. from aws_secret(arn)",
            )
        return None
    assert isinstance(group, str)
    key = str(getattr(secret, "key", "") or "")
    ref = reference_from_request(group, key)
    assert ref is not None
    mount = getattr(secret, "mount", None)
    if mount is not None and str(mount) != FLYTE_MOUNT:
        raise InvalidReferenceError(
            str(ref), f"mount={str(mount)!r}", f"mount={FLYTE_MOUNT!r} (the only one Flyte allows)"
        )
    env = getattr(secret, "as_env_var", None)
    if env is not None and not isinstance(env, str):
        raise InvalidReferenceError(str(ref), f"as_env_var={env!r}", "an environment variable name")
    if not env and mount is None:
        raise InvalidReferenceError(
            str(ref), "neither as_env_var nor mount is set", "as_env_var='NAME' or mount"
        )
    return AwsRequest(group, key, ref, env or None, mount is not None)


def aws_requests(secrets: Iterable[Any] | None) -> list[AwsRequest]:
    """The AWS requests among a task's ``flyte.Secret`` objects (others are left to Flyte).

    Raises :class:`~flytekitplugins_awssecrets.errors.SecretResolutionError` naming every request that the
    plugin cannot serve (a claimed group with a bad key, a ``mount`` Flyte does not allow).
    """
    from flytekitplugins_awssecrets.errors import SecretResolutionError

    out: list[AwsRequest] = []
    errors: list[AwsSecretsError] = []
    for s in secrets or ():
        try:
            req = _one(s)
        except AwsSecretsError as e:
            errors.append(e)
            continue
        if req is not None:
            out.append(req)
    if errors:
        raise SecretResolutionError(errors)
    return out


def task_secrets(task: Any) -> Sequence[Any]:
    """A flyte ``TaskTemplate``'s secrets as a list of ``flyte.Secret`` (its own field may be one or many)."""
    raw = getattr(task, "secrets", None)
    if raw is None:
        return []
    if isinstance(raw, list | tuple):
        return list(raw)
    return [raw]
