"""Values flytekit or the cluster already put in place, which then are not fetched from AWS.

Outside a pod, flytekit's own variable (``_FSEC_...``; in a local execution also without the prefix, as
flytekit reads it) wins; in a pod it is the launcher's input and is not used. Files
are read only for a request the cluster's webhook serves, so a file left under the webhook directory never
wins over AWS elsewhere, and only under ``webhook_dir`` (in a pod, the image's setting).
"""

from __future__ import annotations

import os
from typing import Any

from flytekitplugins_awssecrets.extract import extract_json_key
from flytekitplugins_awssecrets.flytekit.names import flytekit_names
from flytekitplugins_awssecrets.privatefiles import read_secret_file
from flytekitplugins_awssecrets.refs import SecretRef
from flytekitplugins_awssecrets.settings import Settings

__all__ = ["already_present", "is_local_execution"]


def is_local_execution() -> bool:
    from flytekit.core.context_manager import FlyteContextManager

    state = FlyteContextManager.current_context().execution_state
    return state is None or state.is_local_execution()


def already_present(
    request: Any, ref: SecretRef, settings: Settings, webhook: bool = False
) -> tuple[str | bytes, str, str | None] | None:
    """A value the platform already put in place for a flytekit ``Secret``: (value, source, the webhook's
    file when used as it is) with the JSON key applied, or None (the core's ``Present``)."""
    from flytekit.configuration import SecretsConfig

    from flytekitplugins_awssecrets.setting_sources import running_in_pod

    group, key, gv = request.group, request.key or "", request.group_version
    cfg = SecretsConfig.auto()
    env_name, _ = flytekit_names(group, key, gv)
    candidates: list[str] = []
    # A pod's environment is the launcher's (an execution's envs): a ``_FSEC_`` variable there would hand the
    # task a value of its choosing, and no part of a cluster puts one there for an AWS request (registration
    # keeps them from the Kubernetes webhook; the AWS webhook mounts files). So only a local run takes it.
    if not running_in_pod():
        candidates.append(env_name)
        if is_local_execution():
            candidates.append(env_name[len(cfg.env_prefix.strip()) :])
    for name in candidates:
        v = os.environ.get(name)
        if v is not None:
            return v, "env", None
    if not webhook or ref.service is None:
        return None
    # The cluster's AWS webhook mounts the whole secret under the key without trailing fields, in
    # ``webhook_dir`` only: a pod takes that setting from its image (see :mod:`setting_sources`), while
    # flytekit's ``FLYTE_SECRETS_DEFAULT_DIR`` and file prefix are the pod's environment, which a launcher
    # writes and could point at a directory it fills.
    path = os.path.join(settings.webhook_dir, *[p.lower() for p in (group, ref.base_key) if p])
    if os.path.isfile(path):
        raw = read_secret_file(path)
        if ref.json_key:
            return extract_json_key(str(ref), raw, ref.json_key), "webhook", None
        return raw, "webhook", path
    return None
