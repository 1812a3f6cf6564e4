"""Arena bisection on the real TFLM interpreter, checked against TFLM's own allocation report."""

from __future__ import annotations

import pytest

from tinymlops.device.arena import captured_fd2, fits, min_arena, model_ops, recorded_allocations
from tinymlops.errors import ModelError


def test_bisection_agrees_with_print_allocations(int8_model: bytes) -> None:
    need = min_arena(int8_model)
    recorded = recorded_allocations(int8_model)
    # the recorder counts every allocation with its alignment padding; the last tail allocation's
    # padding may be unused at the exact minimum, so the two agree within one 16-byte alignment step
    assert need <= recorded.total_bytes <= need + 16
    assert recorded.total_bytes == recorded.head_bytes + recorded.tail_bytes
    assert fits(int8_model, need) and not fits(int8_model, need - 1)
    assert any("TfLiteEvalTensor data" in line for line in recorded.lines)


def test_default_model_needs_a_few_kilobytes(int8_model: bytes) -> None:
    assert 4096 < min_arena(int8_model) < 8192  # the digits CNN: ~5.5 KB (the M0+ profile has 4 KB)


def test_tflm_errors_are_captured_not_printed(int8_model: bytes, capfd: pytest.CaptureFixture[str]) -> None:
    assert not fits(int8_model, 1024)
    assert "Failed to" not in capfd.readouterr().err
    from tflite_micro.python.tflite_micro import runtime

    with captured_fd2() as text, pytest.raises(RuntimeError):
        runtime.Interpreter.from_bytes(int8_model, arena_size=1024)
    assert "Failed to" in text[0]  # what the interpreter said went to fd 2, and we have it


def test_ops_from_the_flatbuffer_match_tflite(int8_model: bytes, tanh_model: bytes) -> None:
    from tinymlops.quantize import inspect

    assert model_ops(int8_model) == inspect(int8_model).ops
    assert "TANH" in model_ops(tanh_model)
    with pytest.raises(ModelError, match="not a readable .tflite"):
        model_ops(b"\x00" * 64)
