"""Seeded, deterministic training with early stopping on the validation split."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tinymlops.errors import ModelError
from tinymlops.ml.data.split import Split
from tinymlops.ml.model.architectures import build
from tinymlops.ml.tf import tf
from tinymlops.settings import PipelineParams, TrainParams
from tinymlops.util.layout import KERAS_MODEL_FILE

# on_epoch(epoch, total_epochs, logs): CLIs draw progress bars, flows update progress artifacts.
EpochCallback = Callable[[int, int, dict[str, float]], None]
MODEL_FILE = KERAS_MODEL_FILE


class TrainResult(BaseModel):
    architecture: str
    options: dict[str, float | int] = {}  # width / depth of a variant
    epochs_run: int
    best_epoch: int
    val_accuracy: float
    parameters: int
    seconds: float
    history: dict[str, list[float]]


def seed_everything(seed: int) -> None:
    """Same seed, same data, same code → same weights (op determinism costs a little speed)."""
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class EpochProgress(tf.keras.callbacks.Callback):
    """Feeds a per-epoch callback (a CLI bar, a Prefect progress artifact) from any Keras fit."""

    def __init__(self, total: int, on_epoch: EpochCallback) -> None:
        super().__init__()
        self.total, self.on_epoch = total, on_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.on_epoch(epoch + 1, self.total, {k: float(v) for k, v in (logs or {}).items()})


def compile_model(model: tf.keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def fit(
    model: tf.keras.Model,
    train: Split,
    val: Split,
    params: TrainParams,
    epochs: int,
    on_epoch: EpochCallback | None = None,
) -> tf.keras.callbacks.History:
    callbacks: list[tf.keras.callbacks.Callback] = [
        tf.keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=params.early_stopping_patience, restore_best_weights=True
        )
    ]
    if on_epoch:
        callbacks.append(EpochProgress(epochs, on_epoch))
    return model.fit(
        train.x,
        train.y,
        validation_data=(val.x, val.y),
        epochs=epochs,
        batch_size=params.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )


def train(
    train_split: Split,
    val_split: Split,
    n_classes: int,
    params: PipelineParams,
    on_epoch: EpochCallback | None = None,
    *,
    architecture: str | None = None,
    options: dict[str, float | int] | None = None,
    search_path: Path | None = None,
) -> tuple[tf.keras.Model, TrainResult]:
    """Train `architecture` (default: params.model.architecture), scaled by `options` (width,
    depth) when given; `search_path` is where a user's builder module is looked for."""
    if train_split.x.ndim != 4 or val_split.x.shape[1:] != train_split.x.shape[1:]:
        raise ModelError(
            f"train/val x: shapes {tuple(train_split.x.shape)} and {tuple(val_split.x.shape)}, expected "
            "(N, H, W, C) with equal sample shapes (run `tinymlops data prepare` again)"
        )
    # A fresh Keras session: layer names (conv2d, conv2d_1, …) end up in the .tflite, so a model
    # must not depend on how many were built before it in this process.
    tf.keras.backend.clear_session()
    seed_everything(params.seed)
    name = architecture or params.model.architecture
    model = build(name, tuple(train_split.x.shape[1:]), n_classes, search_path=search_path, **(options or {}))
    compile_model(model, params.train.learning_rate)
    start = time.perf_counter()
    history = fit(model, train_split, val_split, params.train, params.train.epochs, on_epoch)
    val_acc = history.history["val_accuracy"]
    best = int(np.argmax(val_acc))
    return model, TrainResult(
        architecture=name,
        options=dict(options or {}),
        epochs_run=len(val_acc),
        best_epoch=best + 1,
        val_accuracy=float(val_acc[best]),
        parameters=int(model.count_params()),
        seconds=time.perf_counter() - start,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
    )


def save(model: tf.keras.Model, model_dir: Path) -> Path:
    path = Path(model_dir) / MODEL_FILE
    model.save(path)
    return path


def load(model_dir: Path) -> tf.keras.Model:
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelError(f"{path}: no trained model; run the train stage first")
    try:
        return tf.keras.models.load_model(path)
    except Exception as exc:  # h5/zip/deserialisation errors all mean "not a usable model"
        raise ModelError(f"{path}: not a loadable Keras model ({type(exc).__name__})") from None
