"""What the serialised task spec says about AWS requests, per cluster mode (see ``Settings.cluster_mode``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from flytekitplugins_awssecrets.refs import is_aws_group, reference_from_request

__all__ = ["rewrite_security_context"]


def rewrite_security_context(sc: Any) -> Any:
    """A copy of a task's ``SecurityContext`` fit for the cluster.

    ``plugin`` mode drops AWS requests (the pod re-imports the task and resolves them itself); ``webhook``
    mode keeps current-version ARN requests with the plain ``<name>`` key the AWS webhook understands, and
    drops aliases and pinned versions, which only the plugin can resolve.
    """
    from flytekitplugins_awssecrets.settings import get_settings

    mode = get_settings().cluster_mode
    kept: list[Any] = []
    seen: set[tuple[str, str]] = set()
    for s in sc.secrets or []:
        if not is_aws_group(s.group):
            kept.append(s)
            continue
        if mode != "webhook":
            continue
        ref = reference_from_request(s.group, s.key, s.group_version)
        if (
            ref is None
            or ref.is_alias
            or ref.version_id
            or ref.version_stage
            or ref.service != "secretsmanager"
        ):
            continue
        if (ref.group, ref.base_key) in seen:
            continue
        seen.add((ref.group, ref.base_key))
        kept.append(type(s)(group=ref.group, key=ref.base_key, mount_requirement=type(s).MountType.FILE))
    return dataclasses.replace(sc, secrets=kept or None)
