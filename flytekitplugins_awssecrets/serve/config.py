"""Settings of ``pyflyte-awssecrets serve`` (where to listen, the token, TLS, limits), apart from the
plugin's own :mod:`~flytekitplugins_awssecrets.settings` (how secrets are resolved), which serve reads as
every other entry point does.

Sources, highest precedence first:

1. command-line options (``--http 127.0.0.1:2773``);
2. environment variables ``PYFLYTE_AWSSECRETS_SERVE_<FIELD>`` (``PYFLYTE_AWSSECRETS_SERVE_HTTP=off``). The
   prefix is not ``FLYTE_AWS_SECRETS_`` because the plugin's settings reject unknown variables with that
   prefix, and a pod running tasks next to the server would fail on them;
3. a Secret Agent configuration file (:mod:`.agent_file`): its ``service``, ``log.level``,
   ``secret-manager.aws.convert-to-base64`` and the project's ``x-awssecrets.serve`` section. With such a
   file, what it does not configure is off: no HTTP front end unless asked for;
4. the defaults on :class:`ServeConfig`.

Every field and its default is documented once, on :class:`ServeConfig`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from flytekitplugins_awssecrets.errors import SettingsError

__all__ = [
    "ENV_PREFIX",
    "Endpoint",
    "ServeConfig",
    "load_serve_config",
    "parse_endpoint",
    "read_token",
    "AWS_TOKEN_FILE",
    "DEFAULT_SSRF_HEADERS",
    "DEFAULT_SSRF_ENV_VARIABLES",
]

logger = logging.getLogger(__name__)

ENV_PREFIX = "PYFLYTE_AWSSECRETS_SERVE_"
#: Where AWS's own agent installation keeps its SSRF token; read when no token is configured.
AWS_TOKEN_FILE = "/var/run/awssmatoken"  # noqa: S105 - a path, not a password
_OFF = {"", "off", "none", "false", "0", "disabled"}
#: AWS Secrets Manager Agent's defaults (``ssrf_headers``, ``ssrf_env_variables`` in its config.rs).
DEFAULT_SSRF_HEADERS = ("X-Aws-Parameters-Secrets-Token", "X-Vault-Token")
DEFAULT_SSRF_ENV_VARIABLES = ("AWS_TOKEN", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")


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
      convert_to_base64 (True; a Secret Agent file's default is Aerospike's false): Secret Agent answers carry
        the base64 of the stored value when true; when false the stored value must already be base64 and is
        sent as it is (a value that is not is answered with an error naming the resource).

    Access:
      allow (none): what is served without a Secret Agent file: names, ARNs (full or partial), alias names,
        and prefixes ending in ``*`` (a list, or comma-separated in an env var). serve refuses to start
        without it; with a Secret Agent file its ``resources`` are the list and this must be empty. Every
        front end refuses (and logs) a secret that is not listed; see :mod:`.allow`.
      token (None): the SSRF token every HTTP request must carry in one of ``ssrf_headers``. A value, or
        ``file://PATH`` to read it from a file, as AWS's ``AWS_TOKEN``.
      token_file (None): a file holding the token. When neither is set, the first of ``ssrf_env_variables``
        that is set (value or ``file://PATH``) is read, then ``/var/run/awssmatoken``; the HTTP front end does
        not start without one. A token file readable by group or others is logged as a warning.
      ssrf_headers (X-Aws-Parameters-Secrets-Token, X-Vault-Token): request headers that may carry the
        token, AWS's agent's setting of the same name (a list, or comma-separated in an env var).
      ssrf_env_variables (AWS_TOKEN, AWS_SESSION_TOKEN, AWS_CONTAINER_AUTHORIZATION_TOKEN): environment
        variables read for the token, in order, as AWS's agent does.
      allow_non_loopback (False): listening on an address other than loopback is refused unless this is
        true, and then logged as a warning at start.
      open_health (False): ``/ping`` and ``/healthz`` answer without the token, as AWS's agent's ``/ping``
        does, for probes that cannot send a header. Off by default: every request carries the token, and
        ``/healthz`` (front ends, cache counters) tells nothing to a process that does not hold it.
      tls_cert, tls_key (None): PEM files; when both are set, both TCP listeners speak TLS (1.2 or later).
        The Unix socket never does (file permissions protect it).
      tls_ca (None): PEM file of the CAs whose client certificates are accepted: mutual TLS, as
        Aerospike's ``service.tcp.tls.ca-file``. Needs tls_cert and tls_key.

    Limits:
      max_body_bytes (65536): largest Secret Agent request body; a larger announced length is answered
        with an error and the connection closed.
      max_header_bytes (65536): largest HTTP request head (request line and headers), answered with 431.
      max_connections (800): concurrent authenticated connections (AWS's default), counted apart for
        token holders (HTTP) and for Secret Agent clients, so that the one cannot starve the other; more are answered with 429 (HTTP) or an error frame, then closed. Health checks get 3 extra. An HTTP
        connection is authenticated once a request carries the token; a Secret Agent connection (the
        protocol has no authentication) once it has sent a well-formed request.
      max_unauthenticated (128): connections not yet authenticated, kept apart from max_connections; when
        one more arrives, the oldest is closed, so idle or token-less connections can never lock out
        clients that have the token.
      header_timeout (5.0): seconds a connection that is not authenticated gets for each request head or
        message before it is closed.
      read_timeout (60.0): seconds an authenticated connection may stay silent (or send a message slowly)
        before it is closed; bounds what a stuck or malicious client holds.
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
    convert_to_base64: bool = True

    allow: tuple[str, ...] = ()
    token: SecretStr | None = None
    token_file: str | None = None
    allow_non_loopback: bool = False
    open_health: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    ssrf_headers: tuple[str, ...] = Field(default=DEFAULT_SSRF_HEADERS, min_length=1)
    ssrf_env_variables: tuple[str, ...] = Field(default=DEFAULT_SSRF_ENV_VARIABLES, min_length=1)

    max_body_bytes: int = Field(default=64 * 1024, ge=64, le=16 * 1024 * 1024)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    max_connections: int = Field(default=800, ge=1, le=100_000)
    max_unauthenticated: int = Field(default=128, ge=1, le=10_000)
    header_timeout: float = Field(default=5.0, gt=0, le=600)
    read_timeout: float = Field(default=60.0, gt=0, le=3600)
    shutdown_grace: float = Field(default=5.0, ge=0, le=300)

    ready_file: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Where each field came from ("file F key service.tcp.endpoint", "option --http"), for error messages.
    _origin: dict[str, str] = PrivateAttr(default_factory=dict)
    # The Secret Agent file the settings came from, if any: its resources are then the allow-list.
    _agent_file: str | None = PrivateAttr(default=None)

    @property
    def agent_file(self) -> str | None:
        return self._agent_file

    def where(self, name: str) -> tuple[str, str]:
        """The key and the source that set field ``name``: what an error message should point at."""
        origin = self._origin.get(name, "serve options")
        if " key " in origin:
            source, _, key = origin.rpartition(" key ")
            return key, source
        return name, origin

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

    @field_validator("ssrf_headers", "ssrf_env_variables", "allow", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p for p in (x.strip() for x in v.split(",")) if p]
        return v

    @field_validator("ssrf_headers")
    @classmethod
    def _headers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for h in v:
            if not h or any(c in h for c in " :\r\n\t"):
                raise ValueError(f"{h!r} is not an HTTP header name")
        return v

    @field_validator("unix_socket", "token_file", "tls_cert", "tls_key", "tls_ca", "ready_file")
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
            raise SettingsError(*self.where("tls_cert"), "tls_cert and tls_key must be given together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise SettingsError(*self.where("tls_ca"), "mutual TLS (tls_ca) needs tls_cert and tls_key")
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise SettingsError(*self.where(name), f"file {path!r} does not exist")
        if self.secret_agent_endpoint is None and self.http_endpoint is None and self.unix_socket is None:
            raise SettingsError(
                "secret_agent",
                "serve options",
                "every front end is off; nothing to serve (a Secret Agent file needs service.tcp.endpoint or "
                "service.uds.socket-path; or pass --secret-agent, --unix-socket or --http)",
            )
        warnings = []
        for name, ep in (("secret_agent", self.secret_agent_endpoint), ("http", self.http_endpoint)):
            if ep is None or ep.is_loopback:
                continue
            if not self.allow_non_loopback:
                raise SettingsError(
                    *self.where(name),
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
    """The serve settings of a Secret Agent file (see :mod:`.agent_file`); none for another file."""
    if not path:
        return {}, {}
    from flytekitplugins_awssecrets.serve.agent_file import read_doc, serve_fields

    doc = read_doc(path)
    if doc is None:
        return {}, {}
    return serve_fields(doc, path)


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
        cfg = ServeConfig(**merged)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        field = loc[0] if loc else "?"
        problem = str(err.get("msg", "invalid"))
        where = origin.get(field, "defaults")
        if " key " in where:
            # Name the file's key (service.tcp.endpoint), not the field it fills.
            where, _, field = where.rpartition(" key ")
        if err.get("type") == "extra_forbidden":
            problem = f"unknown serve setting; known: {_FIELDS}"
        # The input is not shown: it could be the token.
        raise SettingsError(field, where, problem) from None
    cfg._origin = origin
    cfg._agent_file = config_path if file_fields else None
    return cfg


def _read_token_file(path: str, source: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise SettingsError("token", source, f"cannot read token file {path!r}: {e.strerror}") from None
    if not token:
        raise SettingsError("token", source, f"token file {path!r} is empty")
    _warn_if_readable(path)
    return token


def _warn_if_readable(path: str) -> None:
    """A token that others can read is no protection against them; a warning, not a refusal, because AWS's
    own installation makes ``/var/run/awssmatoken`` readable by a group of clients (awssmatokenreader)."""
    from flytekitplugins_awssecrets.settings import readable_mode

    mode = readable_mode(path)
    if mode is None:
        return
    if mode & stat.S_IROTH:
        logger.warning(
            "!!! token file %s is readable by every user (mode %o): any local process can read secrets over "
            "HTTP. Run: chmod 600 %s !!!",
            path,
            mode,
            path,
        )
    else:
        logger.warning(
            "token file %s is readable by its group (mode %o): every member may read secrets over HTTP; "
            "chmod 600 it unless that group is meant to (as AWS's awssmatokenreader)",
            path,
            mode,
        )


def read_token(cfg: ServeConfig, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The HTTP token and where it came from (for the start-up log; the token itself is never logged)."""
    env = os.environ if environ is None else environ
    candidates: list[tuple[str, str]] = []
    if cfg.token is not None:
        candidates.append((cfg.token.get_secret_value(), "setting token"))
    if cfg.token_file is not None:
        candidates.append(("file://" + cfg.token_file, "setting token_file"))
    for var in cfg.ssrf_env_variables:
        if env.get(var):
            candidates.append((env[var], f"env var {var}"))
            break  # AWS's agent reads the first variable that is set
    if os.path.isfile(AWS_TOKEN_FILE):
        candidates.append(("file://" + AWS_TOKEN_FILE, AWS_TOKEN_FILE))
    if not candidates:
        raise SettingsError(
            "token",
            "serve options",
            "the HTTP front end needs a token: pass --token-file FILE (or set PYFLYTE_AWSSECRETS_SERVE_TOKEN, "
            f"or one of {', '.join(cfg.ssrf_env_variables)}, or create {AWS_TOKEN_FILE}); or turn it off "
            "with --http off",
        )
    raw, source = candidates[0]
    if raw.startswith("file://"):
        path = raw[len("file://") :]
        return _read_token_file(path, source), f"{source} ({path})"
    if not raw.strip():
        raise SettingsError("token", source, "is empty")
    return raw.strip(), source
