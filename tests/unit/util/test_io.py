"""Atomic writes and .npz I/O: a failed write never damages what was there, identical arrays give
identical bytes (so DVC hashes stay put), and unreadable files fail with one line naming them."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tinymlops.errors import DataError
from tinymlops.util.io import atomic_dir, atomic_path, read_npz, sha256_file, write_bytes, write_json, write_npz


class Boom(Exception):
    pass


def listing(directory: Path) -> list[str]:
    """Every entry, hidden temp files included."""
    return sorted(p.name for p in directory.iterdir())


# -- atomic_path ----------------------------------------------------------------------------------
def test_atomic_path_replaces_target_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # nobody sees the new bytes before the rename
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["out.txt"]


def test_atomic_path_keeps_old_target_when_body_raises(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise Boom
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["out.txt"]


def test_atomic_path_creates_nothing_when_body_raises(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise Boom
    assert not target.exists()
    assert listing(target.parent) == []


def test_write_helpers_go_through_atomic_path(tmp_path: Path) -> None:
    write_bytes(tmp_path / "a.bin", b"\x00\x01")
    write_json(tmp_path / "b.json", {"z": 1, "a": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "z": 1\n}\n'  # sorted keys
    assert listing(tmp_path) == ["a.bin", "b.json"]


# -- atomic_dir -----------------------------------------------------------------------------------
def test_atomic_dir_swaps_in_new_contents(tmp_path: Path) -> None:
    target = tmp_path / "stage"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "fresh.txt").write_text("new")
    assert listing(target) == ["fresh.txt"]  # a replacement, not a merge
    assert listing(tmp_path) == ["stage"]


def test_atomic_dir_keeps_old_target_when_body_raises(tmp_path: Path) -> None:
    target = tmp_path / "stage"
    target.mkdir()
    (target / "model.bin").write_bytes(b"good model")
    with pytest.raises(Boom):
        with atomic_dir(target) as tmp:
            (tmp / "model.bin").write_bytes(b"half")
            raise Boom
    assert listing(target) == ["model.bin"]
    assert (target / "model.bin").read_bytes() == b"good model"
    assert listing(tmp_path) == ["stage"]  # no .stage.*.tmp or .stage.old left behind


def test_atomic_dir_creates_nothing_when_body_raises(tmp_path: Path) -> None:
    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "stage") as tmp:
            (tmp / "x").write_text("x")
            raise Boom
    assert listing(tmp_path) == []


# -- write_npz / read_npz -------------------------------------------------------------------------
def sample_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.random((50, 8, 8, 1), dtype=np.float32),
        "y": rng.integers(0, 10, 50).astype(np.int32),
        "labels": np.array([str(i) for i in range(10)]),
    }


def test_write_npz_round_trips(tmp_path: Path) -> None:
    arrays = sample_arrays()
    read = read_npz(write_npz(tmp_path / "a.npz", **arrays))
    assert list(read) == list(arrays)
    for name, array in arrays.items():
        assert read[name].dtype == array.dtype
        np.testing.assert_array_equal(read[name], array)


def _naive_zip(path: Path, arrays: dict[str, np.ndarray]) -> bytes:
    """What a plain zipfile writer does: stamp each entry with the current time."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            entry = io.BytesIO()
            np.lib.format.write_array(entry, array, allow_pickle=False)
            zf.writestr(f"{name}.npy", entry.getvalue())
    return path.read_bytes()


def test_write_npz_is_byte_identical_whatever_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writes of the same arrays, under clocks a year apart, give the same bytes. The control
    (a naive zip writer under the same two clocks) shows the patched clock would otherwise leak in."""
    arrays = sample_arrays()
    clocks = (1_600_000_000.0, 1_600_000_000.0 + 400 * 86_400)
    ours, naive = [], []
    for i, now in enumerate(clocks):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        ours.append(write_npz(tmp_path / f"ours{i}.npz", **arrays).read_bytes())
        naive.append(_naive_zip(tmp_path / f"naive{i}.npz", arrays))
    assert naive[0] != naive[1], "control: the patched clock should reach zip timestamps"
    assert ours[0] == ours[1]


def test_write_npz_overwrites_with_identical_hash(tmp_path: Path) -> None:
    target = tmp_path / "a.npz"
    write_npz(target, **sample_arrays())
    first = sha256_file(target)
    write_npz(target, **sample_arrays())
    assert sha256_file(target) == first


def test_write_npz_differs_when_data_differs(tmp_path: Path) -> None:
    arrays = sample_arrays()
    a = write_npz(tmp_path / "a.npz", **arrays).read_bytes()
    arrays["y"] = arrays["y"].copy()
    arrays["y"][0] += 1
    assert write_npz(tmp_path / "b.npz", **arrays).read_bytes() != a


def _valid_npz_bytes(tmp_path: Path) -> bytes:
    return write_npz(tmp_path / "valid.npz", **sample_arrays()).read_bytes()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


CORRUPTIONS = {
    "garbage_bytes": lambda tmp: bytes(range(256)) * 4,
    "text_file": lambda tmp: b"x,y\n1,2\n3,4\n",
    "empty_file": lambda tmp: b"",
    "truncated_zip": lambda tmp: _valid_npz_bytes(tmp)[:200],
    "plain_npy": lambda tmp: _npy_bytes(),  # a valid .npy, but not an archive of named arrays
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_read_npz_on_corrupt_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "data" / "broken.npz"
    path.parent.mkdir()
    path.write_bytes(CORRUPTIONS[kind](tmp_path))
    with pytest.raises(DataError) as info:
        read_npz(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    assert "not a readable .npz" in message


def test_read_npz_refuses_pickled_object_arrays(tmp_path: Path) -> None:
    """allow_pickle=False: loading a dataset must never execute code from it."""
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="objects.npz") as info:
        read_npz(path)
    assert "\n" not in str(info.value)


def test_read_npz_on_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.npz"
    with pytest.raises(DataError) as info:
        read_npz(path)
    assert str(info.value) == f"{path}: file not found"
