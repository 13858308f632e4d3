"""How each AWS API is read: the one place where the read strategy is chosen, from the quotas.

Per account and region, AWS allows ``BatchGetSecretValue`` 100 requests/s (not adjustable),
``GetSecretValue`` 10,000/s (adjustable) and SSM ``GetParameters`` 40/s at standard throughput, shared
by every caller. A fleet of pods starting at once spends the whole batch quota in a second, so the batch
API is not the default even though it makes fewer calls:

========================== =====================================================================
references                 read with
========================== =====================================================================
Secrets Manager, default   ``GetSecretValue`` per secret, all at once on the resolver's pool
Secrets Manager, ``batch`` ``BatchGetSecretValue`` per ``batch_size``, one attempt (no botocore
                           retries on the scarce API); when refused (throttled, denied, failed)
                           the same secrets are read with ``GetSecretValue`` at once, and after a
                           throttle the process skips batches for :data:`BATCH_PAUSE_SECONDS`
Secrets Manager, agent     one ``GET /secretsmanager/get`` per secret at ``agent_url``; AWS directly
                           only with ``agent_fallback`` and only when the agent itself failed
SSM parameters             ``GetParameters`` per 10 names, client in ``ssm_retry_mode`` (adaptive:
                           client-side rate limiting on top of jittered exponential backoff)
========================== =====================================================================

Replica failover (``failover_regions``) is decided here too (:meth:`Reads.replicas`): which errors move
a read to another region, and which regions.

Example::

    reads = Reads(settings, ClientFactory(settings))
    jobs = reads.jobs("secretsmanager", "us-east-1", "123456789012", refs)
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from flytekitplugins_awssecrets import fetch
from flytekitplugins_awssecrets.agent import AgentError, AgentSource
from flytekitplugins_awssecrets.credentials import ClientFactory
from flytekitplugins_awssecrets.errors import AwsSecretsError
from flytekitplugins_awssecrets.fetch import Fetched, Result
from flytekitplugins_awssecrets.refs import SecretRef
from flytekitplugins_awssecrets.settings import Settings

__all__ = ["Reads", "Job", "BATCH_PAUSE_SECONDS", "SSM_BATCH"]

logger = logging.getLogger("flytekitplugins_awssecrets")

Job = Callable[[], Result]

#: After a throttled batch, the process reads with GetSecretValue for this long.
BATCH_PAUSE_SECONDS = 60.0
SSM_BATCH = 10


def _raise(err: Exception) -> Fetched | AwsSecretsError:
    raise err


class Reads:
    """Turns the references of one (service, region, account) into independent jobs for the resolver's pool."""

    def __init__(self, settings: Settings, factory: ClientFactory) -> None:
        self.settings = settings
        self.factory = factory
        self._lock = threading.Lock()
        self._batch_paused_until = 0.0
        self._agent = (
            AgentSource(
                settings.agent_url,
                settings.agent_token_file or "",
                settings.connect_timeout,
                settings.read_timeout,
            )
            if settings.agent_url
            else None
        )

    # -- the choice ------------------------------------------------------------------------------------------
    def jobs(self, service: str, region: str, account: str, refs: Sequence[SecretRef]) -> list[Job]:
        if service == "ssm":
            return self._ssm(region, account, refs)
        if self._agent is not None:
            return [self._job(r, partial(self._via_agent, region, account, r)) for r in refs]
        current = [r for r in refs if not (r.version_id or r.version_stage)]
        pinned = [r for r in refs if r.version_id or r.version_stage]
        if self.settings.read_strategy == "batch" and len(current) > 1 and not self._batch_paused():
            size = self.settings.batch_size
            chunks = [current[i : i + size] for i in range(0, len(current), size)]
            return [self._chunk_job(region, account, c) for c in chunks] + self._gets(region, account, pinned)
        return self._gets(region, account, [*current, *pinned])

    def replicas(self, ref: SecretRef, error: AwsSecretsError) -> list[SecretRef]:
        """The replica references to try, in order, after ``error`` in ``ref``'s region: only for a
        network error, a 5xx or throttling (``retryable``), never for a 4xx such as not found or denied."""
        if ref.service != "secretsmanager" or not error.retryable:
            return []
        regions = self.settings.failover_regions.get(ref.region) or self.settings.failover_regions.get(
            "*", ()
        )
        return [dataclasses.replace(ref, region=r) for r in regions if r != ref.region]

    # -- strategies ------------------------------------------------------------------------------------------
    def _sm_client(self, region: str, account: str, **retries: Any) -> Any:
        return self.factory.client("secretsmanager", region, account, **retries)

    def _job(self, ref: SecretRef, read: Callable[[], Fetched | AwsSecretsError]) -> Job:
        def run() -> Result:
            try:
                return {ref.fetch_id: read()}
            except AwsSecretsError as e:  # building the client (settings, credentials)
                return {ref.fetch_id: e}
            except Exception as e:  # noqa: BLE001 - e.g. a broken profile: typed, value-free
                return {ref.fetch_id: fetch.translate_error(ref, e)}

        return run

    def _gets(self, region: str, account: str, refs: Sequence[SecretRef]) -> list[Job]:
        if not refs:
            return []
        # The client is built here, before the jobs start: built by the first job, it would hold the GIL
        # for tens of milliseconds while the other threads are being started and then wait for it.
        try:
            client = self._sm_client(region, account)
        except Exception as e:  # noqa: BLE001 - e.g. a broken profile: typed, value-free, per secret
            err = e
            return [self._job(r, partial(_raise, err)) for r in refs]
        return [self._job(r, partial(fetch.get_secret_value, client, r)) for r in refs]

    def _batch_paused(self) -> bool:
        with self._lock:
            return time.monotonic() < self._batch_paused_until

    def _chunk_job(self, region: str, account: str, chunk: list[SecretRef]) -> Job:
        def run() -> Result:
            try:
                # One attempt: a throttled batch must not spend botocore's retries on the scarce API.
                client = self._sm_client(region, account, max_attempts=1)
                got = fetch.batch_get_secret_value(client, chunk)
            except Exception as e:  # noqa: BLE001
                err = e if isinstance(e, AwsSecretsError) else None
                return {r.fetch_id: err or fetch.translate_error(r, e) for r in chunk}
            if not isinstance(got, fetch.BatchRefused):
                return got
            if got.reason == "throttled":
                with self._lock:
                    self._batch_paused_until = time.monotonic() + BATCH_PAUSE_SECONDS
            logger.info(
                "BatchGetSecretValue %s in %s; reading %d secret(s) with GetSecretValue instead",
                got.reason,
                region,
                len(chunk),
            )
            # Already on the resolver's pool: these reads get a small pool of their own.
            with ThreadPoolExecutor(len(chunk), thread_name_prefix="awssecrets-get") as pool:
                results = list(pool.map(lambda j: j(), self._gets(region, account, chunk)))
            out: Result = {}
            for res in results:
                out.update(res)
            return out

        return run

    def _via_agent(self, region: str, account: str, ref: SecretRef) -> Fetched | AwsSecretsError:
        assert self._agent is not None
        got = self._agent.get(ref)
        if not isinstance(got, AwsSecretsError) or not self.settings.agent_fallback:
            return got
        if not (isinstance(got, AgentError) or got.retryable):
            return got  # AWS's verdict on the secret, passed on by the agent: the same from AWS directly
        logger.warning("%s; reading %s from AWS directly (agent_fallback)", got.reason, ref)
        return fetch.get_secret_value(self._sm_client(region, account), ref)

    def _ssm(self, region: str, account: str, refs: Sequence[SecretRef]) -> list[Job]:
        chunks = [list(refs[i : i + SSM_BATCH]) for i in range(0, len(refs), SSM_BATCH)]

        def job(chunk: list[SecretRef]) -> Job:
            def run() -> Result:
                try:
                    client = self.factory.client(
                        "ssm", region, account, retry_mode=self.settings.ssm_retry_mode
                    )
                except Exception as e:  # noqa: BLE001
                    err = e if isinstance(e, AwsSecretsError) else None
                    return {r.fetch_id: err or fetch.translate_error(r, e) for r in chunk}
                return fetch.get_parameters(client, chunk)

            return run

        return [job(c) for c in chunks]
