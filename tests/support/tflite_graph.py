"""Build small .tflite models directly as flatbuffers (no TF converter): one op, chosen shapes and
quantisation, for the per-op bit-exactness tests of the firmware runtime."""

from __future__ import annotations

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

INT8, INT32, FLOAT32 = fb.TensorType.INT8, fb.TensorType.INT32, fb.TensorType.FLOAT32


class Graph:
    def __init__(self) -> None:
        self.tensors: list = []
        self.buffers = [fb.BufferT()]
        self.ops: list = []
        self.codes: list[int] = []

    def tensor(self, shape, dtype=INT8, scale=None, zero_point=None, data=None, qdim=0) -> int:
        t = fb.TensorT()
        t.shape = list(shape)
        t.type = dtype
        t.name = f"t{len(self.tensors)}"
        if scale is not None:
            q = fb.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(scale)]
            zp = np.atleast_1d(zero_point if zero_point is not None else 0)
            q.zeroPoint = [int(z) for z in (zp if len(zp) == len(q.scale) else np.repeat(zp, len(q.scale)))]
            q.quantizedDimension = qdim
            t.quantization = q
        buf = fb.BufferT()
        if data is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        self.buffers.append(buf)
        t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, name: str, inputs, outputs, options_type=0, options=None) -> None:
        code = getattr(fb.BuiltinOperator, name)
        if code not in self.codes:
            self.codes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex = self.codes.index(code)
        o.inputs = list(inputs)
        o.outputs = list(outputs)
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        self.ops.append(o)

    def build(self, inputs, outputs) -> bytes:
        g = fb.SubGraphT()
        g.tensors, g.inputs, g.outputs, g.operators = self.tensors, list(inputs), list(outputs), self.ops
        m = fb.ModelT()
        m.version = 3
        codes = []
        for c in self.codes:
            oc = fb.OperatorCodeT()
            oc.builtinCode = c
            oc.deprecatedBuiltinCode = min(c, 127)
            oc.version = 1
            codes.append(oc)
        m.operatorCodes = codes
        m.subgraphs = [g]
        m.buffers = self.buffers
        m.description = "tinymlops single-op test"
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())
