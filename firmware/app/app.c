#include "app.h"

#include "hal.h"
#include "tmr.h"

volatile app_mailbox tmr_mailbox __attribute__((used));
static tmr_model g_model;
static int g_loaded;
extern uint8_t __arena_start[], __arena_end[];

static void mark(uint32_t op_index, uint32_t opcode, int after) {
  HAL_MARK = (op_index << 16) | (opcode << 1) | (uint32_t)(after & 1);
}

int app_load(uint32_t slot_addr, uint32_t slot_bytes) {
  const uint32_t arena_bytes = (uint32_t)(__arena_end - __arena_start);
  tmr_mailbox.slot_addr = slot_addr;
  tmr_mailbox.arena_addr = (uint32_t)(uintptr_t)__arena_start;
  tmr_mailbox.arena_bytes = arena_bytes;
  tmr_mailbox.arena_need = tmr_arena_need((const void *)(uintptr_t)slot_addr);
  int rc = tmr_load(&g_model, (const void *)(uintptr_t)slot_addr, slot_bytes, __arena_start, arena_bytes);
  g_loaded = rc == TMR_OK;
  tmr_mailbox.status = (uint32_t)rc;
  if (g_loaded) {
    uint32_t n = 0;
    tmr_mailbox.input_addr = (uint32_t)(uintptr_t)tmr_input(&g_model, 0, &n);
    tmr_mailbox.input_bytes = n;
    tmr_mailbox.output_addr = (uint32_t)(uintptr_t)tmr_output(&g_model, 0, &n);
    tmr_mailbox.output_bytes = n;
  } else {
    hal_puts("tmr: image refused\n");
  }
  return rc;
}

int app_infer(void) {
  if (!g_loaded) return (int)(tmr_mailbox.status = TMR_E_MAGIC);
  tmr_op_hook = tmr_mailbox.profile ? mark : 0;
  int rc = tmr_invoke(&g_model);
  tmr_mailbox.status = (uint32_t)rc;
  tmr_mailbox.ops_run = g_model.ops_run;
  tmr_mailbox.invocations++;
  return rc;
}

__attribute__((weak)) uint32_t agent_boot(void) { return HAL_SLOT_A; }

void app_init(void) {
  hal_puts("tmr: boot\n");
  tmr_mailbox.magic = APP_MAILBOX_MAGIC;
  app_load(agent_boot(), HAL_SLOT_BYTES);
}

__attribute__((noinline, used)) void tmr_halt(void) {
  for (;;) __asm__ volatile("");
}

/* Entry points the host (emulator) and a future agent call directly; kept by the linker. */
void Reset_Handler(void);
__attribute__((used, section(".entries"))) const void *const tmr_entries[5] = {
    (const void *)Reset_Handler, (const void *)app_infer, (const void *)app_load, (const void *)app_init,
    (const void *)tmr_halt};
