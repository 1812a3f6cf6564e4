"""One test per attack, against the C update agent (firmware/agent), twice: host-natively on a
simulated device, and as the real firmware (agent + C runtime, cross-compiled for the nRF52840's
Cortex-M4F) on the instruction-level emulator, in the part's flash through its flash controller.

Each test provisions a device (pinned root key, class, optional class KEK), usually lets it run a
confirmed model at sequence 7, offers the attack, and asserts the agent's reason and that the
device still runs the model it ran before. The bundles are real (tinymlops.bundle.build_bundle,
real Ed25519, real AES-GCM); the agent is the C code, built host-natively and driven by ctypes.
"""

from __future__ import annotations

import os
import struct
from datetime import timedelta

import cbor2
import pytest

from tests.unit.device.agent import rig
from tests.unit.device.agent.rig import NOW, bundle, device, running
from tinymlops.bundle import (
    Signer,
    cbor,
    container,
    cose,
    generate_kek,
    init_keys,
    issue_recovery,
    load_signer,
    load_trust,
    revoke_key,
    rotate_signing_key,
)
from tinymlops.bundle import manifest as mf
from tinymlops.bundle.keys import _issue_revocations, _read_private

PREVIOUS = 7


def split(data: bytes) -> tuple[bytes, bytes]:
    import io

    fp = io.BytesIO(data)
    signed = container.read_signed_manifest(fp)
    return signed, fp.read()


def join(signed: bytes, payload: bytes) -> bytes:
    return container.header(len(signed)) + signed + payload


def parts(signed: bytes) -> tuple[bytes, dict, bytes, bytes]:
    protected, unprotected, payload, signature = cbor2.loads(signed).value
    return protected, dict(unprotected), payload, signature


def sign_raw(protected: bytes, payload: bytes, unprotected_cbor: bytes, key=None) -> bytes:
    """A COSE_Sign1 assembled byte by byte (so it can carry encodings cbor2 would never write),
    with a VALID signature over exactly these protected and payload bytes."""
    key = key or rig.signer()._key
    signature = key.sign(cose.sig_structure(protected, payload))
    return b"\xd2\x84" + cbor2.dumps(protected) + unprotected_cbor + cbor2.dumps(payload) + cbor2.dumps(signature)


def statement_header() -> bytes:
    return cbor.dumps({cose.HEADER_KEY_STATEMENT: rig.signer().statement_bytes})


def protected_header(extra: dict | None = None) -> bytes:
    header = {1: -8, 3: cose.CONTENT_MANIFEST, 4: bytes.fromhex(rig.signer().kid), **(extra or {})}
    return cbor.dumps(header)


@pytest.fixture(autouse=True, scope="module", params=["host", rig.EMULATED])
def backend(request):
    rig.use(request.param)
    yield request.param
    rig.use("host")


@pytest.fixture
def dev():
    return running(device(), PREVIOUS)


def refused(dev, data: bytes, reason: str, now=NOW) -> None:
    out = dev.install(data, now)
    assert out.reason == reason, out
    booted = dev.boot(now)
    assert booted.running_sequence == PREVIOUS and booted.event == "none", booted  # the old model stays
    assert dev.counters()["prov_touches"] == 0


# -- the attacks of tests/security/test_bundle_attacks.py, against the C agent --------------------
def test_genuine_bundle_is_accepted(dev) -> None:
    assert dev.install(bundle(8), NOW).reason == "pending"
    booted = dev.boot(NOW)
    assert booted.event == "confirmed" and booted.running_sequence == 8
    assert dev.state().floor == 8


def test_payload_byte_flipped(dev) -> None:
    data = bytearray(bundle(8))
    data[-10] ^= 0x01  # inside the 80-byte model image
    refused(dev, bytes(data), "payload_digest_mismatch")


def test_signature_byte_flipped(dev) -> None:
    signed, body = split(bundle(8))
    protected, unprotected, payload, signature = parts(signed)
    forged = bytes([signature[0] ^ 0x80]) + signature[1:]
    refused(dev, join(cbor.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, forged])), body), "bad_signature")


def test_manifest_field_edited(dev) -> None:
    signed, body = split(bundle(8))
    protected, unprotected, payload, signature = parts(signed)
    wire = cbor2.loads(payload)
    wire["sequence"] = 900
    edited = cbor.dumps(cbor2.CBORTag(18, [protected, unprotected, cbor.dumps(wire), signature]))
    refused(dev, join(edited, body), "bad_signature")


def test_signed_by_untrusted_key(dev, tmp_path) -> None:
    init_keys(tmp_path / "attacker", now=NOW - timedelta(days=1))
    refused(dev, bundle(8, sign=load_signer(tmp_path / "attacker", now=NOW)), "untrusted_key")


def test_signed_by_untrusted_key_with_stolen_statement(dev, tmp_path) -> None:
    init_keys(tmp_path / "attacker", now=NOW - timedelta(days=1))
    rogue = load_signer(tmp_path / "attacker", now=NOW)
    thief = Signer(rogue._key, rogue.statement, rogue.statement_bytes)
    thief.statement_bytes = rig.signer().statement_bytes
    refused(dev, bundle(8, sign=thief), "key_mismatch")


def test_signed_by_expired_key(tmp_path) -> None:
    directory = tmp_path / "keys"
    long_ago = NOW - timedelta(days=400)
    init_keys(directory, now=long_ago, validity=timedelta(days=365))
    old = load_signer(directory, now=long_ago + timedelta(days=1))
    dev = device(root=load_trust(directory / "root.pub").public_key)
    data = bundle(8, sign=old, lifetime_days=3650, now=long_ago + timedelta(days=1))
    assert dev.install(data, NOW).reason == "expired_key"


def test_signed_by_key_not_yet_valid(dev) -> None:
    assert dev.install(bundle(8), NOW - timedelta(days=2)).reason == "key_not_yet_valid"


def test_rollback(dev) -> None:
    refused(dev, bundle(6), "rollback")


def test_wrong_device_class(dev) -> None:
    refused(dev, bundle(8, device_class="cortex-m0-32k"), "wrong_class")


def test_expired_manifest(dev) -> None:
    later = NOW + timedelta(days=31)
    assert dev.install(bundle(8, lifetime_days=30), later).reason == "expired_manifest"


def test_mix_and_match_manifest_and_payload(dev) -> None:
    a, b = split(bundle(9, payload=rig.model(3))), split(bundle(8, payload=rig.model(4)))
    refused(dev, join(a[0], b[1]), "payload_digest_mismatch")


def test_mix_and_match_key_statements(tmp_path) -> None:
    directory = tmp_path / "keys"
    init_keys(directory, now=NOW - timedelta(days=1))
    first = load_signer(directory, now=NOW)
    rotate_signing_key(directory, now=NOW)
    second = load_signer(directory, now=NOW)
    signed, body = split(bundle(8, sign=first))
    protected, _, payload, signature = parts(signed)
    swapped = cbor.dumps(
        cbor2.CBORTag(18, [protected, {cose.HEADER_KEY_STATEMENT: second.statement_bytes}, payload, signature])
    )
    dev = device(root=load_trust(directory / "root.pub").public_key)
    assert dev.install(join(swapped, body), NOW).reason == "key_mismatch"


def test_truncated_payload(dev) -> None:
    refused(dev, bundle(8)[:-1], "payload_truncated")


def test_endless_data(dev) -> None:
    """The declared size bounds what the agent takes: the first byte past it is refused, and
    nothing is ever written past the slot."""
    data = bundle(8)
    assert dev.begin(NOW) == "more"
    assert dev.feed(data) == "more"
    fed = len(data)
    for _ in range(1000):  # an endless stream of zeros
        reason = dev.feed(b"\x00" * 64)
        fed += 64
        if reason != "more":
            break
    assert reason == "payload_too_long" and fed == len(data) + 64
    assert dev.boot(NOW).running_sequence == PREVIOUS


def test_endless_data_bounded_by_the_slot_size(dev) -> None:
    """A manifest declaring more than a model slot holds is refused before any payload byte is
    taken, whatever follows."""
    big = os.urandom(rig.SLOT_BYTES + 4096)
    data = bundle(8, payload=big)
    signed, _ = split(data)
    written = dev.counters()["bytes_written"]
    assert dev.begin(NOW) == "more"
    reason = dev.feed(container.header(len(signed)) + signed)
    assert reason == "too_large"
    assert dev.feed(b"\x00" * 4096) == "too_large"
    assert dev.counters()["bytes_written"] == written  # nothing written at all
    assert dev.boot(NOW).running_sequence == PREVIOUS


def test_wrong_decryption_key() -> None:
    kek = generate_kek()
    dev = running(device(kek=kek), PREVIOUS, kek=kek)
    refused(dev, bundle(8, kek=generate_kek()), "wrong_kek")


def test_wrong_class_key() -> None:
    """A bundle encrypted for another class (its KEK) offered to this class's device."""
    ours, theirs = generate_kek(), generate_kek()
    dev = running(device(kek=ours), PREVIOUS, kek=ours)
    refused(dev, bundle(8, kek=theirs), "wrong_kek")


def test_tampered_ciphertext() -> None:
    kek = generate_kek()
    dev = running(device(kek=kek), PREVIOUS, kek=kek)
    data = bytearray(bundle(8, kek=kek))
    data[-40] ^= 0x04
    refused(dev, bytes(data), "ciphertext_digest_mismatch")


def test_ciphertext_replayed_under_another_manifest() -> None:
    kek = generate_kek()
    dev = running(device(kek=kek), PREVIOUS, kek=kek)
    signed, body = split(bundle(8, kek=kek))
    original = mf.decode(cose.decode_sign1(signed, "t", cose.CONTENT_MANIFEST).payload)
    replayed = original.model_copy(update={"sequence": original.sequence + 1})
    refused(dev, join(rig.signer().sign(mf.encode(replayed)), body), "decryption_failed")


def test_encrypted_bundle_without_key(dev) -> None:
    refused(dev, bundle(8, kek=generate_kek()), "missing_key")


def test_key_statement_replayed_as_manifest(dev) -> None:
    refused(dev, join(rig.signer().statement_bytes, b""), "malformed")


def test_not_a_bundle(dev) -> None:
    refused(dev, b"\x7fELF" + bytes(100), "bad_magic")
    refused(dev, container.MAGIC + b"\x00\x02" + bytes(10), "unsupported_version")


# -- device policies ----------------------------------------------------------------------------
def test_equal_sequence_does_not_reinstall(dev) -> None:
    refused(dev, bundle(PREVIOUS), "already_installed")


def test_fast_forward() -> None:
    """A genuine bundle at 2^63-1 would lock the device out of every later release."""
    dev = running(device(ff_bound=100), PREVIOUS)
    refused(dev, bundle(2**63 - 1), "fast_forward")
    refused(dev, bundle(PREVIOUS + 101), "fast_forward")
    assert dev.install(bundle(PREVIOUS + 100), NOW).reason == "pending"  # the bound itself is allowed


def test_recovery_from_fast_forward_with_a_root_signed_statement() -> None:
    dev = running(device(ff_bound=100), PREVIOUS)
    running(dev, PREVIOUS + 100)  # a release far ahead (inside the bound) went out by mistake
    assert dev.install(bundle(PREVIOUS + 1), NOW).reason == "rollback"
    statement = issue_recovery(
        rig.keydir(), class_id=rig.CLASS_ID, device_id=rig.DEVICE_ID, recovery_counter=0, sequence=PREVIOUS, now=NOW
    )
    assert dev.apply_recovery(statement).reason == "ok"
    assert dev.state().floor == PREVIOUS and dev.state().recovery_counter == 1
    running(dev, PREVIOUS + 1)
    # the statement works once: replayed, it is refused and cannot lower the sequence again
    assert dev.apply_recovery(statement).reason == "stale_recovery"
    assert dev.state().floor == PREVIOUS + 1


def test_recovery_signed_by_a_signing_key_is_refused() -> None:
    dev = running(device(ff_bound=100), PREVIOUS)
    body = cbor.dumps(
        {
            "class_id": rig.CLASS_ID.bytes,
            "device_id": rig.DEVICE_ID.bytes,
            "recovery_counter": 0,
            "sequence": 0,
            "issued": int(NOW.timestamp()),
        }
    )
    forged = cose.encode_sign1(body, rig.signer()._key, bytes.fromhex(rig.signer().kid), cose.CONTENT_RECOVERY)
    assert dev.apply_recovery(forged).reason == "untrusted_key"
    assert dev.state().floor == PREVIOUS


def test_recovery_for_another_device_is_refused() -> None:
    import uuid

    dev = running(device(), PREVIOUS)
    other = issue_recovery(
        rig.keydir(), class_id=rig.CLASS_ID, device_id=uuid.uuid4(), recovery_counter=0, sequence=0, now=NOW
    )
    assert dev.apply_recovery(other).reason == "wrong_device"
    assert dev.state().floor == PREVIOUS


def test_revocation_list_delivered_then_enforced(tmp_path) -> None:
    directory = tmp_path / "keys"
    init_keys(directory, now=NOW - timedelta(days=1))
    old = load_signer(directory, now=NOW)
    dev = running(device(root=load_trust(directory / "root.pub").public_key), PREVIOUS, sign=old)
    stale_bundle = bundle(8, sign=old)  # the server still serves it
    rotate_signing_key(directory, now=NOW)
    revocations = revoke_key(directory, old.kid, now=NOW)
    assert dev.install_revocations(revocations.signed).reason == "ok"
    assert dev.state().revocation_version == revocations.sequence == 1
    refused(dev, stale_bundle, "revoked_key")
    running(dev, 9, sign=load_signer(directory, now=NOW))  # the rotated key, same root, works


def test_stale_revocation_list_refused(tmp_path) -> None:
    directory = tmp_path / "keys"
    init_keys(directory, now=NOW - timedelta(days=1))
    first = load_signer(directory, now=NOW)
    dev = device(root=load_trust(directory / "root.pub").public_key)
    rotate_signing_key(directory, now=NOW)
    v1 = revoke_key(directory, first.kid, now=NOW)
    second = load_signer(directory, now=NOW)
    rotate_signing_key(directory, now=NOW)
    v2 = revoke_key(directory, second.kid, now=NOW)
    assert dev.install_revocations(v2.signed).reason == "ok"
    assert dev.install_revocations(v1.signed).reason == "stale_revocations"  # would un-revoke `second`
    assert dev.install_revocations(v2.signed).reason == "stale_revocations"  # same version: nothing new
    assert dev.state().revocation_version == 2 and dev.state().revoked_count == 2
    assert dev.install(bundle(8, sign=second), NOW).reason == "revoked_key"


def test_revocation_list_signed_by_a_signing_key_is_refused(dev) -> None:
    root = _read_private(rig.keydir() / "root.key", None)
    genuine = _issue_revocations(root, 5, [rig.signer().kid], NOW)
    protected, _, payload, _ = parts(genuine)
    forged = cose.encode_sign1(payload, rig.signer()._key, bytes.fromhex(rig.signer().kid), cose.CONTENT_REVOCATIONS)
    assert dev.install_revocations(forged).reason == "untrusted_key"
    assert dev.state().revocation_version == 0


def test_root_key_an_update_tries_to_replace(dev, tmp_path) -> None:
    """An attacker with a whole hierarchy of their own (root, signing key, lists, recovery) tries
    every input the agent takes: all refused, and the provisioning page (the pinned root) is
    byte-identical afterwards — no code path of the agent writes it."""
    page = bytes(dev.flash[: dev.layout.page_size])
    init_keys(tmp_path / "attacker", now=NOW - timedelta(days=1))
    attacker = load_signer(tmp_path / "attacker", now=NOW)
    assert dev.install(bundle(8, sign=attacker), NOW).reason == "untrusted_key"
    # a "bundle" whose payload is a provisioning page carrying the attacker's root
    fake_page = page[:8] + load_trust(tmp_path / "attacker" / "root.pub").public_key + page[40:136]
    assert dev.install(bundle(8, payload=fake_page, sign=attacker), NOW).reason == "untrusted_key"
    root = _read_private(tmp_path / "attacker" / "root.key", None)
    assert dev.install_revocations(_issue_revocations(root, 9, [rig.signer().kid], NOW)).reason == "untrusted_key"
    recovery = issue_recovery(
        tmp_path / "attacker", class_id=rig.CLASS_ID, device_id=rig.DEVICE_ID, recovery_counter=0, sequence=0, now=NOW
    )
    assert dev.apply_recovery(recovery).reason == "untrusted_key"
    assert bytes(dev.flash[: dev.layout.page_size]) == page
    assert dev.counters()["prov_touches"] == 0
    assert dev.boot(NOW).running_sequence == PREVIOUS


def test_signed_non_model_payload(dev) -> None:
    """Genuinely signed, digest right, but not a model image: not_a_model, the old model stays."""
    refused(dev, bundle(8, payload=b"#!/bin/sh\nrm -rf /\n" * 100, selftest=None), "not_a_model")


def test_model_that_does_not_fit_the_runtime(dev) -> None:
    refused(dev, rig.unfit_bundle(dev, 8), "image_unfit")


def test_model_that_fails_its_self_test_is_reverted(dev) -> None:
    wrong = rig.selftest_for(rig.model(4))  # golden vectors of another model
    assert dev.install(bundle(8, payload=rig.model(3), selftest=wrong), NOW).reason == "pending"
    booted = dev.boot(NOW)
    assert booted.event == "reverted" and booted.reason == "selftest_failed"
    assert booted.running_sequence == PREVIOUS and dev.state().floor == PREVIOUS
    assert dev.state().last_reason == "selftest_failed"


# -- non-canonical COSE and CBOR: one signed manifest, one accepted encoding --------------------
def _manifest_payload() -> bytes:
    signed, _ = split(bundle(8))
    return parts(signed)[2]


def test_non_canonical_integer_in_signed_manifest(dev) -> None:
    """sequence 8 as 0x18 0x08 (a one-byte argument where the head alone suffices), validly signed."""
    payload = _manifest_payload()
    needle = b"\x68sequence\x08"
    assert needle in payload
    stretched = payload.replace(needle, b"\x68sequence\x18\x08")
    signed = sign_raw(protected_header(), stretched, statement_header())
    refused(dev, join(signed, rig.model(3)), "malformed")


def test_unsorted_map_keys_in_signed_manifest(dev) -> None:
    wire = cbor2.loads(_manifest_payload())
    unsorted = cbor2.dumps(dict(reversed(list(wire.items()))))  # same content, other order
    refused(dev, join(sign_raw(protected_header(), unsorted, statement_header()), rig.model(3)), "malformed")


def test_duplicate_key_in_protected_header(dev) -> None:
    protected = b"\xa4" + protected_header()[1:] + b"\x01\x27"  # alg twice
    refused(dev, join(sign_raw(protected, _manifest_payload(), statement_header()), rig.model(3)), "malformed")


def test_indefinite_length_cose_array(dev) -> None:
    signed = sign_raw(protected_header(), _manifest_payload(), statement_header())
    indefinite = b"\xd2\x9f" + signed[2:] + b"\xff"
    refused(dev, join(indefinite, rig.model(3)), "malformed")


def test_unknown_critical_header(dev) -> None:
    protected = protected_header({2: [99]})  # crit: [99], a header this verifier does not know
    refused(dev, join(sign_raw(protected, _manifest_payload(), statement_header()), rig.model(3)), "malformed")


def test_extra_unprotected_header(dev) -> None:
    signed, body = split(bundle(8))
    protected, unprotected, payload, signature = parts(signed)
    extra = cbor.dumps(cbor2.CBORTag(18, [protected, {**unprotected, "note": "hi"}, payload, signature]))
    refused(dev, join(extra, body), "malformed")


def test_trailing_bytes_after_cose(dev) -> None:
    signed, body = split(bundle(8))
    refused(dev, join(signed + b"\x00", body), "malformed")


def test_float_where_an_integer_belongs(dev) -> None:
    payload = _manifest_payload()
    floated = payload.replace(b"\x68sequence\x08", b"\x68sequence\xf9\x48\x00")  # 8.0 as half float
    refused(dev, join(sign_raw(protected_header(), floated, statement_header()), rig.model(3)), "malformed")


def test_header_length_lies(dev) -> None:
    signed, body = split(bundle(8))
    lying = container.MAGIC + struct.pack(">HI", 1, len(signed) + 5) + signed + body
    refused(dev, lying, "malformed")
