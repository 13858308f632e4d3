"""What ``serve`` reads from an Aerospike Secret Agent configuration file: ``service``, ``log``,
``secret-manager.aws.convert-to-base64`` and the project's own ``x-awssecrets.serve`` section.

A drop-in serves what the file configures and nothing else: the front ends the file does not name are off
(no HTTP front end, so no token, unless ``x-awssecrets.serve.http`` or ``--http`` asks for it), and
``convert-to-base64`` defaults to Aerospike's ``false``. Every key is honoured with Aerospike's meaning or
refused with a :class:`~flytekitplugins_awssecrets.errors.SettingsError` naming the key and why; nothing is
ignored. ``secret-manager`` is checked by the plugin's settings loader
(:func:`flytekitplugins_awssecrets.settings.from_secret_agent`), because tasks read the same file.

Example::

    service:
      tcp:
        endpoint: 127.0.0.1:3005
        tls: {cert-file: cert.pem, key-file: key.pem}   # optional; ca-file for mutual TLS
      uds:
        socket-path: /run/secret-agent.sock
    secret-manager:
      aws:
        region: us-west-1
        convert-to-base64: true
        resources: {TestingSecret: arn:aws:secretsmanager:...}
    log:
      level: info
    x-awssecrets:                 # this project's additions
      serve: {http: 127.0.0.1:2773, token_file: /run/awssmatoken}
      settings: {cache_ttl_seconds: 60}
"""

from __future__ import annotations

import logging
from typing import Any

from flytekitplugins_awssecrets.errors import SettingsError

__all__ = ["ADDITIONS", "is_secret_agent_doc", "read_doc", "serve_fields"]

logger = logging.getLogger(__name__)

#: The section holding this project's additions; Aerospike's agent has no such key.
ADDITIONS = "x-awssecrets"
_NOT_SERVED = {"secret_agent": "off", "http": "off", "convert_to_base64": False}
_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "error",
    "panic": "error",
}
_REST = (
    "Aerospike's REST secrets API and Prometheus metrics are not implemented by this server; for an HTTP "
    f"API use {ADDITIONS}.serve.http (AWS Secrets Manager Agent's API) or remove the section"
)


def _warn_if_readable(path: str, key: str) -> None:
    from flytekitplugins_awssecrets.settings import readable_mode

    mode = readable_mode(path)
    if mode is not None:
        logger.warning(
            "%s holds %s and is readable by other users (mode %o): they can read secrets over HTTP; "
            "run: chmod 600 %s (or use token_file)",
            path,
            key,
            mode,
            path,
        )


def is_secret_agent_doc(doc: object) -> bool:
    return isinstance(doc, dict) and "secret-manager" in doc


def read_doc(path: str) -> dict[str, Any] | None:
    """The parsed file when it is a Secret Agent file; None otherwise (or when it cannot be read: the
    plugin's settings loader reports that with the details)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None
    return doc if is_secret_agent_doc(doc) else None


def _mapping(value: object, key: str, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SettingsError(key, f"file {path}", "must be a mapping")
    return value


def _string(value: object, key: str, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(key, f"file {path}", "must be a non-empty string")
    return value.strip()


def _unknown(key: str, path: str, known: list[str]) -> SettingsError:
    return SettingsError(key, f"file {path}", f"not a Secret Agent key here; known: {known}")


def serve_fields(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Serve settings from a Secret Agent document, and for each the key it came from."""
    fields: dict[str, Any] = dict(_NOT_SERVED)
    origin = {k: f"file {path} (not configured there)" for k in _NOT_SERVED}

    def put(name: str, value: Any, key: str) -> None:
        fields[name] = value
        origin[name] = f"file {path} key {key}"

    service = _mapping(doc.get("service"), "service", path)
    for section in service:
        if section == "tcp":
            tcp = _mapping(service["tcp"], "service.tcp", path)
            for k in tcp:
                if k not in ("endpoint", "tls"):
                    raise _unknown(f"service.tcp.{k}", path, ["endpoint", "tls"])
            if "endpoint" not in tcp:
                raise SettingsError("service.tcp.endpoint", f"file {path}", "is mandatory in a tcp section")
            put(
                "secret_agent", _string(tcp["endpoint"], "service.tcp.endpoint", path), "service.tcp.endpoint"
            )
            tls = _mapping(tcp.get("tls"), "service.tcp.tls", path)
            names = {"cert-file": "tls_cert", "key-file": "tls_key", "ca-file": "tls_ca"}
            for k in tls:
                if k not in names:
                    raise _unknown(f"service.tcp.tls.{k}", path, list(names))
                put(names[k], _string(tls[k], f"service.tcp.tls.{k}", path), f"service.tcp.tls.{k}")
            if tls and not ("cert-file" in tls and "key-file" in tls):
                raise SettingsError(
                    "service.tcp.tls",
                    f"file {path}",
                    "needs both cert-file and key-file (ca-file is optional)",
                )
        elif section == "uds":
            uds = _mapping(service["uds"], "service.uds", path)
            for k in uds:
                if k != "socket-path":
                    raise _unknown(f"service.uds.{k}", path, ["socket-path"])
            if "socket-path" not in uds:
                raise SettingsError(
                    "service.uds.socket-path", f"file {path}", "is mandatory in a uds section"
                )
            put(
                "unix_socket",
                _string(uds["socket-path"], "service.uds.socket-path", path),
                "service.uds.socket-path",
            )
        elif section in ("http", "https"):
            raise SettingsError(f"service.{section}", f"file {path}", _REST)
        else:
            raise _unknown(f"service.{section}", path, ["tcp", "uds", "http", "https"])

    log = _mapping(doc.get("log"), "log", path)
    for k in log:
        if k != "level":
            raise _unknown(f"log.{k}", path, ["level"])
        level = log["level"]
        if not isinstance(level, str) or level.lower() not in _LEVELS:
            raise SettingsError("log.level", f"file {path}", f"must be one of {sorted(_LEVELS)}")
        put("log_level", _LEVELS[level.lower()], "log.level")

    aws = (
        (doc.get("secret-manager") or {}).get("aws") if isinstance(doc.get("secret-manager"), dict) else None
    )
    if isinstance(aws, dict) and "convert-to-base64" in aws:
        value = aws["convert-to-base64"]
        if not isinstance(value, bool):
            raise SettingsError(
                "secret-manager.aws.convert-to-base64", f"file {path}", "must be true or false"
            )
        put("convert_to_base64", value, "secret-manager.aws.convert-to-base64")

    additions = _mapping(doc.get(ADDITIONS), ADDITIONS, path)
    for k in additions:
        if k not in ("serve", "settings"):
            raise SettingsError(
                f"{ADDITIONS}.{k}", f"file {path}", "unknown section; known: ['serve', 'settings']"
            )
    serve = _mapping(additions.get("serve"), f"{ADDITIONS}.serve", path)
    if "token" in serve:
        _warn_if_readable(path, f"{ADDITIONS}.serve.token")
    for k, v in serve.items():
        name = str(k).replace("-", "_")
        key = f"{ADDITIONS}.serve.{k}"
        if name == "allow_non_loopback":
            # The file is copied between hosts and read by tasks too; listening beyond loopback (where the
            # Secret Agent protocol has no authentication) is decided where the server is started.
            raise SettingsError(
                key,
                f"file {path}",
                "cannot be set in a file: pass --allow-non-loopback (or set "
                "PYFLYTE_AWSSECRETS_SERVE_ALLOW_NON_LOOPBACK) where the server is started",
            )
        if name in origin and not origin[name].endswith("(not configured there)"):
            raise SettingsError(
                key, f"file {path}", f"is also set by {origin[name].split(' key ')[-1]}; set it once"
            )
        put(name, v, key)
    return fields, origin
