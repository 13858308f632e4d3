"""What both front ends ask for: a reference in, a payload out, through the process resolver.

Both front ends call :meth:`SecretSource.get`, which goes through
:func:`~flytekitplugins_awssecrets.resolver.get_resolver` -- the same TTL cache (with single-flight), client
factory, credentials, batching and required-tag checks as tasks use. So a secret read through the Secret
Agent protocol and then through the HTTP API costs one AWS call within the cache TTL.

Everything here blocks (boto3); the server calls it from a thread pool.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from dataclasses import dataclass

from flytekitplugins_awssecrets.errors import AwsSecretsError, JsonKeyNotFoundError, SecretFetchError
from flytekitplugins_awssecrets.extract import extract_json_key
from flytekitplugins_awssecrets.fetch import Fetched
from flytekitplugins_awssecrets.refs import SecretRef, parse_reference
from flytekitplugins_awssecrets.resolver import get_resolver

__all__ = ["SecretSource", "Served", "pick_key", "secret_name_from_arn"]

_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")


@dataclass(frozen=True)
class Served:
    """A payload and the metadata the HTTP API answers with. Its repr never shows the value.

    ``name``, ``version_stages`` and ``created_date`` come from the fetch when the core records them, and
    are otherwise derived (name from the ARN, stages from the request) or left out (created date).

    Example::

        served = SecretSource().get(parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:db"))
        served.name, served.version_stages  # ('db', ('AWSCURRENT',))
    """

    ref: SecretRef
    value: str | bytes = dataclasses.field(repr=False)
    arn: str
    version_id: str
    name: str
    version_stages: tuple[str, ...] | None
    created_date: float | None

    @classmethod
    def from_fetched(cls, ref: SecretRef, f: Fetched) -> Served:
        # Secrets Manager reports name, stages and date; SSM parameters have none of them.
        name = f.name or secret_name_from_arn(f.arn or (ref.arn if ref.service else ""))
        stages = f.version_stages
        if stages is None:
            if ref.version_stage:
                stages = (ref.version_stage,)
            elif not ref.version_id:
                stages = ("AWSCURRENT",)  # an unpinned read is, by definition, of the current version
        created = f.created_date
        return cls(
            ref=ref,
            value=f.value,
            arn=f.arn,
            version_id=f.version_id,
            name=name,
            version_stages=tuple(stages) if stages is not None else None,
            created_date=float(created) if isinstance(created, int | float) else None,
        )


def secret_name_from_arn(arn: str) -> str:
    """The secret's name: the ARN part after ``secret:``, without the 6-character suffix AWS appends."""
    _, sep, rest = arn.partition(":secret:")
    if not sep:
        return arn
    return _SUFFIX.sub("", rest)


def pick_key(reference: str, raw: str | bytes, key: str) -> str:
    """The field ``key`` of the JSON secret ``raw``, as text.

    Secret Agent keys are plain top-level keys, and may contain dots (``tls.crt``): the literal key is tried
    first, then the plugin's dotted path (``db.password``), so both kinds of client are served.
    """
    literal = key.replace("\\", "\\\\").replace(".", "\\.")
    try:
        return extract_json_key(reference, raw, literal)
    except JsonKeyNotFoundError:
        if "." not in key:
            raise
    return extract_json_key(reference, raw, key)


class SecretSource:
    """Reads secrets for the front ends through the process resolver (one cache for all).

    Example::

        source = SecretSource()
        served = source.get(parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"))
        served.arn, served.version_stages
    """

    def __init__(self) -> None:
        self._accounts: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SecretSource({get_resolver()!r})"

    def resources(self) -> dict[str, str]:
        """Configured name -> ARN (Secret Agent's ``resources``, the plugin's ``aliases``)."""
        return dict(get_resolver().settings.aliases)

    def resource_ref(self, name: str) -> SecretRef:
        """The reference a configured resource name points at (KeyError when it is not configured)."""
        return parse_reference(self.resources()[name])

    def ref_for_name(self, name: str) -> SecretRef:
        """A partial ARN for a plain secret name (AWS's agent accepts names), so that names go through the
        same resolver and cache as ARNs. The region is the settings' (or boto3's default); the account is
        the caller's, asked from STS once per process (GetCallerIdentity needs no permission).
        """
        resolver = get_resolver()
        # AWS_REGION first, as AWS's agent (Rust SDK) reads it; botocore itself only reads AWS_DEFAULT_REGION.
        region = (
            resolver.settings.region
            or os.environ.get("AWS_REGION")
            or resolver.factory.base_session().get_config_variable("region")
        )
        if not region:
            from flytekitplugins_awssecrets.errors import SettingsError

            # The request is fine; the server lacks a default region: a 400 that says so, not a 500.
            raise SettingsError(
                "region",
                "settings, AWS_REGION and the AWS config file (none set)",
                f"the plain secret name {name!r} needs a region: set 'region' in the settings (or "
                "AWS_REGION) for the server, or ask for the ARN",
            )
        key = (region, repr(resolver.settings.assume_role))
        with self._lock:
            account = self._accounts.get(key)
        if account is None:
            try:
                account = str(resolver.factory.client("sts", region).get_caller_identity()["Account"])
            except Exception as e:  # noqa: BLE001 - typed and value-free below
                raise SecretFetchError(
                    name, f"cannot tell which account a plain name is in: {type(e).__name__}"
                ) from None
            with self._lock:
                self._accounts[key] = account
        partition = (
            "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
        )
        return parse_reference(f"arn:{partition}:secretsmanager:{region}:{account}:secret:{name}")

    def get(self, ref: SecretRef, refresh: bool = False) -> Served:
        """Fetch ``ref`` (an ARN reference; its JSON key is not applied) from the cache or AWS.

        Raises the plugin's typed, value-free errors.
        """
        resolver = get_resolver()
        ref = resolver.expand(ref)
        got = resolver.fetch([ref], refresh=refresh).get(ref.fetch_id)
        if got is None:
            raise SecretFetchError(str(ref), "no answer from the resolver")
        if isinstance(got, AwsSecretsError):
            raise got
        if resolver.settings.required_tags:
            err = resolver.check_tags(ref, got)
            if err is not None:
                raise err
        return Served.from_fetched(ref, got)

    def cache_stats(self) -> dict[str, int]:
        cache = get_resolver().cache
        return {"hits": cache.hits, "loads": cache.loads}
