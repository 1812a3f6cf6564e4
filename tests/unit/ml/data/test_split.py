"""Splitting: seeded, stratified, a partition of the rows, duplicates never straddle two splits,
and `prepare` is byte-reproducible so DVC sees unchanged data as unchanged."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.support.paths import REPO  # noqa: E402
from tinymlops.errors import DataError
from tinymlops.ml.data import registry, split
from tinymlops.ml.data.registry import Dataset
from tinymlops.ml.data.validate import content_hashes, validate_dataset
from tinymlops.settings import DataParams
from tinymlops.util.io import sha256_file

PARAMS = DataParams(test_size=0.2, val_size=0.1)
PREPARED_FILES = ("train.npz", "val.npz", "test.npz", split.META_FILE, split.REPORT_FILE)


def unique_data(counts: tuple[int, ...] = (100, 60, 40), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distinct 4x4 samples (row index baked into the first pixels), classes of the given sizes."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    x = rng.integers(0, 17, (len(y), 4, 4)).astype(np.uint8)
    x[:, 0, 0], x[:, 0, 1] = np.arange(len(y)) // 16, np.arange(len(y)) % 16
    return x, y


def test_same_seed_same_split() -> None:
    x, y = unique_data()
    a = split.split_indices(y, content_hashes(x), PARAMS, seed=42)
    b = split.split_indices(y, content_hashes(x), PARAMS, seed=42)
    assert a.keys() == b.keys() == set(split.SPLITS)
    for name in split.SPLITS:
        np.testing.assert_array_equal(a[name], b[name])


def test_other_seed_other_split() -> None:
    x, y = unique_data()
    a = split.split_indices(y, content_hashes(x), PARAMS, seed=42)
    b = split.split_indices(y, content_hashes(x), PARAMS, seed=43)
    assert not np.array_equal(a["test"], b["test"])
    assert not np.array_equal(a["train"], b["train"])


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_every_row_in_exactly_one_split(seed: int) -> None:
    x, y = unique_data()
    idx = split.split_indices(y, content_hashes(x), PARAMS, seed)
    everything = np.concatenate([idx[name] for name in split.SPLITS])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(y)))
    assert len(idx["test"]) == round(0.2 * len(y))
    assert len(idx["val"]) == round(0.1 * len(y))


def test_split_is_stratified() -> None:
    x, y = unique_data(counts=(100, 60, 40))
    idx = split.split_indices(y, content_hashes(x), PARAMS, seed=7)
    overall = {c: n / len(y) for c, n in Counter(y.tolist()).items()}
    for name in split.SPLITS:
        part = Counter(y[idx[name]].tolist())
        for c, share in overall.items():
            assert abs(part[c] / len(idx[name]) - share) <= 0.03, (name, c)


@pytest.mark.parametrize("seed", [0, 1, 2, 42])
def test_duplicates_stay_in_one_split(seed: int) -> None:
    """40 samples each appear 3 times; every copy of each lands in the same split."""
    x, y = unique_data(counts=(100, 100, 100), seed=seed)
    source = np.arange(40)
    for k in (1, 2):
        x[100 * k + source] = x[source]  # rows 100..139 and 200..239 copy rows 0..39 ...
        y[100 * k + source] = y[source]  # ... with the same label (validate catches conflicts)
    hashes = content_hashes(x)
    assert len(set(hashes)) == len(x) - 80
    idx = split.split_indices(y, hashes, PARAMS, seed)
    where = {int(i): name for name, rows in idx.items() for i in rows}
    for i in source:
        assert where[i] == where[100 + i] == where[200 + i], f"copies of row {i} straddle splits"
    # and the grouping really moved whole groups out of train, not just kept everything there
    assert any(where[i] != "train" for i in source)


# -- prepare -----------------------------------------------------------------------------------------
def digits() -> Dataset:
    return registry.load_dataset(DataParams(), REPO)


def prepare(out_dir: Path, ds: Dataset | None = None) -> split.PreparedMeta:
    """What `stages.prepare` does, on an in-memory dataset; a fresh report each time."""
    ds = ds or digits()
    return split.prepare(ds, validate_dataset(ds, PARAMS.min_class_share), PARAMS, 42, out_dir)


def hashes_of(directory: Path) -> dict[str, str]:
    return {name: sha256_file(directory / name) for name in PREPARED_FILES}


def test_prepare_is_byte_reproducible(tmp_path: Path) -> None:
    meta_a = prepare(tmp_path / "a")
    meta_b = prepare(tmp_path / "b")
    assert meta_a == meta_b
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(PREPARED_FILES)
    assert hashes_of(tmp_path / "a") == hashes_of(tmp_path / "b")


def test_prepare_matches_the_session_pipeline(tmp_path: Path, prepared_dir: Path) -> None:
    """Same data, params and seed through stages.ingest/prepare (the session fixture) → same bytes."""
    prepare(tmp_path / "mine")
    assert hashes_of(tmp_path / "mine") == hashes_of(prepared_dir)


def test_prepared_splits_are_scaled_typed_and_leak_free(tmp_path: Path) -> None:
    meta = prepare(tmp_path / "p")
    assert meta.input_shape == [8, 8, 1] and meta.value_max == 16.0
    assert sum(meta.counts.values()) == 1797
    parts = {name: split.load_split(tmp_path / "p", name) for name in split.SPLITS}
    for name, s in parts.items():
        assert s.x.dtype == np.float32 and s.y.dtype == np.int32
        assert s.x.shape[1:] == (8, 8, 1) and len(s.x) == meta.counts[name]
        assert 0.0 <= s.x.min() and s.x.max() <= 1.0
    seen = [set(content_hashes(s.x)) for s in parts.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert split.load_meta(tmp_path / "p") == meta


def test_prepare_refuses_bad_data_and_keeps_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(out)
    before = hashes_of(out)
    good = digits()
    bad = Dataset(good.name, good.x, good.y.astype(np.float64), good.labels, good.value_max)
    with pytest.raises(DataError, match="'y_dtype'"):
        prepare(out, bad)
    assert hashes_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_too_small_class_is_a_data_error(tmp_path: Path) -> None:
    x, y = unique_data(counts=(60, 60, 2))
    ds = Dataset("tiny", x, y, ("a", "b", "c"), 16.0)
    report = validate_dataset(ds, min_class_share=0.0)  # balance check off: the size check still holds
    assert [c.name for c in report.checks if not c.passed] == ["class_size"]
    with pytest.raises(DataError, match="class_size"):
        split.prepare(ds, report, DataParams(min_class_share=0.0), 42, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_digits_ingest(tmp_path: Path) -> None:
    path = registry.ingest(DataParams(), REPO, tmp_path / "raw")
    assert path == tmp_path / "raw" / registry.RAW_FILE
    ds = registry.read_raw(tmp_path / "raw")
    assert ds.name == "digits"
    assert ds.x.shape == (1797, 8, 8) and ds.x.dtype == np.uint8
    assert ds.y.shape == (1797,) and np.issubdtype(ds.y.dtype, np.integer)
    assert ds.labels == tuple(str(i) for i in range(10))
    assert sorted(np.unique(ds.y).tolist()) == list(range(10))
    assert ds.value_max == 16.0 and int(ds.x.max()) == 16
