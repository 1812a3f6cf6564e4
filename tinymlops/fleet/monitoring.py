"""Production monitoring, pure: a release's baseline, drift scores of production telemetry against
it, and the alarm they raise. No I/O and no clock: the service hands in both sides and `now`.

The baseline is what the release measured on the device runtime over the validation split (class
mix, top-1 confidence and latency histograms on the telemetry's own fixed bins); production is the
robust per-device aggregate of the trailing window (tinymlops.fleet.telemetry.robust_side), so the
trust rules of the rollout gates hold here too. Four kinds of drift, each with its own limit
(configs/monitoring.yaml):

- classes:    PSI of the class mix, and a chi-square goodness-of-fit test (both must trip)
- confidence: fall of the mean top-1 confidence
- latency:    production p95 ÷ baseline p95
- errors:     errors per inference above the baseline's
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tinymlops.fleet.telemetry import CONFIDENCE_BINS, LATENCY_BINS, Aggregate
from tinymlops.settings.monitoring import DriftThresholds

Kind = Literal["classes", "confidence", "latency", "errors"]
KINDS: tuple[Kind, ...] = ("classes", "confidence", "latency", "errors")
AlarmStatus = Literal["open", "acknowledged", "resolved"]
EPS = 1e-4  # PSI's floor for an empty bin (ln 0 is undefined)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Baseline(Frozen):
    """One model on one device class, measured at release on the validation split."""

    device_class: str = Field(min_length=1, max_length=64)
    sequence: int = Field(ge=0, description="the release's manifest sequence: what devices report running")
    release_id: str | None = None
    model_name: str = ""
    model_version: str = ""
    samples: int = Field(ge=1)
    class_hist: list[int] = Field(min_length=2, max_length=256)
    confidence_hist: list[int] = Field(min_length=CONFIDENCE_BINS, max_length=CONFIDENCE_BINS)
    latency_hist: list[int] = Field(min_length=LATENCY_BINS, max_length=LATENCY_BINS)
    error_rate: float = Field(0.0, ge=0, le=1)
    source: str = "validation split, device runtime"

    @model_validator(mode="after")
    def _counts(self) -> Baseline:
        for name in ("class_hist", "confidence_hist", "latency_hist"):
            if any(c < 0 for c in getattr(self, name)):
                raise ValueError(f"{name} has a negative count")
        if sum(self.class_hist) == 0:
            raise ValueError("class_hist is empty")
        return self

    def aggregate(self) -> Aggregate:
        return Aggregate(
            devices=1,
            inference_count=self.samples,
            class_hist=list(self.class_hist),
            confidence_hist=list(self.confidence_hist),
            latency_hist=list(self.latency_hist),
        )


class DriftScore(Frozen):
    kind: Kind
    value: float  # PSI, confidence drop, latency ratio, error-rate increase
    threshold: float
    alarming: bool
    detail: dict[str, float] = Field(default_factory=dict)  # e.g. chi2, p-value, means, quantiles


class Assessment(Frozen):
    device_class: str
    sequence: int
    at: datetime
    judged: bool  # False: too little telemetry (reason says why); scores then empty
    reason: str
    devices: int
    inferences: int
    scores: list[DriftScore] = Field(default_factory=list)

    @property
    def alarming(self) -> list[DriftScore]:
        return [s for s in self.scores if s.alarming]


class DriftAlarm(Frozen):
    """A drift past its limit on one class and model. The typed parameter of the retraining flow
    (pipeline/retrain-on-drift) and the payload of the Prefect event that starts it."""

    id: str = Field(min_length=1, max_length=64)
    raised_at: datetime
    device_class: str
    sequence: int
    release_id: str | None = None
    model_name: str = ""
    model_version: str = ""
    kind: Kind
    value: float
    threshold: float
    detail: dict[str, float] = Field(default_factory=dict)
    devices: int = 0
    inferences: int = 0
    status: AlarmStatus = "open"
    url: str | None = Field(None, description="the alarm on the fleet dashboard")

    @property
    def summary(self) -> str:
        where = f"{self.device_class} (model seq {self.sequence})"
        return f"{self.kind} drift on {where}: {self.value:.3g} > {self.threshold:.3g}"


# -- scores ---------------------------------------------------------------------------------------
def shares(counts: list[int] | list[float], width: int | None = None) -> list[float]:
    width = len(counts) if width is None else width
    padded = [float(c) for c in counts[:width]] + [0.0] * max(0, width - len(counts))
    total = sum(padded)
    return [c / total for c in padded] if total > 0 else [0.0] * width


def psi(expected: list[int] | list[float], actual: list[int] | list[float]) -> float:
    """Population stability index Σ (a − e)·ln(a / e) over shares, empty bins floored at EPS."""
    width = max(len(expected), len(actual))
    e = [max(x, EPS) for x in shares(expected, width)]
    a = [max(x, EPS) for x in shares(actual, width)]
    return float(sum((ai - ei) * math.log(ai / ei) for ai, ei in zip(a, e, strict=True)))


def chi_square(expected: list[int] | list[float], actual: list[int] | list[float], n: int) -> tuple[float, float]:
    """Goodness of fit of `n` observations with `actual`'s shares against `expected`'s shares;
    → (statistic, p-value). Bins the baseline never saw are floored at EPS (a new class counts)."""
    width = max(len(expected), len(actual))
    e = [max(x, EPS) for x in shares(expected, width)]
    e = [x / sum(e) for x in e]
    a = shares(actual, width)
    stat = float(n * sum((ai - ei) ** 2 / ei for ai, ei in zip(a, e, strict=True)))
    return stat, chi2_sf(stat, width - 1)


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ chi-square(dof): the regularised upper incomplete gamma Q(dof/2, x/2)."""
    if dof <= 0:
        return 1.0
    if x <= 0:
        return 1.0
    a, z = dof / 2.0, x / 2.0
    if z < a + 1:  # series for P, then Q = 1 - P
        term = total = 1.0 / a
        k = a
        for _ in range(10_000):
            k += 1
            term *= z / k
            total += term
            if term < total * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-z + a * math.log(z) - math.lgamma(a)))
    # continued fraction for Q (Lentz)
    b = z + 1 - a
    c = 1.0 / 1e-300
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-z + a * math.log(z) - math.lgamma(a)) * h)


def score(baseline: Baseline, production: Aggregate, limits: DriftThresholds) -> list[DriftScore]:
    """The four drift scores of `production` against `baseline`."""
    base = baseline.aggregate()
    out: list[DriftScore] = []

    value = psi(base.class_hist, production.class_hist)
    stat, p = chi_square(base.class_hist, production.class_hist, production.inference_count)
    out.append(
        DriftScore(
            kind="classes",
            value=value,
            threshold=limits.class_psi,
            alarming=value > limits.class_psi and p < limits.class_chi2_pvalue,
            detail={"psi": value, "chi2": stat, "p_value": p, "p_limit": limits.class_chi2_pvalue},
        )
    )

    b_conf, p_conf = base.mean_confidence(), production.mean_confidence()
    drop = (b_conf - p_conf) if b_conf is not None and p_conf is not None else 0.0
    out.append(
        DriftScore(
            kind="confidence",
            value=drop,
            threshold=limits.confidence_drop,
            alarming=drop > limits.confidence_drop,
            detail={
                "baseline_mean": b_conf or 0.0,
                "production_mean": p_conf or 0.0,
                "psi": psi(base.confidence_hist, production.confidence_hist),
            },
        )
    )

    b_p95, p_p95 = base.latency_quantile(0.95), production.latency_quantile(0.95)
    ratio = p_p95 / b_p95 if b_p95 and p_p95 is not None else 1.0
    out.append(
        DriftScore(
            kind="latency",
            value=ratio,
            threshold=limits.latency_ratio,
            alarming=ratio > limits.latency_ratio,
            detail={"baseline_p95_ms": b_p95 or 0.0, "production_p95_ms": p_p95 or 0.0},
        )
    )

    rate = production.error_rate()
    increase = rate - baseline.error_rate
    out.append(
        DriftScore(
            kind="errors",
            value=increase,
            threshold=limits.error_rate_increase,
            alarming=increase > limits.error_rate_increase,
            detail={"baseline_rate": baseline.error_rate, "production_rate": rate},
        )
    )
    return out


def assess(
    baseline: Baseline,
    production: Aggregate,
    limits: DriftThresholds,
    now: datetime,
    *,
    min_inferences: int,
    min_devices: int,
) -> Assessment:
    """Judge one class and model, or say why not (too few devices or inferences)."""
    common = dict(
        device_class=baseline.device_class,
        sequence=baseline.sequence,
        at=now,
        devices=production.devices,
        inferences=production.inference_count,
    )
    if production.devices < min_devices:
        return Assessment(**common, judged=False, reason=f"{production.devices} devices < {min_devices}")
    if production.inference_count < min_inferences:
        return Assessment(**common, judged=False, reason=f"{production.inference_count} inferences < {min_inferences}")
    scores = score(baseline, production, limits)
    bad = [s.kind for s in scores if s.alarming]
    return Assessment(**common, judged=True, reason=("drift: " + ", ".join(bad)) if bad else "healthy", scores=scores)


def alarm_id(device_class: str, sequence: int, kind: str, raised_at: datetime) -> str:
    """Stable and short: the same drift raised at the same instant has the same id."""
    digest = hashlib.sha256(f"{device_class}|{sequence}|{kind}|{raised_at.isoformat()}".encode()).hexdigest()
    return f"drift-{kind}-{digest[:12]}"


def alarms_for(assessment: Assessment, baseline: Baseline, open_kinds: set[str]) -> list[DriftAlarm]:
    """New alarms of an assessment: one per alarming kind not already open for this class and model."""
    return [
        DriftAlarm(
            id=alarm_id(assessment.device_class, assessment.sequence, s.kind, assessment.at),
            raised_at=assessment.at,
            device_class=assessment.device_class,
            sequence=assessment.sequence,
            release_id=baseline.release_id,
            model_name=baseline.model_name,
            model_version=baseline.model_version,
            kind=s.kind,
            value=s.value,
            threshold=s.threshold,
            detail=s.detail,
            devices=assessment.devices,
            inferences=assessment.inferences,
        )
        for s in assessment.alarming
        if s.kind not in open_kinds
    ]
