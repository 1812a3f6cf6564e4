/* Pooling, softmax, element-wise, table, reduction and data-movement kernels (int8). */
#include "tmr_fixedpoint.h"
#include "tmr_kernels.h"

void tmr_pool(const tmr_ctx *c, const int32_t *p, int is_max) {
  const int8_t *in = (const int8_t *)tmr_ptr(c, p[PL_IN]);
  int8_t *out = (int8_t *)tmr_ptr(c, p[PL_OUT]);
  const int32_t N = p[PL_N], IH = p[PL_IH], IW = p[PL_IW], C = p[PL_C], OH = p[PL_OH], OW = p[PL_OW];
  const int32_t KH = p[PL_KH], KW = p[PL_KW], SH = p[PL_SH], SW = p[PL_SW], PH = p[PL_PH], PW = p[PL_PW];
  const int32_t lo = p[PL_ACT_MIN], hi = p[PL_ACT_MAX];
  for (int32_t n = 0; n < N; n++) {
    const int8_t *img = in + n * IH * IW * C;
    for (int32_t oy = 0; oy < OH; oy++) {
      const int32_t iy0 = oy * SH - PH;
      const int32_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = (IH - iy0) < KH ? (IH - iy0) : KH;
      for (int32_t ox = 0; ox < OW; ox++) {
        const int32_t ix0 = ox * SW - PW;
        const int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = (IW - ix0) < KW ? (IW - ix0) : KW;
        const int32_t count = (ky1 - ky0) * (kx1 - kx0);
        for (int32_t ch = 0; ch < C; ch++) {
          int32_t acc = is_max ? -128 : 0;
          for (int32_t ky = ky0; ky < ky1; ky++) {
            const int8_t *q = img + ((iy0 + ky) * IW + ix0 + kx0) * C + ch;
            for (int32_t kx = kx0; kx < kx1; kx++, q += C) {
              if (is_max) { if (*q > acc) acc = *q; }
              else acc += *q;
            }
          }
          if (!is_max && count > 0) acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
          *out++ = (int8_t)tmr_clamp(acc, lo, hi);
        }
      }
    }
  }
}

/* gemmlowp-style fixed point: Q0.31 value of 1/(1+a), a in [0,1) (Newton-Raphson, 3 steps) */
static int32_t sat_shl(int32_t x, int e) {
  const int32_t threshold = (int32_t)((1u << (31 - e)) - 1u);
  if (x > threshold) return INT32_MAX;
  if (x < -threshold) return INT32_MIN;
  return (int32_t)((uint32_t)x << e);
}

static int32_t one_over_one_plus_x(int32_t a) {
  int64_t s = (int64_t)a + INT32_MAX;
  s += s >= 0 ? 1 : -1;
  const int32_t half_den = (int32_t)((s + (s < 0 ? 1 : 0)) >> 1); /* truncating /2 */
  int32_t x = 1515870810 + tmr_srdhm(half_den, -1010580540);   /* 48/17 - 32/17 d, Q2.29 */
  for (int i = 0; i < 3; i++) {
    const int32_t one_minus = (1 << 29) - tmr_srdhm(half_den, x);
    x = x + sat_shl(tmr_srdhm(x, one_minus), 2);
  }
  return sat_shl(x, 1);
}

void tmr_softmax(const tmr_ctx *c, const int32_t *p) {
  const int8_t *in = (const int8_t *)tmr_ptr(c, p[SM_IN]);
  int8_t *out = (int8_t *)tmr_ptr(c, p[SM_OUT]);
  const int32_t *lut = (const int32_t *)tmr_const(c, p[SM_LUT]);
  const int32_t outer = p[SM_OUTER], depth = p[SM_DEPTH];
  for (int32_t r = 0; r < outer; r++, in += depth, out += depth) {
    int32_t mx = -128;
    for (int32_t i = 0; i < depth; i++)
      if (in[i] > mx) mx = in[i];
    int32_t sum = 0; /* Q12.19 */
    for (int32_t i = 0; i < depth; i++) {
      const int32_t e = lut[mx - in[i]];
      if (e >= 0) sum += tmr_rdbpot(e, 12);
    }
    const int clz = __builtin_clz((uint32_t)sum);
    const int32_t scale = one_over_one_plus_x((int32_t)(((uint32_t)sum << clz) - (1u << 31)));
    const int exponent = (12 - clz) + 31 - 8;
    for (int32_t i = 0; i < depth; i++) {
      const int32_t e = lut[mx - in[i]];
      out[i] = e < 0 ? (int8_t)-128 : (int8_t)tmr_clamp(tmr_rdbpot(tmr_srdhm(scale, e), exponent) - 128, -128, 127);
    }
  }
}

static void ew_index(const int32_t *p, int32_t i0, int32_t i1, int32_t i2, int32_t i3, int32_t *a, int32_t *b) {
  *a = i0 * p[EW_S1_0] + i1 * p[EW_S1_1] + i2 * p[EW_S1_2] + i3 * p[EW_S1_3];
  *b = i0 * p[EW_S2_0] + i1 * p[EW_S2_1] + i2 * p[EW_S2_2] + i3 * p[EW_S2_3];
}

TMR_INLINE int8_t add1(const int32_t *p, int32_t x1, int32_t x2) {
  const int32_t ls = p[EW_LEFT_SHIFT];
  const int32_t a = tmr_mbqm((int32_t)((uint32_t)(x1 + p[EW_IN1_OFF]) << ls), p[EW_M1], p[EW_SH1]);
  const int32_t b = tmr_mbqm((int32_t)((uint32_t)(x2 + p[EW_IN2_OFF]) << ls), p[EW_M2], p[EW_SH2]);
  const int32_t r = tmr_mbqm(a + b, p[EW_MO], p[EW_SHO]) + p[EW_OUT_OFF];
  return (int8_t)tmr_clamp(r, p[EW_ACT_MIN], p[EW_ACT_MAX]);
}

TMR_INLINE int8_t mul1(const int32_t *p, int32_t x1, int32_t x2) {
  const int32_t r = tmr_mbqm((x1 + p[EW_IN1_OFF]) * (x2 + p[EW_IN2_OFF]), p[EW_MO], p[EW_SHO]) + p[EW_OUT_OFF];
  return (int8_t)tmr_clamp(r, p[EW_ACT_MIN], p[EW_ACT_MAX]);
}

static void elementwise(const tmr_ctx *c, const int32_t *p, int is_mul) {
  const int8_t *x = (const int8_t *)tmr_ptr(c, p[EW_IN1]);
  const int8_t *y = (const int8_t *)tmr_ptr(c, p[EW_IN2]);
  int8_t *out = (int8_t *)tmr_ptr(c, p[EW_OUT]);
  const int32_t D0 = p[EW_D0], D1 = p[EW_D1], D2 = p[EW_D2], D3 = p[EW_D3];
  const int flat = p[EW_S1_3] == 1 && p[EW_S1_2] == D3 && p[EW_S1_1] == D2 * D3 && p[EW_S1_0] == D1 * D2 * D3 &&
                   p[EW_S2_3] == 1 && p[EW_S2_2] == D3 && p[EW_S2_1] == D2 * D3 && p[EW_S2_0] == D1 * D2 * D3;
  if (flat) {
    const int32_t n = D0 * D1 * D2 * D3;
    for (int32_t i = 0; i < n; i++) out[i] = is_mul ? mul1(p, x[i], y[i]) : add1(p, x[i], y[i]);
    return;
  }
  for (int32_t i0 = 0; i0 < D0; i0++)
    for (int32_t i1 = 0; i1 < D1; i1++)
      for (int32_t i2 = 0; i2 < D2; i2++)
        for (int32_t i3 = 0; i3 < D3; i3++) {
          int32_t a, b;
          ew_index(p, i0, i1, i2, i3, &a, &b);
          *out++ = is_mul ? mul1(p, x[a], y[b]) : add1(p, x[a], y[b]);
        }
}

void tmr_add(const tmr_ctx *c, const int32_t *p) { elementwise(c, p, 0); }
void tmr_mul(const tmr_ctx *c, const int32_t *p) { elementwise(c, p, 1); }

void tmr_lut(const tmr_ctx *c, const int32_t *p) {
  const int8_t *in = (const int8_t *)tmr_ptr(c, p[LU_IN]);
  const int32_t n = p[LU_COUNT];
  if (p[LU_OUT_BYTES] == 4) {
    const uint32_t *t = (const uint32_t *)tmr_const(c, p[LU_TABLE]);
    uint32_t *out = (uint32_t *)tmr_ptr(c, p[LU_OUT]);
    for (int32_t i = 0; i < n; i++) out[i] = t[in[i] + 128];
  } else {
    const int8_t *t = (const int8_t *)tmr_const(c, p[LU_TABLE]);
    int8_t *out = (int8_t *)tmr_ptr(c, p[LU_OUT]);
    for (int32_t i = 0; i < n; i++) out[i] = t[in[i] + 128];
  }
}

/* round half away from zero (TfLiteRound) for doubles and floats, without libm */
static double round_away_d(double v) {
  if (v >= 4503599627370496.0 || v <= -4503599627370496.0) return v;
  const int64_t t = (int64_t)v;
  const double f = v - (double)t;
  if (f >= 0.5) return (double)(t + 1);
  if (f <= -0.5) return (double)(t - 1);
  return (double)t;
}

static float round_away_f(float v) {
  if (v >= 8388608.0f || v <= -8388608.0f) return v;
  const int32_t t = (int32_t)v;
  const float f = v - (float)t;
  if (f >= 0.5f) return (float)(t + 1);
  if (f <= -0.5f) return (float)(t - 1);
  return (float)t;
}

static float bits_f(int32_t b) {
  float f;
  __builtin_memcpy(&f, &b, 4);
  return f;
}

void tmr_quantize_float(const tmr_ctx *c, const int32_t *p) {
  const float *in = (const float *)tmr_ptr(c, p[QF_IN]);
  int8_t *out = (int8_t *)tmr_ptr(c, p[QF_OUT]);
  const double scale = (double)bits_f(p[QF_SCALE_BITS]);
  const int32_t zp = p[QF_ZP], n = p[QF_COUNT];
  for (int32_t i = 0; i < n; i++) {
    double r = round_away_d((double)in[i] / scale);
    if (r > 1e6) r = 1e6;
    if (r < -1e6) r = -1e6;
    out[i] = (int8_t)tmr_clamp((int32_t)r + zp, -128, 127);
  }
}

void tmr_mean(const tmr_ctx *c, const int32_t *p) {
  const int8_t *in = (const int8_t *)tmr_ptr(c, p[MN_IN]);
  int8_t *out = (int8_t *)tmr_ptr(c, p[MN_OUT]);
  int32_t *sum = (int32_t *)tmr_ptr(c, p[MN_SCRATCH]);
  const int32_t D0 = p[MN_D0], D1 = p[MN_D1], D2 = p[MN_D2], D3 = p[MN_D3];
  const int32_t S0 = p[MN_OS0], S1 = p[MN_OS1], S2 = p[MN_OS2], S3 = p[MN_OS3];
  const int32_t n_out = p[MN_N_OUT], n_axis = p[MN_N_AXIS];
  for (int32_t i = 0; i < n_out; i++) sum[i] = 0;
  for (int32_t i0 = 0; i0 < D0; i0++)
    for (int32_t i1 = 0; i1 < D1; i1++)
      for (int32_t i2 = 0; i2 < D2; i2++) {
        int32_t *s = sum + i0 * S0 + i1 * S1 + i2 * S2;
        if (S3 == 0) {
          int32_t acc = 0;
          for (int32_t i3 = 0; i3 < D3; i3++) acc += *in++;
          *s += acc;
        } else {
          for (int32_t i3 = 0; i3 < D3; i3++) s[i3 * S3] += *in++;
        }
      }
  if (p[MN_MODE] == 1) { /* same input/output quantisation: integer mean, truncating */
    for (int32_t i = 0; i < n_out; i++) out[i] = (int8_t)(sum[i] / n_axis);
    return;
  }
  if (p[MN_MODE] == 2) { /* fixed-point: (sum - zp*n) * multiplier (scale / n folded in); BIAS = zp*n */
    for (int32_t i = 0; i < n_out; i++)
      out[i] = (int8_t)tmr_clamp(tmr_mbqm(sum[i] - p[MN_BIAS_BITS], p[MN_MULT], p[MN_SHIFT]) + p[MN_OUT_ZP], -128, 127);
    return;
  }
  const float scale = bits_f(p[MN_SCALE_BITS]), bias = bits_f(p[MN_BIAS_BITS]);
  const float nf = (float)n_axis, zp = (float)p[MN_OUT_ZP];
  for (int32_t i = 0; i < n_out; i++) {
    const float mean = (float)sum[i] / nf;
    float r = round_away_f(mean * scale + bias) + zp;
    if (r > 127.0f) r = 127.0f;
    if (r < -128.0f) r = -128.0f;
    out[i] = (int8_t)(int32_t)r;
  }
}

void tmr_pad(const tmr_ctx *c, const int32_t *p) {
  const int8_t *in = (const int8_t *)tmr_ptr(c, p[PD_IN]);
  int8_t *out = (int8_t *)tmr_ptr(c, p[PD_OUT]);
  const int32_t O0 = p[PD_O0], O1 = p[PD_O1], O2 = p[PD_O2], O3 = p[PD_O3];
  const int32_t B0 = p[PD_B0], B1 = p[PD_B1], B2 = p[PD_B2], B3 = p[PD_B3];
  const int32_t I0 = p[PD_I0], I1 = p[PD_I1], I2 = p[PD_I2], I3 = p[PD_I3];
  const int8_t v = (int8_t)p[PD_VALUE];
  for (int32_t o0 = 0; o0 < O0; o0++)
    for (int32_t o1 = 0; o1 < O1; o1++)
      for (int32_t o2 = 0; o2 < O2; o2++) {
        const int32_t j0 = o0 - B0, j1 = o1 - B1, j2 = o2 - B2;
        if (j0 < 0 || j0 >= I0 || j1 < 0 || j1 >= I1 || j2 < 0 || j2 >= I2) {
          tmr_memset(out, v, (uint32_t)O3);
        } else {
          tmr_memset(out, v, (uint32_t)B3);
          tmr_memmove(out + B3, in + ((j0 * I1 + j1) * I2 + j2) * I3, (uint32_t)I3);
          tmr_memset(out + B3 + I3, v, (uint32_t)(O3 - B3 - I3));
        }
        out += O3;
      }
}

void tmr_concat(const tmr_ctx *c, const int32_t *p) {
  uint8_t *out = (uint8_t *)tmr_ptr(c, p[CC_OUT]);
  const int32_t outer = p[CC_OUTER], n_in = p[CC_N_IN];
  for (int32_t o = 0; o < outer; o++)
    for (int32_t k = 0; k < n_in; k++) {
      const int32_t bytes = p[CC_FIXED + 2 * k + 1];
      const uint8_t *src = (const uint8_t *)tmr_ptr(c, p[CC_FIXED + 2 * k]) + o * bytes;
      tmr_memmove(out, src, (uint32_t)bytes);
      out += bytes;
    }
}

void tmr_reshape(const tmr_ctx *c, const int32_t *p) {
  tmr_memmove(tmr_ptr(c, p[RS_OUT]), tmr_ptr(c, p[RS_IN]), (uint32_t)p[RS_BYTES]);
}
