"""What a model needs from TFLite Micro: its ops, and the smallest tensor arena it runs in.

The minimum arena is found by bisection on the real interpreter (allocation either succeeds or it
does not, as on a board), and cross-checked with TFLM's own RecordingMicroAllocator report, which
`print_allocations()` writes to the C-level stderr (fd 2), not to Python's sys.stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

import numpy as np
from pydantic import BaseModel
from tflite_micro.python.tflite_micro import runtime as _tflm
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as _schema

from tinymlops.errors import ModelError

_MAX_ARENA = 64 << 20  # beyond any microcontroller: a model needing more is not a TinyML model
_OP_NAMES = {v: k for k, v in vars(_schema.BuiltinOperator).items() if not k.startswith("_")}


class Allocations(BaseModel):
    """TFLM's RecordingMicroAllocator report, parsed."""

    total_bytes: int
    head_bytes: int
    tail_bytes: int
    lines: list[str]


# fd 2 is process-wide: two threads redirecting it at once (profiles run as a thread pool) would
# leave it pointing at a deleted temp file, so redirections are serialised.
_FD2_LOCK = threading.RLock()
_TFLM_PREFIXES = (
    "Failed",
    "Unable",
    "Arena",
    "Requested",
    "Couldn't",
    "Didn't",
    "Missing",
    "Node",
    "Cannot",
    "Invoke",
    "Tensor",
    "tensorflow/",
    "[RecordingMicroAllocator]",
)


@contextlib.contextmanager
def captured_fd2() -> Iterator[list[str]]:
    """Route the process's fd 2 (where TFLM's C++ code prints) into a temp file; yield a list that
    receives its text when the block ends. Lines that are not TFLM's (another thread logging in
    that millisecond) are passed on to the real stderr."""
    out: list[str] = []
    with _FD2_LOCK, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            out.append(text)
            foreign = [line for line in text.splitlines() if line.strip() and not line.startswith(_TFLM_PREFIXES)]
            if foreign:
                sys.stderr.write("\n".join(foreign) + "\n")


def model_ops(model: bytes) -> list[str]:
    """Builtin op names (e.g. CONV_2D) the model's operators use, read from the flatbuffer."""
    if bytes(model[4:8]) != b"TFL3":  # the flatbuffer file identifier of every .tflite
        raise ModelError("not a readable .tflite flatbuffer (no TFL3 identifier)")
    try:
        m = _schema.Model.GetRootAsModel(bytes(model), 0)
        codes = [m.OperatorCodes(i) for i in range(m.OperatorCodesLength())]
        used: set[str] = set()
        for g in range(m.SubgraphsLength()):
            graph = m.Subgraphs(g)
            for o in range(graph.OperatorsLength()):
                code = codes[graph.Operators(o).OpcodeIndex()]
                builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
                used.add(
                    code.CustomCode().decode() if builtin == _schema.BuiltinOperator.CUSTOM else _OP_NAMES[builtin]
                )
    except Exception as exc:  # a flatbuffer parser fails in many ways on garbage; all mean "not a model"
        raise ModelError(f"not a readable .tflite flatbuffer ({type(exc).__name__})") from None
    return sorted(used)


def fits(model: bytes, arena_bytes: int) -> bool:
    """True when TFLM can allocate the model's tensors in `arena_bytes` (its error text is swallowed)."""
    with captured_fd2():
        try:
            _tflm.Interpreter.from_bytes(bytes(model), arena_size=arena_bytes)
        except RuntimeError:
            return False
    return True


def min_arena(model: bytes, hi: int | None = None) -> int:
    """The smallest arena (bytes) TFLM allocates this model in, by bisection."""
    hi = hi or 1024
    while not fits(model, hi):
        hi *= 2
        if hi > _MAX_ARENA:
            raise ModelError(f"TFLM cannot allocate the model even in a {_MAX_ARENA}-byte arena")
    lo = 0  # invariant: lo does not fit, hi fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(model, mid) else (mid, hi)
    return hi


def recorded_allocations(model: bytes, arena_bytes: int = 1 << 20) -> Allocations:
    """Run one zero input through TFLM and parse its print_allocations() report."""
    with captured_fd2() as text:
        interp = _tflm.Interpreter.from_bytes(bytes(model), arena_size=arena_bytes)
        details = interp.get_input_details(0)
        interp.set_input(np.zeros(details["shape"], dtype=details["dtype"]), 0)
        interp.invoke()
        interp.print_allocations()
    report = text[0]

    def figure(label: str) -> int:
        found = re.search(rf"Arena allocation {label} (\d+) bytes", report)
        if not found:
            raise ModelError(f"print_allocations: no '{label}' figure in TFLM's report")
        return int(found.group(1))

    lines = [line for line in report.splitlines() if line.startswith("[RecordingMicroAllocator]")]
    return Allocations(total_bytes=figure("total"), head_bytes=figure("head"), tail_bytes=figure("tail"), lines=lines)
