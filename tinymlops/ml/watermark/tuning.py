"""Small training helpers the watermark shares: copies, soft-target fits, probabilities, and the
architectures attack simulations and fingerprint ensembles build (the pipeline's, plus a smaller CNN)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tinymlops.ml.model.architectures import build as build_architecture
from tinymlops.ml.model.train import seed_everything
from tinymlops.ml.tf import tf

layers = tf.keras.layers
PredictFn = Callable[[np.ndarray], np.ndarray]


def cnn_tiny(input_shape: tuple[int, ...], n_classes: int) -> tf.keras.Model:
    """Half the channels of cnn_small (~4x fewer parameters): the 'smaller architecture' of the attacks."""
    return tf.keras.Sequential(
        [
            layers.Input(input_shape),
            layers.Conv2D(8, 3, padding="same", activation="relu"),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="cnn_tiny",
    )


def build(name: str, input_shape: tuple[int, ...], n_classes: int) -> tf.keras.Model:
    """`cnn_tiny`, or any architecture params.yaml accepts (the pipeline's registry)."""
    if name == "cnn_tiny":
        return cnn_tiny(tuple(input_shape), n_classes)
    return build_architecture(name, tuple(input_shape), n_classes)


def copy_model(model: tf.keras.Model) -> tf.keras.Model:
    clone = tf.keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def one_hot(y: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]


def optimizer(kind: str, learning_rate: float) -> tf.keras.optimizers.Optimizer:
    if kind == "adam":
        return tf.keras.optimizers.Adam(learning_rate)
    if kind == "sgd":
        return tf.keras.optimizers.SGD(learning_rate, momentum=0.9)
    raise ValueError(f"optimizer must be adam or sgd, got {kind!r}")


def fit_soft(
    model: tf.keras.Model,
    x: np.ndarray,
    targets: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    kind: str = "adam",
    callbacks: list | None = None,
) -> tf.keras.Model:
    """Fit `model` in place on probability targets (one-hot rows are hard labels); seeded."""
    seed_everything(seed)
    model.compile(optimizer=optimizer(kind, learning_rate), loss="categorical_crossentropy")
    model.fit(
        x.astype(np.float32),
        targets.astype(np.float32),
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=0,
        callbacks=callbacks or [],
    )
    return model


def keras_predict(model: tf.keras.Model) -> PredictFn:
    return lambda x: model.predict(np.asarray(x, dtype=np.float32), batch_size=1024, verbose=0)


def accuracy(predict: PredictFn, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(predict(x)).argmax(axis=1) == y))
