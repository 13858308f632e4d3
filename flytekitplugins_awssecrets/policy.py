"""``pyflyte-awssecrets policy``: the least-privilege IAM policy a workflow's secret requests need.

The one source of the task role's policy: the docs show its output rather than a hand-written copy.
What goes in, statement by statement:

* ``secretsmanager:GetSecretValue`` on the exact secret ARNs; a partial ARN (no 6-character suffix) gets
  ``-??????``, the wildcard AWS documents for "this name and its suffix", never ``*``;
* ``secretsmanager:BatchGetSecretValue`` on ``*`` (the only resource AWS accepts for it) only when the
  settings' read strategy batches (``read_strategy: batch``); by default the plugin reads with
  ``GetSecretValue``, and falls back to it when the batch call is denied;
* ``ssm:GetParameters`` on the exact parameter ARNs;
* ``secretsmanager:DescribeSecret`` / ``ssm:ListTagsForResource`` only with ``required_tags`` (tag checks);
* ``kms:Decrypt`` on the customer-managed keys of those secrets and parameters, limited to use through
  Secrets Manager / SSM (``kms:ViaService``), when ``--resolve-kms`` looks them up (DescribeSecret and
  DescribeParameters, with the current credentials); AWS-managed keys need no statement;
* the references that other parts of the plugin add (see :data:`EXTRA_REFERENCE_PROVIDERS`).

Example::

    pyflyte-awssecrets policy workflows/train.py training_wf > policy.json
    pyflyte-awssecrets policy --format terraform workflows/train.py training_wf > secrets_policy.tf
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

__all__ = [
    "policy",
    "build_policy",
    "to_terraform",
    "PolicyInputs",
    "EXTRA_REFERENCE_PROVIDERS",
    "ExtraReferenceProvider",
]

#: A function that, given the loaded module and the workflow name (or None for the whole module), returns
#: more references (ARNs or aliases) whose reads the policy must allow: credentials a task type fetches
#: itself rather than through ``secret_requests``.
ExtraReferenceProvider = Callable[[Any, "str | None"], Iterable[str]]

#: Providers of extra references, called in order. Wiring point for task types with their own credential
#: references (the Aptible task's bot credentials, once its operator file names them): append a function.
EXTRA_REFERENCE_PROVIDERS: list[ExtraReferenceProvider] = []

#: The ``read_strategy`` values that call BatchGetSecretValue (the default, ``get``, does not).
BATCH_STRATEGIES = {"batch"}

#: Key ids Secrets Manager and SSM use when no customer-managed key is chosen (no kms:Decrypt statement).
_AWS_MANAGED = ("alias/aws/", "aws/")


@dataclass
class PolicyInputs:
    """What the policy is made of: references by service, and the optional parts."""

    secrets: list[Any] = field(default_factory=list)  # SecretRef
    parameters: list[Any] = field(default_factory=list)  # SecretRef
    batch: bool = False
    tags: bool = False
    kms_keys: dict[str, set[str]] = field(
        default_factory=dict
    )  # key ARN -> services ("secretsmanager", "ssm")
    notes: list[str] = field(default_factory=list)
    #: Statements for another principal than the task pods (the Aptible connector's role), added as they are.
    extra_statements: list[dict[str, Any]] = field(default_factory=list)


def _secret_resource(ref: Any) -> str:
    return str(ref.arn) + ("" if ref.full_arn else "-??????")


def build_policy(inputs: PolicyInputs) -> dict[str, Any]:
    """An IAM policy document (``Version`` 2012-10-17) for ``inputs``."""
    statements: list[dict[str, Any]] = []
    secrets = sorted({_secret_resource(r) for r in inputs.secrets})
    params = sorted({str(r.arn) for r in inputs.parameters})
    if secrets:
        actions = ["secretsmanager:GetSecretValue"]
        if inputs.tags:
            actions.append("secretsmanager:DescribeSecret")
        statements.append({"Sid": "ReadSecrets", "Effect": "Allow", "Action": actions, "Resource": secrets})
        if inputs.batch:
            statements.append(
                {
                    "Sid": "BatchReadSecrets",
                    "Effect": "Allow",
                    "Action": ["secretsmanager:BatchGetSecretValue"],
                    "Resource": ["*"],  # AWS evaluates GetSecretValue on each secret as well
                }
            )
    if params:
        actions = ["ssm:GetParameters"]
        if inputs.tags:
            actions.append("ssm:ListTagsForResource")
        statements.append({"Sid": "ReadParameters", "Effect": "Allow", "Action": actions, "Resource": params})
    for i, (key, services) in enumerate(sorted(inputs.kms_keys.items())):
        regions = key.split(":")[3] if key.count(":") >= 5 else ""
        via = sorted(f"{svc}.{regions}.amazonaws.com" for svc in services)
        statements.append(
            {
                "Sid": f"DecryptWithKey{i + 1}",
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": [key],
                "Condition": {"StringEquals": {"kms:ViaService": via}},
            }
        )
    statements.extend(inputs.extra_statements)
    return {"Version": "2012-10-17", "Statement": statements}


def _hcl(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid HCL string (same escapes)


def to_terraform(doc: dict[str, Any], name: str = "flyte_task_secrets") -> str:
    """The policy as a Terraform ``aws_iam_policy_document`` data source."""
    lines = [f'data "aws_iam_policy_document" "{name}" {{']
    for st in doc["Statement"]:
        lines.append("  statement {")
        lines.append(f"    sid       = {_hcl(st['Sid'])}")
        lines.append('    effect    = "Allow"')
        lines.append(f"    actions   = [{', '.join(_hcl(a) for a in st['Action'])}]")
        lines.append(f"    resources = [{', '.join(_hcl(r) for r in st['Resource'])}]")
        for test, conditions in st.get("Condition", {}).items():
            for variable, values in conditions.items():
                lines.append("    condition {")
                lines.append(f"      test     = {_hcl(test)}")
                lines.append(f"      variable = {_hcl(variable)}")
                lines.append(f"      values   = [{', '.join(_hcl(v) for v in values)}]")
                lines.append("    }")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- gathering ------------------------------------------------------------------------------------------------


def gather(
    module: Any, workflow: str | None, requests: Sequence[tuple[str, Any]], resolve_kms: bool
) -> PolicyInputs:
    """References of ``requests`` (aliases expanded) plus the providers' ones, and the optional parts."""
    from flytekitplugins_awssecrets.refs import parse_reference, reference_from_request
    from flytekitplugins_awssecrets.resolver import get_resolver

    resolver = get_resolver()
    settings = resolver.settings
    refs = []
    for _, s in requests:
        ref = reference_from_request(s.group, s.key, s.group_version)
        if ref is not None:
            refs.append(resolver.expand(ref))
    for provider in EXTRA_REFERENCE_PROVIDERS:
        for text in provider(module, workflow):
            refs.append(resolver.expand(parse_reference(text)))
    strategy = settings.read_strategy
    inputs = PolicyInputs(
        secrets=[r for r in refs if r.service == "secretsmanager"],
        parameters=[r for r in refs if r.service == "ssm"],
        batch=strategy in BATCH_STRATEGIES,
        tags=bool(settings.required_tags),
    )
    aptible = _aptible_strategies(module, workflow)
    if aptible:
        from flytekitplugins_awssecrets.aptible.operator import connector_statements

        inputs.extra_statements = connector_statements(aptible)
        inputs.notes.append(
            "note: the Aptible bot credentials and the AptibleConnector* statements are for the role the "
            "Aptible connector runs as (tasks of type aptible_access run there, not in a pod)"
        )
    if resolve_kms:
        inputs.kms_keys = _kms_keys(resolver, inputs)
    elif refs:
        inputs.notes.append(
            "note: secrets or parameters encrypted with a customer-managed KMS key also need kms:Decrypt; "
            "run with --resolve-kms to look their keys up (needs DescribeSecret / DescribeParameters)"
        )
    if settings.assume_role is not None or settings.account_roles:
        inputs.notes.append(
            "note: the settings assume roles: attach this policy to those roles, and allow sts:AssumeRole on "
            "them to the identity the task runs as"
        )
    return inputs


def _aptible_strategies(module: Any, workflow: str | None) -> list[str]:
    """The strategy names of the ``aptible_access`` tasks in scope."""
    from flytekitplugins_awssecrets.flytekit.walk import tasks_in_scope

    return sorted(
        {
            str(t.strategy_name)
            for t in tasks_in_scope(module, workflow)
            if getattr(t, "task_type", None) == "aptible_access" and hasattr(t, "strategy_name")
        }
    )


def _key_arn(resolver: Any, key_id: str, ref: Any) -> str | None:
    """The ARN of a customer-managed key (None for an AWS-managed one)."""
    if key_id.startswith(_AWS_MANAGED) or ":alias/aws/" in key_id:
        return None
    if key_id.startswith("arn:") and ":key/" in key_id:
        return key_id
    kms = resolver.factory.client("kms", ref.region, ref.account)
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    if meta.get("KeyManager") == "AWS":
        return None
    return str(meta["Arn"])


def _kms_keys(resolver: Any, inputs: PolicyInputs) -> dict[str, set[str]]:
    from flytekitplugins_awssecrets.credentials import unreachable_error
    from flytekitplugins_awssecrets.errors import AwsSecretsError, SecretFetchError

    keys: dict[str, set[str]] = {}
    for ref in inputs.secrets + inputs.parameters:
        try:
            if ref.service == "secretsmanager":
                sm = resolver.factory.client("secretsmanager", ref.region, ref.account)
                key_id = sm.describe_secret(SecretId=ref.arn).get("KmsKeyId")
            else:
                ssm = resolver.factory.client("ssm", ref.region, ref.account)
                found = ssm.describe_parameters(
                    ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [ref.name]}]
                ).get("Parameters", [])
                key_id = found[0].get("KeyId") if found and found[0].get("Type") == "SecureString" else None
            arn = _key_arn(resolver, str(key_id), ref) if key_id else None
        except AwsSecretsError:
            raise
        except Exception as e:  # noqa: BLE001 - one typed, value-free error naming the reference
            unreachable = unreachable_error(str(ref), e, ref.service or "")
            if unreachable is not None:
                raise unreachable from None
            code = str(getattr(e, "response", {}).get("Error", {}).get("Code", "")) or type(e).__name__
            raise SecretFetchError(str(ref), f"--resolve-kms could not look up its key: {code}") from None
        if arn:
            keys.setdefault(arn, set()).add(ref.service or "")
    return keys


# -- the command ----------------------------------------------------------------------------------------------


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.argument("workflow", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "terraform"]),
    default="json",
    show_default=True,
    help="json: an IAM policy document; terraform: an aws_iam_policy_document data source.",
)
@click.option(
    "--resolve-kms",
    is_flag=True,
    help="Look up each secret's and parameter's KMS key (DescribeSecret/DescribeParameters) and add "
    "kms:Decrypt for customer-managed keys.",
)
@click.option("--name", default="flyte_task_secrets", show_default=True, help="Terraform data source name.")
def policy(file: str, workflow: str | None, fmt: str, resolve_kms: bool, name: str) -> None:
    """Print the least-privilege IAM policy that the secret requests of FILE (or WORKFLOW) need.

    Attach it to the role the task pods run as (IRSA, Pod Identity, instance profile). Exit codes: 0 printed,
    2 bad usage or input (no such workflow, unknown alias, invalid settings), 3 an AWS error (--resolve-kms).
    """
    from flytekitplugins_awssecrets.cli_refs import load_module
    from flytekitplugins_awssecrets.errors import AwsSecretsError, SecretFetchError
    from flytekitplugins_awssecrets.flytekit.walk import Unresolvable, collect_requests

    try:
        module = load_module(file)
    except click.UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module failed to import
        click.echo(f"error: could not import {file}: {type(e).__name__}: {e}", err=True)
        sys.exit(2)
    requests = collect_requests(module, workflow)
    unnamed = [f"{t}: {s.group}: {s.detail}" for t, s in requests if isinstance(s, Unresolvable)]
    if unnamed:
        # A policy without these references would look complete and fail at run time: refuse it.
        click.echo("error: some references cannot be named, so no policy is printed:", err=True)
        for line in unnamed:
            click.echo(f"  {line}", err=True)
        sys.exit(2)
    try:
        inputs = gather(module, workflow, requests, resolve_kms)
    except SecretFetchError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(3)
    except AwsSecretsError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if not inputs.secrets and not inputs.parameters:
        click.echo(f"no AWS secret requests found in {workflow or file}: no policy needed", err=True)
    doc = build_policy(inputs)
    if fmt == "terraform":
        click.echo(to_terraform(doc, name), nl=False)
    else:
        click.echo(json.dumps(doc, indent=2))
    for note in inputs.notes:
        click.echo(note, err=True)
