"""Data checks on small synthetic datasets: each defect trips exactly the check that names it, a
clean dataset passes, and a failure becomes a one-line DataError naming the check."""

from __future__ import annotations

import numpy as np
import pytest

from tinymlops.errors import DataError
from tinymlops.ml.data.registry import Dataset
from tinymlops.ml.data.validate import ValidationReport, content_hashes, leakage_check, validate_dataset

VALUE_MAX = 16.0


def make_dataset(counts: tuple[int, ...] = (20, 20, 20), seed: int = 0, n_labels: int | None = None) -> Dataset:
    """`counts[c]` distinct 4x4 uint8 samples of class c, values in [0, 16] like digits."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    x = rng.integers(0, int(VALUE_MAX) + 1, (len(y), 4, 4)).astype(np.uint8)
    assert len(set(content_hashes(x))) == len(x)  # no accidental duplicates
    labels = tuple(f"c{i}" for i in range(n_labels if n_labels is not None else len(counts)))
    return Dataset(name="synthetic", x=x, y=y, labels=labels, value_max=VALUE_MAX)


def failed(report: ValidationReport) -> set[str]:
    return {c.name for c in report.checks if not c.passed}


def check(report: ValidationReport, name: str):
    (found,) = [c for c in report.checks if c.name == name]
    return found


def test_clean_dataset_passes() -> None:
    ds = make_dataset()
    report = validate_dataset(ds, min_class_share=0.5)
    assert report.passed, [c for c in report.checks if not c.passed]
    assert {c.name for c in report.checks} >= {
        "shape",
        "x_dtype",
        "y_dtype",
        "x_finite",
        "x_range",
        "label_conflicts",
        "y_range",
        "classes_present",
        "class_balance",
    }
    assert report.n_samples == 60 and report.input_shape == [4, 4] and report.x_dtype == "uint8"
    assert report.n_classes == 3 and report.class_counts == {"c0": 20, "c1": 20, "c2": 20}
    assert report.duplicates == 0
    report.raise_for_failures("data/raw")  # does not raise


def test_float_labels() -> None:
    ds = make_dataset()
    ds = Dataset(ds.name, ds.x, ds.y.astype(np.float32), ds.labels, ds.value_max)
    report = validate_dataset(ds, 0.5)
    assert failed(report) == {"y_dtype"}
    assert "float32" in check(report, "y_dtype").detail


def test_nan_in_inputs() -> None:
    ds = make_dataset()
    x = ds.x.astype(np.float32)
    x[3, 1, 2] = np.nan
    report = validate_dataset(Dataset(ds.name, x, ds.y, ds.labels, ds.value_max), 0.5)
    assert failed(report) == {"x_finite"}


def test_inf_in_inputs() -> None:
    ds = make_dataset()
    x = ds.x.astype(np.float64)
    x[0, 0, 0] = np.inf
    assert "x_finite" in failed(validate_dataset(Dataset(ds.name, x, ds.y, ds.labels, ds.value_max), 0.5))


@pytest.mark.parametrize("bad_value", [VALUE_MAX + 1, -1.0])
def test_inputs_out_of_range(bad_value: float) -> None:
    ds = make_dataset()
    x = ds.x.astype(np.float32)
    x[5, 0, 0] = bad_value
    report = validate_dataset(Dataset(ds.name, x, ds.y, ds.labels, ds.value_max), 0.5)
    assert failed(report) == {"x_range"}
    assert f"{bad_value:g}" in check(report, "x_range").detail


def test_value_max_itself_is_in_range() -> None:
    ds = make_dataset()
    x = ds.x.copy()
    x[0] = int(VALUE_MAX)
    assert validate_dataset(Dataset(ds.name, x, ds.y, ds.labels, ds.value_max), 0.5).passed


def test_missing_class() -> None:
    """Four class names, samples for only three of them."""
    ds = make_dataset(counts=(20, 20, 20), n_labels=4)
    report = validate_dataset(ds, min_class_share=0.0)
    assert failed(report) == {"classes_present"}
    assert "[3]" in check(report, "classes_present").detail


def test_label_beyond_the_class_list() -> None:
    ds = make_dataset()
    y = ds.y.copy()
    y[0] = 3  # only classes 0..2 are named
    report = validate_dataset(Dataset(ds.name, ds.x, y, ds.labels, ds.value_max), 0.0)
    assert "y_range" in failed(report)


def test_class_imbalance_below_min_share() -> None:
    """Smallest class 5 vs a mean of 15: share 0.33 fails 0.5 and passes 0.3."""
    ds = make_dataset(counts=(5, 20, 20))
    strict = validate_dataset(ds, min_class_share=0.5)
    assert failed(strict) == {"class_balance"}
    assert "5 samples" in check(strict, "class_balance").detail
    assert validate_dataset(ds, min_class_share=0.3).passed


def test_identical_inputs_with_conflicting_labels() -> None:
    ds = make_dataset()
    x = ds.x.copy()
    x[0] = x[30]  # class 0 sample made identical to a class 1 sample
    assert ds.y[0] != ds.y[30]
    report = validate_dataset(Dataset(ds.name, x, ds.y, ds.labels, ds.value_max), 0.5)
    assert failed(report) == {"label_conflicts"}
    assert report.duplicates == 1
    assert check(report, "label_conflicts").detail.startswith("1 ")


def test_identical_inputs_with_the_same_label_are_only_counted() -> None:
    ds = make_dataset()
    x = ds.x.copy()
    x[1] = x[0]  # same class
    report = validate_dataset(Dataset(ds.name, x, ds.y, ds.labels, ds.value_max), 0.5)
    assert report.passed and report.duplicates == 1


def test_wrong_shapes() -> None:
    ds = make_dataset()
    report = validate_dataset(Dataset(ds.name, ds.x.reshape(60, 16), ds.y, ds.labels, ds.value_max), 0.5)
    assert "shape" in failed(report)
    report = validate_dataset(Dataset(ds.name, ds.x, ds.y[:-1], ds.labels, ds.value_max), 0.5)
    assert "shape" in failed(report)


def test_two_dimensional_labels_fail_the_shape_check() -> None:
    ds = make_dataset()
    report = validate_dataset(Dataset(ds.name, ds.x, np.stack([ds.y, ds.y], 1), ds.labels, ds.value_max), 0.5)
    assert "shape" in failed(report)


def test_raise_for_failures_names_source_and_check() -> None:
    ds = make_dataset()
    ds = Dataset(ds.name, ds.x, ds.y.astype(np.float64), ds.labels, ds.value_max)
    report = validate_dataset(ds, 0.5)
    with pytest.raises(DataError) as info:
        report.raise_for_failures("data/raw")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("data/raw: data check 'y_dtype' failed:")


# -- leakage ----------------------------------------------------------------------------------------
def splits_of(ds: Dataset) -> dict[str, np.ndarray]:
    return {"train": ds.x[:40], "val": ds.x[40:50], "test": ds.x[50:]}


def test_disjoint_splits_have_no_leak() -> None:
    result = leakage_check(splits_of(make_dataset()))
    assert result.name == "no_leakage" and result.passed
    assert result.detail == "no shared samples"


def test_sample_in_train_and_test_is_a_leak() -> None:
    parts = splits_of(make_dataset())
    parts["test"] = np.concatenate([parts["test"], parts["train"][7:8]])
    result = leakage_check(parts)
    assert not result.passed
    assert result.detail == "1 samples shared by train/test"


def test_leak_is_found_across_dtypes() -> None:
    """Hashes are over values, not bytes: a uint8 sample and its float32 copy are the same sample."""
    parts = splits_of(make_dataset())
    parts["val"] = np.concatenate([parts["val"], parts["train"][:2]]).astype(np.float32)
    result = leakage_check(parts)
    assert not result.passed and "2 samples shared by train/val" in result.detail


def test_duplicates_within_one_split_are_not_a_leak() -> None:
    parts = splits_of(make_dataset())
    parts["train"] = np.concatenate([parts["train"], parts["train"][:5]])
    assert leakage_check(parts).passed
