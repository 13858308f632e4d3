"""The Secret Agent wire protocol: framing and payloads. Pure functions, no I/O.

Every message, in both directions, is an 8-byte header and a JSON body::

    +----------------------+----------------------+------------------------+
    | magic 0x51DEC1CC     | body length N        | N bytes of UTF-8 JSON  |
    | (uint32, big-endian) | (uint32, big-endian) |                        |
    +----------------------+----------------------+------------------------+

A request is ``{"Resource": "<name>", "SecretKey": "<key>"}``; both fields are optional. The answer is
``{"SecretValue": "<base64>"}`` or ``{"Error": "<text>"}``.

``SecretValue`` is always base64: Aerospike's clients strip trailing whitespace from it and base64-decode it
strictly. With ``convert-to-base64: true`` the agent encodes the stored value; with ``false`` (Aerospike's
default) the stored value must already be base64 and is sent as it is (:func:`secret_value_frame`).

A header that is wrong (bad magic, a length above the limit) leaves the reader unable to find the next
message, so :class:`FrameError` says whether the connection must be closed (``fatal``) after the error is
answered. A body that is framed correctly but is not a valid request is answered with an error and the
connection stays usable.
"""

from __future__ import annotations

import base64
import json
import re
import struct

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flytekitplugins_awssecrets.errors import AwsSecretsError

__all__ = [
    "MAGIC",
    "HEADER_SIZE",
    "DEFAULT_MAX_BODY",
    "FrameError",
    "AgentRequest",
    "AgentResponse",
    "parse_header",
    "encode_frame",
    "decode_request",
    "value_frame",
    "secret_value_frame",
    "error_frame",
    "NotBase64Error",
    "TRAILING_WHITESPACE",
    "is_strict_base64",
]

MAGIC = 0x51DEC1CC
_HEADER = struct.Struct(">II")
HEADER_SIZE = _HEADER.size
#: Requests are two short strings; 64 KiB leaves room and bounds what one connection can make us buffer.
DEFAULT_MAX_BODY = 64 * 1024
#: What Aerospike's C client strips from the end of ``SecretValue`` before decoding it.
TRAILING_WHITESPACE = " \t\n\r\f\v"


class NotBase64Error(AwsSecretsError, ValueError):
    """``convert-to-base64`` is false and a stored value is not base64, so a client could not decode it.

    Example::

        >>> str(NotBase64Error("resource 'Db' key 'password'"))  # doctest: +ELLIPSIS
        "resource 'Db' key 'password': the stored value is not base64 ..."
    """

    def __init__(self, reference: str) -> None:
        super().__init__(
            reference,
            "the stored value is not base64 (with convert-to-base64: false, Secret Agent sends stored values as "
            "they are, and clients base64-decode them)",
            "store the value base64-encoded without line breaks (base64 -w0), or set "
            "secret-manager.aws.convert-to-base64: true",
        )


class FrameError(Exception):
    """A message that cannot be served; ``fatal`` means the stream is out of step and must be closed.

    The text never contains the body (it could be anything a client sent, including a value).

    Example::

        >>> try:
        ...     parse_header(bytes(8))
        ... except FrameError as e:
        ...     print(e.fatal, e.reason)
        True bad magic 0x00000000 (expected 0x51DEC1CC)
    """

    def __init__(self, reason: str, *, fatal: bool) -> None:
        self.reason = reason
        self.fatal = fatal
        super().__init__(reason)


class AgentRequest(BaseModel):
    """What a client asks for: a configured resource name and a key of the JSON secret.

    Example::

        >>> AgentRequest.model_validate({"Resource": "TestingSecret", "SecretKey": "password"}).Resource
        'TestingSecret'
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    Resource: str | None = Field(default=None, max_length=2048)
    SecretKey: str | None = Field(default=None, max_length=2048)


class AgentResponse(BaseModel):
    """One answer: ``SecretValue`` (base64) or ``Error``. The value is kept out of ``repr``.

    Example::

        >>> AgentResponse(Error="unknown resource 'x'").to_body()
        b'{"Error":"unknown resource \\'x\\'"}'
    """

    model_config = ConfigDict(frozen=True)

    SecretValue: str | None = Field(default=None, repr=False)
    Error: str | None = None

    def to_body(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")


def parse_header(header: bytes, max_body: int = DEFAULT_MAX_BODY) -> int:
    """The body length announced by an 8-byte header; raises a fatal :class:`FrameError` if it is wrong."""
    if len(header) != HEADER_SIZE:
        raise FrameError(f"truncated header: {len(header)} of {HEADER_SIZE} bytes", fatal=True)
    magic, length = _HEADER.unpack(header)
    if magic != MAGIC:
        raise FrameError(f"bad magic 0x{magic:08X} (expected 0x{MAGIC:08X})", fatal=True)
    if length > max_body:
        raise FrameError(f"body length {length} exceeds the maximum of {max_body} bytes", fatal=True)
    return int(length)


def encode_frame(body: bytes) -> bytes:
    """Header + body, ready to write."""
    return _HEADER.pack(MAGIC, len(body)) + body


def decode_request(body: bytes) -> AgentRequest:
    """Parse a request body; a bad body raises a non-fatal :class:`FrameError` naming what is wrong."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise FrameError("body is not UTF-8", fatal=False) from None
    except (ValueError, RecursionError):
        # Never chain or quote: JSONDecodeError.doc holds the whole body. Deep nesting is refused too.
        raise FrameError("body is not valid JSON", fatal=False) from None
    if not isinstance(doc, dict):
        raise FrameError(f"body must be a JSON object, not a {type(doc).__name__}", fatal=False)
    try:
        return AgentRequest.model_validate(doc)
    except ValidationError as e:
        # Build the message from the location and kind only: pydantic's text repeats the input.
        first = e.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "body"
        kind = {"extra_forbidden": "unknown field (expected Resource, SecretKey)"}.get(
            first.get("type", ""), "must be a string"
        )
        if first.get("type") == "string_too_long":
            kind = "is too long"
        raise FrameError(f"{field}: {kind}", fatal=False) from None


def value_frame(value: str | bytes) -> bytes:
    """The answer carrying ``value`` (text is sent as its UTF-8 bytes), base64-encoded."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return encode_frame(AgentResponse(SecretValue=base64.b64encode(raw).decode("ascii")).to_body())


#: What Aerospike's C client decodes: whole 4-character groups of the standard alphabet, ``=`` only as the
#: final padding of the last group (one or two), nothing after it. Python's decoder also takes excess
#: padding (``QUJD====``), which that client refuses, so the rule is written out here.
_STRICT_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def is_strict_base64(raw: bytes) -> bool:
    """Whether Aerospike's client can decode ``raw`` (after the trailing whitespace it strips).

    Example::

        >>> is_strict_base64(b"QUJD"), is_strict_base64(b"QUI=\n"), is_strict_base64(b"QUJD===="), is_strict_base64(b"QU=I")
        (True, True, False, False)
    """
    text = raw.rstrip(TRAILING_WHITESPACE.encode())
    return bool(text) and _STRICT_BASE64.fullmatch(text) is not None


def secret_value_frame(value: str | bytes, *, convert_to_base64: bool, reference: str) -> bytes:
    """The answer for ``value`` under Secret Agent's ``convert-to-base64`` rule.

    ``True``: ``SecretValue`` is the base64 of the value (text as UTF-8). ``False``: the value is already
    base64 (what Aerospike asks users to store for multi-line values) and is sent as it is; a value that is
    not (after trailing whitespace, which Aerospike's clients strip) raises :class:`NotBase64Error` naming
    ``reference``, never the value.
    """
    if convert_to_base64:
        return value_frame(value)
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if not is_strict_base64(raw):
        raise NotBase64Error(reference)
    return encode_frame(AgentResponse(SecretValue=raw.decode("ascii")).to_body())


def error_frame(message: str) -> bytes:
    """The answer carrying an error message (which must already be value-free)."""
    return encode_frame(AgentResponse(Error=message).to_body())
