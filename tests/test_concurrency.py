"""Tasks running side by side in one process (a notebook or a harness mapping a task over inputs in threads):
each reads its own secrets for its whole run, an environment variable two of them would set differently is
refused for the second, and nothing of any of them is left in ``os.environ`` or on disk after all end.

Real flytekit tasks, called locally from a ``ThreadPoolExecutor``, against the moto server.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flytekit import Secret, current_context, task

from flytekitplugins_awssecrets import aws_secret
from flytekitplugins_awssecrets.errors import ConcurrentMountError, SecretResolutionError

N = 5  # tasks at once
ROUNDS = 3


def _fp(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()[:12]


def _secret_files() -> list[Path]:
    from flytekitplugins_awssecrets import mountdirs

    return [f for d in list(mountdirs._process_dirs.values()) for f in d.rglob("*") if f.is_file()]


def _ours_in_environ(before: dict[str, str]) -> dict[str, str]:
    """Variables that differ from before the tasks (names only matter; values are compared by fingerprint)."""
    return {k: _fp(v) for k, v in os.environ.items() if before.get(k) != v}


def _watch(checks: list[tuple[str, Any]], barrier: threading.Barrier) -> list[str]:
    """Check every (what, read) pair several times over the task's run; the tasks overlap at the barrier."""
    problems: list[str] = []
    for step in range(4):
        if step == 1:
            barrier.wait(timeout=60)  # every task is mounted and running now
        for what, check in checks:
            try:
                if not check():
                    problems.append(f"step {step}: {what} wrong")
            except Exception as e:  # noqa: BLE001 - reported by name, not value
                problems.append(f"step {step}: {what} {type(e).__name__}")
        time.sleep(0.05)
    return problems


def test_the_same_task_many_times_at_once_shares_and_keeps_its_secrets(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_arn, env_value = secrets_factory.secret(f"{unique}/shared-env")
    file_arn, file_value = secrets_factory.secret(f"{unique}/shared-file")
    any_arn, any_value = secrets_factory.secret(f"{unique}/shared-any")
    monkeypatch.setenv("SHARED_TOKEN", "was-here-before")  # restored when the last task ends
    env_req = aws_secret(env_arn, mount_requirement=Secret.MountType.ENV_VAR, env_var="SHARED_TOKEN")
    file_req = aws_secret(file_arn, mount_requirement=Secret.MountType.FILE, env_var="SHARED_FILE")
    any_req = aws_secret(any_arn)
    barrier = threading.Barrier(N)

    @task(secret_requests=[env_req, file_req, any_req])
    def mapped(i: int) -> list[str]:
        sm = current_context().secrets

        def file_ok() -> bool:
            path = sm.get_secrets_file(file_req.group, file_req.key)
            with open(os.environ["SHARED_FILE"]) as f, open(path) as g:
                same = f.read() == g.read()
            files_dir = os.environ["FLYTE_AWS_SECRETS_FILES_DIR"]
            return (
                same and path.startswith(files_dir + "/") and _fp(Path(path).read_text()) == _fp(file_value)
            )

        return _watch(
            [
                ("env_var", lambda: _fp(os.environ["SHARED_TOKEN"]) == _fp(env_value)),
                ("file", file_ok),
                ("memory", lambda: _fp(sm.get(any_req.group, any_req.key)) == _fp(any_value)),
            ],
            barrier,
        )

    for _ in range(ROUNDS):
        before = dict(os.environ)
        with ThreadPoolExecutor(N) as pool:
            results = list(pool.map(mapped, range(N)))
        assert results == [[]] * N
        assert os.environ["SHARED_TOKEN"] == "was-here-before"
        assert _ours_in_environ(before) == {}
        assert "SHARED_FILE" not in os.environ and "FLYTE_AWS_SECRETS_FILES_DIR" not in os.environ
        assert _secret_files() == []


def test_distinct_tasks_at_once_each_see_only_their_own(secrets_factory: Any, unique: str) -> None:
    shared_arn, shared_value = secrets_factory.secret(f"{unique}/both")
    own = [secrets_factory.secret(f"{unique}/own-{i}") for i in range(N)]
    barrier = threading.Barrier(N)

    def make(i: int) -> Any:
        own_arn, own_value = own[i]
        env_req = aws_secret(own_arn, mount_requirement=Secret.MountType.ENV_VAR, env_var=f"OWN_{i}")
        file_req = aws_secret(own_arn, mount_requirement=Secret.MountType.FILE)
        mem_req = aws_secret(shared_arn)

        @task(secret_requests=[env_req, file_req, mem_req])
        def t() -> list[str]:
            sm = current_context().secrets
            others = [f"OWN_{j}" for j in range(N) if j != i]

            def own_file() -> bool:
                return _fp(Path(sm.get_secrets_file(file_req.group, file_req.key)).read_bytes()) == _fp(
                    own_value
                )

            checks = [
                ("own env_var", lambda: _fp(os.environ[f"OWN_{i}"]) == _fp(own_value)),
                ("own file", own_file),
                ("own memory value", lambda: _fp(sm.get(mem_req.group, mem_req.key)) == _fp(shared_value)),
            ]
            problems = _watch(checks, barrier)
            # Another task's in-memory secret is not served to this one.
            other_group, other_key = (
                aws_secret(own[(i + 1) % N][0]).group,
                aws_secret(own[(i + 1) % N][0]).key,
            )
            from flytekitplugins_awssecrets.flytekit.names import lookup_memory

            if lookup_memory(other_group, other_key, None) is not None:
                problems.append("sees another task's memory value")
            del others
            return problems

        return t

    tasks = [make(i) for i in range(N)]
    for _ in range(ROUNDS):
        before = dict(os.environ)
        with ThreadPoolExecutor(N) as pool:
            results = list(pool.map(lambda t: t(), tasks))
        assert results == [[]] * N
        assert _ours_in_environ(before) == {}
        assert _secret_files() == []


def test_a_variable_another_running_task_holds_differently_is_refused(
    secrets_factory: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_arn, a_value = secrets_factory.secret(f"{unique}/token-a")
    b_arn, _ = secrets_factory.secret(f"{unique}/token-b")
    monkeypatch.setenv("TOKEN", "the-user's-own")
    holding = threading.Event()
    release = threading.Event()
    ran_b: list[int] = []

    @task(secret_requests=[aws_secret(a_arn, mount_requirement=Secret.MountType.ENV_VAR, env_var="TOKEN")])
    def first() -> bool:
        holding.set()
        release.wait(timeout=60)
        return _fp(os.environ["TOKEN"]) == _fp(a_value)

    @task(secret_requests=[aws_secret(b_arn, mount_requirement=Secret.MountType.ENV_VAR, env_var="TOKEN")])
    def second() -> int:
        ran_b.append(1)
        return 1

    for _ in range(ROUNDS):
        before = dict(os.environ)
        with ThreadPoolExecutor(2) as pool:
            fa = pool.submit(first)
            assert holding.wait(timeout=60)
            with pytest.raises(SecretResolutionError) as e:
                pool.submit(second).result(timeout=60)
            release.set()
            assert fa.result(timeout=60) is True  # the first keeps its value after the refusal
        holding.clear()
        release.clear()
        (err,) = e.value.errors
        assert isinstance(err, ConcurrentMountError) and err.reference == b_arn
        assert "environment variable TOKEN" in str(err) and "user code was not run" in str(e.value)
        assert not ran_b
        assert os.environ["TOKEN"] == "the-user's-own"
        assert _ours_in_environ(before) == {}
