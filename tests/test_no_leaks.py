"""Nothing secret leaves a task (issue 13): exceptions, JSON fields, debug logs, log extras, encodings,
pickled outputs, FILE mounts on disk, required tags from every source, empty payloads, deep nesting.

Each case runs the way a user runs it: the pod path (``pyflyte-execute`` writing ``error.pb`` and the pod
log), ``pyflyte run`` locally, or a task called in-process. Every check searches for the value *and* its
encodings (``tests/support/leakcheck.encoded_forms``), and failures show fingerprints only.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flytekit import Secret, current_context, task

from flytekitplugins_awssecrets import (
    FileMountOnDiskError,
    MissingTagError,
    SecretFetchError,
    SecretLeakError,
    SecretNotJsonError,
    SecretResolutionError,
    UninspectableOutputError,
    aws_secret,
    get_secret_value,
    split_arn,
)
from tests.conftest import ROOT, fingerprint, new_value, remember
from tests.support.leakcheck import encoded_forms
from tests.support.pod import run_pod, serialize_tasks
from tests.test_security import _env

BIN = Path(sys.executable).parent


def _leaked_forms(text: str, *values: str) -> list[str]:
    """Fingerprints of the forms of ``values`` found in ``text`` (never the forms themselves)."""
    return sorted(fingerprint(f) for v in values for f in encoded_forms(v, min_len=4) if f in text)


def _pem() -> str:
    """A multi-line value with characters that every encoding changes."""
    body = [new_value("k") + "/+=", new_value("k") + " &?%"]
    v = "-----BEGIN TEST KEY-----\n" + "\n".join(body) + "\n-----END TEST KEY-----\n"
    remember(v)
    for line in body:
        remember(line)
    return v


@pytest.fixture(scope="module")
def pod_specs(tmp_path_factory: pytest.TempPathFactory, aws_env: dict[str, str]) -> dict[str, Any]:
    """The test workflows serialised once, as ``pyflyte serialize`` would for a cluster."""
    folder = tmp_path_factory.mktemp("specs") / "spec"
    return serialize_tasks("tests.workflows", folder, _env(aws_env), "*_1.pb")


def _pod(
    spec: Any, tmp: Path, env: dict[str, str], python: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], Any]:
    from flyteidl.core import errors_pb2

    p = run_pod(spec, tmp, env, python=python)
    doc = None
    if (tmp / "out" / "error.pb").exists():
        doc = errors_pb2.ErrorDocument()
        doc.ParseFromString((tmp / "out" / "error.pb").read_bytes())
    return p, doc


def _spec(specs: dict[str, Any], name: str) -> Any:
    (key,) = [k for k in specs if k.endswith("." + name)]
    return specs[key]


def _pyflyte_run(env: dict[str, str], path: str, wf: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "pyflyte"), "run", path, wf],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sensitive_set_holds_leaves_lines_and_encodings_of_min_length() -> None:
    from flytekitplugins_awssecrets.sensitive import MIN_LEN, SensitiveSet

    pw, line = new_value(), new_value()
    doc = json.dumps({"user": "app", "port": 5432, "db": {"password": pw}, "pem": f"-----B-----\n{line}\n"})
    sens = SensitiveSet.build([("ref", doc)])
    assert MIN_LEN == 4 and sens.references == ["ref"]
    for shown in (pw, line, pw.encode().hex(), json.dumps(f"-----B-----\n{line}\n")):
        found = sens.contains(f"x{shown}y")
        assert found, fingerprint(shown)
    assert not sens.contains("app 5432")  # shorter than the minimum, and numbers are not leaves
    pem = SensitiveSet.build([("ref", f"-----BEGIN PRIVATE KEY-----\n{line}\n-----END PRIVATE KEY-----\n")])
    found = pem.contains(line)
    assert found and not pem.contains("-----BEGIN PRIVATE KEY-----")  # armor is public, the body is not
    assert sens.hide_keys("o0['password']") == "o0[<key>]"
    assert repr(sens).startswith("SensitiveSet(") and pw not in repr(sens)


# --- exceptions ------------------------------------------------------------------------------------------------


def test_pod_exception_is_scrubbed_in_error_pb_and_pod_log(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, pod_specs: dict[str, Any], tmp_path: Path
) -> None:
    v = new_value() + "/p+w d&x"
    arn, _ = secrets_factory.secret(f"{unique}/exc", v)
    p, doc = _pod(_spec(pod_specs, "raises_secret"), tmp_path, _env(aws_env, LEAKY_ARN=arn))
    assert doc is not None, p.stderr[-3000:]
    msg = doc.error.message
    assert _leaked_forms(msg, v) == [] and _leaked_forms(p.stdout + p.stderr, v) == []
    # Still useful: the type, the message around the value, the chain and the frame that raised.
    assert "RuntimeError: could not connect with password=[REDACTED]" in msg
    assert "ValueError" in msg and "ApiError" in msg and "api_key=[REDACTED]" in msg
    assert "in raises_secret\n" in msg and "token (base64) [REDACTED]" in msg
    assert "Exception when executing task" in p.stdout + p.stderr


def test_local_exception_is_scrubbed_in_pyflyte_run(
    aws_env: dict[str, str], secrets_factory: Any, unique: str
) -> None:
    v = new_value() + "/p+w d&x"
    arn, _ = secrets_factory.secret(f"{unique}/exc-local", v)
    p = _pyflyte_run(_env(aws_env, LEAKY_ARN=arn), "tests/workflows/leaky.py", "raise_wf")
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert _leaked_forms(out, v) == []
    assert "could not connect with password=[REDACTED]" in out


def test_exception_scrubbing_keeps_type_and_covers_every_field() -> None:
    from flytekitplugins_awssecrets.sensitive import SensitiveSet, scrub_exception

    v = new_value()
    sens = SensitiveSet.build([("ref", v)])

    class Computed(Exception):
        def __str__(self) -> str:  # text that no attribute holds
            return "computed " + "".join(reversed(v[::-1]))

    group = ExceptionGroup("several", [KeyError(v), OSError(2, "No such file", f"/run/{v}")])
    group.add_note(f"note {v}")
    try:
        try:
            raise Computed()
        except Computed as c:
            raise group from c
    except ExceptionGroup as e:
        caught = e
    scrub_exception(caught, sens)
    import traceback

    text = "".join(traceback.format_exception(caught))
    assert _leaked_forms(text, v) == []
    assert isinstance(caught.__cause__, Computed) and type(caught.__cause__).__name__ == "Computed"
    assert str(caught.__cause__) == "computed [REDACTED]"
    assert isinstance(caught.exceptions[1], OSError) and caught.exceptions[1].filename == "/run/[REDACTED]"
    assert caught.__traceback__ is not None and "several" in text and "No such file" in text


def test_requests_connection_error_is_scrubbed(secrets_factory: Any, unique: str) -> None:
    """``requests`` puts the URL, query string and all, into its ConnectionError (and urllib3's chain)."""
    import traceback
    from urllib.parse import quote

    import requests

    v = new_value() + "/+ &"
    arn, _ = secrets_factory.secret(f"{unique}/requests", v)
    req = aws_secret(arn)

    @task(secret_requests=[req])
    def call_api() -> int:
        key = current_context().secrets.get(req.group, req.key)
        # Port 9 on loopback (discard): refused at once, nothing leaves the machine.
        return requests.get(f"http://127.0.0.1:9/x?api_key={quote(key, safe='')}", timeout=2).status_code

    with pytest.raises(requests.exceptions.ConnectionError) as e:
        call_api()
    text = "".join(traceback.format_exception(e.value)) + repr(e.value.args)
    assert _leaked_forms(text, v) == []
    assert "api_key=[REDACTED]" in text and "127.0.0.1" in text


def _exotic_values() -> tuple[str, str]:
    """A long non-ASCII value (pydantic truncates it, its bytes repr escapes it) and a 5-character one."""
    v = new_value("pä") + "-ünï"
    short = new_value("s")[-5:]
    remember(v)
    remember(short)
    return v, short


def _exotic_leaks(text: str, v: str, short: str) -> list[str]:
    raw = v.encode()
    forms = {
        "bytes repr": repr(raw)[2:-1],
        "x escapes": "".join(f"\\x{b:02x}" for b in raw),
        "u escapes": "".join(f"\\u{ord(c):04x}" for c in v),
        "pydantic's truncated head": repr(v)[1:24],
        "pydantic's truncated bytes head": repr(raw)[2:24],
        "basic auth": base64.b64encode(f"svc:{short}".encode()).decode(),
    }
    return [name for name, f in forms.items() if f in text] + _leaked_forms(text, v, short)


def test_pod_exotic_exceptions_are_scrubbed_or_replaced(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, pod_specs: dict[str, Any], tmp_path: Path
) -> None:
    """pydantic ValidationError (str and bytes input), PydanticCustomError, a custom __repr__ and a Basic
    header of a 5-character password, in an ExceptionGroup caused by another ValidationError; pod log at
    DEBUG."""
    v, short = _exotic_values()
    arn, _ = secrets_factory.secret(f"{unique}/exotic", v)
    short_arn, _ = secrets_factory.secret(f"{unique}/short", short)
    env = _env(
        aws_env,
        LEAKY_ARN=arn,
        SHORT_ARN=short_arn,
        FLYTE_SDK_LOGGING_LEVEL="10",
        FLYTE_SDK_RICH_TRACEBACKS="0",
    )
    p, doc = _pod(_spec(pod_specs, "raises_exotic"), tmp_path, env)
    assert doc is not None, p.stderr[-3000:]
    msg = doc.error.message
    assert _exotic_leaks(msg, v, short) == [] and _exotic_leaks(p.stdout + p.stderr, v, short) == []
    # The stand-ins keep the class names, what failed and where; the inputs are gone.
    assert "pydantic_core._pydantic_core.ValidationError: 1 validation error for Port" in msg
    assert "input omitted: it held a secret" in msg and "PydanticCustomError: refused [REDACTED]" in msg
    assert "several failures (5 sub-exceptions)" in msg and "Authorization: Basic [REDACTED]" in msg
    assert "in raises_exotic" in msg and "direct cause" in msg
    assert "calling with Authorization: Basic [REDACTED]" in p.stdout + p.stderr  # the DEBUG line


def test_pyflyte_run_exotic_exceptions_are_scrubbed_or_replaced(
    aws_env: dict[str, str], secrets_factory: Any, unique: str
) -> None:
    v, short = _exotic_values()
    arn, _ = secrets_factory.secret(f"{unique}/exotic-local", v)
    short_arn, _ = secrets_factory.secret(f"{unique}/short-local", short)
    env = _env(
        aws_env,
        LEAKY_ARN=arn,
        SHORT_ARN=short_arn,
        FLYTE_SDK_LOGGING_LEVEL="10",
        FLYTE_SDK_RICH_TRACEBACKS="0",
    )
    p = _pyflyte_run(env, "tests/workflows/exotic.py", "exotic_wf")
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "ValidationError" in out, out[-3000:]
    assert _exotic_leaks(out, v, short) == []
    # rich wraps the traceback box: look for the parts that fit on one line.
    assert "it held a secret]" in out and "PydanticCustomError: refused [REDACTED]" in out
    assert "calling with Authorization: Basic [REDACTED]" in out  # the DEBUG line


def test_stand_in_keeps_type_name_base_chain_and_traceback() -> None:
    import traceback

    from pydantic import BaseModel

    from flytekitplugins_awssecrets import ScrubbedError
    from flytekitplugins_awssecrets.scrub import scrubbed_exception
    from flytekitplugins_awssecrets.sensitive import SensitiveSet

    class Port(BaseModel):
        port: int

    v, short = _exotic_values()
    sens = SensitiveSet.build([("ref", v), ("short", short)])
    try:
        try:
            Port(port=v)  # type: ignore[arg-type]
        except ValueError as inner:
            raise RuntimeError(f"wrapping {v}") from inner
    except RuntimeError as e:
        caught: BaseException = e
    caught.__context__ = caught  # a cycle must not hang the walk
    out = scrubbed_exception(caught, sens)
    assert out is caught and isinstance(out, RuntimeError)  # scrubbable in place: kept
    cause = out.__cause__
    assert isinstance(cause, ScrubbedError) and isinstance(cause, ValueError)
    assert type(cause).__name__ == "ValidationError" and cause.original_type.endswith("ValidationError")
    assert cause.__traceback__ is not None and "Port(port=v)" in "".join(
        traceback.format_tb(cause.__traceback__)
    )
    text = "".join(traceback.format_exception(out))
    assert _exotic_leaks(text, v, short) == [] and "wrapping [REDACTED]" in text


@pytest.mark.parametrize("length", [4, 5, 6])
def test_sensitive_set_holds_bytes_repr_escapes_and_short_basic_auth(length: int) -> None:
    from flytekitplugins_awssecrets.sensitive import SensitiveSet

    v, short = _exotic_values()
    short = new_value("s")[-length:]
    sens = SensitiveSet.build([("ref", v), ("short", short)])
    raw = v.encode()
    shown = {
        "bytes repr": f"input_value={raw!r}",
        "x escapes": "".join(f"\\x{b:02X}" for b in raw),
        "u escapes": "".join(f"\\u{ord(c):04x}" for c in v),
        "basic": "Authorization: Basic " + base64.b64encode(f"svc:{short}".encode()).decode(),
        "basic url-safe": "basic " + base64.urlsafe_b64encode(f"u:{short}".encode()).decode().rstrip("="),
    }
    for name, text in shown.items():
        assert sens.contains(text), name
        assert _exotic_leaks(sens.redact(text), v, short) == [], name
        assert sens.find(text.encode()) != [], name
    assert sens.redact(shown["basic"]) == "Authorization: Basic [REDACTED]"
    other = "Authorization: Basic " + base64.b64encode(b"svc:not-it").decode()
    assert sens.redact(other) == other and not sens.contains(other)


# --- outputs ---------------------------------------------------------------------------------------------------


def test_pod_json_field_output_fails_and_writes_nothing(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, pod_specs: dict[str, Any], tmp_path: Path
) -> None:
    pw = new_value()
    arn, _ = secrets_factory.secret(f"{unique}/jsonfield", {"user": "app", "password": pw})
    p, doc = _pod(_spec(pod_specs, "returns_json_field"), tmp_path, _env(aws_env, LEAKY_JSON_ARN=arn))
    assert doc is not None and "SecretLeakError" in doc.error.message, p.stderr[-3000:]
    assert not (tmp_path / "out" / "outputs.pb").exists()
    assert _leaked_forms(doc.error.message + p.stdout + p.stderr, pw) == []


@pytest.mark.parametrize("form", ["line", "percent"])
def test_pod_encoded_output_fails(
    aws_env: dict[str, str],
    secrets_factory: Any,
    unique: str,
    pod_specs: dict[str, Any],
    tmp_path: Path,
    form: str,
) -> None:
    v = _pem()
    arn, _ = secrets_factory.secret(f"{unique}/enc-{form}", v)
    p, doc = _pod(
        _spec(pod_specs, "returns_encoded"), tmp_path, _env(aws_env, LEAKY_ARN=arn, LEAKY_FORM=form)
    )
    assert doc is not None and "SecretLeakError" in doc.error.message, p.stderr[-3000:]
    assert not (tmp_path / "out" / "outputs.pb").exists()
    assert _leaked_forms(doc.error.message + p.stdout + p.stderr, v) == []


def test_every_encoding_of_a_multiline_value_fails_the_task(secrets_factory: Any, unique: str) -> None:
    from urllib.parse import quote, quote_plus

    v = _pem()
    arn, _ = secrets_factory.secret(f"{unique}/forms", v)
    req = aws_secret(arn)
    forms = {
        "percent": lambda s: quote(s, safe=""),
        "percent_plus": quote_plus,
        "hex": lambda s: s.encode().hex(),
        "json": lambda s: json.dumps({"key": s}),
        "repr": lambda s: repr([s]),
        "line": lambda s: "line: " + s.splitlines()[1],
        "base64 in a blob": lambda s: __import__("base64").b64encode(b"xy" + s.encode()).decode(),
    }
    for name, fn in forms.items():

        @task(secret_requests=[req])
        def leaky() -> str:
            return fn(current_context().secrets.get(req.group, req.key))  # noqa: B023 - called at once

        with pytest.raises(SecretLeakError) as e:
            leaky()
        assert e.value.reference == arn, name


def test_leak_error_does_not_name_a_secret_dict_key(secrets_factory: Any, unique: str) -> None:
    token, owner = new_value("tok"), new_value("own")
    arn, _ = secrets_factory.secret(f"{unique}/keys", {"owners": {token: owner}})
    req = aws_secret(arn)

    @task(secret_requests=[req])
    def leaky() -> dict[str, str]:
        owners = json.loads(current_context().secrets.get(req.group, req.key))["owners"]
        return {k: "owner " + o for k, o in owners.items()}  # a secret key holding a secret value

    with pytest.raises(SecretLeakError) as e:
        leaky()
    assert _leaked_forms(str(e.value) + repr(vars(e.value)), token, owner) == []


def test_pod_pickled_output_fails_closed_unless_allowed(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, pod_specs: dict[str, Any], tmp_path: Path
) -> None:
    arn, _ = secrets_factory.secret(f"{unique}/slots")
    spec = _spec(pod_specs, "returns_slotted")
    p, doc = _pod(spec, tmp_path / "closed", _env(aws_env, LEAKY_ARN=arn))
    assert doc is not None and "UninspectableOutputError" in doc.error.message, p.stderr[-3000:]
    assert "FLYTE_AWS_SECRETS_ALLOW_OPAQUE_OUTPUTS" in doc.error.message
    assert not (tmp_path / "closed" / "out" / "outputs.pb").exists()
    raw = tmp_path / "closed" / "raw"
    assert not raw.exists() or not any(f.is_file() for f in raw.rglob("*")), "a pickle was uploaded"
    # In a pod the switch is the image's (issue 20): its settings file, never the container environment.
    from tests.support.image import fake_image

    python = fake_image(tmp_path / "image", "allow_opaque_outputs: true\n")
    p = run_pod(spec, tmp_path / "allowed", _env(aws_env, LEAKY_ARN=arn), python=python)
    assert not (tmp_path / "allowed" / "out" / "error.pb").exists(), p.stderr[-3000:]
    assert (tmp_path / "allowed" / "out" / "outputs.pb").exists()
    env = _env(aws_env, LEAKY_ARN=arn, FLYTE_AWS_SECRETS_ALLOW_OPAQUE_OUTPUTS="true")
    p, doc = _pod(spec, tmp_path / "env", env)
    assert doc is not None and "setting 'allow_opaque_outputs'" in doc.error.message, p.stderr[-3000:]


def test_guard_fails_closed_where_it_cannot_look(secrets_factory: Any, unique: str) -> None:
    arn, _ = secrets_factory.secret(f"{unique}/opaque")
    req = aws_secret(arn)

    @task(secret_requests=[req])
    def any_typed() -> Any:  # flytekit pickles Any
        return {"harmless": 1}

    @task(secret_requests=[req])
    def too_deep() -> dict:  # type: ignore[type-arg]
        node: dict = {}  # type: ignore[type-arg]
        for _ in range(200):
            node = {"k": node}
        return node

    for t in (any_typed, too_deep):
        with pytest.raises(UninspectableOutputError, match="ALLOW_OPAQUE_OUTPUTS"):
            t()


# --- logs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["pod", "pyflyte run"])
def test_logs_redacted_whatever_the_logging_configuration(
    aws_env: dict[str, str],
    secrets_factory: Any,
    unique: str,
    pod_specs: dict[str, Any],
    tmp_path: Path,
    where: str,
) -> None:
    """Root logger at DEBUG (module-level basicConfig) and flytekit's JSON format (rich off), which prints
    ``extra=`` fields: no form of the JSON field or of the whole document in the output, and botocore's
    debug log of the response body never appears."""
    pw = new_value() + "/+ &"
    arn, doc = secrets_factory.secret(f"{unique}/dbg-{where[:3]}", {"user": "app", "password": pw})
    env = _env(aws_env, LEAKY_JSON_ARN=arn, FLYTE_SDK_RICH_TRACEBACKS="0", FLYTE_SDK_LOGGING_LEVEL="20")
    if where == "pod":
        p, err = _pod(_spec(pod_specs, "logs_everything"), tmp_path, env)
        assert err is None, p.stderr[-3000:]
    else:
        p = _pyflyte_run(env, "tests/workflows/debuglog.py", "debug_wf")
        assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert _leaked_forms(out, pw, json.dumps(doc)) == []
    assert "user debug line visible" in out, "the root logger was not at DEBUG"
    assert '"dsn": "postgres://app:[REDACTED]@db/x"' in out and "bad password [REDACTED]" in out
    assert "Response body" not in out


def test_extras_args_and_exceptions_redacted_in_records(
    secrets_factory: Any, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    pw = new_value()
    arn, _ = secrets_factory.secret(f"{unique}/rec", {"password": pw, "port": 5432})
    req = aws_secret(arn)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("user.records")
    log.addHandler(Keep())

    @task(secret_requests=[req])
    def chatty() -> int:
        p = json.loads(current_context().secrets.get(req.group, req.key))["password"]
        log.warning("arg %s", p.encode().hex(), extra={"ctx": {"nested": [p]}, "obj": ValueError(p)})
        try:
            raise RuntimeError(p)
        except RuntimeError:
            log.exception("failed", stack_info=True)
        return 1

    try:
        with caplog.at_level(logging.WARNING):
            chatty()
    finally:
        log.handlers.clear()
    dumped = " ".join(repr(vars(r)) for r in records) + caplog.text
    dumped += "".join(logging.Formatter().format(r) for r in records)
    assert _leaked_forms(dumped, pw) == [] and "[REDACTED]" in dumped
    assert records[0].ctx == {"nested": ["[REDACTED]"]}  # type: ignore[attr-defined]


def test_arguments_of_an_unformattable_record_are_redacted() -> None:
    """logging's handleError prints the arguments of a record it cannot format, to stderr."""
    import contextlib
    import io

    from flytekitplugins_awssecrets.redact import install_redaction
    from flytekitplugins_awssecrets.sensitive import SensitiveSet

    v = new_value()
    stream = io.StringIO()
    lg = logging.getLogger("user.unformattable")
    lg.propagate = False
    handler = logging.StreamHandler(stream)
    lg.addHandler(handler)
    undo = install_redaction(SensitiveSet.build([("ref", v)]))
    try:
        with contextlib.redirect_stderr(stream):
            lg.warning("no placeholder", v)
    finally:
        undo()
        lg.removeHandler(handler)
    assert "Arguments: ('[REDACTED]',)" in stream.getvalue() and _leaked_forms(stream.getvalue(), v) == []


def test_get_secret_value_quiet_with_botocore_at_debug(
    secrets_factory: Any, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    arn, v = secrets_factory.secret(f"{unique}/quiet")
    parsers = logging.getLogger("botocore.parsers")
    before = (logging.getLogger("botocore").level, parsers.level)
    parsers.setLevel(logging.DEBUG)  # an explicit level on a child logger must not escape either
    try:
        with caplog.at_level(logging.DEBUG):
            assert get_secret_value(arn) == v
        assert _leaked_forms(caplog.text, v) == []
        assert (logging.getLogger("botocore").level, parsers.level) == (before[0], logging.DEBUG)
    finally:
        parsers.setLevel(before[1])


# --- FILE mounts -----------------------------------------------------------------------------------------------


def test_file_secret_refused_on_disk_unless_allowed(
    aws_env: dict[str, str], secrets_factory: Any, unique: str, tmp_path: Path
) -> None:
    from flytekitplugins_awssecrets.mount import MEMORY_FILESYSTEMS, filesystem_type

    if filesystem_type(tmp_path) in MEMORY_FILESYSTEMS:
        pytest.skip("the temporary directory is itself in memory here")
    assert filesystem_type("/dev/shm") in MEMORY_FILESYSTEMS
    arn, _ = secrets_factory.secret(f"{unique}/disk")
    disk = tmp_path / "secrets-on-disk"
    env = _env(aws_env, LEAKY_ARN=arn, FLYTE_AWS_SECRETS_MOUNT_DIR=str(disk))
    p = _pyflyte_run(env, "tests/workflows/leaky.py", "file_wf")
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "memory filesystem only" in out, out[-2000:]
    assert "FLYTE_AWS_SECRETS_ALLOW_DISK_MOUNT" in out and "user code was not run" in out
    assert not any(f.is_file() for f in disk.rglob("*")), "a secret file was written to disk"
    p = _pyflyte_run(
        {**env, "FLYTE_AWS_SECRETS_ALLOW_DISK_MOUNT": "true"}, "tests/workflows/leaky.py", "file_wf"
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert not any(f.is_file() for f in disk.rglob("*")), "removed after the task"


def test_memory_filesystem_is_told_from_proc_mounts(tmp_path: Path) -> None:
    from flytekitplugins_awssecrets.mount import MountSession, filesystem_type

    mounts = tmp_path / "mounts"
    mounts.write_text("overlay / overlay rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n")
    assert filesystem_type("/dev/shm/x/y", str(mounts)) == "tmpfs"
    assert filesystem_type("/var/tmp", str(mounts)) == "overlay"
    assert filesystem_type("/var/tmp", str(tmp_path / "no-proc")) == ""  # macOS: not known to be memory
    from flytekitplugins_awssecrets.mount import Resolved
    from flytekitplugins_awssecrets.refs import parse_reference

    ref = parse_reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf")
    r = Resolved(*split_arn(str(ref)), None, "FILE", None, ref, "value-not-secret")
    with pytest.raises(SecretResolutionError) as e:
        MountSession(tmp_path).mount([r])
    assert isinstance(e.value.errors[0], FileMountOnDiskError) or filesystem_type(tmp_path) == "tmpfs"


# --- required_tags ---------------------------------------------------------------------------------------------


def test_required_tags_hold_for_flytekit_sources_and_local_runs_ignore_webhook_files(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    untagged, _ = secrets_factory.secret(f"{unique}/untagged")
    tagged, _ = secrets_factory.secret(f"{unique}/tagged", tags={"SymEnv": "main"})
    monkeypatch.setenv("FLYTE_AWS_SECRETS_REQUIRED_TAGS", '{"SymEnv": "main"}')
    monkeypatch.setenv("FLYTE_AWS_SECRETS_WEBHOOK_DIR", str(tmp_path / "webhook"))
    from flytekitplugins_awssecrets.flytekit.names import flytekit_names

    def webhook_file(arn: str) -> None:
        group, key = split_arn(arn)
        path = tmp_path / "webhook" / group.lower() / key.lower()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new_value())

    for source in ("webhook", "env"):
        for arn in (untagged, tagged):
            if source == "webhook":
                webhook_file(arn)  # left over: a local run never reads it (issue 21, item 8)
            else:
                req = aws_secret(arn, mount_requirement=Secret.MountType.ENV_VAR)
                monkeypatch.setenv(flytekit_names(req.group, req.key, None)[0], new_value())
        ran: list[str] = []
        reqs = [aws_secret(untagged), aws_secret(tagged)]

        @task(secret_requests=reqs)
        def t() -> int:
            ran.append("x")  # noqa: B023 - run at once
            return 1

        counting_proxy.reset_counts()
        with pytest.raises(SecretResolutionError) as e:
            t()
        assert not ran, source
        (err,) = e.value.errors
        assert isinstance(err, MissingTagError) and err.reference == untagged, source
        if source == "env":
            assert dict(counting_proxy.calls) == {"DescribeSecret": 2}, (
                source
            )  # one per secret, no value read
        else:
            assert sum(n for c, n in counting_proxy.calls.items() if c != "DescribeSecret") >= 1, (
                "read from AWS"
            )


def test_pod_required_tags_hold_for_webhook_files(
    aws_env: dict[str, str],
    secrets_factory: Any,
    counting_proxy: Any,
    unique: str,
    pod_specs: dict[str, Any],
    tmp_path: Path,
) -> None:
    """In the pod, a secret the cluster webhook mounted is refused like a fetched one when it lacks the tag."""
    arn, _ = secrets_factory.secret(f"{unique}/pod-untagged", {"password": new_value()})
    group, key = split_arn(arn)
    mounted = tmp_path / "etc-flyte-secrets" / group.lower() / key.lower()
    mounted.parent.mkdir(parents=True)
    mounted.write_text(json.dumps({"password": new_value()}))
    env = _env(
        aws_env,
        LEAKY_JSON_ARN=arn,
        AWS_ENDPOINT_URL=counting_proxy.url,
        FLYTE_AWS_SECRETS_REQUIRED_TAGS='{"SymEnv": "main"}',
    )
    # Registered for a cluster whose webhook serves the request: only then is its file read in the pod.
    webhook_specs = serialize_tasks(
        "tests.workflows", tmp_path / "spec", {**env, "FLYTE_AWS_SECRETS_CLUSTER_MODE": "webhook"}, "*_1.pb"
    )
    # Where the webhook mounts is the image's setting (a pod never takes it from its environment).
    from tests.support.image import fake_image

    python = fake_image(
        tmp_path / "image", f"webhook_dir: {json.dumps(str(tmp_path / 'etc-flyte-secrets'))}\n"
    )
    counting_proxy.reset_counts()
    p, doc = _pod(_spec(webhook_specs, "returns_json_field"), tmp_path / "pod", env, python=python)
    assert doc is not None, p.stderr[-3000:]
    assert "required tag 'SymEnv' is missing" in doc.error.message
    assert "user code was not run" in doc.error.message
    assert dict(counting_proxy.calls) == {"DescribeSecret": 1}


# --- payloads --------------------------------------------------------------------------------------------------


def test_answer_without_a_value_is_retryable_and_never_cached(
    secrets_factory: Any, counting_proxy: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flytekitplugins_awssecrets import get_secret_values
    from flytekitplugins_awssecrets.resolver import reset_process_state

    arn, v = secrets_factory.secret(f"{unique}/empty")
    arn2, _ = secrets_factory.secret(f"{unique}/empty2")
    param = secrets_factory.parameter(f"/{unique}/empty")
    json_ct = "application/x-amz-json-1.1"
    answers = {
        "GetSecretValue": [
            (200, json_ct, b"{}"),
            (200, json_ct, b""),
            (200, "text/html", b"<html>proxy</html>"),
        ],
        "BatchGetSecretValue": [(200, json_ct, b"{}")],
        "GetParameters": [
            (200, json_ct, json.dumps({"Parameters": [{"Name": f"/{unique}/empty", "ARN": param}]}).encode()),
            (200, json_ct, b"{}"),
        ],
    }
    for op, cases in answers.items():
        refs = {"GetSecretValue": [arn], "BatchGetSecretValue": [arn, arn2], "GetParameters": [param]}[op]
        if op == "BatchGetSecretValue":  # only the batch read strategy calls it
            monkeypatch.setenv("FLYTE_AWS_SECRETS_READ_STRATEGY", "batch")
            reset_process_state()
        for status, ctype, body in cases:
            counting_proxy.canned[op] = (status, ctype, body)
            for _ in range(2):  # the second try calls AWS again: a failure is never cached
                with pytest.raises(SecretResolutionError) as e:
                    get_secret_values(refs)
                assert all(isinstance(x, SecretFetchError) and x.retryable for x in e.value.errors), (
                    op,
                    body,
                )
                assert e.value.retryable
            assert counting_proxy.calls[op] >= 2
            counting_proxy.reset_counts()
        del counting_proxy.canned[op]
    assert get_secret_value(arn) == v
    from botocore.parsers import ResponseParserError

    from flytekitplugins_awssecrets.fetch import translate_error
    from flytekitplugins_awssecrets.refs import parse_reference

    err = translate_error(parse_reference(arn), ResponseParserError("<html>proxy</html>"))
    assert isinstance(err, SecretFetchError) and err.retryable and "html" not in str(err)


# --- parsers ---------------------------------------------------------------------------------------------------


def test_deep_nesting_is_typed_in_resolution_and_manifests(
    secrets_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, unique: str
) -> None:
    from flytekitplugins_awssecrets.flytekit.present import already_present
    from flytekitplugins_awssecrets.manifest import yamlio
    from flytekitplugins_awssecrets.manifest.model import ManifestError, load_manifest
    from flytekitplugins_awssecrets.resolver import resolve_requests

    arn = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{unique}/deep-AbCdEf"
    group, key = split_arn(arn)
    path = tmp_path / "webhook" / group.lower() / key.lower()
    path.parent.mkdir(parents=True)
    path.write_text('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    monkeypatch.setenv("FLYTE_AWS_SECRETS_WEBHOOK_DIR", str(tmp_path / "webhook"))
    req = aws_secret(arn, json_key="a.b")
    with pytest.raises(SecretResolutionError) as e:  # a file the webhook serves (in a pod, webhook mode)
        resolve_requests([req], present=already_present, webhook_served={(req.group, req.key or "", None)})
    assert isinstance(e.value.errors[0], SecretNotJsonError)
    deep = tmp_path / "deep.yml"
    deep.write_text(
        "path: /x/\nregion: us-east-1\nparameters:\n  - value: " + "[" * 50_000 + "]" * 50_000 + "\n"
    )
    with pytest.raises(ManifestError):
        load_manifest(str(deep))
    with pytest.raises(yamlio.YamlError):
        yamlio.load("a: " + "{b: " * 50_000 + "c" + "}" * 50_000)


def test_manifest_refuses_anchors_and_aliases(tmp_path: Path) -> None:
    from flytekitplugins_awssecrets.manifest import yamlio
    from flytekitplugins_awssecrets.manifest.model import ManifestError, load_manifest

    laughs = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefg"[i]
        laughs.append(
            f"{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]"
        )
    f = tmp_path / "laughs.yml"
    f.write_text("path: /x/\nregion: us-east-1\nparameters: []\n" + "\n".join(laughs) + "\n")
    assert f.stat().st_size < 1000
    with pytest.raises(ManifestError, match="anchors and aliases"):
        load_manifest(str(f))
    for text in ("a: &x 1\n", "a: 1\nb: *x\n", "a: !!str &x v\n"):
        with pytest.raises(yamlio.YamlError, match="anchors and aliases|invalid YAML"):
            yamlio.load(text)
