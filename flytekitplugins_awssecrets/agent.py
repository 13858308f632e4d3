"""Reading Secrets Manager secrets through a local agent: an endpoint that speaks the AWS Secrets Manager
Agent HTTP API (AWS's agent run as a sidecar or DaemonSet, or ``pyflyte-awssecrets serve``).

``GET {agent_url}/secretsmanager/get?secretId=ARN[&versionStage=S|&versionId=V]`` with the token from
``agent_token_file`` in ``X-Aws-Parameters-Secrets-Token``; 200 is GetSecretValue's JSON (``SecretBinary``
base64), anything else AWS's JSON error shape (``{"__type": ..., "message": ...}``) or a short text
(``Bad Token``). The URL and the token file are operator settings only: a task cannot name either.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass, field

from flytekitplugins_awssecrets.errors import AwsSecretsError, SecretFetchError, clean_aws_message
from flytekitplugins_awssecrets.fetch import Fetched, error_from_code, parse_payload
from flytekitplugins_awssecrets.refs import SecretRef

__all__ = ["AgentSource", "AgentError"]

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"  # noqa: S105 - a header name, not a token


class AgentError(SecretFetchError):
    """The agent itself failed (unreachable, refused the token, answered something unreadable): not a
    verdict of AWS on the secret, so ``agent_fallback`` may read it from AWS instead."""


@dataclass
class AgentSource:
    """Reads one secret per request from the agent at ``url``.

    Example::

        source = AgentSource("http://127.0.0.1:2773", "/var/run/awssmatoken", 5.0, 10.0)
        fetched = source.get(parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:db"))
    """

    url: str
    token_file: str
    connect_timeout: float
    read_timeout: float
    _parts: urllib.parse.SplitResult = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._parts = urllib.parse.urlsplit(self.url)

    def _token(self, ref: SecretRef) -> str | AgentError:
        # Read on every request: the agent's token may be rotated under a running process.
        try:
            with open(self.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            return AgentError(str(ref), f"cannot read agent_token_file {self.token_file}: {type(e).__name__}")
        if not token:
            return AgentError(str(ref), f"agent_token_file {self.token_file} is empty")
        return token

    def get(self, ref: SecretRef) -> Fetched | AwsSecretsError:
        token = self._token(ref)
        if isinstance(token, AgentError):
            return token
        query = {"secretId": ref.arn}
        if ref.version_id:
            query["versionId"] = ref.version_id
        elif ref.version_stage:
            query["versionStage"] = ref.version_stage
        path = (self._parts.path or "") + "/secretsmanager/get?" + urllib.parse.urlencode(query)
        host = self._parts.hostname or "127.0.0.1"
        conn: http.client.HTTPConnection
        if self._parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, self._parts.port, timeout=self.connect_timeout)
        else:
            conn = http.client.HTTPConnection(host, self._parts.port, timeout=self.connect_timeout)
        where = f"local agent {self.url}"
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(self.read_timeout)
            conn.request("GET", path, headers={TOKEN_HEADER: token})
            resp = conn.getresponse()
            status, ctype, body = resp.status, resp.getheader("Content-Type", ""), resp.read()
        except (OSError, http.client.HTTPException) as e:
            err = AgentError(str(ref), f"{where} unreachable: {type(e).__name__}", retryable=True)
            return err
        finally:
            conn.close()
        if status == 200:
            try:
                doc = json.loads(body)
            except ValueError:
                return AgentError(
                    str(ref), f"{where} answered 200 with a body that is not JSON", retryable=True
                )
            return parse_payload(ref, doc, binary_is_base64=True, api="agent")
        if "json" in ctype:
            try:
                doc = json.loads(body)
                code, message = str(doc.get("__type", "")), str(doc.get("message", ""))
            except (ValueError, AttributeError):
                code, message = "", ""
            if code:
                return error_from_code(ref, code.rsplit("#", 1)[-1], message, status, "GetSecretValue")
        # A text answer is the agent's own (Bad Token, Forwarded, connection limit...): bounded, no value.
        text = clean_aws_message(body[:200].decode("utf-8", "replace"))
        return AgentError(
            str(ref), f"{where} answered {status}: {text}", retryable=status == 429 or status >= 500
        )
