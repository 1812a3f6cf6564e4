"""Full-integer int8 TFLite: post-training quantization, or quantization-aware training (tfmot).

Also inspects any .tflite: size, op list, and input/output quantization parameters.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import BaseModel

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tinymlops.errors import ModelError
from tinymlops.ml.data.split import Split
from tinymlops.ml.model.train import EpochCallback, compile_model, fit
from tinymlops.ml.tf import tf
from tinymlops.settings import PipelineParams
from tinymlops.util.io import sha256_bytes


class TensorInfo(BaseModel):
    name: str
    dtype: str
    shape: list[int]
    scale: float
    zero_point: int


class ModelInfo(BaseModel):
    size_bytes: int
    sha256: str
    ops: list[str]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


def interpreter(model: bytes, source: str = "model") -> tf.lite.Interpreter:
    """A TFLite interpreter on reference kernels (the arithmetic TFLM implements), no delegates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        try:
            it = tf.lite.Interpreter(
                model_content=bytes(model),
                experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
            )
            it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"{source}: not a valid TFLite model ({reason})") from None
    return it


def _tensor(d: dict) -> TensorInfo:
    scale, zero_point = d["quantization"]
    return TensorInfo(
        name=d["name"],
        dtype=np.dtype(d["dtype"]).name,
        shape=[int(v) for v in d["shape"]],
        scale=float(scale),
        zero_point=int(zero_point),
    )


def inspect(model: bytes, source: str = "model") -> ModelInfo:
    it = interpreter(model, source)
    ops = sorted({op["op_name"] for op in it._get_ops_details()})  # no public op listing in tf.lite
    return ModelInfo(
        size_bytes=len(model),
        sha256=sha256_bytes(model),
        ops=ops,
        inputs=[_tensor(d) for d in it.get_input_details()],
        outputs=[_tensor(d) for d in it.get_output_details()],
    )


def read_tflite(path: Path | str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: file not found")
    data = path.read_bytes()
    inspect(data, str(path))  # fail early, naming the file
    return data


def representative(train: Split, n: int, seed: int) -> np.ndarray:
    """Calibration inputs: a seeded sample of the training split (never val or test)."""
    idx = np.random.default_rng(seed).permutation(len(train.x))[:n]
    return train.x[np.sort(idx)]


def _convert(model: tf.keras.Model, calibration: np.ndarray | None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:

        def samples() -> Iterator[list[np.ndarray]]:
            for row in calibration:
                yield [row[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(converter.convert())


def to_float_tflite(model: tf.keras.Model) -> bytes:
    return _convert(model, None)


def to_int8_tflite(model: tf.keras.Model, calibration: np.ndarray) -> bytes:
    """Full-integer: int8 weights, activations, inputs and outputs (TFLITE_BUILTINS_INT8 only)."""
    return _convert(model, calibration)


def quantization_aware(
    model: tf.keras.Model, train: Split, val: Split, params: PipelineParams, on_epoch: EpochCallback | None = None
) -> tf.keras.Model:
    """Fine-tune a copy of the float model with fake-quant nodes (tfmot), for the int8 converter."""
    import tensorflow_model_optimization as tfmot

    from tinymlops.ml.model.train import seed_everything

    seed_everything(params.seed)
    qat = tfmot.quantization.keras.quantize_model(model)
    compile_model(qat, params.train.learning_rate / 10)  # a gentle fine-tune, not a retrain
    fit(qat, train, val, params.train, params.quantize.qat_epochs, on_epoch)
    return qat


def quantize(
    model: tf.keras.Model, train: Split, val: Split, params: PipelineParams, on_epoch: EpochCallback | None = None
) -> tuple[bytes, bytes]:
    """→ (float .tflite bytes, int8 .tflite bytes), by the mode in params.quantize."""
    calibration = representative(train, params.quantize.representative_samples, params.seed)
    float_bytes = to_float_tflite(model)
    source = quantization_aware(model, train, val, params, on_epoch) if params.quantize.mode == "qat" else model
    return float_bytes, to_int8_tflite(source, calibration)
