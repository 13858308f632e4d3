"""A stand-in for a container image's Python: a virtualenv of its own (its own ``sys.prefix``, where an image
bakes ``etc/flyte/aws-secrets.yaml``) that sees the test environment's packages.

Example::

    python = fake_image(tmp / "image", "leak_guard: true\\n")
    run_pod(spec, tmp / "pod", env, python=python)
"""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path


def fake_image(root: Path, settings_yaml: str | None) -> Path:
    """The interpreter of a new virtualenv at ``root`` holding ``settings_yaml`` as its image settings file."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The test environment's packages, .pth files included (the editable install of the plugin).
    lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    (Path(purelib) / "test-env.pth").write_text("\n".join(lines) + "\n")
    if settings_yaml is not None:
        cfg = root / "etc" / "flyte" / "aws-secrets.yaml"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(settings_yaml)
    return python
