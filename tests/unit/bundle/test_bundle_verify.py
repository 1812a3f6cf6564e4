"""build_bundle and verify_bundle together: round trips, streaming in bounded chunks, encryption
modes, and the typed result. (Each attack has its own test in tests/security/.)"""

from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path

import pytest

from tinymlops.bundle import (
    BundleError,
    Reason,
    VerificationResult,
    build_bundle,
    container,
    generate_kek,
    init_keys,
    load_signer,
    load_trust,
    read_manifest,
    verify_bundle,
)
from tinymlops.bundle.verify import CHUNK_BYTES


class ReadSpy(io.BytesIO):
    """Records the largest single read the verifier asks for."""

    largest = 0

    def readinto(self, buffer) -> int:
        self.largest = max(self.largest, len(buffer))
        return super().readinto(buffer)

    def read(self, size: int | None = -1) -> bytes:
        self.largest = max(self.largest, size if size is not None and size >= 0 else 1 << 62)
        return super().read(size)


def test_plaintext_round_trip_from_path_and_stream(tmp_path: Path, draft, signer, trust, now) -> None:
    payload = os.urandom(100_000)
    manifest = build_bundle(payload, draft, signer, tmp_path / "m.bundle", now=now)
    assert manifest.payload_size == len(payload) and not manifest.encrypted
    assert manifest.created == now and manifest.expires == now + timedelta(days=365)
    sink = io.BytesIO()
    result = verify_bundle(tmp_path / "m.bundle", trust, now=now, sink=sink)
    assert result.ok and result.plaintext_verified and result.manifest == manifest and result.signing_kid == signer.kid
    assert sink.getvalue() == payload
    assert verify_bundle((tmp_path / "m.bundle").read_bytes(), trust, now=now).ok
    assert read_manifest(tmp_path / "m.bundle") == manifest


def test_build_from_a_file_streams_the_same_bundle(tmp_path: Path, draft, signer, now) -> None:
    payload = os.urandom(3 * CHUNK_BYTES + 17)
    (tmp_path / "model.bin").write_bytes(payload)
    from_file = build_bundle(tmp_path / "model.bin", draft, signer, tmp_path / "a.bundle", now=now)
    from_bytes = build_bundle(payload, draft, signer, tmp_path / "b.bundle", now=now)
    assert from_file == from_bytes
    assert (tmp_path / "a.bundle").read_bytes() == (tmp_path / "b.bundle").read_bytes()  # Ed25519 is deterministic


def test_verification_reads_in_bounded_chunks(tmp_path: Path, draft, signer, trust, now) -> None:
    payload = os.urandom(5 * CHUNK_BYTES + 3)
    build_bundle(payload, draft, signer, tmp_path / "big.bundle", now=now)
    spy = ReadSpy((tmp_path / "big.bundle").read_bytes())
    assert verify_bundle(spy, trust, now=now).ok
    assert spy.largest <= CHUNK_BYTES  # constant memory, whatever the payload size


def test_encrypted_round_trip(tmp_path: Path, draft, signer, trust, now) -> None:
    kek, payload = generate_kek(), os.urandom(70_000)
    manifest = build_bundle(payload, draft, signer, tmp_path / "e.bundle", kek, now=now)
    assert manifest.encrypted and manifest.ciphertext_size == len(payload) + 16
    stored = (tmp_path / "e.bundle").read_bytes()
    assert payload[:64] not in stored  # the weights are not in the file in clear
    sink = io.BytesIO()
    result = verify_bundle(tmp_path / "e.bundle", trust, now=now, kek=kek, sink=sink)
    assert result.ok and result.plaintext_verified and sink.getvalue() == payload


def test_encrypted_bundle_checked_without_kek_up_to_the_ciphertext(tmp_path: Path, draft, signer, trust, now) -> None:
    """What a fleet server without the class KEK can know: authentic ciphertext, plaintext unchecked."""
    build_bundle(os.urandom(5000), draft, signer, tmp_path / "e.bundle", generate_kek(), now=now)
    result = verify_bundle(tmp_path / "e.bundle", trust, now=now)
    assert result.ok and not result.plaintext_verified and "not decrypted" in result.detail


def test_sink_output_is_untrusted_until_ok(tmp_path: Path, draft, signer, trust, now) -> None:
    """GCM and SHA-256 only conclude at the end: bytes reach the sink before the verdict."""
    build_bundle(os.urandom(5000), draft, signer, tmp_path / "p.bundle", now=now)
    bundle = bytearray((tmp_path / "p.bundle").read_bytes())
    bundle[-1] ^= 1
    sink = io.BytesIO()
    result = verify_bundle(bytes(bundle), trust, now=now, sink=sink)
    assert not result.ok and result.reason is Reason.PAYLOAD_DIGEST_MISMATCH
    assert len(sink.getvalue()) == 5000  # written, and must be discarded by the caller


def test_key_not_yet_valid(tmp_path: Path, draft, now) -> None:
    init_keys(tmp_path / "k", now=now + timedelta(days=2))
    signer = load_signer(tmp_path / "k", now=now + timedelta(days=3))
    build_bundle(b"x", draft, signer, tmp_path / "f.bundle", now=now + timedelta(days=3))
    result = verify_bundle(tmp_path / "f.bundle", load_trust(tmp_path / "k" / "root.pub"), now=now)
    assert result.reason is Reason.KEY_NOT_YET_VALID


def test_failed_build_writes_nothing(tmp_path: Path, draft, signer, now) -> None:
    with pytest.raises(BundleError) as info:
        build_bundle(b"model", draft, signer, tmp_path / "out" / "x.bundle", kek=b"short", now=now)
    assert info.value.reason is Reason.WRONG_KEK
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_result_and_errors_are_one_line(tmp_path: Path, trust, now) -> None:
    (tmp_path / "empty.bundle").write_bytes(b"")
    result = verify_bundle(tmp_path / "empty.bundle", trust, now=now)
    assert isinstance(result, VerificationResult) and result.reason is Reason.MALFORMED
    with pytest.raises(BundleError, match=r"^malformed: .*empty\.bundle: bundle header") as info:
        result.raise_for_failure(str(tmp_path / "empty.bundle"))
    assert "\n" not in str(info.value)
    assert verify_bundle(tmp_path, trust, now=now).reason is Reason.IO_ERROR  # a directory, not a file
    assert verify_bundle(tmp_path / "empty.bundle", trust, now=now.replace(tzinfo=None)).reason is Reason.MALFORMED


def test_oversized_manifest_length_is_refused_before_reading(trust, now) -> None:
    header = container.MAGIC + container.VERSION.to_bytes(2, "big") + (container.MAX_MANIFEST + 1).to_bytes(4, "big")
    spy = ReadSpy(header + bytes(64))
    result = verify_bundle(spy, trust, now=now)
    assert result.reason is Reason.MALFORMED and "exceeds" in result.detail
    assert spy.largest <= container.HEADER_BYTES


def test_ensure_kek_creates_once_with_0600(tmp_path: Path) -> None:
    import stat

    from tinymlops.bundle import KeyStoreError, ensure_kek, kek_id, load_kek

    kek, created = ensure_kek(tmp_path / "kek" / "m4.kek")
    assert created and len(kek) == 32 and stat.S_IMODE((tmp_path / "kek" / "m4.kek").stat().st_mode) == 0o600
    again, created_again = ensure_kek(tmp_path / "kek" / "m4.kek")
    assert again == kek and not created_again and kek_id(kek) == kek_id(load_kek(tmp_path / "kek" / "m4.kek"))
    (tmp_path / "bad.kek").write_bytes(b"short")
    with pytest.raises(KeyStoreError, match="exactly 32 raw bytes"):
        load_kek(tmp_path / "bad.kek")
