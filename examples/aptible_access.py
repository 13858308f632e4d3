"""Just-in-time Aptible access: request, approve, escalate, expire (Sym's Aptible flow).

The workflow names a strategy; everything else -- the organization, the bot's credentials, the roles, the
longest grant, who must approve -- is in the connector's operator file (``examples/aptible-operator.yaml``
is one to start from). On a cluster, the connector grants; requesters need no AWS rights. A local run
(the connector in-process, with the same file and checks) reads the bot's credentials with your AWS
credentials, so it is for operators who may read them, and only where their copy of the operator file says
``local_runs: true`` for the strategy::

    export FLYTE_AWS_SECRETS_APTIBLE_OPERATOR_FILE=$PWD/examples/aptible-operator.yaml
    pyflyte run examples/aptible_access.py aptible_access_flow \\
        --email ada@example.com --target main-aptible-admin-role --duration 30m --reason "INC-42"

With a strategy that requires approval, the run prints the request id and waits; an approver (someone
else, allowed ``kms:Sign`` on the strategy's key) runs the printed ``pyflyte-awssecrets aptible approve <id> --operator-file <file>``. With
``approval: {required: false}`` a local run asks ``[y/N]`` at the terminal instead (No unless you type y).
To try it without a real Aptible, use the test fake (``tests/support/fake_aptible.py``, see docs/aptible.md).

On a cluster the grant is made by the ``pyflyte serve connector`` deployment (docs/aptible.md).
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta

from flytekit import workflow

from flytekitplugins_awssecrets.aptible import AccessGrant, AptibleAccessTask

aptible_access = AptibleAccessTask(
    name="aptible_access", strategy=os.environ.get("APTIBLE_STRATEGY", "main-aptible-strategy")
)


@workflow
def aptible_access_flow(
    email: str,
    duration: timedelta,  # no default: pyflyte run cannot show a timedelta default
    target: str = "main-aptible-admin-role",
    reason: str = "",
) -> AccessGrant:
    # The approval is enforced by the connector (a KMS-signed approval), not by a node of this workflow.
    return aptible_access(email=email, target=target, duration=duration, reason=reason)


# Show the audit trail on the terminal when run locally; on a cluster, route this logger to your log pipeline.
_audit = logging.getLogger("flytekitplugins_awssecrets.aptible.audit")
if not _audit.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("AUDIT %(message)s"))
    _audit.addHandler(_handler)
    _audit.setLevel(logging.INFO)
