"""HIL over every shipped profile with real signed bundles: the class's model image runs on its
emulated part (every output byte vs the tflite-micro interpreter), the ESP32-S3 on the host TFLM
reference, labelled; figures, statuses, the gate, the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinymlops.device import hil
from tinymlops.ml.data.split import load_split

EMULATED = ("nrf52840", "stm32l4r5", "stm32h7a3", "stm32l072-lora", "stm32u585", "esp32c3")


def _bundle(model, profile, signer, out: Path, golden) -> Path:
    from tinymlops.bundle import build_bundle

    payload = hil.class_payload(model, profile)
    draft = hil.manifest_draft(
        model, profile, model_name="digits", model_version="1", sequence=1, selftest=golden, payload=payload
    )
    build_bundle(payload.data, draft, signer, out)
    hil.reference_for(out).write_bytes(model)
    return out


@pytest.fixture(scope="module")
def reports(profiles, int8_model, golden, keys, prepared_dir, tmp_path_factory):
    signer, trust = keys
    work = tmp_path_factory.mktemp("hil")
    test = load_split(prepared_dir, "test")
    out = []
    for p in profiles.values():
        bundle = _bundle(int8_model, p, signer, work / "bundles" / f"{p.name}.bundle", golden)
        out.append(hil.run_hil(bundle, p, trust, test, work / "devices"))
    return out


def test_every_emulated_profile_runs_the_image_bit_exact_with_tflm(reports) -> None:
    by_name = {r.profile: r for r in reports}
    for name in EMULATED:
        r = by_name[name]
        assert r.status == "passed", (name, r.reason)
        assert r.runtime.startswith("emulated ") and r.install.stage == "confirmed" and r.n_test > 300
        assert r.tflm_agreement == 1.0 and r.max_abs_diff == 0 and r.golden_max_abs_diff == 0
        assert r.accuracy_device == r.accuracy_reference > 0.9
        assert r.cycles > 0 and r.latency_ms > 0 and r.energy_uj > 0 and r.instructions_per_s > 1e6
        assert 0 < r.stack_bytes <= r.stack_region_bytes
        assert r.ram_used_bytes == r.static_ram_bytes + r.image_arena_bytes + r.stack_bytes <= r.ram_available_bytes
        assert r.flash_bytes == r.image_bytes <= r.slot_bytes and r.image_format_version == 1
        assert r.estimate.latency_ms > 0  # the old formula stays beside, labelled as an estimate
        # installed by the C agent on the part's emulated core: verified, written, rebooted, self-tested
        assert r.install_runtime == f"C agent on the emulated {r.runtime.split()[-1]}", r.install_runtime
        assert r.install.slot == "a" and r.install.sequence == 1 and r.install_cycles > 1e6 and r.boot_cycles > 1e6
        ram = r.agent_ram
        assert ram.need_bytes == ram.static_bytes + ram.arena_bytes + ram.stack_bytes <= ram.available_bytes
        assert ram.arena_bytes == r.image_arena_bytes and ram.stack_bytes > 1024 and ram.resident_bytes == 0


def test_the_m0_plus_runs_its_agent_as_a_boot_stage_with_the_whole_ram(reports) -> None:
    """The LoRa node's agent does not fit beside the radio stack: it runs before it (time-shared RAM)."""
    r = next(r for r in reports if r.profile == "stm32l072-lora")
    ram = r.agent_ram
    assert ram.mode == "boot stage" and ram.available_bytes == 20 * 1024
    assert ram.agent_static_bytes > 4096  # context + the 4 KB manifest work buffer + I/O buffer
    assert ram.need_bytes > r.ram_available_bytes  # more than the app RAM the radio stack leaves ...
    assert r.ram_used_bytes <= r.ram_available_bytes  # ... while the application phase fits beside it
    others = [x for x in reports if x.agent_ram is not None and x.profile != r.profile]
    assert others and all(x.agent_ram.mode == "resident" for x in others)


def test_esp32s3_stays_on_the_host_reference_and_says_why(reports, int8_model) -> None:
    r = next(r for r in reports if r.profile == "esp32s3")
    assert r.status == "passed" and r.runtime.startswith("host reference (TFLM)") and "Xtensa" in r.runtime
    assert r.cycles is None and r.flash_bytes == len(int8_model) and r.top1_agreement == 1.0
    assert r.install.stage == "confirmed" and r.install_runtime.startswith("C agent, host build (SimDevice)")
    assert "Xtensa" in r.install_runtime and r.agent_ram is None
    assert "esp32s3 runs on the host reference (TFLM)" in hil.summary_table(reports)


def test_a_part_too_small_for_the_image_is_excluded_with_the_numbers(profiles, int8_model, golden, keys, tmp_path):
    signer, trust = keys
    m0 = profiles["stm32l072-lora"]
    small = m0.model_copy(update={"mcu": m0.mcu.model_copy(update={"reserved_ram_bytes": 17 * 1024})})
    bundle = _bundle(int8_model, small, signer, tmp_path / "m0.bundle", golden)
    r = hil.run_hil(bundle, small, trust, load_split_small(), tmp_path)
    assert r.status == "excluded" and r.reason.startswith("does not fit: RAM: static ") and "\n" not in r.reason
    assert "B available" in r.reason and hil.gate_failures([r]) == []


def load_split_small():
    import numpy as np

    from tinymlops.ml.data.split import Split

    return Split(x=np.zeros((2, 8, 8, 1), np.float32), y=np.zeros(2, np.int64))


def test_a_refused_bundle_fails_the_gate(profiles, int8_model, golden, keys, prepared_dir, tmp_path) -> None:
    signer, trust = keys
    bundle = _bundle(int8_model, profiles["stm32l4r5"], signer, tmp_path / "l4.bundle", golden)
    report = hil.run_hil(bundle, profiles["nrf52840"], trust, load_split(prepared_dir, "test"), tmp_path)
    assert report.status == "failed" and report.reason.startswith("wrong_class:")
    assert hil.gate_failures([report]) == [f"nrf52840: {report.reason}"]


def test_an_op_the_firmware_lacks_is_refused_before_bundling(profiles, tanh_model) -> None:
    from tinymlops.errors import UnsupportedModel

    with pytest.raises(UnsupportedModel, match="TANH.*not registered") as err:
        hil.class_payload(tanh_model, profiles["nrf52840"])
    assert "\n" not in str(err.value)


def test_outputs_json_markdown_table_and_plot(reports, tmp_path: Path) -> None:
    path = reports[0].write(tmp_path / "r.json")
    assert hil.HILReport.model_validate(json.loads(path.read_text())) == reports[0]
    table = hil.summary_markdown(reports)
    assert table.count("\n| ") == len(reports)
    text = hil.summary_table(reports)
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert all(r.profile in text for r in reports)
    png = hil.plot(reports, tmp_path / "hil.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_the_manifest_records_the_image(profiles, int8_model, golden, keys, tmp_path) -> None:
    from tinymlops.bundle import read_manifest

    signer, _ = keys
    payload = hil.class_payload(int8_model, profiles["stm32u585"])
    m = read_manifest(_bundle(int8_model, profiles["stm32u585"], signer, tmp_path / "u5.bundle", golden))
    assert m.image is not None and m.image.format == "tmr" and m.image.format_version == 1
    assert m.image.sha256 == m.payload_sha256 == payload.digest and m.image.size == m.payload_size == len(payload.data)
    assert m.image.arena_bytes == m.arena_bytes == payload.arena_bytes and m.ops == payload.ops
    tflite = read_manifest(_bundle(int8_model, profiles["esp32s3"], signer, tmp_path / "s3.bundle", golden))
    assert tflite.image is None and tflite.payload_size == len(int8_model)


def test_a_release_sequenced_in_unix_seconds_installs_on_the_fresh_twin(profiles, int8_model, golden, keys, tmp_path):
    """Release sequences are Unix seconds (tasks/release.py): the twin has no history to bound a jump."""
    import time

    from tinymlops.bundle import build_bundle

    signer, trust = keys
    h7 = profiles["stm32h7a3"]
    payload = hil.class_payload(int8_model, h7)
    seq = int(time.time())
    draft = hil.manifest_draft(
        int8_model, h7, model_name="digits", model_version="2", sequence=seq, selftest=golden, payload=payload
    )
    bundle = tmp_path / "h7.bundle"
    build_bundle(payload.data, draft, signer, bundle)
    hil.reference_for(bundle).write_bytes(int8_model)
    r = hil.run_hil(bundle, h7, trust, load_split_small(), tmp_path)
    assert r.install.stage == "confirmed" and r.install.sequence == seq, r.reason


@pytest.mark.parametrize("name", ["nrf52840", "esp32c3"])
def test_hil_shows_the_quota_refusal_on_the_emulated_mcu(name, profiles, int8_model, golden, keys, key_paths,
                                                          prepared_dir, tmp_path) -> None:  # fmt: skip
    """A quota of 3 on the emulated part: the C agent serves 3 of 5 metered inferences (outputs
    equal to TFLM's), refuses the 4th with quota_exhausted, and its signed evidence counts 3."""
    import shutil

    from tinymlops.bundle import create_metering_key
    from tinymlops.bundle.quota import quota_issuer

    signer, trust = keys
    p = profiles[name]
    bundle = _bundle(int8_model, p, signer, tmp_path / f"{name}.bundle", golden)
    if name == "esp32c3":  # the vendor's setup: a metering key signs, root.key is offline
        offline = tmp_path / "keys"
        shutil.copytree(key_paths.dir, offline)
        create_metering_key(offline)
        (offline / "root.key").unlink()
        issue = quota_issuer(offline)
    else:  # a development directory with root.key and no metering key: a one-day in-memory one
        issue = quota_issuer(key_paths.dir)
    assert issue is not None
    check = hil.metering_check(bundle, p, trust, load_split(prepared_dir, "test"), issue, quota=3, attempts=5)
    assert check.status == "passed", check.reason
    assert (check.served, check.refused_at, check.refusal, check.evidence_count) == (3, 4, "quota_exhausted", 3)
    assert check.boot_count is not None and check.boot_count >= 1
    base = hil.HILReport(profile=name, device_class=p.device_class, class_id=str(p.class_id), target=True,
                         status="passed", reason="", arena_budget_bytes=1, flash_budget_bytes=1)  # fmt: skip
    report = hil.with_metering(base, check)
    assert report.status == "passed" and json.loads(report.model_dump_json())["metering"]["refused_at"] == 4
    # a failed check (a part that never refuses) fails a passed profile, so the release gate stops
    broken = check.model_copy(update={"status": "failed", "reason": "not refused after the quota"})
    assert hil.with_metering(base, broken).status == "failed"
