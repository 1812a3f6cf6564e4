"""The npz source: a user's own .npz ingests unchanged, and each way it can be wrong is a one-line
DataError naming the file or the key, with nothing written to data/raw/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinymlops.errors import DataError
from tinymlops.ml.data import registry
from tinymlops.settings import DataParams


def user_arrays(n: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "x": rng.integers(0, 256, (n, 6, 6), dtype=np.uint8),
        "y": (np.arange(n) % 3).astype(np.int64),
        "labels": np.array(["cat", "dog", "owl"]),
    }


def npz_params(path: str | Path) -> DataParams:
    return DataParams(dataset="npz", path=str(path))


def data_error(params: DataParams, root: Path) -> str:
    """Ingest must fail with a one-line DataError and leave no file in raw/."""
    raw = root / "raw"
    with pytest.raises(DataError) as info:
        registry.ingest(params, root, raw)
    assert not raw.exists() or not any(raw.iterdir())
    message = str(info.value)
    assert "\n" not in message
    return message


def test_user_npz_ingests_unchanged(tmp_path: Path) -> None:
    arrays = user_arrays()
    np.savez(tmp_path / "mine.npz", **arrays)
    registry.ingest(npz_params("mine.npz"), tmp_path, tmp_path / "raw")  # relative to the project root
    ds = registry.read_raw(tmp_path / "raw")
    assert ds.name == "mine"
    np.testing.assert_array_equal(ds.x, arrays["x"])
    assert ds.x.dtype == np.uint8
    np.testing.assert_array_equal(ds.y, arrays["y"])
    assert ds.labels == ("cat", "dog", "owl")
    assert ds.value_max == 255.0  # uint8 inputs are scaled by their full range


def test_absolute_path_and_default_labels(tmp_path: Path) -> None:
    arrays = user_arrays()
    del arrays["labels"]
    np.savez(tmp_path / "nolabels.npz", **arrays)
    ds = registry.load_dataset(npz_params(tmp_path / "nolabels.npz"), Path("/nonexistent-root"))
    assert ds.labels == ("0", "1", "2")


def test_float_inputs_in_unit_range_keep_value_max_one(tmp_path: Path) -> None:
    arrays = user_arrays()
    arrays["x"] = arrays["x"].astype(np.float32) / 255
    np.savez(tmp_path / "f.npz", **arrays)
    ds = registry.load_dataset(npz_params("f.npz"), tmp_path)
    assert ds.value_max == 1.0 and ds.x.dtype == np.float32


@pytest.mark.parametrize("key", ["x", "y"])
def test_missing_array(tmp_path: Path, key: str) -> None:
    arrays = user_arrays()
    del arrays[key]
    path = tmp_path / "partial.npz"
    np.savez(path, **arrays)
    message = data_error(npz_params(path), tmp_path)
    assert message.startswith(f"{path}:")
    assert f"missing array '{key}'" in message


def test_float_labels(tmp_path: Path) -> None:
    arrays = user_arrays()
    arrays["y"] = arrays["y"].astype(np.float32)
    path = tmp_path / "floaty.npz"
    np.savez(path, **arrays)
    message = data_error(npz_params(path), tmp_path)
    assert message.startswith(f"{path}:")
    assert "y has dtype float32" in message and "integer" in message


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    message = data_error(npz_params(path), tmp_path)
    assert message.startswith(f"{path}:") and "not a readable .npz" in message


def test_missing_file(tmp_path: Path) -> None:
    message = data_error(npz_params("elsewhere/none.npz"), tmp_path)
    assert message == f"{tmp_path / 'elsewhere' / 'none.npz'}: file not found"


def test_unknown_dataset_name(tmp_path: Path) -> None:
    message = data_error(DataParams(dataset="mnist"), tmp_path)
    assert "data.dataset" in message and "'mnist'" in message
    assert "digits" in message and "npz" in message  # tells the user what exists


def test_read_raw_names_missing_arrays(tmp_path: Path) -> None:
    """A data/raw/dataset.npz from elsewhere (not written by ingest) is refused with a hint."""
    raw = tmp_path / "raw"
    raw.mkdir()
    np.savez(raw / registry.RAW_FILE, **user_arrays())  # no name, no value_max
    with pytest.raises(DataError) as info:
        registry.read_raw(raw)
    message = str(info.value)
    assert "\n" not in message and registry.RAW_FILE in message
    assert "'name'" in message and "'value_max'" in message and "data ingest" in message


def test_scalar_labels_are_a_data_error(tmp_path: Path) -> None:
    arrays = user_arrays()
    arrays["labels"] = np.array("cat,dog,owl")
    path = tmp_path / "scalar_labels.npz"
    np.savez(path, **arrays)
    assert str(path) in data_error(npz_params(path), tmp_path)
