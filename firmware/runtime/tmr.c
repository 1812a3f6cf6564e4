/* Image loader and op dispatcher. */
#include "tmr.h"

#include "tmr_kernels.h"

void (*tmr_op_hook)(uint32_t op_index, uint32_t opcode, int after) = 0;

static const tmr_header *header_of(const void *image) {
  const tmr_header *h = (const tmr_header *)image;
  if (!image || ((uintptr_t)image & 3u) || h->magic != TMR_MAGIC) return 0;
  return h;
}

uint32_t tmr_arena_need(const void *image) {
  const tmr_header *h = header_of(image);
  return h ? h->arena_bytes : 0;
}

static int in_range(uint32_t off, uint32_t len, uint32_t limit) {
  return off <= limit && len <= limit - off;
}

int tmr_load(tmr_model *m, const void *image, uint32_t image_max_bytes, void *arena, uint32_t arena_size) {
  const tmr_header *h = header_of(image);
  if (!h) return TMR_E_MAGIC;
  if (h->version != TMR_VERSION || h->header_bytes != sizeof(tmr_header)) return TMR_E_VERSION;
  uint32_t total = h->total_bytes;
  if (total > image_max_bytes || total < sizeof(tmr_header)) return TMR_E_BOUNDS;
  if (h->n_tensors > 0xffffu || !in_range(h->tensors_off, h->n_tensors * (uint32_t)sizeof(tmr_tensor), total))
    return TMR_E_BOUNDS;
  if (h->n_inputs + h->n_outputs > 64 || !in_range(h->io_off, 4u * (h->n_inputs + h->n_outputs), total))
    return TMR_E_BOUNDS;
  if (!in_range(h->ops_off, h->ops_bytes, total) || !in_range(h->data_off, h->data_bytes, total)) return TMR_E_BOUNDS;
  if (h->arena_bytes > arena_size) return TMR_E_ARENA;
  const uint8_t *img = (const uint8_t *)image;
  const tmr_tensor *t = (const tmr_tensor *)(img + h->tensors_off);
  for (uint32_t i = 0; i < h->n_tensors; i++) {
    uint32_t limit = t[i].where == TMR_IN_ARENA ? h->arena_bytes : total;
    if (!in_range(t[i].offset, t[i].bytes, limit)) return TMR_E_BOUNDS;
  }
  const uint32_t *io = (const uint32_t *)(img + h->io_off);
  for (uint32_t i = 0; i < h->n_inputs + h->n_outputs; i++)
    if (io[i] >= h->n_tensors || t[io[i]].where != TMR_IN_ARENA) return TMR_E_BOUNDS;
  /* Walk the op stream once: every record inside it, every op known. */
  const uint8_t *p = img + h->ops_off, *end = p + h->ops_bytes;
  for (uint32_t i = 0; i < h->n_ops; i++) {
    if (end - p < 4) return TMR_E_BOUNDS;
    uint16_t n = (uint16_t)(p[2] | (p[3] << 8));
    if ((uint32_t)(end - p - 4) < 4u * n) return TMR_E_BOUNDS;
    uint16_t code = (uint16_t)(p[0] | (p[1] << 8));
    int rc = tmr_check_op(code, (const int32_t *)(p + 4), n, t, h->n_tensors, total);
    if (rc) return rc;
    p += 4 + 4u * n;
  }
  m->image = img;
  m->hdr = h;
  m->tensors = t;
  m->arena = (uint8_t *)arena;
  m->arena_size = arena_size;
  m->ops_run = 0;
  return TMR_OK;
}

int tmr_invoke(tmr_model *m) {
  const tmr_header *h = m->hdr;
  const uint8_t *p = m->image + h->ops_off;
  tmr_ctx ctx = {m->image, m->arena, m->tensors};
  m->ops_run = 0;
  for (uint32_t i = 0; i < h->n_ops; i++) {
    uint16_t code = (uint16_t)(p[0] | (p[1] << 8));
    uint16_t n = (uint16_t)(p[2] | (p[3] << 8));
    const int32_t *prm = (const int32_t *)(p + 4);
    if (tmr_op_hook) tmr_op_hook(i, code, 0);
    int rc = tmr_run_op(&ctx, code, prm, n);
    if (tmr_op_hook) tmr_op_hook(i, code, 1);
    if (rc) return rc;
    m->ops_run++;
    p += 4 + 4u * n;
  }
  return TMR_OK;
}

static void *tensor_io(const tmr_model *m, uint32_t idx_in_io, uint32_t *bytes) {
  const uint32_t *io = (const uint32_t *)(m->image + m->hdr->io_off);
  const tmr_tensor *t = &m->tensors[io[idx_in_io]];
  if (bytes) *bytes = t->bytes;
  return m->arena + t->offset;
}

void *tmr_input(tmr_model *m, uint32_t i, uint32_t *bytes) {
  if (i >= m->hdr->n_inputs) return 0;
  return tensor_io(m, i, bytes);
}

const void *tmr_output(const tmr_model *m, uint32_t i, uint32_t *bytes) {
  if (i >= m->hdr->n_outputs) return 0;
  return tensor_io(m, m->hdr->n_inputs + i, bytes);
}
