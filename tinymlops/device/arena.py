"""What a model needs from TFLite Micro: its ops, and the smallest tensor arena it runs in.

The minimum arena is found by bisection on the real interpreter (allocation either succeeds or it
does not, as on a board), and cross-checked with TFLM's own RecordingMicroAllocator report.
Every probe runs in a TFLM worker process (tinymlops.device.tflm): an arena a few bytes below the
minimum can crash the interpreter instead of refusing, and a crash while probing counts as "does
not fit" there, never as a dead pipeline. A model that keeps crashing it is refused with a reason.
"""

from __future__ import annotations

import re
import threading

from pydantic import BaseModel
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as _schema

from tinymlops.device import tflm
from tinymlops.errors import ModelError

_MAX_ARENA = 64 << 20  # beyond any microcontroller: a model needing more is not a TinyML model
_MAX_CRASHES = 6  # doublings past the recorded figure before a model is refused
_OP_NAMES = {v: k for k, v in vars(_schema.BuiltinOperator).items() if not k.startswith("_")}
_MIN_ARENA_CACHE: dict[str, int] = {}
_CACHE_LOCK = threading.Lock()


class Allocations(BaseModel):
    """TFLM's RecordingMicroAllocator report, parsed."""

    total_bytes: int
    head_bytes: int
    tail_bytes: int
    lines: list[str]


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
                _check_tensor_indices(graph, o)
                code = codes[graph.Operators(o).OpcodeIndex()]
                builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
                used.add(
                    code.CustomCode().decode() if builtin == _schema.BuiltinOperator.CUSTOM else _OP_NAMES[builtin]
                )
    except ModelError:
        raise
    except Exception as exc:  # a flatbuffer parser fails in many ways on garbage; all mean "not a model"
        raise ModelError(f"not a readable .tflite flatbuffer ({type(exc).__name__})") from None
    return sorted(used)


def _check_tensor_indices(graph: _schema.SubGraph, o: int) -> None:
    """Refuse an operator that names a tensor outside its graph's table. TFLM does not check this:
    it reads past the table, and whether that crashes or fails depends on what lies there."""
    op, count = graph.Operators(o), graph.TensorsLength()
    for kind, indices in (("reads", op.InputsAsNumpy()), ("writes", op.OutputsAsNumpy())):
        bad = [int(i) for i in (indices if not isinstance(indices, int) else []) if not -1 <= i < count]
        if bad:
            raise ModelError(f"refused: operator {o} {kind} tensor {bad[0]}, the graph has {count} tensors")


def fits(model: bytes, arena_bytes: int) -> bool:
    """True when TFLM can allocate the model's tensors in `arena_bytes`, probed in a worker
    process; an arena the interpreter crashes on counts as one it does not fit in."""
    try:
        return tflm.fits(model, arena_bytes)
    except tflm.InterpreterCrash:
        return False


def _probe(model: bytes, arena_bytes: int) -> tuple[bool, bool]:
    """(fits, crashed): a crash counts as no fit, and is counted."""
    try:
        return tflm.fits(model, arena_bytes), False
    except tflm.InterpreterCrash:
        return False, True


def min_arena(model: bytes, hi: int | None = None) -> int:
    """The smallest arena (bytes) TFLM allocates this model in, by bisection in worker processes.

    Raises ModelError when no arena up to 64 MiB works, or when the interpreter crashes on the
    model more than a few times (a hostile or broken model), naming the arena of the last crash."""
    from tinymlops.util.io import sha256_bytes

    digest = sha256_bytes(bytes(model))
    with _CACHE_LOCK:
        if digest in _MIN_ARENA_CACHE:
            return _MIN_ARENA_CACHE[digest]
    model_ops(model)  # refuse what is not a flatbuffer before the interpreter sees it
    try:  # TFLM's own count in a roomy arena: the bisection starts just around it
        hint = recorded_allocations(model).total_bytes
    except tflm.ArenaTooSmall:
        hint = 1 << 20
    except tflm.InterpreterCrash as exc:
        raise ModelError(f"refused: {exc}") from None
    hi = hi or hint + 16
    grown = crashes = 0
    while not (probe := _probe(model, hi))[0]:
        hi, grown, crashes = hi * 2, grown + 1, crashes + probe[1]
        if hi > _MAX_ARENA or grown > _MAX_CRASHES and hi > 4 * hint:
            if crashes:
                raise ModelError(f"refused: the TFLM interpreter crashed on {crashes} of {grown} arena probes")
            raise ModelError(f"TFLM cannot allocate the model even in a {hi // 2}-byte arena")
    # Below the minimum the interpreter may crash instead of refusing: that counts as "no fit".
    lo = max(0, hi - 4096)
    if fits(model, lo):
        lo = 0
    while hi - lo > 1:  # invariant: lo does not fit, hi fits
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(model, mid) else (mid, hi)
    smoke(model, hi)
    with _CACHE_LOCK:
        _MIN_ARENA_CACHE[digest] = hi
    return hi


def smoke(model: bytes, arena_bytes: int) -> None:
    """One zero input through the model in `arena_bytes` (isolated): a model that crashes or
    fails the interpreter on invoke is refused here, before any caller relies on it."""
    import numpy as np

    try:
        shape, dtype = tflm.input_signature(model)
        tflm.run(model, np.zeros((1, *shape[1:]), dtype=dtype), arena_bytes)
    except tflm.InterpreterCrash as exc:
        raise ModelError(f"refused: {exc}") from None
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"refused: TFLM fails to run the model ({exc})") from None


def recorded_allocations(model: bytes, arena_bytes: int = 1 << 20) -> Allocations:
    """Run one zero input through TFLM (in a worker) and parse its print_allocations() report."""
    report = tflm.allocations_text(model, arena_bytes)

    def figure(label: str) -> int:
        found = re.search(rf"Arena allocation {label} (\d+) bytes", report)
        if not found:
            raise ModelError(f"print_allocations: no '{label}' figure in TFLM's report")
        return int(found.group(1))

    lines = [line for line in report.splitlines() if line.startswith("[RecordingMicroAllocator]")]
    return Allocations(total_bytes=figure("total"), head_bytes=figure("head"), tail_bytes=figure("tail"), lines=lines)
