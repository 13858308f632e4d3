"""Typed errors of the Aptible access strategy, and the one place their messages are built.

Every error says what was asked (the strategy, target, email or endpoint), why it failed and how to fix it.
No error holds a password or a token: constructors take none, and text that comes from Aptible passes through
:func:`~flytekitplugins_awssecrets.errors.clean_aws_message` (bounded, single line) before it is kept.

The errors raised *before anything changes* (a bad duration, an unknown target, a role of another
organization, an unknown or ambiguous identity, a bot without Role Admin, MFA on the bot) are subclasses of
:class:`AptiblePreconditionError`, so a caller can tell "nothing was touched" from "the API failed".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from flytekitplugins_awssecrets.errors import AwsSecretsError, clean_aws_message
from flytekitplugins_awssecrets.links import doc_link

__all__ = [
    "AptibleError",
    "AptiblePreconditionError",
    "AptibleConfigError",
    "DurationTooLongError",
    "UnknownTargetError",
    "RoleNotFoundError",
    "RoleOrganizationMismatchError",
    "IdentityNotFoundError",
    "AmbiguousIdentityError",
    "BotNotRoleAdminError",
    "AptibleAuthError",
    "MfaRequiredError",
    "AptibleApiError",
    "AptibleUnavailableError",
    "OperatorConfigError",
    "UnknownStrategyError",
    "TemplateFieldError",
    "SsoEnforcedError",
    "LoginRateLimitedError",
    "ShortReadError",
    "ApprovalError",
    "ApprovalRefusedError",
    "ApprovalTimeoutError",
    "LocalApprovalDeniedError",
    "BotCredentialsError",
    "AptibleStateError",
    "AccessRequestRefusedError",
    "LocalRunNotAllowedError",
    "MembershipIdError",
]


class AptibleError(AwsSecretsError):
    """Base of every error of the Aptible access strategy (a :class:`AwsSecretsError` like the rest)."""


class AptiblePreconditionError(AptibleError):
    """A request refused before any membership was added or removed."""


class AptibleConfigError(AptibleError, ValueError):
    """An invalid declaration (integration, role, strategy or task), raised where it is declared."""

    def __init__(self, what: str, problem: str, hint: str = "") -> None:
        super().__init__(what, problem, hint)


def _fmt_duration(d: timedelta) -> str:
    total = int(d.total_seconds())
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s"


class DurationTooLongError(AptiblePreconditionError, ValueError):
    """The requested duration is over the strategy's ``max_duration`` (or is not positive)."""

    def __init__(self, strategy: str, requested: timedelta, maximum: timedelta) -> None:
        self.requested = requested
        self.maximum = maximum
        if requested <= timedelta(0):
            reason = f"duration {_fmt_duration(requested)} must be positive"
        else:
            reason = f"duration {_fmt_duration(requested)} is over the maximum {_fmt_duration(maximum)}"
        super().__init__(f"strategy {strategy!r}", reason, "ask for a shorter duration")


class UnknownTargetError(AptiblePreconditionError, LookupError):
    """The target is not one of the strategy's targets."""

    def __init__(self, strategy: str, target: str, known: Sequence[str]) -> None:
        self.target = target
        self.known = list(known)
        super().__init__(
            f"strategy {strategy!r}",
            f"unknown target {clean_aws_message(target)!r}",
            f"known targets: {', '.join(self.known) or 'none'}",
        )


class RoleNotFoundError(AptiblePreconditionError, LookupError):
    """The target's role id does not exist on Aptible (or the bot cannot see it)."""

    def __init__(self, target: str, role_id: str) -> None:
        self.role_id = role_id
        super().__init__(
            f"target {target!r}",
            f"Aptible role {role_id} not found",
            "check role_id (it is in the dashboard URL of the role) and that the bot belongs to the organization",
        )


class RoleOrganizationMismatchError(AptiblePreconditionError):
    """The target's role belongs to another organization than the integration's."""

    def __init__(self, target: str, role_id: str, organization_id: str, actual: str) -> None:
        self.role_id = role_id
        self.organization_id = organization_id
        self.actual = actual
        super().__init__(
            f"target {target!r}",
            f"role {role_id} belongs to organization {clean_aws_message(actual) or 'unknown'}, "
            f"not to {organization_id}",
            "use a role of the integration's organization, or another integration",
        )


class IdentityNotFoundError(AptiblePreconditionError, LookupError):
    """No Aptible user of the organization matches the requester."""

    def __init__(self, email: str, organization_id: str, detail: str = "") -> None:
        self.email = email
        super().__init__(
            f"email {clean_aws_message(email)!r}",
            f"no Aptible user in organization {organization_id}" + (f" ({detail})" if detail else ""),
            "invite the user to the organization, or map the email to the Aptible user with identity=",
        )


class AmbiguousIdentityError(AptiblePreconditionError, LookupError):
    """More than one Aptible user of the organization matches the requester's email."""

    def __init__(self, email: str, organization_id: str, user_ids: Sequence[str]) -> None:
        self.email = email
        self.user_ids = list(user_ids)
        super().__init__(
            f"email {clean_aws_message(email)!r}",
            f"{len(self.user_ids)} Aptible users in organization {organization_id} match: "
            + ", ".join(self.user_ids),
            "map the email to one user id with identity=",
        )


class BotNotRoleAdminError(AptiblePreconditionError, PermissionError):
    """The bot user may not manage the role's memberships."""

    def __init__(self, target: str, role_id: str, bot_user_id: str) -> None:
        self.role_id = role_id
        self.bot_user_id = bot_user_id
        super().__init__(
            f"target {target!r}",
            f"the bot user {bot_user_id} is not a Role Admin of role {role_id}",
            "make the bot a Role Admin of the role (Aptible dashboard: Members > Role Admin), "
            "a Deploy Owner (for custom roles) or an Account Owner of the organization",
        )


class AptibleAuthError(AptibleError, PermissionError):
    """The bot's credentials were refused by the auth host."""

    def __init__(self, auth_url: str, code: str, message: str = "") -> None:
        self.code = code
        super().__init__(
            f"Aptible auth {auth_url}",
            f"login refused ({clean_aws_message(code)})"
            + (f": {clean_aws_message(message)}" if message else ""),
            "check the bot username and password secrets",
        )


class MfaRequiredError(AptibleAuthError):
    """The bot user has MFA enabled: an unattended bot cannot answer an OTP prompt."""

    def __init__(self, auth_url: str) -> None:
        self.code = "otp_token_required"
        AptibleError.__init__(
            self,
            f"Aptible auth {auth_url}",
            "the bot user must not require MFA (Aptible answered otp_token_required)",
            "use a dedicated bot user without MFA, protected by its secret in AWS Secrets Manager",
        )


class AptibleApiError(AptibleError):
    """Aptible answered an error (body ``{"code", "error", "message"}``)."""

    def __init__(self, method: str, path: str, status: int, code: str = "", message: str = "") -> None:
        self.method = method
        self.path = path
        self.status = status
        self.code = code
        self.retryable = status >= 500 or status == 429
        detail = clean_aws_message(code) if code else ""
        if message:
            detail += (": " if detail else "") + clean_aws_message(message)
        super().__init__(f"Aptible {method} {path}", f"HTTP {status}" + (f" {detail}" if detail else ""))


class AptibleUnavailableError(AptibleError):
    """Aptible kept failing (5xx, time-outs, connection errors) after every retry."""

    retryable = True

    def __init__(self, method: str, path: str, attempts: int, detail: str) -> None:
        self.method = method
        self.path = path
        self.attempts = attempts
        super().__init__(
            f"Aptible {method} {path}",
            f"unavailable after {attempts} attempts: {clean_aws_message(detail)}",
            "retry later; raise FLYTE_AWS_SECRETS_APTIBLE_MAX_ATTEMPTS if Aptible is slow",
        )


class OperatorConfigError(AptibleError, ValueError):
    """The operator file is missing or invalid: names the file and the field (``strategies[0].targets``)."""

    def __init__(self, path: str, field: str, problem: str, hint: str = "") -> None:
        self.path = path
        self.field = field
        super().__init__(
            f"operator file {path}" + (f" field {field}" if field else ""),
            clean_aws_message(problem),
            hint or f"fix the operator file (see {doc_link('aptible', 'the-operator-file')})",
        )


class UnknownStrategyError(AptiblePreconditionError, LookupError):
    """The task names a strategy the operator file does not declare."""

    def __init__(self, strategy: str, known: Sequence[str]) -> None:
        self.strategy = strategy
        super().__init__(
            f"strategy {clean_aws_message(strategy)!r}",
            "is not declared in the operator file",
            f"known strategies: {', '.join(known) or 'none'}; ask the connector's operator to add it",
        )


class TemplateFieldError(AptiblePreconditionError, ValueError):
    """A task template or its inputs carry a field a requester may not set (only strategy, target, email,
    duration and reason are allowed); nothing in it was used."""

    def __init__(
        self,
        field: str,
        problem: str = "is not allowed in an aptible_access task",
        more: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.field = field
        #: Every offending field and its problem, the first included (a template may have several).
        self.problems = [(field, problem), *more]
        names = ", ".join(repr(clean_aws_message(f)) for f, _ in self.problems)
        reason = problem if not more else "; ".join(f"{clean_aws_message(f)} {p}" for f, p in self.problems)
        super().__init__(
            f"task template field{'s' if more else ''} {names}",
            reason,
            "a template carries only strategy, target, email, duration and reason; integrations, targets, "
            "secrets, hosts, identity hooks and approval policy live in the connector's operator file",
        )


class SsoEnforcedError(AptiblePreconditionError, PermissionError):
    """The organization requires SSO: a password token (the bot's) cannot reach its resources."""

    def __init__(self, organization_id: str) -> None:
        super().__init__(
            f"organization {organization_id}",
            "enforces SSO, so the bot's password token cannot read or change its roles",
            "make the bot an Account Owner of the organization, or add it to the organization's SSO "
            "allowlist (Aptible dashboard: Settings > Single Sign-On)",
        )


class LoginRateLimitedError(AptibleAuthError):
    """``POST /tokens`` answered 429: not retried, since Aptible locks accounts after repeated logins."""

    retryable = True

    def __init__(self, auth_url: str) -> None:
        self.code = "rate_limited"
        AptibleError.__init__(
            self,
            f"Aptible auth {auth_url}",
            "login rate-limited (HTTP 429); not retried: Aptible locks accounts after repeated logins",
            "wait a minute; the next poll tries again",
        )


class ShortReadError(AptibleError):
    """A paged collection held fewer items than its ``total_count`` said: nothing is decided on it."""

    retryable = True

    def __init__(self, path: str, got: int, total: int) -> None:
        super().__init__(
            f"Aptible GET {path}",
            f"short read: {got} items of total_count {total}",
            "try again; a collection that changes while it is read is read again",
        )


class ApprovalError(AptibleError):
    """Base of the approval errors."""


class ApprovalRefusedError(ApprovalError, PermissionError):
    """An approval was found but refused (forged, signed with another key, for another request, expired,
    given by the requester): nothing is granted; the request keeps waiting for a valid one."""

    def __init__(self, request_id: str, problem: str) -> None:
        self.request_id = request_id
        self.problem = problem
        super().__init__(
            f"approval of request {request_id}",
            f"refused: {clean_aws_message(problem)}",
            "an approver other than the requester runs 'pyflyte-awssecrets aptible approve "
            + request_id
            + "'",
        )


class ApprovalTimeoutError(ApprovalError, TimeoutError):
    """No valid approval arrived within the strategy's ``approval.wait``: nothing was granted."""

    def __init__(self, request_id: str, wait: timedelta) -> None:
        super().__init__(
            f"request {request_id}",
            f"no valid approval within {_fmt_duration(wait)}; nothing was granted",
            "ask again, and ask an approver to run 'pyflyte-awssecrets aptible approve'",
        )


class LocalApprovalDeniedError(ApprovalError):
    """The person at the terminal did not confirm a local request (the prompt defaults to No)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id}", "not confirmed at the prompt; nothing was granted")


class BotCredentialsError(AptiblePreconditionError):
    """The bot's credentials (named in the operator file) could not be read from AWS."""

    def __init__(self, integration: str, detail: str) -> None:
        super().__init__(
            f"integration {integration!r}",
            f"the bot's credentials could not be read: {clean_aws_message(detail)}",
            'create the secret the operator file names (a JSON {"username", "password"}) and let '
            "these AWS credentials read it (secretsmanager:GetSecretValue)",
        )


class AptibleStateError(AptibleError):
    """The request state handed back to ``get``/``delete`` does not match what the connector made of it.

    The state travels through Propeller (and whoever can call the connector's gRPC port), so the connector
    re-derives every field that matters from its operator file and refuses a state that disagrees.
    """

    def __init__(self, request_id: str, problem: str) -> None:
        self.request_id = request_id
        super().__init__(
            f"request {request_id}",
            f"refused: {clean_aws_message(problem)}; nothing was granted",
            "a GetTask/DeleteTask must carry the resource meta this connector's CreateTask returned",
        )


class AccessRequestRefusedError(AptiblePreconditionError, PermissionError):
    """What a requester sees when a request is refused on something only the organization may know (whether
    an email is an Aptible user, and which one): the same words whatever the reason. The operator's audit
    log (``failed`` record of the request id) has the detail."""

    def __init__(self, request_id: str, fields: Sequence[str]) -> None:
        self.request_id = request_id
        self.fields = list(fields)
        super().__init__(
            f"request {request_id}",
            f"refused: {', '.join(self.fields)} cannot be granted this target; nothing was changed",
            "check the email you asked for; the connector's operator finds the reason in the audit log "
            f"under request id {request_id}",
        )


class LocalRunNotAllowedError(AptiblePreconditionError, PermissionError):
    """A local ``pyflyte run`` of a strategy whose operator file does not allow local runs."""

    def __init__(self, strategy: str, field: str) -> None:
        self.field = field
        super().__init__(
            f"strategy {clean_aws_message(strategy)!r}",
            f"cannot run locally: the operator file's {field} is not true (a local run uses the bot's "
            "credentials, so whoever runs it could grant without approval)",
            "run the workflow on a cluster, where the connector grants; operators who may read the bot's "
            f"credentials set {field}: true in their own operator file ({doc_link('aptible', 'running-locally')})",
        )


class MembershipIdError(AptibleError, ValueError):
    """A membership id (from a record, or an answer) that is not a UUID: no URL is built from it."""

    def __init__(self, value: object) -> None:
        super().__init__(
            f"membership id {clean_aws_message(str(value))[:80]!r}",
            "is not a UUID; nothing was sent to Aptible",
            "membership ids come from Aptible; a record naming anything else was not written by the connector",
        )
