"""Settings of ``pyflyte-awssecrets serve`` (where to listen, the token, TLS, limits), apart from the
plugin's own :mod:`~flytekitplugins_awssecrets.settings` (how secrets are resolved), which serve reads as
every other entry point does.

Sources, highest precedence first:

1. command-line options (``--http 127.0.0.1:2773``);
2. environment variables ``PYFLYTE_AWSSECRETS_SERVE_<FIELD>`` (``PYFLYTE_AWSSECRETS_SERVE_HTTP=off``). The
   prefix is not ``FLYTE_AWS_SECRETS_`` because the plugin's settings reject unknown variables with that
   prefix, and a pod running tasks next to the server would fail on them;
3. the ``service`` section of a Secret Agent configuration file (``service.tcp.endpoint``, and
   ``service.unix.path``, which this plugin adds);
4. the defaults on :class:`ServeConfig`.

Every field and its default is documented once, on :class:`ServeConfig`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from flytekitplugins_awssecrets.errors import SettingsError

__all__ = [
    "ENV_PREFIX",
    "Endpoint",
    "ServeConfig",
    "load_serve_config",
    "parse_endpoint",
    "read_token",
    "AWS_TOKEN_FILE",
]

logger = logging.getLogger(__name__)

ENV_PREFIX = "PYFLYTE_AWSSECRETS_SERVE_"
#: Where AWS's own agent installation keeps its SSRF token; read when no token is configured.
AWS_TOKEN_FILE = "/var/run/awssmatoken"  # noqa: S105 - a path, not a password
_OFF = {"", "off", "none", "false", "0", "disabled"}


@dataclass(frozen=True)
class Endpoint:
    """A TCP address to listen on. ``port`` 0 lets the system choose (see ``ready_file``).

    Example::

        >>> parse_endpoint("127.0.0.1:3005")
        Endpoint(host='127.0.0.1', port=3005)
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name other than localhost could resolve to anything


def parse_endpoint(text: str) -> Endpoint:
    """``host:port`` or ``[v6]:port``; raises ``ValueError`` naming what is wrong."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port (for example 127.0.0.1:3005)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 0 to 65535")
    return Endpoint(host, int(port))


class ServeConfig(BaseModel):
    """Where and how ``pyflyte-awssecrets serve`` listens.

    Front ends:
      secret_agent ("127.0.0.1:3005"): TCP address of the Secret Agent protocol; ``off`` disables it.
      unix_socket (None): also serve the Secret Agent protocol on this Unix socket path (created mode
        0600, removed on shutdown).
      http ("127.0.0.1:2773"): TCP address of the AWS Secrets Manager Agent HTTP API (2773 is AWS's
        default port); ``off`` disables it.
      path_prefix ("/v1/"): path-style requests ``GET /v1/<secretId>``, as AWS's agent accepts.

    Access:
      token (None): the SSRF token every HTTP request must carry in ``X-Aws-Parameters-Secrets-Token``
        (or ``X-Vault-Token``). A value, or ``file://PATH`` to read it from a file, as AWS's ``AWS_TOKEN``.
      token_file (None): a file holding the token. When neither is set, ``AWS_TOKEN`` (value or
        ``file://``) is read, then ``/var/run/awssmatoken``; the HTTP front end does not start without one.
      allow_non_loopback (False): listening on an address other than loopback is refused unless this is
        true, and then logged as a warning at start.
      open_health (False): ``/ping`` and ``/healthz`` answer without the token, as AWS's agent's ``/ping``
        does, for probes that cannot send a header. Off by default: every request carries the token, and
        ``/healthz`` (front ends, cache counters) tells nothing to a process that does not hold it.
      tls_cert, tls_key (None): PEM files; when both are set, both TCP listeners speak TLS (1.2 or later).
        The Unix socket never does (file permissions protect it).

    Limits:
      max_body_bytes (65536): largest Secret Agent request body; a larger announced length is answered
        with an error and the connection closed.
      max_header_bytes (65536): largest HTTP request head (request line and headers), answered with 431.
      max_connections (800): concurrent connections over all front ends (AWS's default); more are
        answered with 429 (HTTP) or an error frame, then closed. Health checks get 3 extra.
      read_timeout (60.0): seconds a connection may stay silent (or send a message slowly) before it is
        closed; bounds what a stuck or malicious client holds.
      shutdown_grace (5.0): seconds requests in flight may take to finish after SIGTERM.

    Operation:
      ready_file (None): once listening, the bound addresses are written there as JSON
        (``{"secret_agent": "127.0.0.1:3005", "http": "...", "unix_socket": "..."}``), for scripts and
        tests that start the server and must know when (and where, with port 0) it listens.
      log_level ("info"): ``debug``, ``info``, ``warning`` or ``error``. Logs name references and
        outcomes, never values.

    Example::

        >>> cfg = ServeConfig(http="off", unix_socket="/tmp/secret-agent.sock")
        >>> cfg.http_endpoint is None
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_agent: str = "127.0.0.1:3005"  # noqa: S105 - an address
    unix_socket: str | None = None
    http: str = "127.0.0.1:2773"
    path_prefix: str = Field(default="/v1/", pattern=r"^/.*")

    token: SecretStr | None = None
    token_file: str | None = None
    allow_non_loopback: bool = False
    open_health: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None

    max_body_bytes: int = Field(default=64 * 1024, ge=64, le=16 * 1024 * 1024)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    max_connections: int = Field(default=800, ge=1, le=100_000)
    read_timeout: float = Field(default=60.0, gt=0, le=3600)
    shutdown_grace: float = Field(default=5.0, ge=0, le=300)

    ready_file: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("secret_agent", "http")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if v.strip().lower() in _OFF:
            return "off"
        parse_endpoint(v)
        return v.strip()

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @field_validator("unix_socket", "token_file", "tls_cert", "tls_key", "ready_file")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return v if v else None

    # -- derived --------------------------------------------------------------------------------------------
    @property
    def secret_agent_endpoint(self) -> Endpoint | None:
        return None if self.secret_agent == "off" else parse_endpoint(self.secret_agent)  # noqa: S105

    @property
    def http_endpoint(self) -> Endpoint | None:
        return None if self.http == "off" else parse_endpoint(self.http)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def check(self) -> list[str]:
        """Cross-field rules; returns the warnings to log at start, raises :class:`SettingsError`."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("tls_cert", "serve options", "tls_cert and tls_key must be given together")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise SettingsError(name, "serve options", f"file {path!r} does not exist")
        if self.secret_agent_endpoint is None and self.http_endpoint is None and self.unix_socket is None:
            raise SettingsError("secret_agent", "serve options", "every front end is off; nothing to serve")
        warnings = []
        for name, ep in (("secret_agent", self.secret_agent_endpoint), ("http", self.http_endpoint)):
            if ep is None or ep.is_loopback:
                continue
            if not self.allow_non_loopback:
                raise SettingsError(
                    name,
                    "serve options",
                    f"{ep} is not a loopback address; other hosts could read secrets. Listen on 127.0.0.1 "
                    "(for example 127.0.0.1:3005), or pass --allow-non-loopback if the network is protected",
                )
            warnings.append(
                f"!!! {name} listens on {ep}, which is NOT loopback: any host that can reach it may read "
                f"secrets{'' if self.tls else ' over plain text'}"
                f"{' (HTTP requires the token)' if name == 'http' else ' (the Secret Agent protocol has no authentication)'}. "
                "Restrict it with a firewall or network policy. !!!"
            )
        return warnings


# --- loading -------------------------------------------------------------------------------------------------

_FIELDS = list(ServeConfig.model_fields)


def _from_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    fields: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name not in _FIELDS:
            raise SettingsError(name, f"env var {var}", f"unknown serve setting; known: {_FIELDS}")
        fields[name] = raw
        origin[name] = f"env var {var}"
    return fields, origin


def _from_secret_agent_file(path: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """``service.tcp.endpoint``, ``service.unix.path`` and ``log.level`` of a Secret Agent file."""
    if not path:
        return {}, {}
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return {}, {}  # the plugin's settings loader reports an unreadable file with the details
    if not isinstance(doc, dict) or "secret-manager" not in doc:
        return {}, {}
    service = doc.get("service") or {}
    if not isinstance(service, dict):
        raise SettingsError("service", f"file {path}", "must be a mapping")
    fields: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for section, key, name in (("tcp", "endpoint", "secret_agent"), ("unix", "path", "unix_socket")):
        sub = service.get(section)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            raise SettingsError(f"service.{section}", f"file {path}", "must be a mapping")
        if key in sub and sub[key] is not None:
            fields[name] = str(sub[key])
            origin[name] = f"file {path} key service.{section}.{key}"
    log = doc.get("log") or {}
    if isinstance(log, dict) and isinstance(log.get("level"), str):
        level = log["level"].lower()
        fields["log_level"] = {"warn": "warning", "fatal": "error", "trace": "debug"}.get(level, level)
        origin["log_level"] = f"file {path} key log.level"
    return fields, origin


def load_serve_config(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None, config_path: str | None = None
) -> ServeConfig:
    """Merge command-line ``options`` (None means not given), the environment and the config file."""
    env = os.environ if environ is None else environ
    file_fields, origin = _from_secret_agent_file(config_path)
    env_fields, env_origin = _from_env(env)
    origin.update(env_origin)
    cli_fields = {k: v for k, v in options.items() if v is not None}
    origin.update({k: f"option --{k.replace('_', '-')}" for k in cli_fields})
    merged = {**file_fields, **env_fields, **cli_fields}
    try:
        return ServeConfig(**merged)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        field = loc[0] if loc else "?"
        problem = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            problem = f"unknown serve setting; known: {_FIELDS}"
        # The input is not shown: it could be the token.
        raise SettingsError(field, origin.get(field, "defaults"), problem) from None


def _read_token_file(path: str, source: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise SettingsError("token", source, f"cannot read token file {path!r}: {e.strerror}") from None
    if not token:
        raise SettingsError("token", source, f"token file {path!r} is empty")
    return token


def read_token(cfg: ServeConfig, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The HTTP token and where it came from (for the start-up log; the token itself is never logged)."""
    env = os.environ if environ is None else environ
    candidates: list[tuple[str, str]] = []
    if cfg.token is not None:
        candidates.append((cfg.token.get_secret_value(), "setting token"))
    if cfg.token_file is not None:
        candidates.append(("file://" + cfg.token_file, "setting token_file"))
    if env.get("AWS_TOKEN"):
        candidates.append((env["AWS_TOKEN"], "env var AWS_TOKEN"))
    if os.path.isfile(AWS_TOKEN_FILE):
        candidates.append(("file://" + AWS_TOKEN_FILE, AWS_TOKEN_FILE))
    if not candidates:
        raise SettingsError(
            "token",
            "serve options",
            "the HTTP front end needs a token: pass --token-file FILE (or set PYFLYTE_AWSSECRETS_SERVE_TOKEN, "
            f"or AWS_TOKEN, or create {AWS_TOKEN_FILE}); or turn it off with --http off",
        )
    raw, source = candidates[0]
    if raw.startswith("file://"):
        path = raw[len("file://") :]
        return _read_token_file(path, source), f"{source} ({path})"
    if not raw.strip():
        raise SettingsError("token", source, "is empty")
    return raw.strip(), source
