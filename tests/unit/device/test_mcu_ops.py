"""Per-op bit-exactness of the firmware runtime against the tflite-micro interpreter, on every
emulated core: hypothesis draws shapes, strides, padding, per-tensor / per-channel quantisation and
inputs (200 cases per op); each single-op model is built directly as a flatbuffer, its TFLM outputs
computed once and compared byte for byte with the emulated firmware's outputs on each core."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from tests.support.tflite_graph import FLOAT32, INT8, INT32, Graph
from tinymlops.device import tflm
from tinymlops.device.image import compile_model
from tinymlops.device.mcu import emulated, run_model

EXAMPLES = int(os.environ.get("TINYMLOPS_OP_EXAMPLES", "200"))  # per op, on every core (fewer: local smoke runs)
CASE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def cores(profiles):
    """One profile per emulated core."""
    chosen = {}
    for p in profiles.values():
        if emulated(p) and p.core not in chosen:
            chosen[p.core] = p
    assert set(chosen) == {"cortex-m0plus", "cortex-m4f", "cortex-m7", "cortex-m33", "rv32imc"}
    return list(chosen.values())


def check(model: bytes, inputs: np.ndarray, cores) -> None:
    reply = tflm.call("run", model, 1 << 18, x=np.ascontiguousarray(inputs))  # rows shaped as the input tensor
    assert reply.get("fits") and "error" not in reply, reply.get("error")
    ref = np.asarray(reply["out"]).reshape(len(inputs), -1)
    image = compile_model(model).data
    for p in cores:
        got = run_model(p, image, inputs).outputs
        assert got.shape == ref.shape, (p.name, got.shape, ref.shape)
        if got.dtype == np.float32:
            same = got.view(np.uint32) == ref.astype(np.float32).view(np.uint32)
        else:
            same = got == ref
        assert same.all(), f"{p.name}: {np.count_nonzero(~same)} of {same.size} output bytes differ from TFLM"


def scale(draw) -> float:
    return draw(st.floats(0.002, 0.2))


def zp(draw) -> int:
    return draw(st.integers(-128, 127))


def inputs(draw, shape, n=2, dtype=np.int8) -> np.ndarray:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.uniform(-3, 3, (n, *shape)).astype(np.float32)
    return rng.integers(-128, 128, (n, *shape), dtype=np.int8)


ACTS = [fb.ActivationFunctionType.NONE, fb.ActivationFunctionType.RELU, fb.ActivationFunctionType.RELU6,
        fb.ActivationFunctionType.RELU_N1_TO_1]  # fmt: skip


def out_size(n, k, s, d, same):
    eff = (k - 1) * d + 1
    return (n + s - 1) // s if same else (n - eff + s) // s


@given(st.data())
@CASE
def test_conv_2d(cores, data):
    d = data.draw
    h, w, ic, oc = d(st.integers(1, 7)), d(st.integers(1, 7)), d(st.integers(1, 6)), d(st.integers(1, 6))
    kh, kw, sh, sw = d(st.integers(1, 3)), d(st.integers(1, 3)), d(st.integers(1, 2)), d(st.integers(1, 2))
    dh, dw = d(st.sampled_from([1, 1, 2])), d(st.sampled_from([1, 1, 2]))
    same = d(st.booleans())
    oh, ow = out_size(h, kh, sh, dh, same), out_size(w, kw, sw, dw, same)
    if oh < 1 or ow < 1:
        same, oh, ow = True, out_size(h, kh, sh, dh, True), out_size(w, kw, sw, dw, True)
    per_channel = d(st.booleans())
    s_in, s_out = scale(d), scale(d) * 4
    ws = np.array([scale(d) for _ in range(oc if per_channel else 1)], np.float32)
    rng = np.random.default_rng(d(st.integers(0, 2**31)))
    g = Graph()
    x = g.tensor([1, h, w, ic], INT8, s_in, zp(d))
    wt = g.tensor([oc, kh, kw, ic], INT8, ws, 0, rng.integers(-127, 128, (oc, kh, kw, ic), dtype=np.int8), qdim=0)
    b = g.tensor([oc], INT32, s_in * np.broadcast_to(ws, (oc,)), 0, rng.integers(-3000, 3000, oc).astype(np.int32))
    y = g.tensor([1, oh, ow, oc], INT8, s_out, zp(d))
    o = fb.Conv2DOptionsT()
    o.padding = fb.Padding.SAME if same else fb.Padding.VALID
    o.strideH, o.strideW, o.dilationHFactor, o.dilationWFactor = sh, sw, dh, dw
    o.fusedActivationFunction = d(st.sampled_from(ACTS))
    g.op("CONV_2D", [x, wt, b], [y], fb.BuiltinOptions.Conv2DOptions, o)
    check(g.build([x], [y]), inputs(d, [1, h, w, ic]), cores)


@given(st.data())
@CASE
def test_depthwise_conv_2d(cores, data):
    d = data.draw
    h, w, ic, dm = d(st.integers(1, 7)), d(st.integers(1, 7)), d(st.integers(1, 9)), d(st.sampled_from([1, 1, 2]))
    oc = ic * dm
    kh, kw, sh, sw = d(st.integers(1, 3)), d(st.integers(1, 3)), d(st.integers(1, 2)), d(st.integers(1, 2))
    dh, dw = d(st.sampled_from([1, 1, 2])), d(st.sampled_from([1, 1, 2]))
    same = d(st.booleans())
    oh, ow = out_size(h, kh, sh, dh, same), out_size(w, kw, sw, dw, same)
    if oh < 1 or ow < 1:
        same, oh, ow = True, out_size(h, kh, sh, dh, True), out_size(w, kw, sw, dw, True)
    per_channel = d(st.booleans())
    s_in, s_out = scale(d), scale(d) * 2
    ws = np.array([scale(d) for _ in range(oc if per_channel else 1)], np.float32)
    rng = np.random.default_rng(d(st.integers(0, 2**31)))
    g = Graph()
    x = g.tensor([1, h, w, ic], INT8, s_in, zp(d))
    wt = g.tensor([1, kh, kw, oc], INT8, ws, 0, rng.integers(-127, 128, (1, kh, kw, oc), dtype=np.int8), qdim=3)
    b = g.tensor([oc], INT32, s_in * np.broadcast_to(ws, (oc,)), 0, rng.integers(-3000, 3000, oc).astype(np.int32))
    y = g.tensor([1, oh, ow, oc], INT8, s_out, zp(d))
    o = fb.DepthwiseConv2DOptionsT()
    o.padding = fb.Padding.SAME if same else fb.Padding.VALID
    o.strideH, o.strideW, o.dilationHFactor, o.dilationWFactor = sh, sw, dh, dw
    o.depthMultiplier = dm
    o.fusedActivationFunction = d(st.sampled_from(ACTS))
    g.op("DEPTHWISE_CONV_2D", [x, wt, b], [y], fb.BuiltinOptions.DepthwiseConv2DOptions, o)
    check(g.build([x], [y]), inputs(d, [1, h, w, ic]), cores)


@given(st.data())
@CASE
def test_fully_connected(cores, data):
    d = data.draw
    batch, depth, units = d(st.integers(1, 3)), d(st.integers(1, 40)), d(st.integers(1, 12))
    s_in, s_w, s_out = scale(d), scale(d), scale(d) * 8
    rng = np.random.default_rng(d(st.integers(0, 2**31)))
    g = Graph()
    x = g.tensor([batch, depth], INT8, s_in, zp(d))
    wt = g.tensor([units, depth], INT8, s_w, 0, rng.integers(-127, 128, (units, depth), dtype=np.int8))
    ins = [x, wt]
    if d(st.booleans()):
        ins.append(g.tensor([units], INT32, np.float32(s_in) * np.float32(s_w), 0,
                            rng.integers(-3000, 3000, units).astype(np.int32)))  # fmt: skip
    else:
        ins.append(-1)
    y = g.tensor([batch, units], INT8, s_out, zp(d))
    o = fb.FullyConnectedOptionsT()
    o.fusedActivationFunction = d(st.sampled_from(ACTS))
    g.op("FULLY_CONNECTED", ins, [y], fb.BuiltinOptions.FullyConnectedOptions, o)
    check(g.build([x], [y]), inputs(d, [batch, depth]), cores)


def _pool(cores, data, name):
    d = data.draw
    h, w, c = d(st.integers(1, 8)), d(st.integers(1, 8)), d(st.integers(1, 5))
    kh, kw, sh, sw = d(st.integers(1, 3)), d(st.integers(1, 3)), d(st.integers(1, 3)), d(st.integers(1, 3))
    same = d(st.booleans())
    oh, ow = out_size(h, kh, sh, 1, same), out_size(w, kw, sw, 1, same)
    if oh < 1 or ow < 1:
        same, oh, ow = True, out_size(h, kh, sh, 1, True), out_size(w, kw, sw, 1, True)
    s, z = scale(d), zp(d)
    g = Graph()
    x = g.tensor([1, h, w, c], INT8, s, z)
    y = g.tensor([1, oh, ow, c], INT8, s, z)
    o = fb.Pool2DOptionsT()
    o.padding = fb.Padding.SAME if same else fb.Padding.VALID
    o.strideH, o.strideW, o.filterHeight, o.filterWidth = sh, sw, kh, kw
    o.fusedActivationFunction = d(st.sampled_from(ACTS[:3]))
    g.op(name, [x], [y], fb.BuiltinOptions.Pool2DOptions, o)
    check(g.build([x], [y]), inputs(d, [1, h, w, c]), cores)


@given(st.data())
@CASE
def test_max_pool_2d(cores, data):
    _pool(cores, data, "MAX_POOL_2D")


@given(st.data())
@CASE
def test_average_pool_2d(cores, data):
    _pool(cores, data, "AVERAGE_POOL_2D")


@given(st.data())
@CASE
def test_softmax(cores, data):
    d = data.draw
    shape = [d(st.integers(1, 3)), d(st.integers(1, 24))]
    g = Graph()
    x = g.tensor(shape, INT8, d(st.floats(0.01, 0.5)), zp(d))
    y = g.tensor(shape, INT8, 1 / 256, -128)
    o = fb.SoftmaxOptionsT()
    o.beta = d(st.sampled_from([1.0, 1.0, 0.5, 2.0]))
    g.op("SOFTMAX", [x], [y], fb.BuiltinOptions.SoftmaxOptions, o)
    check(g.build([x], [y]), inputs(d, shape), cores)


def _broadcast_shapes(d):
    rank = d(st.integers(1, 4))
    out = [d(st.integers(1, 4)) for _ in range(rank)]
    a = [n if d(st.integers(0, 3)) else 1 for n in out]
    b = [n if d(st.integers(0, 3)) else 1 for n in out]
    out = [max(p, q) for p, q in zip(a, b, strict=True)]
    return a, b, out


def _binary(cores, data, name, opt_type, opt):
    d = data.draw
    a_shape, b_shape, out = _broadcast_shapes(d)
    g = Graph()
    a = g.tensor(a_shape, INT8, scale(d), zp(d))
    rng = np.random.default_rng(d(st.integers(0, 2**31)))
    const_b = d(st.booleans())
    b_data = rng.integers(-128, 128, b_shape, dtype=np.int8) if const_b else None
    b = g.tensor(b_shape, INT8, scale(d), zp(d), b_data)
    y = g.tensor(out, INT8, scale(d) * (4 if name == "MUL" else 2), zp(d))
    opt.fusedActivationFunction = d(st.sampled_from(ACTS[:3]))
    g.op(name, [a, b], [y], opt_type, opt)
    if const_b:
        check(g.build([a], [y]), inputs(d, a_shape), cores)
    else:  # two runtime inputs: the second is fixed per case (TFLMRuntime feeds input 0)
        check(_two_input(g, a, b, y, d, b_shape), inputs(d, a_shape), cores)


def _two_input(g, a, b, y, d, b_shape):
    """A second input would need multi-input plumbing; bake it as a constant instead."""
    rng = np.random.default_rng(d(st.integers(0, 2**31)))
    g.buffers[g.tensors[b].buffer].data = np.frombuffer(
        rng.integers(-128, 128, b_shape, dtype=np.int8).tobytes(), np.uint8
    )
    return g.build([a], [y])


@given(st.data())
@CASE
def test_add(cores, data):
    _binary(cores, data, "ADD", fb.BuiltinOptions.AddOptions, fb.AddOptionsT())


@given(st.data())
@CASE
def test_mul(cores, data):
    _binary(cores, data, "MUL", fb.BuiltinOptions.MulOptions, fb.MulOptionsT())


def _unary(cores, data, name, out_scale, out_zp):
    d = data.draw
    shape = [d(st.integers(1, 4)) for _ in range(d(st.integers(1, 4)))]
    g = Graph()
    x = g.tensor(shape, INT8, d(st.floats(0.005, 0.3)), zp(d))
    y = g.tensor(shape, INT8, out_scale, out_zp)
    g.op(name, [x], [y])
    check(g.build([x], [y]), inputs(d, shape), cores)


@given(st.data())
@CASE
def test_logistic(cores, data):
    _unary(cores, data, "LOGISTIC", 1 / 256, -128)


@given(st.data())
@CASE
def test_tanh(cores, data):
    _unary(cores, data, "TANH", 1 / 128, 0)


@given(st.data())
@CASE
def test_mean(cores, data):
    d = data.draw
    shape = [1, d(st.integers(1, 6)), d(st.integers(1, 6)), d(st.integers(1, 6))]
    axes = d(st.sampled_from([[1, 2], [2, 1], [1], [2], [3], [1, 2, 3], [-1]]))
    keep = d(st.booleans())
    norm = sorted({a % 4 for a in axes})
    out = (
        [n for k, n in enumerate(shape) if k not in norm]
        if not keep
        else [1 if k in norm else n for k, n in enumerate(shape)]
    )
    g = Graph()
    s, z = scale(d), zp(d)
    equal = d(st.booleans())
    x = g.tensor(shape, INT8, s, z)
    ax = g.tensor([len(axes)], INT32, None, None, np.array(axes, np.int32))
    y = g.tensor(out, INT8, s if equal else scale(d), z if equal else zp(d))
    o = fb.ReducerOptionsT()
    o.keepDims = keep
    g.op("MEAN", [x, ax], [y], fb.BuiltinOptions.ReducerOptions, o)
    check(g.build([x], [y]), inputs(d, shape), cores)


@given(st.data())
@CASE
def test_pad(cores, data):
    d = data.draw
    shape = [1, d(st.integers(1, 5)), d(st.integers(1, 5)), d(st.integers(1, 4))]
    pads = np.array([[0, 0]] + [[d(st.integers(0, 2)), d(st.integers(0, 2))] for _ in range(3)], np.int32)
    out = [n + int(p.sum()) for n, p in zip(shape, pads, strict=True)]
    s, z = scale(d), zp(d)
    g = Graph()
    x = g.tensor(shape, INT8, s, z)
    p = g.tensor([4, 2], INT32, None, None, pads)
    y = g.tensor(out, INT8, s, z)
    g.op("PAD", [x, p], [y], fb.BuiltinOptions.PadOptions, fb.PadOptionsT())
    check(g.build([x], [y]), inputs(d, shape), cores)


@given(st.data())
@CASE
def test_concatenation(cores, data):
    d = data.draw
    base = [1, d(st.integers(1, 4)), d(st.integers(1, 4)), d(st.integers(1, 4))]
    axis = d(st.sampled_from([1, 2, 3, -1]))
    k = axis % 4
    sizes = [d(st.integers(1, 3)) for _ in range(d(st.integers(2, 3)))]
    s, z = scale(d), zp(d)
    rng = np.random.default_rng(d(st.integers(0, 2**31)))
    g = Graph()
    ins = []
    for i, n in enumerate(sizes):
        shp = list(base)
        shp[k] = n
        const = rng.integers(-128, 128, shp, dtype=np.int8) if i else None
        ins.append(g.tensor(shp, INT8, s, z, const))
    out = list(base)
    out[k] = sum(sizes)
    y = g.tensor(out, INT8, s, z)
    o = fb.ConcatenationOptionsT()
    o.axis = axis
    g.op("CONCATENATION", ins, [y], fb.BuiltinOptions.ConcatenationOptions, o)
    first = list(base)
    first[k] = sizes[0]
    check(g.build([ins[0]], [y]), inputs(d, first), cores)


@given(st.data())
@CASE
def test_quantize(cores, data):
    d = data.draw
    shape = [d(st.integers(1, 4)) for _ in range(d(st.integers(1, 3)))]
    from_float = d(st.booleans())
    g = Graph()
    x = g.tensor(shape, FLOAT32) if from_float else g.tensor(shape, INT8, scale(d), zp(d))
    y = g.tensor(shape, INT8, scale(d), zp(d))
    g.op("QUANTIZE", [x], [y])
    check(g.build([x], [y]), inputs(d, shape, dtype=np.float32 if from_float else np.int8), cores)


@given(st.data())
@CASE
def test_dequantize(cores, data):
    d = data.draw
    shape = [d(st.integers(1, 4)) for _ in range(d(st.integers(1, 3)))]
    g = Graph()
    x = g.tensor(shape, INT8, scale(d), zp(d))
    y = g.tensor(shape, FLOAT32)
    g.op("DEQUANTIZE", [x], [y])
    check(g.build([x], [y]), inputs(d, shape), cores)


@given(st.data())
@CASE
def test_reshape(cores, data):
    d = data.draw
    shape = [d(st.integers(1, 4)) for _ in range(d(st.integers(1, 4)))]
    n = int(np.prod(shape))
    new = d(st.sampled_from([[n], [1, n], [n, 1], list(reversed(shape))]))
    s, z = scale(d), zp(d)
    g = Graph()
    x = g.tensor(shape, INT8, s, z)
    sh = g.tensor([len(new)], INT32, None, None, np.array(new, np.int32))
    y = g.tensor(new, INT8, s, z)
    o = fb.ReshapeOptionsT()
    o.newShape = list(new)
    g.op("RESHAPE", [x, sh], [y], fb.BuiltinOptions.ReshapeOptions, o)
    check(g.build([x], [y]), inputs(d, shape), cores)
