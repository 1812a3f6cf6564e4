"""COSE_Sign1 (RFC 9052 §4.2, §4.4) with EdDSA over Ed25519, written with cbor2.

    COSE_Sign1 = #6.18([protected: bstr .cbor header_map, unprotected: header_map, payload: bstr, signature: bstr])
    Sig_structure = ["Signature1", protected, external_aad = h'', payload]

The protected header carries alg (-8, EdDSA), the key id and a content type, so a root-signed key
statement can never be replayed as a manifest (the type is under the signature).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tinymlops.bundle import cbor
from tinymlops.bundle.reasons import BundleError, Reason

COSE_SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4
ALG_EDDSA = -8
# Unprotected header carrying the root-signed statement of the signing key (itself a COSE_Sign1),
# like x5chain carries a certificate: it needs no protection of its own because it is signed.
HEADER_KEY_STATEMENT = "tinymlops-key-statement"
ED25519_SIGNATURE_BYTES = 64

CONTENT_MANIFEST = "application/tinymlops-manifest+cbor"
CONTENT_KEY_STATEMENT = "application/tinymlops-key-statement+cbor"
CONTENT_REVOCATIONS = "application/tinymlops-revocations+cbor"
CONTENT_RECOVERY = "application/tinymlops-recovery+cbor"
CONTENT_QUOTA = "application/tinymlops-quota+cbor"


@dataclass(frozen=True)
class Sign1:
    protected: bytes  # exactly as received: the signature covers these bytes, not a re-encoding
    kid: bytes
    content_type: str
    payload: bytes
    signature: bytes
    unprotected: Mapping[Any, Any] = field(default_factory=dict)

    def sig_structure(self) -> bytes:
        return sig_structure(self.protected, self.payload)


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    return cbor2.dumps(["Signature1", protected, external_aad, payload])


def encode_sign1(
    payload: bytes,
    key: Ed25519PrivateKey,
    kid: bytes,
    content_type: str,
    unprotected: Mapping[Any, Any] | None = None,
) -> bytes:
    protected = cbor.dumps({HEADER_ALG: ALG_EDDSA, HEADER_CONTENT_TYPE: content_type, HEADER_KID: kid})
    signature = key.sign(sig_structure(protected, payload))
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, dict(unprotected or {}), payload, signature]))


PROTECTED_LABELS = (HEADER_ALG, HEADER_CONTENT_TYPE, HEADER_KID)
# a manifest carries its signing key's statement, a quota token its metering key's statement
UNPROTECTED_LABELS = {
    CONTENT_MANIFEST: frozenset({HEADER_KEY_STATEMENT}),
    CONTENT_QUOTA: frozenset({HEADER_KEY_STATEMENT}),
}


def decode_sign1(
    data: bytes, what: str, expected_content_type: str, unprotected_labels: frozenset[str] | None = None
) -> Sign1:
    """Parse a tagged COSE_Sign1 strictly; no trust decision yet.

    The protected header is exactly {alg, content type, kid}: any other label (crit included) is
    refused, so no header the verifier does not understand can ride along. The unprotected header
    may hold only `unprotected_labels` (default: a manifest and a quota token their key statement,
    root-signed objects nothing), so the same signed bytes cannot be re-wrapped into many different files."""
    if unprotected_labels is None:
        unprotected_labels = UNPROTECTED_LABELS.get(expected_content_type, frozenset())
    obj = cbor.loads(data, what)
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise BundleError(Reason.MALFORMED, f"{what}: not a tagged COSE_Sign1 (CBOR tag 18)")
    value = obj.value
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise BundleError(Reason.MALFORMED, f"{what}: COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = value
    for name, item in (("protected", protected), ("payload", payload), ("signature", signature)):
        if not isinstance(item, bytes):
            raise BundleError(Reason.MALFORMED, f"{what}: {name} must be a byte string")
    if not isinstance(unprotected, Mapping):
        raise BundleError(Reason.MALFORMED, f"{what}: unprotected header must be a map")
    header = cbor.loads(protected, f"{what} protected header")
    if not isinstance(header, Mapping):
        raise BundleError(Reason.MALFORMED, f"{what}: protected header must be a map")
    if set(header) & set(unprotected):
        raise BundleError(Reason.MALFORMED, f"{what}: a header label is both protected and unprotected")
    if any(type(label) is not str or label not in unprotected_labels for label in unprotected):
        raise BundleError(Reason.MALFORMED, f"{what}: unexpected unprotected header label")
    if len(header) != len(PROTECTED_LABELS) or any(
        type(label) is not int or label not in PROTECTED_LABELS for label in header
    ):
        raise BundleError(Reason.MALFORMED, f"{what}: protected header must hold exactly alg, content type and kid")
    if type(header.get(HEADER_ALG)) is not int or header.get(HEADER_ALG) != ALG_EDDSA:
        raise BundleError(Reason.MALFORMED, f"{what}: alg must be EdDSA (-8), got {header.get(HEADER_ALG)!r}")
    kid = header.get(HEADER_KID)
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= 64:
        raise BundleError(Reason.MALFORMED, f"{what}: protected kid must be a byte string of 1..64 bytes")
    content_type = header.get(HEADER_CONTENT_TYPE)
    if content_type != expected_content_type:
        raise BundleError(Reason.MALFORMED, f"{what}: content type {content_type!r}, expected {expected_content_type}")
    if len(signature) != ED25519_SIGNATURE_BYTES:
        raise BundleError(Reason.MALFORMED, f"{what}: signature is {len(signature)} bytes, Ed25519 needs 64")
    return Sign1(protected, kid, content_type, payload, signature, unprotected)


def verify_sign1(message: Sign1, key: Ed25519PublicKey, what: str) -> None:
    try:
        key.verify(message.signature, message.sig_structure())
    except InvalidSignature:
        raise BundleError(
            Reason.BAD_SIGNATURE, f"{what}: signature does not verify (kid {message.kid.hex()})"
        ) from None
