"""Named dataset sources, and ingest: load one and write it, unchanged, to data/raw/.

Raw layout (also the documented layout for your own data, `dataset: npz`, see docs/data.md):
  x       image (N, H, W) or (N, H, W, C) · time series (N, T, C) · vector (N, F);
          any real dtype, any finite range (signed too): preprocessing is fitted on the train split
  y       (N,) integer class ids 0..K-1
  labels  (K,) optional class names
  layout  optional: "image", "time_series" or "vector" (else data.layout; auto guesses by rank)

`wav` (a folder of class folders of .wav clips → log-mel time series) and `csv` (labelled sensor
windows, one row per time step) are importers into the same layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinymlops.errors import DataError
from tinymlops.settings import DataParams
from tinymlops.util.io import read_npz, write_npz

RAW_FILE = "dataset.npz"


@dataclass(frozen=True)
class Dataset:
    name: str
    x: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...]
    value_max: float | None  # a declared range [0, value_max] (uint8, digits); None: fitted on train
    layout: str = "image"  # image | time_series | vector


LAYOUT_RANKS = {"image": (3, 4), "time_series": (3,), "vector": (2,)}


def resolve_layout(asked: str, x: np.ndarray, source: str) -> str:
    """data.layout (or the file's own) → image | time_series | vector; auto guesses by rank."""
    if asked == "auto":
        return "vector" if x.ndim == 2 else "image"
    if asked not in LAYOUT_RANKS:
        raise DataError(f"{source}: layout {asked!r}, expected one of image, time_series, vector")
    return asked


def _digits(params: DataParams, root: Path) -> Dataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    bunch = load_digits()
    return Dataset(
        name="digits",
        x=bunch.images.astype(np.uint8),  # 8x8 grey levels 0..16
        y=bunch.target.astype(np.int64),
        labels=tuple(str(n) for n in bunch.target_names),
        value_max=16.0,
        layout="image",
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
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: x has dtype {x.dtype}, expected a real numeric dtype")
    asked = str(arrays["layout"]) if "layout" in arrays else params.layout
    layout = resolve_layout(asked, x, str(path))
    if x.ndim not in LAYOUT_RANKS[layout]:
        ranks = " or ".join(f"{r}-D" for r in LAYOUT_RANKS[layout])
        raise DataError(f"{path}: x has shape {tuple(x.shape)}, expected {ranks} for layout {layout}")
    return Dataset(name=path.stem, x=x, y=y, labels=labels, value_max=declared_max(x), layout=layout)


def declared_max(x: np.ndarray) -> float | None:
    """uint8 data declares 0..255, float data within [0, 1] declares 0..1; anything else
    (other integers, signed or wider floats) is scaled by the range fitted on the train split."""
    if x.dtype == np.uint8:
        return 255.0
    if np.issubdtype(x.dtype, np.floating) and x.size and np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1:
        return 1.0
    return None


def _wav(params: DataParams, root: Path) -> Dataset:
    from tinymlops.ml.data.audio import load_wav_folder

    path = Path(params.path or "")
    return load_wav_folder(path if path.is_absolute() else root / path, params.audio)


def _csv(params: DataParams, root: Path) -> Dataset:
    from tinymlops.ml.data.tabular import load_csv_windows

    path = Path(params.path or "")
    return load_csv_windows(path if path.is_absolute() else root / path, params.csv)


REGISTRY: dict[str, Callable[[DataParams, Path], Dataset]] = {
    "digits": _digits,
    "npz": _npz,
    "wav": _wav,
    "csv": _csv,
}


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
        value_max=np.array(np.nan if ds.value_max is None else ds.value_max),
        layout=np.array(ds.layout),
    )


def read_raw(raw_dir: Path) -> Dataset:
    path = Path(raw_dir) / RAW_FILE
    a = read_npz(path)
    missing = [k for k in ("x", "y", "labels", "name", "value_max") if k not in a]
    if missing:
        raise DataError(f"{path}: missing arrays {missing}; run `tinymlops data ingest` again")
    value_max = float(a["value_max"])
    return Dataset(
        name=str(a["name"]),
        x=a["x"],
        y=a["y"],
        labels=tuple(map(str, a["labels"])),
        value_max=None if np.isnan(value_max) else value_max,
        layout=str(a["layout"]) if "layout" in a else "image",
    )
