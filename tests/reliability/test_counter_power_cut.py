"""A power cut at every flash write/erase of the inference counter's update never lowers the
count, and never hands out an inference the counter did not record first. The same for the boot
count (the state log record every boot appends), on the host build and on the emulated core."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinymlops.bundle.keys import metering_signer
from tinymlops.bundle.quota import QuotaToken, sign_quota
from tinymlops.device.agent.driver import AgentLibrary, Layout, SimDevice

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def test_power_cut_during_counter_update_never_lowers_count():
    lib = AgentLibrary.load()
    root = Ed25519PrivateKey.generate()
    dev_id = uuid.uuid4()
    dev = SimDevice(lib, Layout.for_slot(16 * 1024, page_size=256))  # 4 records a page: many page flips
    dev.provision(root.public_key().public_bytes_raw(), dev_id, uuid.uuid4(), metered=True)
    quota = QuotaToken(device_id=dev_id, quota=10_000, expires=NOW + timedelta(days=1), serial=1)
    meter = metering_signer(root, now=NOW - timedelta(days=1), validity=timedelta(days=30))
    assert dev.install_quota(sign_quota(quota, meter), NOW).reason == "ok"
    cuts = 0
    for step in range(40):  # every write and erase of 40 updates, including page changes
        before = dev.meter().count
        cut_at = 1
        while True:
            trial = dev.clone()
            out = trial.consume(NOW, cut_at=cut_at)
            after = trial.meter().count
            assert after >= before, f"update {step}, cut at op {cut_at}: {before} -> {after}"
            assert after <= before + 1
            if not out.cut:
                assert out.reason == "ok" and after == before + 1
                break
            cuts += 1
            assert trial.consume(NOW).reason == "ok" and trial.meter().count >= before + 1  # recovers
            cut_at += 1
        assert dev.consume(NOW).reason == "ok"
    assert cuts >= 40
    assert dev.meter().count == 40


def _boot_count_survives_every_cut(dev, boots: int) -> int:
    """Boot `boots` times; before each, a cut at every flash op of that boot on a copy: the boot
    count is never lower afterwards and at most one higher. → how many cuts were tried."""
    cuts = 0
    for step in range(boots):
        before = dev.boot_count()
        cut_at = 1
        while True:
            trial = dev.clone()
            out = trial.boot(NOW, cut_at=cut_at)
            after = trial.boot_count()
            assert before <= after <= before + 1, f"boot {step}, cut at op {cut_at}: {before} -> {after}"
            if not out.cut:
                assert after == before + 1
                break
            cuts += 1
            trial.boot(NOW)  # the next power-on counts again from what stood
            assert trial.boot_count() >= before + 1
            cut_at += 1
        dev.boot(NOW)
        assert dev.boot_count() == before + 1
    return cuts


def test_power_cut_during_boot_count_update_never_lowers_it():
    lib = AgentLibrary.load()
    dev = SimDevice(lib, Layout.for_slot(16 * 1024, page_size=256))  # 4 records a page: many page flips
    dev.provision(Ed25519PrivateKey.generate().public_key().public_bytes_raw(), uuid.uuid4(), uuid.uuid4())
    assert dev.boot_count() == 0
    cuts = _boot_count_survives_every_cut(dev, 24)  # every write and erase, including page changes
    assert cuts >= 24 and dev.boot_count() == 24


def test_power_cut_during_boot_count_update_never_lowers_it_on_the_emulated_core():
    from tests.unit.device.agent import rig
    from tinymlops.device.agent.emulated import EmuDevice

    dev = EmuDevice(rig.profile(rig.EMULATED), board=rig.board())
    dev.provision(Ed25519PrivateKey.generate().public_key().public_bytes_raw(), uuid.uuid4(), uuid.uuid4())
    assert _boot_count_survives_every_cut(dev, 3) >= 3 and dev.boot_count() == 3
