"""The ``pyflyte-awssecrets`` command line.

Subcommands live in the module of the idea they serve and are imported only when invoked, so ``--help`` is
fast and a command never pays for another's dependencies.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

#: name -> (module, attribute, one-line help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "split": ("flytekitplugins_awssecrets.cli_refs", "split", "Split an ARN into flytekit's group and key."),
    "check": ("flytekitplugins_awssecrets.cli_refs", "check", "Check that a workflow's secrets resolve."),
    "manifest": (
        "flytekitplugins_awssecrets.manifest.commands",
        "manifest",
        "Keep parameters and secrets in a committed, KMS-encrypted YAML file.",
    ),
    "serve": ("flytekitplugins_awssecrets.serve.commands", "serve", "Serve secrets on a local endpoint."),
    "aptible": (
        "flytekitplugins_awssecrets.aptible.commands",
        "aptible",
        "Approve Aptible access requests, and list the ones waiting.",
    ),
    "policy": (
        "flytekitplugins_awssecrets.policy",
        "policy",
        "Print the least-privilege IAM policy a workflow's secrets need.",
    ),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(
            name for name, (module, _, _) in _COMMANDS.items() if importlib.util.find_spec(module) is not None
        )

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attr, _ = entry
        try:
            cmd: Any = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                return None
            raise
        return cmd  # type: ignore[no-any-return]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flytekitplugins-awssecrets")
def main() -> None:
    """Tools for AWS-held secrets in Flyte projects.

    Exit codes: 0 success, 1 a check or comparison found problems, 2 bad usage or input,
    3 an AWS or network error.
    """


if __name__ == "__main__":  # pragma: no cover
    main()
