"""The firmware state machine, one test per transition, with real signed bundles and real TFLM."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from tinymlops.bundle import SelfTest, generate_kek
from tinymlops.device.firmware import Stage
from tinymlops.device.flash import PowerCut
from tinymlops.errors import DeviceError


def test_blank_device_installs_and_confirms(profiles, int8_model, golden, make_bundle, device_for, test_xq) -> None:
    dev = device_for(profiles["nrf52840"])
    with pytest.raises(DeviceError, match="no confirmed model"):
        dev.runtime()
    result = dev.install(make_bundle(int8_model, profiles["nrf52840"], selftest=golden, sequence=3))
    assert result.ok and result.stage == Stage.CONFIRMED and result.slot == "a"
    state = dev.flash.read_state()
    assert (state.active, state.pending, state.confirmed, state.min_sequence) == ("a", None, True, 3)
    assert dev.running_model() == int8_model
    from tinymlops.ml.inference import run_tflm

    np.testing.assert_array_equal(dev.infer(test_xq[:20]), run_tflm(int8_model, test_xq[:20], 65536))


def test_update_goes_to_the_inactive_slot_and_keeps_the_old(profiles, int8_model, golden, make_bundle, device_for):
    p = profiles["nrf52840"]
    dev = device_for(p)
    dev.install(make_bundle(int8_model, p, version="1", sequence=1, selftest=golden))
    result = dev.install(make_bundle(int8_model, p, version="2", sequence=2, selftest=golden))
    assert result.ok and result.slot == "b"
    status = dev.status()
    assert status.state.active == "b" and status.slots["a"].model_version == "1"
    assert status.slots["b"].model_version == "2" and status.state.min_sequence == 2


def test_install_without_reboot_is_pending_until_boot(profiles, int8_model, golden, make_bundle, device_for) -> None:
    p = profiles["stm32l4r5"]
    dev = device_for(p)
    pending = dev.install(make_bundle(int8_model, p, selftest=golden), reboot=False)
    assert pending.ok and pending.stage == Stage.PENDING
    assert dev.flash.read_state().pending == "a" and dev.flash.read_state().active is None
    booted = dev.boot()
    assert booted.event == "confirmed" and booted.running_slot == "a"
    assert dev.boot().event == "booted"  # a later boot just runs the confirmed image


def test_failed_self_test_reverts_to_the_old_slot(profiles, int8_model, golden, make_bundle, device_for) -> None:
    p = profiles["nrf52840"]
    dev = device_for(p)
    dev.install(make_bundle(int8_model, p, version="1", sequence=1, selftest=golden))
    wrong = bytes((b + 7) % 256 for b in golden.expected)  # signed, but not what this model computes
    bad = SelfTest(**{**golden.model_dump(), "expected": wrong})
    result = dev.install(make_bundle(int8_model, p, version="2", sequence=2, selftest=bad))
    assert not result.ok and result.stage == Stage.SELFTEST
    assert "reverted from slot b: golden vectors differ by" in result.detail
    state = dev.flash.read_state()
    assert (state.active, state.pending, state.min_sequence) == ("a", None, 1)  # sequence not raised
    assert "reverted" in state.last_event and dev.boot().model_version == "1"


def test_too_many_boot_attempts_revert(profiles, int8_model, golden, make_bundle, device_for) -> None:
    """The self-test keeps dying (watchdog, brown-out): after max attempts the bootloader gives up on it."""
    p = profiles["nrf52840"]
    dev = device_for(p, name="dev")
    dev.install(make_bundle(int8_model, p, version="1", sequence=1, selftest=golden))
    dev.install(make_bundle(int8_model, p, version="2", sequence=2, selftest=golden), reboot=False)

    def dies_in_self_test(point: str) -> None:
        if point == "state.attempt:after":
            raise PowerCut(point)

    for attempt in range(1, 4):
        crashing = device_for(p, name="dev", fault=dies_in_self_test, max_boot_attempts=3)
        with pytest.raises(PowerCut):
            crashing.boot()
        assert crashing.flash.read_state().boot_attempts == attempt
    booted = device_for(p, name="dev", max_boot_attempts=3).boot()
    assert booted.event == "reverted" and "no confirmation after 3 boot attempts" in booted.detail
    assert booted.running_slot == "a" and booted.model_version == "1"


def test_rollback_is_refused(profiles, int8_model, golden, make_bundle, device_for) -> None:
    p = profiles["nrf52840"]
    dev = device_for(p)
    dev.install(make_bundle(int8_model, p, version="5", sequence=5, selftest=golden))
    result = dev.install(make_bundle(int8_model, p, version="4", sequence=4, selftest=golden))
    assert not result.ok and (result.stage, result.reason) == (Stage.VERIFY, "rollback")
    assert dev.flash.read_state().active == "a" and dev.flash.read_slot("b") is None  # nothing written


def test_bundle_for_another_class_is_refused(profiles, int8_model, golden, make_bundle, device_for) -> None:
    dev = device_for(profiles["nrf52840"])
    result = dev.install(make_bundle(int8_model, profiles["stm32l4r5"], selftest=golden))
    assert not result.ok and (result.stage, result.reason) == (Stage.VERIFY, "wrong_class")
    assert dev.flash.read_slot("a") is None


def test_expired_and_tampered_bundles_are_refused(profiles, int8_model, golden, make_bundle, device_for) -> None:
    p = profiles["nrf52840"]
    bundle = make_bundle(int8_model, p, selftest=golden, lifetime=timedelta(days=1))
    later = datetime.now(timezone.utc) + timedelta(days=2)
    assert device_for(p, name="late", clock=lambda: later).install(bundle).reason == "expired_manifest"
    data = bytearray(bundle.read_bytes())
    data[-100] ^= 0x01  # one bit in the payload
    result = device_for(p, name="tampered").install(bytes(data))
    assert (result.stage, result.reason) == (Stage.VERIFY, "payload_digest_mismatch")


def test_encrypted_bundle_needs_the_device_kek(profiles, int8_model, golden, make_bundle, device_for) -> None:
    p, kek = profiles["esp32s3"], generate_kek()
    bundle = make_bundle(int8_model, p, selftest=golden, kek=kek)
    assert device_for(p, name="with", kek=kek).install(bundle).ok
    assert device_for(p, name="without").install(bundle).reason == "missing_key"
    assert device_for(p, name="other", kek=generate_kek()).install(bundle).stage == Stage.VERIFY


def test_m0plus_refuses_the_default_model_for_its_ram(profiles, int8_model, golden, make_bundle, device_for) -> None:
    m0 = profiles["stm32l072-lora"]
    assert len(int8_model) <= m0.flash_model_bytes  # it is NOT the flash: the model fits the slot
    result = device_for(m0).install(make_bundle(int8_model, m0, selftest=golden))
    assert not result.ok and (result.stage, result.reason) == (Stage.CHECK, "arena")
    assert "cannot allocate the model in the 4096 B RAM budget" in result.detail
    assert device_for(m0).flash.read_slot("a") is None


def test_an_op_the_firmware_lacks_is_refused(profiles, tanh_model, make_bundle, device_for) -> None:
    nrf = profiles["nrf52840"]
    assert "TANH" not in nrf.ops and "TANH" in profiles["stm32h7a3"].ops
    result = device_for(nrf).install(make_bundle(tanh_model, nrf))
    assert (result.stage, result.reason) == (Stage.CHECK, "ops")
    assert result.detail == "op TANH not registered by the nrf52840 firmware"
    assert device_for(profiles["stm32h7a3"], name="h7").install(make_bundle(tanh_model, profiles["stm32h7a3"])).ok


def test_a_payload_larger_than_the_slot_is_refused_while_streaming(profiles, int8_model, make_bundle, device_for):
    small = profiles["nrf52840"].model_copy(update={"flash_model_bytes": 8192})
    result = device_for(small).install(make_bundle(int8_model, small))
    assert (result.stage, result.reason) == (Stage.RECEIVE, "too_large")
    assert "8192-byte model slot" in result.detail
