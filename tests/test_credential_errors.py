"""Credentials errors say "credentials": a key AWS does not accept is not an IAM grant problem (issue 21, 6).

moto in server mode checks signatures and IAM policies when started with ``INITIAL_NO_AUTH_ACTION_COUNT``:
the first N calls (this module's setup) are not checked, every later one is. moto answers an unknown key
with ``InvalidClientTokenId`` and a wrong secret key with ``SignatureDoesNotMatch``, as XML even for the
JSON APIs (the raw-XML-in-the-message case), and a key without a policy with ``AccessDenied``. It has no
expired tokens and never says ``UnrecognizedClientException`` (what Secrets Manager and SSM answer for an
unknown key): for those a loopback endpoint answers exactly as AWS's JSON APIs do.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from flytekitplugins_awssecrets import SecretResolutionError, get_secret_value
from flytekitplugins_awssecrets.errors import CredentialsRejectedError, SecretAccessDeniedError
from tests.conftest import ROOT, new_value
from tests.support.moto_server import MotoServer, aws_test_env, start_moto_server
from tests.support.workflows import one_secret_workflow

BIN = Path(sys.executable).parent
#: Calls made before moto starts checking: create_secret, create_user, create_access_key.
_SETUP_CALLS = 3


@pytest.fixture(scope="module")
def auth_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, str, dict[str, str]]]:
    """A moto server that checks credentials, with one secret and one user (keys) that has no policy."""
    saved = os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT")
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_SETUP_CALLS)
    try:
        server = start_moto_server(str(tmp_path_factory.mktemp("moto-auth") / "moto.log"))
    finally:
        if saved is None:
            os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT")
        else:
            os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = saved
    try:
        kw: dict[str, Any] = {
            "endpoint_url": server.url,
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        arn = boto3.client("secretsmanager", **kw).create_secret(Name="db", SecretString=new_value())["ARN"]
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="no-grants")
        key = iam.create_access_key(UserName="no-grants")["AccessKey"]
        yield server, str(arn), {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        server.stop()


def _env(monkeypatch: pytest.MonkeyPatch, url: str, key_id: str, secret: str, tmp: Path) -> dict[str, str]:
    env = aws_test_env(url, str(tmp))
    env.update(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_CACHE_TTL_SECONDS", "0")
    return env


def _only_error(e: pytest.ExceptionInfo[SecretResolutionError]) -> Any:
    (err,) = e.value.errors
    return err


def _no_markup(text: str) -> None:
    assert "<" not in text and "xmlns" not in text and "<html" not in text.lower(), text


def test_unknown_key_is_a_credentials_error_not_a_grant(
    auth_moto: tuple[MotoServer, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server, arn, _ = auth_moto
    _env(monkeypatch, server.url, "AKIAUNKNOWN000000000", "whatever", tmp_path)
    with pytest.raises(SecretResolutionError) as e:
        get_secret_value(arn)
    err = _only_error(e)
    assert isinstance(err, CredentialsRejectedError) and err.code == "InvalidClientTokenId"
    text = str(e.value)
    assert "credentials were rejected" in text and "env vars AWS_ACCESS_KEY_ID" in text
    assert "grant" not in text and "not a missing IAM permission" in text
    _no_markup(text)


def test_wrong_secret_key_is_a_credentials_error(
    auth_moto: tuple[MotoServer, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server, arn, key = auth_moto
    _env(monkeypatch, server.url, key["id"], "not-the-secret-key", tmp_path)
    monkeypatch.setenv("FLYTE_AWS_SECRETS_ACCESS_KEY_ID", key["id"])
    monkeypatch.setenv("FLYTE_AWS_SECRETS_SECRET_ACCESS_KEY", "not-the-secret-key")
    with pytest.raises(SecretResolutionError) as e:
        get_secret_value(arn)
    err = _only_error(e)
    assert isinstance(err, CredentialsRejectedError) and err.code == "SignatureDoesNotMatch"
    assert "static keys from the settings" in str(e.value)  # where they came from
    _no_markup(str(e.value))


def test_valid_key_without_permission_still_names_the_action(
    auth_moto: tuple[MotoServer, str, dict[str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server, arn, key = auth_moto
    _env(monkeypatch, server.url, key["id"], key["secret"], tmp_path)
    with pytest.raises(SecretResolutionError) as e:
        get_secret_value(arn)
    err = _only_error(e)
    assert isinstance(err, SecretAccessDeniedError) and err.action == "secretsmanager:GetSecretValue"
    assert "grant secretsmanager:GetSecretValue on" in str(e.value)
    _no_markup(str(e.value))


def test_pyflyte_run_with_an_unknown_key_says_credentials(
    auth_moto: tuple[MotoServer, str, dict[str, str]], tmp_path: Path
) -> None:
    server, arn, _ = auth_moto
    wf = one_secret_workflow(tmp_path / "creds_flow.py", arn)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLYTE_"))}
    env.update(aws_test_env(server.url, str(tmp_path)), PYTHONPATH=str(ROOT), COLUMNS="300")
    env.update(AWS_ACCESS_KEY_ID="AKIAUNKNOWN000000000", AWS_SECRET_ACCESS_KEY="whatever")
    p = subprocess.run(
        [str(BIN / "pyflyte"), "run", str(wf), "wf"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    text = " ".join((p.stdout + p.stderr).split())
    assert p.returncode != 0
    assert "credentials were rejected (InvalidClientTokenId" in text, text[-3000:]
    assert "grant secretsmanager" not in text and "<ErrorResponse" not in text


# -- what moto cannot say: a loopback endpoint answering as AWS's JSON APIs do ------------------------------


class _AwsLike(http.server.BaseHTTPRequestHandler):
    """Answers every call with the error AWS's JSON protocol sends (status, ``x-amzn-ErrorType``, body)."""

    answer: tuple[int, str, str, str] = (400, "", "application/x-amz-json-1.1", "")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, error_type, content_type, body = self.answer
        data = body.encode()
        self.send_response(status)
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def aws_like() -> Iterator[tuple[str, type[_AwsLike]]]:
    handler = type("Handler", (_AwsLike,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _json_error(code: str, message: str) -> tuple[int, str, str, str]:
    return (
        400,
        f"{code}:http://internal.amazon.com/coral/",
        "application/x-amz-json-1.1",
        json.dumps({"__type": f"com.amazon.coral.service#{code}", "message": message}),
    )


ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db"


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (
            _json_error(
                "UnrecognizedClientException", "The security token included in the request is invalid."
            ),
            "UnrecognizedClientException",
        ),
        (
            _json_error("ExpiredTokenException", "The security token included in the request is expired"),
            "ExpiredTokenException",
        ),
        (
            (
                403,
                "",
                "text/xml",
                '<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error>'
                "<Type>Sender</Type><Code>ExpiredToken</Code><Message>The security token included in the request "
                "is expired</Message></Error><RequestId>1</RequestId></ErrorResponse>",
            ),
            "ExpiredToken",
        ),
    ],
)
def test_aws_credentials_codes_say_credentials(
    aws_like: tuple[str, type[_AwsLike]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    answer: tuple[int, str, str, str],
    code: str,
) -> None:
    url, handler = aws_like
    handler.answer = answer
    _env(monkeypatch, url, "AKIAEXAMPLE000000000", "whatever", tmp_path)
    with pytest.raises(SecretResolutionError) as e:
        get_secret_value(ARN)
    err = _only_error(e)
    assert isinstance(err, CredentialsRejectedError) and err.code == code
    assert "env vars AWS_ACCESS_KEY_ID" in str(e.value) and "grant" not in str(e.value)
    _no_markup(str(e.value))


def test_an_html_page_is_never_quoted(
    aws_like: tuple[str, type[_AwsLike]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, handler = aws_like
    handler.answer = (
        403,
        "",
        "text/html",
        "<html><body><h1>403 Forbidden</h1><p>proxy says no</p></body></html>",
    )
    _env(monkeypatch, url, "AKIAEXAMPLE000000000", "whatever", tmp_path)
    with pytest.raises(SecretResolutionError) as e:
        get_secret_value(ARN)
    assert "proxy says no" not in str(e.value)
    _no_markup(str(e.value))


def test_credentials_that_cannot_load_say_so_and_name_the_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text("[profile broken]\ncredential_process = false\n")
    env = aws_test_env("http://127.0.0.1:9", str(tmp_path))  # never reached: loading fails first
    env.pop("AWS_ACCESS_KEY_ID")
    env.pop("AWS_SECRET_ACCESS_KEY")
    env.update(AWS_CONFIG_FILE=str(config), AWS_PROFILE="broken")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(SecretResolutionError) as e:
        get_secret_value(ARN)
    err = _only_error(e)
    assert isinstance(err, CredentialsRejectedError) and err.code == "CredentialRetrievalError"
    assert "could not be loaded" in str(e.value) and "profile 'broken' (AWS_PROFILE)" in str(e.value)
