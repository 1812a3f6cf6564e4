"""The TFLite Micro interpreter in a process of its own (started by tinymlops.device.tflm).

The interpreter is C++: a model built to crash it, or an arena a few bytes below a model's
minimum, can end in SIGSEGV rather than an exception. Here that ends this worker, and the caller
turns the dead worker into a refusal with a reason. Run as a script (no tinymlops import): it needs
numpy and tflite-micro only, and starts in about 0.3 s.

Protocol on stdin/stdout: 8-byte little-endian length + pickle, one request, one reply. The
interpreter's native prints (fd 1 and fd 2) never reach the protocol stream: fd 1 is moved to
/dev/null at start, fd 2 too, except while print_allocations() is captured into a temp file.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import tempfile
from collections import OrderedDict
from typing import Any

import numpy as np
from tflite_micro.python.tflite_micro import runtime as _tflm

_MAX_MODELS = 16
_MAX_INTERPRETERS = 8


def _read_exact(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


def _write(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


class Worker:
    def __init__(self) -> None:
        self.models: OrderedDict[str, bytes] = OrderedDict()
        self.interpreters: OrderedDict[tuple[str, int], Any] = OrderedDict()

    def model(self, req: dict) -> bytes | None:
        sha = req["sha"]
        if req.get("model") is not None:
            self.models[sha] = req["model"]
        if sha in self.models:
            self.models.move_to_end(sha)
            while len(self.models) > _MAX_MODELS:
                self.models.popitem(last=False)
            return self.models[sha]
        return None

    def interpreter(self, sha: str, model: bytes, arena: int) -> Any:
        """The cached interpreter for (model, arena); RuntimeError when TFLM cannot allocate."""
        key = (sha, arena)
        if key not in self.interpreters:
            self.interpreters[key] = _tflm.Interpreter.from_bytes(model, arena_size=arena)
            while len(self.interpreters) > _MAX_INTERPRETERS:
                self.interpreters.popitem(last=False)
        self.interpreters.move_to_end(key)
        return self.interpreters[key]

    def handle(self, req: dict) -> dict:
        model = self.model(req)
        if model is None:
            return {"need_model": True}
        op, arena = req["op"], int(req["arena"])
        try:
            interp = self.interpreter(req["sha"], model, arena)
        except RuntimeError as exc:
            return {"fits": False, "error": _line(exc)}
        if op == "fits":
            return {"fits": True}
        if op == "run":
            outs = []
            try:
                for row in req["x"]:
                    interp.set_input(row, 0)
                    interp.invoke()
                    outs.append(interp.get_output(0).copy())
            except (RuntimeError, ValueError) as exc:
                return {"fits": True, "error": _line(exc), "error_type": type(exc).__name__}
            return {"fits": True, "out": np.stack(outs) if outs else np.zeros((0,), np.int8)}
        if op == "allocations":
            fresh = _tflm.Interpreter.from_bytes(model, arena_size=arena)
            details = fresh.get_input_details(0)
            fresh.set_input(np.zeros(details["shape"], dtype=details["dtype"]), 0)
            fresh.invoke()
            with tempfile.TemporaryFile() as tmp:
                os.dup2(tmp.fileno(), 2)
                try:
                    fresh.print_allocations()
                finally:
                    os.dup2(_DEVNULL, 2)
                tmp.seek(0)
                return {"fits": True, "text": tmp.read().decode(errors="replace")}
        return {"error": f"unknown request {op!r}"}


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_DEVNULL = os.open(os.devnull, os.O_WRONLY)


def main() -> None:
    proto_in, proto_out = os.dup(0), os.dup(1)
    os.dup2(_DEVNULL, 1)  # native prints must never interleave with the protocol
    os.dup2(_DEVNULL, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the worker)
    worker = Worker()
    while True:
        try:
            (size,) = struct.unpack("<Q", _read_exact(proto_in, 8))
            req = pickle.loads(_read_exact(proto_in, size))
        except EOFError:  # the parent went away: so do we
            return
        _write(proto_out, worker.handle(req))


if __name__ == "__main__":
    main()
