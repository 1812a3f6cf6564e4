"""The real TFLite Micro interpreter (tflite-micro's Python binding) in a fixed tensor arena,
always in a worker process (tflm_worker.py), never in the pipeline's own.

TFLM is C++. Probing an arena a few bytes below a model's minimum, or loading a model built to
crash it, can end in SIGSEGV instead of an exception; in-process that killed the pipeline (and left
its MLflow run RUNNING). Here such a crash ends one worker and comes back as `InterpreterCrash`, a
ModelError with a one-line reason; the next call starts a fresh worker. A worker that does not
answer within the timeout (a model that loops) is killed the same way.

Workers are pooled (one per concurrent caller, kept warm) and cache models by digest and
interpreters by (model, arena), so a call costs a pipe round trip, not an interpreter start.
If the arena is too small TFLM refuses to allocate, exactly as it would on the device.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tinymlops.errors import ModelError
from tinymlops.util.io import sha256_bytes

WORKER = Path(__file__).with_name("tflm_worker.py")
DEFAULT_TIMEOUT = 120.0  # seconds for one request; a batch of test inputs fits well inside
_MAX_IDLE = 4


class ArenaTooSmall(ModelError):
    """TFLM could not allocate the model's tensors in the given arena."""


class InterpreterCrash(ModelError):
    """The interpreter died (a signal) or hung while handling the model."""


def _signal_name(code: int | None) -> str:
    if code is None:
        return "no answer"
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"exit {code}"


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.known: set[str] = set()

    def _send(self, obj: dict) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        assert self.proc.stdin is not None
        self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
        self.proc.stdin.flush()

    def _read(self, n: int, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd, out = self.proc.stdout.fileno(), bytearray()
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return bytes(out)

    def call(self, req: dict, model: bytes, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        for attempt in range(2):
            send_model = req["sha"] not in self.known or attempt
            self._send({**req, "model": model if send_model else None})
            (size,) = struct.unpack("<Q", self._read(8, deadline))
            reply: dict = pickle.loads(self._read(size, deadline))
            self.known.add(req["sha"])
            if not reply.get("need_model"):
                return reply
        raise ModelError("TFLM worker lost the model it was sent")

    def kill(self) -> int | None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()


_IDLE: list[_Worker] = []
_POOL_LOCK = threading.Lock()


@contextlib.contextmanager
def _borrow() -> Iterator[_Worker]:
    with _POOL_LOCK:
        worker = _IDLE.pop() if _IDLE else None
    if worker is None or worker.proc.poll() is not None:
        worker = _Worker()
    healthy = False
    try:
        yield worker
        healthy = True
    finally:
        pooled = False
        if healthy and worker.proc.poll() is None:
            with _POOL_LOCK:
                if len(_IDLE) < _MAX_IDLE:
                    _IDLE.append(worker)
                    pooled = True
        if not pooled:
            worker.close() if healthy else worker.kill()


@atexit.register
def shutdown_workers() -> None:
    with _POOL_LOCK:
        idle = list(_IDLE)
        _IDLE.clear()
    for worker in idle:
        worker.close()


def call(op: str, model: bytes, arena_bytes: int, *, timeout: float = DEFAULT_TIMEOUT, **extra: Any) -> dict:
    """One request to a pooled worker; a dead or silent worker becomes InterpreterCrash."""
    model = bytes(model)
    req = {"op": op, "sha": sha256_bytes(model), "arena": int(arena_bytes), **extra}
    with _borrow() as worker:
        try:
            return worker.call(req, model, timeout)
        except (EOFError, BrokenPipeError, TimeoutError, pickle.UnpicklingError, struct.error) as exc:
            hung = isinstance(exc, TimeoutError)
            code = worker.kill()
            what = f"did not answer within {timeout:g} s" if hung else f"crashed ({_signal_name(code)})"
            raise InterpreterCrash(
                f"the TFLM interpreter {what} on {op} of this model in a {arena_bytes}-byte arena"
            ) from None


def fits(model: bytes, arena_bytes: int, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True when TFLM allocates the model in `arena_bytes`. A crash raises InterpreterCrash."""
    return bool(call("fits", model, arena_bytes, timeout=timeout)["fits"])


def run(model: bytes, xq: np.ndarray, arena_bytes: int, *, timeout: float = DEFAULT_TIMEOUT) -> np.ndarray:
    """int8 inputs (N, ...) → int8 outputs (N, K), one sample at a time as a device would."""
    rows = np.ascontiguousarray(xq)[:, None]
    out = _run_rows(model, rows, arena_bytes, timeout)
    return out[:, 0] if len(out) else np.zeros((0, 0), np.int8)


def _run_rows(model: bytes, rows: np.ndarray, arena_bytes: int, timeout: float) -> np.ndarray:
    reply = call("run", model, arena_bytes, x=rows, timeout=timeout)
    if not reply.get("fits", False):
        raise ArenaTooSmall(f"TFLM could not allocate the model in a {arena_bytes}-byte arena")
    if "error" in reply:
        kind = ValueError if reply.get("error_type") == "ValueError" else RuntimeError
        raise kind(reply["error"])
    return np.asarray(reply["out"])


def allocations_text(model: bytes, arena_bytes: int) -> str:
    """TFLM's print_allocations() report after one zero input, as text."""
    reply = call("allocations", model, arena_bytes)
    if not reply.get("fits", False):
        raise ArenaTooSmall(f"TFLM could not allocate the model in a {arena_bytes}-byte arena")
    return str(reply["text"])


def input_signature(model: bytes) -> tuple[list[int], str]:
    """(shape, numpy dtype name) of the model's first input, read from the flatbuffer."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    try:
        m = schema.Model.GetRootAsModel(bytes(model), 0)
        graph = m.Subgraphs(0)
        tensor = graph.Tensors(graph.Inputs(0))
        shape = [int(v) for v in tensor.ShapeAsNumpy()]
        types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        name = types[tensor.Type()].lower()
    except Exception as exc:  # garbage flatbuffers fail in many ways
        raise ModelError(f"not a readable .tflite flatbuffer ({type(exc).__name__})") from None
    return shape, name if name in ("float32", "int8", "uint8", "int16", "int32") else "int8"


class TFLMRuntime:
    """One model in one arena; construction refuses (ArenaTooSmall) exactly when TFLM would."""

    def __init__(self, model: bytes, arena_bytes: int) -> None:
        self.model, self.arena_bytes = bytes(model), arena_bytes
        if not fits(self.model, arena_bytes):
            raise ArenaTooSmall(f"TFLM could not allocate the model in a {arena_bytes}-byte arena")

    @property
    def input_shape(self) -> list[int]:
        return input_signature(self.model)[0]

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """One input shaped as the model's input tensor (batch 1) → its output tensor."""
        return _run_rows(self.model, np.asarray(x)[None], self.arena_bytes, DEFAULT_TIMEOUT)[0]

    def invoke_batch(self, xq: np.ndarray) -> np.ndarray:
        return run(self.model, xq, self.arena_bytes)
