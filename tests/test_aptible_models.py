"""What a workflow declares and what the operator declares: the task template carries a strategy's name only;
the operator file is validated with errors that name the file and the field; the connector registration on
every ``import flytekit`` stays cheap.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flytekitplugins_awssecrets.aptible import AptibleAccessTask
from flytekitplugins_awssecrets.aptible.errors import (
    AptibleConfigError,
    OperatorConfigError,
    TemplateFieldError,
)
from flytekitplugins_awssecrets.aptible.operator import clear_operator_cache, credential_arns, parse_operator
from flytekitplugins_awssecrets.aptible.request import from_template
from tests.conftest import ROOT

CREDS = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sym/main/aptible-bot-credentials-AbCdEf"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
GOOD = f"""
version: 1
state: {{ssm_prefix: /flyte/aptible-access, region: us-east-1}}
integrations:
  - type: aptible
    name: main-aptible
    external_id: 94a49e57-d046-4d9d-9dbf-f7711e337368
    settings:
      username_secret: "{CREDS}:username"
      password_secret: "{CREDS}:password"
targets:
  - {{type: aptible_role, name: main-aptible-admin-role, label: Admin Role,
     settings: {{role_id: 24463EF7-1D6E-402E-A365-69CB6DB80C6E}}}}
strategies:
  - type: aptible
    name: main-aptible-strategy
    integration: main-aptible
    targets: [main-aptible-admin-role]
    max_duration: PT4H
    approval: {{kms_key_arn: "{KEY}"}}
"""


def test_the_template_carries_the_strategy_name_only() -> None:
    from flytekit.configuration import ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    task = AptibleAccessTask(name="aptible_access", strategy="main-aptible-strategy")
    settings = SerializationSettings(ImageConfig.auto_default_image(), project="p", domain="d", version="v1")
    template = get_serializable(OrderedDict(), settings, task).template
    assert template.type == "aptible_access"
    assert template.custom == {"version": 2, "strategy": "main-aptible-strategy"}
    assert set(template.interface.inputs) == {"email", "target", "duration", "reason"}
    assert template.security_context is None or not template.security_context.secrets


def test_a_strategy_object_is_refused_with_directions() -> None:
    with pytest.raises(AptibleConfigError, match="operator file"):
        AptibleAccessTask(name="t", strategy=object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("custom", "inputs", "field"),
    [
        ({"version": 2, "strategy": "s", "auth_url": "http://x"}, {}, "custom.auth_url"),
        ({"version": 1, "strategy": "s"}, {}, "custom.version"),
        ({"version": 2, "strategy": {"name": "s"}}, {}, "custom.strategy"),
        ({"version": 2, "strategy": "s"}, {"identity": "os:system"}, "inputs.identity"),
        ({"version": 2, "strategy": "s"}, {"email": 3}, "inputs.email"),
        ({"version": 2, "strategy": "s"}, {"email": "not an email"}, "inputs.email"),
        ({"version": 2, "strategy": "s"}, {"reason": "INC-1\x1b[2K\rapproved"}, "inputs.reason"),
        ({"version": 2, "strategy": "s"}, {"email": "ada\x1b]0;x@example.com"}, "inputs.email"),
    ],
)
def test_a_template_field_a_requester_may_not_set_is_named(
    custom: dict[str, Any], inputs: dict[str, Any], field: str
) -> None:
    values = {
        "email": "ada@example.com",
        "target": "t",
        "duration": timedelta(hours=1),
        "reason": "",
        **inputs,
    }
    with pytest.raises(TemplateFieldError) as info:
        from_template(custom, values)
    assert info.value.field == field and field in str(info.value)


def test_a_good_operator_file_loads_and_names_its_credentials(tmp_path: Path) -> None:
    config = parse_operator(GOOD, "op.yaml")
    s = config.strategy("main-aptible-strategy")
    assert s.max_duration == timedelta(hours=4) and s.approval.required and s.approval.kms_key_arn == KEY
    assert config.target_of(s, "main-aptible-admin-role").role_id == "24463ef7-1d6e-402e-a365-69cb6db80c6e"
    path = tmp_path / "op.yaml"
    path.write_text(GOOD)
    clear_operator_cache()
    task = AptibleAccessTask(name="t", strategy="main-aptible-strategy")
    assert credential_arns(task, str(path)) == [f"{CREDS}:username", f"{CREDS}:password"]
    assert credential_arns("main-aptible-strategy", str(path)) == credential_arns(task, str(path))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("external_id: 94a49e57", "external_id: 94a49e5", "integrations[0].external_id"),
        (
            "    settings:\n",
            "    auth_url: http://auth.aptible.com\n    settings:\n",
            "integrations[0].auth_url",
        ),
        ('approval: {kms_key_arn: "' + KEY + '"}', "approval: {}", "strategies[0].approval"),
        ("targets: [main-aptible-admin-role]", "targets: [typo]", "strategies[0].targets"),
        ("integration: main-aptible\n", "integration: other\n", "strategies[0].integration"),
        ("max_duration: PT4H", "max_duration: forever", "strategies[0].max_duration"),
        ("version: 1", "version: 1\nextra: 1", "extra"),
        ("role_id: 24463EF7", "role_id: 24463EF", "targets[0].settings.role_id"),
    ],
)
def test_a_malformed_operator_file_names_the_file_and_the_field(old: str, new: str, field: str) -> None:
    assert old in GOOD
    with pytest.raises(OperatorConfigError) as info:
        parse_operator(GOOD.replace(old, new, 1), "/etc/op.yaml")
    assert info.value.field == field, str(info.value)
    assert "/etc/op.yaml" in str(info.value)


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(OperatorConfigError, match="line"):
        parse_operator("version: 1\n  bad: [\n", "op.yaml")


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
        "FLYTE_AWS_SECRETS_APTIBLE_OPERATOR_FILE": "/etc/flyte/aptible-operator.yaml",
        "FLYTE_AWS_SECRETS_APTIBLE_MAX_ATTEMPTS": "2",
    }
    load_settings(env)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert AptibleClientSettings().max_attempts == 2


def test_every_code_block_of_the_aptible_docs_is_valid() -> None:
    """YAML blocks parse (and an operator file validates), Python blocks compile, JSON blocks load."""
    import re

    import yaml

    text = (ROOT / "docs" / "aptible.md").read_text()
    blocks = re.findall(r"^( *)```(\w+)\n(.*?)^\1```", text, flags=re.S | re.M)
    kinds = [k for _, k, _ in blocks]
    assert kinds.count("yaml") >= 3 and "python" in kinds and "json" in kinds
    for indent, kind, body in blocks:
        body = "\n".join(line[len(indent) :] for line in body.splitlines())
        if kind == "yaml":
            data = yaml.safe_load(body)
            if isinstance(data, dict) and "strategies" in data:
                parse_operator(body, "docs/aptible.md")
        elif kind == "python":
            compile(body, "docs/aptible.md", "exec")
        elif kind == "json":
            json.loads(body)
    clear_operator_cache()
    parse_operator(
        (ROOT / "examples" / "aptible-operator.yaml").read_text(), "examples/aptible-operator.yaml"
    )


def test_an_identity_hook_that_does_not_import_stops_the_load(tmp_path: Path) -> None:
    from flytekitplugins_awssecrets.aptible.operator import load_operator

    path = tmp_path / "op.yaml"
    path.write_text(GOOD + "identity: {function: 'no_such_module_xyz:get_identity'}\n")
    clear_operator_cache()
    with pytest.raises(OperatorConfigError) as info:
        load_operator(str(path))
    assert info.value.field == "identity.function" and str(path) in str(info.value)


def test_a_template_refusal_names_every_offending_field() -> None:
    with pytest.raises(TemplateFieldError) as info:
        from_template(
            {"version": 2, "strategy": "s", "auth_url": "https://evil.example"},
            {
                "email": "not an email",
                "target": "t",
                "duration": timedelta(minutes=1),
                "password_secret": "x",
            },
        )
    fields = [f for f, _ in info.value.problems]
    assert fields == ["custom.auth_url", "inputs.password_secret", "inputs.email"]
    assert all(f in str(info.value) for f in fields)


@pytest.mark.parametrize(
    "value", ["../roles/24463ef7-1d6e-402e-a365-69cb6db80c6e", "", "abc", None, 42, "24463ef7-1d6e-402e-a365"]
)
def test_a_membership_id_that_is_not_a_uuid_builds_no_url(value: object) -> None:
    from flytekitplugins_awssecrets.aptible.client import membership_uuid
    from flytekitplugins_awssecrets.aptible.errors import MembershipIdError

    with pytest.raises(MembershipIdError):
        membership_uuid(value)
    assert membership_uuid("24463EF7-1D6E-402E-A365-69CB6DB80C6E") == "24463ef7-1d6e-402e-a365-69cb6db80c6e"


def test_identity_keys_tell_the_same_aptible_user_without_asking_aptible() -> None:
    from flytekitplugins_awssecrets.aptible.identity import identity_key
    from flytekitplugins_awssecrets.aptible.models import IdentitySpec

    spec = IdentitySpec(mapping={"ada@corp.example": "Ada.Lovelace@Example.com"})
    assert identity_key("ADA@corp.example", spec) == identity_key("ada.lovelace@example.com", spec)
    assert identity_key("bob@example.com", spec) != identity_key("ada.lovelace@example.com", spec)
