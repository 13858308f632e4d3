"""Clients for ``pyflyte-awssecrets serve``, written from the protocol descriptions only (issue 8), never from
the server's code, so the tests check the protocol rather than the implementation against itself:

* Secret Agent: every message is an 8-byte header (big-endian magic 0x51DEC1CC, big-endian uint32 body
  length) and a JSON body; request ``{"Resource": ..., "SecretKey": ...}``, answer ``{"SecretValue":
  base64}`` or ``{"Error": ...}``. What a client does with the answer is what Aerospike's own C client
  (aerospike/secret-agent-client-c, ``sa_parse_json``) does: an ``Error`` fails; an absent or empty
  ``SecretValue`` fails; trailing whitespace is stripped, then the rest must be strict base64 (no embedded
  whitespace), which is decoded. Answers above 100 KiB are refused, as that client does.
* AWS Secrets Manager Agent: ``GET /secretsmanager/get?secretId=...`` with the token header
  ``X-Aws-Parameters-Secrets-Token``.

Also a way to run the server as a separate process, waiting for its ready file.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MAGIC = 0x51DEC1CC
#: Aerospike's C client: SA_MAX_RECV_JSON_SIZE and the whitespace it strips from the end of SecretValue.
MAX_ANSWER = 100 * 1024
TRAILING_WHITESPACE = " \t\n\r\f\v"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
SERVE_BIN = str(Path(sys.executable).parent / "pyflyte-awssecrets")
ROOT = Path(__file__).resolve().parent.parent.parent


def frame(body: bytes, *, magic: int = MAGIC, length: int | None = None) -> bytes:
    return struct.pack(">II", magic, len(body) if length is None else length) + body


class AgentClient:
    """One connection speaking the Secret Agent protocol (TCP, TLS over TCP, or a Unix socket)."""

    def __init__(
        self,
        *,
        port: int | None = None,
        unix: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> None:
        if unix is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(unix)
        else:
            assert port is not None
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def _read_exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def read_frame(self) -> dict[str, Any]:
        magic, length = struct.unpack(">II", self._read_exactly(8))
        assert magic == MAGIC, f"server answered with magic 0x{magic:08X}"
        assert length <= MAX_ANSWER, f"answer of {length} bytes: Aerospike's client refuses it"
        doc = json.loads(self._read_exactly(length))
        assert isinstance(doc, dict)
        return doc

    def request(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.send_raw(frame(json.dumps(doc).encode()))
        return self.read_frame()

    def is_closed_by_server(self) -> bool:
        """True when the server has closed the connection (EOF, or a reset)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def value_of(answer: dict[str, Any]) -> bytes:
    """The secret an Aerospike client gets from an answer (fails the test, without the value, otherwise)."""
    assert "Error" not in answer, f"expected a value, got error: {answer.get('Error')}"
    payload = answer.get("SecretValue")
    assert isinstance(payload, str), "no SecretValue string in the answer"
    payload = payload.rstrip(TRAILING_WHITESPACE)
    assert payload, "empty or whitespace-only secret"
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise AssertionError("SecretValue is not strict base64: Aerospike's client fails") from None


def http_get(
    port: int,
    path: str,
    token: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    tls: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection("localhost", port, context=tls, timeout=timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    if token is not None:
        h[TOKEN_HEADER] = token
    try:
        conn.request(method, path, headers=h)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def raw_http(port: int, data: bytes, timeout: float = 10.0, *, half_close: bool = False) -> bytes:
    """Send bytes as they are (malformed requests) and read until the server closes.

    ``half_close`` says the client is done sending (FIN), as a client that gives up mid-request does."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


# --- the server process ---------------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without AWS / plugin / serve settings, plus boto3 -> moto (or the
    counting proxy, whichever the test's ``AWS_ENDPOINT_URL`` points at), plus ``extra``."""
    drop = ("AWS_", "FLYTE_AWS_SECRETS_", "PYFLYTE_AWSSECRETS_SERVE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    if "AWS_ENDPOINT_URL" not in env:
        # Never let a server under test look for real AWS: the test must request ``aws_env``.
        raise RuntimeError("AWS_ENDPOINT_URL is not set: request the aws_env fixture")
    return env


class ServeProcess:
    """``pyflyte-awssecrets serve ARGS`` in its own process; stderr captured to a file."""

    def __init__(self, args: Iterable[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.ready_file = tmp / f"ready-{time.monotonic_ns()}.json"
        self.log_path = tmp / f"serve-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.args = [SERVE_BIN, "serve", *args, "--ready-file", str(self.ready_file)]
        self.proc = subprocess.Popen(
            self.args, env=env or clean_env(), stdout=self._log, stderr=subprocess.STDOUT
        )
        self.bound: dict[str, Any] = {}

    def wait_ready(self, timeout: float = 30.0) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                self.bound = json.loads(self.ready_file.read_text())
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"serve not ready within {timeout} s:\n{self.log()[-3000:]}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def port(self, front: str) -> int:
        return int(str(self.bound[front]).rsplit(":", 1)[1])

    @property
    def sa_port(self) -> int:
        return self.port("secret_agent")

    @property
    def http_port(self) -> int:
        return self.port("http")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise
        finally:
            self._log.close()

    def assert_log_clean(self, values: Iterable[str]) -> None:
        """No secret value (nor its base64) in the server's output."""
        text = self.log()
        for v in values:
            if len(v) < 6:
                continue
            assert v not in text, "a secret value appears in the server log"
            assert base64.b64encode(v.encode()).decode() not in text, "a base64 secret value is in the log"


def agent_config(
    path: Path,
    resources: dict[str, str],
    endpoint: str | None = "127.0.0.1:0",
    *,
    convert_to_base64: bool | None = True,
    additions: dict[str, Any] | None = None,
    **service: Any,
) -> Path:
    """A Secret Agent configuration file (the format of seed 004) with the given resources.

    ``convert_to_base64`` None leaves the key out (Aerospike's default, false); ``endpoint`` None leaves
    ``service.tcp`` out; ``service`` adds sections (``uds={"socket-path": ...}``); ``additions`` is the
    project's ``x-awssecrets`` section."""
    import yaml

    svc: dict[str, Any] = {"tcp": {"endpoint": endpoint}} if endpoint is not None else {}
    svc.update(service)
    aws: dict[str, Any] = {"region": "us-east-1", "resources": resources}
    if convert_to_base64 is not None:
        aws["convert-to-base64"] = convert_to_base64
    doc: dict[str, Any] = {"service": svc, "secret-manager": {"aws": aws}, "log": {"level": "info"}}
    if additions is not None:
        doc["x-awssecrets"] = additions
    path.write_text(yaml.safe_dump(doc))
    return path


class Hidden(dict):  # type: ignore[type-arg]
    """Test data holding secret values: pytest shows fixture arguments of a failing test with repr()."""

    def __repr__(self) -> str:
        return f"Hidden({sorted(self)})"


class HiddenStr(str):
    """A secret string (a token) that pytest shows by fingerprint, not by value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"HiddenStr(len={len(self)})"


class HiddenBytes(bytes):
    """Raw request bytes holding a token: pytest shows a failing call's arguments by repr()."""

    def __repr__(self) -> str:
        return f"HiddenBytes(len={len(self)})"


def self_signed(tmp: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for localhost and 127.0.0.1, and its key, written as
    ``<name>-cert.pem`` and ``<name>-key.pem`` in ``tmp`` (cryptography comes with moto)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}-cert.pem", tmp / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path
