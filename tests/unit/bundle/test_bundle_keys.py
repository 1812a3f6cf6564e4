"""Key directory: 0600 private keys, passphrase protection, rotation and revocation without a new
root, development keys on a fresh machine, and no private material in any message or repr."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest

from tinymlops.bundle import (
    KeyStoreError,
    RevocationList,
    ensure_dev_keys,
    init_keys,
    key_status,
    load_revocations,
    load_signer,
    load_trust,
    revoke_key,
    rotate_signing_key,
)
from tinymlops.bundle.trust import verify_statement

SECRET = "correct horse battery staple"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_private_keys_0600_and_public_files(tmp_path: Path) -> None:
    paths = init_keys(tmp_path / "keys")
    assert paths.created
    assert mode(paths.root_private) == 0o600 and mode(paths.signing_private) == 0o600
    assert paths.root_public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert b"PRIVATE" in paths.root_private.read_bytes() and b"ENCRYPTED" not in paths.root_private.read_bytes()
    trust = load_trust(paths.root_public)
    assert trust.kid == paths.root_kid
    statement = verify_statement(paths.signing_statement.read_bytes(), trust)
    assert statement.kid == paths.signing_kid and statement.valid_until - statement.valid_from == timedelta(days=365)
    assert load_revocations(paths.revocations, trust) == RevocationList(
        sequence=0, issued=statement.valid_from, revoked=[], signed=paths.revocations.read_bytes()
    )
    assert not list((tmp_path / "keys").rglob("*.tmp"))  # atomic writes leave nothing behind


def test_init_refuses_to_overwrite_a_root(tmp_path: Path) -> None:
    init_keys(tmp_path)
    with pytest.raises(KeyStoreError, match="refusing to overwrite"):
        init_keys(tmp_path)


def test_passphrase_protects_private_keys(tmp_path: Path) -> None:
    paths = init_keys(tmp_path, SECRET)
    assert b"ENCRYPTED PRIVATE KEY" in paths.root_private.read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in paths.signing_private.read_bytes()
    with pytest.raises(KeyStoreError, match="TINYMLOPS_KEY_PASSPHRASE") as missing:
        load_signer(tmp_path)
    with pytest.raises(KeyStoreError, match="wrong passphrase") as wrong:
        load_signer(tmp_path, "not it")
    for error in (missing, wrong):
        assert SECRET not in str(error.value) and "\n" not in str(error.value)
    assert load_signer(tmp_path, SECRET).kid == paths.signing_kid


def test_signer_repr_shows_no_key_material(tmp_path: Path) -> None:
    init_keys(tmp_path)
    signer = load_signer(tmp_path)
    private_pem = (tmp_path / "signing" / f"{signer.kid}.key").read_text().splitlines()[1]
    assert signer.kid in repr(signer) and private_pem[:16] not in repr(signer)
    assert "_key" not in repr(signer)


def test_rotation_keeps_the_root_and_moves_current(tmp_path: Path) -> None:
    first = init_keys(tmp_path)
    second = rotate_signing_key(tmp_path)
    assert second.signing_kid != first.signing_kid and second.root_kid == first.root_kid
    assert load_signer(tmp_path).kid == second.signing_kid
    trust = load_trust(tmp_path / "root.pub")
    assert verify_statement(second.signing_statement.read_bytes(), trust).kid == second.signing_kid
    assert [k.current for k in key_status(tmp_path).signing_keys].count(True) == 1


def test_revocation_is_root_signed_and_sequenced(tmp_path: Path) -> None:
    first = init_keys(tmp_path)
    rotate_signing_key(tmp_path, revoke_previous=True)
    trust = load_trust(tmp_path / "root.pub")
    revocations = load_revocations(tmp_path / "revocations.cose", trust)
    assert revocations.sequence == 1 and revocations.revoked == [first.signing_kid]
    newest = revoke_key(tmp_path, load_signer(tmp_path).kid)
    assert newest.sequence == 2 and len(newest.revoked) == 2
    with pytest.raises(KeyStoreError, match="is revoked"):
        load_signer(tmp_path)  # nothing gets signed with a revoked key
    status = key_status(tmp_path)
    assert status.revocation_sequence == 2 and all(k.revoked for k in status.signing_keys)


def test_revoke_refuses_unknown_and_root_ids(tmp_path: Path) -> None:
    paths = init_keys(tmp_path)
    with pytest.raises(KeyStoreError, match="no signing key with id"):
        revoke_key(tmp_path, "0123456789abcdef")
    with pytest.raises(KeyStoreError, match="is the root key"):
        revoke_key(tmp_path, paths.root_kid)


def test_expired_signing_key_is_not_loaded(tmp_path: Path, now) -> None:
    init_keys(tmp_path, now=now - timedelta(days=10), validity=timedelta(days=5))
    with pytest.raises(KeyStoreError, match="expired"):
        load_signer(tmp_path, now=now)


def test_revocation_list_from_another_root_is_refused(tmp_path: Path) -> None:
    init_keys(tmp_path / "a")
    init_keys(tmp_path / "b")
    from tinymlops.bundle import BundleError, Reason

    with pytest.raises(BundleError) as info:
        load_revocations(tmp_path / "b" / "revocations.cose", load_trust(tmp_path / "a" / "root.pub"))
    assert info.value.reason is Reason.UNTRUSTED_KEY


def test_ensure_dev_keys_creates_once(tmp_path: Path) -> None:
    made = ensure_dev_keys(tmp_path / "home" / "keys")
    assert made.created
    again = ensure_dev_keys(tmp_path / "home" / "keys")
    assert not again.created and again.signing_kid == made.signing_kid and again.root_kid == made.root_kid
