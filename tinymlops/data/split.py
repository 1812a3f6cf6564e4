"""Seeded, stratified train/val/test split that keeps identical samples in one split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel
from sklearn.model_selection import train_test_split

from tinymlops.data.registry import Dataset
from tinymlops.data.validate import ValidationReport, content_hashes, leakage_check
from tinymlops.errors import DataError
from tinymlops.io import atomic_dir, read_npz, write_json, write_npz
from tinymlops.settings import DataParams

SPLITS = ("train", "val", "test")
META_FILE = "meta.json"
REPORT_FILE = "validation.json"


class PreparedMeta(BaseModel):
    dataset: str
    labels: list[str]
    input_shape: list[int]  # (H, W, C) after preparation
    value_max: float
    counts: dict[str, int]


class Split(BaseModel, arbitrary_types_allowed=True):
    x: np.ndarray  # float32 (N, H, W, C) in [0, 1]
    y: np.ndarray  # int32 (N,)


def split_indices(y: np.ndarray, hashes: list[str], params: DataParams, seed: int) -> dict[str, np.ndarray]:
    """Split unique contents (not rows) so a duplicate can never straddle two splits."""
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    reps = np.array(sorted(first.values()))
    groups: dict[int, list[int]] = {r: [] for r in reps}
    for i, h in enumerate(hashes):
        groups[first[h]].append(i)
    stratify = y[reps]
    rest, test = train_test_split(reps, test_size=params.test_size, random_state=seed, stratify=stratify)
    val_share = params.val_size / (1 - params.test_size)
    train, val = train_test_split(rest, test_size=val_share, random_state=seed, stratify=y[rest])
    return {
        name: np.array(sorted(i for r in part for i in groups[r]))
        for name, part in zip(SPLITS, (train, val, test), strict=True)
    }


def _prepare_x(x: np.ndarray, value_max: float) -> np.ndarray:
    x = x.astype(np.float32) / np.float32(value_max)
    return x[..., None] if x.ndim == 3 else x


def prepare(ds: Dataset, report: ValidationReport, params: DataParams, seed: int, out_dir: Path) -> PreparedMeta:
    """Split `ds` and write train/val/test .npz, meta.json and the validation report, atomically.

    The report gains the leakage check; a failing report aborts before anything is replaced.
    """
    report.raise_for_failures("data/raw")
    idx = split_indices(ds.y, content_hashes(ds.x), params, seed)
    x = _prepare_x(ds.x, ds.value_max)
    parts = {name: Split(x=x[i], y=ds.y[i].astype(np.int32)) for name, i in idx.items()}
    leak = leakage_check({name: s.x for name, s in parts.items()})
    report.checks.append(leak)
    report.raise_for_failures(str(out_dir))
    meta = PreparedMeta(
        dataset=ds.name,
        labels=list(ds.labels),
        input_shape=list(x.shape[1:]),
        value_max=ds.value_max,
        counts={name: int(len(s.y)) for name, s in parts.items()},
    )
    with atomic_dir(out_dir) as tmp:
        for name, s in parts.items():
            write_npz(tmp / f"{name}.npz", x=s.x, y=s.y)
        write_json(tmp / META_FILE, meta.model_dump())
        write_json(tmp / REPORT_FILE, report.model_dump())
    return meta


def load_split(prepared_dir: Path, name: str) -> Split:
    a = read_npz(Path(prepared_dir) / f"{name}.npz")
    if "x" not in a or "y" not in a:
        raise DataError(f"{prepared_dir}/{name}.npz: missing x or y; run `tinymlops data prepare` again")
    return Split(x=a["x"], y=a["y"])


def load_meta(prepared_dir: Path) -> PreparedMeta:
    path = Path(prepared_dir) / META_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; run `tinymlops data prepare` first")
    return PreparedMeta.model_validate_json(path.read_text())
