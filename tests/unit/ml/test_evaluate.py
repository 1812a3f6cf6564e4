"""The arithmetic behind the evaluation report, on crafted arrays with known answers: parity
between two int8 runtimes, accuracy, confusion counts and int8 input (de)quantization."""

from __future__ import annotations

import numpy as np
import pytest

from tinymlops.ml.evaluate import accuracy, confusion_matrix, parity
from tinymlops.ml.inference import dequantize, quantize_input
from tinymlops.ml.quantize import TensorInfo

# The digits model's input: [0, 1] mapped onto the whole int8 range.
INPUT = TensorInfo(name="input", dtype="int8", shape=[1, 8, 8, 1], scale=1 / 255, zero_point=-128)


# -- parity ---------------------------------------------------------------------------------------
def test_parity_exact_values() -> None:
    a = np.array([[10, -5, 3], [0, 1, 2], [127, -128, 0], [-1, 50, 49]], dtype=np.int8)
    b = np.array([[10, -5, 4], [3, 1, 2], [-128, 127, 0], [-1, 50, 47]], dtype=np.int8)
    # argmax a: 0, 2, 0, 1; argmax b: 0, 0, 1, 1 → rows 0 and 3 agree
    p = parity(a, b)
    assert p.n == 4
    assert p.top1_agreement == 0.5
    assert p.max_abs_diff == 255  # |127 − (−128)|: computed wide, not wrapped around in int8


def test_parity_of_identical_outputs() -> None:
    a = np.random.default_rng(0).integers(-128, 128, (20, 10)).astype(np.int8)
    p = parity(a, a.copy())
    assert (p.top1_agreement, p.max_abs_diff, p.n) == (1.0, 0, 20)


def test_parity_small_rounding_difference_keeps_agreement() -> None:
    a = np.array([[-128, 100, -20], [90, -128, -128]], dtype=np.int8)
    b = a + np.array([[1, -1, 0], [0, 1, 0]], dtype=np.int8)
    p = parity(a, b)
    assert p.top1_agreement == 1.0 and p.max_abs_diff == 1


def test_parity_on_empty_outputs() -> None:
    empty = np.zeros((0, 10), dtype=np.int8)
    p = parity(empty, empty)
    assert (p.top1_agreement, p.max_abs_diff, p.n) == (1.0, 0, 0)


def test_parity_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"\(3, 10\) and \(3, 9\)"):
        parity(np.zeros((3, 10), np.int8), np.zeros((3, 9), np.int8))


# -- accuracy / confusion -------------------------------------------------------------------------
def test_accuracy() -> None:
    assert accuracy(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 3])) == 0.75
    assert accuracy(np.array([1, 1]), np.array([1, 1])) == 1.0
    assert accuracy(np.array([], dtype=int), np.array([], dtype=int)) == 0.0


def test_confusion_matrix_counts() -> None:
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2], dtype=np.int32)
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 0, 2], dtype=np.int64)
    cm = confusion_matrix(y, pred, 4)
    expected = np.array(
        [
            [2, 1, 0, 0],  # true 0
            [0, 1, 1, 0],  # true 1
            [1, 0, 3, 0],  # true 2
            [0, 0, 0, 0],  # class 3: never seen, still a row and a column
        ]
    )
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == len(y)
    assert np.trace(cm) / cm.sum() == accuracy(y, pred)


def test_confusion_matrix_counts_repeated_pairs() -> None:
    """np.add.at, not fancy-index assignment: five identical (true, pred) pairs count five."""
    cm = confusion_matrix(np.full(5, 1), np.full(5, 0), 2)
    assert cm.tolist() == [[0, 0], [5, 0]]


# -- (de)quantization -----------------------------------------------------------------------------
def test_quantize_input_hits_every_int8_code_exactly() -> None:
    x = np.arange(256, dtype=np.float32) / 255
    q = quantize_input(x, INPUT)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, np.arange(-128, 128))


def test_round_trip_error_is_at_most_half_a_step() -> None:
    x = np.random.default_rng(1).random((100, 8, 8, 1), dtype=np.float32)
    back = dequantize(quantize_input(x, INPUT), INPUT)
    assert back.shape == x.shape and back.dtype == np.float32
    assert np.abs(back - x).max() <= INPUT.scale / 2 + 1e-6


def test_round_trip_of_digit_levels() -> None:
    """Digits are k/16: each lands within half a step, and distinct levels stay distinct."""
    levels = np.arange(17, dtype=np.float32) / 16
    q = quantize_input(levels, INPUT)
    assert len(np.unique(q)) == 17
    assert np.abs(dequantize(q, INPUT) - levels).max() <= INPUT.scale / 2 + 1e-6


def test_quantize_input_clips_to_int8() -> None:
    x = np.array([-5.0, -0.01, 1.01, 3.0, 1e9], dtype=np.float32)
    q = quantize_input(x, INPUT)
    assert q.dtype == np.int8
    assert q.tolist() == [-128, -128, 127, 127, 127]  # no wrap-around to the other end


def test_dequantize_of_extremes() -> None:
    q = np.array([-128, 127], dtype=np.int8)
    np.testing.assert_allclose(dequantize(q, INPUT), [0.0, 1.0], atol=1e-6)
    other = TensorInfo(name="o", dtype="int8", shape=[1, 10], scale=0.5, zero_point=3)
    np.testing.assert_array_equal(dequantize(np.array([3, 5, -1], np.int8), other), [0.0, 1.0, -2.0])
