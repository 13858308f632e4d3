"""What the cold path leaves out to start faster must not change what botocore, logging or the settings do.

Issue 24: a pod's first resolution no longer imports pyOpenSSL through botocore, no longer lists every
botocore service to build a client, registers botocore's built-in handlers once per process, builds the
settings' validators only when a setting is set, and quiets only the AWS loggers that have a level of their
own. Each test checks the saving and that the behaviour is botocore's (or the old one) all the same.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import pytest

from flytekitplugins_awssecrets.settings import Settings, load_settings


def _child(code: str) -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def test_botocore_is_imported_without_pyopenssl_and_keeps_the_stdlib_ssl_context() -> None:
    out = _child(
        "import json, sys, ssl\n"
        "from flytekitplugins_awssecrets.credentials import import_botocore\n"
        "import_botocore()\n"
        "import botocore.httpsession as h\n"
        "loaded = {m: m in sys.modules for m in ('OpenSSL', 'urllib3.contrib.pyopenssl', 'botocore.session')}\n"
        "import urllib3.contrib.pyopenssl as p\n"  # still importable by anyone who wants it afterwards
        "print(json.dumps({**loaded, 'same': h.SSLContext is ssl.SSLContext is p.orig_util_SSLContext}))\n"
    )
    assert out == {
        "OpenSSL": False,
        "urllib3.contrib.pyopenssl": False,
        "botocore.session": True,
        "same": True,
    }


def test_pyopenssl_already_in_use_is_left_to_botocore() -> None:
    out = _child(
        "import json, sys\n"
        "import urllib3.contrib.pyopenssl\n"
        "from flytekitplugins_awssecrets.credentials import import_botocore\n"
        "import_botocore()\n"
        "import botocore.httpsession as h\n"
        "print(json.dumps({'same': h.SSLContext is urllib3.contrib.pyopenssl.orig_util_SSLContext}))\n"
    )
    assert out == {"same": True}


def _factory() -> Any:
    from flytekitplugins_awssecrets.credentials import ClientFactory

    return ClientFactory(Settings(region="us-east-1", access_key_id="AKIDEXAMPLE", secret_access_key="x"))


def test_a_client_is_built_without_listing_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.loaders import Loader

    listed: list[str] = []
    original = Loader.list_available_services

    def counting(self: Any, type_name: str) -> Any:
        listed.append(type_name)
        return original(self, type_name)

    monkeypatch.setattr(Loader, "list_available_services", counting)
    factory = _factory()
    sm = factory.client("secretsmanager", "eu-west-1")
    assert sm.meta.service_model.service_name == "secretsmanager"
    assert listed == []  # answered from secretsmanager's own directory
    session = factory.base_session()
    # Any other caller still gets botocore's full list, and an unknown service botocore's own error.
    assert "ssm" in session.get_available_services() and len(session.get_available_services()) > 100
    from botocore.exceptions import UnknownServiceError

    with pytest.raises(UnknownServiceError, match="Valid service names are: .*secretsmanager"):
        session.create_client("secretsmanagr", region_name="us-east-1")


def test_sessions_get_botocore_s_builtin_handlers() -> None:
    import botocore.session

    ours = _factory().base_session()
    plain = botocore.session.Session()
    from botocore.handlers import BUILTIN_HANDLERS

    # Every event a built-in handler is registered for, and requests of the services the plugin calls.
    events = sorted({str(spec[0]) for spec in BUILTIN_HANDLERS}) + [
        "before-parameter-build.secrets-manager.GetSecretValue",
        "request-created.secrets-manager.GetSecretValue",
        "before-call.ssm.GetParameters",
    ]

    def handlers(session: Any) -> list[list[Any]]:
        emitter = session.get_component("event_emitter")._emitter  # noqa: SLF001 - the registered handlers
        return [list(emitter._handlers.prefix_search(e)) for e in events]  # noqa: SLF001

    assert handlers(ours) == handlers(plain)
    assert sum(map(len, handlers(ours))) >= 100  # the comparison is not between two empty lists
    # Each session has its own copy: a handler registered on one is not on another.
    ours.register("before-call.secrets-manager.GetSecretValue", lambda **_: None, unique_id="t-only-here")
    assert handlers(_factory().base_session()) == handlers(plain)


def test_defaults_load_without_building_validators_and_equal_a_validated_model() -> None:
    s = load_settings({}, pod=False)
    assert s == Settings()
    assert s.model_fields_set == set()
    with pytest.raises(Exception, match="frozen"):
        s.max_concurrency = 3  # type: ignore[misc]
    # A set value is still validated (tests/test_settings.py has every error).
    assert load_settings({"FLYTE_AWS_SECRETS_MAX_CONCURRENCY": "7"}, pod=False).max_concurrency == 7


def test_quieting_touches_only_loggers_with_a_level_and_restores_them() -> None:
    from flytekitplugins_awssecrets.quiet import aws_logs_quieted

    loud = logging.getLogger("botocore.test_cold_path_loud")
    loud.setLevel(logging.DEBUG)
    inherit = logging.getLogger("botocore.test_cold_path_inherit")
    root = logging.getLogger("botocore")
    saved = root.level
    root.setLevel(logging.DEBUG)
    try:
        with aws_logs_quieted():
            assert loud.level == logging.WARNING
            assert inherit.level == logging.NOTSET  # untouched, and quiet through its parent
            assert inherit.getEffectiveLevel() == logging.WARNING
            assert not inherit.isEnabledFor(logging.DEBUG)
        assert loud.level == logging.DEBUG and inherit.level == logging.NOTSET
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(saved)
        loud.setLevel(logging.NOTSET)
