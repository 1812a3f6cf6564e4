/* CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED: int8 x int8 -> int32 accumulate, per-channel
 * requantisation (TFLite int8 reference arithmetic). On cores with the DSP extension the inner
 * products use SXTAB16/SXTB16 + SMLAD (two 16-bit MACs per instruction); elsewhere plain C. */
#include "tmr_fixedpoint.h"
#include "tmr_kernels.h"

#if TMR_DSP
TMR_INLINE uint32_t rd32(const int8_t *p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4); /* unaligned LDR: allowed on ARMv7E-M/ARMv8-M Mainline */
  return v;
}
#endif

/* acc0 += sum (x+off)*w0, acc1 += sum (x+off)*w1 over len elements */
TMR_INLINE void dot2(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t len, int32_t off, int32_t *a0,
                     int32_t *a1) {
  int32_t s0 = *a0, s1 = *a1;
#if TMR_DSP
  const uint32_t off2 = ((uint32_t)off & 0xffffu) | ((uint32_t)off << 16);
  while (len >= 4) {
    uint32_t xv = rd32(x), v0 = rd32(w0), v1 = rd32(w1);
    uint32_t xe = __sxtab16(off2, xv);
    uint32_t xo = __sxtab16(off2, __ror(xv, 8));
    s0 = __smlad(xe, __sxtb16(v0), s0);
    s0 = __smlad(xo, __sxtb16(__ror(v0, 8)), s0);
    s1 = __smlad(xe, __sxtb16(v1), s1);
    s1 = __smlad(xo, __sxtb16(__ror(v1, 8)), s1);
    x += 4; w0 += 4; w1 += 4; len -= 4;
  }
#endif
  while (len-- > 0) {
    int32_t xv = *x++ + off;
    s0 += xv * *w0++;
    s1 += xv * *w1++;
  }
  *a0 = s0;
  *a1 = s1;
}

TMR_INLINE int32_t dot1(const int8_t *x, const int8_t *w, int32_t len, int32_t off, int32_t acc) {
#if TMR_DSP
  const uint32_t off2 = ((uint32_t)off & 0xffffu) | ((uint32_t)off << 16);
  while (len >= 4) {
    uint32_t xv = rd32(x), v = rd32(w);
    acc = __smlad(__sxtab16(off2, xv), __sxtb16(v), acc);
    acc = __smlad(__sxtab16(off2, __ror(xv, 8)), __sxtb16(__ror(v, 8)), acc);
    x += 4; w += 4; len -= 4;
  }
#endif
  while (len-- > 0) acc += (*x++ + off) * *w++;
  return acc;
}

TMR_INLINE int8_t requant(int32_t acc, int32_t m, int32_t s, int32_t out_off, int32_t lo, int32_t hi) {
  return (int8_t)tmr_clamp(tmr_mbqm(acc, m, s) + out_off, lo, hi);
}

void tmr_conv2d(const tmr_ctx *c, const int32_t *p) {
  const int8_t *in = (const int8_t *)tmr_ptr(c, p[CV_IN]);
  int8_t *out = (int8_t *)tmr_ptr(c, p[CV_OUT]);
  const int8_t *w = (const int8_t *)tmr_const(c, p[CV_FILTER]);
  const int32_t *bias = (const int32_t *)tmr_const(c, p[CV_BIAS]);
  const int32_t *mult = (const int32_t *)tmr_const(c, p[CV_MULT]);
  const int32_t *shift = (const int32_t *)tmr_const(c, p[CV_SHIFT]);
  const int32_t N = p[CV_N], IH = p[CV_IH], IW = p[CV_IW], IC = p[CV_IC];
  const int32_t OH = p[CV_OH], OW = p[CV_OW], OC = p[CV_OC], KH = p[CV_KH], KW = p[CV_KW];
  const int32_t SH = p[CV_SH], SW = p[CV_SW], DH = p[CV_DH], DW = p[CV_DW], PH = p[CV_PH], PW = p[CV_PW];
  const int32_t in_off = p[CV_IN_OFF], out_off = p[CV_OUT_OFF], lo = p[CV_ACT_MIN], hi = p[CV_ACT_MAX];
  const int32_t wstride = KH * KW * IC;
  for (int32_t n = 0; n < N; n++) {
    const int8_t *img = in + n * IH * IW * IC;
    for (int32_t oy = 0; oy < OH; oy++) {
      const int32_t iy0 = oy * SH - PH;
      for (int32_t ox = 0; ox < OW; ox++) {
        const int32_t ix0 = ox * SW - PW;
        /* with no dilation along x, a kernel row's valid taps are one contiguous run */
        int32_t kx0 = 0, kx1 = KW;
        if (DW == 1) {
          if (ix0 < 0) kx0 = -ix0;
          if (ix0 + KW > IW) kx1 = IW - ix0;
        }
        int32_t oc = 0;
        for (; oc + 1 < OC; oc += 2) {
          int32_t a0 = 0, a1 = 0;
          const int8_t *w0 = w + oc * wstride, *w1 = w0 + wstride;
          for (int32_t ky = 0; ky < KH; ky++) {
            const int32_t iy = iy0 + ky * DH;
            if (iy < 0 || iy >= IH) continue;
            const int8_t *row = img + iy * IW * IC;
            const int32_t wr = ky * KW * IC;
            if (DW == 1) {
              if (kx1 > kx0)
                dot2(row + (ix0 + kx0) * IC, w0 + wr + kx0 * IC, w1 + wr + kx0 * IC, (kx1 - kx0) * IC, in_off, &a0,
                     &a1);
            } else {
              for (int32_t kx = 0; kx < KW; kx++) {
                const int32_t ix = ix0 + kx * DW;
                if (ix < 0 || ix >= IW) continue;
                dot2(row + ix * IC, w0 + wr + kx * IC, w1 + wr + kx * IC, IC, in_off, &a0, &a1);
              }
            }
          }
          if (bias) { a0 += bias[oc]; a1 += bias[oc + 1]; }
          out[oc] = requant(a0, mult[oc], shift[oc], out_off, lo, hi);
          out[oc + 1] = requant(a1, mult[oc + 1], shift[oc + 1], out_off, lo, hi);
        }
        for (; oc < OC; oc++) {
          int32_t a = 0;
          const int8_t *w0 = w + oc * wstride;
          for (int32_t ky = 0; ky < KH; ky++) {
            const int32_t iy = iy0 + ky * DH;
            if (iy < 0 || iy >= IH) continue;
            const int8_t *row = img + iy * IW * IC;
            for (int32_t kx = 0; kx < KW; kx++) {
              const int32_t ix = ix0 + kx * DW;
              if (ix < 0 || ix >= IW) continue;
              a = dot1(row + ix * IC, w0 + (ky * KW + kx) * IC, IC, in_off, a);
            }
          }
          if (bias) a += bias[oc];
          out[oc] = requant(a, mult[oc], shift[oc], out_off, lo, hi);
        }
        out += OC;
      }
    }
  }
}

void tmr_depthwise(const tmr_ctx *c, const int32_t *p) {
  const int8_t *in = (const int8_t *)tmr_ptr(c, p[CV_IN]);
  int8_t *out = (int8_t *)tmr_ptr(c, p[CV_OUT]);
  const int8_t *w = (const int8_t *)tmr_const(c, p[CV_FILTER]);
  const int32_t *bias = (const int32_t *)tmr_const(c, p[CV_BIAS]);
  const int32_t *mult = (const int32_t *)tmr_const(c, p[CV_MULT]);
  const int32_t *shift = (const int32_t *)tmr_const(c, p[CV_SHIFT]);
  const int32_t N = p[CV_N], IH = p[CV_IH], IW = p[CV_IW], IC = p[CV_IC];
  const int32_t OH = p[CV_OH], OW = p[CV_OW], OC = p[CV_OC], KH = p[CV_KH], KW = p[CV_KW];
  const int32_t SH = p[CV_SH], SW = p[CV_SW], DH = p[CV_DH], DW = p[CV_DW], PH = p[CV_PH], PW = p[CV_PW];
  const int32_t in_off = p[CV_IN_OFF], out_off = p[CV_OUT_OFF], lo = p[CV_ACT_MIN], hi = p[CV_ACT_MAX];
  const int32_t DM = p[CV_DEPTH_MULT];
  for (int32_t n = 0; n < N; n++) {
    const int8_t *img = in + n * IH * IW * IC;
    for (int32_t oy = 0; oy < OH; oy++) {
      const int32_t iy0 = oy * SH - PH;
      for (int32_t ox = 0; ox < OW; ox++) {
        const int32_t ix0 = ox * SW - PW;
        int32_t ch = 0;
#if TMR_DSP
        if (DM == 1) {
          const uint32_t off2 = ((uint32_t)in_off & 0xffffu) | ((uint32_t)in_off << 16);
          for (; ch + 3 < OC; ch += 4) {
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            for (int32_t ky = 0; ky < KH; ky++) {
              const int32_t iy = iy0 + ky * DH;
              if (iy < 0 || iy >= IH) continue;
              for (int32_t kx = 0; kx < KW; kx++) {
                const int32_t ix = ix0 + kx * DW;
                if (ix < 0 || ix >= IW) continue;
                uint32_t xv = rd32(img + (iy * IW + ix) * IC + ch);
                uint32_t wv = rd32(w + (ky * KW + kx) * OC + ch);
                uint32_t xe = __sxtab16(off2, xv), xo = __sxtab16(off2, __ror(xv, 8));
                uint32_t we = __sxtb16(wv), wo = __sxtb16(__ror(wv, 8));
                a0 = __smlabb(xe, we, a0);
                a2 = __smlatt(xe, we, a2);
                a1 = __smlabb(xo, wo, a1);
                a3 = __smlatt(xo, wo, a3);
              }
            }
            if (bias) { a0 += bias[ch]; a1 += bias[ch + 1]; a2 += bias[ch + 2]; a3 += bias[ch + 3]; }
            out[ch] = requant(a0, mult[ch], shift[ch], out_off, lo, hi);
            out[ch + 1] = requant(a1, mult[ch + 1], shift[ch + 1], out_off, lo, hi);
            out[ch + 2] = requant(a2, mult[ch + 2], shift[ch + 2], out_off, lo, hi);
            out[ch + 3] = requant(a3, mult[ch + 3], shift[ch + 3], out_off, lo, hi);
          }
        }
#endif
        for (; ch < OC; ch++) {
          const int32_t ic = ch / DM;
          int32_t a = 0;
          for (int32_t ky = 0; ky < KH; ky++) {
            const int32_t iy = iy0 + ky * DH;
            if (iy < 0 || iy >= IH) continue;
            for (int32_t kx = 0; kx < KW; kx++) {
              const int32_t ix = ix0 + kx * DW;
              if (ix < 0 || ix >= IW) continue;
              a += (img[(iy * IW + ix) * IC + ic] + in_off) * w[(ky * KW + kx) * OC + ch];
            }
          }
          if (bias) a += bias[ch];
          out[ch] = requant(a, mult[ch], shift[ch], out_off, lo, hi);
        }
        out += OC;
      }
    }
  }
}

void tmr_fully_connected(const tmr_ctx *c, const int32_t *p) {
  const int8_t *in = (const int8_t *)tmr_ptr(c, p[FC_IN]);
  int8_t *out = (int8_t *)tmr_ptr(c, p[FC_OUT]);
  const int8_t *w = (const int8_t *)tmr_const(c, p[FC_FILTER]);
  const int32_t *bias = (const int32_t *)tmr_const(c, p[FC_BIAS]);
  const int32_t *mult = (const int32_t *)tmr_const(c, p[FC_MULT]);
  const int32_t *shift = (const int32_t *)tmr_const(c, p[FC_SHIFT]);
  const int32_t B = p[FC_BATCHES], D = p[FC_DEPTH], U = p[FC_UNITS];
  const int32_t in_off = p[FC_IN_OFF], w_off = p[FC_FILTER_OFF], out_off = p[FC_OUT_OFF];
  const int32_t lo = p[FC_ACT_MIN], hi = p[FC_ACT_MAX], pc = p[FC_PER_CHANNEL];
  for (int32_t b = 0; b < B; b++) {
    const int8_t *x = in + b * D;
    int32_t u = 0;
    if (w_off == 0) {
      for (; u + 1 < U; u += 2) {
        int32_t a0 = 0, a1 = 0;
        dot2(x, w + u * D, w + (u + 1) * D, D, in_off, &a0, &a1);
        if (bias) { a0 += bias[u]; a1 += bias[u + 1]; }
        out[u] = requant(a0, mult[pc ? u : 0], shift[pc ? u : 0], out_off, lo, hi);
        out[u + 1] = requant(a1, mult[pc ? u + 1 : 0], shift[pc ? u + 1 : 0], out_off, lo, hi);
      }
    }
    for (; u < U; u++) {
      int32_t a = 0;
      const int8_t *wu = w + u * D;
      if (w_off == 0) a = dot1(x, wu, D, in_off, 0);
      else
        for (int32_t d = 0; d < D; d++) a += (x[d] + in_off) * (wu[d] + w_off);
      if (bias) a += bias[u];
      out[u] = requant(a, mult[pc ? u : 0], shift[pc ? u : 0], out_off, lo, hi);
    }
    out += U;
  }
}
