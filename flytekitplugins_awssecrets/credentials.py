"""Building botocore sessions and clients from the settings. Everything goes through botocore.

botocore rather than boto3: the clients are the same objects (boto3's ``Session.client`` is botocore's
``create_client``), but ``import boto3`` also imports s3transfer, about 130 ms of CPU that every task pod
would pay before its first request and that this module never uses.

Base credentials, in order of preference: static keys from the settings, a credentials file that is
re-read when it changes, a named profile, or botocore's default chain (environment, shared files with
``AWS_PROFILE``, web identity / EKS IRSA, container credentials / EKS Pod Identity, instance metadata).
On top of the base, ``assume_role`` and per-account ``account_roles`` use botocore's own
``AssumeRoleCredentialFetcher`` with ``DeferredRefreshableCredentials``, which refreshes temporary
credentials before they expire. Endpoints follow botocore's ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_SECRETS_MANAGER`` / ``AWS_ENDPOINT_URL_SSM`` variables.

One client is kept per (service, region, credentials), for the life of the process.
"""

from __future__ import annotations

import copy
import os
import threading
from typing import TYPE_CHECKING, Any

from flytekitplugins_awssecrets.settings import AssumeRole, Settings

if TYPE_CHECKING:
    import botocore.session

__all__ = ["ClientFactory", "endpoint_source", "unreachable_error", "limit_connection_retries"]


class _FileWatchingCredentials:
    """Credentials read with botocore's own shared-file provider, reloaded whenever the file changes.

    Secret Agent's mode for automation that rewrites ``~/.aws/credentials`` with fresh temporary keys:
    the process keeps running and picks up the new keys on its next request.
    """

    def __init__(self, path: str, profile: str) -> None:
        self._path = path
        self._profile = profile
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._creds: Any = None

    def _current(self) -> Any:
        from botocore.credentials import SharedCredentialProvider

        try:
            mtime = os.stat(self._path).st_mtime_ns
        except FileNotFoundError:
            from flytekitplugins_awssecrets.errors import SettingsError

            # Removed while the process runs (the automation that rewrites it failed?): say which file.
            raise SettingsError(
                "credentials_file",
                self._path,
                "the file no longer exists; restore it or unset credentials_file",
            ) from None
        with self._lock:
            if self._creds is None or mtime != self._mtime:
                creds = SharedCredentialProvider(creds_filename=self._path, profile_name=self._profile).load()
                if creds is None:
                    from flytekitplugins_awssecrets.errors import SettingsError

                    raise SettingsError(
                        "credentials_file", self._path, f"has no credentials for profile {self._profile!r}"
                    )
                self._creds, self._mtime = creds, mtime
            return self._creds

    def botocore_credentials(self) -> Any:
        from botocore.credentials import Credentials

        outer = self

        class _Live(Credentials):  # type: ignore[misc]
            """botocore asks for frozen credentials before every request; answer from the file as it is now."""

            def __init__(self) -> None:
                pass

            def get_frozen_credentials(self) -> Any:
                return outer._current().get_frozen_credentials()

            @property
            def access_key(self) -> str:
                return str(outer._current().access_key)

            @property
            def secret_key(self) -> str:
                return str(outer._current().secret_key)

            @property
            def token(self) -> str | None:
                return outer._current().token  # type: ignore[no-any-return]

        return _Live()


def import_botocore() -> None:
    """Import ``botocore.session`` (and its HTTP layer) without loading pyOpenSSL it does not use.

    ``botocore.httpsession`` imports ``urllib3.contrib.pyopenssl`` only to read ``orig_util_SSLContext``: the
    standard library's ``SSLContext`` as it was before anyone injected pyOpenSSL into urllib3, falling back
    to ``urllib3.util.ssl_.SSLContext`` when that import fails. Importing the module loads pyOpenSSL and
    cryptography's x509 bindings, 45-80 ms of CPU in a pod (more than the rest of the plugin), for a class
    botocore then already has: while nobody has imported ``urllib3.contrib.pyopenssl``, nobody can have
    injected it, so the fallback is that same class. The import is refused only while botocore's own import
    runs, and only when nothing imported the module before (then botocore's own import path is kept).
    """
    import sys

    if "botocore.httpsession" in sys.modules or "urllib3.contrib.pyopenssl" in sys.modules:
        import botocore.session  # noqa: F401 - already loaded, or pyOpenSSL is already in use: botocore's way

        return
    blocked = "urllib3.contrib.pyopenssl"
    sys.modules[blocked] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import botocore.session  # noqa: F401
    finally:
        if blocked in sys.modules and sys.modules[blocked] is None:
            del sys.modules[blocked]


#: botocore's data loader, one per data path for the whole process: it keeps the service models and
#: endpoint rules it has parsed (about 100 ms of CPU for Secrets Manager's), which do not change while the
#: process runs, so a new factory (settings reloaded, ``reset_process_state``) builds its clients in ~10 ms.
_LOADERS: dict[Any, Any] = {}
_LOADERS_LOCK = threading.Lock()


def _share_loader(core: botocore.session.Session) -> None:
    key = core.get_config_variable("data_path")
    with _LOADERS_LOCK:
        loader = _LOADERS.get(key)
        if loader is None:
            loader = _LOADERS[key] = _direct_loader(core.get_component("data_loader"))
        core.register_component("data_loader", loader)


_HOOKS: list[Any] = []


def _builtin_hooks() -> Any:
    """A copy of botocore's built-in event handlers, registered once per process; None if they cannot be.

    A botocore ``Session`` registers its ~170 built-in handlers one by one, inspecting each one's signature:
    about 5 ms of CPU per session, on the path to a task's first request. They are the same module-level
    handlers for every session, so they are registered once into an emitter that each new session gets a
    copy of (``Session(event_hooks=..., include_builtin_handlers=False)``, botocore's own parameters; a
    copy is what botocore gives each client too).
    """
    with _LOADERS_LOCK:
        if not _HOOKS:
            from botocore import handlers
            from botocore.hooks import EventAliaser, HierarchicalEmitter

            hooks: Any = HierarchicalEmitter()
            events = EventAliaser(hooks)
            for spec in handlers.BUILTIN_HANDLERS:  # as botocore's Session._register_builtin_handlers
                if len(spec) == 2:
                    events.register(spec[0], spec[1])
                elif len(spec) == 3 and spec[2] is handlers.REGISTER_FIRST:
                    events.register_first(spec[0], spec[1])
                elif len(spec) == 3 and spec[2] is handlers.REGISTER_LAST:
                    events.register_last(spec[0], spec[1])
                else:  # a botocore that registers differently: let each session do it its own way
                    hooks = None
                    break
            _HOOKS.append(hooks)
        template = _HOOKS[0]
        return None if template is None else copy.copy(template)


def _direct_loader(loader: Any) -> Any:
    """botocore's ``loader``, except that it learns whether a service exists from that service's directory.

    To build a client, botocore's ``load_service_model`` lists every service that has a model of the asked
    type (``list_available_services``: a directory listing and up to four ``stat`` calls for each of ~430
    services, twice per first client: 20-30 ms of CPU) only to refuse an unknown name. Here that question is
    answered from the asked service's own directory (the versions that hold the model, which botocore reads
    next anyway); the full list is still built for any other caller, and when the service has no such model
    (then botocore's own error, with the list of known services, is raised).
    """
    import threading

    from botocore.exceptions import DataNotFoundError
    from botocore.loaders import Loader

    class DirectLoader(Loader):  # type: ignore[misc]
        _asked = threading.local()

        def load_service_model(
            self, service_name: str, type_name: str, api_version: str | None = None
        ) -> Any:
            self._asked.name = service_name
            try:
                return super().load_service_model(service_name, type_name, api_version)
            finally:
                self._asked.name = None

        def list_available_services(self, type_name: str) -> Any:
            asked = getattr(self._asked, "name", None)
            if asked:
                self._asked.name = None  # once: botocore's call just after entering load_service_model
                try:
                    self.list_api_versions(asked, type_name)
                except DataNotFoundError:
                    pass
                else:
                    return [asked]  # load_service_model asks only "is ``asked`` among them?": it is
            return super().list_available_services(type_name)

    loader.__class__ = DirectLoader  # same state, one method more: nothing else changes for botocore
    return loader


class ClientFactory:
    """Makes and keeps botocore clients for the current settings.

    Example::

        factory = ClientFactory(get_settings())
        sm = factory.client("secretsmanager", region="us-east-1", account="123456789012")
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._base: botocore.session.Session | None = None
        self._sessions: dict[str, Any] = {}
        self._clients: dict[tuple[str, str, str, str, int], Any] = {}

    # -- sessions ------------------------------------------------------------------------------------------
    def base_session(self) -> botocore.session.Session:
        with self._lock:
            if self._base is None:
                self._base = self._make_base()
            return self._base

    def _new_session(self, profile: str | None = None) -> botocore.session.Session:
        import_botocore()
        import botocore.session

        hooks = _builtin_hooks()
        if hooks is None:
            core = botocore.session.Session(profile=profile)
        else:
            core = botocore.session.Session(
                event_hooks=hooks, include_builtin_handlers=False, profile=profile
            )
        _share_loader(core)
        if self.settings.region:
            core.set_config_variable("region", self.settings.region)
        return core

    def _make_base(self) -> botocore.session.Session:
        s = self.settings
        if s.access_key_id is not None:
            if s.secret_access_key is None:
                from flytekitplugins_awssecrets.errors import SettingsError

                raise SettingsError("secret_access_key", "settings", "is required with access_key_id")
            core = self._new_session()
            core.set_credentials(
                s.access_key_id,
                s.secret_access_key.get_secret_value(),
                s.session_token.get_secret_value() if s.session_token else None,
            )
            return core
        if s.credentials_file is not None:
            if not os.path.isfile(s.credentials_file):
                from flytekitplugins_awssecrets.errors import SettingsError

                raise SettingsError(
                    "credentials_file",
                    "settings",
                    f"the credentials_file {s.credentials_file!r} does not exist (create it, or unset "
                    "credentials_file / FLYTE_AWS_SECRETS_CREDENTIALS_FILE to use the default AWS credential "
                    "chain)",
                )
            core = self._new_session()
            core._credentials = _FileWatchingCredentials(  # noqa: SLF001 - botocore's documented hook point
                s.credentials_file, s.credentials_profile
            ).botocore_credentials()
            return core
        if s.profile is not None:
            return self._new_session(profile=s.profile)
        return self._new_session()

    def _assumed(self, role: AssumeRole, source: botocore.session.Session) -> botocore.session.Session:
        """A session whose credentials come from STS AssumeRole over ``source``, refreshed before expiry."""
        from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

        extra: dict[str, Any] = {
            "RoleSessionName": role.session_name,
            "DurationSeconds": role.duration_seconds,
        }
        if role.external_id:
            extra["ExternalId"] = role.external_id

        def sts_client(service: str, **kwargs: Any) -> Any:
            # The same time-outs and connection attempts as every other client: an unreachable STS
            # endpoint must fail in seconds too, not after botocore's 60 s defaults.
            from botocore.config import Config

            s = self.settings
            cfg = Config(
                retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts},
                connect_timeout=s.connect_timeout,
                read_timeout=s.read_timeout,
            )
            kwargs["config"] = cfg.merge(kwargs["config"]) if kwargs.get("config") else cfg
            # STS needs a region even when no default is configured (ARNs carry the secrets' regions).
            kwargs.setdefault("region_name", source.get_config_variable("region") or "us-east-1")
            client = source.create_client(service, **kwargs)
            limit_connection_retries(client, s.connect_attempts)
            return client

        fetcher = AssumeRoleCredentialFetcher(
            client_creator=sts_client,
            source_credentials=source.get_credentials(),
            role_arn=role.role_arn,
            extra_args=extra,
        )
        core = self._new_session()
        core._credentials = DeferredRefreshableCredentials(  # noqa: SLF001
            method="assume-role", refresh_using=fetcher.fetch_credentials
        )
        return core

    def session_for(self, account: str) -> tuple[str, botocore.session.Session]:
        """The session that reads secrets of ``account``, and a label that identifies its credentials."""
        with self._lock:
            role = self.settings.account_roles.get(account) or self.settings.assume_role
            label = role.role_arn if role else "base"
            if label not in self._sessions:
                base = self.base_session()
                if role is None:
                    self._sessions[label] = base
                else:
                    source = base
                    if account in self.settings.account_roles and self.settings.assume_role is not None:
                        # Cross-account roles are assumed from the main assumed role when there is one,
                        # so the trust policy names one principal.
                        source = self.session_for("")[1]
                    self._sessions[label] = self._assumed(role, source)
            return label, self._sessions[label]

    # -- clients -------------------------------------------------------------------------------------------
    def client(
        self,
        service: str,
        region: str,
        account: str = "",
        *,
        retry_mode: str | None = None,
        max_attempts: int | None = None,
    ) -> Any:
        """The client for ``service`` in ``region`` with ``account``'s credentials. ``retry_mode`` and
        ``max_attempts`` override the settings' (the read strategies choose them per API, see
        :mod:`~flytekitplugins_awssecrets.strategies`)."""
        label, session = self.session_for(account)
        key = (service, region, label, retry_mode or "", max_attempts or 0)
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                from botocore.config import Config

                s = self.settings
                cfg = Config(
                    retries={
                        "mode": retry_mode or s.retry_mode,
                        "total_max_attempts": max_attempts or s.max_attempts,
                    },
                    connect_timeout=s.connect_timeout,
                    read_timeout=s.read_timeout,
                    max_pool_connections=max(10, s.max_concurrency),
                    user_agent_extra="flytekitplugins-awssecrets",
                )
                c = session.create_client(service, region_name=region, config=cfg)
                limit_connection_retries(c, s.connect_attempts)
                self._clients[key] = c
            return c


# -- endpoints: where requests go, and failing fast when they cannot get there ------------------------------

#: botocore's per-service endpoint variables (``AWS_ENDPOINT_URL_<SERVICE_ID>``).
SERVICE_ENDPOINT_ENV = {
    "secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "ssm": "AWS_ENDPOINT_URL_SSM",
    "kms": "AWS_ENDPOINT_URL_KMS",
    "sts": "AWS_ENDPOINT_URL_STS",
}


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    if not parts.netloc:
        return url.strip().rstrip("/").lower()
    # Host and port only: a user:password@ in an endpoint URL must not reach a message.
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}".lower()


def endpoint_source(service: str, url: str, environ: dict[str, str] | None = None) -> str:
    """Where botocore took ``url`` from: an env var, the AWS config file, or its built-in default."""
    env = os.environ if environ is None else environ
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        specific = [SERVICE_ENDPOINT_ENV[service]] if service in SERVICE_ENDPOINT_ENV else []
        # The service's own variable, then the global one, then any other service's (the failing call may
        # have been STS, fetching credentials for a Secrets Manager read).
        others = [v for v in SERVICE_ENDPOINT_ENV.values() if v not in specific]
        for var in [*specific, "AWS_ENDPOINT_URL", *others]:
            if env.get(var) and _origin(env[var]) == _origin(url):
                return f"env var {var}"
    if _origin(url).endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws")):
        return "botocore's default for the region"
    return "the AWS config file (endpoint_url in the profile or its services section)"


def endpoint_origin(url: str) -> str:
    """``scheme://host:port`` of a request or endpoint URL: the unit that is reachable or not."""
    return _origin(url)


def unreachable_error(reference: str, exc: BaseException, service: str) -> Any:
    """The :class:`~flytekitplugins_awssecrets.errors.EndpointUnreachableError` for a botocore connection
    failure or time-out, or ``None`` when ``exc`` is something else. The one translation every caller
    (task resolution, ``check``, the manifest commands) uses."""
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectionError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    from flytekitplugins_awssecrets.errors import EndpointUnreachableError

    if not isinstance(exc, ConnectionError | ReadTimeoutError):
        return None
    url = str(getattr(exc, "kwargs", {}).get("endpoint_url", "") or "")
    if isinstance(exc, ConnectTimeoutError):
        problem = "connect timed out (connect_timeout)"
    elif isinstance(exc, ReadTimeoutError):
        problem = "no answer within the read time-out (read_timeout)"
    elif isinstance(exc, ConnectionClosedError):
        problem = "the connection was closed before an answer"
    elif isinstance(exc, EndpointConnectionError):
        problem = "connection failed (refused or no route)"
    else:
        problem = type(exc).__name__
    attempts = int(getattr(exc, "_awssecrets_attempts", 1) or 1)
    origin = _origin(url) if url else "(unknown)"
    return EndpointUnreachableError(reference, origin, endpoint_source(service, url), problem, attempts)


def limit_connection_retries(client: Any, attempts: int) -> None:
    """Stop retrying a request after ``attempts`` tries when the endpoint cannot be reached.

    botocore's ``max_attempts`` covers throttling and connection failures alike; a count that rides out
    throttling (5, or 10 for the manifest writes) would keep an unreachable endpoint hanging for a minute.
    botocore asks every ``needs-retry`` handler in turn and takes the first answer that is not ``None``;
    this one goes first and answers ``False`` (do not retry) once connection failures reach ``attempts``.
    """
    from botocore.exceptions import ConnectionError, ReadTimeoutError

    service_id = client.meta.service_model.service_id.hyphenize()

    def handler(attempts_so_far: int = 0, caught_exception: BaseException | None = None, **_: Any) -> Any:
        if isinstance(caught_exception, ConnectionError | ReadTimeoutError):
            caught_exception._awssecrets_attempts = attempts_so_far  # type: ignore[union-attr]
            if attempts_so_far >= attempts:
                return False
        return None

    def adapter(**kwargs: Any) -> Any:
        return handler(kwargs.pop("attempts", 0), kwargs.pop("caught_exception", None))

    client.meta.events.register_first(
        f"needs-retry.{service_id}", adapter, unique_id=f"awssecrets-connect-attempts-{service_id}"
    )
