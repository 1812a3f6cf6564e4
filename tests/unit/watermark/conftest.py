"""Watermark fixtures: one fixed-secret owner key, and the session's model embedded once and PTQ'd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from wm_keys import fixed_key

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tinymlops.watermark.config import WatermarkConfig
from tinymlops.watermark.key import OwnerKey, write_key

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def wm_config() -> WatermarkConfig:
    return WatermarkConfig.load_from(REPO)


@pytest.fixture(scope="session")
def owner_key() -> OwnerKey:
    return fixed_key()


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory, owner_key: OwnerKey) -> Path:
    return write_key(owner_key, tmp_path_factory.mktemp("wm-key") / "owner.key")


@pytest.fixture(scope="session")
def marked(tmp_path_factory, params, prepared_dir: Path, trained_dir: Path, owner_key: OwnerKey, wm_config):
    """The session's trained model, watermarked and converted to int8 (PTQ), with the clean-accuracy
    figures on the test split: → dict(model, int8, report, int8_path, acc_before, acc_after)."""
    from tinymlops.data.split import load_split
    from tinymlops.inference import quantize_input, run_tflite
    from tinymlops.model.train import load
    from tinymlops.quantize import inspect, representative, to_int8_tflite
    from tinymlops.watermark.embed import embed_for_int8

    train, val, test = (load_split(prepared_dir, s) for s in ("train", "val", "test"))
    original = load(trained_dir)
    calibration = representative(train, params.quantize.representative_samples, params.seed)
    model, int8, report = embed_for_int8(
        original, train, val, owner_key, wm_config, params.seed, lambda m: to_int8_tflite(m, calibration)
    )

    def int8_accuracy(data: bytes) -> float:
        xq = quantize_input(test.x, inspect(data).inputs[0])
        return float(np.mean(run_tflite(data, xq).argmax(axis=1) == test.y))

    path = tmp_path_factory.mktemp("wm-int8") / "marked_int8.tflite"
    path.write_bytes(int8)
    return {
        "original": original,
        "model": model,
        "int8": int8,
        "int8_path": path,
        "report": report,
        "acc_before": int8_accuracy(to_int8_tflite(original, calibration)),
        "acc_after": int8_accuracy(int8),
    }
