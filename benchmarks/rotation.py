"""P10: what refreshing running tasks' secrets costs (AWS calls per secret per hour) and what the "AWS secrets"
deck adds to a task.

* Refresh: a real flytekit task with ``REFRESH_SECRETS`` ``ANY`` secrets runs for ``ROUNDS`` intervals of
  1 s; the proxy counts the calls. Goal: one ``GetSecretValue`` per secret per interval (nothing more: no
  describe, no list), so a fleet's refresh load is ``pods x secrets / interval`` calls per second, the
  arithmetic behind the smallest interval the plugin accepts (docs/rotation.md).
* Deck: the same task with 20 secrets and ``enable_deck=True, deck_fields=()`` run with the setting
  ``deck`` at ``always`` and at ``never``; the difference is what the deck adds (building the record, rendering
  its HTML when flytekit writes the decks). flytekit's own default decks (its dependency deck runs pip) are
  not part of it.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from benchmarks.harness import AwsStandIn, Options, Results, Row, ms
from benchmarks.resolution import create_secrets

REFRESH_SECRETS = 5
ROUNDS = 4
DECK_SECRETS = 20
GOAL_DECK_MS = 25.0


# Task bodies live at module level (flytekit refuses local functions outside test modules); the tasks are
# made in run() once the secrets exist.
def deck_body() -> int:
    return 1


def plain_body() -> int:
    return 1


def long_body() -> int:
    _PROXY[0].reset_counts()  # after the start's reads: count the refreshes only
    time.sleep(ROUNDS + 0.5)
    return 1


_PROXY: list[Any] = []


def _task(body: Any, arns: list[str], **kwargs: Any) -> Any:
    from flytekit import task

    from flytekitplugins_awssecrets import aws_secret

    return task(secret_requests=[aws_secret(a) for a in arns], **kwargs)(body)


def _refresh_row(aws: AwsStandIn, opts: Options, results: Results) -> None:
    arns = create_secrets(aws, "p10r", REFRESH_SECRETS)
    from flytekitplugins_awssecrets.resolver import reset_process_state

    _PROXY[:] = [aws.proxy]
    long_task = _task(long_body, arns)

    os.environ["FLYTE_AWS_SECRETS_REFRESH_INTERVAL_SECONDS"] = "1"
    os.environ["FLYTE_AWS_SECRETS_REFRESH_FLEET_PODS"] = "1"
    try:
        reset_process_state()
        long_task()
        calls = int(aws.proxy.calls.get("GetSecretValue", 0))
        others = aws.proxy.total() - calls
        from flytekitplugins_awssecrets import recent_records

        rounds = min(r.refreshes for r in recent_records()[-1].reads)
        refreshes = rounds * REFRESH_SECRETS
    finally:
        del os.environ["FLYTE_AWS_SECRETS_REFRESH_INTERVAL_SECONDS"]
        del os.environ["FLYTE_AWS_SECRETS_REFRESH_FLEET_PODS"]
    per = calls / max(refreshes, 1)
    results.add(
        Row(
            "P10",
            f"refresh: calls per secret refresh ({REFRESH_SECRETS} ANY secrets, {rounds} rounds of 1 s)",
            f"{per:.2f} GetSecretValue, {others} other calls",
            f"= {3600 / 900 * per:.0f} calls/secret/hour at 900 s; {3600 / 60 * per:.0f} at 60 s",
            "<= 1 call per secret per interval, nothing else",
            per <= 1.0 + 1e-9 and others == 0,
            short=f"{per:.2f}/secret/interval",
        )
    )


def _deck_row(aws: AwsStandIn, opts: Options, results: Results) -> None:
    from flytekitplugins_awssecrets import recent_records
    from flytekitplugins_awssecrets.flytekit.deck import render

    arns = create_secrets(aws, "p10d", DECK_SECRETS)
    # Two tasks over the same (cached) secrets, settings unchanged: one writes its decks (only ours:
    # deck_fields=()), one does not.
    with_deck = _task(deck_body, arns, enable_deck=True, deck_fields=())
    without = _task(plain_body, arns)
    without()  # warm the cache and the clients
    samples: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(opts.repeats(9)):
        for name, t in (("without", without), ("with", with_deck)):
            started = time.perf_counter()
            t()
            samples[name].append(time.perf_counter() - started)
    record = recent_records()[-1]
    started = time.perf_counter()
    for _ in range(100):
        render(record)
    render_ms = (time.perf_counter() - started) * 10
    added = statistics.median(samples["with"]) - statistics.median(samples["without"])
    results.add(
        Row(
            "P10",
            f"deck: time added to a task ({DECK_SECRETS} secrets, cached; flytekit writing deck.html included)",
            ms(max(added, 0.0)),
            f"task {ms(statistics.median(samples['without']))} without; rendering the table alone {render_ms:.2f} ms",
            f"<= {GOAL_DECK_MS:g} ms",
            added * 1000 <= GOAL_DECK_MS,
            short=ms(max(added, 0.0)),
        )
    )


def run(aws: AwsStandIn, opts: Options, results: Results) -> None:
    with aws.in_process():
        _refresh_row(aws, opts, results)
        _deck_row(aws, opts, results)
