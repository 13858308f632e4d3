"""Check the operator file when the connector starts: ``pyflyte serve connector --modules <this module>``.

Importing this module loads and validates the file named by ``FLYTE_AWS_SECRETS_APTIBLE_OPERATOR_FILE``;
a missing or malformed file stops the process at start with one paragraph naming the file and the field,
instead of failing the first request hours later.
"""

from __future__ import annotations

import sys

from flytekitplugins_awssecrets.aptible.errors import OperatorConfigError
from flytekitplugins_awssecrets.aptible.operator import load_operator

__all__: list[str] = []

try:
    _config = load_operator()
except OperatorConfigError as _e:
    sys.stderr.write(f"aptible_access connector not started: {_e}\n")
    sys.stderr.flush()
    raise SystemExit(2) from None
sys.stderr.write(
    f"aptible_access: operator file loaded ({len(_config.strategies)} strategies: "
    f"{', '.join(s.name for s in _config.strategies)})\n"
)
