"""AWS region names: is a region one AWS has, and which one was probably meant.

A typo in a region (``us-esat-1``) is well formed, so a pattern cannot catch it, and left alone it costs a
DNS failure or a 22 s wait for an error page. The known regions are those of botocore's partition data
(``botocore/data/partitions.json``, or ``endpoints.json`` in older botocore), read from the file on the
first check without importing botocore, once per process (a few milliseconds). A region botocore does not
know yet (AWS opened it after this botocore was released) is allowed by the ``extra_regions`` setting
(``FLYTE_AWS_SECRETS_EXTRA_REGIONS='["xx-newregion-1"]'``).

Example::

    >>> region_problem("us-esat-1", "aws")
    "region 'us-esat-1' is not an AWS region in partition 'aws'; did you mean 'us-east-1'?"
    >>> region_problem("us-east-1", "aws") is None
    True
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import json
import os
from collections.abc import Iterable, Iterator

__all__ = ["known_regions", "region_problem", "suggest", "allowing", "EXTRA_REGIONS_ENV"]

EXTRA_REGIONS_ENV = "FLYTE_AWS_SECRETS_EXTRA_REGIONS"

# While the settings load, their own ``extra_regions`` apply (aliases are parsed then): no settings lookup.
_LOADING: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "awssecrets_regions_loading", default=None
)


@contextlib.contextmanager
def allowing(regions: Iterable[str]) -> Iterator[None]:
    """Check regions with ``regions`` allowed too, without reading the settings (used while they load)."""
    token = _LOADING.set(frozenset(str(r) for r in regions))
    try:
        yield
    finally:
        _LOADING.reset(token)


@functools.lru_cache(maxsize=1)
def known_regions() -> dict[str, frozenset[str]]:
    """Partition id (``aws``, ``aws-cn``, ``aws-us-gov``...) -> the regions botocore's data lists for it.

    Empty when botocore's data cannot be read (then every well-formed region is accepted: the check is a
    help against typos, and AWS itself still refuses a region that does not exist).
    """
    spec = importlib.util.find_spec("botocore")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        for name in ("partitions.json", "endpoints.json"):
            path = os.path.join(root, "data", name)
            try:
                with open(path, encoding="utf-8") as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                continue
            out: dict[str, frozenset[str]] = {}
            for part in doc.get("partitions", []):
                regions = part.get("regions")
                if isinstance(part.get("partition"), str) and isinstance(regions, dict):
                    out[part["partition"]] = frozenset(regions)  # endpoints.json's shape
                elif isinstance(part.get("id"), str) and isinstance(regions, dict):
                    out[part["id"]] = frozenset(regions)  # partitions.json's shape
            if out:
                return out
    return {}


def _extra_regions() -> frozenset[str]:
    """Regions the operator allows on top of botocore's: the env var, and the settings file's field."""
    raw = os.environ.get(EXTRA_REGIONS_ENV, "").strip()
    extra: set[str] = set()
    if raw.startswith("["):
        try:
            extra.update(str(r) for r in json.loads(raw))
        except (ValueError, TypeError):
            pass  # the settings report the malformed variable, naming it
    elif raw:
        extra.update(r.strip() for r in raw.split(",") if r.strip())
    loading = _LOADING.get()
    if loading is not None:
        return frozenset(extra | loading)
    if not os.environ.get("FLYTE_AWS_SECRETS_CONFIG"):
        return frozenset(extra)
    from flytekitplugins_awssecrets.errors import SettingsError
    from flytekitplugins_awssecrets.settings import get_settings

    try:
        extra.update(get_settings().extra_regions)
    except SettingsError:
        pass  # reported where the settings are used
    return frozenset(extra)


def region_problem(region: str, partition: str | None = None) -> str | None:
    """Why ``region`` is not a known region (of ``partition``, when given), with a suggestion; or None."""
    known = known_regions()
    if not known:
        return None
    pool = known.get(partition, frozenset()) if partition else frozenset().union(*known.values())
    if region in pool:
        return None
    if region in _extra_regions():
        return None
    where = f" in partition {partition!r}" if partition else ""
    guess = suggest(region, pool)
    hint = f"; did you mean {guess!r}?" if guess else ""
    newer = (
        f" (a region AWS opened after this botocore was released: allow it with {EXTRA_REGIONS_ENV}"
        " or upgrade botocore)"
    )
    return f"region {region!r} is not an AWS region{where}{hint}{newer}"


def _typos(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) from ``a`` to ``b``: a swap is one typo."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def suggest(region: str, pool: Iterable[str]) -> str | None:
    """The known region ``region`` is most likely a typo of: fewest typos (at most 3), then difflib's
    similarity. difflib alone prefers ``us-west-1`` for ``us-esat-1``; counting a swap as one typo does not."""
    import difflib  # only for a region that is wrong

    scored = [(_typos(region, r), -difflib.SequenceMatcher(None, region, r).ratio(), r) for r in pool]
    best = min(scored, default=None)
    return best[2] if best is not None and best[0] <= 3 else None
