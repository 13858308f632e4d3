"""What the plugin left on the memory filesystem, told apart from what running processes hold now.

Mount directories are ``/dev/shm/flyte-aws-secrets-<pid>-*``. Tests run in parallel (xdist workers, each
starting pods), so "nothing left behind" means: no file under the directory of a process that has ended,
nor under this process's own (in-process runs); a live pod of another test may hold files meanwhile.
"""

from __future__ import annotations

import os
from pathlib import Path


def _pid(d: Path) -> int | None:
    try:
        return int(d.name.removeprefix("flyte-aws-secrets-").split("-", 1)[0])
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover_mounts(root: Path = Path("/dev/shm")) -> list[str]:
    """Mount directories with files in them whose process has ended, or that belong to this process."""
    out = []
    for d in root.glob("flyte-aws-secrets-*"):
        pid = _pid(d)
        if pid is None or not any(d.rglob("*")):
            continue
        if pid == os.getpid() or not _alive(pid):
            out.append(d.name)
    return sorted(out)
