"""Encrypting manifest values with KMS, compatible with psyml 0.2.2 in both directions.

Every secure value is KMS-``Encrypt``-ed under the *file* key with the encryption context
``{"Client": "psyml", "Name": <entry name as written>}`` and stored base64-encoded. The context binds a
ciphertext to its entry: a value pasted under another name does not decrypt.

Settings (environment variables, read when used, defaults as in psyml):

* ``PSYML_KEY_ALIAS`` -- the file key, default ``alias/psyml``;
* ``PSYML_KEY_REGION`` -- its region. psyml's default, ``ap-southeast-2`` (its authors are in Sydney),
  applies only where something asks for it: for ``encrypt`` and ``refresh`` the region is
  ``PSYML_KEY_REGION`` when set, else the region of the file's ``encrypted_with`` key, else the manifest's
  own ``region`` (:func:`file_key_region`), so ``--create-key`` never makes a key on another continent
  unasked.

New values are encrypted under the *operator's* key (``--key``, else ``PSYML_KEY_ALIAS``), never under
whatever key the file's ``encrypted_with`` names: a pull request could point it at a key its author can
decrypt. A file whose ``encrypted_with`` differs is refused (:class:`FileKeyMismatchError`) unless the
caller explicitly says to use the file's key.

The file key is *not* the key SSM uses for the parameters (``kmskey`` in the file). psyml's README says it
creates the alias when missing; psyml 0.2.2 does not. We create it only when asked (``--create-key``).

Example::

    cipher = PsymlCipher()
    blob = cipher.encrypt("api_token", "s3cr3t", cipher.key_arn())
    assert cipher.decrypt("api_token", blob) == "s3cr3t"
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pydantic import SecretStr

from flytekitplugins_awssecrets.errors import AwsSecretsError
from flytekitplugins_awssecrets.manifest.awsclient import (
    AwsCallError,
    describe_error,
    error_code,
    make_client,
)
from flytekitplugins_awssecrets.manifest.model import Manifest, Parameter, SecretEntry

__all__ = [
    "DEFAULT_KEY_ALIAS",
    "DEFAULT_KEY_REGION",
    "DecryptError",
    "FileKeyMismatchError",
    "file_key_region",
    "PsymlCipher",
    "key_alias",
    "key_region",
    "encrypt_manifest",
    "decrypt_manifest",
    "refresh_manifest",
    "decrypted_values",
]

DEFAULT_KEY_ALIAS = "alias/psyml"
DEFAULT_KEY_REGION = "ap-southeast-2"
#: KMS calls in flight at once when a file has many entries.
CONCURRENCY = 8

T = TypeVar("T")


def key_alias() -> str:
    return os.environ.get("PSYML_KEY_ALIAS") or DEFAULT_KEY_ALIAS


def key_region() -> str:
    return os.environ.get("PSYML_KEY_REGION") or DEFAULT_KEY_REGION


class DecryptError(AwsSecretsError, ValueError):
    """A value in the file does not decrypt (bad base64, wrong entry name, foreign ciphertext): exit 2.

    Example::

        try:
            PsymlCipher().decrypt("renamed_entry", ciphertext)
        except DecryptError as e:
            print(e.reference, e.reason)  # renamed_entry the ciphertext does not decrypt for this entry name
    """


class FileKeyMismatchError(AwsSecretsError, ValueError):
    """The file's ``encrypted_with`` is not the operator's key: new values would go under a key the file
    chose. Names both keys.

    Example::

        >>> str(FileKeyMismatchError("app.yml", "arn:aws:kms:us-east-1:1:key/theirs", "arn:aws:kms:us-east-1:1:key/ours", "PSYML_KEY_ALIAS"))  # doctest: +ELLIPSIS
        "app.yml: its encrypted_with is arn:aws:kms:us-east-1:1:key/theirs, not the file key arn:aws:kms:us-east-1:1:key/ours (from PSYML_KEY_ALIAS) ..."
    """

    def __init__(self, file: str, file_key: str, operator_key: str, source: str) -> None:
        self.file_key = file_key
        self.operator_key = operator_key
        super().__init__(
            file,
            f"its encrypted_with is {file_key}, not the file key {operator_key} (from {source}); new values "
            "are encrypted under the operator's key only",
            "if the file's key is the right one, pass --key with it (or set PSYML_KEY_ALIAS), or "
            "--use-file-key to encrypt under it on purpose; to move the file to your key, run "
            "`manifest refresh`",
        )


def file_key_region(m: Manifest) -> tuple[str, str]:
    """The region of the file key for ``m`` and why: ``PSYML_KEY_REGION`` when set, else the region of the
    file's ``encrypted_with`` key, else the manifest's ``region``."""
    env = os.environ.get("PSYML_KEY_REGION")
    if env:
        return env, "PSYML_KEY_REGION"
    of_file = _region_of(m.encrypted_with)
    if of_file:
        return of_file, "the region of the file's encrypted_with key"
    return m.region, "the manifest's region (PSYML_KEY_REGION is not set)"


def _context(name: str) -> dict[str, str]:
    return {"Client": "psyml", "Name": name}


def _region_of(key_arn: str | None) -> str | None:
    # arn:aws:kms:<region>:<account>:key/<id>
    if key_arn and key_arn.startswith("arn:") and key_arn.count(":") >= 5:
        return key_arn.split(":")[3] or None
    return None


class PsymlCipher:
    """KMS encryption of single values, psyml's way. Thread-safe; one client per region.

    ``region`` defaults to ``PSYML_KEY_REGION``, ``alias`` to ``PSYML_KEY_ALIAS``.

    Example::

        c = PsymlCipher(region="us-east-1")
        c.decrypt("api_token", "AQICAHi...")
    """

    def __init__(self, region: str | None = None, alias: str | None = None) -> None:
        self.region = region or key_region()
        self.alias = alias or key_alias()
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _kms(self, region: str | None = None) -> Any:
        r = region or self.region
        with self._lock:
            if r not in self._clients:
                self._clients[r] = make_client("kms", r, CONCURRENCY)
            return self._clients[r]

    def key_arn(self, create: bool = False) -> str:
        """The ARN of the key the alias points at; with ``create``, make key and alias when missing."""
        return self.find_or_create_key(create)[0]

    def find_or_create_key(self, create: bool = False) -> tuple[str, bool]:
        """``(ARN, created)``: the key the alias points at, or (with ``create``) a new key and alias."""
        try:
            return str(self._kms().describe_key(KeyId=self.alias)["KeyMetadata"]["Arn"]), False
        except Exception as e:  # noqa: BLE001 - every boto failure becomes one typed error
            if error_code(e) != "NotFoundException":
                raise self._aws_error(self.alias, e) from None
        if not create:
            raise AwsCallError(
                self.alias,
                f"no such KMS key in {self.region}",
                "NotFoundException",
                "run `pyflyte-awssecrets manifest encrypt --create-key FILE`, or set PSYML_KEY_ALIAS / "
                "PSYML_KEY_REGION to an existing key",
            )
        try:
            kms = self._kms()
            meta = kms.create_key(Description="psyml / pyflyte-awssecrets manifest file key")["KeyMetadata"]
            kms.create_alias(AliasName=self.alias, TargetKeyId=meta["KeyId"])
            return str(meta["Arn"]), True
        except Exception as e:  # noqa: BLE001
            raise self._aws_error(
                self.alias, e, "creating the key needs kms:CreateKey and kms:CreateAlias"
            ) from None

    def encrypt(self, name: str, plaintext: str, key_id: str) -> str:
        """Base64 ciphertext of ``plaintext`` under ``key_id``, bound to the entry ``name``."""
        kms = self._kms(_region_of(key_id))
        try:
            blob = kms.encrypt(KeyId=key_id, Plaintext=plaintext.encode(), EncryptionContext=_context(name))
        except Exception as e:  # noqa: BLE001
            raise self._aws_error(name, e, values=[plaintext]) from None
        return base64.b64encode(blob["CiphertextBlob"]).decode()

    def decrypt(self, name: str, ciphertext: str, key_hint: str | None = None) -> str:
        """The plain text of a base64 ciphertext made for entry ``name``.

        ``key_hint`` (the file's ``encrypted_with``) only chooses the region to call; KMS finds the key
        from the ciphertext itself.
        """
        try:
            blob = base64.b64decode(ciphertext, validate=True)
        except (binascii.Error, ValueError):
            raise DecryptError(name, "the value is not base64 ciphertext") from None
        kms = self._kms(_region_of(key_hint))
        try:
            out = kms.decrypt(CiphertextBlob=blob, EncryptionContext=_context(name))
        except Exception as e:  # noqa: BLE001
            if error_code(e) == "InvalidCiphertextException":
                raise DecryptError(
                    name,
                    "the ciphertext does not decrypt for this entry name",
                    "a ciphertext is bound to the name it was encrypted for: was the entry renamed, or the "
                    "value copied from another entry or file?",
                ) from None
            raise self._aws_error(name, e) from None
        try:
            return bytes(out["Plaintext"]).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptError(name, "the decrypted value is not UTF-8 text") from None

    def _aws_error(
        self, ref: str, e: BaseException, hint: str = "", values: Sequence[str] = ()
    ) -> AwsCallError:
        code, message = describe_error(e, values)
        if code in ("AccessDeniedException", "AccessDenied") and not hint:
            hint = "grant kms:Encrypt, kms:Decrypt and kms:DescribeKey on the file key"
        return AwsCallError(ref, f"KMS call failed: {message}", code, hint)


def _parallel(fn: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
    """Map ``fn`` over ``items`` with a few threads; re-raises the first error in file order."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        futures = [pool.submit(fn, i) for i in items]
        return [f.result() for f in futures]


def _param_with(p: Parameter, type_: str, value: str | None) -> Parameter:
    data: dict[str, Any] = {"name": p.name, "description": p.description, "type": type_}
    # Wrapped before validation: a ValidationError's text includes its input, which must stay masked.
    data["value"] = p.value if value is None else SecretStr(value)
    return Parameter.model_validate(data)


def _secret_with(s: SecretEntry, value: str, encrypted: bool) -> SecretEntry:
    return s.model_copy(update={"value": type(s.value)(value), "encrypted": encrypted})


def encrypt_manifest(
    m: Manifest,
    cipher: PsymlCipher,
    key_id: str | None = None,
    *,
    use_file_key: bool = False,
    file: str = "manifest",
    key_source: str = "PSYML_KEY_ALIAS",
) -> Manifest:
    """Encrypt every plain secure value (``SecureString`` params, unencrypted secrets); others are kept.

    Like psyml, types are written lowercase afterwards and ``encrypted_with`` records the key. New values go
    under the operator's key (``key_id``, else the alias's current key); a file whose ``encrypted_with``
    names another key raises :class:`FileKeyMismatchError` before anything is encrypted, unless
    ``use_file_key`` (then the file's key is used, on purpose).
    """
    if use_file_key and m.encrypted_with:
        key = m.encrypted_with
    else:
        key = key_id or cipher.key_arn()
        if m.encrypted_with and m.encrypted_with != key:
            raise FileKeyMismatchError(file, m.encrypted_with, key, key_source)

    def one_param(p: Parameter) -> Parameter:
        if p.type == "SecureString":
            return _param_with(p, "securestring", cipher.encrypt(p.name, p.text(), key))
        return _param_with(p, p.type.lower(), None)

    def one_secret(s: SecretEntry) -> SecretEntry:
        if s.encrypted:
            return s
        return _secret_with(s, cipher.encrypt(s.name, s.value.get_secret_value(), key), True)

    params = _parallel(one_param, m.parameters)
    secrets = _parallel(one_secret, m.secrets)
    return m.model_copy(update={"parameters": params, "secrets": secrets, "encrypted_with": key})


def decrypt_manifest(m: Manifest, cipher: PsymlCipher) -> Manifest:
    """Every value in plain text, types in SSM's spelling, no ``encrypted_with`` (psyml's ``decrypt``)."""

    def one_param(p: Parameter) -> Parameter:
        canonical = p.ssm_type
        if p.encrypted:
            return _param_with(p, canonical, cipher.decrypt(p.name, p.text(), m.encrypted_with))
        return _param_with(p, canonical, None)

    def one_secret(s: SecretEntry) -> SecretEntry:
        if not s.encrypted:
            return s
        return _secret_with(s, cipher.decrypt(s.name, s.value.get_secret_value(), m.encrypted_with), False)

    params = _parallel(one_param, m.parameters)
    secrets = _parallel(one_secret, m.secrets)
    return m.model_copy(update={"parameters": params, "secrets": secrets, "encrypted_with": None})


def refresh_manifest(m: Manifest, cipher: PsymlCipher, force: bool = False) -> tuple[Manifest, bool]:
    """Re-encrypt every secure value under the alias's *current* key (after a key rotation or change).

    Returns ``(manifest, changed)``; unchanged when the file is already under the current key, unless
    ``force``.
    """
    current = cipher.key_arn()
    if m.encrypted_with == current and not force:
        return m, False
    plain = decrypt_manifest(m, cipher)
    # Everything secure is encrypted again, including values that were still plain in the file.
    again = encrypt_manifest(plain.model_copy(update={"encrypted_with": None}), cipher, current)
    return again, True


def decrypted_values(m: Manifest, cipher: PsymlCipher | None) -> Manifest:
    """``m`` with every value in plain text; no KMS call (and no cipher needed) when nothing is encrypted."""
    if not m.encrypted_any:
        return _canonical(m)
    if cipher is None:
        cipher = PsymlCipher()
    return decrypt_manifest(m, cipher)


def _canonical(m: Manifest) -> Manifest:
    params = [_param_with(p, p.ssm_type, None) for p in m.parameters]
    return m.model_copy(update={"parameters": params, "encrypted_with": None})
