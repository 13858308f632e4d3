"""Which string leaves of a JSON secret are credentials, and which only describe it.

An RDS or Redshift secret holds ``{"engine": "postgres", "host": "db.internal", "port": 5432, "dbname":
"analytics", "username": "app", "password": "..."}``. The password is the secret; the engine, host, port,
database and user name describe where it is used, and a task may well say "loaded via postgres on
db.internal/analytics". The leak guard, log redaction and exception scrubbing (:mod:`sensitive`) look for the
leaves this policy calls sensitive, and always for the whole value.

A leaf is sensitive, in this order, when

1. a key on its path is marked sensitive (the ``sensitive_json_keys`` setting), or is credential-like:
   it contains ``password``, ``secret``, ``token``, ``credential``, ``private``, ``auth``... or has a word
   such as ``key``, ``pwd``, ``pin``, ``otp``, ``cert``, ``dsn``, ``url`` (URLs and DSNs often embed a
   password) -- ``apiKey``, ``client_secret``, ``PRIVATE_KEY_ID`` all are;
2. otherwise not when its own key is descriptive: ``engine``, ``host``, ``port``, ``dbname``, ``username``
   and the other keys AWS's RDS/Redshift/DocumentDB secrets carry (:data:`DESCRIPTIVE_KEYS`), or one the
   ``descriptive_json_keys`` setting adds;
3. otherwise when it looks generated (high entropy: one word of 8+ characters mixing letter cases, digits
   or symbols, 3+ bits of entropy per character): an unknown key holding a token is still a token.

A request with a JSON key (``<arn>:password``) hands the task only the chosen value, which stays sensitive
whole, every leaf of it. ``leak_guard_json_leaves: all`` (the setting) treats every leaf as sensitive.

Example::

    policy = LeafPolicy()
    policy.is_sensitive(("host",), "db.internal")            # False
    policy.is_sensitive(("password",), "x")                  # True
    policy.is_sensitive(("note",), "kq8Zr2-Pw0vLx")          # True: looks generated
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["LeafPolicy", "DESCRIPTIVE_KEYS", "CREDENTIAL_PARTS", "CREDENTIAL_WORDS", "looks_generated"]

#: Substrings of a key (lower case, separators removed) that make it credential-like.
CREDENTIAL_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "private",
    "auth",
    "apikey",
    "accesskey",
    "signature",
    "cookie",
    "bearer",
    "connectionstring",
)
#: Words of a key (split at ``_``, ``-``, ``.``, spaces and camelCase) that make it credential-like.
CREDENTIAL_WORDS = frozenset(
    {"key", "pwd", "pass", "pin", "otp", "cert", "jwt", "salt", "sig", "session", "dsn", "url", "uri", "conn"}
)
#: Keys of AWS's database secrets (RDS, Aurora, Redshift, DocumentDB, ElastiCache) that describe rather than
#: authenticate; compared in lower case without separators.
DESCRIPTIVE_KEYS = frozenset(
    {
        "engine",
        "host",
        "hostname",
        "port",
        "dbname",
        "database",
        "username",
        "user",
        "dbinstanceidentifier",
        "dbclusteridentifier",
        "clusteridentifier",
        "masterarn",
        "region",
        "schema",
        "sslmode",
    }
)

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _credential_like(key: str) -> bool:
    flat = _norm(key)
    if any(part in flat for part in CREDENTIAL_PARTS):
        return True
    return any(w.lower() in CREDENTIAL_WORDS for w in _WORD.findall(key))


def looks_generated(text: str) -> bool:
    """True for a string that looks like a generated token rather than a name or prose."""
    s = text.strip()
    if len(s) < 8 or any(c.isspace() for c in s):
        return False
    classes = sum(
        (
            any(c.islower() for c in s),
            any(c.isupper() for c in s),
            any(c.isdigit() for c in s),
            any(not c.isalnum() for c in s),
        )
    )
    if classes < 2:
        return False
    counts = Counter(s)
    entropy = -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())
    return entropy >= 3.0


@dataclass(frozen=True)
class LeafPolicy:
    """Decides, per JSON leaf, whether it is sensitive (see the module docstring).

    ``mode`` is "credentials" (the default) or "all" (every leaf, as before this policy existed).
    """

    mode: str = "credentials"
    sensitive_keys: frozenset[str] = field(default_factory=frozenset)
    descriptive_keys: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_settings(cls, settings: object) -> LeafPolicy:
        return cls(
            str(getattr(settings, "leak_guard_json_leaves", "credentials")),
            frozenset(_norm(k) for k in getattr(settings, "sensitive_json_keys", ()) or ()),
            frozenset(_norm(k) for k in getattr(settings, "descriptive_json_keys", ()) or ()),
        )

    def is_sensitive(self, path: Iterable[str], leaf: str) -> bool:
        """Whether a string ``leaf`` found under the object keys ``path`` (outermost first) is sensitive."""
        if self.mode == "all":
            return True
        keys = list(path)
        if any(_norm(k) in self.sensitive_keys or _credential_like(k) for k in keys):
            return True
        if keys and (_norm(keys[-1]) in DESCRIPTIVE_KEYS or _norm(keys[-1]) in self.descriptive_keys):
            return False
        return looks_generated(leaf)
