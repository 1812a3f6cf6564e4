"""One test per attack on a bundle (TUF's attack list as checklist), each named after its attack.

Every test drives the real verify_bundle — the function the CLI, the device emulator and the fleet
server call — with real Ed25519 keys, real AES-GCM and real files, and asserts the precise Reason.
Several attacks share a failure kind (a flipped signature byte and an edited field both end as
BAD_SIGNATURE: both are "this is not what the key signed"); the detail then says more.
"""

from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.bundle_keys import NOW, keys, signer, trust  # noqa: F401  (shared fixtures)
from tinymlops.bundle import (
    ManifestDraft,
    Reason,
    Signer,
    TrustAnchor,
    build_bundle,
    cbor,
    class_uuid,
    container,
    cose,
    generate_kek,
    init_keys,
    load_signer,
    load_trust,
    revoke_key,
    rotate_signing_key,
    verify_bundle,
)
from tinymlops.bundle import manifest as mf

VENDOR, DEVICE_CLASS = "acme.example", "cortex-m4f-256k"


def draft(sequence: int = 7, device_class: str = DEVICE_CLASS, lifetime_days: float = 30) -> ManifestDraft:
    return ManifestDraft(
        model_name="kws",
        model_version=f"1.{sequence}",
        sequence=sequence,
        vendor=VENDOR,
        device_class=device_class,
        arena_bytes=24_000,
        ops=["CONV_2D", "FULLY_CONNECTED", "SOFTMAX"],
        lifetime=timedelta(days=lifetime_days),
    )


@pytest.fixture
def payload() -> bytes:
    return os.urandom(40_000)


def make(tmp_path: Path, signer: Signer, payload: bytes, name: str = "b", kek: bytes | None = None, **kw) -> bytes:
    out = tmp_path / f"{name}.bundle"
    build_bundle(payload, draft(**kw), signer, out, kek, now=NOW)
    return out.read_bytes()


def split(bundle: bytes) -> tuple[bytes, bytes]:
    fp = io.BytesIO(bundle)
    signed = container.read_signed_manifest(fp)
    return signed, fp.read()


def join(signed: bytes, payload: bytes) -> bytes:
    return container.header(len(signed)) + signed + payload


def check(bundle: bytes | io.RawIOBase, trust: TrustAnchor, reason: Reason, **kw):
    result = verify_bundle(io.BytesIO(bundle) if isinstance(bundle, bytes) else bundle, trust, now=NOW, **kw)
    assert not result.ok, result.detail
    assert result.reason is reason, f"{result.reason}: {result.detail}"
    return result


def test_genuine_bundle_is_accepted(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    """The control: without an attack the same checks pass, so every rejection below is the attack's."""
    sink = io.BytesIO()
    result = verify_bundle(
        io.BytesIO(make(tmp_path, signer, payload)),
        trust,
        device_class=class_uuid(VENDOR, DEVICE_CLASS),
        min_sequence=7,
        now=NOW,
        sink=sink,
    )
    assert result.ok and result.reason is None and result.manifest is not None
    assert sink.getvalue() == payload


def test_payload_byte_flipped(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    bundle = bytearray(make(tmp_path, signer, payload))
    bundle[-1000] ^= 0x01
    result = check(bytes(bundle), trust, Reason.PAYLOAD_DIGEST_MISMATCH)
    assert result.manifest is not None  # the manifest itself was genuine


def test_signature_byte_flipped(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    signed, body = split(make(tmp_path, signer, payload))
    tag = cbor.loads(signed, "test")
    protected, unprotected, manifest_bytes, signature = tag.value
    forged = bytes([signature[0] ^ 0x80]) + signature[1:]
    resigned = cbor.dumps(type(tag)(18, [protected, dict(unprotected), manifest_bytes, forged]))
    result = check(join(resigned, body), trust, Reason.BAD_SIGNATURE)
    assert result.manifest is None  # nothing unauthenticated is handed back


def test_manifest_field_edited(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    """Raise the sequence number (to beat anti-rollback) without re-signing."""
    signed, body = split(make(tmp_path, signer, payload))
    tag = cbor.loads(signed, "test")
    protected, unprotected, manifest_bytes, signature = tag.value
    wire = cbor.loads(manifest_bytes, "test")
    wire["sequence"] = 10_000
    edited = cbor.dumps(type(tag)(18, [protected, dict(unprotected), cbor.dumps(wire), signature]))
    check(join(edited, body), trust, Reason.BAD_SIGNATURE, min_sequence=100)


def test_signed_by_untrusted_key(tmp_path: Path, trust: TrustAnchor, payload: bytes) -> None:
    """An attacker with a complete key hierarchy of their own: root, signing key, statement."""
    init_keys(tmp_path / "attacker", now=NOW - timedelta(days=1))
    bundle = make(tmp_path, load_signer(tmp_path / "attacker", now=NOW), payload)
    result = check(bundle, trust, Reason.UNTRUSTED_KEY)
    assert trust.kid in result.detail


def test_signed_by_untrusted_key_with_stolen_statement(
    tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes
) -> None:
    """The attacker's own signing key presented with the genuine root-signed statement of ours."""
    init_keys(tmp_path / "attacker", now=NOW - timedelta(days=1))
    rogue = load_signer(tmp_path / "attacker", now=NOW)
    thief = Signer(rogue._key, rogue.statement, rogue.statement_bytes)
    thief.statement_bytes = signer.statement_bytes  # carry our statement, sign with theirs
    check(make(tmp_path, thief, payload), trust, Reason.KEY_MISMATCH)


def test_signed_by_revoked_key(tmp_path: Path, payload: bytes) -> None:
    directory = tmp_path / "keys"
    init_keys(directory, now=NOW - timedelta(days=1))
    trust = load_trust(directory / "root.pub")
    old = load_signer(directory, now=NOW)
    bundle = make(tmp_path, old, payload)
    rotate_signing_key(directory, now=NOW)
    revocations = revoke_key(directory, old.kid, now=NOW)  # no reflash: devices get a new signed list
    result = check(bundle, trust, Reason.REVOKED_KEY, revocations=revocations)
    assert old.kid in result.detail
    # and the rotated key, under the same root, still works
    fresh = make(tmp_path, load_signer(directory, now=NOW), payload, name="fresh")
    assert verify_bundle(io.BytesIO(fresh), trust, now=NOW, revocations=revocations).ok


def test_signed_by_expired_key(tmp_path: Path, payload: bytes) -> None:
    directory = tmp_path / "keys"
    long_ago = NOW - timedelta(days=400)
    init_keys(directory, now=long_ago, validity=timedelta(days=365))
    signer = load_signer(directory, now=long_ago + timedelta(days=1))
    out = tmp_path / "old.bundle"
    build_bundle(payload, draft(lifetime_days=3650), signer, out, now=long_ago + timedelta(days=1))
    check(out.read_bytes(), load_trust(directory / "root.pub"), Reason.EXPIRED_KEY)


def test_rollback(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    """A genuine, properly signed but older release offered to a device that has installed 8."""
    old = make(tmp_path, signer, payload, sequence=7)
    result = check(old, trust, Reason.ROLLBACK, min_sequence=8)
    assert result.manifest is not None and result.manifest.sequence == 7


def test_wrong_device_class(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    bundle = make(tmp_path, signer, payload, device_class="cortex-m0-32k")
    check(bundle, trust, Reason.WRONG_CLASS, device_class=class_uuid(VENDOR, DEVICE_CLASS))


def test_expired_manifest(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    bundle = make(tmp_path, signer, payload, lifetime_days=30)
    result = verify_bundle(io.BytesIO(bundle), trust, now=NOW + timedelta(days=31))
    assert result.reason is Reason.EXPIRED_MANIFEST


def test_mix_and_match_manifest_and_payload(tmp_path: Path, signer: Signer, trust: TrustAnchor) -> None:
    """Manifest of release A (sequence 9, genuine) with the payload of release B (sequence 7, genuine)."""
    a = make(tmp_path, signer, os.urandom(30_000), name="a", sequence=9)
    b = make(tmp_path, signer, os.urandom(30_000), name="b", sequence=7)
    check(join(split(a)[0], split(b)[1]), trust, Reason.PAYLOAD_DIGEST_MISMATCH, min_sequence=9)


def test_mix_and_match_key_statements(tmp_path: Path, trust: TrustAnchor, keys: Path, payload: bytes) -> None:
    """A manifest signed by one genuine signing key, carrying the (genuine) statement of another."""
    directory = tmp_path / "keys"
    init_keys(directory, now=NOW - timedelta(days=1))
    first = load_signer(directory, now=NOW)
    rotate_signing_key(directory, now=NOW)
    second = load_signer(directory, now=NOW)
    signed, body = split(make(tmp_path, first, payload))
    message = cose.decode_sign1(signed, "test", cose.CONTENT_MANIFEST)
    swapped = cbor.dumps(
        cbor.cbor2.CBORTag(
            18,
            [
                message.protected,
                {cose.HEADER_KEY_STATEMENT: second.statement_bytes},
                message.payload,
                message.signature,
            ],
        )
    )
    check(join(swapped, body), load_trust(directory / "root.pub"), Reason.KEY_MISMATCH)


def test_truncated_payload(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    bundle = make(tmp_path, signer, payload)
    result = check(bundle[:-1], trust, Reason.PAYLOAD_TRUNCATED)
    assert f"{len(payload) - 1} of {len(payload)}" in result.detail


class EndlessStream(io.RawIOBase):
    """A bundle followed by an endless stream of bytes, counting how much the verifier pulls."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix, self.position = prefix, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = len(buffer)
        head = self.prefix[self.position : self.position + n]
        buffer[: len(head)] = head
        buffer[len(head) : n] = b"\x00" * (n - len(head))
        self.position += n
        return n


def test_endless_data(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    bundle = make(tmp_path, signer, payload)
    stream = EndlessStream(bundle)
    check(stream, trust, Reason.PAYLOAD_TOO_LONG)
    assert stream.position <= len(bundle) + 1  # stopped one byte past the declared size


def test_wrong_decryption_key(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    bundle = make(tmp_path, signer, payload, kek=generate_kek())
    sink = io.BytesIO()
    check(bundle, trust, Reason.WRONG_KEK, kek=generate_kek(), sink=sink)
    assert sink.getvalue() == b""  # refused before any plaintext was produced


def test_tampered_ciphertext(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    kek = generate_kek()
    bundle = bytearray(make(tmp_path, signer, payload, kek=kek))
    bundle[-5000] ^= 0x04
    check(bytes(bundle), trust, Reason.CIPHERTEXT_DIGEST_MISMATCH, kek=kek, sink=io.BytesIO())


def test_ciphertext_replayed_under_another_manifest(
    tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes
) -> None:
    """An insider re-signs release A's ciphertext (digests copied) under a manifest with another
    sequence: the signature is good, but the manifest is GCM's associated data, so the tag fails."""
    kek = generate_kek()
    signed, body = split(make(tmp_path, signer, payload, kek=kek))
    original = mf.decode(cose.decode_sign1(signed, "test", cose.CONTENT_MANIFEST).payload)
    replayed = original.model_copy(update={"sequence": original.sequence + 1})
    check(join(signer.sign(mf.encode(replayed)), body), trust, Reason.DECRYPTION_FAILED, kek=kek, sink=io.BytesIO())


def test_encrypted_bundle_without_key(tmp_path: Path, signer: Signer, trust: TrustAnchor, payload: bytes) -> None:
    bundle = make(tmp_path, signer, payload, kek=generate_kek())
    check(bundle, trust, Reason.MISSING_KEY, sink=io.BytesIO())


def test_key_statement_replayed_as_manifest(tmp_path: Path, signer: Signer, trust: TrustAnchor) -> None:
    """A root-signed object of another type (the key statement) offered as a manifest."""
    result = check(join(signer.statement_bytes, b""), trust, Reason.MALFORMED)
    assert "content type" in result.detail


def test_not_a_bundle(trust: TrustAnchor) -> None:
    check(b"\x7fELF" + bytes(100), trust, Reason.BAD_MAGIC)
    check(container.MAGIC + b"\x00\x02" + bytes(10), trust, Reason.UNSUPPORTED_VERSION)
