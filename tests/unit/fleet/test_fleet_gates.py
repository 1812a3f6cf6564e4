"""Health gates and telemetry aggregates: histogram statistics are right, and each gate fails on
exactly the shift it is meant to catch."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from pydantic import ValidationError

from tests.support.paths import REPO
from tinymlops.fleet.gates import chi2_pvalue, evaluate_gates, psi
from tinymlops.fleet.policy import HealthPolicy, RolloutPolicy
from tinymlops.fleet.telemetry import (
    CONFIDENCE_BINS,
    LATENCY_BINS,
    LATENCY_EDGES_MS,
    Aggregate,
    ErrorCounters,
    TelemetryAggregate,
    bin_confidence,
    bin_latency,
    pack,
)

T = datetime(2026, 1, 1, tzinfo=timezone.utc)
REPO_POLICY = RolloutPolicy.load_from(REPO)


def telemetry(
    latencies: np.ndarray, confidences: np.ndarray, classes: np.ndarray, errors: int = 0
) -> TelemetryAggregate:
    lat, conf = [0] * LATENCY_BINS, [0] * CONFIDENCE_BINS
    for ms in latencies:
        lat[bin_latency(float(ms))] += 1
    for p in confidences:
        conf[bin_confidence(float(p))] += 1
    return TelemetryAggregate(
        sequence=1,
        window_start=T,
        window_end=T,
        inference_count=len(latencies),
        latency_hist=lat,
        confidence_hist=conf,
        class_hist=np.bincount(classes, minlength=10).tolist(),
        errors=ErrorCounters(invoke=errors),
        boot_count=1,
    )


def device(
    rng: np.random.Generator, n: int = 400, *, slow: float = 1.0, conf: float = 0.9, skew: bool = False, errors: int = 0
) -> TelemetryAggregate:
    latencies = rng.gamma(9.0, 1.0, n) * slow  # ~9 ms, p95 ~14 ms
    confidences = np.clip(rng.normal(conf, 0.05, n), 0, 1)
    p = np.full(10, 0.1) if not skew else np.array([0.4] + [0.6 / 9] * 9)
    return telemetry(latencies, confidences, rng.choice(10, n, p=p), errors)


def sides(**canary_kw: object) -> tuple[Aggregate, Aggregate]:
    rng = np.random.default_rng(0)
    control = Aggregate.of([device(rng) for _ in range(20)])
    canary = Aggregate.of([device(rng, **canary_kw) for _ in range(5)])  # type: ignore[arg-type]
    return canary, control


def test_quantiles_and_mean_from_histograms_are_close_to_the_raw_values() -> None:
    rng = np.random.default_rng(1)
    latencies = rng.gamma(9.0, 1.0, 20000)
    confidences = rng.uniform(0.5, 1.0, 20000)
    agg = Aggregate.of([telemetry(latencies, confidences, rng.choice(10, 20000))])
    assert agg.latency_quantile(0.95) == pytest.approx(np.quantile(latencies, 0.95), rel=0.1)
    assert agg.mean_confidence() == pytest.approx(confidences.mean(), abs=0.01)
    assert agg.inference_count == 20000 and sum(agg.class_hist) == 20000


def test_aggregates_add_bin_by_bin() -> None:
    rng = np.random.default_rng(2)
    a, b = device(rng, errors=2), device(rng, errors=3)
    total = Aggregate.of([a, b])
    assert total.devices == 2 and total.errors.invoke == 5 and total.boot_count == 2
    assert total.latency_hist == [x + y for x, y in zip(a.latency_hist, b.latency_hist, strict=True)]


def test_packed_aggregates_sum_to_what_the_parsed_ones_do() -> None:
    """What the store sums (telemetry.pack per window) equals Aggregate.of, class widths mixed."""
    rng = np.random.default_rng(3)
    windows = [device(rng, errors=i % 3) for i in range(7)]
    narrow = windows[0].model_copy(update={"class_hist": windows[0].class_hist[:4], "errors": ErrorCounters(input=2)})
    windows += [narrow, narrow.model_copy(update={"class_hist": []})]
    assert Aggregate.of_packed([pack(w) for w in windows], devices=4) == Aggregate.of(windows, devices=4)
    assert Aggregate.of_packed([], devices=0) == Aggregate.of([], devices=0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("latency_hist", [0] * (LATENCY_BINS - 1), "latency_hist needs"),
        ("confidence_hist", [1] * CONFIDENCE_BINS, "counts more than inference_count"),
        ("class_hist", [-1, 2], "negative count"),
    ],
)
def test_telemetry_with_wrong_bins_is_refused(field: str, value: list[int], message: str) -> None:
    data = dict(sequence=1, window_start=T, window_end=T, inference_count=5, **{field: value})
    with pytest.raises(ValidationError, match=message):
        TelemetryAggregate(**data)


def test_telemetry_has_no_room_for_raw_inputs() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        TelemetryAggregate(sequence=1, window_start=T, window_end=T, raw_inputs=[[1, 2, 3]])  # type: ignore[call-arg]


def test_bins_cover_the_edges() -> None:
    assert bin_latency(0.0) == 0 and bin_latency(LATENCY_EDGES_MS[-1] * 10) == LATENCY_BINS - 1
    assert bin_confidence(1.0) == CONFIDENCE_BINS - 1 and bin_confidence(0.0) == 0


def test_same_model_passes_every_gate() -> None:
    report = evaluate_gates(*sides(), 0.0, REPO_POLICY.health)
    assert report.judged and report.passed, report.reason
    assert {g.gate for g in report.gates} >= {
        "p95_latency_ratio",
        "confidence_drop",
        "class_psi",
        "error_rate_increase",
    }


@pytest.mark.parametrize(
    ("canary_kw", "revert_rate", "gate"),
    [
        (dict(slow=1.6), 0.0, "p95_latency_ratio"),
        (dict(conf=0.75), 0.0, "confidence_drop"),
        (dict(skew=True), 0.0, "class_psi"),
        (dict(errors=40), 0.0, "error_rate_increase"),
        ({}, 0.2, "revert_rate"),
    ],
    ids=["latency", "confidence", "drift", "errors", "reverts"],
)
def test_each_gate_catches_its_own_regression(canary_kw: dict, revert_rate: float, gate: str) -> None:
    report = evaluate_gates(*sides(**canary_kw), revert_rate, REPO_POLICY.health)
    assert not report.passed
    assert [g.gate for g in report.failed] == [gate]
    failed = report.failed[0]
    assert failed.value is not None and failed.limit is not None and f"{gate} failed" in report.reason


def test_chi_square_gate_when_enabled() -> None:
    limits = HealthPolicy(min_inferences=100, min_class_chi2_pvalue=0.001, max_class_psi=10)
    report = evaluate_gates(*sides(skew=True), 0.0, limits)
    assert [g.gate for g in report.failed] == ["class_chi2"]
    assert chi2_pvalue([100, 100], [100, 100]) == pytest.approx(1.0)


def test_psi_is_zero_for_equal_and_grows_with_shift() -> None:
    assert psi([10, 10, 10], [20, 20, 20]) == pytest.approx(0.0)
    assert psi([50, 50], [60, 40]) < psi([50, 50], [90, 10])


def test_not_judged_without_enough_inferences() -> None:
    report = evaluate_gates(Aggregate(), Aggregate(), 0.0, REPO_POLICY.health)
    assert not report.judged and report.passed and "waiting for telemetry" in report.reason


def test_shipped_policy_has_the_default_staging() -> None:
    assert [g.percent for g in REPO_POLICY.groups] == [1, 10, 50, 100]
    assert REPO_POLICY.groups[0].name == "canary"


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([{"name": "a", "percent": 50}, {"name": "b", "percent": 10}, {"name": "c", "percent": 100}], "increase"),
        ([{"name": "a", "percent": 10}], "100 percent"),
        ([{"name": "a", "percent": 10}, {"name": "a", "percent": 100}], "unique"),
    ],
)
def test_bad_policies_are_refused(groups: list[dict], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RolloutPolicy.model_validate({"groups": groups})
