"""``pyflyte-awssecrets serve``: the command line of the local secrets endpoint.

Exit codes: 0 after a clean shutdown (SIGTERM, SIGINT), 2 for bad settings or a listener that cannot be
created (address in use, non-loopback address not allowed, missing token).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from flytekitplugins_awssecrets.errors import SettingsError

__all__ = ["serve"]

if TYPE_CHECKING:
    from flytekitplugins_awssecrets.serve.allow import AllowList
    from flytekitplugins_awssecrets.serve.config import ServeConfig

_CONFIG_ENV = "FLYTE_AWS_SECRETS_CONFIG"


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("flytekitplugins_awssecrets").setLevel(level.upper())
    # botocore at debug level prints request and response bodies, which hold secret values.
    from flytekitplugins_awssecrets.quiet import quiet_aws_loggers

    quiet_aws_loggers(extra=("asyncio",))


def _allow_list(cfg: ServeConfig) -> AllowList:
    """The Secret Agent file's resources, or ``--allow``; neither is a start-up error naming the option."""
    from flytekitplugins_awssecrets.serve.allow import ALLOW_OPTION, AllowList

    if cfg.agent_file is not None:
        if cfg.allow:
            raise SettingsError(
                *cfg.where("allow"),
                f"with a Secret Agent file, its secret-manager.aws.resources are what serve serves; list the "
                f"secrets there ({cfg.agent_file}) instead of {ALLOW_OPTION}",
            )
        from flytekitplugins_awssecrets.serve.source import SecretSource

        return AllowList.from_resources(SecretSource().resources, cfg.agent_file)
    if not cfg.allow:
        raise SettingsError(
            "allow",
            "serve options",
            f"serve needs an allow-list of what it may serve: pass {ALLOW_OPTION} with secret names, ARNs "
            "or prefixes ending in '*' (repeatable), or --config with a Secret Agent file whose resources "
            "list them",
        )
    return AllowList.from_entries(cfg.allow, cfg.where("allow")[1])


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Settings file: the plugin's YAML, or an Aerospike Secret Agent configuration, served as it is "
    "configured (service.tcp, service.uds, TLS, convert-to-base64, log.level; no HTTP front end unless "
    "x-awssecrets.serve.http or --http asks for it). Sets FLYTE_AWS_SECRETS_CONFIG.",
)
@click.option(
    "--secret-agent", metavar="HOST:PORT|off", help="Secret Agent protocol over TCP [127.0.0.1:3005]."
)
@click.option(
    "--unix-socket", metavar="PATH", help="Also serve the Secret Agent protocol on this Unix socket."
)
@click.option("--http", metavar="HOST:PORT|off", help="AWS Secrets Manager Agent HTTP API [127.0.0.1:2773].")
@click.option(
    "--allow",
    metavar="NAME|ARN|PREFIX*",
    multiple=True,
    help="What is served without a Secret Agent file (repeatable): a secret name, an ARN, an alias, or a "
    "prefix ending in '*' (team/*). Required then; a Secret Agent file's resources are its list.",
)
@click.option(
    "--token-file",
    metavar="PATH",
    help="File holding the token HTTP clients send in X-Aws-Parameters-Secrets-Token "
    "(default: PYFLYTE_AWSSECRETS_SERVE_TOKEN, AWS_TOKEN, /var/run/awssmatoken).",
)
@click.option("--tls-cert", metavar="PEM", help="Certificate (chain) for TLS on the TCP listeners.")
@click.option("--tls-key", metavar="PEM", help="Private key for --tls-cert.")
@click.option("--tls-ca", metavar="PEM", help="CAs of accepted client certificates: mutual TLS.")
@click.option(
    "--convert-to-base64/--no-convert-to-base64",
    default=None,
    help="Secret Agent answers: base64 of the stored value, or the stored (already base64) value as is "
    "[true; false in a Secret Agent file, as Aerospike].",
)
@click.option(
    "--allow-non-loopback",
    is_flag=True,
    default=None,
    help="Allow listening on addresses other than loopback (logged as a warning).",
)
@click.option(
    "--open-health",
    is_flag=True,
    default=None,
    help="Answer /ping and /healthz without the token (for probes that cannot send a header).",
)
@click.option("--max-body-bytes", type=int, help="Largest Secret Agent request body [65536].")
@click.option(
    "--max-connections",
    type=int,
    help="Concurrent authenticated connections, for HTTP and for Secret Agent each [800].",
)
@click.option(
    "--max-unauthenticated",
    type=int,
    help="Connections not yet authenticated; the oldest is closed when more arrive [128].",
)
@click.option(
    "--header-timeout", type=float, help="Seconds an unauthenticated connection gets per request [5]."
)
@click.option("--read-timeout", type=float, help="Seconds a connection may stay silent [60].")
@click.option("--shutdown-grace", type=float, help="Seconds in-flight requests get after SIGTERM [5].")
@click.option("--ready-file", metavar="PATH", help="Write the bound addresses there (JSON) once listening.")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log verbosity [info]."
)
def serve(config_file: str | None, **options: Any) -> None:
    """Serve secrets on a local endpoint to processes that are not Python: the Secret Agent protocol
    (TCP 127.0.0.1:3005, optionally a Unix socket) and AWS Secrets Manager Agent's HTTP API
    (127.0.0.1:2773, token required), both through the plugin's resolution and one cache. With a Secret
    Agent file, only what the file configures is served.

    Options may also be set as PYFLYTE_AWSSECRETS_SERVE_<OPTION> (for example
    PYFLYTE_AWSSECRETS_SERVE_HTTP=off). See
    https://flytekitplugins-awssecrets.github.io/flytekitplugins-awssecrets/serve/.

    \b
    Example:
      pyflyte-awssecrets serve --config secret-agent.yaml    # what the file configures
      pyflyte-awssecrets serve --config secret-agent.yaml --http 127.0.0.1:2773 --token-file /run/awssmatoken
      curl -H "X-Aws-Parameters-Secrets-Token: $(cat /run/awssmatoken)" \\
        'http://127.0.0.1:2773/secretsmanager/get?secretId=TestingSecret'
    """
    from flytekitplugins_awssecrets.serve.config import load_serve_config, read_token

    if config_file:
        os.environ[_CONFIG_ENV] = os.path.abspath(config_file)
    options["allow"] = options.get("allow") or None  # click gives () when the option is not used
    try:
        cfg = load_serve_config(options, config_path=os.environ.get(_CONFIG_ENV))
        _setup_logging(cfg.log_level)
        log = logging.getLogger("flytekitplugins_awssecrets.serve")
        for warning in cfg.check():
            log.warning(warning)
        from flytekitplugins_awssecrets.settings import get_settings

        settings = get_settings()  # fail now, not on the first request, when the settings are wrong
        if settings.agent_url:
            # serve is itself an agent source: reading through agent_url could be reading through itself.
            raise SettingsError("agent_url", "settings", "is for tasks; unset it for the serve process")
        token = None
        if cfg.http_endpoint is not None:
            token, source = read_token(cfg)
            log.info("HTTP token read from %s", source)
        log.info(
            "settings: %d resource(s)/alias(es), cache TTL %.0f s",
            len(settings.aliases),
            settings.cache_ttl_seconds,
        )
        allow = _allow_list(cfg)
        log.info("serving only: %s", allow.describe())
        from flytekitplugins_awssecrets.serve.server import run

        run(cfg, token, allow)
    except SettingsError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
