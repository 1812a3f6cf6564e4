"""Our COSE_Sign1 is real RFC 9052 COSE: an independent implementation (pycose) verifies our
manifests and key statements, and our verifier refuses a pycose-made message signed by another key.

pycose 1.1's own `decode` expects cbor2 to return lists inside tags; cbor2 ≥ 6 returns tuples there,
so the outer tag is opened with cbor2 and the array (as list and dict) handed to pycose's
`from_cose_obj` — header
parsing, Sig_structure and the EdDSA check are all pycose's.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cbor2
import pytest
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm, ContentType
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from tests.support.bundle_keys import sample_draft
from tinymlops.bundle import (
    Reason,
    build_bundle,
    container,
    cose,
    init_keys,
    load_signer,
    load_trust,
    verify_bundle,
)
from tinymlops.bundle import manifest as mf
from tinymlops.bundle.trust import raw_public

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def pycose_decode(data: bytes) -> Sign1Message:
    outer = cbor2.loads(data)
    assert isinstance(outer, cbor2.CBORTag) and outer.tag == Sign1Message.cbor_tag == 18
    protected, unprotected, payload, signature = outer.value
    return Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)


def okp_public(raw: bytes) -> OKPKey:
    return OKPKey(crv=Ed25519, x=raw)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("keys")
    init_keys(directory, now=NOW - timedelta(days=1))
    signer = load_signer(directory, now=NOW)
    out = directory.parent / "interop.bundle"
    draft = sample_draft(arena_bytes=1, ops=["SOFTMAX"])
    build_bundle(b"model bytes", draft, signer, out, now=NOW)
    signed = container.read_signed_manifest(io.BytesIO(out.read_bytes()))
    return directory, signer, signed


def test_pycose_verifies_our_manifest(setup) -> None:
    _, signer, signed = setup
    message = pycose_decode(signed)
    message.key = okp_public(signer.statement.public_key)
    assert message.verify_signature()
    assert message.phdr[Algorithm] is EdDSA
    assert message.phdr[KID] == bytes.fromhex(signer.kid)
    assert message.phdr[ContentType] == cose.CONTENT_MANIFEST
    assert mf.decode(message.payload).model_name == "kws"


def test_pycose_verifies_our_key_statement_with_the_root_key(setup) -> None:
    directory, signer, signed = setup
    statement = pycose_decode(signer.statement_bytes)
    statement.key = okp_public(load_trust(directory / "root.pub").public_key)
    assert statement.verify_signature()
    # and the statement pycose verified is the one the manifest carries in its unprotected header
    carried = cbor2.loads(signed).value[1][cose.HEADER_KEY_STATEMENT]
    assert carried == signer.statement_bytes


def test_pycose_rejects_our_manifest_under_another_key(setup) -> None:
    _, _, signed = setup
    message = pycose_decode(signed)
    message.key = OKPKey.generate_key(crv=Ed25519)
    assert not message.verify_signature()


def test_we_verify_a_pycose_made_manifest(setup, tmp_path: Path) -> None:
    """pycose signs (with our signing key's bytes) a manifest; our verifier accepts it: both
    sides agree on the Sig_structure, not merely on our own encoding."""
    directory, signer, signed = setup
    ours = cbor2.loads(signed).value
    message = Sign1Message(
        phdr={Algorithm: EdDSA, ContentType: cose.CONTENT_MANIFEST, KID: bytes.fromhex(signer.kid)},
        uhdr={cose.HEADER_KEY_STATEMENT: signer.statement_bytes},
        payload=ours[2],
    )
    from cryptography.hazmat.primitives import serialization

    private = signer._key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    message.key = OKPKey(crv=Ed25519, d=private, x=raw_public(signer._key.public_key()))
    data = message.encode()
    bundle = container.header(len(data)) + data + b"model bytes"
    assert verify_bundle(io.BytesIO(bundle), load_trust(directory / "root.pub"), now=NOW).ok


def test_we_reject_a_pycose_made_manifest_signed_by_another_key(setup) -> None:
    directory, signer, signed = setup
    ours = cbor2.loads(signed).value
    message = Sign1Message(
        phdr={Algorithm: EdDSA, ContentType: cose.CONTENT_MANIFEST, KID: bytes.fromhex(signer.kid)},
        uhdr={cose.HEADER_KEY_STATEMENT: signer.statement_bytes},
        payload=ours[2],
    )
    message.key = OKPKey.generate_key(crv=Ed25519)
    data = message.encode()
    bundle = container.header(len(data)) + data + b"model bytes"
    result = verify_bundle(io.BytesIO(bundle), load_trust(directory / "root.pub"), now=NOW)
    assert not result.ok and result.reason is Reason.BAD_SIGNATURE
