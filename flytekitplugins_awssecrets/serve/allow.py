"""What ``serve`` may hand out: the allow-list every front end checks before (and after) reading AWS.

The server's credentials can usually read more than its clients should get, and anyone holding the HTTP
token (or able to open the Secret Agent socket) is a client. So serve answers only for secrets its
operator listed:

* with a Secret Agent file, its ``secret-manager.aws.resources``: each resource by its name, and the secret
  it points at by ARN or plain name;
* without one, ``--allow`` (``PYFLYTE_AWSSECRETS_SERVE_ALLOW``, comma-separated): plain names (``db``),
  ARNs (full or partial), alias names of the settings, and prefixes ending in ``*``
  (``team/*``, ``arn:aws:secretsmanager:us-east-1:123456789012:secret:team/*``). serve does not start
  without one.

A plain name (or name prefix) entry is the secret of that name in the server's account and region, as a
request by plain name resolves it; ARNs in other accounts or regions need an ARN entry. A request is checked
before anything is read (so an unlisted secret costs no AWS call and reveals nothing about its existence)
and the secret Secrets Manager returned is checked again by its real ARN and name, so that a partial ARN
that AWS resolves to another secret than its text suggests is refused too.

Example::

    >>> allow = AllowList.from_entries(["team/*", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db"],
    ...                                source="option --allow")
    >>> allow.check_arn("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf", None) is None
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from flytekitplugins_awssecrets.errors import AwsSecretsError, InvalidReferenceError, SettingsError
from flytekitplugins_awssecrets.refs import SecretRef, parse_reference

__all__ = ["AllowList", "NotAllowedError", "ALLOW_OPTION"]

logger = logging.getLogger("flytekitplugins_awssecrets.serve")

#: How an operator gives the list without a Secret Agent file (named in every refusal to start).
ALLOW_OPTION = "--allow (or PYFLYTE_AWSSECRETS_SERVE_ALLOW)"


class NotAllowedError(AwsSecretsError):
    """A client asked for a secret that serve's configuration does not list (HTTP 403, a Secret Agent
    ``Error``). Names what was asked and where the list comes from, never a value.

    Example::

        >>> str(NotAllowedError("other", "option --allow"))  # doctest: +ELLIPSIS
        "other: not served: it is not in serve's allow-list (option --allow) ..."
    """

    def __init__(self, reference: str, source: str) -> None:
        super().__init__(
            reference,
            f"not served: it is not in serve's allow-list ({source})",
            "ask the operator to add it (a Secret Agent file's resources, or serve --allow)",
        )


def _key(ref: SecretRef) -> tuple[str, str, str, str, str]:
    """What identifies a secret or parameter whatever the form of its ARN: the name without AWS's suffix."""
    from flytekitplugins_awssecrets.serve.source import secret_name_from_arn

    name = secret_name_from_arn(ref.arn) if ref.service == "secretsmanager" else ref.base_key
    return (ref.partition, str(ref.service), ref.region, ref.account, name)


@dataclass(frozen=True)
class AllowList:
    """Entries as the operator wrote them, sorted by kind, and where they came from (for messages)."""

    source: str
    aliases: frozenset[str] = frozenset()
    arns: frozenset[tuple[str, str, str, str, str]] = frozenset()
    arn_prefixes: tuple[str, ...] = ()
    names: frozenset[str] = frozenset()
    name_prefixes: tuple[str, ...] = ()
    #: A Secret Agent file's resources as they are now: the file is re-read when it changes, and the
    #: list follows it (a resource added is served, one removed is not).
    resources: Callable[[], Mapping[str, str]] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_resources(cls, resources: Callable[[], Mapping[str, str]], path: str) -> AllowList:
        """A Secret Agent file's resources: each name, and the secret it points at (by ARN or name)."""
        return cls(f"resources of {path}", resources=resources)

    def _resource_keys(self) -> set[tuple[str, str, str, str, str]]:
        keys = set()
        for arn in (self.resources() if self.resources is not None else {}).values():
            try:
                keys.add(_key(parse_reference(arn)))
            except InvalidReferenceError:
                continue  # not servable anyway: the resolver names it when it is asked for
        return keys

    @classmethod
    def from_entries(cls, entries: Iterable[str], source: str) -> AllowList:
        """``--allow`` entries; a bad one (empty, a bare ``*``, an ARN that does not parse) is a
        :class:`SettingsError` naming it."""
        arns, arn_prefixes, names, name_prefixes = set(), [], set(), []
        for raw in entries:
            entry = raw.strip()
            if entry.rstrip("*") == "" or entry.count("*") > 1 or ("*" in entry and not entry.endswith("*")):
                raise SettingsError(
                    "allow",
                    source,
                    f"{entry!r} is not an entry: give a name, an ARN, or a prefix ending in one '*' "
                    "(to serve a whole account, give its ARN prefix, "
                    "arn:aws:secretsmanager:REGION:ACCOUNT:secret:*)",
                )
            if entry.startswith("arn:"):
                if entry.endswith("*"):
                    head = entry[:-1]
                    parts = head.split(":")
                    if len(parts) < 6 or not all(parts[1:5]):
                        raise SettingsError(
                            "allow",
                            source,
                            f"{entry!r}: an ARN prefix names partition, service, region and account "
                            "(arn:aws:secretsmanager:us-east-1:123456789012:secret:team/*)",
                        )
                    arn_prefixes.append(head)
                    continue
                try:
                    arns.add(_key(parse_reference(entry)))
                except InvalidReferenceError as e:
                    raise SettingsError("allow", source, f"{entry!r} is not an ARN: {e.reason}") from None
            elif entry.endswith("*"):
                name_prefixes.append(entry[:-1])
            else:
                names.add(entry)
        return cls(
            source,
            aliases=frozenset(names),  # an alias of the settings may be listed by its name
            arns=frozenset(arns),
            arn_prefixes=tuple(arn_prefixes),
            names=frozenset(names),
            name_prefixes=tuple(name_prefixes),
        )

    def describe(self) -> str:
        """For the start-up log: how many entries of each kind, and their source."""
        if self.resources is not None:
            return f"{len(self.resources())} resource(s) ({self.source})"
        kinds = [
            (len(self.aliases), "resource/alias name(s)"),
            (len(self.arns), "ARN(s)"),
            (len(self.arn_prefixes), "ARN prefix(es)"),
            (len(self.name_prefixes), "name prefix(es)"),
        ]
        return ", ".join(f"{n} {what}" for n, what in kinds if n) + f" ({self.source})"

    # -- checks ---------------------------------------------------------------------------------------------
    def _name_listed(self, name: str) -> bool:
        return name in self.names or any(name.startswith(p) for p in self.name_prefixes)

    def permits(
        self, ref: SecretRef, *, real_name: str | None = None, home: Callable[[], SecretRef] | None = None
    ) -> bool:
        """Whether ``ref`` (an ARN reference) is listed. ``real_name`` is the name AWS answered with;
        ``home`` gives a reference in the server's own account and region (for plain-name entries)."""
        partition, service, region, account, name = _key(ref)
        if real_name is not None:
            name = real_name
        key = (partition, service, region, account, name)
        if key in self.arns or (self.resources is not None and key in self._resource_keys()):
            return True
        arn = ref.arn
        if any(arn.startswith(p) for p in self.arn_prefixes):
            return True
        if service == "secretsmanager" and home is not None and self._name_listed(name):
            h = home()
            return (h.partition, h.region, h.account) == (partition, region, account)
        return False

    def check_alias(self, alias: str, arn: str) -> NotAllowedError | None:
        """A configured resource or alias, asked for by its name."""
        if alias in self.aliases or (self.resources is not None and alias in self.resources()):
            return None
        try:
            ref = parse_reference(arn)
        except InvalidReferenceError:
            return NotAllowedError(alias, self.source)
        return None if self.permits(ref) else NotAllowedError(alias, self.source)

    def check_arn(
        self, asked: str, ref: SecretRef | None, home: Callable[[], SecretRef] | None = None
    ) -> NotAllowedError | None:
        """A request by ARN or plain name (``ref`` its reference; None when it does not parse)."""
        if ref is not None and ref.service is not None and self.permits(ref, home=home):
            return None
        return NotAllowedError(asked[:300], self.source)

    def check_served(
        self, asked: str, ref: SecretRef, arn: str, name: str, home: Callable[[], SecretRef] | None = None
    ) -> NotAllowedError | None:
        """After the read: the secret AWS returned, by its real ARN and name."""
        try:
            real = parse_reference(arn) if arn else ref
        except InvalidReferenceError:
            real = ref
        if self.permits(real, real_name=name or None, home=home):
            return None
        return NotAllowedError(asked[:300], self.source)


def refused(front: str, asked: str, err: NotAllowedError) -> None:
    """One log line per refusal: what was asked, on which front end (never a value)."""
    logger.warning("%s: refused %s: not in the allow-list (%s)", front, asked[:300], err.reason)
