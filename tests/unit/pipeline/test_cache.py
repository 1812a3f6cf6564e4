"""The stage cache: a hit reuses, a failed build leaves nothing a later run could trust, keys do
not depend on argument order, and the code fingerprint follows exactly the code it covers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import tinymlops
from tinymlops.pipeline import cache


class BuildFailed(Exception):
    pass


def test_miss_then_hit(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "model.bin").write_bytes(b"weights")

    first, hit = cache.cached_dir(tmp_path, "train", "abc123", build)
    assert not hit and len(calls) == 1
    assert first == tmp_path / "train" / "abc123"
    assert (first / "model.bin").read_bytes() == b"weights"
    assert calls[0] != first  # built in a temp dir, then renamed in

    second, hit = cache.cached_dir(tmp_path, "train", "abc123", build)
    assert hit and second == first and len(calls) == 1


def test_other_key_is_a_miss(tmp_path: Path) -> None:
    def build(out: Path) -> None:
        (out / "f").write_text(out.name)

    a, _ = cache.cached_dir(tmp_path, "train", "k1", build)
    b, hit = cache.cached_dir(tmp_path, "train", "k2", build)
    assert not hit and a != b


def test_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    attempts = 0

    def flaky(out: Path) -> None:
        nonlocal attempts
        attempts += 1
        (out / "model.bin").write_bytes(b"half")
        if attempts == 1:
            raise BuildFailed

    with pytest.raises(BuildFailed):
        cache.cached_dir(tmp_path, "quantize", "k", flaky)
    stage_dir = tmp_path / "quantize"
    assert not (stage_dir / "k").exists()
    assert list(stage_dir.iterdir()) == []  # no temp dir left behind either

    path, hit = cache.cached_dir(tmp_path, "quantize", "k", flaky)
    assert not hit and attempts == 2
    assert (path / ".complete").read_text() == "k"


def test_entry_without_complete_marker_is_rebuilt(tmp_path: Path) -> None:
    """A directory at the key's path that lacks .complete (e.g. copied in by hand) is not trusted."""
    stale = tmp_path / "train" / "k"
    stale.mkdir(parents=True)
    (stale / "model.bin").write_bytes(b"???")

    def build(out: Path) -> None:
        (out / "model.bin").write_bytes(b"fresh")

    path, hit = cache.cached_dir(tmp_path, "train", "k", build)
    assert not hit and (path / "model.bin").read_bytes() == b"fresh"


def test_key_is_order_independent() -> None:
    a = cache.key(data="d1", params={"seed": 1, "epochs": 3}, code="c")
    b = cache.key(code="c", params={"epochs": 3, "seed": 1}, data="d1")
    assert a == b
    assert len(a) == 24 and int(a, 16) >= 0


def test_key_changes_with_any_part() -> None:
    base = cache.key(data="d1", params={"seed": 1}, code="c")
    assert cache.key(data="d2", params={"seed": 1}, code="c") != base
    assert cache.key(data="d1", params={"seed": 2}, code="c") != base
    assert cache.key(data="d1", params={"seed": 1}, code="c2") != base
    assert cache.key(data="d1", params={"seed": 1}) != base


@pytest.fixture
def package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the tinymlops package for code_fingerprint to read."""
    src = Path(tinymlops.__file__).parent
    copy = tmp_path / "tinymlops"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "_PACKAGE", copy)
    return copy


def test_fingerprint_does_not_depend_on_location(package_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copied = cache.code_fingerprint(cache.TRAIN_CODE)
    monkeypatch.setattr(cache, "_PACKAGE", Path(tinymlops.__file__).parent)
    assert cache.code_fingerprint(cache.TRAIN_CODE) == copied


def test_fingerprint_changes_with_code_in_its_parts(package_copy: Path) -> None:
    before = cache.code_fingerprint(cache.TRAIN_CODE)
    train_py = package_copy / "ml" / "model" / "train.py"
    original = train_py.read_text()

    train_py.write_text(original + "\n# a change\n")
    assert cache.code_fingerprint(cache.TRAIN_CODE) != before

    train_py.write_text(original)
    assert cache.code_fingerprint(cache.TRAIN_CODE) == before  # content, not mtime

    params_py = package_copy / "settings" / "params.py"
    params_py.write_text(params_py.read_text() + "\n# x\n")
    assert cache.code_fingerprint(cache.TRAIN_CODE) != before


def test_fingerprint_sees_new_files_in_a_package_part(package_copy: Path) -> None:
    before = cache.code_fingerprint(cache.TRAIN_CODE)
    (package_copy / "ml" / "model" / "extra.py").write_text("X = 1\n")
    assert cache.code_fingerprint(cache.TRAIN_CODE) != before


def test_fingerprint_ignores_code_outside_its_parts(package_copy: Path) -> None:
    train_before = cache.code_fingerprint(cache.TRAIN_CODE)
    quant_before = cache.code_fingerprint(cache.QUANTIZE_CODE)
    (package_copy / "cli" / "__init__.py").write_text("# rewritten\n")
    (package_copy / "ml" / "evaluate.py").write_text("# rewritten\n")
    assert cache.code_fingerprint(cache.TRAIN_CODE) == train_before
    assert cache.code_fingerprint(cache.QUANTIZE_CODE) == quant_before

    (package_copy / "ml" / "quantize.py").write_text("# rewritten\n")
    assert cache.code_fingerprint(cache.TRAIN_CODE) == train_before  # training does not use it
    assert cache.code_fingerprint(cache.QUANTIZE_CODE) != quant_before


def test_every_fingerprinted_part_exists() -> None:
    """A module that moves must move in the key too, or a code change would silently not retrain."""
    for part in {*cache.TRAIN_CODE, *cache.QUANTIZE_CODE}:
        assert (Path(tinymlops.__file__).parent / part).exists(), part
