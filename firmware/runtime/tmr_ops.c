/* Op table: parameter checks at load time, dispatch at run time. */
#include "tmr.h"
#include "tmr_kernels.h"

static int tensor_ok(int32_t id, uint32_t n_tensors) { return id >= 0 && (uint32_t)id < n_tensors; }

int tmr_check_op(uint16_t code, const int32_t *p, uint32_t n, const tmr_tensor *t, uint32_t n_tensors,
                 uint32_t image_bytes) {
  uint32_t want;
  int32_t ids[3] = {-1, -1, -1};
  int consts[4] = {-1, -1, -1, -1};
  switch (code) {
    case TMR_OP_CONV_2D:
    case TMR_OP_DEPTHWISE_CONV_2D:
      want = CV_NPARAMS; ids[0] = p[CV_IN]; ids[1] = p[CV_OUT];
      consts[0] = p[CV_FILTER]; consts[1] = p[CV_MULT]; consts[2] = p[CV_SHIFT];
      break;
    case TMR_OP_FULLY_CONNECTED:
      want = FC_NPARAMS; ids[0] = p[FC_IN]; ids[1] = p[FC_OUT];
      consts[0] = p[FC_FILTER]; consts[1] = p[FC_MULT]; consts[2] = p[FC_SHIFT];
      break;
    case TMR_OP_MAX_POOL_2D:
    case TMR_OP_AVERAGE_POOL_2D: want = PL_NPARAMS; ids[0] = p[PL_IN]; ids[1] = p[PL_OUT]; break;
    case TMR_OP_SOFTMAX: want = SM_NPARAMS; ids[0] = p[SM_IN]; ids[1] = p[SM_OUT]; consts[0] = p[SM_LUT]; break;
    case TMR_OP_ADD:
    case TMR_OP_MUL: want = EW_NPARAMS; ids[0] = p[EW_IN1]; ids[1] = p[EW_IN2]; ids[2] = p[EW_OUT]; break;
    case TMR_OP_LOGISTIC:
    case TMR_OP_TANH:
    case TMR_OP_DEQUANTIZE: want = LU_NPARAMS; ids[0] = p[LU_IN]; ids[1] = p[LU_OUT]; consts[0] = p[LU_TABLE]; break;
    case TMR_OP_QUANTIZE:
      /* from float: computed at run time; from int8: a requantisation table */
      if (n >= 1 && tensor_ok(p[0], n_tensors) && t[p[0]].dtype == TMR_T_FLOAT32) {
        want = QF_NPARAMS; ids[0] = p[QF_IN]; ids[1] = p[QF_OUT];
      } else {
        want = LU_NPARAMS; ids[0] = p[LU_IN]; ids[1] = p[LU_OUT]; consts[0] = p[LU_TABLE];
      }
      break;
    case TMR_OP_MEAN: want = MN_NPARAMS; ids[0] = p[MN_IN]; ids[1] = p[MN_OUT]; ids[2] = p[MN_SCRATCH]; break;
    case TMR_OP_PAD: want = PD_NPARAMS; ids[0] = p[PD_IN]; ids[1] = p[PD_OUT]; break;
    case TMR_OP_RESHAPE: want = RS_NPARAMS; ids[0] = p[RS_IN]; ids[1] = p[RS_OUT]; break;
    case TMR_OP_CONCATENATION:
      if (n < CC_FIXED) return TMR_E_PARAM;
      want = CC_FIXED + 2u * (uint32_t)p[CC_N_IN]; ids[0] = p[CC_OUT];
      if (p[CC_N_IN] < 1 || p[CC_N_IN] > 64) return TMR_E_PARAM;
      if (n == want)
        for (int32_t i = 0; i < p[CC_N_IN]; i++)
          if (!tensor_ok(p[CC_FIXED + 2 * i], n_tensors)) return TMR_E_PARAM;
      break;
    default: return TMR_E_OP;
  }
  if (n != want) return TMR_E_PARAM;
  for (int i = 0; i < 3; i++)
    if (ids[i] != -1 && !tensor_ok(ids[i], n_tensors)) return TMR_E_PARAM;
  for (int i = 0; i < 4; i++)
    if (consts[i] != -1 && (consts[i] < 0 || (uint32_t)consts[i] >= image_bytes)) return TMR_E_BOUNDS;
  return TMR_OK;
}

int tmr_run_op(const tmr_ctx *c, uint16_t code, const int32_t *p, uint32_t n) {
  switch (code) {
    case TMR_OP_CONV_2D: tmr_conv2d(c, p); break;
    case TMR_OP_DEPTHWISE_CONV_2D: tmr_depthwise(c, p); break;
    case TMR_OP_FULLY_CONNECTED: tmr_fully_connected(c, p); break;
    case TMR_OP_MAX_POOL_2D: tmr_pool(c, p, 1); break;
    case TMR_OP_AVERAGE_POOL_2D: tmr_pool(c, p, 0); break;
    case TMR_OP_SOFTMAX: tmr_softmax(c, p); break;
    case TMR_OP_ADD: tmr_add(c, p); break;
    case TMR_OP_MUL: tmr_mul(c, p); break;
    case TMR_OP_LOGISTIC:
    case TMR_OP_TANH:
    case TMR_OP_DEQUANTIZE: tmr_lut(c, p); break;
    case TMR_OP_QUANTIZE:
      if (c->tensors[p[0]].dtype == TMR_T_FLOAT32) tmr_quantize_float(c, p);
      else tmr_lut(c, p);
      break;
    case TMR_OP_MEAN: tmr_mean(c, p); break;
    case TMR_OP_PAD: tmr_pad(c, p); break;
    case TMR_OP_CONCATENATION: tmr_concat(c, p); break;
    case TMR_OP_RESHAPE: tmr_reshape(c, p); break;
    default: return TMR_E_OP;
  }
  return TMR_OK;
}

void *tmr_memmove(void *dst, const void *src, uint32_t n) {
  uint8_t *d = (uint8_t *)dst;
  const uint8_t *s = (const uint8_t *)src;
  if (d == s || n == 0) return dst;
  if (d < s || d >= s + n) {
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0) {
      while (n >= 4) { *(uint32_t *)d = *(const uint32_t *)s; d += 4; s += 4; n -= 4; }
    }
    while (n--) *d++ = *s++;
  } else {
    d += n; s += n;
    while (n--) *--d = *--s;
  }
  return dst;
}

void tmr_memset(void *dst, int v, uint32_t n) {
  uint8_t *d = (uint8_t *)dst;
  while (n--) *d++ = (uint8_t)v;
}
