"""What a thief does to a copy before using it, for the robustness suite and its tests.

Every attack takes the marked model (or, for extraction, only black-box access to it) and returns
a fresh Keras model; the caller converts it to int8 as a thief shipping it to devices would.
"""

from __future__ import annotations

import numpy as np

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tinymlops.ml.tf import tf
from tinymlops.ml.watermark.tuning import PredictFn, build, copy_model, fit_soft, one_hot


def fine_tune(
    model: tf.keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    kind: str = "adam",
    batch_size: int = 32,
    seed: int = 0,
) -> tf.keras.Model:
    """Fine-tune a copy on the attacker's labelled data."""
    n_classes = int(model.output_shape[-1])
    return fit_soft(
        copy_model(model),
        x,
        one_hot(y, n_classes),
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        kind=kind,
    )


class _KeepMasks(tf.keras.callbacks.Callback):
    """Re-apply the pruning masks after every step, so fine-tuning cannot regrow pruned weights."""

    def __init__(self, masks: dict[int, np.ndarray]) -> None:
        super().__init__()
        self.masks = masks

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        for i, mask in self.masks.items():
            var = self.model.trainable_weights[i]
            var.assign(var * mask)


def prune(model: tf.keras.Model, sparsity: float) -> tuple[tf.keras.Model, dict[int, np.ndarray]]:
    """Magnitude pruning, per layer: zero the `sparsity` share of smallest |w| in every kernel."""
    pruned = copy_model(model)
    masks = {}
    for i, var in enumerate(pruned.trainable_weights):
        w = var.numpy()
        if w.ndim < 2:  # biases stay
            continue
        k = int(round(w.size * sparsity))
        if k == 0:
            continue
        threshold = np.partition(np.abs(w).ravel(), k - 1)[k - 1]
        mask = (np.abs(w) > threshold).astype(np.float32)
        var.assign(w * mask)
        masks[i] = mask
    return pruned, masks


def prune_and_fine_tune(
    model: tf.keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sparsity: float,
    epochs: int,
    learning_rate: float,
    batch_size: int = 32,
    seed: int = 0,
) -> tf.keras.Model:
    pruned, masks = prune(model, sparsity)
    n_classes = int(model.output_shape[-1])
    return fit_soft(
        pruned,
        x,
        one_hot(y, n_classes),
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        callbacks=[_KeepMasks(masks)],
    )


def sparsity_of(model: tf.keras.Model) -> float:
    kernels = [w for w in model.get_weights() if w.ndim > 1]
    return float(sum(np.sum(k == 0) for k in kernels) / sum(k.size for k in kernels))


def distill(
    teacher: PredictFn,
    queries: np.ndarray,
    architecture: str,
    n_classes: int,
    *,
    epochs: int,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    hard: bool = False,
) -> tf.keras.Model:
    """Model extraction: a fresh `architecture` trained only on the teacher's answers to unlabelled
    `queries` (its class probabilities; `hard`: only its top-1 label)."""
    answers = np.asarray(teacher(queries), dtype=np.float32)
    if hard:
        targets = one_hot(answers.argmax(axis=1), n_classes)
    else:
        targets = np.clip(answers, 0, None)
        targets = targets / np.maximum(targets.sum(axis=1, keepdims=True), 1e-12)
    tf.keras.utils.set_random_seed(seed)
    student = build(architecture, tuple(queries.shape[1:]), n_classes)
    return fit_soft(
        student, queries, targets, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed
    )
