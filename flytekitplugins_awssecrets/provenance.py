"""Where the plugin's inputs come from: credentials, region, endpoints and settings (``check -v``).

Names only: a variable's or file's name, a profile, a role ARN, an endpoint URL; never a key or a value.

Example::

    for line in describe(requests):
        print(line)
    # settings: file /etc/flyte/aws-secrets.yaml (FLYTE_AWS_SECRETS_CONFIG); env vars: FLYTE_AWS_SECRETS_REGION
    # credentials: env vars AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (botocore's default chain)
    # endpoint secretsmanager us-east-1: http://127.0.0.1:5000 (from env var AWS_ENDPOINT_URL)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from flytekitplugins_awssecrets.links import doc_link

__all__ = ["describe", "credentials_source"]

#: botocore's credential ``method`` -> where that is, in words.
_METHODS = {
    "env": "env vars AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
    "shared-credentials-file": "the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)",
    "config-file": "the AWS config file (AWS_CONFIG_FILE or ~/.aws/config)",
    "assume-role": "a role assumed by a profile of the AWS config file",
    "assume-role-with-web-identity": "web identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, e.g. EKS IRSA)",
    "sso": "AWS SSO (IAM Identity Center) login of the profile",
    "custom-process": "the profile's credential_process",
    "container-role": "container credentials (ECS task role or EKS Pod Identity)",
    "iam-role": "instance metadata (the instance profile's role)",
    "explicit": "keys given in code",
}


def _settings_lines() -> list[str]:
    from flytekitplugins_awssecrets.settings import CONFIG_ENV, ENV_PREFIX, NON_FIELD_ENV

    path = os.environ.get(CONFIG_ENV)
    env = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in NON_FIELD_ENV)
    parts = [f"file {path} ({CONFIG_ENV})" if path else f"no settings file ({CONFIG_ENV} unset)"]
    parts.append(f"env vars: {', '.join(env)}" if env else "no FLYTE_AWS_SECRETS_* env vars")
    return ["settings: " + "; ".join(parts) + "; every other field has its default"]


def _credentials_line(resolver: Any) -> str:
    s = resolver.settings
    if s.access_key_id is not None:
        base = "static keys from the settings (access_key_id / secret_access_key)"
    elif s.credentials_file is not None:
        base = f"credentials file {s.credentials_file} profile {s.credentials_profile!r} (settings)"
    elif s.profile is not None:
        base = f"profile {s.profile!r} (settings)"
    else:
        try:
            creds = resolver.factory.base_session().get_credentials()
        except Exception as e:  # noqa: BLE001 - a broken profile: say which kind of failure, no more
            return f"credentials: could not be loaded ({type(e).__name__})"
        if creds is None:
            return (
                "credentials: none found by botocore's default chain (set AWS_PROFILE, static keys or a "
                f"role; see {doc_link('credentials')})"
            )
        method = str(getattr(creds, "method", "") or "")
        base = _METHODS.get(method, method or "botocore's default chain")
        profile = os.environ.get("AWS_PROFILE")
        if method in ("shared-credentials-file", "config-file", "assume-role", "sso", "custom-process"):
            base += f", profile {profile!r} (AWS_PROFILE)" if profile else ", profile 'default'"
        base += " (botocore's default chain)"
    if s.assume_role is not None:
        base += f", then assume {s.assume_role.role_arn} (settings assume_role)"
    if s.account_roles:
        base += f"; per-account roles for {', '.join(sorted(s.account_roles))} (settings account_roles)"
    return "credentials: " + base


def credentials_source() -> str:
    """Where the task resolver's credentials come from, in words (names only): for error messages."""
    try:
        from flytekitplugins_awssecrets.resolver import get_resolver

        line = _credentials_line(get_resolver()).removeprefix("credentials: ")
    except Exception:  # noqa: BLE001 - an error message must still be built
        line = "could not be loaded"
    if not line.startswith(("could not be loaded", "none found")):
        return line
    profile = os.environ.get("AWS_PROFILE")
    if profile:  # the chain itself failed: name what chose the profile
        return f"profile {profile!r} (AWS_PROFILE) of the AWS config and credentials files"
    return "botocore's default chain (`pyflyte-awssecrets check -v` says which source)"


def _region_line(resolver: Any) -> str:
    if resolver.settings.region:
        return f"default region: {resolver.settings.region} (settings region); ARNs carry their own"
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(var):
            return f"default region: {os.environ[var]} ({var}); ARNs carry their own"
    try:
        region = resolver.factory.base_session().get_config_variable("region")
    except Exception:  # noqa: BLE001
        region = None
    if region:
        return f"default region: {region} (AWS config file); ARNs carry their own"
    return "default region: none (only aliases of bare names need one); ARNs carry their own"


def describe(requests: Sequence[tuple[str, Any]]) -> list[str]:
    """Lines saying where each input of resolving ``requests`` comes from."""
    from flytekitplugins_awssecrets.credentials import endpoint_origin, endpoint_source
    from flytekitplugins_awssecrets.errors import AwsSecretsError
    from flytekitplugins_awssecrets.refs import reference_from_request
    from flytekitplugins_awssecrets.resolver import get_resolver

    lines = _settings_lines()
    resolver = get_resolver()
    lines.append(_credentials_line(resolver))
    lines.append(_region_line(resolver))
    seen: set[tuple[str, str, str]] = set()
    for _, s in requests:
        try:
            ref = reference_from_request(s.group, s.key, s.group_version)
            if ref is None:
                continue
            ref = resolver.expand(ref)
        except AwsSecretsError:
            continue
        key = (ref.service or "", ref.region, ref.account)
        if key in seen:
            continue
        seen.add(key)
        try:
            url = str(resolver.factory.client(ref.service or "", ref.region, ref.account).meta.endpoint_url)
        except Exception as e:  # noqa: BLE001
            lines.append(f"endpoint {ref.service} {ref.region}: no client ({type(e).__name__})")
            continue
        lines.append(
            f"endpoint {ref.service} {ref.region}: {endpoint_origin(url)} "
            f"(from {endpoint_source(ref.service or '', url)})"
        )
    return lines
