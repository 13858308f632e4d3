"""A workflow module that turns the root logger to DEBUG at import, as many scripts do, and logs a secret's
JSON field every way logging allows (message, arguments, exception, ``extra=``)."""

from __future__ import annotations

import json
import logging
import os
from urllib.parse import quote

from flytekit import current_context, task, workflow

from flytekitplugins_awssecrets import aws_secret

logging.basicConfig(level=logging.DEBUG)

REQ = aws_secret(os.environ.get("LEAKY_JSON_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"))


@task(secret_requests=[REQ])
def logs_everything() -> int:
    doc = current_context().secrets.get(REQ.group, REQ.key)
    pw = json.loads(doc)["password"]
    flytekit_log = logging.getLogger("flytekit")
    flytekit_log.warning("connecting", extra={"dsn": f"postgres://app:{pw}@db/x", "ctx": {"pw": pw}})
    logging.getLogger("user.code").warning("quoted %s", quote(pw, safe=""))
    logging.getLogger("user.code").info("whole document %r", doc)
    try:
        raise ValueError(f"bad password {pw}")
    except ValueError:
        flytekit_log.exception("failed")
    logging.getLogger("user.code").debug("user debug line visible")
    return 1


@workflow
def debug_wf() -> int:
    return logs_everything()
