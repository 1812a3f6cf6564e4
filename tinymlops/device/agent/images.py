"""The host simulation's stand-in model image ("TMDL"), until firmware/runtime is linked in:

    "TMDL"  arena_bytes u32  n_in u32  n_out u32  weights int8[n_in * n_out]   (little-endian)
    y[j] = clamp_int8((sum_i x[i] * w[i * n_out + j]) >> 7)

`golden` computes the vectors a manifest carries for its self-test, as the pipeline would with
the TFLite reference interpreter.
"""

from __future__ import annotations

import struct

import numpy as np


def toy_model(n_in: int = 16, n_out: int = 4, arena: int = 2048, seed: int = 0) -> bytes:
    w = np.random.default_rng(seed).integers(-128, 128, size=(n_in, n_out), dtype=np.int8)
    return b"TMDL" + struct.pack("<III", arena, n_in, n_out) + w.tobytes()


def run(model: bytes, x: np.ndarray) -> np.ndarray:
    _, n_in, n_out = struct.unpack("<III", model[4:16])
    w = np.frombuffer(model[16:], dtype=np.int8).reshape(n_in, n_out).astype(np.int32)
    acc = x.reshape(-1, n_in).astype(np.int32) @ w
    return np.clip(acc >> 7, -128, 127).astype(np.int8)


def golden(model: bytes, count: int = 4, seed: int = 1):
    """(inputs, expected) int8 arrays shaped (count, n_in) and (count, n_out)."""
    _, n_in, _ = struct.unpack("<III", model[4:16])
    x = np.random.default_rng(seed).integers(-128, 128, size=(count, n_in), dtype=np.int8)
    return x, run(model, x)


def tmdl_runtime(arena_budget: int = 0xFFFFFFFF, fail: list[bool] | None = None):
    """The stand-in runtime's check_image / self_test (sim.c), for the Python device model when it
    is held against the host build: (check(image, arena) -> reason, self_test(image, vectors) ->
    reason). `fail[0]` forces a failing self-test, as SimDevice.force_selftest_fail."""

    def check(image: bytes, arena: int) -> str:
        if len(image) < 16 or image[:4] != b"TMDL":
            return "not_a_model"
        need, n_in, n_out = struct.unpack("<III", image[4:16])
        if n_in == 0 or n_out == 0 or 16 + n_in * n_out != len(image):
            return "not_a_model"
        return "image_unfit" if need > arena_budget or arena > arena_budget else "ok"

    def self_test(image: bytes, vectors) -> str:
        if fail and fail[0]:
            return "selftest_failed"
        if vectors is None:
            return "ok"
        _, n_in, n_out = struct.unpack("<III", image[4:16])
        if int(np.prod(vectors.input_shape)) != n_in or int(np.prod(vectors.output_shape)) != n_out:
            return "selftest_failed"
        x = np.frombuffer(vectors.inputs, np.int8)[: vectors.count * n_in]
        want = np.frombuffer(vectors.expected, np.int8)[: vectors.count * n_out].reshape(-1, n_out)
        got = run(image, x.reshape(-1, n_in)) if vectors.count else want
        worst = int(np.abs(got.astype(np.int32) - want.astype(np.int32)).max()) if vectors.count else 0
        return "ok" if worst <= vectors.tolerance else "selftest_failed"

    return check, self_test


# -- real model images for the emulated firmware (the C runtime, tinymlops.device.image) ----------
def fc_tflite(n_in: int = 16, n_out: int = 4, seed: int = 0) -> bytes:
    """An int8 FULLY_CONNECTED .tflite (n_in → n_out, bias, no activation), built as a flatbuffer
    without the TF converter: a small real model for the agent's tests on the emulated core."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    rng = np.random.default_rng(seed)
    tensors: list = []
    buffers = [fb.BufferT()]

    def tensor(shape, dtype, scale, zp, data=None) -> int:
        t = fb.TensorT()
        t.shape, t.type, t.name = list(shape), dtype, f"t{len(tensors)}"
        q = fb.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = [float(scale)], [int(zp)], 0
        t.quantization = q
        buf = fb.BufferT()
        if data is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        buffers.append(buf)
        t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    s_in, s_w = 0.05, 0.02
    x = tensor([1, n_in], fb.TensorType.INT8, s_in, -3)
    w = tensor([n_out, n_in], fb.TensorType.INT8, s_w, 0, rng.integers(-127, 128, (n_out, n_in), dtype=np.int8))
    b = tensor([n_out], fb.TensorType.INT32, np.float32(s_in) * np.float32(s_w), 0,
               rng.integers(-3000, 3000, n_out).astype(np.int32))  # fmt: skip
    y = tensor([1, n_out], fb.TensorType.INT8, 0.25 * np.sqrt(n_in) / 4, 5)
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [x, w, b], [y]
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT()
    g = fb.SubGraphT()
    g.tensors, g.inputs, g.outputs, g.operators = tensors, [x], [y], [op]
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    m = fb.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers, m.description = 3, [code], [g], buffers, "tinymlops agent test"
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def fc_image(n_in: int = 16, n_out: int = 4, seed: int = 0, count: int = 4):
    """(model image bytes, golden inputs, golden outputs): the image compiled for the C runtime,
    the vectors from the tflite-micro interpreter (the oracle), as the pipeline makes them."""
    from tinymlops.device.image import compile_model
    from tinymlops.device.tflm import TFLMRuntime

    model = fc_tflite(n_in, n_out, seed)
    xs = np.random.default_rng(seed + 1).integers(-128, 128, size=(count, 1, n_in), dtype=np.int8)
    rt = TFLMRuntime(model, 16 * 1024)
    ys = np.stack([np.asarray(rt.invoke(x)).reshape(1, n_out) for x in xs]).astype(np.int8)
    return compile_model(model).data, xs, ys
