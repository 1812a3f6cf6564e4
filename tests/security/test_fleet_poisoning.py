"""Poisoning the health gates: up to 10 % of the canary devices lie about their telemetry, in the
most damaging way each gate allows. A bad release is still stopped, a good one still promoted —
the gates judge per-device shares with trimmed means (tinymlops.fleet.telemetry.robust_side), so a
few devices move them by at most their share."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from tinymlops.fleet.gates import evaluate_gates
from tinymlops.fleet.policy import HealthPolicy
from tinymlops.fleet.telemetry import (
    CONFIDENCE_BINS,
    LATENCY_BINS,
    ErrorCounters,
    TelemetryAggregate,
    Window,
    bin_confidence,
    bin_latency,
    pack,
    robust_side,
)

T = datetime(2026, 6, 1, tzinfo=timezone.utc)
LIMITS = HealthPolicy(min_inferences=500)
WINDOW = 300.0  # seconds
PERIOD = 3600.0


def window(
    rng: np.random.Generator, n: int = 300, *, slow: float = 1.0, conf: float = 0.9, skew: float = 0.0, errors: int = 0
) -> TelemetryAggregate:
    lat, confs = [0] * LATENCY_BINS, [0] * CONFIDENCE_BINS
    for ms in rng.gamma(9.0, 1.0, n) * slow:
        lat[bin_latency(float(ms))] += 1
    for p in np.clip(rng.normal(conf, 0.05, n), 0, 1):
        confs[bin_confidence(float(p))] += 1
    p = np.full(10, 0.1) * (1 - skew)
    p[0] += skew
    return TelemetryAggregate(
        sequence=1,
        window_start=T,
        window_end=T + timedelta(seconds=WINDOW),
        inference_count=n,
        latency_hist=lat,
        confidence_hist=confs,
        class_hist=np.bincount(rng.choice(10, n, p=p), minlength=10).tolist(),
        errors=ErrorCounters(invoke=errors),
        boot_count=1,
    )


def lie(kind: str, flattering: bool) -> TelemetryAggregate:
    """The most a liar can do for (flattering) or against a release, staying physically plausible."""
    n = 2_999_000  # just under 300 s ÷ 0.1 ms
    lat, conf = [0] * LATENCY_BINS, [0] * CONFIDENCE_BINS
    if flattering:
        lat[0], conf[-1], classes, errors = n, n, [n // 10] * 10, 0
    else:
        lat[-1], conf[0], classes, errors = 1, 1, [1] + [0] * 9, 1
        n = 1
    return TelemetryAggregate(
        sequence=1,
        window_start=T,
        window_end=T + timedelta(seconds=WINDOW),
        inference_count=n,
        latency_hist=lat,
        confidence_hist=conf,
        class_hist=classes,
        errors=ErrorCounters(invoke=errors),
        boot_count=1,
    )


def side(windows: list[tuple[str, TelemetryAggregate]]):  # type: ignore[no-untyped-def]
    rows = [Window(device_id=d, packed=pack(t), seconds=WINDOW, min_latency_ms=0.1) for d, t in windows]
    return robust_side(rows, PERIOD)


def judge(canary_kw: dict, liars: int, flattering: bool, canaries: int = 20):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    control = side([(f"c{i}", window(rng)) for i in range(100)])
    honest = [(f"k{i}", window(rng, **canary_kw)) for i in range(canaries - liars)]
    lying = [(f"liar{i}", lie("all", flattering)) for i in range(liars)] * 3  # and each sends three windows
    return evaluate_gates(side(honest + lying), control, 0.0, LIMITS, (5, 5))


BAD = {
    "latency": dict(slow=1.6),
    "confidence": dict(conf=0.75),
    "drift": dict(skew=0.35),
    "errors": dict(errors=15),
}


@pytest.mark.parametrize("liars", [1, 2])
@pytest.mark.parametrize("bad", list(BAD), ids=list(BAD))
def test_a_bad_release_is_stopped_with_up_to_10_percent_of_canaries_lying(bad: str, liars: int) -> None:
    report = judge(BAD[bad], liars, flattering=True)
    assert report.judged and not report.passed, report.reason


@pytest.mark.parametrize("liars", [0, 1, 2])
def test_a_good_release_is_promoted_with_up_to_10_percent_of_canaries_lying(liars: int) -> None:
    report = judge({}, liars, flattering=False)
    assert report.judged and report.passed, report.reason
    assert report.canary_devices == 20


def test_a_liar_alone_cannot_reach_the_minimum_inferences_with_impossible_counts() -> None:
    huge = lie("all", True).model_copy(update={"inference_count": 10**15})
    agg = side([("liar", huge)])
    assert agg.devices == 0 and agg.inference_count == 0
