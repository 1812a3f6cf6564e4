"""The model image's binary layout (version 1): the Python twin of firmware/runtime/tmr_image.h."""

from __future__ import annotations

import struct

MAGIC = 0x31524D54  # "TMR1"
VERSION = 1
HEADER = struct.Struct("<IHHIIIIIIIIIIIIII")  # tmr_header, 64 bytes
TENSOR = struct.Struct("<IIBBBBi4i")  # tmr_tensor, 32 bytes
assert HEADER.size == 64 and TENSOR.size == 32

T_INT8, T_FLOAT32, T_INT32 = 0, 1, 2
IN_ARENA, IN_IMAGE = 0, 1
DTYPE_BYTES = {T_INT8: 1, T_FLOAT32: 4, T_INT32: 4}
DTYPE_NAMES = {T_INT8: "int8", T_FLOAT32: "float32", T_INT32: "int32"}

# Op codes are TFLite's builtin operator numbers.
OPS = {
    "ADD": 0,
    "AVERAGE_POOL_2D": 1,
    "CONCATENATION": 2,
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 4,
    "DEQUANTIZE": 6,
    "FULLY_CONNECTED": 9,
    "LOGISTIC": 14,
    "MAX_POOL_2D": 17,
    "MUL": 18,
    "RESHAPE": 22,
    "SOFTMAX": 25,
    "TANH": 28,
    "PAD": 34,
    "MEAN": 40,
    "QUANTIZE": 114,
}
OP_NAMES = {v: k for k, v in OPS.items()}

# Parameter counts per kernel family (tmr_image.h enums).
CV_NPARAMS, FC_NPARAMS, PL_NPARAMS, SM_NPARAMS = 26, 15, 16, 5
EW_NPARAMS, LU_NPARAMS, QF_NPARAMS, MN_NPARAMS, PD_NPARAMS, RS_NPARAMS = 27, 5, 5, 19, 15, 3
