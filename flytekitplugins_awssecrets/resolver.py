"""Resolution: from a task's secret requests to values, top to bottom.

``requests -> references (aliases resolved) -> value already present? -> cache -> reads per client, as
:mod:`strategies` chooses them (all regions and reads concurrently) -> replica failover -> required tags ->
JSON key -> Resolved``

Everything that fails is collected, and one :class:`SecretResolutionError` names every failing reference.
The process keeps one cache, one client factory and one thread pool; they are rebuilt when the settings
change.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flytekitplugins_awssecrets.cache import TTLCache
from flytekitplugins_awssecrets.credentials import ClientFactory
from flytekitplugins_awssecrets.errors import (
    AwsSecretsError,
    InvalidReferenceError,
    MissingTagError,
    SecretFetchError,
    SecretResolutionError,
    UnknownAliasError,
)
from flytekitplugins_awssecrets.extract import extract_json_key
from flytekitplugins_awssecrets.fetch import Fetched, Result, fetch_tags
from flytekitplugins_awssecrets.mount import ANY, Resolved
from flytekitplugins_awssecrets.record import ReadInfo
from flytekitplugins_awssecrets.refs import SecretRef, parse_reference, reference_from_request
from flytekitplugins_awssecrets.settings import Settings, get_settings
from flytekitplugins_awssecrets.settings import reset as reset_settings
from flytekitplugins_awssecrets.strategies import Job, Reads

logger = logging.getLogger("flytekitplugins_awssecrets")

__all__ = ["Resolver", "get_resolver", "resolve_requests", "resolve_values", "reset_process_state"]


class Resolver:
    """Fetches references with one cache, one client factory and one thread pool.

    Example::

        values = get_resolver().fetch([parse_reference(arn)])
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.factory = ClientFactory(settings)
        self.reads = Reads(settings, self.factory)
        self.cache: TTLCache[tuple[str, ...], Fetched] = TTLCache(settings.cache_ttl_seconds)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Resolver(cache={self.cache!r})"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, jobs: list[Job]) -> list[Result]:
        if len(jobs) <= 1:
            return [j() for j in jobs]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.settings.max_concurrency, thread_name_prefix="awssecrets"
                )
            pool = self._pool
        return list(pool.map(lambda j: j(), jobs))

    # -- aliases --------------------------------------------------------------------------------------------
    def expand(self, ref: SecretRef) -> SecretRef:
        """Replace an alias by the ARN the settings map it to, keeping the request's own fields."""
        if not ref.is_alias:
            return ref
        assert ref.alias is not None
        target = self.settings.aliases.get(ref.alias)
        if target is None:
            raise UnknownAliasError(ref.alias, list(self.settings.aliases))
        base = parse_reference(target)
        if ref.version_stage or ref.version_id:
            base = dataclasses.replace(base, version_stage=ref.version_stage, version_id=ref.version_id)
        return base.with_fields(ref.json_key, None, None)

    # -- fetching -------------------------------------------------------------------------------------------
    def fetch(
        self, refs: Sequence[SecretRef], refresh: bool = False
    ) -> dict[tuple[str, ...], Fetched | AwsSecretsError]:
        """Payloads (before JSON-key extraction) for ``refs``, from the cache or AWS in one round."""
        by_id = {r.fetch_id: r for r in refs}
        got = self.cache.get_many(
            list(by_id), lambda ids: self._load([by_id[i] for i in ids]), refresh=refresh
        )
        out: dict[tuple[str, ...], Fetched | AwsSecretsError] = {}
        for k, v in got.items():
            if isinstance(v, AwsSecretsError | Fetched):
                out[k] = v
            else:
                out[k] = SecretFetchError(str(by_id[k]), f"unexpected {type(v).__name__}")
        return out

    def _load(self, refs: list[SecretRef]) -> Result:
        from flytekitplugins_awssecrets.quiet import aws_logs_quieted

        # botocore logs response bodies (the values) at DEBUG, whatever the user's logging configuration.
        with aws_logs_quieted():
            return self._load_quietly(refs)

    def _load_quietly(self, refs: list[SecretRef]) -> Result:
        started = time.time()
        out = self._read(refs)
        self._failover(refs, out)
        if self.settings.required_tags:
            self._attach_tags(refs, out)
        ended = time.time()
        ms = (ended - started) * 1000
        for k, v in out.items():
            if isinstance(v, Fetched):
                out[k] = dataclasses.replace(v, read_at=ended, read_ms=ms)
        return out

    def _read(self, refs: Sequence[SecretRef]) -> Result:
        """One round: every (service, region, account) group's jobs, as :mod:`strategies` chooses them."""
        groups: dict[tuple[str, str, str, str], list[SecretRef]] = defaultdict(list)
        for r in refs:
            groups[(r.service or "", r.partition, r.region, r.account)].append(r)
        jobs: list[Job] = []
        for (service, _partition, region, account), members in groups.items():
            jobs += self.reads.jobs(service, region, account, members)
        out: Result = {}
        for res in self._run(jobs):
            out.update(res)
        return out

    def _failover(self, refs: list[SecretRef], out: Result) -> None:
        """Read the replica (same ARN, next failover region) of every secret whose primary region failed with
        a network error, a 5xx or throttling; one more round per failover region."""
        pending = {r.fetch_id: r for r in refs}
        tries: dict[tuple[str, ...], list[SecretRef]] = {}
        for fid, r in pending.items():
            err = out.get(fid)
            if isinstance(err, AwsSecretsError):
                replicas = self.reads.replicas(r, err)
                if replicas:
                    tries[fid] = replicas
        while tries:
            round_refs = {fid: rs.pop(0) for fid, rs in tries.items()}
            got = self._read(list(round_refs.values()))
            for fid, replica in list(round_refs.items()):
                primary = pending[fid]
                res = got.get(replica.fetch_id)
                before = out[fid]
                assert isinstance(before, AwsSecretsError)
                if isinstance(res, Fetched):
                    logger.warning(
                        "read %s from its replica in %s: %s failed (%s)",
                        primary,
                        replica.region,
                        primary.region,
                        before.reason,
                    )
                    out[fid] = res
                    del tries[fid]
                else:
                    logger.warning(
                        "replica of %s in %s failed too (%s)",
                        primary,
                        replica.region,
                        res.reason if isinstance(res, AwsSecretsError) else "no answer",
                    )
                    if not tries[fid]:
                        del tries[fid]

    def _attach_tags(self, refs: list[SecretRef], out: Result) -> None:
        ok = [r for r in refs if isinstance(out.get(r.fetch_id), Fetched)]

        def job(r: SecretRef) -> Job:
            def run() -> Result:
                client = self.factory.client(r.service or "", r.region, r.account)
                tags = fetch_tags(client, r)
                f = out[r.fetch_id]
                assert isinstance(f, Fetched)
                if isinstance(tags, AwsSecretsError):
                    return {r.fetch_id: tags}
                return {r.fetch_id: dataclasses.replace(f, tags=tags)}

            return run

        for res in self._run([job(r) for r in ok]):
            out.update(res)

    def tags_of(self, refs: Sequence[SecretRef]) -> dict[tuple[str, ...], dict[str, str] | AwsSecretsError]:
        """The tags of each reference, one metadata call per secret (DescribeSecret/ListTagsForResource).

        Used for values that did not come from AWS through us (the cluster webhook's files, flytekit's own
        environment variable or file), so that ``required_tags`` holds whatever the source.
        """
        from flytekitplugins_awssecrets.quiet import aws_logs_quieted

        unique = list({r.fetch_id: r for r in refs}.values())

        def job(r: SecretRef) -> Job:
            def run() -> Result:
                try:
                    client = self.factory.client(r.service or "", r.region, r.account)
                except AwsSecretsError as e:
                    return {r.fetch_id: e}
                tags = fetch_tags(client, r)
                return {r.fetch_id: tags if isinstance(tags, AwsSecretsError) else Fetched(b"", tags=tags)}

            return run

        out: dict[tuple[str, ...], dict[str, str] | AwsSecretsError] = {}
        with aws_logs_quieted():
            for res in self._run([job(r) for r in unique]):
                for k, v in res.items():
                    out[k] = v if isinstance(v, AwsSecretsError) else (v.tags or {})
        return out

    def check_tags(self, ref: SecretRef, fetched: Fetched) -> AwsSecretsError | None:
        for tag, expected in self.settings.required_tags.items():
            found = (fetched.tags or {}).get(tag)
            if found is None or (expected != "*" and found != expected):
                return MissingTagError(str(ref), tag, expected, found)
        return None


_lock = threading.Lock()
_resolver: Resolver | None = None


def get_resolver() -> Resolver:
    """The process's resolver for the current settings (rebuilt, with an empty cache, when they change)."""
    global _resolver
    settings = get_settings()
    with _lock:
        if _resolver is None or _resolver.settings != settings:
            if _resolver is not None:
                _resolver.close()
            _resolver = Resolver(settings)
        return _resolver


def reset_process_state() -> None:
    """Forget cached values, clients and settings (tests, and after credentials change)."""
    global _resolver
    with _lock:
        if _resolver is not None:
            _resolver.close()
        _resolver = None
    reset_settings()


# --- entry points --------------------------------------------------------------------------------------------


def _mount_name(secret: Any) -> str:
    m = getattr(secret, "mount_requirement", None)
    return str(getattr(m, "name", ANY))


#: An adapter's "is this value already in place?": (request, reference, settings, whether the cluster's
#: webhook serves the request) -> (value, source, the webhook's file when used as it is), or None.
Present = Callable[[Any, SecretRef, Settings, bool], "tuple[str | bytes, str, str | None] | None"]


def resolve_requests(
    secrets: Sequence[Any],
    task: str | None = None,
    *,
    present: Present | None = None,
    webhook_served: Collection[tuple[str, str, str | None]] = (),
) -> list[Resolved]:
    """Resolve the AWS requests among an SDK's secret requests; others are left to the SDK.

    A request is anything with ``group``, ``key``, ``group_version``, ``mount_requirement`` (its ``name``:
    ``ENV_VAR``, ``FILE`` or ``ANY``) and ``env_var`` attributes, as flytekit's ``Secret`` has; an adapter
    builds them for its SDK. ``present`` (the adapter's) finds values already in place, which are then not
    fetched. ``webhook_served`` names the requests (group, key, group_version) whose files the cluster
    webhook mounted in this pod; only those are read from files.

    Raises :class:`SecretResolutionError` naming every request that failed.
    """
    resolver = get_resolver()
    started = time.time()
    errors: list[AwsSecretsError] = []
    pending: list[tuple[Any, SecretRef]] = []
    in_place: list[tuple[Any, SecretRef, tuple[str | bytes, str, str | None]]] = []
    done: list[Resolved] = []
    for s in secrets:
        try:
            ref = reference_from_request(s.group, s.key, s.group_version)
            if ref is None:
                continue
            ref = resolver.expand(ref)
        except AwsSecretsError as e:
            errors.append(e)
            continue
        try:
            found = (
                present(s, ref, resolver.settings, (s.group, s.key or "", s.group_version) in webhook_served)
                if present is not None
                else None
            )
        except AwsSecretsError as e:
            errors.append(e)
            continue
        if found is not None:
            in_place.append((s, ref, found))
        else:
            pending.append((s, ref))
    if in_place and resolver.settings.required_tags:
        # required_tags holds for every source: a value the platform put in place is checked with one
        # metadata call per secret, like a value we fetched.
        tags = resolver.tags_of([ref for _, ref, _ in in_place])
        for s, ref, found in in_place:
            t = tags[ref.fetch_id]
            err = t if isinstance(t, AwsSecretsError) else resolver.check_tags(ref, Fetched(b"", tags=t))
            if err is not None:
                errors.append(_renamed(err, ref))
            else:
                done.append(_resolved(s, ref, found[0], found[1], path=found[2]))
    else:
        done += [_resolved(s, ref, found[0], found[1], path=found[2]) for s, ref, found in in_place]
    fetched = resolver.fetch([ref for _, ref in pending]) if pending else {}
    for s, ref in pending:
        f = fetched[ref.fetch_id]
        if isinstance(f, AwsSecretsError):
            errors.append(_renamed(f, ref))
            continue
        tag_error = resolver.check_tags(ref, f) if resolver.settings.required_tags else None
        if tag_error is not None:
            errors.append(tag_error)
            continue
        try:
            value = extract_json_key(str(ref), f.value, ref.json_key) if ref.json_key else f.value
        except AwsSecretsError as e:
            errors.append(e)
            continue
        done.append(_resolved(s, ref, value, "aws", _read_info(ref, f, started)))
    if errors:
        raise SecretResolutionError(_dedupe(errors), task)
    return done


def _renamed(err: AwsSecretsError, ref: SecretRef) -> AwsSecretsError:
    """The cache shares one fetch between requests that differ only by JSON key; name this request."""
    if err.reference == str(ref):
        return err
    new = type(err).__new__(type(err))
    new.__dict__.update(err.__dict__)
    new.reference = str(ref)
    Exception.__init__(new, new._build())
    return new


def _dedupe(errors: list[AwsSecretsError]) -> list[AwsSecretsError]:
    seen: set[str] = set()
    out = []
    for e in errors:
        if str(e) not in seen:
            seen.add(str(e))
            out.append(e)
    return out


def _read_info(ref: SecretRef, f: Fetched, started: float) -> ReadInfo:
    """Where a fetched value came from: this resolution's read, or the process cache (read earlier)."""
    region = f.arn.split(":")[3] if f.arn.count(":") >= 4 else ref.region
    detail = f"{ref.service} {region} {f.api}".strip() if f.api != "agent" else resolver_agent_detail()
    source = "agent" if f.api == "agent" else "aws"
    if f.read_at and f.read_at < started:
        source, detail = "cache", f"{source}: {detail}"
    return ReadInfo(source, detail, f.version_id, tuple(f.version_stages or ()), f.read_at, f.read_ms)


def resolver_agent_detail() -> str:
    from flytekitplugins_awssecrets.credentials import endpoint_origin

    url = get_settings().agent_url
    return f"local agent {endpoint_origin(url)}" if url else "local agent"


def _resolved(
    s: Any,
    ref: SecretRef,
    value: str | bytes,
    source: str,
    info: ReadInfo | None = None,
    path: str | None = None,
) -> Resolved:
    if info is None:
        detail = get_settings().webhook_dir if source == "webhook" else ""
        info = ReadInfo(source, detail, read_at=time.time())
    return Resolved(
        group=s.group,
        key=s.key or "",
        group_version=s.group_version,
        mount=_mount_name(s),
        env_var=getattr(s, "env_var", None),
        ref=ref,
        value=value,
        source=source,
        path=path if _mount_name(s) == "FILE" else None,
        info=info,
    )


@dataclasses.dataclass(frozen=True)
class _Plain:
    """A request kept in memory (``ANY``) for a reference given as a string."""

    group: str
    key: str
    group_version: str | None = None
    mount_requirement: None = None
    env_var: None = None


def resolve_values(references: Sequence[Any]) -> list[str | bytes]:
    """Values for references given as strings (ARN or alias) or as an SDK's requests, in order."""
    requests: list[Any] = []
    for r in references:
        if isinstance(r, str):
            ref = parse_reference(r)
            requests.append(_Plain(ref.group, ref.key))
        elif reference_from_request(r.group, r.key, getattr(r, "group_version", None)) is None:
            raise InvalidReferenceError(f"{r.group}{r.key or ''}", "not an AWS reference", "an ARN or alias")
        else:
            requests.append(r)
    return [r.value for r in resolve_requests(requests)]
