"""Payload encryption: AES-256-GCM under a fresh content key, the content key wrapped with AES key
wrap (RFC 3394) under a per-fleet or per-class key-encryption key (KEK).

No circularity: the GCM associated data is a digest of the manifest with its two ciphertext fields
left empty (everything else, including the wrapped key and nonce, is known before encrypting); the
signature then covers the full manifest, ciphertext digest included.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import AEADEncryptionContext, Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from tinymlops.bundle import manifest as mf
from tinymlops.bundle.reasons import BundleError, Reason
from tinymlops.errors import KeyStoreError
from tinymlops.util.io import atomic_path

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_AAD_CONTEXT = b"tinymlops-bundle-aad-v1\x00"
_KEK_ID_CONTEXT = b"tinymlops-kek-id-v1\x00"


def generate_kek() -> bytes:
    return os.urandom(KEY_BYTES)


def kek_id(kek: bytes) -> str:
    """Public id of a KEK (so a device can say "wrong key" before trying it); a one-way digest."""
    return hashlib.sha256(_KEK_ID_CONTEXT + kek).digest()[:8].hex()


def write_kek(path: Path | str, kek: bytes) -> Path:
    if len(kek) != KEY_BYTES:
        raise KeyStoreError(f"{path}: a KEK must be {KEY_BYTES} bytes")
    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)
        tmp.write_bytes(kek)
    return Path(path)


def load_kek(path: Path | str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise KeyStoreError(f"{path}: KEK file not found")
    kek = path.read_bytes()
    if len(kek) != KEY_BYTES:
        raise KeyStoreError(f"{path}: a KEK file holds exactly {KEY_BYTES} raw bytes, this one has {len(kek)}")
    return kek


def ensure_kek(path: Path | str) -> tuple[bytes, bool]:
    """The KEK at `path`, or a new one written there (0600); → (kek, created)."""
    path = Path(path)
    if path.exists():
        return load_kek(path), False
    kek = generate_kek()
    write_kek(path, kek)
    return kek, True


def new_content_key(kek: bytes) -> tuple[bytes, mf.Encryption]:
    if len(kek) != KEY_BYTES:
        raise BundleError(Reason.WRONG_KEK, f"KEK must be {KEY_BYTES} bytes, got {len(kek)}")
    cek = os.urandom(KEY_BYTES)
    return cek, mf.Encryption(kek_id=kek_id(kek), wrapped_key=aes_key_wrap(kek, cek), nonce=os.urandom(NONCE_BYTES))


def unwrap_content_key(encryption: mf.Encryption, kek: bytes) -> bytes:
    if len(kek) != KEY_BYTES or kek_id(kek) != encryption.kek_id:
        raise BundleError(
            Reason.WRONG_KEK, f"payload is encrypted for KEK {encryption.kek_id}, the given KEK is another key"
        )
    try:
        return aes_key_unwrap(kek, encryption.wrapped_key)
    except InvalidUnwrap:
        raise BundleError(Reason.WRONG_KEK, f"content key does not unwrap under KEK {encryption.kek_id}") from None


def associated_data(manifest: mf.Manifest) -> bytes:
    without_ciphertext = manifest.model_copy(update={"ciphertext_sha256": None, "ciphertext_size": None})
    return hashlib.sha256(_AAD_CONTEXT + mf.encode(without_ciphertext)).digest()


def encryptor(cek: bytes, encryption: mf.Encryption, aad: bytes) -> AEADEncryptionContext:
    ctx = Cipher(algorithms.AES(cek), modes.GCM(encryption.nonce)).encryptor()
    ctx.authenticate_additional_data(aad)
    return ctx


def decryptor(cek: bytes, encryption: mf.Encryption, aad: bytes):
    """Streaming GCM decryption: plaintext comes out before the tag is checked (finalize_with_tag),
    so whatever it produced is untrusted until the whole bundle verified."""
    ctx = Cipher(algorithms.AES(cek), modes.GCM(encryption.nonce)).decryptor()
    ctx.authenticate_additional_data(aad)
    return ctx
