"""What a release looks like from the devices, measured on the real model.

`measure_behaviour` runs an int8 model on TFLite Micro over held-out field samples (once per
model) and records what a device would report: the predicted-class distribution, the top-1
confidence distribution (on the telemetry's fixed bins) and the inference error rate; latency per
device class comes from the calibrated estimator (tinymlops.device.estimate) for its profile.
"Drifted inputs" are the same field samples with a seeded perturbation (gain, offset, noise),
measured the same way. Simulated devices then draw each telemetry window from these measured
distributions, so 10,000 devices cost one measurement, not 10,000 interpreters.

`degrade_model` makes the scenarios' "bad model": the int8 file with the weights of its last
FULLY_CONNECTED layer replaced by seeded noise. It is still a valid model: it is signed, fits,
and its golden vectors (taken from the bad model itself) pass the on-device self-test, so a plain
install-success check lets it through; what it predicts and how sure it is do not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tinymlops.device.profiles import DeviceProfile
from tinymlops.fleet import FleetError
from tinymlops.fleet.telemetry import CONFIDENCE_BINS, bin_confidence
from tinymlops.fleetsim.simulator import ReleaseBehaviour
from tinymlops.ml.data.split import Split


class Drift(BaseModel):
    """A seeded perturbation of the field inputs: x·gain + offset·range + N(0, noise·range)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    gain: float = Field(0.8, gt=0)
    offset: float = Field(0.15, description="shift, as a share of the inputs' value range")
    noise: float = Field(0.25, ge=0, description="Gaussian noise σ, as a share of the value range")


class Measurement(BaseModel):
    """Distributions of one model over one set of inputs, on TFLM."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    samples: int
    class_weights: list[float]  # share of samples predicted as each class
    confidence_weights: list[float]  # share of samples per top-1 confidence bin (CONFIDENCE_BINS)
    mean_confidence: float
    error_rate: float  # share of Invoke() failures


def perturb(x: np.ndarray, drift: Drift, seed: int) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    span = (hi - lo) or 1.0
    rng = np.random.default_rng(seed)
    out = x * drift.gain + drift.offset * span + rng.normal(0.0, drift.noise * span, x.shape)
    return np.clip(out, lo, hi).astype(x.dtype)


def measure(model: bytes, x: np.ndarray, arena_bytes: int) -> Measurement:
    """Run every sample through TFLite Micro one at a time, as a device would."""
    from tinymlops.device.tflm import TFLMRuntime
    from tinymlops.ml.inference import dequantize, quantize_input
    from tinymlops.ml.quantize import inspect

    info = inspect(model)
    xq = quantize_input(x, info.inputs[0])
    runtime = TFLMRuntime(model, arena_bytes)
    preds, confs, errors = [], [], 0
    for row in xq:
        try:
            q = runtime.invoke(row[None]).reshape(-1)
        except (RuntimeError, ValueError):
            errors += 1
            continue
        p = dequantize(q, info.outputs[0])
        preds.append(int(np.argmax(p)))
        confs.append(float(np.max(p)))
    if not preds:
        raise FleetError(f"TFLM could not run a single one of {len(xq)} field samples on the model")
    width = int(info.outputs[0].shape[-1])
    classes = np.bincount(preds, minlength=width).astype(float)
    conf_bins = np.bincount([bin_confidence(c) for c in confs], minlength=CONFIDENCE_BINS).astype(float)
    return Measurement(
        samples=len(xq),
        class_weights=(classes / classes.sum()).tolist(),
        confidence_weights=(conf_bins / conf_bins.sum()).tolist(),
        mean_confidence=float(np.mean(confs)),
        error_rate=errors / len(xq),
    )


def latency_by_class(model: bytes, profiles: Sequence[DeviceProfile]) -> dict[str, float]:
    from tinymlops.device.estimate import estimate, op_costs

    costs = op_costs(model)
    return {p.device_class: estimate(costs, p).latency_ms for p in profiles}


def measure_behaviour(
    model: bytes,
    field_split: Split,
    profiles: DeviceProfile | Sequence[DeviceProfile],
    seed: int = 0,
    drift: Drift | None = None,
) -> ReleaseBehaviour:
    """A ReleaseBehaviour measured on TFLM over `field_split` (clean and drifted), with the
    estimator's latency for each profile's device class."""
    drift = drift or Drift()
    profiles = [profiles] if isinstance(profiles, DeviceProfile) else list(profiles)
    if not profiles:
        raise FleetError("measure_behaviour: needs at least one device profile")
    arena = max(p.arena_budget_bytes for p in profiles)  # outputs do not depend on the arena size
    clean = measure(model, field_split.x, arena)
    drifted = measure(model, perturb(field_split.x, drift, seed), arena)
    latencies = latency_by_class(model, profiles)
    return ReleaseBehaviour(
        latency_ms=float(np.mean(list(latencies.values()))),
        latency_ms_by_class=latencies,
        confidence=clean.mean_confidence,
        class_weights=clean.class_weights,
        confidence_weights=clean.confidence_weights,
        error_rate=clean.error_rate,
        drift_class_weights=drifted.class_weights,
        drift_confidence_weights=drifted.confidence_weights,
        source="tflm",
        samples=clean.samples,
    )
