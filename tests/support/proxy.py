"""A loopback HTTP proxy in front of moto server that counts API calls (server side), and can add latency
and inject faults (throttling, 5xx, connection resets, answers slower than the client's time-out).

boto3 is pointed at the proxy with ``AWS_ENDPOINT_URL``; every request is forwarded to moto unchanged.
Used by tests (call counts, fault injection) and by the benchmarks (realistic latency).
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Faults:
    rate: float = 0.0  # probability that a request gets a fault
    kinds: tuple[str, ...] = ("throttle", "5xx", "reset", "slow")
    slow_seconds: float = 3.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class CountingProxy:
    """Forward to ``upstream`` (``http://127.0.0.1:PORT``); count operations by ``X-Amz-Target``/Action."""

    def __init__(self, upstream: str, latency: float = 0.0, faults: Faults | None = None) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.latency = latency
        self.faults = faults or Faults()
        self.calls: Counter[str] = Counter()
        #: (operation, access key id that signed it) for every request, and STS request bodies
        self.signed: list[tuple[str, str]] = []
        self.sts_bodies: list[str] = []
        self.faulted: Counter[str] = Counter()
        #: operation -> (status, content type, body): answered instead of moto (a proxy or a wrong endpoint)
        self.canned: dict[str, tuple[int, str, bytes]] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _op(self, body: bytes) -> str:
                target = self.headers.get("X-Amz-Target")
                if target:
                    return target.split(".")[-1]
                if b"Action=" in body:
                    for part in body.decode("latin-1").split("&"):
                        if part.startswith("Action="):
                            return part[len("Action=") :]
                return f"{self.command} {self.path.split('?')[0]}"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                op = self._op(body)
                auth = self.headers.get("Authorization", "")
                akid = auth.split("Credential=")[1].split("/")[0] if "Credential=" in auth else ""
                with proxy._lock:
                    proxy.calls[op] += 1
                    proxy.signed.append((op, akid))
                    if op.startswith("AssumeRole"):
                        proxy.sts_bodies.append(body.decode("latin-1"))
                    fault = None
                    if proxy.faults.rate and proxy.faults.rng.random() < proxy.faults.rate:
                        fault = proxy.faults.rng.choice(proxy.faults.kinds)
                        proxy.faulted[fault] += 1
                if proxy.latency:
                    time.sleep(proxy.latency)
                canned = proxy.canned.get(op)
                if canned is not None:
                    status, ctype, data = canned
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if fault == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault == "slow":
                    time.sleep(proxy.faults.slow_seconds)
                if fault in ("throttle", "5xx"):
                    status = 400 if fault == "throttle" else 503
                    code = "ThrottlingException" if fault == "throttle" else "ServiceUnavailable"
                    payload = json.dumps({"__type": code, "message": "injected"}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                # Host stays as the client sent it: it is part of the SigV4 signature.
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "server",
                        "date",
                    ):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that time out close their end mid-answer; that is the point of "slow"

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.signed.clear()
            self.sts_bodies.clear()
            self.faulted.clear()

    def keys_for(self, op: str) -> list[str]:
        return [k for o, k in self.signed if o == op]

    def total(self) -> int:
        return sum(self.calls.values())
