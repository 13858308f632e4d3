"""What a Flyte 2 task's spec carries to the cluster: the cluster mode of its project and domain, as for flytekit.

When flyte serializes a task (``flyte deploy``, ``flyte run`` against a cluster, a parent submitting a child
in a pod: every path builds the template with ``task_serde.get_proto_task``, wrapped by :mod:`.hooks`),
:func:`rewrite_template` decides for each AWS request who serves it, from the settings' ``cluster_mode`` /
``cluster_modes`` (keyed ``<project>/<domain>``):

* **webhook** -- a request Flyte's AWS secret webhook serves as written (a Secrets Manager ARN with a plain
  key, ``mount`` without ``as_env_var``; it mounts the whole secret at
  ``/etc/flyte/secrets/<lower(group)>/<lower(key)>``), in ``webhook`` mode. It stays in the spec's security
  context; in the pod the plugin takes the webhook's file.
* **pod** -- everything else (``plugin`` mode: every AWS request). It is left out of the security context,
  so a Kubernetes-type webhook never tries to mount a Kubernetes secret named after an ARN (the pod would
  never start), and the AWS webhook never gets an ``ENV_VAR`` or ``name:field`` it would fail or misread.
  The plugin resolves it in the pod, from the task's own ``secrets`` (the code the pod loads).

The template's ``config`` records every AWS request as written with who serves it (``awssecrets.requests``)
and the mode (``awssecrets.mode``), for the console; the container's command runs through
``flyte-awssecrets-a0 --cluster-mode <mode>`` (:mod:`.pod`), so the pod learns the mode from its command line
(written at registration, which no launcher can change, not from its environment, which one can), and a pod
whose image lacks the plugin fails at once instead of running user code without its secrets. Each change is
one :class:`ClusterModeWarning` naming every request it moved. A task whose pod does not run ``a0`` (a
container task) and has a request the webhook does not serve fails registration with
:class:`~flytekitplugins_awssecrets.errors.UnservableRequestError`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

from flytekitplugins_awssecrets.errors import UnservableRequestError
from flytekitplugins_awssecrets.flyte2.requests import AwsRequest, aws_requests, task_secrets
from flytekitplugins_awssecrets.refs import is_aws_group

__all__ = [
    "MODE_KEY",
    "RECORD_KEY",
    "SCRIPT",
    "ClusterModeWarning",
    "plan",
    "rewrite_template",
    "webhook_serves",
]

#: Template config keys, the same as the flytekit adapter's.
RECORD_KEY = "awssecrets.requests"
MODE_KEY = "awssecrets.mode"
#: The console script a routed container runs (:mod:`.pod`).
SCRIPT = "flyte-awssecrets-a0"
_A0 = "a0"

_FIX = (
    "use cluster mode 'webhook' for this project/domain (FLYTE_AWS_SECRETS_CLUSTER_MODES) with a request the "
    "AWS webhook serves as written (aws_secret(arn) with mount, no as_env_var or json_key), or run "
    "`pyflyte-awssecrets serve` as a sidecar and read the secret from it in the container"
)


class ClusterModeWarning(UserWarning):
    """Registration changed what a Flyte 2 task's spec carries for its AWS requests (and says which)."""


def webhook_serves(req: AwsRequest) -> bool:
    """True when Flyte's AWS webhook mounts exactly what ``req`` asks for (a file with the whole secret)."""
    ref = req.ref
    return (
        req.file
        and not req.as_env_var
        and ref.service == "secretsmanager"
        and not ref.is_alias
        and ref.key == ref.base_key  # no JSON key, no version: the webhook would ask AWS for "name:field"
        and ":" not in req.key
    )


def plan(requests: Sequence[AwsRequest], mode: str) -> list[tuple[AwsRequest, str]]:
    """Who serves each request in ``mode``: ``"webhook"`` or ``"pod"``."""
    return [(r, "webhook" if mode == "webhook" and webhook_serves(r) else "pod") for r in requests]


def _describe(req: AwsRequest) -> str:
    where = f"as_env_var={req.as_env_var}" if req.as_env_var else "mount"
    return f"{req.ref} ({where})"


def _route(args: list[str], mode: str) -> list[str] | None:
    """``args`` starting the task runner through :data:`SCRIPT`; None when they do not start ``a0``."""
    if len(args) >= 4 and args[0] == SCRIPT and args[3] == _A0:
        return [SCRIPT, "--cluster-mode", mode, *args[3:]]
    if args and args[0] == _A0:
        return [SCRIPT, "--cluster-mode", mode, *args]
    return None


def _route_template(tt: Any, mode: str) -> bool:
    """Route the container (or the pod template's containers) that run ``a0``; True when one was found."""
    if tt.HasField("container"):
        routed = _route(list(tt.container.args), mode)
        if routed is None:
            return False
        del tt.container.args[:]
        tt.container.args.extend(routed)
        return True
    if tt.HasField("k8s_pod"):
        from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]

        spec = MessageToDict(tt.k8s_pod.pod_spec)
        found = False
        for c in spec.get("containers", []):
            routed = _route(list(c.get("args") or []), mode)
            if routed is not None:
                c["args"], found = routed, True
        if found:
            tt.k8s_pod.pod_spec.Clear()
            tt.k8s_pod.pod_spec.update(spec)
        return found
    return False


def rewrite_template(tt: Any, task: Any, project: str | None, domain: str | None) -> None:
    """Fit the flyte ``TaskTemplate`` proto ``tt`` of ``task`` to its cluster mode (in place; see the module
    docstring). A task without AWS requests is left alone."""
    requests = aws_requests(task_secrets(task))  # a request the plugin cannot serve fails registration here
    if not requests:
        return
    from flytekitplugins_awssecrets.settings import get_settings

    mode = str(get_settings().mode_for(project, domain))
    decisions = plan(requests, mode)
    name = str(getattr(task, "name", "?"))
    kept = {(r.group, r.key, r.as_env_var) for r, by in decisions if by == "webhook"}
    routed = _route_template(tt, mode)
    if not routed:
        for r, by in decisions:
            if by == "pod":
                why = (
                    f"its pod does not run flyte's task runner ({_A0}), so the plugin cannot resolve this "
                    f"request there, and in cluster mode {mode!r} "
                    + (
                        "no webhook serves it"
                        if mode != "webhook"
                        else "the AWS webhook does not serve it as written"
                    )
                )
                raise UnservableRequestError(f"task {name!r}", str(r.ref), why, _FIX)
    sc = tt.security_context
    keep = [s for s in sc.secrets if not is_aws_group(s.group) or (s.group, s.key, s.env_var or None) in kept]
    del sc.secrets[:]
    sc.secrets.extend(keep)
    tt.config[RECORD_KEY] = json.dumps(
        [
            {"group": r.group, "key": r.key, "as_env_var": r.as_env_var, "mount": r.file, "served_by": by}
            for r, by in decisions
        ],
        sort_keys=True,
    )
    tt.config[MODE_KEY] = mode
    moved = [_describe(r) for r, by in decisions if by == "pod"]
    served = [_describe(r) for r, by in decisions if by == "webhook"]
    text = f"flytekitplugins-awssecrets: task {name} (cluster mode {mode}):"
    if moved:
        text += (
            f" left out of the spec's security context, to be resolved by the plugin in the pod "
            f"({'every AWS request in plugin mode' if mode == 'plugin' else 'the AWS webhook does not serve them as written'}): "
            + ", ".join(moved)
            + ";"
        )
    if served:
        text += " kept for the cluster's AWS webhook: " + ", ".join(served) + ";"
    if routed:
        text += (
            f" its container runs through {SCRIPT} --cluster-mode {mode}, so a pod whose image lacks the plugin "
            "fails before user code"
        )
    warnings.warn(text, ClusterModeWarning, stacklevel=3)
