"""Watermark fixtures: one fixed-secret owner key, and the session's model embedded once and PTQ'd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tinymlops  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tests.support.paths import REPO  # noqa: E402
from tests.support.wm_keys import fixed_key
from tinymlops.ml.watermark.config import WatermarkConfig
from tinymlops.ml.watermark.key import OwnerKey, write_key


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
    from tinymlops.ml.data.split import load_split
    from tinymlops.ml.inference import quantize_input, run_tflite
    from tinymlops.ml.model.train import load
    from tinymlops.ml.quantize import inspect, representative, to_int8_tflite
    from tinymlops.ml.watermark.embed import embed_for_int8

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


# -- instances, fingerprint, attacks: the fast cases of bench/watermark.py --------------------------------

INSTANCE_IDS = (3, 17)  # derived as models; tracing searches ids 0..19


@pytest.fixture(scope="session")
def splits(prepared_dir: Path):
    from tinymlops.ml.data.split import load_split

    return {name: load_split(prepared_dir, name) for name in ("train", "val", "test")}


@pytest.fixture(scope="session")
def to_int8(params, splits):
    from tinymlops.ml.quantize import representative, to_int8_tflite

    calibration = representative(splits["train"], params.quantize.representative_samples, params.seed)
    return lambda model: to_int8_tflite(model, calibration)


@pytest.fixture(scope="session")
def instances(marked, splits, owner_key, wm_config, to_int8) -> dict[int, dict]:
    """Instances 3 and 17 of the session's marked model: {id: dict(model, int8, report)}."""
    from tinymlops.ml.watermark.instances import derive_instance

    out = {}
    for instance_id in INSTANCE_IDS:
        model, report = derive_instance(marked["model"], splits["train"], owner_key, instance_id, wm_config)
        out[instance_id] = {"model": model, "int8": to_int8(model), "report": report}
    return out


@pytest.fixture(scope="session")
def independent(splits, to_int8) -> list[bytes]:
    """Three models trained from scratch on the same data (cnn_small, cnn_tiny, mlp), as int8 files:
    false-positive controls."""
    from tinymlops.ml.watermark.fingerprint import train_references

    return [to_int8(m) for m in train_references(splits["train"], 10, 3, 12, seed=5000)]
