"""P8: a fleet of pods starting at the same instant, against AWS's per-account request quotas.

A map task starts hundreds of pods in one second, all in one account and region. Here ``--p8-pods`` fresh
processes (40) each read the same ``--p8-secrets`` Secrets Manager secrets (5), and ``--p8-params`` SSM
parameters (0; SSM's shared quota of 40/s is the tightest of all). Every process does its
imports, says it is ready, and waits; when all are ready they are released at one instant
(:mod:`benchmarks.fleet_child`). A pod's start time runs from that instant to its last secret in hand.

The endpoint is moto behind :class:`tests.support.proxy.CountingProxy` with a token bucket per API at
AWS's quotas divided by ``--p8-scale`` (25: BatchGetSecretValue 4/s, GetSecretValue 400/s, SSM 1.6/s;
``--p8-quota API=RATE`` overrides one), answering ``ThrottlingException`` as AWS does, plus the usual
latency. Runs, one after the other on the same endpoint:

* the plugin with its defaults, and a plain boto3 loop of ``get_secret_value`` (goal: 0 failures, and a p95
  no worse than 1.2x the loop's);
* the plugin with ``read_strategy=batch`` (what it did before: informative);
* the plugin reading through a local agent (``pyflyte-awssecrets serve`` with its HTTP API, as a DaemonSet
  or sidecar would be): the calls AWS sees;
* the plugin with ``--p8-faults`` (30 %) of requests failing (throttling, 5xx, resets, slow answers): every
  pod gets its secrets or a typed, retryable error.
"""

from __future__ import annotations

import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import ROOT, AwsStandIn, Options, Results, Row, _no_delay, ms, new_value
from benchmarks.resolution import create_secrets
from tests.support.proxy import CountingProxy, Faults, scaled_quotas

GOAL_P95_RATIO = 1.2
CHILD_TIMEOUT_S = 180.0


@dataclass
class Fleet:
    """What one run of N pods gave: per-pod outcomes, and the calls (and throttles) the endpoint saw."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU seconds of each pod after the start signal
    failures: Counter[str] = field(default_factory=Counter)
    typed_retryable: int = 0
    wrong: int = 0  # a pod that got values other than the secrets' (never expected)
    calls: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def pct(self, q: float) -> float:
        if not self.seconds:
            return float("nan")
        if len(self.seconds) == 1:
            return self.seconds[0]
        return statistics.quantiles(self.seconds, n=100, method="inclusive")[int(q) - 1]

    def calls_text(self) -> str:
        parts = []
        for op, n in sorted(self.calls.items()):
            if op in ("GetSecretValue", "BatchGetSecretValue", "GetParameters", "DescribeSecret"):
                t = self.throttled.get(op, 0)
                parts.append(f"{op} {n}" + (f" ({t} throttled)" if t else ""))
        return ", ".join(parts) or "no AWS call"

    def summary(self) -> str:
        cpu = statistics.median(self.cpu) if self.cpu else 0.0
        return f"{self.failed} failed, p50 {ms(self.pct(50))}, p95 {ms(self.pct(95))} (CPU {ms(cpu)} each)"


def run_fleet(
    proxy: CountingProxy, env: dict[str, str], mode: str, arn_file: Path, n: int, digest: str
) -> Fleet:
    """Start ``n`` children, wait until all are ready, release them at once, collect their reports."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet_child", mode, str(arn_file)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    fleet = Fleet()
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"P8 child ({mode}) did not start:\n{p.communicate()[1][-3000:]}")
        proxy.reset_counts()
        go = f"go {time.time()}\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(go)
            p.stdin.flush()
        for p in procs:
            out, err = p.communicate(timeout=CHILD_TIMEOUT_S)
            lines = out.strip().splitlines()
            if p.returncode != 0 or not lines:
                raise RuntimeError(f"P8 child ({mode}) crashed ({p.returncode}):\n{err[-3000:]}")
            doc = json.loads(lines[-1])
            fleet.cpu.append(float(doc.get("cpu", 0.0)))
            if doc["ok"]:
                fleet.seconds.append(float(doc["seconds"]))
                fleet.wrong += doc["digest"] != digest
            else:
                fleet.failures[str(doc["error"])] += 1
                fleet.typed_retryable += bool(doc.get("typed")) and bool(doc.get("retryable"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    fleet.calls.update(proxy.calls)
    fleet.throttled.update(proxy.throttled)
    if fleet.wrong:
        raise RuntimeError(f"P8 ({mode}): {fleet.wrong} pod(s) got values that are not the secrets'")
    return fleet


def run(aws: AwsStandIn, opts: Options, results: Results) -> None:
    import hashlib

    from benchmarks.harness import CREATED_VALUES

    before = set(CREATED_VALUES)
    arns = create_secrets(aws, "p8", opts.p8_secrets)
    sm = aws.setup_client("secretsmanager")
    digest = hashlib.sha256()
    for a in arns:
        digest.update(sm.get_secret_value(SecretId=a)["SecretString"].encode())
    ssm = aws.setup_client("ssm")
    for i in range(opts.p8_params):
        value = new_value(32)
        ssm.put_parameter(Name=f"/p8/p{i}", Value=value, Type="SecureString", Overwrite=True)
        arns.append(str(ssm.get_parameter(Name=f"/p8/p{i}")["Parameter"]["ARN"]))
        digest.update(value.encode())
    assert len(CREATED_VALUES - before) == opts.p8_secrets + opts.p8_params
    quotas = scaled_quotas(opts.p8_scale)
    for op, rate in opts.p8_quotas:
        for ops in quotas:
            if op in ops:
                quotas[ops] = rate
    work = Path(tempfile.mkdtemp(prefix="awssecrets-bench-p8-"))
    proxy = CountingProxy(aws.server.url, latency=opts.latency_ms / 1000, quotas=quotas)
    _no_delay(proxy)
    proxy.start()
    try:
        arn_file = work / "arns"
        arn_file.write_text("\n".join(arns))  # ARNs only: the values stay in moto
        env = aws.subprocess_env(AWS_ENDPOINT_URL=proxy.url)
        n = opts.p8_pods
        fleets: dict[str, Fleet] = {}

        def one(name: str, mode: str, **settings: str) -> Fleet:
            time.sleep(1.5)  # every bucket holds one second's worth: let them fill up again
            fleets[name] = run_fleet(proxy, {**env, **settings}, mode, arn_file, n, digest.hexdigest())
            return fleets[name]

        plugin = one("plugin", "plugin")
        loop = one("boto3 loop", "boto3")
        batch = one("plugin, read_strategy=batch", "plugin", FLYTE_AWS_SECRETS_READ_STRATEGY="batch")
        agent = _through_agent(proxy, env, work, arn_file, n, digest.hexdigest(), one)
        proxy.faults = Faults(rate=opts.p8_fault_rate, slow_seconds=1.0, seed=8)
        try:
            faulty = one(f"plugin, {opts.p8_fault_rate:.0%} faults", "plugin")
        finally:
            proxy.faults = Faults()
    finally:
        proxy.stop()
        shutil.rmtree(work, ignore_errors=True)
    _rows(results, opts, quotas, plugin, loop, batch, agent, faulty)
    results.series["P8"] = {name: (f.pct(50), f.pct(95), f.failed) for name, f in fleets.items()}


def _through_agent(
    proxy: CountingProxy,
    env: dict[str, str],
    work: Path,
    arn_file: Path,
    n: int,
    digest: str,
    one: object,
) -> Fleet:
    """The fleet reading through one ``pyflyte-awssecrets serve`` (its AWS Secrets Manager Agent HTTP API)."""
    from tests.support.serve_clients import ServeProcess

    token_file = work / "token"
    token_file.write_text(secrets.token_urlsafe(24))
    token_file.chmod(0o600)
    # serve serves only what it is told it may: the fleet's own secrets, by ARN.
    allow = [a for arn in dict.fromkeys(arn_file.read_text().split()) for a in ("--allow", arn)]
    srv = ServeProcess(
        ["--secret-agent", "off", "--http", "127.0.0.1:0", "--token-file", str(token_file), *allow],
        work / "serve",
        env=env,
    ).wait_ready()
    try:
        assert callable(one)
        fleet: Fleet = one(
            "plugin through local agent (serve)",
            "plugin",
            FLYTE_AWS_SECRETS_AGENT_URL=f"http://127.0.0.1:{srv.http_port}",
            FLYTE_AWS_SECRETS_AGENT_TOKEN_FILE=str(token_file),
        )
    finally:
        srv.stop()
    return fleet


def _rows(
    results: Results,
    opts: Options,
    quotas: dict[tuple[str, ...], float],
    plugin: Fleet,
    loop: Fleet,
    batch: Fleet,
    agent: Fleet,
    faulty: Fleet,
) -> None:
    n, k = opts.p8_pods, opts.p8_secrets
    what = f"{k} secrets" + (f" + {opts.p8_params} SSM parameters" if opts.p8_params else "")
    q = ", ".join(f"{'/'.join(ops) if len(ops) == 1 else 'SSM'} {rate:g}/s" for ops, rate in quotas.items())
    ratio = plugin.pct(95) / loop.pct(95) if loop.seconds and loop.pct(95) > 0 else float("inf")
    results.notes.append(f"P8 quotas (AWS's / {opts.p8_scale:g}): {q}")
    results.add(
        Row(
            "P8",
            f"{n} pods x {what} start at once (quotas 1:{opts.p8_scale:g})",
            f"{plugin.summary()}; {plugin.calls_text()}",
            f"boto3 loop: {loop.summary()}; {loop.calls_text()}; p95 {ratio:.2f}x",
            f"0 failed, p95 <= {GOAL_P95_RATIO:g}x loop's",
            plugin.failed == 0 and ratio <= GOAL_P95_RATIO,
            short=f"{plugin.failed} failed, p95 {ratio:.2f}x loop",
        )
    )
    results.add(
        Row(
            "P8",
            "the same with read_strategy=batch",
            f"{batch.summary()}; {batch.calls_text()}",
            "-",
            "0 failed",
            batch.failed == 0,
            short=f"{batch.failed} failed",
        )
    )
    reads = agent.calls["GetSecretValue"] + agent.calls["BatchGetSecretValue"]
    results.add(
        Row(
            "P8",
            "the same through a local agent (pyflyte-awssecrets serve)",
            f"{agent.summary()}; {agent.calls_text()}",
            f"direct: {plugin.calls['GetSecretValue']} GetSecretValue calls",
            f"0 failed, {k} reads (one per secret per TTL)",
            agent.failed == 0 and reads == k,
            short=f"{reads} AWS reads for {n} pods",
        )
    )
    other = faulty.failed - faulty.typed_retryable
    results.add(
        Row(
            "P8",
            f"the same with {opts.p8_fault_rate:.0%} of requests faulted (throttle, 5xx, reset, slow)",
            f"{n - faulty.failed} got their secrets, {faulty.typed_retryable} typed retryable errors"
            + (f" ({dict(faulty.failures)})" if faulty.failed else "")
            + f"; p95 {ms(faulty.pct(95))}",
            f"{faulty.calls_text()}",
            "every pod: secrets or typed retryable error",
            other == 0,
            short=f"{other} untyped/non-retryable",
        )
    )
