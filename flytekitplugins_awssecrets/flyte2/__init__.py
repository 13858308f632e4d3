"""The Flyte 2 (``flyte`` 2.x SDK) adapter: AWS Secrets Manager and SSM secrets for ``flyte.Secret`` requests.

Public API:

* :func:`aws_secret` -- a valid ``flyte.Secret`` for an ARN or alias (env var or webhook-layout file).

A task declares its secrets with Flyte 2's own API; the plugin resolves every AWS request of a task together
before its code runs, in ``flyte run --local``, ``flyte.run(...)`` and in the pod, and removes them after::

    env = flyte.TaskEnvironment(
        "etl",
        secrets=[aws_secret("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbC123",
                            json_key="password", as_env_var="DB_PASSWORD")],
    )

Modules: :mod:`.secret` (:func:`aws_secret`), :mod:`.requests` (flyte.Secret -> references), :mod:`.mount` (env vars, webhook-layout files),
:mod:`.environ` (each local task's own view of ``os.environ``), :mod:`.run` (around one task), :mod:`.cluster`
(what the serialized spec carries per cluster mode), :mod:`.pod` (the pod's ``flyte-awssecrets-a0``),
:mod:`.hooks` (the private hooks, version-guarded, applied by :mod:`.afterimport` when flyte imports them), :mod:`.entrypoint` (what ``flyte.plugins.types`` loads).
Importing this package imports neither flyte nor boto3, nor anything of the plugin's core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flytekitplugins_awssecrets.flyte2.secret import aws_secret

__all__ = ["aws_secret"]


def __getattr__(name: str) -> Any:
    # Loaded when first asked for: flyte.init() loads the adapter's entry point through this package.
    if name == "aws_secret":
        from flytekitplugins_awssecrets.flyte2.secret import aws_secret

        return aws_secret
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
