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

if TYPE_CHECKING:
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
        ScrubbedError,
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
        UntrustedSettingError,
    )
    from flytekitplugins_awssecrets.flytekit.secret import aws_secret
    from flytekitplugins_awssecrets.record import current_record, recent_records
    from flytekitplugins_awssecrets.refs import ALIAS_GROUP, SecretRef, parse_reference, split_arn

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
    "ScrubbedError",
    "UnservableRequestError",
    "UntrustedSettingError",
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


def get_secret_values(references: list[Any]) -> list[str | bytes]:
    """Resolve several references (strings, flytekit ``Secret`` or other SDK requests) together, outside a task.

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


#: Where each lazily loaded public name lives: importing the package costs nothing of its own (``import
#: flytekit`` and Flyte 2's ``flyte.init()`` load the plugin's entry points through it).
_LAZY = {
    **{name: "flytekitplugins_awssecrets.errors" for name in __all__ if name.endswith("Error")},
    "ALIAS_GROUP": "flytekitplugins_awssecrets.refs",
    "SecretRef": "flytekitplugins_awssecrets.refs",
    "parse_reference": "flytekitplugins_awssecrets.refs",
    "split_arn": "flytekitplugins_awssecrets.refs",
    "current_record": "flytekitplugins_awssecrets.record",
    "recent_records": "flytekitplugins_awssecrets.record",
    # aws_secret builds flytekit objects: it lives in the flytekit adapter, so the core (and a Flyte 2
    # user's process) never loads that adapter.
    "aws_secret": "flytekitplugins_awssecrets.flytekit.secret",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
