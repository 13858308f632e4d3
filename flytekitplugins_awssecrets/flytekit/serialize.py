"""What reaches the cluster: the serialised task (and launch plan) for the cluster mode of its project/domain.

Registration (``pyflyte register``, ``package``, ``serialize``, ``run --remote``) passes every task spec
through :func:`rewrite_task_spec`. For each AWS request it decides who serves it, records the decision in
the template and prints a summary line, so the spec is never silently different from what was written:

* **webhook** -- a cluster whose Flyte secret webhook is the AWS type (seed 002's setup). The webhook serves
  a request only as written: a Secrets Manager ARN split into group and plain key (no JSON key, no version
  fields, no ``group_version``), mounted as ``FILE`` or ``ANY`` without ``env_var``; it mounts the whole
  secret at ``/etc/flyte/secrets/<lower(group)>/<lower(key)>``. Those requests stay in the spec unchanged.
* **pod** -- everything else (``plugin`` mode: every AWS request) is left out of the spec's security
  context, because a Kubernetes-type webhook would try to mount a Kubernetes secret named after an ARN and
  the pod would never start, and the AWS webhook would fail ENV_VAR requests or hand over the wrong thing.
  The plugin resolves these in the pod.

The template's ``config`` holds the record (``awssecrets.requests``: every AWS request as written, with
``served_by``; ``awssecrets.mode``), so the console shows it and a shim task loaded from its template in
the pod finds its requests there. A task that does not run flytekit in its pod (``ContainerTask``, a
connector task) cannot be served by the plugin: an AWS request the webhook does not serve as written fails
registration with :class:`~flytekitplugins_awssecrets.errors.UnservableRequestError`.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

from flytekitplugins_awssecrets.errors import AwsSecretsError, SettingsError, UnservableRequestError
from flytekitplugins_awssecrets.refs import SecretRef, is_aws_group, reference_from_request

__all__ = [
    "RECORD_KEY",
    "MODE_KEY",
    "Decision",
    "plan_requests",
    "recorded_requests",
    "rewrite_task_spec",
    "rewrite_launch_plan",
    "check_settings",
    "check_local_task",
    "webhook_serves",
    "served_by_webhook",
]

logger = logging.getLogger("flytekitplugins_awssecrets")

#: Template config key holding every AWS request of the task as written, with who serves it (JSON).
RECORD_KEY = "awssecrets.requests"
#: Template config key holding the cluster mode the task was registered for.
MODE_KEY = "awssecrets.mode"

_SIDECAR_FIX = (
    "use cluster mode 'webhook' for this project/domain (FLYTE_AWS_SECRETS_CLUSTER_MODES) with a Secrets "
    "Manager request the AWS webhook serves as written (plain key, FILE or ANY, no env_var), or run "
    "`pyflyte-awssecrets serve` as a sidecar and read the secret from it in the container"
)


@dataclass(frozen=True)
class Decision:
    """Who serves one AWS request: ``"webhook"`` (kept in the spec) or ``"pod"`` (the plugin, in the pod)."""

    secret: Any
    ref: SecretRef
    served_by: str


def _mount(secret: Any) -> str:
    m = getattr(secret, "mount_requirement", None)
    return str(getattr(m, "name", "ANY"))


def webhook_serves(secret: Any, ref: SecretRef) -> bool:
    """True when Flyte's AWS webhook mounts exactly what this request asks for.

    The webhook fetches ``group.rstrip(':') + ':' + key`` (the current version) and writes the whole secret
    to a file; it refuses ``ENV_VAR`` and ignores ``env_var`` and ``group_version``.
    """
    return (
        ref.service == "secretsmanager"
        and not ref.is_alias
        and ref.json_key is None
        and ref.version_stage is None
        and ref.version_id is None
        and not getattr(secret, "group_version", None)
        and not getattr(secret, "env_var", None)
        and _mount(secret) in ("FILE", "ANY")
        and ":" not in (secret.key or "")
    )


def plan_requests(secrets: list[Any], mode: str) -> list[Decision]:
    """Decide, for the AWS requests among ``secrets``, who serves each in ``mode``; validates them all."""
    out: list[Decision] = []
    for s in secrets:
        if not is_aws_group(getattr(s, "group", None)):
            continue
        ref = reference_from_request(s.group, s.key, s.group_version)
        assert ref is not None
        served_by = "webhook" if mode == "webhook" and webhook_serves(s, ref) else "pod"
        out.append(Decision(s, ref, served_by))
    return out


# --- what kind of task ----------------------------------------------------------------------------------------

_FLYTEKIT_ENTRYPOINTS = ("pyflyte-execute", "pyflyte-fast-execute", "pyflyte-map-execute")


def _args_run_flytekit(args: Any) -> bool:
    return any(any(e in str(a) for e in _FLYTEKIT_ENTRYPOINTS) for a in (args or []))


def runs_flytekit_in_pod(entity: Any, template: Any) -> bool:
    """True when the task's pod runs ``pyflyte-execute`` (so the plugin, installed in the image, runs too)."""
    try:
        from flytekit.core.container_task import ContainerTask

        if isinstance(entity, ContainerTask):
            return False
    except ImportError:  # pragma: no cover - every supported flytekit has it
        pass
    container = getattr(template, "container", None)
    if container is not None:
        return _args_run_flytekit(getattr(container, "args", None)) or _args_run_flytekit(
            getattr(container, "command", None)
        )
    pod = getattr(template, "k8s_pod", None)
    spec = getattr(pod, "pod_spec", None) or {}
    for c in spec.get("containers", []) if isinstance(spec, dict) else []:
        if _args_run_flytekit(c.get("args")) or _args_run_flytekit(c.get("command")):
            return True
    return False


# --- settings -------------------------------------------------------------------------------------------------


def _settings() -> Any:
    from flytekitplugins_awssecrets.settings import get_settings

    return get_settings()


def check_settings(ctx: Any) -> None:
    """Read the settings before a task runs; in a pod a bad setting is a non-recoverable *user* error."""
    try:
        _settings()
    except SettingsError as e:
        state = getattr(ctx, "execution_state", None)
        if state is None or state.is_local_execution():
            raise
        from flytekit.exceptions.user import FlyteUserRuntimeException

        raise FlyteUserRuntimeException(e) from None


def _registration_error(e: AwsSecretsError) -> BaseException:
    """At registration, a bad setting or request is the user's to fix: a flytekit user error that says so."""
    try:
        from flytekit.exceptions.user import FlyteUserException
    except ImportError:  # pragma: no cover
        return e

    class AwsSecretsRegistrationError(FlyteUserException):  # type: ignore[misc]
        _ERROR_CODE = "USER:AwsSecretsMisconfigured"

    err = AwsSecretsRegistrationError(f"flytekitplugins-awssecrets: {e}")
    err.__cause__ = e
    return err


# --- the template record --------------------------------------------------------------------------------------


def _record(decisions: list[Decision]) -> str:
    return json.dumps(
        [
            {
                "group": d.secret.group,
                "key": d.secret.key,
                "group_version": d.secret.group_version,
                "mount_requirement": _mount(d.secret),
                "env_var": getattr(d.secret, "env_var", None),
                "served_by": d.served_by,
            }
            for d in decisions
        ],
        sort_keys=True,
    )


def served_by_webhook(template: Any) -> set[tuple[str, str, str | None]] | None:
    """The requests (group, key, group_version) a template's record hands to the cluster webhook, or None
    without a record."""
    config = getattr(template, "config", None) or {}
    raw = config.get(RECORD_KEY) if isinstance(config, dict) else None
    if not raw:
        return None
    return {
        (item["group"], item.get("key") or "", item.get("group_version"))
        for item in json.loads(raw)
        if item.get("served_by") == "webhook"
    }


def recorded_requests(template: Any) -> list[Any] | None:
    """The AWS requests recorded in a task template (flytekit ``Secret`` models), or None without a record."""
    config = getattr(template, "config", None) or {}
    raw = config.get(RECORD_KEY) if isinstance(config, dict) else None
    if not raw:
        return None
    from flytekit.models.security import Secret

    out: list[Any] = []
    for item in json.loads(raw):
        kwargs: dict[str, Any] = {
            "group": item["group"],
            "key": item.get("key"),
            "group_version": item.get("group_version"),
            "mount_requirement": Secret.MountType[item.get("mount_requirement") or "ANY"],
        }
        if item.get("env_var") is not None:
            kwargs["env_var"] = item["env_var"]
        out.append(Secret(**kwargs))
    return out


def _rebuilt(obj: Any, **changes: Any) -> Any:
    """A copy of a flytekit model built through its public constructor, with some arguments changed."""
    params = [p for p in inspect.signature(type(obj).__init__).parameters if p != "self"]
    kwargs = {p: changes[p] if p in changes else getattr(obj, p) for p in params}
    return type(obj)(**kwargs)


def _new_security_context(sc: Any, kept_aws: list[Any]) -> Any:
    others = [s for s in (sc.secrets or []) if not is_aws_group(getattr(s, "group", None))]
    secrets = others + kept_aws
    return _rebuilt(sc, secrets=secrets or None)


def _summary(kind: str, name: str, mode: str, decisions: list[Decision]) -> str:
    hook = sum(d.served_by == "webhook" for d in decisions)
    pod = len(decisions) - hook
    parts = []
    if hook:
        parts.append(f"{hook} AWS request{'s' if hook != 1 else ''} kept for the cluster's webhook")
    if pod:
        parts.append(f"{pod} resolved in the pod")
    return f"flytekitplugins-awssecrets: {kind} {name} (cluster mode {mode}): {', '.join(parts)}"


def _mode(settings: Any) -> str:
    project = getattr(settings, "project", None)
    domain = getattr(settings, "domain", None)
    return str(_settings().mode_for(project, domain))


def rewrite_task_spec(spec: Any, entity: Any, settings: Any) -> Any:
    """The spec fit for the cluster (see the module docstring); unchanged for a task without AWS requests."""
    template = getattr(spec, "template", None)
    sc = getattr(template, "security_context", None)
    if (
        template is None
        or sc is None
        or not any(is_aws_group(getattr(s, "group", None)) for s in sc.secrets or [])
    ):
        return spec
    name = template.id.name
    try:
        mode = _mode(settings)
        decisions = plan_requests(list(sc.secrets or []), mode)
    except AwsSecretsError as e:
        raise _registration_error(e) from e
    if not runs_flytekit_in_pod(entity, template):
        for d in decisions:
            if d.served_by != "webhook":
                why = (
                    f"a {type(entity).__name__} does not run flytekit in its pod, so the plugin cannot "
                    f"resolve this request there, and in cluster mode {mode!r} "
                    + (
                        "no webhook serves it"
                        if mode != "webhook"
                        else "the AWS webhook does not serve it as written"
                    )
                )
                raise _registration_error(
                    UnservableRequestError(f"task {name!r}", str(d.ref), why, _SIDECAR_FIX)
                )
    for d in decisions:
        env_var = getattr(d.secret, "env_var", None)
        if _mount(d.secret) == "ANY" and env_var:
            from flytekitplugins_awssecrets.mount import any_with_env_var

            raise _registration_error(any_with_env_var(str(d.ref), env_var))
    kept = [d.secret for d in decisions if d.served_by == "webhook"]
    config = dict(template.config or {})
    config[RECORD_KEY] = _record(decisions)
    config[MODE_KEY] = mode
    changes: dict[str, Any] = {"security_context": _new_security_context(sc, kept), "config": config}
    from flytekitplugins_awssecrets.flytekit.podguard import route_template

    routed = route_template(template, mode)
    changes.update(routed)
    new_template = _rebuilt(template, **changes)
    summary = _summary("task", name, mode, decisions)
    if routed:
        from flytekitplugins_awssecrets.flytekit.podguard import SCRIPT

        summary += (
            f"; its container command runs through {SCRIPT}, so a pod whose image lacks the plugin (or "
            "has it turned off) fails before user code, saying why"
        )
    print(summary, file=sys.stderr)
    _warn_image_spec(entity, name)
    return _rebuilt(spec, template=new_template)


_PLUGIN_NAMES = ("flytekitplugins-awssecrets", "flytekitplugins_awssecrets")


def _installs_plugin(image: Any, depth: int = 0) -> bool | None:
    """True/False when an ``ImageSpec`` does/does not install the plugin, None when it cannot be told."""
    if depth > 8:
        return None
    packages = [str(p).lower() for p in (getattr(image, "packages", None) or [])]
    if any(n in p for p in packages for n in _PLUGIN_NAMES):
        return True
    requirements = getattr(image, "requirements", None)
    if requirements:
        try:
            with open(requirements, encoding="utf-8") as f:
                text = f.read().lower()
        except OSError:
            return None
        if any(n in text for n in _PLUGIN_NAMES):
            return True
    base = getattr(image, "base_image", None)
    if base is not None and not isinstance(base, str):
        return _installs_plugin(base, depth + 1)
    # A base image given by name may hold the plugin already: say so, since it cannot be checked here.
    return None if isinstance(base, str) and base else False


def _warn_image_spec(entity: Any, name: str) -> None:
    """Registration's warning when the task's ``ImageSpec`` does not install the plugin (the pod would fail
    at its first command, see :mod:`podguard`)."""
    image = getattr(entity, "container_image", None)
    if image is None or isinstance(image, str):
        return
    if _installs_plugin(image) is not False:
        return  # installed, or a named base image that may hold it (not checked from here)
    where = getattr(image, "name", None) or "its ImageSpec"
    print(
        f"flytekitplugins-awssecrets: WARNING: task {name} uses ImageSpec {where!r}, which does not install "
        "flytekitplugins-awssecrets (not in its packages or requirements); its pod needs the plugin to "
        "resolve its AWS requests and will fail before user code: add "
        "packages=['flytekitplugins-awssecrets'] to the ImageSpec",
        file=sys.stderr,
    )


def rewrite_launch_plan(lp: Any, entity: Any, settings: Any) -> Any:
    """A launch plan's own security context: the pod never sees it, so only webhook-served requests may stay."""
    spec = getattr(lp, "spec", None)
    sc = getattr(spec, "security_context", None)
    if sc is None or not any(is_aws_group(getattr(s, "group", None)) for s in sc.secrets or []):
        return lp
    name = getattr(getattr(lp, "id", None), "name", "?")
    try:
        mode = _mode(settings)
        decisions = plan_requests(list(sc.secrets or []), mode)
    except AwsSecretsError as e:
        raise _registration_error(e) from e
    for d in decisions:
        if d.served_by != "webhook":
            why = (
                "the plugin in the pod does not see a launch plan's security context, and in cluster mode "
                f"{mode!r} "
                + (
                    "no webhook serves it"
                    if mode != "webhook"
                    else "the AWS webhook does not serve it as written"
                )
            )
            fix = "declare the request on the task (@task(secret_requests=[...])) instead of the launch plan"
            raise _registration_error(UnservableRequestError(f"launch plan {name!r}", str(d.ref), why, fix))
    print(_summary("launch plan", name, mode, decisions), file=sys.stderr)
    return lp


def check_local_task(task: Any, requests: list[Any], ctx: Any) -> None:
    """A ``ContainerTask`` run locally gets its secrets nowhere (its container starts without them): refuse."""
    try:
        from flytekit.core.container_task import ContainerTask
    except ImportError:  # pragma: no cover
        return
    if not isinstance(task, ContainerTask) or not requests:
        return
    s = requests[0]
    ref = reference_from_request(s.group, s.key, s.group_version)
    raise UnservableRequestError(
        f"task {getattr(task, 'name', '?')!r}",
        str(ref) if ref is not None else f"{s.group}{s.key or ''}",
        "a ContainerTask runs its own container, which the plugin cannot mount secrets into",
        "run `pyflyte-awssecrets serve` next to the container and read the secret from it",
    )
