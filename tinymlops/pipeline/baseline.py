"""A release's monitoring baseline: what one model does on one device class over the validation
split, measured on the device runtime (TFLite Micro, bit-exact with the firmware's int8 kernels)
and binned on the telemetry's own fixed grid, so production telemetry compares bin by bin
(tinymlops.fleet.monitoring). Latency comes from the HIL run's cycle-model estimate for the class:
the emulated core takes the same cycles for every input of a model, so its histogram is one bin."""

from __future__ import annotations

import numpy as np

from tinymlops.fleet.monitoring import Baseline
from tinymlops.fleet.telemetry import CONFIDENCE_BINS, LATENCY_BINS, bin_confidence, bin_latency
from tinymlops.ml.data.split import Split

SOURCE = "validation split on TFLite Micro; latency from the HIL cycle model"


def measure_baseline(
    model: bytes,
    val: Split,
    *,
    device_class: str,
    sequence: int,
    latency_ms: float | None,
    arena_bytes: int,
    model_name: str = "",
    model_version: str = "",
    release_id: str | None = None,
) -> Baseline:
    from tinymlops.device.tflm import TFLMRuntime
    from tinymlops.ml.inference import dequantize, quantize_input
    from tinymlops.ml.quantize import inspect

    info = inspect(model)
    xq = quantize_input(val.x, info.inputs[0])
    runtime = TFLMRuntime(model, arena_bytes)
    width = int(info.outputs[0].shape[-1])
    classes, confidence = [0] * width, [0] * CONFIDENCE_BINS
    errors = 0
    for row in xq:
        try:
            p = dequantize(runtime.invoke(row[None]).reshape(-1), info.outputs[0])
        except (RuntimeError, ValueError):
            errors += 1
            continue
        classes[int(np.argmax(p))] += 1
        confidence[bin_confidence(float(np.max(p)))] += 1
    ran = len(xq) - errors
    latency = latency_hist(latency_ms, ran)
    return Baseline(
        device_class=device_class,
        sequence=sequence,
        release_id=release_id,
        model_name=model_name,
        model_version=model_version,
        samples=max(ran, 1),
        class_hist=classes,
        confidence_hist=confidence,
        latency_hist=latency,
        error_rate=errors / len(xq) if len(xq) else 0.0,
        source=SOURCE,
    )


def latency_hist(latency_ms: float | None, samples: int) -> list[int]:
    """Every sample in the bin of the cycle model's latency (empty when HIL gave none)."""
    hist = [0] * LATENCY_BINS
    if latency_ms is not None:
        hist[bin_latency(latency_ms)] = samples
    return hist
