"""HIL over every shipped profile with real signed bundles: figures, statuses, the gate, the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinymlops import hil
from tinymlops.data.split import load_split


@pytest.fixture(scope="module")
def reports(profiles, int8_model, golden, keys, prepared_dir, tmp_path_factory):
    from tinymlops.bundle import build_bundle

    signer, trust = keys
    work = tmp_path_factory.mktemp("hil")
    test = load_split(prepared_dir, "test")
    out = []
    for p in profiles.values():
        draft = hil.manifest_draft(int8_model, p, model_name="digits", model_version="1", sequence=1, selftest=golden)
        build_bundle(int8_model, draft, signer, work / "bundles" / f"{p.name}.bundle")
        out.append(hil.run_hil(work / "bundles" / f"{p.name}.bundle", p, trust, test, work / "devices"))
    return out


def test_every_fitting_profile_passes_with_parity(reports, int8_model) -> None:
    from tinymlops.device.arena import min_arena

    by_name = {r.profile: r for r in reports}
    for name in ("nrf52840", "stm32l4r5", "stm32h7a3", "esp32s3"):
        r = by_name[name]
        assert r.status == "passed", r.reason
        assert r.install.stage == "confirmed" and r.n_test > 300
        assert r.top1_agreement == 1.0 and r.max_abs_diff == 0  # PTQ: TFLM matches reference TFLite bit for bit
        assert r.accuracy_device == r.accuracy_reference > 0.9
        assert r.arena_needed_bytes == min_arena(int8_model)
        assert r.arena_ratio == pytest.approx(r.arena_needed_bytes / r.arena_budget_bytes)
        assert r.flash_bytes == len(int8_model) and r.missing_ops == []
        assert r.estimate.latency_ms > 0 and r.estimate.energy_uj > 0


def test_m0plus_is_excluded_for_its_ram_and_does_not_stop_the_release(reports) -> None:
    m0 = next(r for r in reports if r.profile == "stm32l072-lora")
    assert m0.status == "excluded" and m0.reason.startswith("arena: TFLM cannot allocate the model in the 4096 B")
    assert m0.arena_ratio > 1 and m0.flash_ratio < 1 and m0.accuracy_device is None
    assert "\n" not in m0.reason
    assert hil.gate_failures(reports) == []


def test_a_refused_bundle_fails_the_gate(profiles, int8_model, golden, keys, prepared_dir, tmp_path) -> None:
    from tinymlops.bundle import build_bundle

    signer, trust = keys
    l4 = profiles["stm32l4r5"]
    draft = hil.manifest_draft(int8_model, l4, model_name="digits", model_version="1", sequence=1, selftest=golden)
    build_bundle(int8_model, draft, signer, tmp_path / "l4.bundle")
    report = hil.run_hil(
        tmp_path / "l4.bundle", profiles["nrf52840"], trust, load_split(prepared_dir, "test"), tmp_path
    )
    assert report.status == "failed" and report.reason.startswith("wrong_class:")
    assert hil.gate_failures([report]) == [f"nrf52840: {report.reason}"]


def test_outputs_json_markdown_and_plot(reports, tmp_path: Path) -> None:
    path = reports[0].write(tmp_path / "r.json")
    assert hil.HILReport.model_validate(json.loads(path.read_text())) == reports[0]
    table = hil.summary_markdown(reports)
    assert table.count("\n| ") == len(reports) and "stm32l072-lora | excluded (arena)" in table
    png = hil.plot(reports, tmp_path / "hil.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
