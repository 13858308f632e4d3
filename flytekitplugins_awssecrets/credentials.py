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

import os
import threading
from typing import TYPE_CHECKING, Any

from flytekitplugins_awssecrets.settings import AssumeRole, Settings

if TYPE_CHECKING:
    import botocore.session

__all__ = ["ClientFactory"]


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

        mtime = os.stat(self._path).st_mtime_ns
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
        import botocore.session

        core = botocore.session.Session(profile=profile)
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
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=source.create_client,
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
                self._clients[key] = c
            return c
