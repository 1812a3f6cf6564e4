"""The `csv` dataset: labelled sensor windows, one row per time step.

    window,label,ax,ay,az
    0,walk,0.12,-0.98,0.05
    0,walk,0.10,-0.97,0.07
    …
    1,idle,0.00,-1.00,0.01

Rows sharing a `window` value (in file order) form one sample; every window must have the same
number of rows T and one label. The channel columns (every column but the two, unless
data.csv.channels names them) must be numbers. → x (N, T, C) float32, layout time_series.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tinymlops.errors import DataError
from tinymlops.settings.params import CsvParams


def load_csv_windows(path: Path, params: CsvParams):  # → registry.Dataset
    from tinymlops.ml.data.registry import Dataset

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if not header:
        raise DataError(f"{path}: empty file, expected a header row")
    header = [h.strip() for h in header]
    for column in (params.window_column, params.label_column):
        if column not in header:
            raise DataError(f"{path}: no column {column!r} (header: {', '.join(header)})")
    channels = params.channels or [h for h in header if h not in (params.window_column, params.label_column)]
    missing = [c for c in channels if c not in header]
    if missing or not channels:
        raise DataError(f"{path}: channel columns {missing or '(none)'} not in the header ({', '.join(header)})")
    wi, li, ci = (
        header.index(params.window_column),
        header.index(params.label_column),
        [header.index(c) for c in channels],
    )
    windows: dict[str, list[list[float]]] = {}
    labels: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        if not row or all(not v.strip() for v in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields, expected {len(header)}")
        key, label = row[wi].strip(), row[li].strip()
        if labels.setdefault(key, label) != label:
            raise DataError(f"{path}: line {line}: window {key!r} has labels {labels[key]!r} and {label!r}")
        try:
            windows.setdefault(key, []).append([float(row[i]) for i in ci])
        except ValueError:
            bad = next(channels[j] for j, i in enumerate(ci) if not _is_number(row[i]))
            raise DataError(
                f"{path}: line {line}: column {bad!r} is {row[header.index(bad)]!r}, expected a number"
            ) from None
    if not windows:
        raise DataError(f"{path}: no data rows")
    lengths = {k: len(v) for k, v in windows.items()}
    t = max(set(lengths.values()), key=list(lengths.values()).count)
    odd = [k for k, n in lengths.items() if n != t]
    if odd:
        raise DataError(f"{path}: window {odd[0]!r} has {lengths[odd[0]]} rows, expected {t} like the others")
    names = sorted(set(labels.values()), key=lambda v: (not _is_number(v), float(v) if _is_number(v) else 0.0, v))
    ids = {name: i for i, name in enumerate(names)}
    return Dataset(
        name=path.stem,
        x=np.array([windows[k] for k in windows], dtype=np.float32),
        y=np.array([ids[labels[k]] for k in windows], dtype=np.int64),
        labels=tuple(names),
        value_max=None,
        layout="time_series",
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
