"""Secret files: written 0600 in 0700 directories, never outside their base, replaced atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from flytekitplugins_awssecrets.errors import InvalidReferenceError

__all__ = ["write_private_file", "replace_file", "write_private", "read_secret_file"]


def write_private_file(base: Path, rel: Sequence[str], value: str | bytes) -> Path:
    """Write ``value`` at ``rel`` under ``base``: 0600, in 0700 directories, never an existing file."""
    path = base.joinpath(*rel)
    # Reject anything that would leave the secrets directory, whatever the name looks like.
    if os.path.commonpath([base, path.resolve().parent]) != str(base.resolve()):
        raise InvalidReferenceError(
            "/".join(rel), "the mount path leaves the secrets directory", "a plain name"
        )
    d = base
    for part in path.relative_to(base).parts[:-1]:
        d = d / part
        if not d.exists():
            os.mkdir(d, 0o700)
        os.chmod(d, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        write_private(fd, value)
    finally:
        os.close(fd)
    return path


def replace_file(path: Path, value: str | bytes) -> None:
    """Give a secret file new content: written to a private temporary file in the same directory (0600)
    and renamed over the old one, so a reader sees the old or the new file, never a partial or empty one."""
    fd, tmp = tempfile.mkstemp(prefix=".refresh-", dir=path.parent)
    try:
        write_private(fd, value)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_private(fd: int, value: str | bytes) -> None:
    """Make ``fd``'s file 0600 and write all of ``value`` to it (a secret file, new or replacing one)."""
    os.fchmod(fd, 0o600)
    view = memoryview(value.encode("utf-8") if isinstance(value, str) else value)
    while view:
        view = view[os.write(fd, view) :]


def read_secret_file(path: str | Path) -> str | bytes:
    """A secret file's content as the resolver gives values: text when it is UTF-8, else the bytes."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data
