"""Workflow files that tests write and run with ``pyflyte run`` (module name from the file name)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def one_secret_workflow(path: Path, reference: str) -> Path:
    """Write a workflow ``wf`` whose one task ``t`` requests ``reference`` (ANY) and returns 1."""
    path.write_text(
        textwrap.dedent(
            f"""
            from flytekit import task, workflow
            from flytekitplugins_awssecrets import aws_secret

            S = aws_secret({reference!r})

            @task(secret_requests=[S])
            def t() -> int:
                return 1

            @workflow
            def wf() -> int:
                return t()
            """
        )
    )
    return path
