/* tmr: the tinymlops int8 model runtime. C11, freestanding, no heap.
 *
 * A model is a *model image* (made by tinymlops.device.image.compile_model from an int8 .tflite):
 * the op list, tensor table, weights, precomputed multipliers/shifts/LUTs and an offline memory
 * plan. The image is data: it is read in place from a flash model slot, never copied to RAM.
 *
 *   tmr_model m;
 *   uint32_t need = tmr_arena_need(slot_addr);             // bytes of RAM the plan needs
 *   int rc = tmr_load(&m, slot_addr, slot_size, arena, arena_size);
 *   int8_t *in = tmr_input(&m, 0, &n);  ... fill ...
 *   rc = tmr_invoke(&m);
 *   const int8_t *out = tmr_output(&m, 0, &n);
 */
#ifndef TMR_H
#define TMR_H

#include <stddef.h>
#include <stdint.h>

#include "tmr_image.h"

#ifdef __cplusplus
extern "C" {
#endif

enum tmr_status {
  TMR_OK = 0,
  TMR_E_MAGIC = 1,      /* not a model image */
  TMR_E_VERSION = 2,    /* image format version this runtime does not read */
  TMR_E_BOUNDS = 3,     /* an offset or size in the image points outside it */
  TMR_E_ARENA = 4,      /* the arena is smaller than the image's memory plan */
  TMR_E_OP = 5,         /* an op code this runtime does not implement */
  TMR_E_PARAM = 6,      /* an op's parameters are inconsistent */
};

typedef struct {
  const uint8_t *image;
  const tmr_header *hdr;
  const tmr_tensor *tensors;
  uint8_t *arena;
  uint32_t arena_size;
  uint32_t ops_run;  /* ops executed by the last tmr_invoke */
} tmr_model;

/* Bytes of arena the image's memory plan needs (0 when `image` is not a model image). */
uint32_t tmr_arena_need(const void *image);

/* Validate the image (magic, version, every offset in bounds) and bind it to an arena. */
int tmr_load(tmr_model *m, const void *image, uint32_t image_max_bytes, void *arena, uint32_t arena_size);

/* Run every op once. */
int tmr_invoke(tmr_model *m);

/* Model input/output `i`: pointer into the arena, its size in bytes. NULL when out of range. */
void *tmr_input(tmr_model *m, uint32_t i, uint32_t *bytes);
const void *tmr_output(const tmr_model *m, uint32_t i, uint32_t *bytes);

/* Optional per-op hook (profiling): called before and after each op when set. */
extern void (*tmr_op_hook)(uint32_t op_index, uint32_t opcode, int after);

#ifdef __cplusplus
}
#endif
#endif
