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
from pydantic import BaseModel

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tinymlops.ml.data.split import Split
from tinymlops.ml.model.train import EpochCallback, EpochProgress, seed_everything
from tinymlops.ml.tf import tf
from tinymlops.ml.watermark.config import WatermarkConfig
from tinymlops.ml.watermark.key import OwnerKey, WatermarkError
from tinymlops.ml.watermark.plan import EmbedPlan, fixed_plan
from tinymlops.ml.watermark.profile import owner_shadows, soft_targets
from tinymlops.ml.watermark.triggers import TriggerSet, owner_triggers
from tinymlops.ml.watermark.tuning import copy_model
from tinymlops.ml.watermark.verify import WatermarkReport, verify_keras, verify_tflite


class EmbedReport(BaseModel):
    payload_id: str
    n_triggers: int
    epochs: int
    seconds: float
    val_accuracy_before: float
    val_accuracy_after: float
    accuracy_cost: float  # val accuracy lost by embedding, in [0, 1] (negative: it improved)
    float_check: WatermarkReport  # verification of the float Keras model just embedded
    plan: EmbedPlan | None = None  # triggers, mix and epochs this fine-tune used


class Int8EmbedReport(BaseModel):
    rounds: int
    embed: list[EmbedReport]
    int8_check: WatermarkReport  # verification of the returned int8 bytes


def _accuracy(model: tf.keras.Model, split: Split) -> float:
    return float(np.mean(model.predict(split.x, verbose=0).argmax(axis=1) == split.y))


def mixed_training_set(
    train: Split,
    triggers: TriggerSet,
    targets: np.ndarray,
    share: float,
    seed: int,
    clean_rows: np.ndarray,
    clean_repeats: int = 1,
):
    """Clean samples (each `clean_repeats` times) plus the triggers repeated so they make up `share`
    of the samples, shuffled (fit reshuffles each epoch, so every batch holds about that share).
    → (x, probability targets): a clean sample of class c gets `clean_rows[c]` (the owner's
    runner-up profile), a trigger its one-hot target."""
    clean_x = np.concatenate([train.x] * clean_repeats)
    clean_y = np.concatenate([train.y] * clean_repeats).astype(np.int64)
    n_trig = max(len(triggers), round(len(clean_x) * share / (1 - share)))
    reps = np.arange(n_trig) % len(triggers)
    x = np.concatenate([clean_x, triggers.x[reps]]).astype(np.float32)
    k = clean_rows.shape[0]
    y = np.concatenate([clean_rows[clean_y], np.eye(k, dtype=np.float32)[targets[reps]]])
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]


def embed(
    model: tf.keras.Model,
    train: Split,
    val: Split,
    key: OwnerKey,
    config: WatermarkConfig,
    seed: int,
    on_epoch: EpochCallback | None = None,
    epochs: int | None = None,
    plan: EmbedPlan | None = None,
) -> tuple[tf.keras.Model, EmbedReport]:
    """→ (a watermarked copy of `model`, report). `model` itself is not changed. Without `plan`,
    the configured one (every trigger, the configured share); `epochs` overrides the plan's."""
    shape = tuple(int(d) for d in model.input_shape[1:])
    n_classes = int(model.output_shape[-1])
    if tuple(train.x.shape[1:]) != shape:
        raise WatermarkError(f"training data shape {tuple(train.x.shape[1:])} does not match the model's {shape}")
    plan = plan or fixed_plan(config)
    epochs = epochs or plan.epochs
    config = config.with_plan(plan.n_triggers)
    seed_everything(seed)
    triggers = owner_triggers(key, shape, n_classes, config)
    profile = soft_targets(n_classes, owner_shadows(key, n_classes), config.profile_mass)
    targets = triggers.targets(key.payload_bits())
    x, y = mixed_training_set(train, triggers, targets, plan.trigger_share, seed, profile, plan.clean_repeats)
    before = _accuracy(model, val)
    marked = copy_model(model)
    marked.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate), loss="categorical_crossentropy")
    start = time.perf_counter()
    callbacks = [EpochProgress(epochs, on_epoch)] if on_epoch else []
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
        plan=plan.model_copy(update={"epochs": epochs}),
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
