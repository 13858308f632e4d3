"""The plugin's settings: one typed model, read from the environment and an optional YAML file.

Sources, highest precedence first:

1. environment variables ``FLYTE_AWS_SECRETS_<FIELD>`` (mappings and lists as JSON, e.g.
   ``FLYTE_AWS_SECRETS_ALIASES='{"TestingSecret": "arn:..."}'``);
2. the YAML file named by ``FLYTE_AWS_SECRETS_CONFIG`` (keys are the field names; a Secret Agent
   configuration file is accepted as is, see :func:`from_secret_agent`);
3. the defaults below.

In a pod (``pyflyte-execute``) the file is the image's own, at a fixed path, and the environment may not
change the settings that decide where values go or that turn protections off: see :mod:`setting_sources`.

Every field and its default is documented once, here, on :class:`Settings`. An invalid value raises
:class:`~flytekitplugins_awssecrets.errors.SettingsError` naming the field, the source (env var, or file
and key) and what is expected.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from flytekitplugins_awssecrets.errors import SettingsError

__all__ = ["Settings", "AssumeRole", "get_settings", "load_settings", "ENV_PREFIX", "CONFIG_ENV"]

logger = logging.getLogger(__name__)

ENV_PREFIX = "FLYTE_AWS_SECRETS_"
CONFIG_ENV = "FLYTE_AWS_SECRETS_CONFIG"
#: Variables with the prefix that are not settings fields.
NON_FIELD_ENV = {CONFIG_ENV, "FLYTE_AWS_SECRETS_DISABLE", "FLYTE_AWS_SECRETS_FILES_DIR"}
#: Prefixes that belong to parts with settings of their own (the Aptible connector's client).
NON_FIELD_PREFIXES = ("FLYTE_AWS_SECRETS_APTIBLE_",)


class AssumeRole(BaseModel):
    """A role to assume on top of the base credentials (refreshed by botocore before it expires).

    Example (YAML)::

        assume_role:
          role_arn: arn:aws:iam::999999999999:role/AccessToSecrets
          external_id: flyte-prod
          session_name: flyte-secrets
          duration_seconds: 3600
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    role_arn: str = Field(pattern=r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:role/[\w+=,.@/-]+$")
    external_id: str | None = None
    session_name: str = "flytekitplugins-awssecrets"
    duration_seconds: int = Field(default=3600, ge=900, le=43200)


class Settings(BaseModel):
    """All settings, with their defaults.

    Resolution:
      cache_ttl_seconds (300): how long a fetched secret is reused in this process; 0 disables the cache.
      max_concurrency (16): parallel AWS requests (batches and regions) at most.
      batch_size (20): secrets per BatchGetSecretValue call (AWS's maximum is 20).
      retry_mode ("standard"), max_attempts (5): botocore's retry mode and attempt count (throttling, 5xx).
      connect_attempts (2): attempts when the endpoint cannot be reached (refused, connect or read
        time-out), so that an unreachable endpoint fails in about 10 s rather than after every retry.
      connect_timeout (3.0), read_timeout (4.0): seconds, per HTTP request.
      required_tags ({}): tags a secret must carry (key -> value, "*" for any value) to be handed to a task,
        like Sym's ``SymEnv``; checked once per secret per cache lifetime, and for every source: a value
        the cluster webhook mounted or flytekit's env var/file holds costs one DescribeSecret (SSM:
        ListTagsForResource) per secret per task, so the role needs that permission.

    At scale (see docs/cluster.md, "Running at scale"; the read strategies live in ``strategies.py``):
      read_strategy ("get"): how current Secrets Manager versions are read. "get": one GetSecretValue per
        secret, all at once (quota 10,000/s per account and region, adjustable); "batch":
        BatchGetSecretValue of ``batch_size`` (quota 100/s, not adjustable), tried once without botocore
        retries, and on throttling (or when denied) the same secrets are read with GetSecretValue at once
        and batches are skipped for a minute. Example: ``FLYTE_AWS_SECRETS_READ_STRATEGY=batch``.
      ssm_retry_mode ("adaptive"): botocore retry mode of SSM clients; "adaptive" adds client-side rate
        limiting to the jittered exponential backoff (SSM's shared quota is 40/s at standard throughput).
      agent_url (None): read Secrets Manager secrets through a local endpoint that speaks the AWS Secrets
        Manager Agent HTTP API (AWS's agent as a sidecar or DaemonSet, or ``pyflyte-awssecrets serve``),
        e.g. ``http://127.0.0.1:2773``; many tasks on a node then share one fetch per TTL. Loopback only
        unless ``agent_allow_non_loopback``. SSM parameters are still read from AWS.
      agent_token_file (None): file holding the token sent in ``X-Aws-Parameters-Secrets-Token``
        (required with ``agent_url``; AWS's agent uses ``/var/run/awssmatoken``).
      agent_fallback (False): when the agent is unreachable or fails (not when it answers "not found" or
        "access denied"), read from AWS directly instead of failing.
      agent_allow_non_loopback (False): allow an ``agent_url`` host that is not loopback.
      trusted_endpoints (()): in a pod, origins (``https://vpce.example:443``) that botocore's
        ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_<SERVICE>`` may name besides loopback hosts. Like the agent
        and protection settings, a pod takes it only from the image's settings file (see
        ``setting_sources.py`` and docs/security.md).
      failover_regions ({}): primary region (or "*" for any) -> replica regions to read, in order, when the
        primary fails with a network error, a 5xx or throttling (never on a 4xx such as not found or access
        denied), like the Secrets Store CSI provider's ``failoverRegion``; the replica has the same ARN in
        the other region. Example: ``{"us-east-1": ["us-west-2"]}``; a list alone means "*".

    Mounting:
      mount_dir (None): where FILE secrets are written; default ``/dev/shm``. It must be a memory filesystem
        (tmpfs or ramfs, checked in ``/proc/mounts``): otherwise a task with a FILE secret fails before user
        code with :class:`~flytekitplugins_awssecrets.errors.FileMountOnDiskError`.
      allow_disk_mount (False): accept a ``mount_dir`` (or, without ``/dev/shm``, the system temporary
        directory) that is on disk. The file is removed after the task, at exit and on SIGTERM, but a
        SIGKILLed or crashed process leaves it on persistent disk until the next plugin process sweeps it.
      cluster_mode ("plugin"): "plugin" keeps AWS requests out of the serialised task spec, so a cluster's
        Kubernetes secret webhook never sees them and the plugin resolves them in the pod; "webhook" hands
        them (without JSON key) to a cluster whose Flyte secret webhook is the AWS type, and the plugin
        reads the mounted files and applies JSON keys.
      cluster_modes ({}): the mode per Flyte project and domain, read at registration: keys
        ``"<project>/<domain>"``, ``"<project>/*"`` or ``"*/<domain>"`` (most specific wins), values as for
        ``cluster_mode``, which applies where no key matches. Example: ``{"ml/production": "webhook"}``.
      webhook_dir ("/etc/flyte/secrets"): where the cluster's AWS webhook mounts secrets; webhook-served
        values are read there only. In a pod, this and the two above come only from the image's settings
        file (see :mod:`setting_sources`): a launcher could otherwise point it at files it planted.
      leak_guard (True): fail a task whose outputs contain a secret value resolved for it.
      allow_opaque_outputs (False): with the leak guard on, accept outputs the guard cannot look into
        (pickled objects: outputs typed ``Any`` or as a class without a flytekit type transformer);
        otherwise such a task fails with :class:`~flytekitplugins_awssecrets.errors.UninspectableOutputError`.
      redact_logs (True): replace resolved values in log records by ``[REDACTED]`` while a task runs.
      leak_guard_json_leaves ("credentials"): which string leaves of a JSON secret the leak guard, log
        redaction and exception scrubbing look for (the whole value always): "credentials" = leaves under
        credential-like keys (password, secret, token, key, auth...), leaves that look generated, and not the
        keys that describe a database secret (engine, host, port, dbname, username...; see ``leaves.py``);
        "all" = every leaf. A request with a JSON key keeps its whole chosen value sensitive either way.
      sensitive_json_keys (()): more JSON keys whose leaves are always sensitive, e.g. ``["account_id"]``.
      descriptive_json_keys (()): more JSON keys whose leaves only describe the secret and may appear in
        outputs and logs, e.g. ``["cluster", "warehouse"]`` (a credential-like key stays sensitive).

    While a task runs (see docs/rotation.md):
      refresh_interval_seconds (None): re-read the task's ``ANY`` and ``FILE`` secrets this often while it
        runs, following ``AWSCURRENT`` (``ENV_VAR`` values never change under running code); None: read once.
        Example: ``FLYTE_AWS_SECRETS_REFRESH_INTERVAL_SECONDS=900``. At task start an interval shorter than
        the fleet's share of the read quotas allows is refused with the numbers (see ``refresh_fleet_pods``).
      refresh_overrides ({}): per request, by reference as written (ARN or alias): seconds, or 0 for never.
        Example: ``{"arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-XyZ123": 300}``.
      refresh_fleet_pods (1000): how many pods may refresh at once in one account and region (a map task's
        width); the quota arithmetic for the smallest interval uses it.
      deck ("auto"): the "AWS secrets" Flyte Deck: "auto" on tasks that enable decks, "always" also turns
        decks on for tasks with AWS secrets, "never" never adds it.

    Credentials (all through boto3/botocore):
      profile (None): a named profile from the shared AWS files.
      access_key_id, secret_access_key, session_token (None): static keys.
      credentials_file (None): a shared credentials file that automation rewrites; re-read when it changes.
      credentials_profile ("default"): the profile read from ``credentials_file``.
      assume_role (None): an :class:`AssumeRole` on top of the base credentials.
      account_roles ({}): account id -> role ARN (or :class:`AssumeRole`) for cross-account reads; secrets in
        other accounts use the base (or assume_role) credentials.
      region (None): region for references without one (aliases of bare names); ARNs carry their own.
      extra_regions (()): regions to accept although this botocore's partition data does not list them
        (a region AWS opened after the installed botocore); every region botocore lists is accepted, and
        any other is refused where it is read (ARNs, aliases, settings, manifests) with a "did you mean".
        Example: ``FLYTE_AWS_SECRETS_EXTRA_REGIONS='["xx-newregion-1"]'`` (or comma-separated).

    Names:
      aliases ({}): friendly name -> ARN, like Secret Agent's ``resources``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    cache_ttl_seconds: float = Field(default=300.0, ge=0)
    max_concurrency: int = Field(default=16, ge=1, le=256)
    batch_size: int = Field(default=20, ge=1, le=20)
    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    max_attempts: int = Field(default=5, ge=1, le=20)
    connect_attempts: int = Field(default=2, ge=1, le=20)
    connect_timeout: float = Field(default=3.0, gt=0)
    read_timeout: float = Field(default=4.0, gt=0)
    required_tags: dict[str, str] = Field(default_factory=dict)
    read_strategy: Literal["get", "batch"] = "get"
    ssm_retry_mode: Literal["standard", "adaptive", "legacy"] = "adaptive"
    agent_url: str | None = None
    agent_token_file: str | None = None
    agent_fallback: bool = False
    agent_allow_non_loopback: bool = False
    trusted_endpoints: tuple[str, ...] = ()
    failover_regions: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    mount_dir: str | None = None
    allow_disk_mount: bool = False
    cluster_mode: Literal["plugin", "webhook"] = "plugin"
    cluster_modes: dict[str, Literal["plugin", "webhook"]] = Field(default_factory=dict)
    webhook_dir: str = "/etc/flyte/secrets"
    leak_guard: bool = True
    allow_opaque_outputs: bool = False
    redact_logs: bool = True
    refresh_interval_seconds: float | None = Field(default=None, gt=0)
    refresh_overrides: dict[str, float] = Field(default_factory=dict)
    refresh_fleet_pods: int = Field(default=1000, ge=1)
    deck: Literal["auto", "always", "never"] = "auto"
    leak_guard_json_leaves: Literal["credentials", "all"] = "credentials"
    sensitive_json_keys: tuple[str, ...] = ()
    descriptive_json_keys: tuple[str, ...] = ()

    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    credentials_file: str | None = None
    credentials_profile: str = "default"
    assume_role: AssumeRole | None = None
    account_roles: dict[str, AssumeRole] = Field(default_factory=dict)
    region: str | None = None
    extra_regions: tuple[str, ...] = ()

    aliases: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _known_regions(cls, data: Any, handler: Any) -> Any:
        """Regions in aliases and other fields are checked with this model's own ``extra_regions``."""
        from flytekitplugins_awssecrets.regions import allowing

        extra = data.get("extra_regions") if isinstance(data, dict) else None
        with allowing(_split_list(extra) if extra is not None else ()):
            return handler(data)

    @field_validator("sensitive_json_keys", "descriptive_json_keys", "extra_regions", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("extra_regions")
    @classmethod
    def _extra_region_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import re

        for r in v:
            if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", r):
                raise ValueError(f"{r!r} is not a region name like us-west-2")
        return v

    @field_validator("region")
    @classmethod
    def _region_known(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from flytekitplugins_awssecrets.regions import region_problem

        problem = region_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("account_roles", mode="before")
    @classmethod
    def _roles(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): ({"role_arn": r} if isinstance(r, str) else r) for k, r in v.items()}
        return v

    @field_validator("assume_role", mode="before")
    @classmethod
    def _role(cls, v: Any) -> Any:
        return {"role_arn": v} if isinstance(v, str) else v

    @field_validator("failover_regions", mode="before")
    @classmethod
    def _failover(cls, v: Any) -> Any:
        if isinstance(v, str | list | tuple):
            v = {"*": v}
        if isinstance(v, dict):
            return {str(k): ([r] if isinstance(r, str) else r) for k, r in v.items()}
        return v

    @field_validator("failover_regions")
    @classmethod
    def _failover_names(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        import re

        for primary, replicas in v.items():
            for r in (primary, *replicas):
                if r != "*" and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", r):
                    raise ValueError(f"{r!r} is not a region name like us-west-2")
            if primary in replicas:
                raise ValueError(f"region {primary!r} cannot be its own failover")
        from flytekitplugins_awssecrets.regions import region_problem

        for r in {r for p, rs in v.items() for r in (p, *rs) if r != "*"}:
            problem = region_problem(r)
            if problem:
                raise ValueError(problem)
        return v

    @field_validator("agent_url")
    @classmethod
    def _agent_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from urllib.parse import urlsplit

        u = urlsplit(v)
        if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment:
            raise ValueError("must be http(s)://HOST:PORT, e.g. http://127.0.0.1:2773")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _agent(self) -> Settings:
        if self.agent_url is None:
            return self
        if self.agent_token_file is None:
            raise ValueError("agent_url needs agent_token_file (the file holding the agent's token)")
        from urllib.parse import urlsplit

        host = urlsplit(self.agent_url).hostname or ""
        if not self.agent_allow_non_loopback and not _is_loopback(host):
            raise ValueError(
                f"agent_url host {host!r} is not loopback; set agent_allow_non_loopback to allow it"
            )
        return self

    @field_validator("account_roles")
    @classmethod
    def _accounts(cls, v: dict[str, AssumeRole]) -> dict[str, AssumeRole]:
        for k in v:
            if not (len(k) == 12 and k.isdigit()):
                raise ValueError(f"account id {k!r} is not 12 digits")
        return v

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: dict[str, str]) -> dict[str, str]:
        from flytekitplugins_awssecrets.refs import parse_reference

        for name, target in v.items():
            if not str(target).startswith("arn:"):
                raise ValueError(f"alias {name!r} must point at an ARN, not {target!r}")
            parse_reference(target)
        return v

    @field_validator("cluster_modes")
    @classmethod
    def _modes(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            project, sep, domain = k.partition("/")
            if not sep or not project or not domain or "/" in domain or (project == domain == "*"):
                raise ValueError(f"key {k!r} is not '<project>/<domain>', '<project>/*' or '*/<domain>'")
        return v

    def mode_for(self, project: str | None, domain: str | None) -> str:
        """The cluster mode for a Flyte project and domain (see ``cluster_modes``)."""
        for key in (f"{project}/{domain}", f"{project}/*", f"*/{domain}"):
            if key in self.cluster_modes:
                return self.cluster_modes[key]
        return self.cluster_mode

    @property
    def has_static_keys(self) -> bool:
        return self.access_key_id is not None


def _split_list(v: Any) -> Any:
    """A list setting given as one comma-separated string (an env var) -> its items."""
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    return v


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- loading -------------------------------------------------------------------------------------------------

_FIELDS = list(Settings.model_fields)
_JSON_FIELDS = {
    "trusted_endpoints",
    "required_tags",
    "account_roles",
    "aliases",
    "assume_role",
    "failover_regions",
    "cluster_modes",
    "refresh_overrides",
    "sensitive_json_keys",
    "descriptive_json_keys",
    "extra_regions",
}


#: Top-level keys of a Secret Agent file: Aerospike's three sections and this project's additions.
SECRET_AGENT_SECTIONS = ("service", "secret-manager", "log", "x-awssecrets")
#: Keys of ``secret-manager.aws``: Aerospike's, and ``session-token`` (a project addition kept for files
#: that already use it; Aerospike reads session tokens from the shared credentials file only).
SECRET_AGENT_AWS_KEYS = (
    "region",
    "resources",
    "access-key-id",
    "secret-access-key",
    "assume-role",
    "convert-to-base64",
    "session-token",
)


def from_secret_agent(doc: dict[str, Any], path: str) -> dict[str, Any]:
    """Translate a Secret Agent configuration file (seed 004) into settings fields.

    ``secret-manager.aws`` gives ``region``, ``resources`` (-> aliases), ``access-key-id``,
    ``secret-access-key``, ``session-token`` and ``assume-role``; ``convert-to-base64`` is checked (true or
    false) and only changes what ``pyflyte-awssecrets serve`` sends (tasks get the stored value as it is).
    ``x-awssecrets.settings`` holds any other settings field (``cache_ttl_seconds: 60``), the project's
    addition. ``service``, ``log`` and ``x-awssecrets.serve`` configure ``pyflyte-awssecrets serve``, which
    checks them; any other key is refused, naming it.
    """
    where = f"file {path}"
    for k in doc:
        if k not in SECRET_AGENT_SECTIONS:
            raise SettingsError(
                str(k), where, f"not a Secret Agent section; known: {list(SECRET_AGENT_SECTIONS)}"
            )
    manager = doc.get("secret-manager") or {}
    if not isinstance(manager, dict):
        raise SettingsError("secret-manager", where, "must be a mapping")
    for k in manager:
        if k != "aws":
            raise SettingsError(
                f"secret-manager.{k}",
                where,
                "this plugin reads AWS Secrets Manager only (secret-manager.aws)",
            )
    aws = manager.get("aws") or {}
    if not isinstance(aws, dict):
        raise SettingsError("secret-manager.aws", where, "must be a mapping")
    for k in aws:
        if k not in SECRET_AGENT_AWS_KEYS:
            raise SettingsError(
                f"secret-manager.aws.{k}", where, f"unknown key; known: {list(SECRET_AGENT_AWS_KEYS)}"
            )
    if "convert-to-base64" in aws and not isinstance(aws["convert-to-base64"], bool):
        raise SettingsError("secret-manager.aws.convert-to-base64", where, "must be true or false")
    for section in ("service", "log"):
        if section in doc:
            logger.info(
                "settings file %s: section %r is not used for secret resolution; pyflyte-awssecrets serve reads it",
                path,
                section,
            )
    out: dict[str, Any] = {}
    additions = doc.get("x-awssecrets") or {}
    if not isinstance(additions, dict):
        raise SettingsError("x-awssecrets", where, "must be a mapping")
    extra = additions.get("settings") or {}
    if not isinstance(extra, dict):
        raise SettingsError("x-awssecrets.settings", where, "must be a mapping of settings fields")
    out.update({str(k).replace("-", "_"): v for k, v in extra.items()})
    if "region" in aws:
        out["region"] = aws["region"]
    if "resources" in aws:
        out["aliases"] = aws["resources"]
    if "access-key-id" in aws:
        out["access_key_id"] = aws["access-key-id"]
    if "secret-access-key" in aws:
        out["secret_access_key"] = aws["secret-access-key"]
    if "session-token" in aws:
        out["session_token"] = aws["session-token"]
    if "assume-role" in aws:
        out["assume_role"] = aws["assume-role"]
    for k in extra:
        name = str(k).replace("-", "_")
        if name in out and out[name] is not extra[k]:
            raise SettingsError(
                f"x-awssecrets.settings.{k}", where, "is also set by a secret-manager.aws key; set it once"
            )
    return out


def _read_file(path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings fields from a YAML file, and for each field the key it came from (for error messages)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise SettingsError("config", f"env var {CONFIG_ENV}", f"file {path!r} does not exist") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SettingsError("config", f"file {path}", f"is not valid YAML{where}") from None
    except RecursionError:
        raise SettingsError("config", f"file {path}", "is nested too deeply to read") from None
    if not isinstance(doc, dict):
        raise SettingsError("config", f"file {path}", "must be a YAML mapping of setting names to values")
    if "secret-manager" in doc:
        fields = from_secret_agent(doc, path)
        origin = {k: f"file {path} (Secret Agent format)" for k in fields}
    else:
        fields = {str(k).replace("-", "_"): v for k, v in doc.items()}
        origin = {k.replace("-", "_"): f"file {path} key {k!r}" for k in map(str, doc)}
    if fields.get("secret_access_key") or fields.get("session_token"):
        _warn_if_readable(path)
    return fields, origin


def readable_mode(path: str) -> int | None:
    """The permission bits of ``path`` when its group or other users may read it, else None (also when it
    cannot be stat'ed): the one check behind every "this file holds a secret" warning."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return stat.S_IMODE(mode) if mode & (stat.S_IRGRP | stat.S_IROTH) else None


def _warn_if_readable(path: str) -> None:
    mode = readable_mode(path)
    if mode is not None:
        logger.warning(
            "settings file %s holds static AWS keys and is readable by other users (mode %o); "
            "run: chmod 600 %s",
            path,
            mode,
            path,
        )


def _read_env(environ: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    fields: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in _FIELDS:
        var = ENV_PREFIX + name.upper()
        if var not in environ:
            continue
        raw = environ[var]
        value: Any = raw
        if name in _JSON_FIELDS and raw.strip().startswith(("{", "[")):
            try:
                value = json.loads(raw)
            except (ValueError, RecursionError):
                raise SettingsError(name, f"env var {var}", "is not valid JSON") from None
        fields[name] = value
        origin[name] = f"env var {var}"
    unknown = [
        k
        for k in environ
        if k.startswith(ENV_PREFIX)
        and k not in NON_FIELD_ENV
        and not k.startswith(NON_FIELD_PREFIXES)
        and k[len(ENV_PREFIX) :].lower() not in _FIELDS
    ]
    if unknown:
        raise SettingsError(
            unknown[0][len(ENV_PREFIX) :].lower(), f"env var {unknown[0]}", _unknown_var(unknown[0])
        )
    return fields, origin


def _unknown_var(var: str) -> str:
    """The likely name for a misspelt variable (difflib), not all of them: a list of 36 hides the one."""
    import difflib

    from flytekitplugins_awssecrets.links import doc_link

    # Compared without the common prefix, which would make every name look alike.
    names = {
        v[len(ENV_PREFIX) :].lower(): v
        for v in [ENV_PREFIX + f.upper() for f in _FIELDS] + list(NON_FIELD_ENV)
    }
    asked = var[len(ENV_PREFIX) :].lower()
    hits = [n for n in sorted(names) if asked and n.startswith(asked)][:1]
    hits += [n for n in difflib.get_close_matches(asked, list(names), n=2, cutoff=0.6) if n not in hits]
    close = [names[n] for n in hits[:2]]
    guess = f"did you mean {' or '.join(close)}? " if close else "no setting has a similar name; "
    return f"unknown variable {var}; {guess}valid names: {doc_link('settings')}"


def load_settings(environ: dict[str, str] | None = None, *, pod: bool | None = None) -> Settings:
    """Read the settings from ``environ`` (default ``os.environ``) and the file it names.

    In a pod (``pod``, default: :func:`~flytekitplugins_awssecrets.setting_sources.running_in_pod`) the file
    is the image's, and the environment may not change a protected setting (see :mod:`setting_sources`).
    """
    env = dict(os.environ if environ is None else environ)
    file_fields: dict[str, Any] = {}
    origin: dict[str, str] = {}
    from flytekitplugins_awssecrets import setting_sources

    in_pod = setting_sources.running_in_pod() if pod is None else pod
    image = setting_sources.image_config_path() if in_pod else None
    if in_pod:
        path = str(image) if image else None
    else:
        path = env.get(CONFIG_ENV)
    if path:
        file_fields, origin = _read_file(path)
    env_fields, env_origin = _read_env(env)
    if in_pod:
        setting_sources.check_pod_sources(env, env_fields, file_fields, image, CONFIG_ENV, ENV_PREFIX)
    origin.update(env_origin)
    merged = {**file_fields, **env_fields}
    if not merged:
        # Nothing is set (a pod's usual case): the defaults, which every validator accepts as they are, so
        # the model is built without compiling its validators (deferred: ~12 ms of CPU at a pod's start).
        return Settings.model_construct()
    try:
        return Settings(**merged)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        field = loc[0] if loc else "?"
        if not loc:  # a check across fields (model validator): its message starts with the field's name
            first = str(err.get("msg", "")).removeprefix("Value error, ").split(" ", 1)[0].rstrip(":")
            field = first if first in _FIELDS else field
        source = origin.get(field, "defaults")
        problem = str(err.get("msg", "invalid")).removeprefix("Value error, ")  # pydantic's prefix
        if err.get("type") == "extra_forbidden":
            problem = f"unknown setting; known: {_FIELDS}"
        where = ".".join(loc[1:])
        if where:
            problem = f"{where}: {problem}"
        # The input is not shown: it could be a key or token.
        raise SettingsError(field, source, problem) from None


_lock = threading.Lock()
_cached: tuple[tuple[Any, ...], Settings] | None = None


def _fingerprint() -> tuple[Any, ...]:
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    path = os.environ.get(CONFIG_ENV)
    mtime = None
    if path:
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            mtime = -1
    return (env, mtime)


def get_settings() -> Settings:
    """The current settings, re-read when the environment or the settings file changes."""
    global _cached
    fp = _fingerprint()
    with _lock:
        if _cached is not None and _cached[0] == fp:
            return _cached[1]
    s = load_settings()
    with _lock:
        _cached = (fp, s)
    return s


def reset() -> None:
    global _cached
    with _lock:
        _cached = None


def default_mount_root(settings: Settings) -> Path:
    if settings.mount_dir:
        return Path(settings.mount_dir)
    shm = Path("/dev/shm")  # noqa: S108 - a memory filesystem, the point of choosing it
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    import tempfile

    # FILE mounts refuse this directory unless allow_disk_mount is set (see mount.memory_filesystem).
    return Path(tempfile.gettempdir())
