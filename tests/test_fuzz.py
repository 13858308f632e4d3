"""Fuzzing with hypothesis: the reference parser, JSON-key extraction and the manifest loader raise only
the project's typed errors, whatever they are given."""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flytekitplugins_awssecrets import AwsSecretsError, parse_reference, split_arn
from flytekitplugins_awssecrets.extract import extract_json_key
from flytekitplugins_awssecrets.refs import reference_from_request

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that looks like references often enough to reach deep into the parser.
_pieces = st.sampled_from(
    ["arn", ":", "aws", "aws-cn", "aws-us-gov", "secretsmanager", "ssm", "us-east-1", "cn-north-1",
     "123456789012", "secret", "parameter/", "/", "prod", "db-XyZ123", "-", ".", "..", "AWSCURRENT", "9", " ", "\x00"]
)  # fmt: skip
_refish = st.one_of(st.text(), st.lists(_pieces, max_size=14).map("".join))


@FUZZ
@given(_refish)
def test_reference_parser_only_raises_typed_errors(text: str) -> None:
    for fn in (parse_reference, split_arn):
        try:
            ref = fn(text)
        except AwsSecretsError:
            continue
        if fn is parse_reference:
            # Whatever parses round-trips through its own formatting.
            assert parse_reference(str(ref)) == ref


@FUZZ
@given(_refish, _refish, st.one_of(st.none(), st.text(max_size=8)))
def test_request_parser_only_raises_typed_errors(group: str, key: str, version: str | None) -> None:
    try:
        reference_from_request(group, key, version)
    except AwsSecretsError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
_key = st.one_of(
    st.text(), st.lists(st.sampled_from(["a", "b", ".", "\\", "0", "1", "x.y"]), max_size=6).map("".join)
)


@FUZZ
@given(st.one_of(_json.map(json.dumps), st.text(), st.binary()), _key)
def test_json_extraction_only_raises_typed_errors(raw: str | bytes, key: str) -> None:
    try:
        out = extract_json_key("ref", raw, key)
    except AwsSecretsError:
        return
    assert isinstance(out, str)


_yaml_words = st.sampled_from(
    ["path: /apps/x/\n", "region: us-east-1\n", "kmskey: alias/k\n", "parameters:\n", "  - name: a\n",
     "    type: SecureString\n", "    type: string\n", "    type: StringList\n", "    value: 0123\n", "    value: ~\n",
     "    description: d\n", "secrets:\n", "  - name: s\n", "    value: {a: 1}\n", "tags:\n", "  k: v\n",
     "encrypted_with: x\n", ": :\n", "- -\n", "\t", "&a *a\n", "!!python/object:os.system ''\n", "'", "\"", "{", "["]
)  # fmt: skip


@FUZZ
@given(st.one_of(st.text(string.printable), st.lists(_yaml_words, max_size=16).map("".join)))
def test_manifest_loader_only_raises_typed_errors(text: str) -> None:
    from flytekitplugins_awssecrets.manifest import yamlio
    from flytekitplugins_awssecrets.manifest.model import parse_manifest

    try:
        parse_manifest(yamlio.load(text, "fuzz.yml"), "fuzz.yml")
    except (AwsSecretsError, yamlio.YamlError):
        pass
