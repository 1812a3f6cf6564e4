"""What a device holds and checks: the root public key, root-signed key statements for signing keys,
and the root-signed revocation list. Nothing here touches private keys."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinymlops.bundle import cbor, cose
from tinymlops.bundle.manifest import MAX_UNIX_SECONDS
from tinymlops.bundle.reasons import BundleError, Reason

MAX_SIGNED_OBJECT = 64 * 1024  # statements and revocation lists are small; refuse anything larger
KEY_PURPOSE: Final = "bundle-signing"
# a metering key: signs quota tokens (tinymlops.bundle.quota), never bundles; a bundle-signing key
# never signs quota tokens. The device checks the purpose under the root's signature.
QUOTA_PURPOSE: Final = "quota-signing"
KeyPurpose = Literal["bundle-signing", "quota-signing"]


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256 of the raw public key, hex: short, stable, reveals nothing."""
    return hashlib.sha256(raw_public(key)).digest()[:8].hex()


def _from_seconds(value: Any, what: str) -> datetime:
    if type(value) is not int or not 0 <= value <= MAX_UNIX_SECONDS:
        raise BundleError(Reason.MALFORMED, f"{what}: expected whole Unix seconds")
    return datetime.fromtimestamp(value, timezone.utc)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="hex", val_json_bytes="hex")


class TrustAnchor(_Model):
    """The root public key a device is flashed with; the only thing it must trust."""

    public_key: bytes = Field(min_length=32, max_length=32, description="raw Ed25519 public key")

    @property
    def kid(self) -> str:
        return hashlib.sha256(self.public_key).digest()[:8].hex()

    def key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)

    @classmethod
    def from_key(cls, key: Ed25519PublicKey) -> TrustAnchor:
        return cls(public_key=raw_public(key))

    def pem(self) -> bytes:
        return self.key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_trust(path: Path | str) -> TrustAnchor:
    """Read a root public key (PEM SubjectPublicKeyInfo, as `keys init` writes root.pub)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(Reason.UNTRUSTED_KEY, f"{path}: trust anchor file not found")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError:
        raise BundleError(Reason.MALFORMED, f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(Reason.MALFORMED, f"{path}: trust anchor must be an Ed25519 public key")
    return TrustAnchor.from_key(key)


def _check_size(data: bytes, what: str) -> None:
    if not isinstance(data, bytes) or len(data) > MAX_SIGNED_OBJECT:
        raise BundleError(Reason.MALFORMED, f"{what}: not bytes or larger than {MAX_SIGNED_OBJECT} bytes")


def _verified_by_root(data: bytes, trust: TrustAnchor, what: str, content_type: str) -> Any:
    """Decode a root-signed COSE_Sign1 and return its decoded payload; any doubt → UNTRUSTED_KEY."""
    _check_size(data, what)
    message = cose.decode_sign1(data, what, content_type)
    if message.kid.hex() != trust.kid:
        raise BundleError(Reason.UNTRUSTED_KEY, f"{what}: signed by {message.kid.hex()}, trusted root is {trust.kid}")
    try:
        cose.verify_sign1(message, trust.key(), what)
    except BundleError:
        raise BundleError(Reason.UNTRUSTED_KEY, f"{what}: not signed by the trusted root {trust.kid}") from None
    return cbor.loads(message.payload, f"{what} payload")


# -- key statements ------------------------------------------------------------------------------
class KeyStatement(_Model):
    """Root's word that `public_key` (id `kid`) may sign bundles (purpose bundle-signing) or quota
    tokens (purpose quota-signing) between valid_from and valid_until."""

    kid: str = Field(pattern=r"^[0-9a-f]{16}$")
    public_key: bytes = Field(min_length=32, max_length=32)
    valid_from: datetime
    valid_until: datetime
    purpose: KeyPurpose = KEY_PURPOSE

    def key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)

    def to_wire(self) -> bytes:
        return cbor.dumps(
            {
                "kid": self.kid,
                "public_key": self.public_key,
                "valid_from": int(self.valid_from.timestamp()),
                "valid_until": int(self.valid_until.timestamp()),
                "purpose": self.purpose,
            }
        )


def verify_statement(data: bytes, trust: TrustAnchor, purpose: KeyPurpose = KEY_PURPOSE) -> KeyStatement:
    """A key statement proven to come from the trusted root for `purpose` (validity times are checked
    by the caller). A well-formed statement for the other purpose → UNTRUSTED_KEY: the root did not
    trust that key for this."""
    obj = _verified_by_root(data, trust, "key statement", cose.CONTENT_KEY_STATEMENT)
    if not isinstance(obj, dict) or set(obj) != {"kid", "public_key", "valid_from", "valid_until", "purpose"}:
        raise BundleError(Reason.MALFORMED, "key statement: expected kid, public_key, valid_from, valid_until, purpose")
    try:
        statement = KeyStatement.model_validate(
            {
                **obj,
                "valid_from": _from_seconds(obj["valid_from"], "key statement valid_from"),
                "valid_until": _from_seconds(obj["valid_until"], "key statement valid_until"),
            },
            strict=True,
        )
    except ValidationError as exc:
        raise BundleError(Reason.MALFORMED, f"key statement.{exc.errors()[0]['loc'][0]}: invalid") from None
    if hashlib.sha256(statement.public_key).digest()[:8].hex() != statement.kid:
        raise BundleError(Reason.MALFORMED, f"key statement: kid {statement.kid} is not the id of its public key")
    if statement.purpose != purpose:
        raise BundleError(
            Reason.UNTRUSTED_KEY, f"key {statement.kid} is certified for {statement.purpose}, not {purpose}"
        )
    return statement


# -- revocation ----------------------------------------------------------------------------------
class RevocationList(_Model):
    """Root-signed list of revoked signing-key ids. `sequence` grows with every list the root issues,
    so a device keeps the highest it has seen and refuses an older list (no revocation rollback)."""

    sequence: int = Field(ge=0)
    issued: datetime
    revoked: list[str] = []
    signed: bytes = Field(b"", description="the COSE_Sign1 it was read from, to store or forward")

    def to_wire(self) -> bytes:
        return cbor.dumps({"sequence": self.sequence, "issued": int(self.issued.timestamp()), "revoked": self.revoked})

    @classmethod
    def verify(cls, data: bytes, trust: TrustAnchor) -> RevocationList:
        obj = _verified_by_root(data, trust, "revocation list", cose.CONTENT_REVOCATIONS)
        if not isinstance(obj, dict) or set(obj) != {"sequence", "issued", "revoked"}:
            raise BundleError(Reason.MALFORMED, "revocation list: expected sequence, issued, revoked")
        revoked = obj["revoked"]
        if type(obj["sequence"]) is not int or obj["sequence"] < 0:
            raise BundleError(Reason.MALFORMED, "revocation list.sequence: expected a non-negative integer")
        if not isinstance(revoked, list) or not all(isinstance(k, str) for k in revoked):
            raise BundleError(Reason.MALFORMED, "revocation list.revoked: expected a list of key ids")
        issued = _from_seconds(obj["issued"], "revocation list issued")
        return cls(sequence=obj["sequence"], issued=issued, revoked=revoked, signed=data)


def load_revocations(path: Path | str, trust: TrustAnchor) -> RevocationList:
    path = Path(path)
    if not path.is_file():
        raise BundleError(Reason.MALFORMED, f"{path}: revocation list not found")
    return RevocationList.verify(path.read_bytes(), trust)
