"""Offline metering on the C agent (host build): quota tokens, refusals, the counter in evidence.

Quota tokens are signed by a metering key that the root certified for quota signing (key statement
purpose "quota-signing"), so the root stays offline. One test per attack on that chain, named after
it; the valid chain runs on the host build here and once on the emulated core."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.device.agent import rig
from tinymlops.bundle import BundleError, Reason, cose, verify_bundle
from tinymlops.bundle.evidence import verify_evidence
from tinymlops.bundle.keys import Signer, _issue_revocations, _issue_statement, _read_private, metering_signer
from tinymlops.bundle.quota import QuotaToken, sign_quota
from tinymlops.bundle.trust import TrustAnchor, key_id, verify_statement
from tinymlops.device.agent.driver import AgentLibrary, Layout, SimDevice

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
YEAR = timedelta(days=365)


@pytest.fixture(scope="module")
def lib() -> AgentLibrary:
    return AgentLibrary.load()


@dataclass
class Metered:
    dev: SimDevice
    root: Ed25519PrivateKey
    meter: Signer  # a metering key the root certified, valid around NOW
    dev_id: uuid.UUID
    public: bytes


@pytest.fixture
def metered(lib) -> Metered:
    root = Ed25519PrivateKey.generate()
    dev_id = uuid.uuid4()
    dev = SimDevice(lib, Layout.for_slot(16 * 1024))
    public = dev.provision(root.public_key().public_bytes_raw(), dev_id, uuid.uuid4(), metered=True)
    return Metered(dev, root, metering_signer(root, now=NOW - timedelta(days=1), validity=YEAR), dev_id, public)


def token(meter: Signer, dev_id, quota, serial, expires=NOW + timedelta(days=30)) -> bytes:
    return sign_quota(QuotaToken(device_id=dev_id, quota=quota, expires=expires, serial=serial), meter)


def _delegated(root: Ed25519PrivateKey, purpose: str, start: datetime, validity: timedelta) -> Signer:
    key = Ed25519PrivateKey.generate()
    statement = _issue_statement(root, key, start, validity, purpose)  # type: ignore[arg-type]
    trust = TrustAnchor.from_key(root.public_key())
    return Signer(key, verify_statement(statement, trust, purpose), statement)  # type: ignore[arg-type]


def test_quota_exhausted_then_new_token_then_expired_token(metered):
    dev, meter, dev_id, public = metered.dev, metered.meter, metered.dev_id, metered.public
    assert dev.consume(NOW).reason == "quota_exhausted"  # metered, no token yet
    assert dev.install_quota(token(meter, dev_id, 3, 1), NOW).reason == "ok"
    assert [dev.consume(NOW).reason for _ in range(4)] == ["ok", "ok", "ok", "quota_exhausted"]
    assert dev.install_quota(token(meter, dev_id, 2, 2), NOW).reason == "ok"  # a new token
    assert [dev.consume(NOW).reason for _ in range(3)] == ["ok", "ok", "quota_exhausted"]
    # an expired token is refused outright; a valid one stops working at its expiry
    assert dev.install_quota(token(meter, dev_id, 5, 3, NOW - timedelta(seconds=1)), NOW).reason == "quota_expired"
    assert dev.install_quota(token(meter, dev_id, 5, 4, NOW + timedelta(hours=1)), NOW).reason == "ok"
    assert dev.consume(NOW + timedelta(hours=2)).reason == "quota_expired"
    assert dev.meter().count == 5
    ev = verify_evidence(dev.evidence(b"n" * 16), public)
    assert ev.inference_count == 5 and ev.quota_serial == 4 and ev.device_id == dev_id


def test_quota_token_replayed_foreign_or_for_another_device_refused(metered):
    dev, meter, dev_id = metered.dev, metered.meter, metered.dev_id
    signed = token(meter, dev_id, 3, 7)
    assert dev.install_quota(signed, NOW).reason == "ok"
    assert dev.install_quota(signed, NOW).reason == "stale_quota"
    assert dev.install_quota(token(meter, uuid.uuid4(), 3, 8), NOW).reason == "wrong_device"
    foreign = metering_signer(Ed25519PrivateKey.generate(), now=NOW - timedelta(days=1), validity=YEAR)
    assert dev.install_quota(token(foreign, dev_id, 3, 9), NOW).reason == "untrusted_key"


def test_quota_token_signed_by_bundle_signing_key_refused(metered):
    """The root certified this key for bundles only: its quota token is untrusted, on the device
    and in the Python verifier."""
    bundle_key = _delegated(metered.root, "bundle-signing", NOW - timedelta(days=1), YEAR)
    signed = token(bundle_key, metered.dev_id, 1_000_000, 1)
    assert metered.dev.install_quota(signed, NOW).reason == "untrusted_key"
    with pytest.raises(BundleError) as exc:
        QuotaToken.verify(signed, TrustAnchor.from_key(metered.root.public_key()), now=NOW)
    assert exc.value.reason is Reason.UNTRUSTED_KEY
    assert metered.dev.meter().serial == 0  # nothing installed


def test_quota_token_signed_by_root_directly_refused(metered):
    """The old format (root-signed, no statement) is refused: a device never needs the root online."""
    root = metered.root
    wire = QuotaToken(device_id=metered.dev_id, quota=9, expires=NOW + timedelta(days=1), serial=1).to_wire()
    signed = cose.encode_sign1(wire, root, bytes.fromhex(key_id(root.public_key())), cose.CONTENT_QUOTA)
    assert metered.dev.install_quota(signed, NOW).reason == "untrusted_key"


def test_quota_token_from_expired_metering_key_refused(metered):
    expired = _delegated(metered.root, "quota-signing", NOW - timedelta(days=10), timedelta(days=9))
    assert metered.dev.install_quota(token(expired, metered.dev_id, 3, 1), NOW).reason == "expired_key"
    early = _delegated(metered.root, "quota-signing", NOW + timedelta(days=1), YEAR)
    assert metered.dev.install_quota(token(early, metered.dev_id, 3, 2), NOW).reason == "key_not_yet_valid"
    with pytest.raises(BundleError) as exc:
        QuotaToken.verify(
            token(expired, metered.dev_id, 3, 1), TrustAnchor.from_key(metered.root.public_key()), now=NOW
        )
    assert exc.value.reason is Reason.EXPIRED_KEY


def test_quota_token_from_revoked_metering_key_refused(metered):
    dev, meter = metered.dev, metered.meter
    assert dev.install_quota(token(meter, metered.dev_id, 3, 1), NOW).reason == "ok"  # before the revocation
    revocations = _issue_revocations(metered.root, 1, [meter.kid], NOW)
    assert dev.install_revocations(revocations).reason == "ok"
    assert dev.install_quota(token(meter, metered.dev_id, 3, 2), NOW).reason == "revoked_key"
    fresh = metering_signer(metered.root, now=NOW - timedelta(days=1), validity=YEAR)  # its replacement
    assert dev.install_quota(token(fresh, metered.dev_id, 3, 3), NOW).reason == "ok"


def test_metering_key_cannot_sign_bundle_that_installs():
    """A bundle signed by a metering key: refused by the agent and by verify_bundle (untrusted_key)."""
    rig.use("host")
    root = _read_private(rig.keydir() / "root.key", None)
    meter = metering_signer(root, now=rig.NOW - timedelta(days=1), validity=YEAR)
    signed = rig.bundle(5, sign=meter)
    dev = rig.device()
    assert dev.install(signed, rig.NOW).reason == "untrusted_key"
    result = verify_bundle(signed, rig.trust(), now=rig.NOW)
    assert not result.ok and result.reason is Reason.UNTRUSTED_KEY, result.detail
    assert dev.install(rig.bundle(5), rig.NOW).reason == "pending"  # the bundle-signing key's bundle installs


def test_metering_key_chain_accepted_on_emulated_core():
    """The valid chain root → metering key → token on the firmware of the emulated nRF52840."""
    rig.use(rig.EMULATED)
    try:
        dev = rig.device()
        public = dev.provision(rig.trust().public_key, rig.DEVICE_ID, rig.CLASS_ID, metered=True)
        root = _read_private(rig.keydir() / "root.key", None)
        meter = metering_signer(root, now=rig.NOW - timedelta(days=1), validity=YEAR)
        quota = QuotaToken(device_id=rig.DEVICE_ID, quota=1, expires=rig.NOW + timedelta(days=1), serial=1)
        assert dev.install_quota(sign_quota(quota, meter), now=rig.NOW).reason == "ok"
        bundle_key = _delegated(root, "bundle-signing", rig.NOW - timedelta(days=1), YEAR)
        assert dev.install_quota(sign_quota(quota, bundle_key), now=rig.NOW).reason == "untrusted_key"
        got = [dev.metered_infer(b"", now=rig.NOW)[0] for _ in range(2)]  # no model: counted, then no_model
        assert got == ["no_model", "quota_exhausted"]
        ev = verify_evidence(dev.evidence(b"x" * 8, now=rig.NOW), public)
        assert ev.inference_count == 1 and ev.quota_serial == 1
    finally:
        rig.use("host")


def test_unmetered_device_counts_but_never_refuses(lib):
    dev = SimDevice(lib, Layout.for_slot(16 * 1024))
    dev.provision(Ed25519PrivateKey.generate().public_key().public_bytes_raw(), uuid.uuid4(), uuid.uuid4())
    assert [dev.consume(NOW).reason for _ in range(3)] == ["ok"] * 3
    assert dev.meter().count == 3


def test_c_signer_matches_rfc8032_and_the_python_verifier(lib):
    # RFC 8032 §7.1 TEST 1
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = lib.ed25519_sign(seed, pk, b"")
    assert sig.hex().startswith(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
