"""Serialise tasks as ``pyflyte serialize`` does for a cluster, and run a task spec's container command the
way a pod runs it: ``pyflyte-execute`` with inputs, outputs and raw data on local paths.

Used by the tests (the pod path of resolution and of the leak guard) and by the P5 benchmark, so that both
exercise exactly what a cluster would run.

Example::

    specs = serialize_tasks("examples", folder, env, "*.call_api_*.pb")
    p = run_pod(specs["examples.secrets_demo.call_api"], work, env)   # work/out/outputs.pb or error.pb
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent.parent


def serialize_tasks(package: str, folder: Path, env: dict[str, str], *patterns: str) -> dict[str, Any]:
    """Task specs (``flyteidl.admin.task_pb2.TaskSpec``) by task name, from ``pyflyte serialize`` of ``package``.

    ``patterns`` (globs) pick the task files: workflow files in the same folder hold another message type.
    """
    from flyteidl.admin import task_pb2

    folder.mkdir(parents=True)
    args = [str(BIN / "pyflyte"), "--pkgs", package, "serialize", "--image", "registry.example/app:1"]
    p = subprocess.run(
        [*args, "workflows", "-f", str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if p.returncode != 0:
        raise RuntimeError(f"pyflyte serialize failed:\n{p.stderr[-3000:]}")
    specs: dict[str, Any] = {}
    for f in sorted({f for pattern in patterns for f in folder.glob(pattern)}):
        spec = task_pb2.TaskSpec()
        spec.ParseFromString(f.read_bytes())
        specs[spec.template.id.name] = spec
    return specs


def run_pod(
    spec: Any,
    work: Path,
    env: dict[str, str],
    inputs_pb: Any = None,
    bin_dir: Path = BIN,
    wrap: tuple[str, ...] = (),
    python: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the spec's container command on local paths under ``work``; outputs land in work/out.

    The command is looked up in ``bin_dir`` (the image's PATH): a command it lacks raises
    ``FileNotFoundError``, as a container runtime reports "executable file not found". ``wrap`` is put
    before the command (e.g. ``unshare`` to give the pod a mount namespace of its own).

    ``inputs_pb`` is a ``LiteralMap`` proto (default: no inputs). The task template is written where
    ``{{.taskTemplatePath}}`` points, as propeller does for shim tasks loaded from their template.
    ``python`` runs the command with another interpreter (an "image", see :mod:`tests.support.image`).
    """
    from flyteidl.core import literals_pb2

    (work / "out").mkdir(parents=True)
    inputs = work / "inputs.pb"
    inputs.write_bytes((inputs_pb or literals_pb2.LiteralMap()).SerializeToString())
    template = work / "task_template.pb"
    template.write_bytes(spec.template.SerializeToString())
    subs = {
        "{{.taskTemplatePath}}": str(template),
        "{{.input}}": str(inputs),
        "{{.outputPrefix}}": str(work / "out"),
        "{{.rawOutputDataPrefix}}": str(work / "raw"),
        "{{.checkpointOutputPrefix}}": str(work / "ckpt"),
        "{{.prevCheckpointPrefix}}": "",
    }
    args = [subs.get(a, a) for a in spec.template.container.args]
    if args[0] not in ("pyflyte-execute", "pyflyte-map-execute", "pyflyte-awssecrets-execute"):
        raise ValueError(f"the container command is {args[0]!r}, not pyflyte-execute")
    args[0] = str(bin_dir / args[0])
    if not Path(args[0]).exists():
        raise FileNotFoundError(2, "executable file not found in $PATH", args[0])
    if python is not None:
        args.insert(0, str(python))
    return subprocess.run([*wrap, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
