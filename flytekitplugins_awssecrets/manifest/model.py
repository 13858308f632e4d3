"""The manifest file: pydantic models, validation with errors that name the entry and field, and writing back.

The format is psyml's, unchanged, plus two additions (``StringList`` and a ``secrets:`` section)::

    path: /apps/superman/          # every parameter lives under this path
    region: us-east-1              # region of the parameters and secrets
    kmskey: alias/superman         # KMS key SSM encrypts SecureString parameters with (optional here)
    encrypted_with: arn:aws:kms:...# written by `encrypt`: the key the file's ciphertexts were made with
    tags: {team: platform}         # tags every entry gets; absent = tags are not managed
    parameters:
      - name: api_token
        description: token for the API
        type: SecureString         # String | SecureString | StringList; lowercase = as written by `encrypt`
        value: 5a5468-786448467a59
    secrets:                       # Secrets Manager (our addition)
      - name: db                   # stored as "apps/superman/db"
        value: {username: app, password: hunter2}   # a mapping is stored as a JSON object
        kmskey: alias/db           # optional, else the account's aws/secretsmanager key
        tags: {tier: gold}         # merged over the top-level tags

Encryption state follows psyml: ``type: securestring`` (lowercase) means ``value`` is a base64 KMS ciphertext;
``SecureString`` means it is still plain text. A secret entry says ``encrypted: true`` instead.

Values are :class:`pydantic.SecretStr`, so no repr, log line or validation error ever shows one.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from flytekitplugins_awssecrets.errors import AwsSecretsError

__all__ = [
    "ManifestError",
    "Manifest",
    "Parameter",
    "SecretEntry",
    "ParamType",
    "parameter_full_name",
    "secret_full_name",
    "parse_manifest",
    "load_manifest",
    "manifest_to_yaml_data",
]

ParamType = Literal["String", "SecureString", "StringList", "string", "securestring", "stringlist"]
_CANONICAL: dict[str, str] = {"string": "String", "securestring": "SecureString", "stringlist": "StringList"}

_SSM_CHARS = re.compile(r"^[A-Za-z0-9_.\-/]*$")
_SM_CHARS = re.compile(r"^[A-Za-z0-9/_+=.@\-]*$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


class ManifestError(AwsSecretsError, ValueError):
    """A manifest that cannot be used: every problem, each naming the entry and the field, never a value.

    Example::

        try:
            load_manifest("superman.yml")
        except ManifestError as e:
            for problem in e.problems:
                print(problem)   # "parameters[1] 'api_token': type: Input should be 'String', ..."
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(source, f"{n} problem{'s' if n != 1 else ''} in the manifest:\n{lines}")


def _segments(text: str) -> list[str]:
    return [s for s in text.split("/") if s]


def parameter_full_name(path: str, name: str) -> str:
    """The SSM name of an entry: ``path`` and ``name`` joined with exactly one ``/`` between segments.

    A leading slash on the name does not make it absolute (psyml produced ``//`` here; we don't):

    >>> parameter_full_name("/apps/superman/", "/api_token")
    '/apps/superman/api_token'
    """
    return "/" + "/".join(_segments(path) + _segments(name))


def secret_full_name(path: str, name: str) -> str:
    """The Secrets Manager name of an entry: like the parameter name, without the leading slash.

    >>> secret_full_name("/apps/superman/", "db")
    'apps/superman/db'
    """
    return "/".join(_segments(path) + _segments(name))


def _check_tags(tags: dict[str, str] | None) -> dict[str, str] | None:
    if tags is None:
        return None
    for k, v in tags.items():
        if not 1 <= len(k) <= 128:
            raise ValueError(f"tag key {k!r} must be 1 to 128 characters")
        if k.lower().startswith("aws:"):
            raise ValueError(f"tag key {k!r}: the 'aws:' prefix is reserved by AWS")
        if len(v) > 256:
            raise ValueError(f"tag {k!r}: the value must be at most 256 characters")
    return tags


class Parameter(BaseModel):
    """One SSM parameter of a manifest.

    Example::

        Parameter(name="api_version", description="not a secret", type="String", value="2")
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    description: str = ""
    type: ParamType
    #: A StringList may be written as a YAML list; SSM stores it comma-joined.
    value: SecretStr | list[SecretStr]

    @field_validator("value", mode="before")
    @classmethod
    def _wrap(cls, v: Any) -> Any:
        # strict mode wants SecretStr instances; accept the str that the YAML loader produces.
        if isinstance(v, str):
            return SecretStr(v)
        if isinstance(v, list):
            return [SecretStr(i) if isinstance(i, str) else i for i in v]
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _segments(v):
            raise ValueError("the name is empty")
        if not _SSM_CHARS.match(v):
            raise ValueError(f"name {v!r} has characters SSM does not allow (letters, digits, _ . - /)")
        return v

    @model_validator(mode="after")
    def _value_matches_type(self) -> Parameter:
        if isinstance(self.value, list):
            if self.ssm_type != "StringList":
                raise ValueError("value: a list is only allowed for type StringList")
            if not self.value:
                raise ValueError("value: the list is empty")
            for i, item in enumerate(self.value):
                text = item.get_secret_value()
                if "," in text or not text:
                    raise ValueError(f"value[{i}]: a StringList item must be non-empty and contain no comma")
        elif self.encrypted:
            text = self.value.get_secret_value()
            if not _B64.match(text) or len(text) % 4:
                raise ValueError(
                    "value: type 'securestring' (lowercase) means an encrypted value, but this is not base64 "
                    "ciphertext; write plain text with type 'SecureString' and run `manifest encrypt`"
                )
        elif not self.value.get_secret_value():
            raise ValueError("value: is empty (SSM does not store empty values)")
        return self

    @property
    def ssm_type(self) -> str:
        """The type as SSM spells it: lowercase forms are never sent to AWS (psyml did)."""
        return _CANONICAL.get(self.type, self.type)

    @property
    def encrypted(self) -> bool:
        """True when ``value`` holds psyml-style ciphertext (``type: securestring``)."""
        return self.type == "securestring"

    @property
    def secure(self) -> bool:
        return self.ssm_type == "SecureString"

    def text(self) -> str:
        """The value as SSM stores it (a StringList comma-joined). Ciphertext when :attr:`encrypted`."""
        if isinstance(self.value, list):
            return ",".join(i.get_secret_value() for i in self.value)
        return self.value.get_secret_value()


class SecretEntry(BaseModel):
    """One Secrets Manager secret of a manifest (our addition to psyml's format).

    ``value`` is a string, or a mapping stored as a JSON object (``json`` is then set for you). Write
    ``json: true`` with a string value to store hand-written JSON (numbers, nesting) verbatim; it is checked
    to parse. ``encrypted: true`` means ``value`` is the base64 ciphertext written by ``manifest encrypt``.

    Example::

        SecretEntry(name="db", value='{"port": 5432}', json=True, tags={"tier": "gold"})
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    description: str = ""
    value: SecretStr
    is_json: bool = Field(False, alias="json")
    encrypted: bool = False
    kmskey: str | None = None
    tags: dict[str, str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _mapping_to_json(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("value"), dict | list):
            data = dict(data)
            # The YAML loader keeps leaves as strings; compact separators match what the AWS console writes.
            data["value"] = json.dumps(data["value"], separators=(",", ":"), ensure_ascii=False)
            data["json"] = True
        return data

    @field_validator("is_json", "encrypted", mode="before")
    @classmethod
    def _yaml_bool(cls, v: Any) -> Any:
        # The text-keeping loader hands us 'true'/'false'; accept exactly those spellings.
        if isinstance(v, str):
            low = v.lower()
            if low in ("true", "false"):
                return low == "true"
            raise ValueError("must be true or false")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _segments(v):
            raise ValueError("the name is empty")
        if not _SM_CHARS.match(v):
            raise ValueError(f"name {v!r} has characters Secrets Manager does not allow")
        return v

    _tags = field_validator("tags")(classmethod(lambda cls, v: _check_tags(v)))

    @model_validator(mode="after")
    def _check_value(self) -> SecretEntry:
        text = self.value.get_secret_value()
        if self.encrypted:
            if not _B64.match(text) or len(text) % 4:
                raise ValueError("value: 'encrypted: true' but the value is not base64 ciphertext")
        elif not text:
            raise ValueError("value: is empty")
        elif self.is_json:
            try:
                json.loads(text)
            except (ValueError, RecursionError):
                # Never chain or quote: JSONDecodeError keeps the whole document (the secret).
                raise ValueError("value: 'json: true' but the value is not valid JSON") from None
        return self


class Manifest(BaseModel):
    """A whole manifest file. Build it with :func:`load_manifest` or :func:`parse_manifest`.

    Example::

        m = load_manifest("superman.yml")
        [parameter_full_name(m.path, p.name) for p in m.parameters]   # ['/apps/superman/api_token', ...]
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    path: str
    region: str
    kmskey: str | None = None
    encrypted_with: str | None = None
    tags: dict[str, str] | None = None
    parameters: list[Parameter] = Field(default_factory=list)
    secrets: list[SecretEntry] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not _SSM_CHARS.match(v):
            raise ValueError(f"path {v!r} has characters SSM does not allow (letters, digits, _ . - /)")
        first = (_segments(v) or [""])[0].lower()
        if first.startswith(("aws", "ssm")):
            raise ValueError("path: SSM reserves names that begin with 'aws' or 'ssm'")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not _REGION.match(v):
            raise ValueError(f"region {v!r} is not a region name like us-east-1")
        from flytekitplugins_awssecrets.regions import region_problem

        problem = region_problem(v)
        if problem:  # a typo would otherwise reach AWS and come back as a DNS failure or an error page
            raise ValueError(problem)
        return v

    _tags = field_validator("tags")(classmethod(lambda cls, v: _check_tags(v)))

    @model_validator(mode="after")
    def _unique(self) -> Manifest:
        problems: list[str] = []
        seen: dict[str, int] = {}
        for i, p in enumerate(self.parameters):
            full = parameter_full_name(self.path, p.name)
            if full in seen:
                problems.append(f"parameters[{i}] and parameters[{seen[full]}] are both {full}")
            seen[full] = i
        seen = {}
        for i, s in enumerate(self.secrets):
            full = secret_full_name(self.path, s.name)
            if full in seen:
                problems.append(f"secrets[{i}] and secrets[{seen[full]}] are both {full}")
            seen[full] = i
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def encrypted_any(self) -> bool:
        return any(p.encrypted for p in self.parameters) or any(s.encrypted for s in self.secrets)

    def secret_tags(self, entry: SecretEntry) -> dict[str, str] | None:
        """The tags a secret should carry: the top-level ones, overridden by the entry's own."""
        if self.tags is None and entry.tags is None:
            return None
        return {**(self.tags or {}), **(entry.tags or {})}


def _entry_label(raw: Any, loc: tuple[int | str, ...]) -> tuple[str, tuple[int | str, ...]]:
    """Turn pydantic's ``('parameters', 2, 'type')`` into ``"parameters[2] 'api_token'"`` and the rest."""
    if len(loc) >= 2 and loc[0] in ("parameters", "secrets") and isinstance(loc[1], int):
        name = None
        if isinstance(raw, dict) and isinstance(raw.get(loc[0]), list) and loc[1] < len(raw[loc[0]]):
            item = raw[loc[0]][loc[1]]
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                name = item["name"]
        label = f"{loc[0]}[{loc[1]}]" + (f" {name!r}" if name else "")
        return label, loc[2:]
    return "top level", loc


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNION_TYPE_MSGS = ("Input should be a valid string", "Input should be a valid list")


def _field_text(rest: Iterable[int | str]) -> str:
    # Drop pydantic's union-member / validator tags ('str', 'function-after[...]') so the path is the user's.
    parts = [f"[{p}]" if isinstance(p, int) else p for p in rest if isinstance(p, int) or _IDENT.match(p)]
    return ".".join(parts).replace(".[", "[")


def _problems(raw: Any, err: ValidationError) -> list[str]:
    out: list[str] = []
    for e in err.errors(include_input=False, include_url=False):
        label, rest = _entry_label(raw, tuple(e["loc"]))
        field = _field_text(rest)
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (a typo?)"
        elif e["type"] == "missing":
            msg = "is required"
        elif field == "value" and msg in _UNION_TYPE_MSGS:
            # One message for the two union members; an explicit YAML tag (!!int) is the usual cause.
            msg = "must be text (or, for StringList, a list of text); remove any !!int/!!float tag"
        text = f"{label}: {field}: {msg}" if field else f"{label}: {msg}"
        if text not in out:
            out.append(text)
    return out


def parse_manifest(raw: Any, source: str = "<manifest>") -> Manifest:
    """Validate already-loaded YAML data; raises :class:`ManifestError` listing every problem."""
    if not isinstance(raw, dict):
        raise ManifestError(
            source, ["top level: the file must be a mapping with path, region and parameters"]
        )
    if "parameters" not in raw and "secrets" not in raw:
        raise ManifestError(source, ["top level: parameters: is required (or a secrets: section)"])
    for section in ("parameters", "secrets"):
        if raw.get(section) is None and section in raw:
            raw = {**raw, section: []}  # an empty section ('parameters:') is an empty list, not an error
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        # Duplicate names are checked after every field is valid; list them with the other problems so
        # that one run shows everything to fix.
        raise ManifestError(source, _problems(raw, e) + _raw_duplicates(raw)) from None
    except RecursionError:
        raise ManifestError(source, ["a value is nested too deeply to read"]) from None


def _raw_duplicates(raw: dict[str, Any]) -> list[str]:
    """Entries of the unvalidated data that share a name (by full name when ``path`` is usable)."""
    out: list[str] = []
    path = raw.get("path") if isinstance(raw.get("path"), str) else "/"
    for section, full_name in (("parameters", parameter_full_name), ("secrets", secret_full_name)):
        items = raw.get(section)
        seen: dict[str, int] = {}
        for i, item in enumerate(items if isinstance(items, list) else []):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name.strip():
                continue
            try:
                full = full_name(str(path), name)
            except Exception:  # noqa: BLE001 - a bad path or name is reported by validation already
                full = name
            if full in seen:
                out.append(f"top level: {section}[{i}] and {section}[{seen[full]}] are both {full}")
            seen.setdefault(full, i)
    return out


def load_manifest(path: str) -> Manifest:
    """Read and validate a manifest file (see the module docstring for the format)."""
    from flytekitplugins_awssecrets.manifest import yamlio

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ManifestError(path, [f"cannot read the file: {e.strerror}"]) from None
    try:
        raw = yamlio.load(text, path)
    except yamlio.YamlError as e:
        raise ManifestError(path, [str(e)]) from None
    return parse_manifest(raw, path)


def _json_as_yaml(text: str) -> Any:
    """A JSON secret shown as a YAML mapping when that round-trips exactly (all leaves strings), else text."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None

    def strings_only(x: Any) -> bool:
        if isinstance(x, dict):
            return all(strings_only(v) for v in x.values())
        if isinstance(x, list):
            return all(strings_only(v) for v in x)
        return isinstance(x, str)

    if isinstance(data, dict) and data and strings_only(data):
        if json.dumps(data, separators=(",", ":"), ensure_ascii=False) == text:
            return data
    return None


def manifest_to_yaml_data(m: Manifest) -> dict[str, Any]:
    """Plain data for :func:`yamlio.dump`, in psyml's key order; reveals values, so only for file output.

    Only keys psyml knows are written for a file that uses only psyml's features, so psyml reads our output.
    """
    data: dict[str, Any] = {"path": m.path, "region": m.region}
    if m.kmskey is not None:
        data["kmskey"] = m.kmskey
    if m.encrypted_with is not None:
        data["encrypted_with"] = m.encrypted_with
    if m.tags is not None:
        data["tags"] = dict(m.tags)
    data["parameters"] = [
        {
            "name": p.name,
            "description": p.description,
            "type": p.type,
            "value": [i.get_secret_value() for i in p.value] if isinstance(p.value, list) else p.text(),
        }
        for p in m.parameters
    ]
    if m.secrets:
        out: list[dict[str, Any]] = []
        for s in m.secrets:
            item: dict[str, Any] = {"name": s.name}
            if s.description:
                item["description"] = s.description
            text = s.value.get_secret_value()
            shown = _json_as_yaml(text) if s.is_json and not s.encrypted else None
            if shown is not None:
                item["value"] = shown
            else:
                item["value"] = text
                if s.is_json:
                    item["json"] = True
            if s.encrypted:
                item["encrypted"] = True
            if s.kmskey is not None:
                item["kmskey"] = s.kmskey
            if s.tags is not None:
                item["tags"] = dict(s.tags)
            out.append(item)
        data["secrets"] = out
    return data


def b64_ok(text: str) -> bool:
    """True when ``text`` decodes as strict base64 (used before handing it to KMS)."""
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True
