"""Signed, optionally encrypted model bundles: a CBOR manifest in a COSE_Sign1 (Ed25519) plus the
payload, in one file; keys with an offline root, rotation and revocation; one verify function.

Other packages import from here only: `from tinymlops.bundle import verify_bundle, ...`.
"""

from tinymlops.bundle.build import build_bundle
from tinymlops.bundle.config import BundleConfig
from tinymlops.bundle.crypto import ensure_kek, generate_kek, kek_id, load_kek, write_kek
from tinymlops.bundle.keys import (
    PASSPHRASE_ENV,
    KeyPaths,
    KeyStatus,
    KeyStoreError,
    MeteringKeyInfo,
    Signer,
    create_metering_key,
    current_paths,
    ensure_dev_keys,
    init_keys,
    key_status,
    load_metering_key,
    load_signer,
    revoke_key,
    rotate_signing_key,
)
from tinymlops.bundle.manifest import (
    Encryption,
    ImageInfo,
    InputTransform,
    Lineage,
    Manifest,
    ManifestDraft,
    SelfTest,
    class_uuid,
    vendor_uuid,
)
from tinymlops.bundle.reasons import BundleError, Reason
from tinymlops.bundle.recovery import RecoveryStatement, issue_recovery
from tinymlops.bundle.trust import KeyStatement, RevocationList, TrustAnchor, load_revocations, load_trust
from tinymlops.bundle.verify import VerificationResult, read_manifest, verify_bundle

__all__ = [
    "BundleConfig",
    "ensure_kek",
    "PASSPHRASE_ENV",
    "BundleError",
    "Encryption",
    "InputTransform",
    "KeyStoreError",
    "KeyPaths",
    "KeyStatement",
    "KeyStatus",
    "ImageInfo",
    "Lineage",
    "Manifest",
    "ManifestDraft",
    "Reason",
    "RecoveryStatement",
    "RevocationList",
    "SelfTest",
    "Signer",
    "TrustAnchor",
    "VerificationResult",
    "build_bundle",
    "class_uuid",
    "current_paths",
    "ensure_dev_keys",
    "generate_kek",
    "init_keys",
    "issue_recovery",
    "kek_id",
    "key_status",
    "load_kek",
    "load_revocations",
    "load_signer",
    "load_metering_key",
    "create_metering_key",
    "MeteringKeyInfo",
    "load_trust",
    "read_manifest",
    "revoke_key",
    "rotate_signing_key",
    "vendor_uuid",
    "verify_bundle",
    "write_kek",
]
