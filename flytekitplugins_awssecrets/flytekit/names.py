"""flytekit's names for a request, and the lookups its ``SecretsManager`` answers from.

flytekit looks for a secret in ``$<env_prefix><GROUP>_<GROUP_VERSION>_<KEY>`` (``_FSEC_`` by default) and
in ``<default_dir>/<group>/<group_version>/<file_prefix><key>``, lower-cased (``SecretsConfig``). The core
(:mod:`flytekitplugins_awssecrets.mount`, :mod:`flytekitplugins_awssecrets.holds`) keeps values under these
names; the hooks ask here.
"""

from __future__ import annotations

from flytekitplugins_awssecrets import holds

__all__ = ["NAMING", "flytekit_names", "lookup_memory", "lookup_file", "materialize"]

#: How :func:`flytekit_names` names requests, in words (the fix of a mount collision).
NAMING = "flytekit upper-cases environment variable names and lower-cases file names"


def flytekit_names(group: str, key: str, group_version: str | None) -> tuple[str, list[str]]:
    """flytekit's environment variable name and relative file path parts for a request."""
    from flytekit.configuration import SecretsConfig

    cfg = SecretsConfig.auto()
    parts = [p for p in (group, group_version, key) if p]
    env_name = cfg.env_prefix.strip() + "_".join(p.upper() for p in parts)
    rel = [p.lower() for p in parts]
    rel[-1] = cfg.file_prefix.strip() + rel[-1]
    return env_name, rel


def lookup_memory(group: str | None, key: str | None, group_version: str | None) -> str | bytes | None:
    """The running task's in-memory (``ANY``) value for a request, or None."""
    if not group:
        return None
    name, _ = flytekit_names(group, key or "", group_version)
    return holds.memory_value(name)


def lookup_file(group: str | None, key: str | None, group_version: str | None) -> str | None:
    """The path of the running task's mounted file for a request, or None."""
    if not group:
        return None
    _, rel = flytekit_names(group, key or "", group_version)
    return holds.file_path(rel)


def materialize(group: str | None, key: str | None, group_version: str | None, as_: str) -> str | None:
    """Put an in-memory (``ANY``) secret where flytekit would look: ``as_="file"`` writes the file and
    returns its path, ``as_="env"`` sets flytekit's variable and returns its name. None if not held here."""
    if not group:
        return None
    name, rel = flytekit_names(group, key or "", group_version)
    return holds.materialize_named(name, rel, f"{group}{key or ''}", as_)
