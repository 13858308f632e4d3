"""The plugin's typed errors, and the one place their messages are built.

Every error names the secret *reference* (an ARN, a parameter ARN or an alias) and the reason, and says how
to fix it. No error ever holds a secret value: the constructors take no value argument, and text that comes
from AWS passes through :func:`clean_aws_message` before it is kept. Remember that
``json.JSONDecodeError.doc`` holds the whole document it failed on, so a JSON error is never chained
(``raise ... from None``) and its text never formatted into a message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from flytekitplugins_awssecrets.links import doc_link

__all__ = [
    "AwsSecretsError",
    "InvalidReferenceError",
    "SecretNotFoundError",
    "SecretAccessDeniedError",
    "CredentialsRejectedError",
    "SecretDecryptionError",
    "SecretThrottledError",
    "SecretFetchError",
    "EndpointUnreachableError",
    "JsonKeyNotFoundError",
    "SecretNotJsonError",
    "BinaryToEnvVarError",
    "MountCollisionError",
    "SecretResolutionError",
    "SettingsError",
    "SecretLeakError",
    "UninspectableOutputError",
    "FileMountOnDiskError",
    "UnknownAliasError",
    "MissingTagError",
    "UnservableRequestError",
    "ScrubbedError",
    "UntrustedSettingError",
    "SecretRefreshError",
    "RefreshIntervalError",
    "ConcurrentMountError",
    "PluginInactiveError",
    "clean_aws_message",
    "markup_error",
    "CREDENTIAL_CODES",
]

_MAX_AWS_TEXT = 300
# AWS messages are short and value-free, but a proxy or a misconfigured endpoint could answer with anything:
# keep only a bounded, single-line, printable excerpt.
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


_MARKUP = re.compile(r"^\s*<(\?xml|!doctype|html|[A-Za-z][\w:.-]*[\s>/])", re.IGNORECASE)
_XML_FIELD = r"<{0}>\s*([^<]{{0,300}}?)\s*</{0}>"
_EMBEDDED_MARKUP = re.compile(r"<(\?xml|!doctype|html|head|body|\w*Response|Error)[\s>/]", re.IGNORECASE)
_NOT_SHOWN = "(the endpoint answered with an XML/HTML document, not shown)"


def markup_error(text: str) -> tuple[str, str] | None:
    """``(code, message)`` of an error answered as XML or HTML (``<ErrorResponse><Error><Code>...``), which
    botocore hands over as the raw body when a JSON API's endpoint answers in markup; None for plain text.
    An HTML page gives ``("", "")``: its text is a proxy's or a server's, not AWS's, and is not kept."""
    if not _MARKUP.match(text):
        return None
    code = re.search(_XML_FIELD.format("Code"), text)
    message = re.search(_XML_FIELD.format("Message"), text)
    return (code.group(1) if code else "", message.group(1) if message else "")


def clean_aws_message(text: object) -> str:
    """Return a short, single-line, printable excerpt of a message that came from AWS or the network.

    A raw XML or HTML body is never kept: an XML error gives its ``Message`` only, anything else a note.
    """
    s = str(text)
    markup = markup_error(s)
    if markup is not None:
        s = markup[1] or _NOT_SHOWN
    else:
        inside = _EMBEDDED_MARKUP.search(s)  # "403: <html>...": a body after some words of ours
        if inside is not None:
            s = s[: inside.start()].rstrip() + " " + _NOT_SHOWN
    s = _UNPRINTABLE.sub(" ", s).strip()
    if len(s) > _MAX_AWS_TEXT:
        s = s[: _MAX_AWS_TEXT - 3] + "..."
    return s


class AwsSecretsError(Exception):
    """Base of every error this plugin raises.

    ``reference`` is what the user wrote (ARN or alias), ``reason`` says what went wrong and ``hint`` how to
    fix it. ``retryable`` is true when trying again later may succeed (throttling, a 5xx, a time-out).
    """

    retryable: bool = False

    def __init__(self, reference: str, reason: str, hint: str = "") -> None:
        self.reference = reference
        self.reason = reason
        self.hint = hint
        super().__init__(self._build())

    def _build(self) -> str:
        msg = f"{self.reference}: {self.reason}"
        if self.hint:
            msg += f" ({self.hint})"
        return msg

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[AwsSecretsError], state: dict[str, object]) -> AwsSecretsError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, err._build())
    return err


class InvalidReferenceError(AwsSecretsError, ValueError):
    """A reference that is not a valid secret ARN, parameter ARN or alias; raised where it is declared."""

    def __init__(self, reference: str, bad_part: str, expected: str) -> None:
        self.bad_part = bad_part
        self.expected = expected
        super().__init__(reference, f"invalid reference: {bad_part}", f"expected {expected}")


class SecretNotFoundError(AwsSecretsError, LookupError):
    """The secret or parameter (or the requested version of it) does not exist."""

    def __init__(self, reference: str, detail: str = "") -> None:
        reason = "not found" + (f": {detail}" if detail else "")
        super().__init__(
            reference,
            reason,
            "check the name, region and account in the ARN, and the version stage or id if one is pinned",
        )


class SecretAccessDeniedError(AwsSecretsError, PermissionError):
    """The credentials in use may not read the secret; names the IAM action and resource to grant."""

    def __init__(self, reference: str, action: str, resource: str, detail: str = "") -> None:
        self.action = action
        self.resource = resource
        reason = "access denied" + (f": {clean_aws_message(detail)}" if detail else "")
        super().__init__(reference, reason, f"grant {action} on {resource} to the role the task runs as")


#: Error codes AWS gives for credentials it does not accept (unknown, malformed or expired keys and tokens,
#: a secret key that does not match): a credentials problem, not a missing IAM grant.
CREDENTIAL_CODES = {
    "UnrecognizedClientException": "the access key id or security token is not one AWS knows",
    "InvalidClientTokenId": "the access key id or security token is not one AWS knows",
    "InvalidAccessKeyId": "the access key id is not one AWS knows",
    "InvalidToken": "the security token is malformed or invalid",
    "ExpiredToken": "the session token has expired",
    "ExpiredTokenException": "the session token has expired",
    "TokenRefreshRequired": "the session token has expired",
    "RequestExpired": "the request's signature has expired (is the clock right?)",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "InvalidSignatureException": "the secret access key does not match the access key id",
    "IncompleteSignature": "the request signature is incomplete",
    "MissingAuthenticationToken": "the request was not signed (no credentials?)",
    "MissingAuthenticationTokenException": "the request was not signed (no credentials?)",
    "AuthFailure": "AWS could not authenticate the credentials",
}


class CredentialsRejectedError(AwsSecretsError, PermissionError):
    """AWS did not accept the credentials themselves (invalid, unknown or expired key or token): names the
    code, what it means and where the credentials came from. Not an IAM grant problem, so no action is named.

    Example::

        CredentialsRejectedError("arn:...:secret:db", "ExpiredToken", "env vars AWS_ACCESS_KEY_ID / ...")
    """

    def __init__(self, reference: str, code: str, source: str, not_loaded: str = "") -> None:
        self.code = code
        self.source = source
        meaning = CREDENTIAL_CODES.get(code, "AWS did not accept the credentials")
        what = (
            f"the AWS credentials could not be loaded ({code}: {not_loaded})"
            if not_loaded
            else f"the AWS credentials were rejected ({code}: {meaning})"
        )
        AwsSecretsError.__init__(
            self,
            reference,
            f"{what}; nothing was read",
            f"the credentials came from {source}; refresh or replace them there "
            "(`aws sts get-caller-identity` shows whether they work) -- this is not a missing IAM permission",
        )


class SecretDecryptionError(AwsSecretsError):
    """KMS refused to decrypt the secret (missing kms:Decrypt, disabled key, ...)."""

    def __init__(self, reference: str, detail: str = "") -> None:
        super().__init__(
            reference,
            "could not be decrypted" + (f": {clean_aws_message(detail)}" if detail else ""),
            "grant kms:Decrypt on the secret's KMS key and check that the key is enabled",
        )


class SecretThrottledError(AwsSecretsError):
    """AWS kept throttling (or failing) after botocore's retries were spent."""

    retryable = True

    def __init__(self, reference: str, detail: str = "") -> None:
        super().__init__(
            reference,
            "throttled or unavailable after retries" + (f": {clean_aws_message(detail)}" if detail else ""),
            "retry later, raise FLYTE_AWS_SECRETS_MAX_ATTEMPTS, or lower the request rate",
        )


class SecretFetchError(AwsSecretsError):
    """Any other failure to read a secret (network, endpoint, unexpected AWS error)."""

    def __init__(self, reference: str, detail: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(reference, f"could not be read: {clean_aws_message(detail)}")


class EndpointUnreachableError(SecretFetchError):
    """The AWS endpoint could not be reached (refused, connect or read time-out); names the endpoint URL and
    where it came from (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``, the config file or botocore's
    default), so a stale moto/LocalStack variable is found at once.

    Example::

        EndpointUnreachableError("arn:...:secret:db", "http://127.0.0.1:5000", "env var AWS_ENDPOINT_URL",
                                 "connection refused", attempts=2)
    """

    def __init__(self, reference: str, endpoint: str, source: str, problem: str, attempts: int = 1) -> None:
        self.endpoint = endpoint
        self.source = source
        self.problem = problem
        self.attempts = attempts
        self.retryable = True
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        #: The part without the reference, for callers that word their own message (the manifest commands).
        self.detail = f"cannot reach endpoint {endpoint} (from {source}): {problem}{tries}"
        AwsSecretsError.__init__(
            self,
            reference,
            f"could not be read: {self.detail}",
            "check that the endpoint is up and reachable from here, or unset the variable that points at it"
            if source.startswith("env var")
            else "check the network path to AWS (proxy, VPC endpoint, firewall) and the region",
        )


class JsonKeyNotFoundError(AwsSecretsError, KeyError):
    """The JSON key asked for is not in the secret.

    Says where the path broke and what is there ("an object with 3 keys"), but names no key of the secret:
    key names can be secret themselves (a map of tokens to owners), and this message reaches error.pb.
    """

    def __init__(self, reference: str, json_key: str, at: str = "the top level", found: str = "") -> None:
        self.json_key = json_key
        self.at = at
        self.found = found
        super().__init__(
            reference,
            f"JSON key {json_key!r} not found: no match at {at}" + (f" (there: {found})" if found else ""),
            "check the key's spelling and case; list the keys with "
            "`aws secretsmanager get-secret-value --secret-id <ARN> --query SecretString --output text | jq keys`",
        )

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0] if self.args else ""


class SecretNotJsonError(AwsSecretsError, ValueError):
    """A JSON key was asked for but the secret is not a JSON object (or is binary)."""

    def __init__(self, reference: str, json_key: str, what: str) -> None:
        self.json_key = json_key
        super().__init__(
            reference,
            f"JSON key {json_key!r} was requested but the secret {what}",
            "store the secret as a JSON object, or drop json_key to read it whole",
        )


class BinaryToEnvVarError(AwsSecretsError, ValueError):
    """A binary secret (SecretBinary) cannot be put into an environment variable."""

    def __init__(self, reference: str, as_text: bool = False) -> None:
        what = "read as text" if as_text else "mounted as an environment variable"
        super().__init__(
            reference,
            f"is binary (SecretBinary) and cannot be {what}",
            "use mount_requirement=Secret.MountType.FILE, or read it with secrets.get(..., encode_mode='rb')",
        )


class MountCollisionError(AwsSecretsError, ValueError):
    """Two requests of one task would land on the same environment variable or file.

    ``naming`` says how the requesting SDK names them (each adapter passes its own: flytekit upper-cases
    variable names, Flyte 2 takes ``as_env_var`` as written), ``option`` the request field that picks the
    variable (``env_var``, ``as_env_var``).
    """

    def __init__(
        self,
        reference: str,
        other: str,
        where: str,
        *,
        naming: str = "environment variable names are upper-cased and file names lower-cased",
        option: str = "env_var",
    ) -> None:
        self.other = other
        self.where = where
        super().__init__(
            reference,
            f"collides with {other} at {where}",
            f"{naming}; give one of them another {option} or rename one secret",
        )


class UnknownAliasError(AwsSecretsError, LookupError):
    """An alias that the settings do not define."""

    def __init__(self, alias: str, known: Sequence[str]) -> None:
        self.known = sorted(known)
        shown = ", ".join(self.known) or "none are configured"
        super().__init__(
            alias,
            "unknown alias",
            f"known aliases: {shown}; define it under 'aliases' in the settings file "
            "or FLYTE_AWS_SECRETS_ALIASES",
        )


class MissingTagError(AwsSecretsError, PermissionError):
    """The secret lacks a tag (or tag value) that the settings require before it may be handed to a task."""

    def __init__(self, reference: str, tag: str, expected: str, found: str | None) -> None:
        self.tag = tag
        got = "is missing" if found is None else f"is {found!r}"
        super().__init__(
            reference,
            f"refused: required tag {tag!r} {got}, expected {expected!r}",
            "tag the secret or change FLYTE_AWS_SECRETS_REQUIRED_TAGS",
        )


class SecretLeakError(AwsSecretsError):
    """A task's output contains a secret value that the plugin resolved for it; nothing was written."""

    def __init__(self, reference: str, where: str) -> None:
        self.where = where
        super().__init__(
            reference,
            f"its value, or a credential field of it, appears in the task output {where}; "
            "the outputs were not written",
            "do not return secret values from tasks (they would reach the control plane). If the output only "
            "describes the secret (a host, a database name), request the credential alone with a JSON key "
            "(<ARN>:password), or list the describing field's key in FLYTE_AWS_SECRETS_DESCRIPTIVE_JSON_KEYS "
            "(FLYTE_AWS_SECRETS_SENSITIVE_JSON_KEYS marks more fields secret); "
            "set FLYTE_AWS_SECRETS_LEAK_GUARD=false (in a pod: leak_guard in the image's settings file) only if "
            "returning the value is intended",
        )


class UninspectableOutputError(SecretLeakError):
    """A task holding secrets returns an output the leak guard cannot look into (it would be pickled).

    A pickled object (an output typed ``Any`` or as a class flytekit has no type transformer for, such as a
    class with ``__slots__``) goes to the raw-data store as opaque bytes, so the guard fails closed.
    """

    def __init__(self, reference: str, where: str, why: str) -> None:
        self.where = where
        self.why = why
        AwsSecretsError.__init__(
            self,
            reference,
            f"the task output {where} cannot be checked for secret values ({why}); the outputs were not written",
            "return a type flytekit stores as data (str, int, dataclass, pydantic model, list, dict...), "
            "or set FLYTE_AWS_SECRETS_ALLOW_OPAQUE_OUTPUTS=true (in a pod: allow_opaque_outputs in the image's "
            "settings file) to accept unchecked outputs",
        )


class FileMountOnDiskError(AwsSecretsError):
    """A FILE secret would be written to a filesystem that is not in memory (tmpfs/ramfs)."""

    def __init__(self, reference: str, directory: str, fstype: str) -> None:
        self.directory = directory
        self.fstype = fstype
        AwsSecretsError.__init__(
            self,
            reference,
            f"FILE secrets are written to a memory filesystem only, and {directory} is "
            f"{fstype or 'of unknown type'}, not tmpfs/ramfs",
            "set FLYTE_AWS_SECRETS_MOUNT_DIR to a tmpfs directory (e.g. /dev/shm), use Secret.MountType.ANY, "
            "or accept the file on disk with FLYTE_AWS_SECRETS_ALLOW_DISK_MOUNT=true (in a pod: the image's "
            f"settings file; see {doc_link('security', 'file-secrets-on-disk')})",
        )


class SettingsError(AwsSecretsError, ValueError):
    """An invalid setting: names the field, where the bad value came from, and what is expected."""

    def __init__(self, field: str, source: str, problem: str) -> None:
        self.field = field
        self.source = source
        super().__init__(f"setting {field!r} (from {source})", problem)


class UnservableRequestError(AwsSecretsError, ValueError):
    """A task (or launch plan) whose AWS request neither the plugin nor the cluster's webhook would serve.

    Raised at registration (``pyflyte register/package/serialize``), and for a ``ContainerTask`` at a local
    run, so that no pod ever starts without its secret. Names the entity, the request and the fix.
    """

    def __init__(self, entity: str, reference: str, why: str, fix: str) -> None:
        self.entity = entity
        self.why = why
        self.fix = fix
        super().__init__(reference, f"{entity}: {why}", fix)


class SecretRefreshError(AwsSecretsError):
    """A refresh of a running task's secret failed; the task keeps the last good value (logged, not raised,
    by the refresher; raised by :func:`~flytekitplugins_awssecrets.refresh_secrets` when asked to)."""

    def __init__(self, cause: AwsSecretsError, kept_since: str) -> None:
        self.cause = cause
        self.retryable = cause.retryable
        super().__init__(
            cause.reference,
            f"refresh failed ({cause.reason}); the task keeps the value read at {kept_since}",
            cause.hint,
        )


class RefreshIntervalError(SettingsError):
    """A refresh interval shorter than the fleet's share of the read quota allows (the numbers say why)."""

    def __init__(self, interval: float, minimum: float, arithmetic: str) -> None:
        self.interval = interval
        self.minimum = minimum
        SettingsError.__init__(
            self,
            "refresh_interval_seconds",
            "settings",
            f"{interval:g} s is below the {minimum:g} s the read quotas allow: {arithmetic}; "
            "raise the interval, or lower refresh_fleet_pods if fewer pods refresh at once",
        )


class SecretResolutionError(AwsSecretsError):
    """Raised before user code runs when one or more of a task's secret requests cannot be resolved.

    ``errors`` holds every failure, so one run shows everything that needs fixing.
    """

    def __init__(self, errors: Sequence[AwsSecretsError], task: str | None = None) -> None:
        self.errors = list(errors)
        self.task = task
        self.retryable = bool(self.errors) and all(e.retryable for e in self.errors)
        n = len(self.errors)
        where = f"task {task!r}" if task else "this task"
        lines = "\n".join(f"  - {e}" for e in self.errors)
        AwsSecretsError.__init__(
            self,
            where,
            f"{n} secret request{'s' if n != 1 else ''} could not be resolved; user code was not run:\n{lines}",
        )


class ScrubbedError(Exception):
    """Stands in for an exception of a task that showed a secret value and could not be scrubbed in place
    (pydantic's ``ValidationError`` prints its input, truncated, from Rust; see :mod:`scrub`).

    The stand-in's class has the original's name and module and also derives from the original's nearest
    built-in base (``ValueError`` for a ``ValidationError``); its message is the original's, redacted, and it
    keeps the traceback, chain and notes. ``original_type`` is the original class's dotted name::

        except ValueError as e:
            if isinstance(e, ScrubbedError):
                print(e.original_type)   # pydantic_core._pydantic_core.ValidationError
    """

    original_type: str = ""


class UntrustedSettingError(SettingsError):
    """In a pod, the container environment (the task template's ``environment``, an execution's ``envs``)
    tried to change a setting that only the image may set: where the agent is, which token file is sent,
    endpoints, the leak guard, log redaction, disk mounts or the settings file path (see
    :mod:`~flytekitplugins_awssecrets.setting_sources`). Nothing was fetched and user code was not run.
    """

    def __init__(self, field: str, source: str, image_file: str, *, endpoint: bool = False) -> None:
        self.image_file = image_file
        if endpoint:
            problem = (
                "a pod sends AWS requests only to a loopback endpoint or one its image trusts; add the origin "
                f"to trusted_endpoints in the image's settings file ({image_file}), or remove the variable "
                "from the task's environment and the execution's envs"
            )
        elif field == "config":
            problem = (
                "a pod reads settings only from its image's settings file "
                f"({image_file}); remove the variable from the task's environment and the execution's envs"
            )
        else:
            problem = (
                "in a pod this setting is taken only from the image's settings file "
                f"({image_file}), never from the container environment that task templates and "
                "executions write; bake it into that file, or remove the variable"
            )
        super().__init__(field, source, problem)


class ConcurrentMountError(MountCollisionError):
    """Another task running in this process at the same time holds an environment variable or file that this
    task would set to a different value (``os.environ`` is one per process)."""

    def __init__(self, reference: str, where: str) -> None:
        self.other = "a task running at the same time in this process"
        self.where = where
        AwsSecretsError.__init__(
            self,
            reference,
            f"{where} is held with another value by a task running at the same time in this process",
            "give the concurrent tasks different env_var names, or run them in separate processes",
        )


class PluginInactiveError(AwsSecretsError):
    """A pod whose task was registered with AWS requests for the plugin runs where the plugin is not active
    (turned off with ``FLYTE_AWS_SECRETS_DISABLE`` or failed to load): user code is not run."""

    def __init__(self, task: str, references: Sequence[str], why: str, fix: str) -> None:
        self.task = task
        self.references = list(references)
        AwsSecretsError.__init__(
            self,
            f"task {task!r}",
            f"its AWS requests ({', '.join(self.references)}) were registered for "
            f"flytekitplugins-awssecrets to resolve in the pod, but {why}; user code was not run",
            fix,
        )
