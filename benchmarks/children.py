"""Code that runs in a fresh interpreter for P1 and P7, reporting one JSON line on stdout.

Only the standard library is imported at the top: what a child measures must not include the benchmark's
own dependencies (rich, matplotlib).

    python -m benchmarks.children import-time [--skip-plugin] [--flyte2]
    python -m benchmarks.children rss baseline|client|resolve [ARN_FILE]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

PLUGIN_ENTRY_POINTS = frozenset({"awssecrets", "awssecrets-aptible"})
#: Each SDK's entry point group for the plugin, and the module its loading leaves behind.
GROUPS = {"flytekit": "flytekit.plugins", "flyte": "flyte.plugins.types"}
LOADED = {
    "flytekit": "flytekitplugins_awssecrets.flytekit.hooks",
    "flyte": "flytekitplugins_awssecrets.flyte2.entrypoint",
}


def import_time(skip_plugin: bool, sdk: str = "flytekit") -> dict[str, object]:
    """Time ``import flytekit`` (or, ``sdk="flyte"``, ``import flyte`` and ``flyte.init()``, which loads
    Flyte 2's type plugins), and within it the loading of this plugin's entry point.

    ``python -X importtime`` cannot attribute the plugin: flytekit loads entry points with
    ``importlib.import_module``, whose imports importtime does not log (only the plugin's own nested
    imports show up). So ``EntryPoint.load`` is wrapped instead: the time spent loading our entry point is
    exactly the plugin's share (module imports, its own dependencies, installing the hooks; both of its
    entry points: the core and the Aptible connector).
    ``skip_plugin`` does not load it at all: flytekit alone, the comparison.
    """
    start = time.perf_counter()
    # flytekit imports both too, so their cost stays inside "total". Both are patched: the stdlib's
    # ``entry_points()`` hands out the backport's EntryPoint objects when the backport's finder is installed.
    import importlib.metadata

    classes: list[type] = [importlib.metadata.EntryPoint]
    try:
        import importlib_metadata

        classes.append(importlib_metadata.EntryPoint)
    except ImportError:
        pass
    spent: dict[str, float] = {}

    def wrap(original: Callable[[Any], object]) -> Callable[[Any], object]:
        def load(self: Any) -> object:
            ours = self.group == GROUPS[sdk] and self.name in PLUGIN_ENTRY_POINTS
            if ours and skip_plugin:
                return None
            t = time.perf_counter()
            try:
                loaded = original(self)
            finally:
                spent[self.name] = spent.get(self.name, 0.0) + time.perf_counter() - t
            if not ours or not callable(loaded) or isinstance(loaded, type):
                return loaded
            name, call = self.name, loaded

            # flyte calls what its entry point loads: that call is the plugin's too.
            def timed(*args: Any, **kwargs: Any) -> object:
                t = time.perf_counter()
                try:
                    return call(*args, **kwargs)
                finally:
                    spent[name] = spent.get(name, 0.0) + time.perf_counter() - t

            return timed

        return load

    for cls in classes:
        cls.load = wrap(cls.load)  # type: ignore[attr-defined]
    if sdk == "flyte":
        import flyte

        flyte.init()
    else:
        import flytekit  # noqa: F401

    total = time.perf_counter() - start
    return {
        "total": total,
        "plugin": sum(spent.get(name, 0.0) for name in PLUGIN_ENTRY_POINTS),
        "plugin_loaded": LOADED[sdk] in sys.modules,
        "boto3": "boto3" in sys.modules,
        "botocore": "botocore" in sys.modules,
    }


def _peak_rss_mib() -> float:
    """This process's peak resident set size (``VmHWM``), in MiB.

    Not ``getrusage().ru_maxrss``: Linux carries it over ``exec`` from the forking parent, so a child of a
    large benchmark process would report the parent's size.
    """
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def rss(mode: str, arn_file: str | None) -> dict[str, object]:
    """Peak RSS of a task process: flytekit imported (baseline), then resolving the ARNs in ``arn_file``."""
    import flytekit  # noqa: F401  (a task process always has it; the plugin loads with it)

    out: dict[str, object] = {"after_import": _peak_rss_mib()}
    if mode == "client":  # what boto3 and one client cost, without any payload
        import boto3

        boto3.session.Session().client("secretsmanager", region_name="us-east-1")
    if mode == "resolve":
        assert arn_file is not None
        with open(arn_file, encoding="utf-8") as f:
            arns = f.read().split()
        from flytekitplugins_awssecrets import get_secret_values

        start = time.perf_counter()
        values = get_secret_values(arns)
        out["seconds"] = time.perf_counter() - start
        out["count"] = len(values)
        out["bytes"] = sum(len(v) for v in values)  # sizes only: values never leave this process
    out["peak"] = _peak_rss_mib()
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["import-time"]:
        print(json.dumps(import_time("--skip-plugin" in argv, "flyte" if "--flyte2" in argv else "flytekit")))
        return 0
    if argv[:1] == ["rss"] and len(argv) >= 2:
        print(json.dumps(rss(argv[1], argv[2] if len(argv) > 2 else None)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
