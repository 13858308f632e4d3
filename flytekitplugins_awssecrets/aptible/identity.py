"""From a requester's email to exactly one Aptible user of the organization (Sym's ``get_identity``).

The override (a mapping, or a function imported in the connector process) runs first and may answer an
Aptible user id or another email; then emails are matched case-insensitively against the organization's
users. No user, or more than one, is an error before anything changes.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

from flytekitplugins_awssecrets.aptible.client import AptibleUser
from flytekitplugins_awssecrets.aptible.errors import (
    AmbiguousIdentityError,
    AptibleConfigError,
    IdentityNotFoundError,
)
from flytekitplugins_awssecrets.aptible.models import IdentitySpec

__all__ = ["load_identity_function", "resolve_identity", "identity_key"]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def load_identity_function(spec: str) -> Callable[[str], str | None]:
    """Import ``"module:qualname"``; an import problem is a configuration error naming the spec."""
    module_name, _, qualname = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise AptibleConfigError(
            f"identity {spec!r}",
            f"cannot be imported in the connector process ({type(e).__name__})",
            "install the module that defines it in the connector's image",
        ) from None
    if not callable(obj):
        raise AptibleConfigError(f"identity {spec!r}", "is not callable")
    return cast(Callable[[str], str | None], obj)


def _mapped(wanted: str, spec: IdentitySpec) -> str | None:
    """What the operator's mapping (then function) answers for ``wanted``: an Aptible user id or email."""
    mapped: str | None = spec.mapping.get(wanted.casefold())
    if mapped is None and spec.function:
        answer = load_identity_function(spec.function)(wanted)
        if answer is not None and not isinstance(answer, str):
            raise AptibleConfigError(
                f"identity {spec.function!r}", f"returned {type(answer).__name__}, not str"
            )
        mapped = answer.strip() if answer else None
    return mapped


def identity_key(email: str, spec: IdentitySpec) -> str:
    """Who ``email`` is after the operator's mapping, without asking Aptible: the mapped user id, else the
    mapped (or given) email, case-folded. Two emails with the same key are the same Aptible user; ``aptible
    approve`` uses this where it cannot list the organization's users."""
    wanted = email.strip()
    mapped = _mapped(wanted, spec)
    if mapped and _UUID.match(mapped.lower()):
        return mapped.lower()
    return (mapped or wanted).casefold()


def resolve_identity(
    email: str, organization_id: str, users: Sequence[AptibleUser], spec: IdentitySpec
) -> AptibleUser:
    """The one user of ``users`` (the organization's) that ``email`` designates."""
    wanted = email.strip()
    mapped = _mapped(wanted, spec)
    if mapped and _UUID.match(mapped.lower()):
        for u in users:
            if u.id == mapped.lower():
                return u
        raise IdentityNotFoundError(
            email, organization_id, f"the identity override names user {mapped.lower()}"
        )
    target = (mapped or wanted).casefold()
    matches = [u for u in users if u.email.strip().casefold() == target]
    if not matches:
        raise IdentityNotFoundError(email, organization_id)
    if len(matches) > 1:
        raise AmbiguousIdentityError(email, organization_id, sorted(u.id for u in matches))
    return matches[0]
