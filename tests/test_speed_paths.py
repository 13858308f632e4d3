"""What keeps the cold path and the suite fast, checked by behaviour (no timings: those are the benchmarks').

* Every client factory of the process shares botocore's data loader, so a factory built after a settings
  change or ``reset_process_state`` does not parse Secrets Manager's service model again.
* ``tests.support.venvs.build_venv`` names a venv by its content and reuses a built one without running an
  installer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flytekitplugins_awssecrets.credentials import ClientFactory
from flytekitplugins_awssecrets.settings import load_settings
from tests.support import venvs


def test_factories_share_one_loader_and_its_parsed_models(aws_env: dict[str, str]) -> None:
    first = ClientFactory(load_settings({}))
    second = ClientFactory(load_settings({"FLYTE_AWS_SECRETS_MAX_CONCURRENCY": "4"}))
    a = first.client("secretsmanager", "us-east-1")
    b = second.client("secretsmanager", "eu-west-1")
    assert a is not b and first.base_session() is not second.base_session()
    assert a._loader is b._loader  # one loader: the model parsed for the first client serves the second
    # The clients still work on their own (the shared loader holds models, not connections or credentials).
    assert b.meta.region_name == "eu-west-1" and a.meta.region_name == "us-east-1"
    assert isinstance(a.list_secrets(MaxResults=1)["SecretList"], list)


def test_venv_key_follows_the_requirements() -> None:
    one = venvs.venv_key("flytekit-1.15.0", ["flytekit==1.15.0"])
    assert one == venvs.venv_key("flytekit-1.15.0", ["flytekit==1.15.0"])
    assert one != venvs.venv_key("flytekit-1.15.0", ["flytekit==1.15.1"])
    assert one != venvs.venv_key("flytekit-1.16.0", ["flytekit==1.15.0"])


def test_a_built_venv_is_reused_without_an_installer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(venvs, "CACHE", tmp_path)
    reqs = ["pytest>=8"]
    built = tmp_path / f"compat-test-{venvs.venv_key('compat-test', reqs)}"
    built.mkdir()
    (built / ".complete").write_text("pytest>=8\n")

    def no_installer(*args: object, **kwargs: object) -> None:
        raise AssertionError("a built venv must not be installed again")

    monkeypatch.setattr(venvs, "_run", no_installer)
    lines: list[str] = []
    assert venvs.build_venv("compat-test", reqs, say=lines.append) == built
    assert lines == []
