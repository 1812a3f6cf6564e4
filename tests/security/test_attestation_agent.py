"""The C agent's evidence: signed by the device key from the provisioning page, claims what runs.
Each test runs on the host build and on the firmware of the emulated nRF52840 (Cortex-M4F)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.device.agent import rig
from tests.unit.device.agent.rig import CLASS_ID, DEVICE_ID, NOW
from tinymlops.bundle import BundleError
from tinymlops.bundle.evidence import verify_evidence
from tinymlops.bundle.keys import _read_private, metering_signer
from tinymlops.bundle.quota import QuotaToken, sign_quota


@pytest.fixture(params=["host", rig.EMULATED])
def backend(request):
    rig.use(request.param)
    yield request.param
    rig.use("host")


def _provision(metered: bool = False):
    dev = rig.device()
    public = dev.provision(rig.trust().public_key, DEVICE_ID, CLASS_ID, metered=metered)
    return dev, public


def test_evidence_claims_the_running_digest_and_verifies(backend):
    dev, public = _provision()
    image = rig.model(3, 96, 24) if backend != "host" else rig.model(3)
    assert dev.install(rig.bundle(5, payload=image), NOW).reason == "pending"
    assert dev.boot(NOW).event == "confirmed"
    nonce = bytes(range(16))
    ev = verify_evidence(dev.evidence(nonce), public)
    assert ev.nonce == nonce and ev.device_id == DEVICE_ID and ev.class_id == CLASS_ID
    assert ev.running_slot is not None and ev.running_sequence == 5
    assert ev.running_digest() == hashlib.sha256(image).hexdigest()
    with pytest.raises(BundleError):  # another key does not verify it
        verify_evidence(dev.evidence(nonce), Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    # the seed is in the provisioning page only: the report never carries it
    assert not any(b in dev.evidence(nonce) for b in (bytes(dev.flash[136:168]),))


def test_metered_inference_refused_beyond_quota(backend):
    dev, public = _provision(metered=True)
    root = _read_private(rig.keydir() / "root.key", None)
    token = QuotaToken(device_id=DEVICE_ID, quota=2, expires=NOW + timedelta(days=1), serial=1)
    meter = metering_signer(root, now=NOW - timedelta(days=1), validity=timedelta(days=30))
    assert dev.install_quota(sign_quota(token, meter), now=NOW).reason == "ok"
    if backend == "host":
        got = [dev.consume(NOW).reason for _ in range(3)]
    else:
        got = [dev.metered_infer(b"", now=NOW)[0] for _ in range(3)]  # no model: counted, then no_model
        got = ["ok" if r == "no_model" else r for r in got]
    assert got == ["ok", "ok", "quota_exhausted"]
    assert verify_evidence(dev.evidence(b"x" * 8), public).inference_count == 2


def test_telemetry_signed_by_the_c_agent_verifies(backend):
    from tinymlops.bundle.evidence import CONTENT_TELEMETRY, verify_signed

    dev, public = _provision()
    window = b'{"sequence": 1, "inference_count": 300}'
    signed = dev.sign_telemetry(window)
    assert verify_signed(signed, public, CONTENT_TELEMETRY, "telemetry", 4096) == window
