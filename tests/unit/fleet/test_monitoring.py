"""Drift scores on known distributions, and one alarm per drift kind (tinymlops.fleet.monitoring)."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from tinymlops.fleet.monitoring import KINDS, Baseline, alarms_for, assess, chi2_sf, chi_square, psi, score
from tinymlops.fleet.telemetry import CONFIDENCE_BINS, LATENCY_BINS, Aggregate, bin_confidence, bin_latency
from tinymlops.settings.monitoring import DriftThresholds, MonitoringConfig

NOW = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
LIMITS = DriftThresholds()


def hist(width: int, at: dict[int, int]) -> list[int]:
    return [at.get(i, 0) for i in range(width)]


def baseline() -> Baseline:
    # 10 classes uniform, confidence mostly 0.9-0.95, latency 7.5-10 ms, no errors
    return Baseline(
        device_class="nrf52840-ble-sensor",
        sequence=100,
        release_id="r1",
        samples=1000,
        class_hist=[100] * 10,
        confidence_hist=hist(CONFIDENCE_BINS, {bin_confidence(0.92): 900, bin_confidence(0.7): 100}),
        latency_hist=hist(LATENCY_BINS, {bin_latency(9): 1000}),
    )


def production(
    classes: list[int] | None = None,
    confidence: float = 0.92,
    latency_ms: float = 9,
    errors: int = 0,
    n: int = 10_000,
    devices: int = 50,
) -> Aggregate:
    from tinymlops.fleet.telemetry import ErrorCounters

    return Aggregate(
        devices=devices,
        inference_count=n,
        class_hist=classes or [n // 10] * 10,
        confidence_hist=hist(CONFIDENCE_BINS, {bin_confidence(confidence): int(n * 0.9), bin_confidence(0.7): n // 10}),
        latency_hist=hist(LATENCY_BINS, {bin_latency(latency_ms): n}),
        errors=ErrorCounters(invoke=errors),
    )


def test_psi_of_known_distributions() -> None:
    assert psi([1, 1], [1, 1]) == pytest.approx(0.0)
    # (0.9-0.5)·ln(0.9/0.5) + (0.1-0.5)·ln(0.1/0.5)
    assert psi([50, 50], [90, 10]) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5), rel=1e-9)
    assert psi([50, 50], [90, 10]) == pytest.approx(0.8789, abs=1e-4)
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0)  # shares, not counts


def test_chi_square_of_known_distributions() -> None:
    # 100 draws, 60/40 against a fair coin: Σ (o-e)²/e = (10² + 10²)/50 = 4, 1 dof → p = 0.0455
    stat, p = chi_square([1, 1], [60, 40], 100)
    assert stat == pytest.approx(4.0)
    assert p == pytest.approx(0.0455003, abs=1e-6)
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, abs=1e-9)
    assert chi2_sf(18.307038053275146, 10) == pytest.approx(0.05, abs=1e-9)
    assert chi2_sf(0.0, 3) == 1.0
    assert chi_square([1, 1, 1], [1, 1, 1], 10_000)[1] == pytest.approx(1.0)


def test_scores_on_a_clean_fleet_raise_nothing() -> None:
    scores = {s.kind: s for s in score(baseline(), production(), LIMITS)}
    assert set(scores) == set(KINDS)
    assert not any(s.alarming for s in scores.values())
    assert scores["classes"].value == pytest.approx(0.0, abs=1e-9)
    assert scores["confidence"].value == pytest.approx(0.0, abs=1e-9)
    assert scores["latency"].value == pytest.approx(1.0)
    assert scores["errors"].value == 0.0
    a = assess(baseline(), production(), LIMITS, NOW, min_inferences=500, min_devices=3)
    assert a.judged and a.reason == "healthy" and alarms_for(a, baseline(), set()) == []


@pytest.mark.parametrize(
    ("kind", "drifted"),
    [
        ("classes", dict(classes=[5500, *[500] * 9])),  # one class dominates
        ("confidence", dict(confidence=0.55)),  # the model is unsure
        ("latency", dict(latency_ms=40)),  # 4x slower
        ("errors", dict(errors=500)),  # 5 % invoke failures
    ],
)
def test_each_drift_kind_raises_its_alarm(kind: str, drifted: dict) -> None:
    a = assess(baseline(), production(**drifted), LIMITS, NOW, min_inferences=500, min_devices=3)
    assert a.judged
    assert [s.kind for s in a.alarming] == [kind]
    [alarm] = alarms_for(a, baseline(), set())
    assert alarm.kind == kind and alarm.device_class == "nrf52840-ble-sensor" and alarm.sequence == 100
    assert alarm.value > alarm.threshold and alarm.release_id == "r1" and alarm.devices == 50
    assert alarms_for(a, baseline(), {kind}) == []  # already open: not raised twice


def test_class_drift_needs_significance_and_size() -> None:
    small = production(classes=[20, 5, 5, 5, 5, 5, 5, 5, 5, 5], n=65)  # big PSI, 65 draws
    scores = {s.kind: s for s in score(baseline(), small, LIMITS)}
    assert scores["classes"].value > LIMITS.class_psi
    # a tiny shift over millions of inferences: significant, but too small to matter
    huge = production(classes=[105_000, *[99_444] * 9], n=1_000_000)
    s = {x.kind: x for x in score(baseline(), huge, LIMITS)}["classes"]
    assert s.detail["p_value"] < LIMITS.class_chi2_pvalue and not s.alarming


def test_too_little_telemetry_is_not_judged() -> None:
    few = assess(baseline(), production(devices=2), LIMITS, NOW, min_inferences=500, min_devices=3)
    assert not few.judged and "devices" in few.reason and few.scores == []
    quiet = assess(baseline(), production(n=100), LIMITS, NOW, min_inferences=500, min_devices=3)
    assert not quiet.judged and "inferences" in quiet.reason


def test_the_shipped_config_loads() -> None:
    from tests.support.paths import REPO

    config = MonitoringConfig.load_from(REPO)
    assert config.thresholds == DriftThresholds(
        class_psi=0.2, class_chi2_pvalue=0.001, confidence_drop=0.1, latency_ratio=1.5, error_rate_increase=0.02
    )


def test_published_releases_carry_their_baselines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """tasks/release.record_baselines writes baselines.json beside the bundles (as MLflow keeps them:
    bundles/<class>/<class>.bundle); publishing a release sends the baselines of its classes."""
    import json

    from tinymlops.fleet.remote import baselines_beside

    for cls in ("m4", "m7"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / f"{cls}.bundle").write_bytes(b"x")
    b = baseline().model_dump(mode="json")
    (tmp_path / "baselines.json").write_text(json.dumps([{**b, "device_class": "m4"}, {**b, "device_class": "x9"}]))
    found = baselines_beside({"m4": tmp_path / "m4" / "m4.bundle", "m7": tmp_path / "m7" / "m7.bundle"})
    assert [f["device_class"] for f in found] == ["m4"]
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert baselines_beside({"m4": tmp_path / "a" / "b" / "m4.bundle"}) == []
