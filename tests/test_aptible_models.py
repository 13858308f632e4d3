"""What a team declares, and what the cluster receives: the models, the task template, and the cost of the
plugin's connector registration on every ``import flytekit``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import OrderedDict
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from flytekitplugins_awssecrets import aws_secret
from flytekitplugins_awssecrets.aptible import (
    AccessGrant,
    AptibleAccessStrategy,
    AptibleAccessTask,
    AptibleIntegration,
    AptibleRole,
)
from flytekitplugins_awssecrets.aptible.errors import AptibleConfigError, UnknownTargetError
from flytekitplugins_awssecrets.aptible.models import AptibleTaskConfig, IdentitySpec
from tests.conftest import ROOT

CREDS = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sym/main/aptible-bot-credentials-AbCdEf"
ORG = "94a49e57-d046-4d9d-9dbf-f7711e337368"


def issue_example() -> AptibleAccessTask:
    """The declaration from issue 4, verbatim."""
    integration = AptibleIntegration(
        name="main-aptible",
        organization_id=ORG,
        username_secret=aws_secret(CREDS, json_key="username"),
        password_secret=aws_secret(CREDS, json_key="password"),
    )
    admin_prod = AptibleRole(
        name="main-aptible-admin-role", label="Admin Role", role_id="24463EF7-1D6E-402E-A365-69CB6DB80C6E"
    )
    strategy = AptibleAccessStrategy(
        name="main-aptible-strategy",
        integration=integration,
        targets=[admin_prod],
        max_duration=timedelta(days=1),
    )
    return AptibleAccessTask(name="aptible_access", strategy=strategy)


def test_the_template_carries_the_strategy_and_secret_references_only() -> None:
    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    task = issue_example()
    settings = SerializationSettings(ImageConfig.auto_default_image(), project="p", domain="d", version="v")
    template = get_serializable(OrderedDict(), settings, task).template
    assert template.type == "aptible_access"
    custom = template.custom
    assert custom["strategy"]["integration"]["organization_id"] == ORG
    assert custom["strategy"]["integration"]["password_secret"] == {
        "group": "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
        "key": "sym/main/aptible-bot-credentials-AbCdEf:password",
        "group_version": None,
        "json_key": "password",
    }
    assert custom["strategy"]["targets"][0]["role_id"] == "24463ef7-1d6e-402e-a365-69cb6db80c6e"
    # The connector rebuilds the whole configuration from the template alone.
    assert AptibleTaskConfig.model_validate(custom).strategy == task.strategy
    # No secret request on the task: the bot's credentials are never resolved in a user's pod.
    assert not (template.security_context and template.security_context.secrets)
    assert set(task.python_interface.inputs) == {"email", "target", "duration", "reason"}
    assert task.python_interface.outputs == {"o0": AccessGrant}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"organization_id": "not-a-uuid"}, "organization_id"),
        ({"username_secret": "not an arn"}, "username_secret"),
        ({"password_secret": object()}, "password_secret"),
        ({"auth_url": "ftp://auth"}, "auth_url"),
        ({"name": "bad name!"}, "name"),
    ],
)
def test_a_bad_integration_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {
        "name": "main-aptible",
        "organization_id": ORG,
        "username_secret": aws_secret(CREDS, json_key="username"),
        "password_secret": aws_secret(CREDS, json_key="password"),
    }
    with pytest.raises(ValidationError) as info:
        AptibleIntegration(**{**base, **kwargs})
    assert info.value.errors()[0]["loc"][0] == field


def test_a_strategy_needs_unique_targets_a_positive_maximum_and_knows_its_targets() -> None:
    integration = issue_example().strategy.integration
    role = AptibleRole(name="admin", role_id="24463EF7-1D6E-402E-A365-69CB6DB80C6E")
    assert role.label == "admin"
    with pytest.raises(ValidationError, match="unique"):
        AptibleAccessStrategy(name="s", integration=integration, targets=[role, role])
    with pytest.raises(ValidationError, match="positive"):
        AptibleAccessStrategy(name="s", integration=integration, targets=[role], max_duration=timedelta(0))
    with pytest.raises(ValidationError):
        AptibleAccessStrategy(name="s", integration=integration, targets=[])
    strategy = AptibleAccessStrategy(name="s", integration=integration, targets=[role])
    with pytest.raises(UnknownTargetError, match="known targets: admin"):
        strategy.target("root")


def _identity(email: str) -> str | None:
    return None


def test_identity_overrides_must_be_importable_by_the_connector() -> None:
    assert IdentitySpec.of(_identity).function == f"{__name__}:_identity"
    assert IdentitySpec.of({"Ada@Corp.example": "ADA@example.com"}).mapping == {
        "ada@corp.example": "ADA@example.com"
    }
    with pytest.raises(AptibleConfigError, match="cannot be imported"):
        IdentitySpec.of(lambda e: e)
    with pytest.raises(ValidationError):
        IdentitySpec.of({"not-an-email": "x"})


def test_registering_the_connector_on_import_flytekit_is_cheap() -> None:
    """The module the entry point loads adds itself and its package, nothing else (no httpx, boto3, models)."""
    code = (
        "import sys, flytekit\n"
        "before = set(sys.modules)\n"
        "import flytekitplugins_awssecrets.aptible.connector\n"
        "from flytekit.extend.backend.base_connector import ConnectorRegistry\n"
        "print(ConnectorRegistry.get_connector('aptible_access').name)\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    name, new = p.stdout.strip().splitlines()[-2:]
    assert name == "Aptible Access Connector"
    assert set(json.loads(new.replace("'", '"'))) <= {
        "flytekitplugins_awssecrets",
        "flytekitplugins_awssecrets.aptible",
        "flytekitplugins_awssecrets.aptible.connector",
    }


def test_the_connector_registers_through_the_installed_entry_point() -> None:
    """A plain ``import flytekit`` registers the connector: the package's own ``flytekit.plugins`` entry point
    (``awssecrets-aptible``), as ``pyflyte serve connector`` relies on without ``--modules``."""
    code = (
        "import sys, importlib.metadata as md\n"
        "names = [e.name for e in md.entry_points(group='flytekit.plugins')]\n"
        "import flytekit\n"
        "from flytekit.extend.backend.base_connector import ConnectorRegistry\n"
        "print(names)\n"
        "print([a.name for a in ConnectorRegistry.list_connectors()])\n"
        "print('boto3' in sys.modules, 'httpx' in sys.modules)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    names, connectors, heavy = p.stdout.strip().splitlines()[-3:]
    assert "'awssecrets-aptible'" in names
    assert "Aptible Access Connector" in connectors
    assert heavy == "False False"  # registering imports neither boto3 nor the Aptible client's httpx


def test_connector_settings_do_not_upset_the_core_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connector's FLYTE_AWS_SECRETS_APTIBLE_* variables share the core prefix; the core must let them be."""
    from flytekitplugins_awssecrets.aptible.client import AptibleClientSettings
    from flytekitplugins_awssecrets.settings import load_settings

    env = {
        "FLYTE_AWS_SECRETS_APTIBLE_AUTH_URL": "https://auth.example",
        "FLYTE_AWS_SECRETS_APTIBLE_MAX_ATTEMPTS": "2",
    }
    load_settings(env)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = AptibleClientSettings()
    assert (s.auth_url, s.max_attempts) == ("https://auth.example", 2)
