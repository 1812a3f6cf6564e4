"""Attestation evidence: what a device says about itself, signed with its own Ed25519 key.

    COSE_Sign1 (tag 18), protected {alg: EdDSA (-8), content type: application/eat+cwt,
    kid: the first 8 bytes of SHA-256(device public key)}, no unprotected header, payload the
    deterministic CBOR map of Entity Attestation Token claims (RFC 9711) and private claims:

        10   eat_nonce     bstr 8..64   the verifier's nonce (a rollout's, or a one-time challenge)
        256  ueid          bstr 17      0x01 (RAND) || the 16-byte device id of the provisioning page
        267  bootcount     uint         boots counted in the state log (power-cut safe, never lower)
        -1   running slot  uint / null
        -2   slots         [[state, sequence, payload SHA-256 / null] × 2]; state 0 empty,
                           1 active, 2 pending (on trial), 3 inactive
        -3   anti-rollback floor          -4  revocation list version
        -5   inference counter            -6  class id (bstr 16)
        -7   running sequence             -8  state record number (grows with every state change)
        -9   quota token serial           -10 quota limit (counter value where inference stops)

The C agent (firmware/agent/src/attest.c) writes exactly these bytes; `sign_evidence` is the
same encoder in Python for simulated devices. RFC 9711's measurements claim (273) wants typed
measurement formats (CoSWID …); the slot digests are a private claim until a format fits.

Telemetry windows are signed the same way (`sign_payload`, content type
application/tinymlops-telemetry+json, the window's JSON bytes as payload).
"""

from __future__ import annotations

import hashlib
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from tinymlops.bundle import cbor, cose
from tinymlops.bundle.reasons import BundleError, Reason

CONTENT_EVIDENCE = "application/eat+cwt"
CONTENT_TELEMETRY = "application/tinymlops-telemetry+json"
MAX_EVIDENCE_BYTES = 1024
MAX_SIGNED_TELEMETRY_BYTES = 64 * 1024
SLOT_STATES = ("empty", "active", "pending", "inactive")
_INT = (-1, -3, -4, -5, -7, -8, -9, -10, 267)
_KEYS = {10, 256, 267, -1, -2, -3, -4, -5, -6, -7, -8, -9, -10}
BOOTCOUNT = 267  # RFC 9711 bootcount


class SlotClaim(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    state: str
    sequence: int = Field(ge=0)
    digest: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="payload SHA-256 (hex)")


class Evidence(BaseModel):
    """The claims of one verified evidence report (DESIGN.md's shared type)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    nonce: bytes
    device_id: uuid.UUID
    class_id: uuid.UUID
    running_slot: int | None
    slots: tuple[SlotClaim, SlotClaim]
    floor: int = Field(ge=0)
    revocation_version: int = Field(ge=0)
    inference_count: int = Field(ge=0)
    running_sequence: int = Field(ge=0)
    state_record: int = Field(ge=0)
    quota_serial: int = Field(ge=0)
    quota_limit: int = Field(ge=0)
    boot_count: int = Field(ge=0)

    def running_digest(self) -> str | None:
        """The payload digest of the slot the device runs, if it is the active one."""
        if self.running_slot is None:
            return None
        slot = self.slots[self.running_slot]
        return slot.digest if slot.state == "active" else None

    def to_claims(self) -> dict:
        def slot(s: SlotClaim) -> list:
            return [SLOT_STATES.index(s.state), s.sequence, bytes.fromhex(s.digest) if s.digest else None]

        return {
            10: self.nonce,
            256: b"\x01" + self.device_id.bytes,
            -1: self.running_slot,
            -2: [slot(s) for s in self.slots],
            -3: self.floor,
            -4: self.revocation_version,
            -5: self.inference_count,
            -6: self.class_id.bytes,
            -7: self.running_sequence,
            -8: self.state_record,
            -9: self.quota_serial,
            -10: self.quota_limit,
            BOOTCOUNT: self.boot_count,
        }


def device_kid(public_key: bytes) -> bytes:
    return hashlib.sha256(public_key).digest()[:8]


def sign_payload(payload: bytes, key: Ed25519PrivateKey, content_type: str) -> bytes:
    """A COSE_Sign1 by a device key (kid = its 8-byte key id)."""
    return cose.encode_sign1(payload, key, device_kid(key.public_key().public_bytes_raw()), content_type)


def sign_evidence(evidence: Evidence, key: Ed25519PrivateKey) -> bytes:
    return sign_payload(cbor.dumps(evidence.to_claims()), key, CONTENT_EVIDENCE)


def verify_signed(data: bytes, public_key: bytes, content_type: str, what: str, limit: int) -> bytes:
    """The payload of a COSE_Sign1 by `public_key`; BundleError otherwise (never echoes the bytes)."""
    if len(data) > limit:
        raise BundleError(Reason.MALFORMED, f"{what}: {len(data)} bytes, at most {limit}")
    message = cose.decode_sign1(data, what, content_type)
    if message.kid != device_kid(public_key):
        raise BundleError(Reason.KEY_MISMATCH, f"{what}: signed by key {message.kid.hex()}, not this device's")
    cose.verify_sign1(message, Ed25519PublicKey.from_public_bytes(public_key), what)
    return message.payload


def verify_evidence(data: bytes, public_key: bytes) -> Evidence:
    """Decode and verify an evidence report against the device's enrolled public key."""
    payload = verify_signed(data, public_key, CONTENT_EVIDENCE, "evidence", MAX_EVIDENCE_BYTES)
    c = cbor.loads(payload, "evidence claims")
    if not isinstance(c, dict) or set(c) != _KEYS:
        missing = sorted(_KEYS - set(c)) if isinstance(c, dict) else []
        detail = f" (missing {', '.join(map(str, missing))})" if missing and set(c) <= _KEYS else ""
        raise BundleError(Reason.MALFORMED, f"evidence: unexpected claim set{detail}")
    for k in _INT:
        if k == -1 and c[k] is None:
            continue
        if type(c[k]) is not int or c[k] < 0:
            raise BundleError(Reason.MALFORMED, f"evidence claim {k}: expected a non-negative integer")
    ueid, nonce, class_id = c[256], c[10], c[-6]
    if not (isinstance(ueid, bytes) and len(ueid) == 17 and ueid[0] == 1):
        raise BundleError(Reason.MALFORMED, "evidence: ueid must be 0x01 || 16 bytes")
    if not (isinstance(nonce, bytes) and 8 <= len(nonce) <= 64) or not (
        isinstance(class_id, bytes) and len(class_id) == 16
    ):
        raise BundleError(Reason.MALFORMED, "evidence: nonce or class id malformed")
    slots = c[-2]
    if not (isinstance(slots, list) and len(slots) == 2):
        raise BundleError(Reason.MALFORMED, "evidence: slots must be two entries")
    parsed = []
    for s in slots:
        ok = isinstance(s, list) and len(s) == 3 and type(s[0]) is int and 0 <= s[0] < len(SLOT_STATES)
        ok = ok and type(s[1]) is int and s[1] >= 0 and (s[2] is None or (isinstance(s[2], bytes) and len(s[2]) == 32))
        if not ok:
            raise BundleError(Reason.MALFORMED, "evidence: slot claim malformed")
        parsed.append(SlotClaim(state=SLOT_STATES[s[0]], sequence=s[1], digest=s[2].hex() if s[2] else None))
    if c[-1] is not None and c[-1] not in (0, 1):
        raise BundleError(Reason.MALFORMED, "evidence: running slot must be 0, 1 or null")
    return Evidence(
        nonce=nonce,
        device_id=uuid.UUID(bytes=ueid[1:]),
        class_id=uuid.UUID(bytes=class_id),
        running_slot=c[-1],
        slots=(parsed[0], parsed[1]),
        floor=c[-3],
        revocation_version=c[-4],
        inference_count=c[-5],
        running_sequence=c[-7],
        state_record=c[-8],
        quota_serial=c[-9],
        quota_limit=c[-10],
        boot_count=c[BOOTCOUNT],
    )
