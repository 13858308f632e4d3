"""Endpoints that never answer, on loopback: what a wrong ``AWS_ENDPOINT_URL`` looks like to botocore.

* :func:`refused_url`: a port nothing listens on (the connection is refused at once);
* :class:`Blackhole`: a server that accepts connections, reads what is sent and never answers, so every
  request ends in botocore's read time-out. It counts the connections it accepted: one per attempt, which is
  how a test asserts the configured attempt count server side instead of timing anything.
"""

from __future__ import annotations

import socket
import threading

from tests.support.moto_server import free_port


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


class Blackhole:
    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self.connections = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Blackhole:
        self._thread.start()
        return self

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
                self._held.append(conn)  # kept open, never answered

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for c in self._held:
                c.close()
        self._sock.close()
