"""Architectures, chosen in params.yaml (model.architecture) by name or as `module:function`.

A builder is any function `f(input_shape, num_classes) -> tf.keras.Model` (tf_keras), where
input_shape is the prepared data's (H, W, C): images as they are, a time series (T, C) as
(T, 1, C), a feature vector (F,) as (F, 1, 1). The built-in names are entries in REGISTRY pointing
at `tinymlops.ml.model.architectures:<function>`: the same mechanism as a user's own builder.

A builder that also takes keyword arguments `width` (channel/unit multiplier) and `depth` (number
of blocks) is a *family*: the variant search (tinymlops.ml.variants) scales it to fit a device
class. The built-ins are families. Each uses only ops TFLite Micro's int8 reference kernels have,
and adapts kernels and pooling to small or 1-wide inputs (W=1 time series).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tinymlops.errors import ConfigError, ModelError
from tinymlops.ml.tf import tf

layers = tf.keras.layers
Builder = Callable[..., tf.keras.Model]


def _units(base: int, width: float) -> int:
    return max(2, int(round(base * width)))


def _kernel(shape: tuple[int, ...], k: int = 3) -> tuple[int, int]:
    return (min(k, shape[0]), min(k, shape[1]))


def _pool(shape: tuple[int, ...]) -> tuple[int, int]:
    return (2 if shape[0] >= 2 else 1, 2 if shape[1] >= 2 else 1)


def cnn_small(input_shape: tuple[int, ...], n_classes: int, width: float = 1.0, depth: int = 2) -> tf.keras.Model:
    """3x3 convolutions (16, 32, … filters × width), one pooling step, a dense head
    (~15 KB as int8 for 8x8 inputs at width 1, depth 2)."""
    convs = [
        layers.Conv2D(_units(16 * 2**i, width), _kernel(input_shape), padding="same", activation="relu")
        for i in range(depth)
    ]
    return tf.keras.Sequential(
        [
            layers.Input(input_shape),
            *convs,
            layers.MaxPooling2D(_pool(input_shape)),
            layers.Flatten(),
            layers.Dropout(0.2),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="cnn_small",
    )


def ds_cnn(input_shape: tuple[int, ...], n_classes: int, width: float = 1.0, depth: int = 2) -> tf.keras.Model:
    """Depthwise-separable CNN, the MLPerf Tiny keyword-spotting shape, scaled down: a 3x3
    convolution, then `depth` blocks of depthwise 3x3 + pointwise 1x1, each with batch norm
    (momentum 0.9, so early epochs validate well; folded into the convolutions by the converter),
    global average pooling, a dense head. 0.98 on digits (0.89 without batch norm)."""
    filters = _units(32, width)
    body: list[tf.keras.layers.Layer] = [
        layers.Input(input_shape),
        layers.Conv2D(filters, _kernel(input_shape), padding="same", use_bias=False),
        layers.BatchNormalization(momentum=0.9),
        layers.ReLU(),
    ]
    for _ in range(depth):
        body += [
            layers.DepthwiseConv2D(_kernel(input_shape), padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
            layers.Conv2D(_units(64, width), 1, use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(),
        ]
    body += [layers.GlobalAveragePooling2D(), layers.Dense(n_classes, activation="softmax")]
    return tf.keras.Sequential(body, name="ds_cnn")


def mlp(input_shape: tuple[int, ...], n_classes: int, width: float = 1.0, depth: int = 1) -> tf.keras.Model:
    """Fully connected: `depth` hidden layers of 64 × width units."""
    hidden = [layers.Dense(_units(64, width), activation="relu") for _ in range(depth)]
    return tf.keras.Sequential(
        [
            layers.Input(input_shape),
            layers.Flatten(),
            *hidden,
            layers.Dropout(0.2),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="mlp",
    )


REGISTRY: dict[str, str] = {
    "cnn_small": "tinymlops.ml.model.architectures:cnn_small",
    "ds_cnn": "tinymlops.ml.model.architectures:ds_cnn",
    "mlp": "tinymlops.ml.model.architectures:mlp",
}
ARCHITECTURES = REGISTRY  # the names params.yaml accepts besides module:function


def _where(name: str) -> str:
    return f"params.yaml: model.architecture {name!r}"


def resolve(name: str, search_path: Path | None = None) -> Builder:
    """A registry name or `module:function` → the builder. `search_path` (the project root) is
    where a user's module is looked for when it is not importable as is."""
    target = REGISTRY.get(name, name)
    if ":" not in target:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"{_where(name)}: unknown name (known: {known}, or module:function)")
    module_name, _, function = target.partition(":")
    if not module_name or not function.isidentifier():
        raise ConfigError(f"{_where(name)}: expected module:function, e.g. my_models:tiny_cnn")
    try:
        module = _import(module_name, search_path)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise ConfigError(f"{_where(name)}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise ConfigError(f"{_where(name)}: module {module_name!r} has no function {function!r}")
    return builder


def _import(module_name: str, search_path: Path | None):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if search_path is None or exc.name != module_name.split(".")[0]:
            raise
    sys.path.insert(0, str(search_path))
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(str(search_path))


def is_family(builder: Builder) -> bool:
    """True when the builder scales by `width` and `depth` keywords (the variant search uses it)."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
    return "width" in params and "depth" in params


def build(
    name: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    search_path: Path | None = None,
    **options: float | int,
) -> tf.keras.Model:
    """Build `name` for the data; a builder that raises or returns the wrong thing is a one-line
    error naming the architecture and what was expected."""
    builder = resolve(name, search_path)
    try:
        model = builder(tuple(input_shape), n_classes, **options)
    except Exception as exc:  # a user's builder, or a shape a built-in cannot take
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelError(
            f"{_where(name)}: building it for input {tuple(input_shape)} and {n_classes} classes failed "
            f"({type(exc).__name__}: {first[:200]})"
        ) from None
    if not isinstance(model, tf.keras.Model):
        raise ModelError(f"{_where(name)}: the builder returned {type(model).__name__}, expected a tf_keras Model")
    got_in = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    got_out = model.output_shape
    if got_in != tuple(input_shape):
        raise ModelError(f"{_where(name)}: the model takes input {got_in}, expected {tuple(input_shape)}")
    if isinstance(got_out, list) or tuple(got_out[1:]) != (n_classes,):
        raise ModelError(f"{_where(name)}: the model outputs {got_out}, expected (None, {n_classes}) class scores")
    return model
