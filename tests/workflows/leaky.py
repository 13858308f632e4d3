"""Workflows that misbehave on purpose, for the security tests. ARNs come from the environment."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

from flytekit import Secret, current_context, task, workflow

from flytekitplugins_awssecrets import aws_secret

ARN = os.environ.get("LEAKY_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:leaky/unset")
REQ = aws_secret(ARN)
FILE_REQ = aws_secret(ARN, mount_requirement=Secret.MountType.FILE)


@dataclass
class Report:
    name: str
    detail: str


@task(secret_requests=[REQ])
def returns_secret() -> str:
    return "token=" + current_context().secrets.get(REQ.group, REQ.key)


@task(secret_requests=[REQ])
def returns_b64_in_dataclass() -> Report:
    v = current_context().secrets.get(REQ.group, REQ.key)
    return Report(name="r", detail="blob:" + base64.b64encode(("xx" + v + "yy").encode()).decode())


@task(secret_requests=[REQ])
def logs_secret() -> int:
    v = current_context().secrets.get(REQ.group, REQ.key)
    logging.getLogger("user.code").warning("connecting with %s", v)
    logging.getLogger("flytekit").warning(f"flytekit saw {v}")
    return len(v)


@task(secret_requests=[FILE_REQ])
def holds_file(marker: str) -> int:
    path = current_context().secrets.get_secrets_file(FILE_REQ.group, FILE_REQ.key)
    with open(marker, "w") as f:
        f.write(path)
    time.sleep(120)
    return 0


@workflow
def leak_wf() -> str:
    return returns_secret()


@workflow
def log_wf() -> int:
    return logs_secret()


@workflow
def hold_wf(marker: str) -> int:
    return holds_file(marker=marker)


# --- issue 13: every way a value could leave a task ------------------------------------------------------------

JSON_ARN = os.environ.get("LEAKY_JSON_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:leaky/json")
JSON_REQ = aws_secret(JSON_ARN)


def _get(req: Secret) -> str:
    return str(current_context().secrets.get(req.group, req.key))


class ApiError(Exception):
    """Like requests' errors: the text comes from an attribute, not from args."""

    def __init__(self, url: str) -> None:
        super().__init__("request failed")
        self.url = url

    def __str__(self) -> str:
        return f"GET {self.url} failed"


@task(secret_requests=[REQ])
def raises_secret() -> int:
    v = _get(REQ)
    try:
        try:
            raise ApiError(f"https://api.example/x?api_key={quote_plus(v)}")
        except ApiError as inner:
            raise ValueError(v.encode()) from inner
    except ValueError:
        err = RuntimeError(f"could not connect with password={v}")
        err.add_note(f"token (base64) {base64.b64encode(v.encode()).decode()}")
        raise err  # noqa: B904 - __context__ is the ValueError, whose __cause__ is the ApiError
    return len(v)


@task(secret_requests=[JSON_REQ])
def returns_json_field() -> str:
    return "pw:" + json.loads(_get(JSON_REQ))["password"]


class Slotted:
    __slots__ = ("note",)

    def __init__(self, note: str) -> None:
        self.note = note


@task(secret_requests=[REQ])
def returns_slotted() -> Slotted:
    return Slotted("nothing secret, but nobody can tell once it is pickled")


_FORMS = {
    "percent": lambda v: quote(v, safe=""),
    "percent_plus": quote_plus,
    "hex": lambda v: v.encode().hex(),
    "json": lambda v: json.dumps({"key": v}),
    "repr": lambda v: repr([v]),
    "line": lambda v: "line: " + v.splitlines()[1],
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
}


@task(secret_requests=[REQ])
def returns_encoded() -> str:
    return _FORMS[os.environ["LEAKY_FORM"]](_get(REQ))


@task(secret_requests=[FILE_REQ])
def reads_file() -> int:
    path = current_context().secrets.get_secrets_file(FILE_REQ.group, FILE_REQ.key)
    with open(path) as f:
        return len(f.read())


@workflow
def raise_wf() -> int:
    return raises_secret()


@workflow
def file_wf() -> int:
    return reads_file()
