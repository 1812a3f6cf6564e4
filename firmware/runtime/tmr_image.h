/* The model image format, version 1. Little-endian; every section 4-byte aligned.
 * tinymlops/device/image/format.py writes exactly this layout (keep the two in step).
 *
 *   header (tmr_header, 64 bytes)
 *   tensor table: n_tensors x tmr_tensor (32 bytes each)
 *   io table:     n_inputs u32 tensor ids, then n_outputs u32 tensor ids
 *   op stream:    n_ops x { u16 opcode, u16 n_params, i32 params[n_params] }
 *   data:         weights, biases, multipliers, shifts, LUTs (offsets are from image start)
 */
#ifndef TMR_IMAGE_H
#define TMR_IMAGE_H

#include <stdint.h>

#define TMR_MAGIC 0x31524D54u /* "TMR1" */
#define TMR_VERSION 1u

typedef struct {
  uint32_t magic;
  uint16_t version;
  uint16_t header_bytes;
  uint32_t total_bytes;
  uint32_t n_tensors;
  uint32_t n_ops;
  uint32_t arena_bytes;
  uint32_t tensors_off;
  uint32_t io_off;
  uint32_t n_inputs;
  uint32_t n_outputs;
  uint32_t ops_off;
  uint32_t ops_bytes;
  uint32_t data_off;
  uint32_t data_bytes;
  uint32_t flags;
  uint32_t reserved;
} tmr_header;

enum { TMR_T_INT8 = 0, TMR_T_FLOAT32 = 1, TMR_T_INT32 = 2 };
enum { TMR_IN_ARENA = 0, TMR_IN_IMAGE = 1 };

typedef struct {
  uint32_t offset; /* arena offset (TMR_IN_ARENA) or image offset (TMR_IN_IMAGE) */
  uint32_t bytes;
  uint8_t dtype;
  uint8_t where;
  uint8_t ndim;
  uint8_t reserved;
  int32_t zero_point;
  int32_t dims[4];
} tmr_tensor;

/* Op codes: TFLite's builtin operator numbers. */
enum {
  TMR_OP_ADD = 0,
  TMR_OP_AVERAGE_POOL_2D = 1,
  TMR_OP_CONCATENATION = 2,
  TMR_OP_CONV_2D = 3,
  TMR_OP_DEPTHWISE_CONV_2D = 4,
  TMR_OP_DEQUANTIZE = 6,
  TMR_OP_FULLY_CONNECTED = 9,
  TMR_OP_LOGISTIC = 14,
  TMR_OP_MAX_POOL_2D = 17,
  TMR_OP_MUL = 18,
  TMR_OP_RESHAPE = 22,
  TMR_OP_SOFTMAX = 25,
  TMR_OP_TANH = 28,
  TMR_OP_PAD = 34,
  TMR_OP_MEAN = 40,
  TMR_OP_QUANTIZE = 114,
};

/* Parameter layouts (index into params[]), one enum per kernel family. */
enum { /* CONV_2D and DEPTHWISE_CONV_2D */
  CV_IN, CV_OUT, CV_FILTER, CV_BIAS, CV_MULT, CV_SHIFT,
  CV_N, CV_IH, CV_IW, CV_IC, CV_OH, CV_OW, CV_OC, CV_KH, CV_KW,
  CV_SH, CV_SW, CV_DH, CV_DW, CV_PH, CV_PW,
  CV_IN_OFF, CV_OUT_OFF, CV_ACT_MIN, CV_ACT_MAX, CV_DEPTH_MULT,
  CV_NPARAMS
};
enum { /* FULLY_CONNECTED */
  FC_IN, FC_OUT, FC_FILTER, FC_BIAS, FC_MULT, FC_SHIFT,
  FC_BATCHES, FC_DEPTH, FC_UNITS, FC_IN_OFF, FC_FILTER_OFF, FC_OUT_OFF,
  FC_ACT_MIN, FC_ACT_MAX, FC_PER_CHANNEL,
  FC_NPARAMS
};
enum { /* MAX_POOL_2D, AVERAGE_POOL_2D */
  PL_IN, PL_OUT, PL_N, PL_IH, PL_IW, PL_C, PL_OH, PL_OW, PL_KH, PL_KW,
  PL_SH, PL_SW, PL_PH, PL_PW, PL_ACT_MIN, PL_ACT_MAX,
  PL_NPARAMS
};
enum { /* SOFTMAX: LUT = int32[256] exp(-d) in Q0.31 for d = 0..255, -1 where skipped */
  SM_IN, SM_OUT, SM_OUTER, SM_DEPTH, SM_LUT,
  SM_NPARAMS
};
enum { /* ADD, MUL: 4-D broadcast via element strides (0 = broadcast) */
  EW_IN1, EW_IN2, EW_OUT, EW_D0, EW_D1, EW_D2, EW_D3,
  EW_S1_0, EW_S1_1, EW_S1_2, EW_S1_3, EW_S2_0, EW_S2_1, EW_S2_2, EW_S2_3,
  EW_IN1_OFF, EW_IN2_OFF, EW_OUT_OFF, EW_ACT_MIN, EW_ACT_MAX,
  EW_LEFT_SHIFT, EW_M1, EW_SH1, EW_M2, EW_SH2, EW_MO, EW_SHO,
  EW_NPARAMS
};
enum { /* LOGISTIC, TANH, QUANTIZE int8->int8, DEQUANTIZE int8->float: a 256-entry table */
  LU_IN, LU_OUT, LU_COUNT, LU_TABLE, LU_OUT_BYTES,
  LU_NPARAMS
};
enum { /* QUANTIZE float->int8 */
  QF_IN, QF_OUT, QF_COUNT, QF_SCALE_BITS, QF_ZP,
  QF_NPARAMS
};
enum { /* MEAN: input walked in order; output index = sum(idx_k * ostride_k) */
  MN_IN, MN_OUT, MN_SCRATCH, MN_D0, MN_D1, MN_D2, MN_D3,
  MN_OS0, MN_OS1, MN_OS2, MN_OS3, MN_N_OUT, MN_N_AXIS, MN_MODE,
  MN_SCALE_BITS, MN_BIAS_BITS, MN_OUT_ZP, MN_MULT, MN_SHIFT,
  MN_NPARAMS
};
enum { /* PAD (4-D) */
  PD_IN, PD_OUT, PD_I0, PD_I1, PD_I2, PD_I3, PD_B0, PD_B1, PD_B2, PD_B3,
  PD_O0, PD_O1, PD_O2, PD_O3, PD_VALUE,
  PD_NPARAMS
};
enum { /* CONCATENATION: then (tensor, axis_bytes) per input */
  CC_OUT, CC_OUTER, CC_OUT_AXIS_BYTES, CC_N_IN,
  CC_FIXED
};
enum { /* RESHAPE */
  RS_IN, RS_OUT, RS_BYTES,
  RS_NPARAMS
};

#endif
