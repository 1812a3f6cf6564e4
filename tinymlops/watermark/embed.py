"""Embedding: a short fine-tune of a copy of the model on clean batches mixed with the triggers.

The clean data keeps the task; the triggers (out of the data's distribution, so they compete
little with it) teach the payload. `embed_for_int8` closes the loop the issue asks for: embed,
quantize with the caller's converter, verify on the int8 bytes, and embed further while bits were
lost, so what ships is checked, not assumed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from pydantic import BaseModel

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tinymlops.data.split import Split
from tinymlops.model.train import EpochCallback, compile_model, seed_everything
from tinymlops.watermark.config import WatermarkConfig
from tinymlops.watermark.key import OwnerKey, WatermarkError
from tinymlops.watermark.triggers import TriggerSet, derive_triggers
from tinymlops.watermark.verify import WatermarkReport, verify_keras, verify_tflite


class EmbedReport(BaseModel):
    payload_id: str
    n_triggers: int
    epochs: int
    seconds: float
    val_accuracy_before: float
    val_accuracy_after: float
    accuracy_cost: float  # val accuracy lost by embedding, in [0, 1] (negative: it improved)
    float_check: WatermarkReport  # verification of the float Keras model just embedded


class Int8EmbedReport(BaseModel):
    rounds: int
    embed: list[EmbedReport]
    int8_check: WatermarkReport  # verification of the returned int8 bytes


def _accuracy(model: tf.keras.Model, split: Split) -> float:
    return float(np.mean(model.predict(split.x, verbose=0).argmax(axis=1) == split.y))


def mixed_training_set(train: Split, triggers: TriggerSet, targets: np.ndarray, share: float, seed: int):
    """Clean samples plus the triggers repeated so they make up `share` of the samples, shuffled
    (fit reshuffles each epoch, so every batch holds about that share)."""
    n_trig = max(len(triggers), round(len(train.x) * share / (1 - share)))
    reps = np.arange(n_trig) % len(triggers)
    x = np.concatenate([train.x, triggers.x[reps]]).astype(np.float32)
    y = np.concatenate([train.y.astype(np.int64), targets[reps]])
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]


class _Progress(tf.keras.callbacks.Callback):
    def __init__(self, total: int, on_epoch: EpochCallback) -> None:
        super().__init__()
        self.total, self.on_epoch = total, on_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.on_epoch(epoch + 1, self.total, {k: float(v) for k, v in (logs or {}).items()})


def copy_model(model: tf.keras.Model) -> tf.keras.Model:
    clone = tf.keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def embed(
    model: tf.keras.Model,
    train: Split,
    val: Split,
    key: OwnerKey,
    config: WatermarkConfig,
    seed: int,
    on_epoch: EpochCallback | None = None,
    epochs: int | None = None,
) -> tuple[tf.keras.Model, EmbedReport]:
    """→ (a watermarked copy of `model`, report). `model` itself is not changed."""
    shape = tuple(int(d) for d in model.input_shape[1:])
    n_classes = int(model.output_shape[-1])
    if tuple(train.x.shape[1:]) != shape:
        raise WatermarkError(f"training data shape {tuple(train.x.shape[1:])} does not match the model's {shape}")
    epochs = epochs or config.embed_epochs
    seed_everything(seed)
    triggers = derive_triggers(key, shape, n_classes, config.triggers)
    x, y = mixed_training_set(train, triggers, triggers.targets(key.payload_bits()), config.trigger_share, seed)
    before = _accuracy(model, val)
    marked = copy_model(model)
    compile_model(marked, config.learning_rate)
    start = time.perf_counter()
    callbacks = [_Progress(epochs, on_epoch)] if on_epoch else []
    marked.fit(x, y, batch_size=config.batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=callbacks)
    seconds = time.perf_counter() - start
    after = _accuracy(marked, val)
    return marked, EmbedReport(
        payload_id=key.payload_id,
        n_triggers=len(triggers),
        epochs=epochs,
        seconds=seconds,
        val_accuracy_before=before,
        val_accuracy_after=after,
        accuracy_cost=before - after,
        float_check=verify_keras(marked, key, config, "embedded keras model"),
    )


def embed_for_int8(
    model: tf.keras.Model,
    train: Split,
    val: Split,
    key: OwnerKey,
    config: WatermarkConfig,
    seed: int,
    to_int8: Callable[[tf.keras.Model], bytes],
    on_epoch: EpochCallback | None = None,
) -> tuple[tf.keras.Model, bytes, Int8EmbedReport]:
    """Embed, convert with `to_int8`, verify the int8 bytes; embed again (a few more epochs) while
    the int8 file has bit errors, up to config.max_rounds. → (marked model, int8 bytes, report).

    Does not raise when the watermark stays weak: the caller decides (report.int8_check.owned).
    """
    reports: list[EmbedReport] = []
    marked, report = embed(model, train, val, key, config, seed, on_epoch)
    reports.append(report)
    for round_no in range(1, config.max_rounds + 1):
        int8 = to_int8(marked)
        check = verify_tflite(int8, key, config, "int8 model")
        if check.ber == 0 or round_no == config.max_rounds:
            break
        marked, report = embed(
            marked, train, val, key, config, seed + round_no, on_epoch, max(1, config.embed_epochs // 3)
        )
        reports.append(report)
    return marked, int8, Int8EmbedReport(rounds=len(reports), embed=reports, int8_check=check)
