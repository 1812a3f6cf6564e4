"""Data tests: schema, ranges, class balance, and leakage between splits by content hash."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
from pydantic import BaseModel

from tinymlops.errors import DataError
from tinymlops.ml.data.registry import LAYOUT_RANKS, Dataset

MIN_SAMPLES_PER_CLASS = 3  # one each for train, val and test


class Check(BaseModel):
    name: str
    passed: bool
    detail: str


class ValidationReport(BaseModel):
    dataset: str
    n_samples: int
    input_shape: list[int]
    x_dtype: str
    n_classes: int
    class_counts: dict[str, int]
    duplicates: int
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def raise_for_failures(self, source: str) -> None:
        for c in self.checks:
            if not c.passed:
                raise DataError(f"{source}: data check '{c.name}' failed: {c.detail}")


def content_hashes(x: np.ndarray) -> list[str]:
    """One digest per sample, over its bytes at a fixed dtype so equal values hash equal."""
    flat = np.ascontiguousarray(x.reshape(len(x), -1).astype(np.float64))
    return [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in flat]


def validate_dataset(ds: Dataset, min_class_share: float) -> ValidationReport:
    x, y = ds.x, ds.y
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(name=name, passed=bool(ok), detail=detail))

    expected = {"image": "(N,H,W[,C])", "time_series": "(N,T,C)", "vector": "(N,F)"}.get(ds.layout, "?")
    ranks = LAYOUT_RANKS.get(ds.layout, ())
    shape_ok = x.ndim in ranks and len(x) == len(y) and y.ndim == 1 and len(x) > 0 and 0 not in x.shape[1:]
    check("shape", shape_ok, f"x {tuple(x.shape)}, y {tuple(y.shape)}; expected x {expected} ({ds.layout}) and y (N,)")
    dtype_ok = np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)
    check("x_dtype", dtype_ok, f"x has dtype {x.dtype}, expected a real numeric dtype")
    check("y_dtype", np.issubdtype(y.dtype, np.integer), f"y has dtype {y.dtype}, expected an integer dtype")
    counts: Counter[int] = Counter()
    dups = 0
    if shape_ok and dtype_ok:
        xf = x.astype(np.float64)
        finite = bool(np.isfinite(xf).all())
        check("x_finite", finite, "x contains NaN or inf" if not finite else "all values finite")
        lo, hi = (float(xf.min()), float(xf.max())) if finite else (0.0, 0.0)
        if ds.value_max is not None:  # a declared range (uint8, digits) must hold; else any range
            top = ds.value_max
            check("x_range", 0 <= lo and hi <= top, f"x spans [{lo:g}, {hi:g}], expected [0, {top:g}]")
        else:
            check("x_range", True, f"x spans [{lo:g}, {hi:g}]; scaled by the train split's fitted range")
        hashes = content_hashes(x)
        dups = len(hashes) - len(set(hashes))
        by_hash: dict[str, int] = {}
        conflicts = sum(1 for h, label in zip(hashes, y.tolist(), strict=True) if by_hash.setdefault(h, label) != label)
        check("label_conflicts", conflicts == 0, f"{conflicts} identical inputs carry different labels")
    if np.issubdtype(y.dtype, np.integer) and y.ndim == 1 and len(y):
        k = len(ds.labels)
        counts = Counter(int(v) for v in y)
        in_range = min(counts) >= 0 and max(counts) < k
        check("y_range", in_range, f"labels span [{min(counts)}, {max(counts)}], expected [0, {k - 1}] for {k} classes")
        missing = [c for c in range(k) if counts[c] == 0]
        check(
            "classes_present",
            not missing and k >= 2,
            f"classes without samples: {missing}" if missing else f"{k} classes",
        )
        mean = len(y) / max(k, 1)
        smallest = min(counts[c] for c in range(k)) if k else 0
        present = min(counts.values())  # absent classes are classes_present's business
        check(
            "class_size",
            present >= MIN_SAMPLES_PER_CLASS,
            f"smallest class has {present} samples; a stratified train/val/test split needs "
            f"at least {MIN_SAMPLES_PER_CLASS}",
        )
        check(
            "class_balance",
            smallest >= min_class_share * mean,
            f"smallest class has {smallest} samples, {smallest / mean:.2f} of the mean {mean:.1f} "
            f"(minimum share {min_class_share})",
        )
    return ValidationReport(
        dataset=ds.name,
        n_samples=int(len(x)),
        input_shape=[int(v) for v in x.shape[1:]],
        x_dtype=str(x.dtype),
        n_classes=len(ds.labels),
        class_counts={ds.labels[c] if 0 <= c < len(ds.labels) else str(c): n for c, n in sorted(counts.items())},
        duplicates=dups,
        checks=checks,
    )


def leakage_check(splits: dict[str, np.ndarray]) -> Check:
    """No sample (by content) may appear in two splits."""
    seen: dict[str, str] = {}
    leaks: Counter[str] = Counter()
    for split, x in splits.items():
        for h in set(content_hashes(x)):
            if h in seen and seen[h] != split:
                leaks[f"{seen[h]}/{split}"] += 1
            seen.setdefault(h, split)
    detail = ", ".join(f"{n} samples shared by {pair}" for pair, n in leaks.items()) or "no shared samples"
    return Check(name="no_leakage", passed=not leaks, detail=detail)
