"""Architectures chosen by name in params.yaml (model.architecture).

All of them use only ops that TFLite Micro's reference kernels provide for int8.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tinymlops.errors import ConfigError

layers = tf.keras.layers
Builder = Callable[[tuple[int, ...], int], tf.keras.Model]


def cnn_small(input_shape: tuple[int, ...], n_classes: int) -> tf.keras.Model:
    """Two 3x3 convolutions, one pooling step, a dense head (~15 KB as int8 for 8x8 inputs)."""
    return tf.keras.Sequential(
        [
            layers.Input(input_shape),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.2),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="cnn_small",
    )


def ds_cnn(input_shape: tuple[int, ...], n_classes: int) -> tf.keras.Model:
    """Depthwise-separable CNN, the MLPerf Tiny keyword-spotting shape, scaled down."""
    return tf.keras.Sequential(
        [
            layers.Input(input_shape),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.DepthwiseConv2D(3, padding="same", activation="relu"),
            layers.Conv2D(32, 1, activation="relu"),
            layers.MaxPooling2D(),
            layers.GlobalAveragePooling2D(),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="ds_cnn",
    )


def mlp(input_shape: tuple[int, ...], n_classes: int) -> tf.keras.Model:
    return tf.keras.Sequential(
        [
            layers.Input(input_shape),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="mlp",
    )


ARCHITECTURES: dict[str, Builder] = {"cnn_small": cnn_small, "ds_cnn": ds_cnn, "mlp": mlp}


def build(name: str, input_shape: tuple[int, ...], n_classes: int) -> tf.keras.Model:
    try:
        return ARCHITECTURES[name](input_shape, n_classes)
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ConfigError(f"params.yaml: model.architecture: unknown '{name}' (known: {known})") from None
