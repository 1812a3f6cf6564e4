#ifndef TMR_KERNELS_H
#define TMR_KERNELS_H
#include <stdint.h>

#include "tmr_image.h"

typedef struct {
  const uint8_t *image;
  uint8_t *arena;
  const tmr_tensor *tensors;
} tmr_ctx;

int tmr_check_op(uint16_t code, const int32_t *p, uint32_t n, const tmr_tensor *t, uint32_t n_tensors,
                 uint32_t image_bytes);
int tmr_run_op(const tmr_ctx *c, uint16_t code, const int32_t *p, uint32_t n);

/* kernels_*.c */
void tmr_conv2d(const tmr_ctx *c, const int32_t *p);
void tmr_depthwise(const tmr_ctx *c, const int32_t *p);
void tmr_fully_connected(const tmr_ctx *c, const int32_t *p);
void tmr_pool(const tmr_ctx *c, const int32_t *p, int is_max);
void tmr_softmax(const tmr_ctx *c, const int32_t *p);
void tmr_add(const tmr_ctx *c, const int32_t *p);
void tmr_mul(const tmr_ctx *c, const int32_t *p);
void tmr_lut(const tmr_ctx *c, const int32_t *p);
void tmr_quantize_float(const tmr_ctx *c, const int32_t *p);
void tmr_mean(const tmr_ctx *c, const int32_t *p);
void tmr_pad(const tmr_ctx *c, const int32_t *p);
void tmr_concat(const tmr_ctx *c, const int32_t *p);
void tmr_reshape(const tmr_ctx *c, const int32_t *p);

/* a tensor's data, wherever it lives */
static inline void *tmr_ptr(const tmr_ctx *c, int32_t tensor) {
  const tmr_tensor *t = &c->tensors[tensor];
  return (t->where == 0 ? c->arena : (uint8_t *)c->image) + t->offset;
}
/* a constant blob in the image (offset < 0: absent) */
static inline const void *tmr_const(const tmr_ctx *c, int32_t off) {
  return off < 0 ? (const void *)0 : (const void *)(c->image + off);
}

void *tmr_memmove(void *dst, const void *src, uint32_t n);
void tmr_memset(void *dst, int v, uint32_t n);
#endif
