"""Batch inference on int8 models, in TFLite (reference kernels) and in TFLite Micro."""

from __future__ import annotations

import numpy as np

from tinymlops.device.tflm import TFLMRuntime
from tinymlops.ml.quantize import TensorInfo, interpreter


def quantize_input(x: np.ndarray, t: TensorInfo) -> np.ndarray:
    """float inputs → the model's int8 input domain: q = round(x / scale) + zero_point."""
    q = np.round(x / t.scale) + t.zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, t: TensorInfo) -> np.ndarray:
    return (q.astype(np.float32) - t.zero_point) * t.scale


def run_tflite(model: bytes, xq: np.ndarray) -> np.ndarray:
    """int8 inputs (N, ...) → int8 outputs (N, K), one sample at a time as a device would."""
    it = interpreter(model)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    outputs = []
    for row in xq:
        it.set_tensor(inp["index"], row[None])
        it.invoke()
        outputs.append(it.get_tensor(out["index"])[0].copy())
    return np.stack(outputs)


def run_tflm(model: bytes, xq: np.ndarray, arena_bytes: int) -> np.ndarray:
    return TFLMRuntime(model, arena_bytes).invoke_batch(xq)
