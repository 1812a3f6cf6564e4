/* Host-side profiling hooks for unicorn, compiled for the host by the ziglang wheel and called by
 * unicorn directly (no Python per block): block execution counts, taken control transfers, and
 * flash data-read line misses, attributed to the block that read. */
#include <stdint.h>

typedef struct {
  uint64_t base;      /* code region start */
  uint64_t n;         /* slots: one per halfword of the code region */
  uint64_t *count;    /* executions of the block starting at base + 2i */
  uint32_t *size;     /* its size in bytes */
  uint64_t *taken;    /* times the block was left by a taken control transfer */
  uint64_t prev;      /* 1 + slot of the previous block (0: none) */
  uint64_t prev_end;  /* address after the previous block */
  uint64_t outside;   /* blocks executed outside the code region */
  uint64_t flash_reads, flash_misses;
  uint64_t line_shift, n_lines, last_line;
  uint64_t tags[1024];
  uint64_t *miss;     /* flash line misses caused by the block at base + 2i */
} tmr_prof;

void tmr_block_hook(void *uc, uint64_t addr, uint32_t size, void *ud) {
  tmr_prof *p = (tmr_prof *)ud;
  uint64_t i = (addr - p->base) >> 1;
  if (p->prev && addr != p->prev_end) p->taken[p->prev - 1]++;
  if (addr >= p->base && i < p->n) {
    p->count[i]++;
    p->size[i] = size;
    p->prev = i + 1;
  } else {
    p->outside++;
    p->prev = 0;
  }
  p->prev_end = addr + size;
}

void tmr_read_hook(void *uc, int type, uint64_t addr, int size, int64_t value, void *ud) {
  tmr_prof *p = (tmr_prof *)ud;
  uint64_t line = addr >> p->line_shift;
  int missed = 0;
  p->flash_reads++;
  if (p->n_lines == 0) {
    if (line + 1 != p->last_line) { missed = 1; p->last_line = line + 1; }
  } else {
    uint64_t set = line % p->n_lines;
    if (p->tags[set] != line + 1) { missed = 1; p->tags[set] = line + 1; }
  }
  if (missed) {
    p->flash_misses++;
    if (p->prev) p->miss[p->prev - 1]++;
  }
}
