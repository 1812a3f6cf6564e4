"""THE verification function: CLI, device emulator and fleet server all call verify_bundle.

Order: container → COSE structure → key statement from the trusted root → manifest signature →
revocation and key validity → manifest content → policy (class, anti-rollback, expiry) → payload,
streamed in fixed-size chunks and never read past its declared size (+1 byte to detect endless data).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO
from uuid import UUID

from cryptography.exceptions import InvalidTag
from pydantic import BaseModel, ConfigDict

from tinymlops.bundle import container, cose, crypto
from tinymlops.bundle import manifest as mf
from tinymlops.bundle.reasons import BundleError, Reason
from tinymlops.bundle.trust import KeyStatement, RevocationList, TrustAnchor, verify_statement

CHUNK_BYTES = 1 << 20
PIPELINE_MIN_BYTES = 4 * CHUNK_BYTES  # below this a thread costs more than it saves


class VerificationResult(BaseModel):
    """ok, or the one reason it is not. `manifest` is set only once its signature verified, so it
    is authentic even on failure (e.g. ROLLBACK says which sequence was offered)."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    reason: Reason | None = None
    detail: str
    manifest: mf.Manifest | None = None
    signing_kid: str | None = None
    plaintext_verified: bool = False  # the plaintext digest was checked (False: encrypted, no KEK given)

    def raise_for_failure(self, source: str = "bundle") -> None:
        if not self.ok and self.reason is not None:
            raise BundleError(self.reason, f"{source}: {self.detail}")


@contextlib.contextmanager
def _opened(source: Path | str | BinaryIO | bytes) -> Iterator[BinaryIO]:
    if isinstance(source, bytes | bytearray):
        yield io.BytesIO(source)
    elif isinstance(source, str | Path):
        with open(source, "rb") as fp:
            yield fp
    else:
        yield source


def read_signed(source: Path | str | BinaryIO | bytes) -> cose.Sign1:
    with _opened(source) as fp:
        return cose.decode_sign1(container.read_signed_manifest(fp), "manifest", cose.CONTENT_MANIFEST)


def read_manifest(source: Path | str | BinaryIO | bytes) -> mf.Manifest:
    """Parse only, NO trust decision (for display). Raises BundleError."""
    return mf.decode(read_signed(source).payload)


def _authenticate(
    message: cose.Sign1, trust: TrustAnchor, now: datetime, revocations: RevocationList | None
) -> KeyStatement:
    statement_bytes = message.unprotected.get(cose.HEADER_KEY_STATEMENT)
    if not isinstance(statement_bytes, bytes):
        raise BundleError(Reason.UNTRUSTED_KEY, "manifest carries no key statement for its signing key")
    statement = verify_statement(statement_bytes, trust)
    if message.kid.hex() != statement.kid:
        raise BundleError(
            Reason.KEY_MISMATCH, f"manifest signed by kid {message.kid.hex()}, statement is for {statement.kid}"
        )
    cose.verify_sign1(message, statement.key(), "manifest")
    if revocations is not None and statement.kid in revocations.revoked:
        raise BundleError(
            Reason.REVOKED_KEY, f"signing key {statement.kid} is revoked (revocation list {revocations.sequence})"
        )
    if now < statement.valid_from:
        raise BundleError(Reason.KEY_NOT_YET_VALID, f"signing key {statement.kid} valid from {statement.valid_from}")
    if now >= statement.valid_until:
        raise BundleError(Reason.EXPIRED_KEY, f"signing key {statement.kid} expired {statement.valid_until}")
    return statement


def _check_policy(
    m: mf.Manifest,
    device_class: UUID | None,
    min_sequence: int | None,
    now: datetime,
    device_policy: Callable[[mf.Manifest], None] | None = None,
) -> None:
    if device_class is not None and m.class_id != device_class:
        raise BundleError(Reason.WRONG_CLASS, f"bundle is for class {m.class_id}, device is {device_class}")
    if min_sequence is not None and m.sequence < min_sequence:
        raise BundleError(Reason.ROLLBACK, f"sequence {m.sequence} is below the minimum {min_sequence}")
    if device_policy is not None:  # a device's own sequence rules, where the C agent checks them
        device_policy(m)
    if now >= m.expires:
        raise BundleError(Reason.EXPIRED_MANIFEST, f"manifest expired {m.expires}")
    if m.encrypted and m.ciphertext_size != m.payload_size + crypto.TAG_BYTES:
        raise BundleError(Reason.MALFORMED, "manifest: ciphertext_size must be payload_size + 16 (GCM tag)")
    if m.encrypted and m.ciphertext_sha256 is None:
        raise BundleError(Reason.MALFORMED, "manifest: an encrypted payload needs its ciphertext_sha256")


class _Reader:
    """Reads exactly `total` bytes in chunks into two reused buffers (constant memory: 2 MiB).

    Large payloads are pipelined: the next chunk is read while a worker thread hashes (and
    decrypts) the previous one; hashlib and the kernel's read both release the GIL, which is what
    keeps verification close to the speed of SHA-256 alone. Order is kept: one chunk in flight.
    """

    def __init__(self, fp: BinaryIO, total: int) -> None:
        self.fp, self.total, self.done = fp, total, 0
        size = min(CHUNK_BYTES, max(total, 1))
        self.buffers = (memoryview(bytearray(size)), memoryview(bytearray(size)))
        self._readinto = getattr(fp, "readinto", None)

    def chunks(self, n: int) -> Iterator[memoryview]:
        turn = 0
        while n > 0:
            buffer = self.buffers[turn]
            turn ^= 1
            want = min(n, len(buffer))
            if self._readinto is not None:
                got = self._readinto(buffer[:want]) or 0
            else:
                data = self.fp.read(want)
                got = len(data)
                buffer[:got] = data
            if got == 0:
                raise BundleError(
                    Reason.PAYLOAD_TRUNCATED, f"payload ends after {self.done} of {self.total} declared bytes"
                )
            self.done += got
            n -= got
            yield buffer[:got]

    def pump(self, n: int, consume: Callable[[memoryview], None]) -> None:
        """Feed the next n bytes to `consume`, chunk by chunk, in order."""
        if n < PIPELINE_MIN_BYTES:
            for chunk in self.chunks(n):
                consume(chunk)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-verify") as worker:
            pending: Future | None = None
            for chunk in self.chunks(n):  # reads into the buffer the worker is not using
                if pending is not None:
                    pending.result()
                pending = worker.submit(consume, chunk)
            if pending is not None:
                pending.result()

    def expect_end(self) -> None:
        if self.fp.read(1):  # one byte is enough to know; never read unbounded input
            raise BundleError(Reason.PAYLOAD_TOO_LONG, f"payload continues past its declared {self.total} bytes")


def _check_payload(fp: BinaryIO, m: mf.Manifest, kek: bytes | None, sink: BinaryIO | None) -> bool:
    """Stream the payload; True when the plaintext digest was checked."""
    reader = _Reader(fp, m.stored_size)
    plain = hashlib.sha256()
    if not m.encrypted:

        def consume_plain(chunk: memoryview) -> None:
            plain.update(chunk)
            if sink is not None:
                sink.write(chunk)

        reader.pump(m.payload_size, consume_plain)
        reader.expect_end()
        if plain.hexdigest() != m.payload_sha256:
            raise BundleError(Reason.PAYLOAD_DIGEST_MISMATCH, "payload SHA-256 differs from the signed manifest")
        return True

    assert m.encryption is not None and m.ciphertext_sha256 is not None
    if kek is None and sink is not None:
        raise BundleError(Reason.MISSING_KEY, f"payload is encrypted (KEK {m.encryption.kek_id}); no KEK given")
    decrypt = None
    if kek is not None:
        cek = crypto.unwrap_content_key(m.encryption, kek)
        decrypt = crypto.decryptor(cek, m.encryption, crypto.associated_data(m))
    cipher = hashlib.sha256()

    def consume_cipher(chunk: memoryview) -> None:
        cipher.update(chunk)
        if decrypt is not None:
            out = decrypt.update(chunk)
            plain.update(out)
            if sink is not None:
                sink.write(out)

    reader.pump(m.payload_size, consume_cipher)
    tag = b"".join(bytes(c) for c in reader.chunks(crypto.TAG_BYTES))
    cipher.update(tag)
    reader.expect_end()
    if cipher.hexdigest() != m.ciphertext_sha256:
        raise BundleError(Reason.CIPHERTEXT_DIGEST_MISMATCH, "ciphertext SHA-256 differs from the signed manifest")
    if decrypt is None:
        return False  # ciphertext authentic; plaintext not checked (no KEK, e.g. a fleet server)
    try:
        decrypt.finalize_with_tag(tag)
    except InvalidTag:
        raise BundleError(Reason.DECRYPTION_FAILED, "AES-GCM tag does not verify for this manifest") from None
    if plain.hexdigest() != m.payload_sha256:
        raise BundleError(Reason.PAYLOAD_DIGEST_MISMATCH, "decrypted payload SHA-256 differs from the signed manifest")
    return True


def verify_bundle(
    source: Path | str | BinaryIO | bytes,
    trust: TrustAnchor,
    *,
    device_class: UUID | None = None,
    min_sequence: int | None = None,
    now: datetime | None = None,
    revocations: RevocationList | None = None,
    kek: bytes | None = None,
    sink: BinaryIO | None = None,
    device_policy: Callable[[mf.Manifest], None] | None = None,
) -> VerificationResult:
    """Verify a bundle completely; never raises for a bad bundle, returns ok=False with a Reason.

    `sink` receives the plaintext payload as it streams. It is UNTRUSTED unless result.ok: a device
    writes it to an inactive slot and only activates that slot after ok. An encrypted bundle with
    no KEK and no sink is checked up to its ciphertext digest (ok, plaintext_verified=False): what a fleet
    server without the class KEK can know. `revocations` must come from RevocationList.verify.
    `device_policy` (a device model's equal-sequence and fast-forward rules) runs after the
    anti-rollback check and may raise; what it raises propagates.
    """
    now = now if now is not None else datetime.now(timezone.utc)
    if now.tzinfo is None:
        return VerificationResult(ok=False, reason=Reason.MALFORMED, detail="`now` must be timezone-aware")
    manifest: mf.Manifest | None = None
    kid: str | None = None
    try:
        with _opened(source) as fp:
            message = cose.decode_sign1(container.read_signed_manifest(fp), "manifest", cose.CONTENT_MANIFEST)
            kid = _authenticate(message, trust, now, revocations).kid
            manifest = mf.decode(message.payload)
            _check_policy(manifest, device_class, min_sequence, now, device_policy)
            plaintext_verified = _check_payload(fp, manifest, kek, sink)
    except BundleError as exc:
        return VerificationResult(ok=False, reason=exc.reason, detail=exc.detail, manifest=manifest, signing_kid=kid)
    except OSError as exc:
        return VerificationResult(
            ok=False,
            reason=Reason.IO_ERROR,
            detail=f"{type(exc).__name__}: {exc.strerror or exc}",
            manifest=manifest,
            signing_kid=kid,
        )
    what = "payload verified" if plaintext_verified else "ciphertext verified, not decrypted (no KEK)"
    detail = f"{manifest.model_name} {manifest.model_version} sequence {manifest.sequence}: {what}, signed by {kid}"
    return VerificationResult(
        ok=True, detail=detail, manifest=manifest, signing_kid=kid, plaintext_verified=plaintext_verified
    )
