/* Integer arithmetic of TFLite's int8 reference kernels (written from the published semantics:
 * gemmlowp's SaturatingRoundingDoublingHighMul / RoundingDivideByPOT and TFLite's
 * MultiplyByQuantizedMultiplier with the default double rounding). */
#ifndef TMR_FIXEDPOINT_H
#define TMR_FIXEDPOINT_H

#include <stdint.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define TMR_DSP 1
#else
#define TMR_DSP 0
#endif

#define TMR_INLINE static inline __attribute__((always_inline))

/* round(a*b / 2^31), saturating the one overflow case (INT32_MIN * INT32_MIN). */
TMR_INLINE int32_t tmr_srdhm(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  int64_t ab = (int64_t)a * (int64_t)b;
  int64_t t = ab + (ab >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30)));
  /* C division truncates toward zero; an arithmetic shift floors: fix up negative inexact. */
  int32_t q = (int32_t)(t >> 31);
  if (t < 0 && (t & 0x7fffffff)) q += 1;
  return q;
}

/* x / 2^e rounded to nearest, ties away from zero. */
TMR_INLINE int32_t tmr_rdbpot(int32_t x, int e) {
  uint32_t mask = (e >= 32) ? 0xffffffffu : ((1u << e) - 1u);
  int32_t remainder = (int32_t)((uint32_t)x & mask);
  int32_t threshold = (int32_t)(mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (remainder > threshold ? 1 : 0);
}

TMR_INLINE int32_t tmr_mbqm(int32_t x, int32_t m, int32_t shift) {
  int left = shift > 0 ? shift : 0;
  int right = shift > 0 ? 0 : -shift;
  return tmr_rdbpot(tmr_srdhm((int32_t)((uint32_t)x << left), m), right);
}

TMR_INLINE int32_t tmr_clamp(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

#endif
