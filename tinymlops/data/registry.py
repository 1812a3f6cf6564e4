"""Named dataset sources, and ingest: load one and write it, unchanged, to data/raw/.

Raw layout (also the documented layout for your own data, `dataset: npz`):
  x       (N, H, W) or (N, H, W, C), any real dtype, values in [0, value_max]
  y       (N,) integer class ids 0..K-1
  labels  (K,) optional class names
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinymlops.errors import DataError
from tinymlops.io import read_npz, write_npz
from tinymlops.settings import DataParams

RAW_FILE = "dataset.npz"


@dataclass(frozen=True)
class Dataset:
    name: str
    x: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...]
    value_max: float  # inputs are scaled by this to [0, 1]


def _digits(params: DataParams, root: Path) -> Dataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    bunch = load_digits()
    return Dataset(
        name="digits",
        x=bunch.images.astype(np.uint8),  # 8x8 grey levels 0..16
        y=bunch.target.astype(np.int64),
        labels=tuple(str(n) for n in bunch.target_names),
        value_max=16.0,
    )


def _npz(params: DataParams, root: Path) -> Dataset:
    path = Path(params.path or "")
    path = path if path.is_absolute() else root / path
    arrays = read_npz(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing array '{key}' (expected x, y and optional labels)")
    x, y = arrays["x"], arrays["y"]
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y has dtype {y.dtype}, expected an integer dtype")
    n_classes = int(y.max()) + 1 if y.size else 0
    if "labels" in arrays and arrays["labels"].ndim != 1:
        raise DataError(f"{path}: labels must be a 1-D array of class names, got shape {arrays['labels'].shape}")
    labels = tuple(str(v) for v in arrays["labels"]) if "labels" in arrays else tuple(map(str, range(n_classes)))
    if np.issubdtype(x.dtype, np.integer):
        value_max = float(np.iinfo(x.dtype).max) if x.dtype == np.uint8 else float(max(x.max(initial=1), 1))
    else:
        value_max = 1.0 if x.size == 0 or float(np.nanmax(x)) <= 1.0 else float(np.nanmax(x))
    return Dataset(name=path.stem, x=x, y=y, labels=labels, value_max=value_max)


REGISTRY: dict[str, Callable[[DataParams, Path], Dataset]] = {"digits": _digits, "npz": _npz}


def load_dataset(params: DataParams, root: Path) -> Dataset:
    try:
        loader = REGISTRY[params.dataset]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise DataError(f"data.dataset: unknown dataset '{params.dataset}' (known: {known})") from None
    return loader(params, root)


def ingest(params: DataParams, root: Path, raw_dir: Path) -> Path:
    """Load the configured dataset and write it to raw_dir/dataset.npz (atomically)."""
    ds = load_dataset(params, root)
    return write_npz(
        Path(raw_dir) / RAW_FILE,
        x=ds.x,
        y=ds.y,
        labels=np.array(ds.labels),
        name=np.array(ds.name),
        value_max=np.array(ds.value_max),
    )


def read_raw(raw_dir: Path) -> Dataset:
    path = Path(raw_dir) / RAW_FILE
    a = read_npz(path)
    missing = [k for k in ("x", "y", "labels", "name", "value_max") if k not in a]
    if missing:
        raise DataError(f"{path}: missing arrays {missing}; run `tinymlops data ingest` again")
    return Dataset(
        name=str(a["name"]), x=a["x"], y=a["y"], labels=tuple(map(str, a["labels"])), value_max=float(a["value_max"])
    )
