"""Why a bundle was refused: one Reason per failure kind, and the one exception of the package."""

from __future__ import annotations

from enum import Enum

from tinymlops.errors import BundleError


class Reason(str, Enum):
    # container and encoding
    BAD_MAGIC = "bad_magic"
    UNSUPPORTED_VERSION = "unsupported_version"
    MALFORMED = "malformed"
    # keys and signatures
    UNTRUSTED_KEY = "untrusted_key"
    KEY_MISMATCH = "key_mismatch"
    REVOKED_KEY = "revoked_key"
    EXPIRED_KEY = "expired_key"
    KEY_NOT_YET_VALID = "key_not_yet_valid"
    BAD_SIGNATURE = "bad_signature"
    # policy
    ROLLBACK = "rollback"
    WRONG_CLASS = "wrong_class"
    EXPIRED_MANIFEST = "expired_manifest"
    # payload
    PAYLOAD_TRUNCATED = "payload_truncated"
    PAYLOAD_TOO_LONG = "payload_too_long"
    PAYLOAD_DIGEST_MISMATCH = "payload_digest_mismatch"
    CIPHERTEXT_DIGEST_MISMATCH = "ciphertext_digest_mismatch"
    # encryption
    MISSING_KEY = "missing_key"
    WRONG_KEK = "wrong_kek"
    DECRYPTION_FAILED = "decryption_failed"
    # reading the source itself failed (I/O error, not the bundle's fault)
    IO_ERROR = "io_error"


__all__ = ["BundleError", "Reason"]
