"""Seeded, stratified train/val/test split that keeps identical samples in one split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel
from sklearn.model_selection import train_test_split

from tinymlops.errors import DataError
from tinymlops.ml.data.registry import Dataset
from tinymlops.ml.data.validate import ValidationReport, content_hashes, leakage_check
from tinymlops.ml.preprocess import Preprocessing, fit, model_input
from tinymlops.settings import DataParams
from tinymlops.util.io import atomic_dir, read_npz, write_json, write_npz
from tinymlops.util.layout import SPLIT_META_FILE, VALIDATION_FILE

SPLITS = ("train", "val", "test")
META_FILE = SPLIT_META_FILE
REPORT_FILE = VALIDATION_FILE


class PreparedMeta(BaseModel):
    dataset: str
    labels: list[str]
    input_shape: list[int]  # (H, W, C) after preparation: the models' input
    value_max: float | None  # the declared range, when the data has one
    counts: dict[str, int]
    layout: str = "image"
    preprocessing: Preprocessing | None = None  # fitted on train; None only in old prepared dirs


class Split(BaseModel, arbitrary_types_allowed=True):
    x: np.ndarray  # float32 (N, H, W, C), preprocessed (see meta.preprocessing)
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
    try:
        rest, test = train_test_split(reps, test_size=params.test_size, random_state=seed, stratify=stratify)
        val_share = params.val_size / (1 - params.test_size)
        train, val = train_test_split(rest, test_size=val_share, random_state=seed, stratify=y[rest])
    except ValueError as exc:  # too few samples for a stratified split: say so in one line
        k = len(np.unique(stratify))
        raise DataError(
            f"data: {len(reps)} unique samples of {k} classes are too few for a stratified split with "
            f"data.test_size {params.test_size} and data.val_size {params.val_size} (each split needs "
            f"every class; {str(exc).splitlines()[0]})"
        ) from None
    return {
        name: np.array(sorted(i for r in part for i in groups[r]))
        for name, part in zip(SPLITS, (train, val, test), strict=True)
    }


def prepare(ds: Dataset, report: ValidationReport, params: DataParams, seed: int, out_dir: Path) -> PreparedMeta:
    """Split `ds` and write train/val/test .npz, meta.json and the validation report, atomically.

    The report gains the leakage check; a failing report aborts before anything is replaced.
    """
    report.raise_for_failures("data/raw")
    idx = split_indices(ds.y, content_hashes(ds.x), params, seed)
    layout = ds.layout if ds.layout in ("image", "time_series", "vector") else "image"
    declared = None if ds.value_max is None else (0.0, ds.value_max)
    raw = ds.x[..., None] if layout == "image" and ds.x.ndim == 3 else ds.x  # channels last, always
    pre = fit(raw[idx["train"]], params.preprocess, layout, declared)  # type: ignore[arg-type]
    x = model_input(pre.apply(raw), layout)  # type: ignore[arg-type]
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
        layout=layout,
        preprocessing=pre,
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
