"""The real TFLite Micro interpreter (tflite-micro's Python binding) in a fixed tensor arena.

If the arena is too small TFLM refuses to allocate, exactly as it would on the device.
"""

from __future__ import annotations

import numpy as np
from tflite_micro.python.tflite_micro import runtime as _tflm

from tinymlops.errors import ModelError


class ArenaTooSmall(ModelError):
    """TFLM could not allocate the model's tensors in the given arena."""


class TFLMRuntime:
    def __init__(self, model: bytes, arena_bytes: int) -> None:
        self.arena_bytes = arena_bytes
        try:
            self._interp = _tflm.Interpreter.from_bytes(bytes(model), arena_size=arena_bytes)
        except RuntimeError:
            raise ArenaTooSmall(f"TFLM could not allocate the model in a {arena_bytes}-byte arena") from None

    def invoke(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_input(x, 0)
        self._interp.invoke()
        return self._interp.get_output(0).copy()
