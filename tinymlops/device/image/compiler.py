"""The model compiler: an int8 `.tflite` -> a model image the firmware runtime (firmware/runtime)
runs from a flash model slot.

What the runtime needs at run time is resolved here, once: tensor shapes and strides, padding,
fused-activation clamps, per-channel multipliers and shifts, the 256-entry tables of the element-wise
ops and SOFTMAX's exp() table, and an offline memory plan of the activations (plan.py). Anything the
runtime cannot run bit-exactly with the tflite-micro interpreter is refused with one line naming the
op and the tensor.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from tinymlops.device.image import fixedpoint as fx
from tinymlops.device.image import format as F
from tinymlops.device.image.plan import Buffer, align, plan
from tinymlops.errors import ModelError, UnsupportedModel

_BUILTIN_NAMES = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
_ACT = fb.ActivationFunctionType


class TensorInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    dtype: str
    shape: list[int]
    scale: float
    zero_point: int
    bytes: int
    arena_offset: int


class ModelImage(BaseModel):
    """What a model image is: the summary the manifest and the HIL record."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    format_version: int
    digest: str  # sha256 of the image bytes, hex
    size: int  # image bytes (goes into the model slot)
    arena_bytes: int  # RAM the memory plan needs
    ops: list[str]  # op names in execution order
    n_tensors: int
    weights_bytes: int  # constant data (weights, biases, multipliers, tables)
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    tflite_size: int


@dataclass
class Compiled:
    data: bytes
    image: ModelImage


@dataclass
class _Const:
    """A parameter that is an offset into the data blob (fixed up when the image is packed)."""

    blob_offset: int


@dataclass
class _Builder:
    blob: bytearray = field(default_factory=bytearray)

    def add(self, data: bytes | np.ndarray, alignment: int = 4) -> _Const:
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        pad = (-len(self.blob)) % alignment
        self.blob.extend(b"\0" * pad)
        off = len(self.blob)
        self.blob.extend(raw)
        return _Const(off)


def _f32(x: float) -> float:
    return float(np.float32(x))


def _f32_bits(x: float) -> int:
    return struct.unpack("<i", struct.pack("<f", np.float32(x)))[0]


class _Graph:
    def __init__(self, model: bytes) -> None:
        if bytes(model[4:8]) != b"TFL3":
            raise UnsupportedModel("not a .tflite flatbuffer (no TFL3 identifier)")
        try:
            m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(bytes(model), 0))
        except Exception as exc:  # noqa: BLE001 - a broken flatbuffer fails in many ways
            raise UnsupportedModel(f"not a readable .tflite flatbuffer ({type(exc).__name__})") from None
        if len(m.subgraphs or []) != 1:
            raise UnsupportedModel(f"model has {len(m.subgraphs or [])} subgraphs; the runtime runs exactly one")
        self.m = m
        self.g = m.subgraphs[0]
        self.tensors = self.g.tensors
        self.codes = m.operatorCodes

    def name(self, t: int) -> str:
        raw = self.tensors[t].name
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def shape(self, t: int) -> list[int]:
        s = self.tensors[t].shape
        return [int(d) for d in (s if s is not None else [])]

    def dtype(self, t: int) -> int:
        return int(self.tensors[t].type)

    def type_name(self, t: int) -> str:
        return _TYPE_NAMES.get(self.dtype(t), str(self.dtype(t)))

    def data(self, t: int) -> np.ndarray | None:
        buf = self.m.buffers[self.tensors[t].buffer]
        if buf is None or buf.data is None or len(buf.data) == 0:
            return None
        return np.asarray(buf.data, dtype=np.uint8)

    def quant(self, t: int) -> tuple[list[float], list[int], int]:
        q = self.tensors[t].quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return [], [], 0
        zps = [int(z) for z in (q.zeroPoint if q.zeroPoint is not None else [0] * len(q.scale))]
        return [float(s) for s in q.scale], zps, int(q.quantizedDimension)

    def op_name(self, op) -> str:
        code = self.codes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if builtin == fb.BuiltinOperator.CUSTOM:
            cc = code.customCode
            return "CUSTOM:" + (cc.decode() if isinstance(cc, bytes) else str(cc))
        return _BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _elems(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _pad4(shape: list[int], what: str) -> list[int]:
    if len(shape) > 4:
        raise UnsupportedModel(f"{what}: rank {len(shape)} > 4")
    return [1] * (4 - len(shape)) + list(shape)


def _padding(padding: int, stride: int, dilation: int, in_size: int, k: int, out_size: int) -> int:
    eff = (k - 1) * dilation + 1
    if padding == fb.Padding.VALID:
        return 0
    total = max((out_size - 1) * stride + eff - in_size, 0)
    return total // 2


class _Compiler:
    def __init__(self, model: bytes, supported: set[str] | None) -> None:
        self.src = model
        self.g = _Graph(model)
        self.supported = supported
        self.blob = _Builder()
        self.ops: list[tuple[int, list]] = []  # (opcode, params)
        self.op_names: list[str] = []
        self.op_io: list[tuple[list[int], list[int]]] = []  # tensor ids read / written per op
        self.scratch: dict[int, int] = {}  # scratch tensor id -> bytes
        self.extra_tensors: list[tuple[str, list[int], int]] = []  # scratch tensors (name, shape, dtype)
        self.alias: dict[int, int] = {}
        self.windows: dict[int, tuple[int, ...]] = {}  # op index -> sliding-window geometry (overlap planning)

    # ---- checks -------------------------------------------------------------------------------
    def fail(self, op: str, t: int | None, why: str) -> UnsupportedModel:
        where = f" tensor '{self.g.name(t)}'" if t is not None and t >= 0 else ""
        return UnsupportedModel(f"{op}{where}: {why}")

    def need_int8(self, op: str, t: int) -> None:
        if self.g.dtype(t) == fb.TensorType.FLOAT32:
            raise self.fail(op, t, "is FLOAT32: a float model; the runtime runs full-integer int8 models only")
        if self.g.dtype(t) != fb.TensorType.INT8:
            raise self.fail(op, t, f"is {self.g.type_name(t)}; the runtime supports int8 tensors only")

    def qparams(self, op: str, t: int) -> tuple[float, int]:
        scales, zps, _ = self.g.quant(t)
        if len(scales) != 1:
            raise self.fail(op, t, "needs per-tensor quantization (one scale)")
        return scales[0], zps[0]

    def act_range(self, op: str, act: int, t: int) -> tuple[int, int]:
        scale, zp = self.qparams(op, t)

        def q(f: float) -> int:
            return zp + int(fx.round_away(float(np.float32(f) / np.float32(scale))))

        if act == _ACT.NONE:
            return -128, 127
        if act == _ACT.RELU:
            return max(-128, q(0.0)), 127
        if act == _ACT.RELU6:
            return max(-128, q(0.0)), min(127, q(6.0))
        if act == _ACT.RELU_N1_TO_1:
            return max(-128, q(-1.0)), min(127, q(1.0))
        raise self.fail(op, t, f"fused activation {act} is not supported")

    def const(self, op: str, t: int, dtype, what: str) -> np.ndarray:
        data = self.g.data(t)
        if data is None:
            raise self.fail(op, t, f"{what} must be a constant tensor")
        return np.frombuffer(data.tobytes(), dtype=dtype).reshape(self.g.shape(t))

    # ---- lowering -----------------------------------------------------------------------------
    def emit(self, name: str, params: list, reads: list[int], writes: list[int]) -> None:
        self.ops.append((F.OPS[name], params))
        self.op_names.append(name)
        self.op_io.append((reads, writes))

    def lower(self) -> None:
        for op in self.g.g.operators:
            name = self.g.op_name(op)
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            if name not in F.OPS:
                first = ins[0] if ins else None
                raise self.fail(name, first, "op is not in the runtime's op set")
            if self.supported is not None and name not in self.supported:
                raise self.fail(name, ins[0] if ins else None, "op is not registered by this device's firmware")
            getattr(self, "op_" + name.lower())(name, op, ins, outs)

    def _conv_common(self, name: str, op, ins, outs, depthwise: bool) -> None:
        x, w, y = ins[0], ins[1], outs[0]
        b = ins[2] if len(ins) > 2 else -1
        for t in (x, w, y):
            self.need_int8(name, t)
        o = op.builtinOptions
        n, ih, iw, ic = _pad4(self.g.shape(x), name)
        on, oh, ow, oc = self.g.shape(y)
        if depthwise:
            _, kh, kw, wc = self.g.shape(w)
            if wc != oc or oc % ic:
                raise self.fail(name, w, f"filter channels {wc} do not match output {oc} / input {ic}")
            dm = oc // ic
        else:
            wo, kh, kw, wi = self.g.shape(w)
            if wi != ic or wo != oc:
                raise self.fail(name, w, f"grouped or mismatched filter {self.g.shape(w)} for input channels {ic}")
            dm = 1
        in_scale, in_zp = self.qparams(name, x)
        out_scale, out_zp = self.qparams(name, y)
        w_scales, w_zps, _ = self.g.quant(w)
        if any(z != 0 for z in w_zps):
            raise self.fail(name, w, "filter zero points must be 0 (symmetric int8 weights)")
        if len(w_scales) not in (1, oc):
            raise self.fail(name, w, f"{len(w_scales)} filter scales for {oc} output channels")
        mult = np.empty(oc, np.int32)
        shift = np.empty(oc, np.int32)
        for c in range(oc):
            s = w_scales[c] if len(w_scales) == oc else w_scales[0]
            mult[c], shift[c] = fx.quantize_multiplier(float(in_scale) * float(s) / float(out_scale))
        weights = self.const(name, w, np.int8, "filter")
        bias_c: _Const | int = -1
        if b >= 0:
            if self.g.dtype(b) != fb.TensorType.INT32:
                raise self.fail(name, b, f"bias is {self.g.type_name(b)}; int32 bias expected")
            bias_c = self.blob.add(self.const(name, b, np.int32, "bias").astype("<i4"))
        lo, hi = self.act_range(name, int(o.fusedActivationFunction), y)
        sh, sw = int(o.strideH), int(o.strideW)
        dh, dw = int(o.dilationHFactor or 1), int(o.dilationWFactor or 1)
        ph = _padding(int(o.padding), sh, dh, ih, kh, oh)
        pw = _padding(int(o.padding), sw, dw, iw, kw, ow)
        params = [
            x, y, self.blob.add(weights), bias_c, self.blob.add(mult.astype("<i4")), self.blob.add(shift.astype("<i4")),
            n, ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, dh, dw, ph, pw, -in_zp, out_zp, lo, hi, dm,
        ]  # fmt: skip
        self.emit(name, params, [x], [y])
        self.windows[len(self.ops) - 1] = (n, ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, dh, dw, ph, pw)

    def op_conv_2d(self, name, op, ins, outs):
        self._conv_common(name, op, ins, outs, depthwise=False)

    def op_depthwise_conv_2d(self, name, op, ins, outs):
        self._conv_common(name, op, ins, outs, depthwise=True)

    def op_fully_connected(self, name, op, ins, outs):
        x, w, y = ins[0], ins[1], outs[0]
        b = ins[2] if len(ins) > 2 else -1
        for t in (x, w, y):
            self.need_int8(name, t)
        o = op.builtinOptions
        if o is not None and int(o.weightsFormat) != 0:
            raise self.fail(name, w, "shuffled weights format is not supported")
        units, depth = self.g.shape(w)
        total = _elems(self.g.shape(x))
        if total % depth:
            raise self.fail(name, x, f"{total} input elements are not a multiple of depth {depth}")
        in_scale, in_zp = self.qparams(name, x)
        out_scale, out_zp = self.qparams(name, y)
        w_scales, w_zps, _ = self.g.quant(w)
        if len(w_scales) == 1:
            m, s = fx.quantize_multiplier(float(np.float32(in_scale) * np.float32(w_scales[0])) / float(out_scale))
            mult, shift, per_channel = np.array([m], np.int32), np.array([s], np.int32), 0
        elif len(w_scales) == units:
            if any(z != 0 for z in w_zps):
                raise self.fail(name, w, "per-channel filter zero points must be 0")
            pairs = [fx.quantize_multiplier(float(in_scale) * float(s) / float(out_scale)) for s in w_scales]
            mult = np.array([p[0] for p in pairs], np.int32)
            shift = np.array([p[1] for p in pairs], np.int32)
            per_channel = 1
        else:
            raise self.fail(name, w, f"{len(w_scales)} filter scales for {units} units")
        bias_c: _Const | int = -1
        if b >= 0:
            if self.g.dtype(b) != fb.TensorType.INT32:
                raise self.fail(name, b, f"bias is {self.g.type_name(b)}; int32 bias expected")
            bias_c = self.blob.add(self.const(name, b, np.int32, "bias").astype("<i4"))
        lo, hi = self.act_range(name, int(o.fusedActivationFunction) if o is not None else 0, y)
        params = [
            x, y, self.blob.add(self.const(name, w, np.int8, "filter")), bias_c,
            self.blob.add(mult.astype("<i4")), self.blob.add(shift.astype("<i4")),
            total // depth, depth, units, -in_zp, -(w_zps[0] if per_channel == 0 else 0), out_zp, lo, hi, per_channel,
        ]  # fmt: skip
        self.emit(name, params, [x], [y])

    def _pool(self, name, op, ins, outs):
        x, y = ins[0], outs[0]
        self.need_int8(name, x)
        self.need_int8(name, y)
        o = op.builtinOptions
        n, ih, iw, c = _pad4(self.g.shape(x), name)
        _, oh, ow, _ = self.g.shape(y)
        kh, kw, sh, sw = int(o.filterHeight), int(o.filterWidth), int(o.strideH), int(o.strideW)
        ph = _padding(int(o.padding), sh, 1, ih, kh, oh)
        pw = _padding(int(o.padding), sw, 1, iw, kw, ow)
        lo, hi = self.act_range(name, int(o.fusedActivationFunction), y)
        self.emit(name, [x, y, n, ih, iw, c, oh, ow, kh, kw, sh, sw, ph, pw, lo, hi], [x], [y])
        self.windows[len(self.ops) - 1] = (n, ih, iw, c, oh, ow, c, kh, kw, sh, sw, 1, 1, ph, pw)

    def op_max_pool_2d(self, name, op, ins, outs):
        self._pool(name, op, ins, outs)

    def op_average_pool_2d(self, name, op, ins, outs):
        self._pool(name, op, ins, outs)

    def op_softmax(self, name, op, ins, outs):
        x, y = ins[0], outs[0]
        self.need_int8(name, x)
        self.need_int8(name, y)
        in_scale, _ = self.qparams(name, x)
        out_scale, out_zp = self.qparams(name, y)
        if out_zp != -128 or abs(out_scale - 1 / 256) > 1e-8:
            raise self.fail(name, y, "int8 softmax output must have scale 1/256 and zero point -128")
        shape = self.g.shape(x)
        depth = shape[-1]
        lut = fx.softmax_table(float(op.builtinOptions.beta), in_scale)
        self.emit(name, [x, y, _elems(shape) // depth, depth, self.blob.add(lut.astype("<i4"))], [x], [y])

    def _elementwise(self, name, op, ins, outs):
        a, b, y = ins[0], ins[1], outs[0]
        for t in (a, b, y):
            self.need_int8(name, t)
        out = _pad4(self.g.shape(y), name)
        strides = []
        for t in (a, b):
            s = _pad4(self.g.shape(t), name)
            contiguous = [s[1] * s[2] * s[3], s[2] * s[3], s[3], 1]
            for k in range(4):
                if s[k] != out[k] and s[k] != 1:
                    raise self.fail(name, t, f"shape {self.g.shape(t)} does not broadcast to {self.g.shape(y)}")
            strides.append([0 if s[k] == 1 and out[k] != 1 else contiguous[k] for k in range(4)])
        s1, z1 = self.qparams(name, a)
        s2, z2 = self.qparams(name, b)
        so, zo = self.qparams(name, y)
        o = op.builtinOptions
        lo, hi = self.act_range(name, int(o.fusedActivationFunction) if o is not None else 0, y)
        if name == "ADD":
            left = 20
            twice_max = 2 * float(max(np.float32(s1), np.float32(s2)))
            m1, sh1 = fx.quantize_multiplier(s1 / twice_max)
            m2, sh2 = fx.quantize_multiplier(s2 / twice_max)
            mo, sho = fx.quantize_multiplier(twice_max / ((1 << left) * so))
        else:
            left, m1, sh1, m2, sh2 = 0, 0, 0, 0, 0
            mo, sho = fx.quantize_multiplier(s1 * s2 / so)
        params = [a, b, y, *out, *strides[0], *strides[1], -z1, -z2, zo, lo, hi, left, m1, sh1, m2, sh2, mo, sho]
        self.emit(name, params, [a, b], [y])

    def op_add(self, name, op, ins, outs):
        self._elementwise(name, op, ins, outs)

    def op_mul(self, name, op, ins, outs):
        self._elementwise(name, op, ins, outs)

    def _table(self, name, x, y, table: np.ndarray, out_bytes: int):
        self.emit(name, [x, y, _elems(self.g.shape(x)), self.blob.add(table), out_bytes], [x], [y])

    def op_logistic(self, name, op, ins, outs):
        x, y = ins[0], outs[0]
        self.need_int8(name, x)
        self.need_int8(name, y)
        s, z = self.qparams(name, x)
        so, zo = self.qparams(name, y)
        if zo != -128 or abs(so - 1 / 256) > 1e-8:
            raise self.fail(name, y, "int8 logistic output must have scale 1/256 and zero point -128")
        self._table(name, x, y, fx.logistic_table(s, z), 1)

    def op_tanh(self, name, op, ins, outs):
        x, y = ins[0], outs[0]
        self.need_int8(name, x)
        self.need_int8(name, y)
        s, z = self.qparams(name, x)
        so, zo = self.qparams(name, y)
        if zo != 0 or abs(so - 1 / 128) > 1e-8:
            raise self.fail(name, y, "int8 tanh output must have scale 1/128 and zero point 0")
        self._table(name, x, y, fx.tanh_table(s, z), 1)

    def op_quantize(self, name, op, ins, outs):
        x, y = ins[0], outs[0]
        self.need_int8(name, y)
        so, zo = self.qparams(name, y)
        if self.g.dtype(x) == fb.TensorType.FLOAT32:
            self.emit(name, [x, y, _elems(self.g.shape(x)), _f32_bits(so), zo], [x], [y])
            return
        self.need_int8(name, x)
        s, z = self.qparams(name, x)
        self._table(name, x, y, fx.requantize_table(s, z, so, zo), 1)

    def op_dequantize(self, name, op, ins, outs):
        x, y = ins[0], outs[0]
        self.need_int8(name, x)
        if self.g.dtype(y) != fb.TensorType.FLOAT32:
            raise self.fail(name, y, f"dequantize to {self.g.type_name(y)}; float32 expected")
        s, z = self.qparams(name, x)
        self._table(name, x, y, fx.dequantize_table(s, z).astype("<f4"), 4)

    def op_mean(self, name, op, ins, outs):
        x, axis_t, y = ins[0], ins[1], outs[0]
        self.need_int8(name, x)
        self.need_int8(name, y)
        shape = self.g.shape(x)
        d = _pad4(shape, name)
        lead = 4 - len(shape)
        axes = sorted(
            {(int(a) + len(shape)) % len(shape) + lead for a in self.const(name, axis_t, np.int32, "axis").ravel()}
        )
        kept = [k for k in range(4) if k not in axes]
        ostride = [0, 0, 0, 0]
        acc = 1
        for k in reversed(kept):
            ostride[k] = acc
            acc *= d[k]
        n_out = acc
        n_axis = _elems([d[k] for k in axes])
        s, z = self.qparams(name, x)
        so, zo = self.qparams(name, y)
        m, sh = fx.quantize_multiplier(float(s) / float(so))
        # TFLite's QuantizedMeanOrSum (what the tflite-micro interpreter runs for int8, equal scales
        # included): 1/n folded into the multiplier. (Mode 1, a truncating integer mean, is what some
        # TFLM versions use for equal quantisation; the runtime keeps it, the compiler does not emit it.)
        mode, bias = 2, z * n_axis
        k = min(n_axis.bit_length() - 1, 32, 31 + sh)
        m, sh = (m << k) // n_axis, sh - k
        scale = np.float32(s) / np.float32(so)
        scratch = len(self.g.tensors) + len(self.extra_tensors)
        self.extra_tensors.append((f"{self.g.name(y)}/sum", [n_out], F.T_INT32))
        params = [x, y, scratch, *d, *ostride, n_out, n_axis, mode, _f32_bits(float(scale)), bias, zo, m, sh]
        self.emit(name, params, [x], [y, scratch])

    def op_pad(self, name, op, ins, outs):
        x, p, y = ins[0], ins[1], outs[0]
        self.need_int8(name, x)
        self.need_int8(name, y)
        if len(ins) > 2:
            raise self.fail(name, ins[2], "PADV2-style constant values are not supported")
        pads = self.const(name, p, np.int32, "paddings").reshape(-1, 2)
        i4 = _pad4(self.g.shape(x), name)
        o4 = _pad4(self.g.shape(y), name)
        before = [0] * (4 - len(pads)) + [int(v) for v in pads[:, 0]]
        _, zo = self.qparams(name, y)
        self.emit(name, [x, y, *i4, *before, *o4, zo], [x], [y])

    def op_concatenation(self, name, op, ins, outs):
        y = outs[0]
        self.need_int8(name, y)
        qo = self.qparams(name, y)
        shape = self.g.shape(y)
        axis = int(op.builtinOptions.axis) % len(shape)
        if int(op.builtinOptions.fusedActivationFunction) != 0:
            raise self.fail(name, y, "fused activation on CONCATENATION is not supported")
        params = [y, _elems(shape[:axis]), _elems(shape[axis:]), len(ins)]
        for t in ins:
            self.need_int8(name, t)
            if self.qparams(name, t) != qo:
                raise self.fail(name, t, "inputs must share the output's scale and zero point")
            params += [t, _elems(self.g.shape(t)[axis:])]
        self.emit(name, params, list(ins), [y])

    def op_reshape(self, name, op, ins, outs):
        x, y = ins[0], outs[0]
        self.need_int8(name, x)
        self.need_int8(name, y)
        if self.g.data(x) is None:
            self.alias[y] = self.alias.get(x, x)  # same bytes, same buffer: the copy becomes a no-op
        self.emit(name, [x, y, _elems(self.g.shape(x))], [x], [y])

    # ---- in-place ops ---------------------------------------------------------------------------
    _IN_PLACE = {"ADD", "MUL", "LOGISTIC", "TANH"}  # out[i] depends on in[i] only, read before written

    def _in_place(self, n_graph: int, inputs: set[int], outputs: set[int], root) -> None:  # noqa: ANN001
        """Let an element-wise op write its output over an input that dies at this op (same shape,
        same bytes): a residual ADD then needs two buffers, not three. The kernels walk the output
        in order and read element i of that input before writing element i (firmware/runtime)."""
        n_ops = len(self.ops)
        last: dict[int, int] = {}
        for i, (reads, _) in enumerate(self.op_io):
            for t in reads:
                last[t] = max(last.get(t, -1), i)
        for t in outputs:
            last[t] = n_ops
        members = set(last) | {t for _, w in self.op_io for t in w} | inputs

        def arena(t: int) -> bool:
            return t >= n_graph or self.g.data(t) is None

        def group_last(r: int) -> int:
            return max((last.get(t, -1) for t in members if root(t) == r), default=-1)

        def shape(t: int) -> list[int]:
            return self.g.shape(t) if t < n_graph else list(self.extra_tensors[t - n_graph][1])

        for i, (name, (reads, writes)) in enumerate(zip(self.op_names, self.op_io, strict=True)):
            if name not in self._IN_PLACE or len(writes) != 1:
                continue
            y = writes[0]
            if y in self.alias or y in inputs or not arena(y) or y >= n_graph:
                continue
            if name == "LOGISTIC" or name == "TANH":
                reads = reads[:1]
            for x in reads:
                if not arena(x) or x >= n_graph or self.g.dtype(x) != self.g.dtype(y):
                    continue
                if _elems(shape(x)) != _elems(shape(y)) or _pad4(shape(x), name) != _pad4(shape(y), name):
                    continue  # a broadcast operand is read at other indices
                r = root(x)
                if r == root(y) or group_last(r) != i:
                    continue
                self.alias[y] = r
                break

    def _overlap_groups(self, life, sizes, root, outputs: set[int], n_graph: int) -> list[dict[int, int]]:  # noqa: ANN001
        """Buffers that share arena space in a fixed arrangement: {root: offset relative to the group}.
        A sliding-window op (CONV_2D, DEPTHWISE_CONV_2D, pools) whose input dies at it writes its
        output starting `shift` bytes below its input, so the two overlap: the kernels write output
        pixel p only after the lowest input byte any later pixel still reads (window_shift)."""
        group: dict[int, int] = {r: k for k, r in enumerate(life)}
        rel: dict[int, int] = {r: 0 for r in life}
        members: dict[int, list[int]] = {k: [r] for k, r in enumerate(life)}
        for i, (reads, writes) in enumerate(self.op_io):
            geo = self.windows.get(i)
            if geo is None or len(writes) != 1 or not reads:
                continue
            x, y = root(reads[0]), root(writes[0])
            if x not in life or y not in life or x == y or x in outputs or len(members[group[y]]) != 1:
                continue
            gx = group[x]
            if max(life[r][1] for r in members[gx]) != i:  # the input (and its group) must die here
                continue
            shift = align(window_shift(*geo), 8)
            rel[y] = rel[x] - shift
            members[gx].append(y)
            del members[group[y]]
            group[y] = gx
        return [{r: rel[r] for r in rs} for rs in members.values()]

    # ---- packing ------------------------------------------------------------------------------
    def pack(self) -> Compiled:
        g = self.g
        n_graph = len(g.tensors)
        all_shapes = {t: g.shape(t) for t in range(n_graph)}
        all_types = {t: g.dtype(t) for t in range(n_graph)}
        tf2tmr = {fb.TensorType.INT8: F.T_INT8, fb.TensorType.FLOAT32: F.T_FLOAT32, fb.TensorType.INT32: F.T_INT32}
        inputs = [int(i) for i in g.g.inputs]
        outputs = [int(i) for i in g.g.outputs]
        for t in inputs + outputs:
            if g.dtype(t) not in (fb.TensorType.INT8, fb.TensorType.FLOAT32):
                raise self.fail("MODEL", t, f"model input/output is {g.type_name(t)}; int8 or float32 expected")
            if g.dtype(t) == fb.TensorType.FLOAT32 and not any(n in ("QUANTIZE", "DEQUANTIZE") for n in self.op_names):
                raise self.fail("MODEL", t, "is FLOAT32: a float model; the runtime runs full-integer int8 models only")
        used: list[int] = []  # tensors the runtime addresses by index, in table order
        index: dict[int, int] = {}

        def use(t: int) -> int:
            if t not in index:
                index[t] = len(used)
                used.append(t)
            return index[t]

        for t in inputs + outputs:
            use(t)
        for reads, writes in self.op_io:
            for t in reads + writes:
                use(t)

        # lifetimes of arena buffers (aliases share their root's buffer)
        def root(t: int) -> int:
            while t in self.alias:
                t = self.alias[t]
            return t

        self._in_place(n_graph, set(inputs), set(outputs), root)

        life: dict[int, list[int]] = {}
        n_ops = len(self.ops)

        def touch(t: int, i: int) -> None:
            if t < n_graph and g.data(t) is not None:
                return  # constant: lives in the image
            r = root(t)
            lo_hi = life.setdefault(r, [i, i])
            lo_hi[0] = min(lo_hi[0], i)
            lo_hi[1] = max(lo_hi[1], i)

        for t in inputs:
            touch(t, -1)
        for i, (reads, writes) in enumerate(self.op_io):
            for t in reads + writes:
                touch(t, i)
        for t in outputs:
            touch(t, n_ops)

        def nbytes(t: int) -> int:
            if t < n_graph:
                return _elems(all_shapes[t]) * F.DTYPE_BYTES[tf2tmr[all_types[t]]]
            _, shape, dt = self.extra_tensors[t - n_graph]
            return _elems(shape) * F.DTYPE_BYTES[dt]

        sizes: dict[int, int] = {}
        for t in life:
            sizes[t] = max(sizes.get(t, 0), nbytes(t))
        for t in used:
            r = root(t)
            if r in sizes:
                sizes[r] = max(sizes[r], nbytes(t))
        singles: list[dict[int, int]] = [{t: 0} for t in life]
        overlapped = self._overlap_groups(life, sizes, root, set(outputs), n_graph)
        arena, offset = min((_plan_groups(gs, life, sizes) for gs in (singles, overlapped)), key=lambda a_o: a_o[0])

        # constant tensors addressed by index (e.g. a constant ADD operand) go into the blob
        const_off: dict[int, _Const] = {}
        for t in used:
            data = g.data(t) if t < n_graph else None
            if data is not None and t not in const_off:
                const_off[t] = self.blob.add(data.tobytes())

        # section layout
        header_size = F.HEADER.size
        tensors_off = header_size
        io_off = tensors_off + F.TENSOR.size * len(used)
        ops_off = io_off + 4 * (len(inputs) + len(outputs))
        op_stream = bytearray()
        ops_bytes = sum(4 + 4 * len(p) for _, p in self.ops)
        data_off = align(ops_off + ops_bytes, 8)
        total = data_off + len(self.blob.blob)

        def resolve(v) -> int:
            if isinstance(v, _Const):
                return data_off + v.blob_offset
            return int(v)

        for code, params in self.ops:
            resolved = [resolve(v) for v in params]
            op_stream += struct.pack("<HH", code, len(resolved)) + struct.pack(f"<{len(resolved)}i", *resolved)
        # op params name tensors by graph id: rewrite to table ids
        op_stream = self._renumber(op_stream, index)

        table = bytearray()
        infos: dict[int, TensorInfo] = {}
        for t in used:
            if t < n_graph:
                shape, dt = all_shapes[t], tf2tmr.get(all_types[t])
                if dt is None:
                    raise self.fail("MODEL", t, f"tensor type {g.type_name(t)} is not supported")
                scales, zps, _ = g.quant(t)
                zp = zps[0] if zps else 0
                name = g.name(t)
            else:
                name, shape, dt = self.extra_tensors[t - n_graph]
                scales, zp = [], 0
            if t in const_off:
                where, off = F.IN_IMAGE, data_off + const_off[t].blob_offset
            else:
                where, off = F.IN_ARENA, offset[root(t)]
            dims = _pad4(shape, "tensor") if shape else [1, 1, 1, 1]
            table += F.TENSOR.pack(off, nbytes(t), dt, where, len(shape), 0, zp, *dims)
            infos[t] = TensorInfo(
                name=name, dtype=F.DTYPE_NAMES[dt], shape=list(shape), scale=scales[0] if scales else 0.0,
                zero_point=zp, bytes=nbytes(t), arena_offset=off if where == F.IN_ARENA else -1,
            )  # fmt: skip
        io = struct.pack(f"<{len(inputs) + len(outputs)}I", *[index[t] for t in inputs + outputs])
        header = F.HEADER.pack(
            F.MAGIC, F.VERSION, header_size, total, len(used), len(self.ops), arena, tensors_off, io_off,
            len(inputs), len(outputs), ops_off, ops_bytes, data_off, len(self.blob.blob), 0, 0,
        )  # fmt: skip
        body = header + table + io + op_stream
        image = body + b"\0" * (data_off - len(body)) + bytes(self.blob.blob)
        assert len(image) == total
        summary = ModelImage(
            format_version=F.VERSION,
            digest=hashlib.sha256(image).hexdigest(),
            size=total,
            arena_bytes=arena,
            ops=list(self.op_names),
            n_tensors=len(used),
            weights_bytes=len(self.blob.blob),
            inputs=[infos[t] for t in inputs],
            outputs=[infos[t] for t in outputs],
            tflite_size=len(self.src),
        )
        return Compiled(data=image, image=summary)

    def _renumber(self, stream: bytearray, index: dict[int, int]) -> bytearray:
        """Params that name tensors (by position, per op family) -> tensor-table ids."""
        out = bytearray()
        pos = 0
        for code, params in self.ops:
            n = len(params)
            vals = list(struct.unpack_from(f"<{n}i", stream, pos + 4))
            for k in _tensor_slots(code, vals):
                vals[k] = index[vals[k]]
            out += struct.pack("<HH", code, n) + struct.pack(f"<{n}i", *vals)
            pos += 4 + 4 * n
        return out


def _tensor_slots(code: int, vals: list[int]) -> list[int]:
    name = F.OP_NAMES[code]
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "SOFTMAX"):
        return [0, 1]
    if name in ("LOGISTIC", "TANH", "QUANTIZE", "DEQUANTIZE", "PAD", "RESHAPE"):
        return [0, 1]
    if name in ("ADD", "MUL", "MEAN"):
        return [0, 1, 2]
    if name == "CONCATENATION":
        return [0] + [4 + 2 * k for k in range(vals[3])]
    raise AssertionError(name)


def compile_model(model: bytes, ops: list[str] | set[str] | None = None) -> Compiled:
    """Compile an int8 .tflite into a model image. `ops`: the firmware's op set (default: all the
    runtime implements). Raises UnsupportedModel with one line naming the op and tensor."""
    c = _Compiler(bytes(model), set(ops) if ops is not None else None)
    c.lower()
    return c.pack()


def window_shift(n, ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, dh, dw, ph, pw) -> int:  # noqa: ANN001
    """How far below its input a sliding-window op's output must start so that writing output pixel
    p never overwrites an input byte that pixel p or a later one still reads: the kernels walk
    output pixels in (n, y, x) order and read each pixel's window from its lowest valid row and
    column (firmware/runtime/kernels_conv.c, tmr_pool)."""
    oy, ox = np.arange(oh), np.arange(ow)
    iy0, ix0 = oy * sh - ph, ox * sw - pw
    row = iy0 + (-(np.minimum(iy0, 0)) + dh - 1) // dh * dh  # lowest valid row of each window
    col = ix0 + (-(np.minimum(ix0, 0)) + dw - 1) // dw * dw
    image = ih * iw * ic
    empty = (row[:, None] >= ih) | (col[None, :] >= iw)  # windows entirely in the padding read nothing
    starts = []
    for b in range(n):
        ws = b * image + (row[:, None] * iw + col[None, :]) * ic
        starts.append(np.where(empty, (b + 1) * image, ws).ravel())
    first = np.concatenate(starts).astype(np.int64)
    need = np.minimum.accumulate(first[::-1])[::-1]  # lowest input byte read from pixel p on
    ends = (np.arange(len(first), dtype=np.int64) + 1) * oc  # output bytes written once pixel p is done
    return int(max(0, (ends - need).max())) if len(first) else 0


def _plan_groups(groups: list[dict[int, int]], life, sizes) -> tuple[int, dict[int, int]]:  # noqa: ANN001
    """Plan groups as single buffers (extent and lifetime of all members); arena size and offsets."""
    buffers, bases = [], []
    for k, rel in enumerate(groups):
        base = min(rel.values())
        extent = max(rel[r] - base + max(sizes[r], 1) for r in rel)
        lo, hi = min(life[r][0] for r in rel), max(life[r][1] for r in rel)
        buffers.append(Buffer(k, extent, lo, hi))
        bases.append(base)
    arena = plan(buffers)
    offset = {r: buffers[k].offset + rel[r] - bases[k] for k, rel in enumerate(groups) for r in rel}
    return arena, offset


def describe(image: bytes) -> dict:
    """Header fields of a model image (a quick look without the .tflite)."""
    if len(image) < F.HEADER.size:
        raise ModelError("model image: shorter than its header")
    fields = F.HEADER.unpack_from(image, 0)
    if fields[0] != F.MAGIC:
        raise ModelError("model image: bad magic (not a tinymlops model image)")
    names = (
        "magic version header_bytes total_bytes n_tensors n_ops arena_bytes tensors_off io_off n_inputs n_outputs "
        "ops_off ops_bytes data_off data_bytes flags reserved"
    ).split()
    return dict(zip(names, fields, strict=True))
