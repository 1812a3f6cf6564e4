"""Black-box verification: ask the model for the triggers' labels and weigh the answer.

Works on a .tflite file (float or int8), a Keras model, or any function from a batch of inputs to
labels or class scores. The verdict is a statistic, not a threshold on accuracy: the number of
triggers answered with their target is compared with what a model that never saw the key gets by
chance (Binomial(n, 1/K), see triggers.py), and only a tail probability below the configured bound
says "owned".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import BaseModel
from scipy.stats import binom

from tinymlops.ml.watermark.config import PAYLOAD_BITS, WatermarkConfig
from tinymlops.ml.watermark.key import OwnerKey, WatermarkError, payload_id_of
from tinymlops.ml.watermark.triggers import UNDECIDED, TriggerSet, decode_bits, owner_triggers

PredictFn = Callable[[np.ndarray], np.ndarray]


class WatermarkReport(BaseModel):
    source: str
    payload_id: str  # expected (from the key); public
    decoded_payload_id: str | None  # what the model answers, None while a bit is undecided
    owned: bool
    ber: float  # bit error rate over the 64 payload bits; an undecided bit counts as an error
    bit_errors: int
    undecided_bits: int
    n_bits: int
    matches: int  # triggers answered with exactly their target label
    n_triggers: int
    chance: float  # per-trigger match probability for a model that never saw the key (1/K)
    p_value: float  # P(at least `matches` by chance)
    fp_bound: float

    def raise_if_not_owned(self) -> None:
        """For the pipeline: fail the run with one line when the watermark was not detected."""
        if not self.owned:
            raise WatermarkError(
                f"{self.source}: watermark {self.payload_id} not detected "
                f"(p-value {self.p_value:.3g} ≥ bound {self.fp_bound:.0e}, BER {self.ber:.4f})"
            )

    def line(self) -> str:
        verdict = "OWNED" if self.owned else "not owned"
        return (
            f"{verdict}: payload {self.payload_id}, BER {self.ber:.4f} ({self.bit_errors}/{self.n_bits} bits), "
            f"{self.matches}/{self.n_triggers} triggers match, p-value {self.p_value:.3g} (bound {self.fp_bound:.0e})"
        )


def chance_p_value(matches: int, n_triggers: int, n_classes: int) -> float:
    """P(X ≥ matches) for X ~ Binomial(n_triggers, 1/n_classes)."""
    return float(binom.sf(matches - 1, n_triggers, 1.0 / n_classes))


def score(
    predicted: np.ndarray, triggers: TriggerSet, key: OwnerKey, config: WatermarkConfig, source: str
) -> WatermarkReport:
    """Predicted labels for the triggers → the report."""
    predicted = np.asarray(predicted).reshape(-1)
    if predicted.shape[0] != len(triggers):
        raise WatermarkError(f"{source}: {predicted.shape[0]} predictions for {len(triggers)} triggers")
    expected_bits = key.payload_bits()
    bits = decode_bits(predicted, triggers)
    errors = int(np.sum(bits != expected_bits))
    undecided = int(np.sum(bits == UNDECIDED))
    matches = int(np.sum(predicted.astype(np.int64) == triggers.targets(expected_bits)))
    p = chance_p_value(matches, len(triggers), triggers.n_classes)
    return WatermarkReport(
        source=source,
        payload_id=key.payload_id,
        decoded_payload_id=None if undecided else payload_id_of(bits),
        owned=p < config.fp_bound,
        ber=errors / PAYLOAD_BITS,
        bit_errors=errors,
        undecided_bits=undecided,
        n_bits=PAYLOAD_BITS,
        matches=matches,
        n_triggers=len(triggers),
        chance=1.0 / triggers.n_classes,
        p_value=p,
        fp_bound=config.fp_bound,
    )


def _labels(outputs: np.ndarray) -> np.ndarray:
    outputs = np.asarray(outputs)
    return outputs.argmax(axis=-1) if outputs.ndim == 2 else outputs.reshape(-1)


def verify_predict(
    predict: PredictFn,
    key: OwnerKey,
    config: WatermarkConfig,
    input_shape: tuple[int, ...],
    n_classes: int,
    source: str = "predict function",
) -> WatermarkReport:
    """Any black box: `predict(x float32 (N, *input_shape) in [0, 1])` → labels (N,) or scores (N, K)."""
    triggers = owner_triggers(key, input_shape, n_classes, config)
    return score(_labels(predict(triggers.x)), triggers, key, config, source)


def verify_keras(model, key: OwnerKey, config: WatermarkConfig, source: str = "keras model") -> WatermarkReport:
    shape = tuple(int(d) for d in model.input_shape[1:])
    n_classes = int(model.output_shape[-1])
    return verify_predict(lambda x: model.predict(x, verbose=0), key, config, shape, n_classes, source)


def tflite_predict(
    model: bytes, source: str = "model", dequantize: bool = False
) -> tuple[PredictFn, tuple[int, ...], int]:
    """A predict function over a float or int8 .tflite (TFLite reference kernels, as TFLM computes).

    Batched: the input tensor is resized to the batch (every row is computed independently by the
    same kernels a device runs, one row at a time). Scores are raw int8 unless `dequantize`
    (argmax needs no dequantization: the output scale is positive).
    → (predict, input shape without batch, number of classes). Not a model: ModelError, one line.
    """
    from tinymlops.ml.inference import quantize_input
    from tinymlops.ml.quantize import inspect, interpreter

    info = inspect(model, source)
    if len(info.inputs) != 1 or len(info.outputs) != 1 or len(info.outputs[0].shape) != 2:
        raise WatermarkError(f"{source}: expected one input and one (1, K) class output")
    inp, out = info.inputs[0], info.outputs[0]
    if inp.dtype not in ("float32", "int8"):
        raise WatermarkError(f"{source}: input type {inp.dtype} is not supported (float32 or int8)")
    it = interpreter(model, source)
    in_index = it.get_input_details()[0]["index"]
    out_index = it.get_output_details()[0]["index"]
    shape = tuple(inp.shape[1:])
    state = {"batch": 1}

    def predict(x: np.ndarray) -> np.ndarray:
        rows = quantize_input(x, inp) if inp.dtype == "int8" else x.astype(np.float32)
        if len(rows) != state["batch"]:
            it.resize_tensor_input(in_index, [len(rows), *shape], strict=False)
            it.allocate_tensors()
            state["batch"] = len(rows)
        it.set_tensor(in_index, rows)
        it.invoke()
        scores = it.get_tensor(out_index).astype(np.float32)
        if dequantize and out.dtype == "int8":
            scores = (scores - out.zero_point) * out.scale
        return scores

    return predict, shape, int(out.shape[-1])


def verify_tflite(model: bytes, key: OwnerKey, config: WatermarkConfig, source: str = "model") -> WatermarkReport:
    predict, shape, n_classes = tflite_predict(model, source)
    return verify_predict(predict, key, config, shape, n_classes, source)
