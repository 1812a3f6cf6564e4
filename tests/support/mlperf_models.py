"""Networks shaped like the MLPerf Tiny reference models, with random weights, converted to int8
by the project's own converter (tinymlops.ml.quantize.to_int8_tflite). Used by the firmware tests and
bench/firmware.py."""

from __future__ import annotations

import numpy as np

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)


def _layers():
    import tensorflow as tf

    return tf, tf.keras.layers


def ds_cnn_kws():
    """KWS DS-CNN: 49x10 MFCC, conv 64 (10x4, stride 2), 4x (depthwise 3x3 + pointwise 64), pool, FC 12."""
    tf, L = _layers()
    x = inp = L.Input((49, 10, 1))
    x = L.Conv2D(64, (10, 4), strides=2, padding="same", use_bias=True)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    for _ in range(4):
        x = L.DepthwiseConv2D(3, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.Conv2D(64, 1)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
    x = L.AveragePooling2D(pool_size=(25, 5))(x)
    x = L.Flatten()(x)
    x = L.Dense(12, activation="softmax")(x)
    return tf.keras.Model(inp, x, name="ds_cnn_kws"), (49, 10, 1)


def resnet8_ic():
    """IC ResNet-8: 32x32x3, 16-32-64 filters, three residual stacks, pool, FC 10."""
    tf, L = _layers()
    x = inp = L.Input((32, 32, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(x)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = L.ReLU()(L.BatchNormalization()(L.Conv2D(filters, 3, strides=stride, padding="same")(x)))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
        if stride != 1 or x.shape[-1] != filters:
            x = L.Conv2D(filters, 1, strides=stride)(x)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.AveragePooling2D(pool_size=8)(x)
    x = L.Dense(10, activation="softmax")(L.Flatten()(x))
    return tf.keras.Model(inp, x, name="resnet8_ic"), (32, 32, 3)


def fc_autoencoder_ad():
    """AD FC autoencoder: 640 -> 4x128 -> 8 -> 4x128 -> 640 (ReLU, batch norm folded)."""
    tf, L = _layers()
    x = inp = L.Input((640,))
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = L.ReLU()(L.BatchNormalization()(L.Dense(units)(x)))
    x = L.Dense(640)(x)
    return tf.keras.Model(inp, x, name="fc_autoencoder_ad"), (640,)


MLPERF = {"ds_cnn_kws": ds_cnn_kws, "resnet8_ic": resnet8_ic, "fc_autoencoder_ad": fc_autoencoder_ad}
MACS = {"ds_cnn_kws": 2_656_768}  # MLPerf Tiny KWS DS-CNN, the figure configs/devices.yaml calibrates on


def int8_model(builder, seed: int = 0) -> tuple[bytes, tuple[int, ...]]:
    tf, _ = _layers()
    from tinymlops.ml.quantize import to_int8_tflite

    tf.keras.utils.set_random_seed(seed)
    model, shape = builder()
    calib = np.random.default_rng(seed).normal(0, 1, (32, *shape)).astype(np.float32)
    return to_int8_tflite(model, calib), shape


def macs(model: bytes) -> int:
    """Multiply-accumulates of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED in an int8 .tflite."""
    from tinymlops.device.image.compiler import _Graph

    g = _Graph(model)
    total = 0
    for op in g.g.operators:
        name = g.op_name(op)
        out = g.shape(int(op.outputs[0]))
        w = g.shape(int(op.inputs[1])) if len(op.inputs) > 1 else []
        if name == "CONV_2D":
            total += int(np.prod(out)) * w[1] * w[2] * w[3]
        elif name == "DEPTHWISE_CONV_2D":
            total += int(np.prod(out)) * w[1] * w[2]
        elif name == "FULLY_CONNECTED":
            total += int(np.prod(out)) * w[1]
    return total


def roomy(profile, image: bytes):
    """The profile itself when the image fits, else the same core with room for it (4 MB flash,
    1 MB RAM): for networks larger than a part, on that part's core."""
    from tinymlops.device.mcu import fits

    if fits(profile, image).ok:
        return profile
    mcu = profile.mcu.model_copy(
        update={"flash_bytes": 4 << 20, "ram_bytes": 1 << 20, "reserved_ram_bytes": 0, "flash_page_bytes": 4096}
    )
    return profile.model_copy(update={"mcu": mcu, "flash_model_bytes": 1 << 20, "name": profile.name + "-roomy"})
