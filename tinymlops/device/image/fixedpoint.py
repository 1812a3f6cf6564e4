"""TFLite's integer arithmetic, in Python, exactly as the int8 reference kernels compute it.

The model compiler uses it to precompute what the firmware would otherwise compute at run time:
per-channel multipliers and shifts (QuantizeMultiplier) and the 256-entry tables of the element-wise
int8 ops (LOGISTIC, TANH, requantising QUANTIZE, DEQUANTIZE) and of SOFTMAX's exp(). The functions
follow gemmlowp's fixed-point semantics (saturating rounding doubling high multiply, rounding
divide by a power of two, Newton-Raphson reciprocal, exp on [-1/4, 0) by Taylor series and a
barrel shifter) on Python ints, wrapped to int32 where the C code wraps.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def wrap32(x: int) -> int:
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def round_away(x: float) -> float:
    """TfLiteRound / std::round: halves away from zero."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: m = q * 2^shift / 2^31 with q in [2^30, 2^31)."""
    if m == 0.0:
        return 0, 0
    frac, shift = math.frexp(m)
    q = int(round_away(frac * (1 << 31)))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        shift, q = 0, 0
    return q, shift


def srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    t = ab + nudge
    q = abs(t) >> 31  # C++ division truncates toward zero
    return q if t >= 0 else -q


def rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def mbqm(x: int, m: int, shift: int) -> int:
    left = shift if shift > 0 else 0
    right = 0 if shift > 0 else -shift
    return rdbpot(srdhm(wrap32(x * (1 << left)), m), right)


def sat_mul_pot(x: int, e: int) -> int:
    """SaturatingRoundingMultiplyByPOT<e>."""
    if e == 0:
        return x
    if e < 0:
        return rdbpot(x, -e)
    threshold = (1 << (31 - e)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return wrap32(x << e)


def rescale(raw: int, src_int_bits: int, dst_int_bits: int) -> int:
    return sat_mul_pot(raw, src_int_bits - dst_int_bits)


def rounding_half_sum(a: int, b: int) -> int:
    s = a + b
    s += 1 if s >= 0 else -1
    q = abs(s) // 2
    return q if s >= 0 else -q


def _newton_reciprocal(half_den: int) -> int:
    """x ~ 1/half_den in Q2.29 (gemmlowp's three Newton-Raphson steps from 48/17 - 32/17 d)."""
    x = wrap32(1515870810 + srdhm(half_den, -1010580540))
    for _ in range(3):
        one_minus = wrap32((1 << 29) - srdhm(half_den, x))
        x = wrap32(x + rescale(srdhm(x, one_minus), 4, 2))
    return x


def one_over_one_plus_x(a: int) -> int:
    """Q0.31 in [0,1) -> Q0.31 of 1/(1+a)."""
    x = _newton_reciprocal(rounding_half_sum(a, INT32_MAX))
    return rescale(x, 1, 0)  # ExactMulByPot<-1> keeps the raw value: Q2.29 -> Q1.30


def one_minus_x_over_one_plus_x(a: int) -> int:
    x = _newton_reciprocal(rounding_half_sum(a, INT32_MAX))
    return rescale(wrap32(x - (1 << 29)), 2, 0)


def _exp_quarter(a: int) -> int:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out."""
    const_term = 1895147668
    third = 715827883
    x = wrap32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = sat_mul_pot(x4, -2)
    poly = sat_mul_pot(wrap32(srdhm(wrap32(x4_over_4 + x3), third) + x2), -1)
    return wrap32(const_term + srdhm(const_term, wrap32(x + poly)))


_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a: int, int_bits: int) -> int:
    """exp(a) for a <= 0 in Q(int_bits).(31-int_bits); result Q0.31."""
    frac_bits = 31 - int_bits
    one_quarter = 1 << (frac_bits - 2)
    mask = one_quarter - 1
    a_mod = wrap32((a & mask) - one_quarter)
    result = _exp_quarter(rescale(a_mod, int_bits, 0))
    remainder = wrap32(a_mod - a)
    for exponent, multiplier in _BARREL:
        if int_bits > exponent:
            shift = frac_bits + exponent
            if remainder & (1 << shift):
                result = srdhm(result, multiplier)
    if int_bits > 5:
        clamp = -(1 << (36 - int_bits))
        if a < clamp:
            result = 0
    if a == 0:
        result = INT32_MAX
    return result


def logistic_q(a: int, int_bits: int) -> int:
    if a == 0:
        return 1 << 30
    abs_a = a if a > 0 else wrap32(-a)
    pos = one_over_one_plus_x(exp_on_negative_values(wrap32(-abs_a), int_bits))
    return pos if a > 0 else wrap32(INT32_MAX - pos)


def tanh_q(a: int, int_bits: int) -> int:
    if a == 0:
        return 0
    n = a if a < 0 else wrap32(-a)
    t = one_minus_x_over_one_plus_x(exp_on_negative_values(n, int_bits + 1))  # ExactMulByPot<1>
    return wrap32(-t) if a < 0 else t


def input_radius(int_bits: int, left_shift: int, total_bits: int = 31) -> int:
    max_rescaled = 1.0 * ((1 << int_bits) - 1) * (1 << (total_bits - int_bits)) / (1 << left_shift)
    return int(math.floor(max_rescaled))


def _frexp_multiplier(real: float) -> tuple[int, int]:
    frac, shift = math.frexp(real)
    return int(round_away(frac * (1 << 31))), shift


def logistic_table(in_scale: float, in_zp: int) -> np.ndarray:
    """int8 LOGISTIC (output scale 1/256, zero point -128) for every input byte."""
    mult, shift = _frexp_multiplier(float(np.float32(in_scale)) * (1 << 27))
    radius = input_radius(4, shift)
    out = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        x = q - in_zp
        if x <= -radius:
            v = -128
        elif x >= radius:
            v = 127
        else:
            r = rdbpot(logistic_q(mbqm(x, mult, shift), 4), 23)
            v = min(max(r - 128, -128), 127)
        out[i] = v
    return out


def tanh_table(in_scale: float, in_zp: int) -> np.ndarray:
    """int8 TANH (output scale 1/128, zero point 0) for every input byte."""
    mult, shift = _frexp_multiplier(float(np.float32(in_scale)) * (1 << 27))
    radius = input_radius(4, shift)
    out = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        x = q - in_zp
        if x <= -radius:
            v = -128
        elif x >= radius:
            v = 127
        else:
            r = rdbpot(tanh_q(mbqm(x, mult, shift), 4), 24)
            v = min(max(r, -128), 127)
        out[i] = v
    return out


def requantize_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    m, s = quantize_multiplier(float(np.float32(in_scale)) / float(np.float32(out_scale)))
    return np.array([min(max(mbqm(q - in_zp, m, s) + out_zp, -128), 127) for q in range(-128, 128)], np.int8)


def dequantize_table(scale: float, zp: int) -> np.ndarray:
    q = np.arange(-128, 128, dtype=np.float64)
    return (float(np.float32(scale)) * (q - zp)).astype(np.float32)


def softmax_table(beta: float, in_scale: float) -> np.ndarray:
    """exp(-d * beta * scale) in Q0.31 for d = 0..255 as SOFTMAX's int8 kernel computes it; -1 where
    the difference is below diff_min (the kernel skips it)."""
    real = min(float(np.float32(beta)) * float(np.float32(in_scale)) * (1 << 26), float((1 << 31) - 1))
    mult, shift = quantize_multiplier(real)
    diff_min = -input_radius(5, shift)
    lut = np.full(256, -1, np.int32)
    for d in range(256):
        diff = -d
        if diff >= diff_min:
            rescaled = srdhm(wrap32(diff * (1 << shift)), mult)
            lut[d] = exp_on_negative_values(rescaled, 5)
    return lut
