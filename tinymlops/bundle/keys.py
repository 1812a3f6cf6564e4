"""The key directory: an offline root key, online signing keys with root-signed statements, and the
root-signed revocation list.

    <dir>/root.key                       root private key (PEM PKCS#8, 0600) — keep it offline in production
    <dir>/root.pub                       root public key (PEM): the trust anchor devices are flashed with
    <dir>/signing/<kid>.key              signing private key (PEM PKCS#8, 0600)
    <dir>/signing/<kid>.statement.cose   root-signed key statement for that key (COSE_Sign1)
    <dir>/current                        id of the signing key `load_signer` uses
    <dir>/metering/<kid>.key             metering (quota-signing) private key (PEM PKCS#8, 0600)
    <dir>/metering/<kid>.statement.cose  root-signed statement for it, purpose quota-signing
    <dir>/metering/current               id of the metering key `load_metering_key` uses
    <dir>/revocations.cose               root-signed revocation list (COSE_Sign1), signing and metering kids

A metering key lets quota tokens be issued with the root offline: `keys metering` creates one (the
root is needed once, to certify it); the statement's purpose keeps it from signing bundles and keeps
bundle-signing keys from signing quota tokens (the device checks both).

Private keys are passphrase-encrypted when a passphrase is given (the CLI reads it from
$TINYMLOPS_KEY_PASSPHRASE). No private material, passphrase or key bytes is ever put in a message.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict

from tinymlops.bundle import cose
from tinymlops.bundle.manifest import utc_seconds
from tinymlops.bundle.reasons import BundleError
from tinymlops.bundle.trust import (
    KEY_PURPOSE,
    QUOTA_PURPOSE,
    KeyPurpose,
    KeyStatement,
    RevocationList,
    TrustAnchor,
    key_id,
    load_revocations,
    load_trust,
    raw_public,
    verify_statement,
)
from tinymlops.errors import KeyStoreError
from tinymlops.util.io import atomic_path, write_bytes

PASSPHRASE_ENV = "TINYMLOPS_KEY_PASSPHRASE"
DEFAULT_KEY_VALIDITY = timedelta(days=365)


class KeyPaths(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dir: Path
    root_private: Path
    root_public: Path
    signing_private: Path
    signing_statement: Path
    revocations: Path
    root_kid: str
    signing_kid: str
    created: bool = False  # True when this call generated new keys (ensure_dev_keys says so)


class SigningKeyInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    kid: str
    valid_from: datetime
    valid_until: datetime
    current: bool
    revoked: bool


class MeteringKeyInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    kid: str
    valid_from: datetime
    valid_until: datetime
    current: bool
    revoked: bool
    private: Path  # where the private key is (the path only, never its bytes)
    statement: Path


class KeyStatus(BaseModel):
    """`keys show`: public facts only."""

    model_config = ConfigDict(frozen=True)
    dir: Path
    root_kid: str
    root_private_present: bool
    encrypted: bool
    revocation_sequence: int
    signing_keys: list[SigningKeyInfo]
    metering_keys: list[MeteringKeyInfo] = []


class Signer:
    """An online key and its root-signed statement: a bundle-signing key, or a metering key (purpose
    quota-signing, see tinymlops.bundle.quota). Its repr never shows the key."""

    def __init__(self, key: Ed25519PrivateKey, statement: KeyStatement, statement_bytes: bytes) -> None:
        if raw_public(key.public_key()) != statement.public_key:
            raise KeyStoreError(f"signing key {statement.kid}: private key does not match its statement")
        self._key = key
        self.statement = statement
        self.statement_bytes = statement_bytes

    @property
    def kid(self) -> str:
        return self.statement.kid

    def sign(self, payload: bytes, content_type: str = cose.CONTENT_MANIFEST) -> bytes:
        """COSE_Sign1 over `payload`, carrying the key statement so a device needs only the root key."""
        return cose.encode_sign1(
            payload,
            self._key,
            bytes.fromhex(self.kid),
            content_type,
            {cose.HEADER_KEY_STATEMENT: self.statement_bytes},
        )

    def __repr__(self) -> str:
        return (
            f"Signer(kid={self.kid!r}, purpose={self.statement.purpose!r}, "
            f"valid_until={self.statement.valid_until.isoformat()})"
        )


# -- files ---------------------------------------------------------------------------------------
def _paths(directory: Path, kid: str, root_kid: str, created: bool = False) -> KeyPaths:
    return KeyPaths(
        dir=directory,
        root_private=directory / "root.key",
        root_public=directory / "root.pub",
        signing_private=directory / "signing" / f"{kid}.key",
        signing_statement=directory / "signing" / f"{kid}.statement.cose",
        revocations=directory / "revocations.cose",
        root_kid=root_kid,
        signing_kid=kid,
        created=created,
    )


def _write_private(path: Path, key: Ed25519PrivateKey, passphrase: str | None) -> None:
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)  # before any byte is written
        tmp.write_bytes(pem)


def _read_private(path: Path, passphrase: str | None) -> Ed25519PrivateKey:
    if not path.is_file():
        raise KeyStoreError(f"{path}: private key not found (run `tinymlops keys init`)")
    data = path.read_bytes()
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    if encrypted and not passphrase:
        raise KeyStoreError(f"{path}: key is passphrase-protected; set ${PASSPHRASE_ENV}")
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode() if encrypted and passphrase else None)
    except (ValueError, TypeError):
        # cryptography's message could echo nothing secret, but keep it generic: wrong passphrase or bad file
        raise KeyStoreError(f"{path}: cannot load private key (wrong passphrase or not a PEM key)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyStoreError(f"{path}: not an Ed25519 private key")
    return key


def _issue_statement(
    root: Ed25519PrivateKey,
    key: Ed25519PrivateKey,
    now: datetime,
    validity: timedelta,
    purpose: KeyPurpose = KEY_PURPOSE,
) -> bytes:
    now = utc_seconds(now)
    statement = KeyStatement(
        kid=key_id(key.public_key()),
        public_key=raw_public(key.public_key()),
        valid_from=now,
        valid_until=now + validity,
        purpose=purpose,
    )
    return cose.encode_sign1(
        statement.to_wire(), root, bytes.fromhex(key_id(root.public_key())), cose.CONTENT_KEY_STATEMENT
    )


def _issue_revocations(root: Ed25519PrivateKey, sequence: int, revoked: list[str], now: datetime) -> bytes:
    body = RevocationList(sequence=sequence, issued=utc_seconds(now), revoked=sorted(set(revoked)))
    return cose.encode_sign1(body.to_wire(), root, bytes.fromhex(key_id(root.public_key())), cose.CONTENT_REVOCATIONS)


def _new_signing_key(
    directory: Path, root: Ed25519PrivateKey, passphrase: str | None, now: datetime, validity: timedelta
) -> str:
    key = Ed25519PrivateKey.generate()
    kid = key_id(key.public_key())
    _write_private(directory / "signing" / f"{kid}.key", key, passphrase)
    write_bytes(directory / "signing" / f"{kid}.statement.cose", _issue_statement(root, key, now, validity))
    write_bytes(directory / "current", (kid + "\n").encode())
    return kid


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(timezone.utc)


# -- the verbs -----------------------------------------------------------------------------------
def init_keys(
    directory: Path | str,
    passphrase: str | None = None,
    *,
    now: datetime | None = None,
    validity: timedelta = DEFAULT_KEY_VALIDITY,
) -> KeyPaths:
    """Create the root key, a first signing key with its statement, and an empty revocation list."""
    directory = Path(directory)
    if (directory / "root.key").exists() or (directory / "root.pub").exists():
        raise KeyStoreError(f"{directory}: a root key exists already; refusing to overwrite it")
    now = _now(now)
    root = Ed25519PrivateKey.generate()
    _write_private(directory / "root.key", root, passphrase)
    write_bytes(directory / "root.pub", TrustAnchor.from_key(root.public_key()).pem())
    write_bytes(directory / "revocations.cose", _issue_revocations(root, 0, [], now))
    kid = _new_signing_key(directory, root, passphrase, now, validity)
    return _paths(directory, kid, key_id(root.public_key()), created=True)


def ensure_dev_keys(directory: Path | str, passphrase: str | None = None) -> KeyPaths:
    """Keys for a development machine: the existing ones, or a fresh root + signing key
    (then `created` is True, so the caller can say that bundles are signed with new local keys)."""
    directory = Path(directory)
    if (directory / "root.key").exists() or (directory / "root.pub").exists():
        return current_paths(directory)
    return init_keys(directory, passphrase)


def current_paths(directory: Path | str) -> KeyPaths:
    directory = Path(directory)
    current = directory / "current"
    if not current.is_file() or not (directory / "root.pub").is_file():
        raise KeyStoreError(f"{directory}: no key directory here (run `tinymlops keys init`)")
    trust = load_trust(directory / "root.pub")
    kid = current.read_text().strip()
    if not re.fullmatch(r"[0-9a-f]{16}", kid):
        raise KeyStoreError(f"{current}: not a signing key id")
    return _paths(directory, kid, trust.kid)


def rotate_signing_key(
    directory: Path | str,
    passphrase: str | None = None,
    *,
    now: datetime | None = None,
    validity: timedelta = DEFAULT_KEY_VALIDITY,
    revoke_previous: bool = False,
) -> KeyPaths:
    """New signing key + new root-signed statement; devices accept it with no change (same root)."""
    directory = Path(directory)
    previous = current_paths(directory).signing_kid
    root = _read_private(directory / "root.key", passphrase)
    kid = _new_signing_key(directory, root, passphrase, _now(now), validity)
    if revoke_previous:
        revoke_key(directory, previous, passphrase, now=now)
    return _paths(directory, kid, key_id(root.public_key()))


def revoke_key(
    directory: Path | str, kid: str, passphrase: str | None = None, *, now: datetime | None = None
) -> RevocationList:
    """Add `kid` (a signing or a metering key) to the root-signed revocation list and bump its sequence."""
    directory = Path(directory)
    root = _read_private(directory / "root.key", passphrase)
    trust = TrustAnchor.from_key(root.public_key())
    if kid == trust.kid:
        raise KeyStoreError(f"{kid} is the root key; a root is replaced by reflashing, not revoked")
    if not any((directory / sub / f"{kid}.statement.cose").is_file() for sub in ("signing", "metering")):
        raise KeyStoreError(f"{directory}: no signing key with id {kid} (nor metering key)")
    current = load_revocations(directory / "revocations.cose", trust)
    signed = _issue_revocations(root, current.sequence + 1, [*current.revoked, kid], _now(now))
    write_bytes(directory / "revocations.cose", signed)
    return RevocationList.verify(signed, trust)


def load_signer(directory: Path | str, passphrase: str | None = None, *, now: datetime | None = None) -> Signer:
    """The current signing key, refused when its statement is not from this root, revoked or expired."""
    paths = current_paths(directory)
    trust = load_trust(paths.root_public)
    try:
        statement = verify_statement(paths.signing_statement.read_bytes(), trust)
        revoked = load_revocations(paths.revocations, trust).revoked
    except (BundleError, OSError) as exc:
        raise KeyStoreError(f"{paths.signing_statement}: unusable key statement ({exc})") from None
    if statement.kid in revoked:
        raise KeyStoreError(f"signing key {statement.kid} is revoked; run `tinymlops keys rotate`")
    if _now(now) >= statement.valid_until:
        raise KeyStoreError(
            f"signing key {statement.kid} expired {statement.valid_until:%Y-%m-%d}; run `tinymlops keys rotate`"
        )
    key = _read_private(paths.signing_private, passphrase)
    return Signer(key, statement, paths.signing_statement.read_bytes())


# -- metering keys (quota signing) ---------------------------------------------------------------
def create_metering_key(
    directory: Path | str,
    passphrase: str | None = None,
    *,
    now: datetime | None = None,
    validity: timedelta = DEFAULT_KEY_VALIDITY,
    revoke_previous: bool = False,
) -> MeteringKeyInfo:
    """New metering key + root-signed statement (purpose quota-signing); it becomes the current one.
    Needs the root private key this once; quota tokens are then issued without it."""
    directory = Path(directory)
    current_paths(directory)  # a key directory, with its root.pub
    root = _read_private(directory / "root.key", passphrase)
    meter = directory / "metering"
    previous = (meter / "current").read_text().strip() if (meter / "current").is_file() else None
    key = Ed25519PrivateKey.generate()
    kid = key_id(key.public_key())
    _write_private(meter / f"{kid}.key", key, passphrase)
    write_bytes(meter / f"{kid}.statement.cose", _issue_statement(root, key, _now(now), validity, QUOTA_PURPOSE))
    write_bytes(meter / "current", (kid + "\n").encode())
    if revoke_previous and previous:
        revoke_key(directory, previous, passphrase, now=now)
    return next(k for k in key_status(directory).metering_keys if k.kid == kid)


def metering_signer(
    root: Ed25519PrivateKey, *, now: datetime | None = None, validity: timedelta = timedelta(days=1)
) -> Signer:
    """A fresh in-memory metering key certified by `root` for `validity` from `now` (never stored):
    for tests, and for `quota_issuer` on a development key directory that has no metering key yet."""
    key = Ed25519PrivateKey.generate()
    statement_bytes = _issue_statement(root, key, _now(now), validity, QUOTA_PURPOSE)
    trust = TrustAnchor.from_key(root.public_key())
    return Signer(key, verify_statement(statement_bytes, trust, QUOTA_PURPOSE), statement_bytes)


def load_metering_key(
    directory: Path | str, passphrase: str | None = None, *, now: datetime | None = None
) -> Signer | None:
    """The current metering key (None when the directory has none), refused when its statement is
    not from this root, not for quota signing, revoked, expired or not yet valid."""
    directory = Path(directory)
    current = directory / "metering" / "current"
    if not current.is_file():
        return None
    kid = current.read_text().strip()
    if not re.fullmatch(r"[0-9a-f]{16}", kid):
        raise KeyStoreError(f"{current}: not a metering key id")
    statement_path = directory / "metering" / f"{kid}.statement.cose"
    try:
        trust = load_trust(directory / "root.pub")
        statement = verify_statement(statement_path.read_bytes(), trust, QUOTA_PURPOSE)
        revoked = load_revocations(directory / "revocations.cose", trust).revoked
    except (BundleError, OSError) as exc:
        raise KeyStoreError(f"{statement_path}: unusable metering key statement ({exc})") from None
    if statement.kid != kid:
        raise KeyStoreError(f"{statement_path}: statement is for {statement.kid}, not {kid}")
    if kid in revoked:
        raise KeyStoreError(f"metering key {kid} is revoked; run `tinymlops keys metering`")
    when = _now(now)
    if not statement.valid_from <= when < statement.valid_until:
        raise KeyStoreError(
            f"metering key {kid} is valid {statement.valid_from:%Y-%m-%d} to {statement.valid_until:%Y-%m-%d}; "
            "run `tinymlops keys metering`"
        )
    key = _read_private(directory / "metering" / f"{kid}.key", passphrase)
    return Signer(key, statement, statement_path.read_bytes())


def key_status(directory: Path | str) -> KeyStatus:
    paths = current_paths(directory)
    trust = load_trust(paths.root_public)
    revocations = load_revocations(paths.revocations, trust)
    infos = []
    for file in sorted((paths.dir / "signing").glob("*.statement.cose")):
        st = verify_statement(file.read_bytes(), trust)
        infos.append(
            SigningKeyInfo(
                kid=st.kid,
                valid_from=st.valid_from,
                valid_until=st.valid_until,
                current=st.kid == paths.signing_kid,
                revoked=st.kid in revocations.revoked,
            )
        )
    meter = paths.dir / "metering"
    current_meter = (meter / "current").read_text().strip() if (meter / "current").is_file() else None
    metering = []
    for file in sorted(meter.glob("*.statement.cose")):
        st = verify_statement(file.read_bytes(), trust, QUOTA_PURPOSE)
        metering.append(
            MeteringKeyInfo(
                kid=st.kid,
                valid_from=st.valid_from,
                valid_until=st.valid_until,
                current=st.kid == current_meter,
                revoked=st.kid in revocations.revoked,
                private=meter / f"{st.kid}.key",
                statement=file,
            )
        )
    root_file = paths.root_private
    return KeyStatus(
        dir=paths.dir,
        root_kid=trust.kid,
        root_private_present=root_file.is_file(),
        encrypted=root_file.is_file() and b"ENCRYPTED" in root_file.read_bytes().split(b"\n", 1)[0],
        revocation_sequence=revocations.sequence,
        signing_keys=infos,
        metering_keys=metering,
    )
