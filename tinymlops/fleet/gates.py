"""ML-aware health gates: the canary (devices on the new model) against a control group of the
same classes still on the old model, over the same window.

An install-success check only asks "did it boot?"; these ask "does it still behave like the model
it replaces?" — latency, confidence, what it predicts, how often it errs or reverts.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from tinymlops.fleet.policy import HealthPolicy
from tinymlops.fleet.telemetry import Aggregate

PSI_EPSILON = 1e-4  # keeps an empty bin from making the PSI infinite


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    gate: str
    passed: bool
    value: float | None
    limit: float
    canary: float | None = None
    control: float | None = None
    detail: str
    canary_devices: int = 0  # how many devices stand behind the verdict, on each side
    control_devices: int = 0


class HealthReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    judged: bool  # False: not enough data yet; `gates` is then empty
    passed: bool
    canary_devices: int
    control_devices: int
    canary_inferences: int
    control_inferences: int
    gates: list[GateResult]
    reason: str

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]


def psi(expected: list[int], actual: list[int]) -> float:
    """Population stability index of two count vectors over the same bins."""
    width = max(len(expected), len(actual))
    e = [*expected, *[0] * (width - len(expected))]
    a = [*actual, *[0] * (width - len(actual))]
    te, ta = sum(e), sum(a)
    if te == 0 or ta == 0:
        return 0.0
    total = 0.0
    for ce, ca in zip(e, a, strict=True):
        pe, pa = max(ce / te, PSI_EPSILON), max(ca / ta, PSI_EPSILON)
        total += (pa - pe) * math.log(pa / pe)
    return total


def chi2_pvalue(expected: list[int], actual: list[int]) -> float:
    """Chi-square test of homogeneity of two class histograms (bins empty on both sides dropped)."""
    from scipy.stats import chi2_contingency

    width = max(len(expected), len(actual))
    e = [*expected, *[0] * (width - len(expected))]
    a = [*actual, *[0] * (width - len(actual))]
    cols = [(x, y) for x, y in zip(e, a, strict=True) if x + y > 0]
    if len(cols) < 2 or sum(x for x, _ in cols) == 0 or sum(y for _, y in cols) == 0:
        return 1.0
    return float(chi2_contingency([[x for x, _ in cols], [y for _, y in cols]]).pvalue)


def evaluate_gates(
    canary: Aggregate,
    control: Aggregate,
    revert_rate: float,
    limits: HealthPolicy,
    min_devices: tuple[int, int] = (1, 1),
    assigned: int | None = None,
) -> HealthReport:
    """Judge the canary against the control; not judged until both sides have min_inferences and
    at least `min_devices` (canary, control) devices reporting. `assigned`: how many devices the
    revert rate is over (the revert gate's device count)."""
    base = dict(
        canary_devices=canary.devices,
        control_devices=control.devices,
        canary_inferences=canary.inference_count,
        control_inferences=control.inference_count,
    )
    sides = dict(canary_devices=canary.devices, control_devices=control.devices)
    # Reverts need no telemetry: a device that rolled itself back is a verdict on its own.
    revert = _upper("revert_rate", revert_rate, limits.max_revert_rate, f"revert rate {revert_rate:.3f}").model_copy(
        update={"canary_devices": canary.devices if assigned is None else assigned, "control_devices": 0}
    )
    short = min(canary.inference_count, control.inference_count)
    few = canary.devices < min_devices[0] or control.devices < min_devices[1]
    if short < limits.min_inferences or few:
        if not revert.passed:
            why = f"revert_rate failed: {revert.detail} (limit {revert.limit})"
            return HealthReport(judged=True, passed=False, gates=[revert], reason=why, **base)
        if not few:
            reason = f"waiting for telemetry: {short} of {limits.min_inferences} inferences on the thinner side"
        elif short < limits.min_inferences:
            reason = (
                f"waiting for telemetry: {short} of {limits.min_inferences} inferences on the thinner side, "
                f"{canary.devices} canary and {control.devices} control devices reporting"
            )
        else:
            reason = (
                f"waiting for devices: {canary.devices} canary of {min_devices[0]}, "
                f"{control.devices} control of {min_devices[1]} reporting"
            )
        return HealthReport(judged=False, passed=True, gates=[], reason=reason, **base)

    p95_c, p95_k = canary.latency_quantile(0.95), control.latency_quantile(0.95)
    ratio = p95_c / p95_k if p95_c is not None and p95_k else None
    conf_c, conf_k = canary.mean_confidence(), control.mean_confidence()
    drop = conf_k - conf_c if conf_c is not None and conf_k is not None else None
    index = psi(control.class_hist, canary.class_hist)
    err_c, err_k = canary.error_rate(), control.error_rate()
    gates = [
        revert,
        _upper(
            "p95_latency_ratio",
            ratio,
            limits.max_p95_latency_ratio,
            f"p95 latency {_f(p95_c)} ms vs {_f(p95_k)} ms, ratio {_f(ratio)}",
            p95_c,
            p95_k,
        ),
        _upper(
            "confidence_drop",
            drop,
            limits.max_confidence_drop,
            f"mean top-1 confidence {_f(conf_c)} vs {_f(conf_k)}, drop {_f(drop)}",
            conf_c,
            conf_k,
        ),
        _upper("class_psi", index, limits.max_class_psi, f"predicted-class PSI {index:.4f}"),
    ]
    if limits.min_class_chi2_pvalue > 0:
        p = chi2_pvalue(control.class_hist, canary.class_hist)
        gates.append(
            GateResult(
                gate="class_chi2",
                passed=p >= limits.min_class_chi2_pvalue,
                value=p,
                limit=limits.min_class_chi2_pvalue,
                detail=f"predicted-class chi-square p={p:.3g}",
                **sides,
            )
        )
    gates.append(
        _upper(
            "error_rate_increase",
            err_c - err_k,
            limits.max_error_rate_increase,
            f"errors per inference {err_c:.4f} vs {err_k:.4f}",
            err_c,
            err_k,
        )
    )
    gates = [g if g.gate == "revert_rate" else g.model_copy(update=sides) for g in gates]
    failed = [g for g in gates if not g.passed]
    reason = "; ".join(f"{g.gate} failed: {g.detail} (limit {g.limit})" for g in failed) or "all gates passed"
    return HealthReport(judged=True, passed=not failed, gates=gates, reason=reason, **base)


def _upper(
    gate: str,
    value: float | None,
    limit: float,
    detail: str,
    canary: float | None = None,
    control: float | None = None,
) -> GateResult:
    """A gate that passes while `value` stays at or under `limit` (or cannot be computed)."""
    passed = value is None or value <= limit
    return GateResult(gate=gate, passed=passed, value=value, limit=limit, canary=canary, control=control, detail=detail)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
