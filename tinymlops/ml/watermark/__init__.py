"""Black-box, multi-bit, keyed watermark: key-derived triggers whose labels spell the owner's payload.

Light to import: TensorFlow loads only with embed (tinymlops.ml.watermark.embed) or a .tflite verify.
"""

from tinymlops.ml.watermark.config import PAYLOAD_BITS, WatermarkConfig
from tinymlops.ml.watermark.key import (
    KeyFileError,
    OwnerKey,
    WatermarkError,
    WatermarkRefused,
    ensure_dev_key,
    generate_key,
    load_key,
    write_key,
)
from tinymlops.ml.watermark.verify import WatermarkReport, chance_p_value, verify_predict, verify_tflite

__all__ = [
    "PAYLOAD_BITS",
    "KeyFileError",
    "OwnerKey",
    "WatermarkConfig",
    "WatermarkError",
    "WatermarkRefused",
    "WatermarkReport",
    "chance_p_value",
    "ensure_dev_key",
    "generate_key",
    "load_key",
    "verify_predict",
    "verify_tflite",
    "write_key",
]
