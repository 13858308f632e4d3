"""A small EC2 instance metadata server (IMDSv2) on loopback, serving one role's credentials.

botocore is pointed at it with ``AWS_EC2_METADATA_SERVICE_ENDPOINT``.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class MetadataServer:
    def __init__(self, role: str, access_key: str, secret_key: str, token: str) -> None:
        self.requests: list[str] = []
        creds = {
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": access_key,
            "SecretAccessKey": secret_key,
            "Token": token,
            "Expiration": (datetime.now(UTC) + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "LastUpdated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                server.requests.append(f"PUT {self.path}")
                if self.path == "/latest/api/token":
                    self._send(200, "imds-session-token")
                else:
                    self._send(404, "")

            def do_GET(self) -> None:
                server.requests.append(f"GET {self.path}")
                if self.headers.get("X-aws-ec2-metadata-token") != "imds-session-token":
                    self._send(401, "")
                elif self.path == "/latest/meta-data/iam/security-credentials/":
                    self._send(200, role)
                elif self.path == f"/latest/meta-data/iam/security-credentials/{role}":
                    self._send(200, json.dumps(creds))
                else:
                    self._send(404, "")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def start(self) -> MetadataServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
