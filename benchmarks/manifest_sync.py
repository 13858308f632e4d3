"""P6: pushing a manifest of 500 SSM parameters of which 5 changed: our ``sync`` against psyml's ``save``.

The file is psyml's format, plain text (no KMS step on either side): 400 ``String`` and 100 ``SecureString``
parameters under one path. Before each run AWS holds the file's values except for 5, so ``sync`` has 5
parameters to write and psyml, which cannot tell what changed, writes all 500 (one new boto3 client and
one ``PutParameter`` per parameter, one after the other).

Both run in this process through their function-level APIs (``store.sync`` on the decrypted manifest, as
``pyflyte-awssecrets manifest sync FILE`` does; ``PSyml(file).save()``, as ``psyml save FILE`` does), timed
from reading the file to the last write. Two files are measured: without ``tags`` (the main row) and with
file-level ``tags``, where psyml also tags every parameter and ``sync`` must read every parameter's tags.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.harness import AwsStandIn, Options, Results, Row, Sample, ms, new_value, ratio, timed

COUNT = 500
CHANGED = 5
PATH = "/bench/p6"
KMS_KEY = "alias/aws/ssm"
TAGS = {"project": "p6", "team": "bench"}
GOAL_FEWER_CALLS = 10.0
GOAL_FASTER = 5.0


class Fixture:
    """The manifest file and the AWS state "file minus 5 changes" that every run starts from."""

    def __init__(self, aws: AwsStandIn, folder: Path, tags: bool) -> None:
        import yaml

        self.ssm = aws.setup_client("ssm")
        self.tags = tags
        self.path = f"{PATH}/{'tagged' if tags else 'plain'}"
        self.names = [f"param{i:03d}" for i in range(COUNT)]
        self.types = {n: "SecureString" if i % 5 == 0 else "String" for i, n in enumerate(self.names)}
        self.old = {n: new_value(32) for n in self.names}
        self.changed = self.names[:: COUNT // CHANGED]
        new = dict(self.old)
        new.update({n: new_value(32) for n in self.changed})
        doc: dict[str, Any] = {"path": self.path + "/", "region": "us-east-1", "kmskey": KMS_KEY}
        if tags:
            doc["tags"] = dict(TAGS)
        doc["parameters"] = [
            {"name": n, "description": f"benchmark parameter {n}", "type": self.types[n], "value": new[n]}
            for n in self.names
        ]
        self.file = folder / f"p6-{'tagged' if tags else 'plain'}.yml"
        self.file.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self._put_old, self.names))

    def _put_old(self, name: str) -> None:
        kwargs: dict[str, Any] = {
            "Name": f"{self.path}/{name}",
            "Value": self.old[name],
            "Type": self.types[name],
            "Overwrite": True,
            "Description": f"benchmark parameter {name}",
        }
        if self.types[name] == "SecureString":
            kwargs["KeyId"] = KMS_KEY
        self.ssm.put_parameter(**kwargs)
        if self.tags:
            tags = [{"Key": k, "Value": v} for k, v in sorted(TAGS.items())]
            self.ssm.add_tags_to_resource(
                ResourceType="Parameter", ResourceId=f"{self.path}/{name}", Tags=tags
            )

    def revert(self) -> None:
        """Put the 5 changed parameters back to their old values (straight to moto, not counted)."""
        for n in self.changed:
            self._put_old(n)

    def sync(self) -> None:
        from flytekitplugins_awssecrets.manifest import store
        from flytekitplugins_awssecrets.manifest.crypto import decrypted_values
        from flytekitplugins_awssecrets.manifest.model import load_manifest

        m = decrypted_values(load_manifest(str(self.file)), None)
        report = store.sync(m, store.Clients(m.region))
        if not report.ok or len(report.succeeded) != CHANGED:
            raise RuntimeError(f"sync did not do what the benchmark expects: {report.summary()}")

    def psyml_save(self) -> None:
        from psyml.models import PSyml

        with open(self.file, encoding="utf-8") as f:
            PSyml(f).save()


def _measure(
    aws: AwsStandIn, fx: Fixture, sync_runs: int, psyml_runs: int
) -> tuple[Sample, Sample, dict[str, int]]:
    """Interleaved runs of both (same machine load); also the calls of one sync by operation."""
    ours, theirs = Sample(), Sample()
    calls: dict[str, int] = {}
    for i in range(max(sync_runs, psyml_runs)):
        if i < sync_runs:
            timed(fx.sync, aws.proxy, ours)
            calls = dict(aws.proxy.calls)
            fx.revert()
        if i < psyml_runs:
            timed(fx.psyml_save, aws.proxy, theirs)
            fx.revert()
    return ours, theirs, calls


def _row(label: str, ours: Sample, theirs: Sample, calls: dict[str, int]) -> Row:
    fewer = ratio(theirs.calls_median, ours.calls_median)
    faster = ratio(theirs.median, ours.median)
    detail = ", ".join(f"{op} {n}" for op, n in sorted(calls.items()))
    return Row(
        "P6",
        f"manifest sync, {COUNT} parameters, {CHANGED} changed{label}",
        f"{ms(ours.median)}, {ours.calls_median} calls ({detail})",
        f"psyml save {ms(theirs.median)}, {theirs.calls_median} calls: "
        f"{fewer:.1f}x fewer calls, {faster:.1f}x faster",
        f">= {GOAL_FEWER_CALLS:g}x fewer calls, >= {GOAL_FASTER:g}x faster",
        fewer >= GOAL_FEWER_CALLS and faster >= GOAL_FASTER,
        short=f"{fewer:.1f}x fewer calls, {faster:.1f}x faster{label}",
    )


def run(aws: AwsStandIn, opts: Options, results: Results) -> None:
    folder = Path(tempfile.mkdtemp(prefix="awssecrets-bench-p6-"))
    series: dict[str, Any] = {}
    with aws.in_process():
        import boto3

        boto3.session.Session().client("ssm", region_name="us-east-1")  # warm imports, not timed
        # psyml's runs take 20-35 s each and vary by a few percent: fewer of them than of ours.
        for tags, label, psyml_runs in ((False, "", 2), (True, ", file with tags", 1)):
            fx = Fixture(aws, folder, tags)
            ours, theirs, calls = _measure(aws, fx, opts.repeats(3), opts.repeats(psyml_runs))
            results.add(_row(label, ours, theirs, calls))
            series["tags" if tags else "plain"] = {
                "sync": (ours.median, ours.calls_median),
                "psyml": (theirs.median, theirs.calls_median),
            }
    results.series["P6"] = series
    results.notes.append(
        "P6: moto answers DescribeParameters 10 per page whatever MaxResults says (AWS allows 50), so 500 "
        "names cost 50 DescribeParameters calls here where AWS needs 10"
    )
