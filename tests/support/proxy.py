"""A loopback HTTP proxy in front of moto server that counts API calls (server side), and can add latency,
inject faults (throttling, 5xx, connection resets, answers slower than the client's time-out) and enforce
per-API request quotas with token buckets, answering ``ThrottlingException`` as AWS does.

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
    #: "denied" (an AccessDeniedException, 400) is not among the defaults: it is not a transient fault
    kinds: tuple[str, ...] = ("throttle", "5xx", "reset", "slow")
    slow_seconds: float = 3.0
    seed: int = 0
    #: only requests signed for these regions get faults (all when empty): a regional outage
    regions: tuple[str, ...] = ()
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class TokenBucket:
    """``rate`` requests per second, up to ``burst`` at once (default: one second's worth, at least 1)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


#: AWS's per-account, per-region request quotas (requests/s) of the read APIs, as buckets: the SSM read
#: APIs share one quota (standard throughput). Scale them with :func:`scaled_quotas`.
AWS_QUOTAS: dict[tuple[str, ...], float] = {
    ("BatchGetSecretValue",): 100.0,
    ("GetSecretValue",): 10_000.0,
    ("DescribeSecret",): 40_000.0,
    ("GetParameter", "GetParameters", "GetParametersByPath"): 40.0,
}


def scaled_quotas(scale: float) -> dict[tuple[str, ...], float]:
    """AWS's quotas divided by ``scale`` (1:25 gives BatchGetSecretValue 4/s, GetSecretValue 400/s)."""
    return {ops: rate / scale for ops, rate in AWS_QUOTAS.items()}


def throttling_answer(op: str) -> tuple[int, dict[str, str], bytes]:
    """What AWS answers a throttled request of the JSON-protocol services (Secrets Manager and SSM are both
    ``awsJson1_1``): HTTP 400, ``x-amzn-ErrorType`` and ``{"__type": "ThrottlingException", ...}``."""
    body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "x-amzn-ErrorType": "ThrottlingException",
        "x-amzn-RequestId": f"{random.getrandbits(64):016x}-{op}",
    }
    return 400, headers, body


class Replay:
    """Answers to read requests, recorded from moto and replayed: the stand-in for an endpoint that serves
    reads in parallel (moto serves one request at a time, a few ms of CPU each, so 40 concurrent reads
    queue there as they would not on AWS).

    A request is answered from the record when the same operation with the same body (e.g.
    ``{"SecretId": ARN}``) was answered 200 before; otherwise it goes to moto and its answer is recorded.
    Only ``ops`` are replayed: anything that writes always reaches moto.
    """

    READS = ("GetSecretValue", "BatchGetSecretValue", "DescribeSecret", "GetParameter", "GetParameters")

    def __init__(self, ops: tuple[str, ...] = READS) -> None:
        self.ops = frozenset(ops)
        self.replayed = 0
        self._answers: dict[tuple[str, bytes], tuple[int, list[tuple[str, str]], bytes]] = {}
        self._lock = threading.Lock()

    def answer(self, op: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes] | None:
        if op not in self.ops:
            return None
        with self._lock:
            got = self._answers.get((op, body))
            if got is not None:
                self.replayed += 1
            return got

    def record(self, op: str, body: bytes, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        if op in self.ops and status == 200:
            keep = [(k, v) for k, v in headers if k.lower() not in _HOP_HEADERS]
            with self._lock:
                self._answers[(op, body)] = (status, keep, data)


_HOP_HEADERS = ("content-length", "transfer-encoding", "connection", "server", "date")


class CountingProxy:
    """Forward to ``upstream`` (``http://127.0.0.1:PORT``); count operations by ``X-Amz-Target``/Action.

    ``quotas`` maps a group of operations to the requests per second they may make together (a token
    bucket per group, burst of one second); a request over quota is answered ``ThrottlingException`` and
    counted in ``throttled``, never forwarded.
    """

    def __init__(
        self,
        upstream: str,
        latency: float = 0.0,
        faults: Faults | None = None,
        quotas: dict[tuple[str, ...], float] | None = None,
    ) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.latency = latency
        self.faults = faults or Faults()
        self.buckets: dict[str, TokenBucket] = {}
        for ops, rate in (quotas or {}).items():
            bucket = TokenBucket(rate)
            for op in ops:
                self.buckets[op] = bucket
        self.throttled: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        #: calls by (operation, region the request was signed for)
        self.by_region: Counter[tuple[str, str]] = Counter()
        #: (operation, access key id that signed it) for every request, and STS request bodies
        self.signed: list[tuple[str, str]] = []
        self.sts_bodies: list[str] = []
        self.faulted: Counter[str] = Counter()
        #: operation -> (status, content type, body): answered instead of moto (a proxy or a wrong endpoint)
        self.canned: dict[str, tuple[int, str, bytes]] = {}
        #: round trips (of ``latency`` each) that a new connection costs before its first request is
        #: answered: TCP's handshake plus TLS's (2 for TLS 1.3 over TCP, 3 for TLS 1.2), as a real endpoint
        #: charges them; 0 (loopback, plain HTTP) by default
        self.connect_rtts = 0.0
        #: connections accepted (each paid ``connect_rtts``)
        self.connections = 0
        #: when set, the read operations it names are answered from answers recorded from moto (see
        #: :class:`Replay`): concurrently, with no moto CPU per request, as AWS serves reads
        self.replay: Replay | None = None
        self._lock = threading.Lock()
        # moto listens with a backlog of 128: a fleet's hundreds of simultaneous requests would have their
        # SYNs dropped and wait for TCP's 1 s, 3 s, 7 s retransmits, which AWS's endpoints never add. They
        # queue here instead (moto serves one request at a time anyway).
        self._upstream_slots = threading.BoundedSemaphore(32)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy.connections += 1
                if proxy.connect_rtts and proxy.latency:
                    time.sleep(proxy.connect_rtts * proxy.latency)  # the handshakes of a new connection

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
                scope = (
                    auth.split("Credential=")[1].split(",")[0].split("/") if "Credential=" in auth else [""]
                )
                akid, region = scope[0], (scope[2] if len(scope) > 2 else "")
                with proxy._lock:
                    proxy.calls[op] += 1
                    proxy.by_region[(op, region)] += 1
                    proxy.signed.append((op, akid))
                    if op.startswith("AssumeRole"):
                        proxy.sts_bodies.append(body.decode("latin-1"))
                    fault = None
                    in_scope = not proxy.faults.regions or region in proxy.faults.regions
                    if in_scope and proxy.faults.rate and proxy.faults.rng.random() < proxy.faults.rate:
                        fault = proxy.faults.rng.choice(proxy.faults.kinds)
                        proxy.faulted[fault] += 1
                if proxy.latency:
                    time.sleep(proxy.latency)
                bucket = proxy.buckets.get(op)
                if fault is None and bucket is not None and not bucket.take():
                    with proxy._lock:
                        proxy.throttled[op] += 1
                    self._answer(*throttling_answer(op))
                    return
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
                if fault == "throttle":
                    self._answer(*throttling_answer(op))
                    return
                if fault == "denied":
                    payload = json.dumps(
                        {"__type": "AccessDeniedException", "message": "injected: not authorized"}
                    ).encode()
                    self._answer(400, {"Content-Type": "application/x-amz-json-1.1"}, payload)
                    return
                if fault == "5xx":
                    payload = json.dumps({"__type": "ServiceUnavailable", "message": "injected"}).encode()
                    self._answer(503, {"Content-Type": "application/x-amz-json-1.1"}, payload)
                    return
                replay = proxy.replay
                recorded = replay.answer(op, body) if replay is not None else None
                if recorded is not None:
                    self._answer(recorded[0], dict(recorded[1]), recorded[2])
                    return
                # Host stays as the client sent it: it is part of the SigV4 signature.
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                with proxy._upstream_slots:
                    conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                if replay is not None:
                    replay.record(op, body, resp.status, resp.getheaders(), data)
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

            def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        class QuietServer(ThreadingHTTPServer):
            # A fleet of processes connects at once: the default backlog of 5 would drop SYNs, and each
            # dropped one costs the client a 1 s retransmit that no AWS endpoint would add.
            request_queue_size = 256

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
            self.connections = 0
            self.calls.clear()
            self.by_region.clear()
            self.signed.clear()
            self.sts_bodies.clear()
            self.faulted.clear()
            self.throttled.clear()

    def keys_for(self, op: str) -> list[str]:
        return [k for o, k in self.signed if o == op]

    def total(self) -> int:
        return sum(self.calls.values())
