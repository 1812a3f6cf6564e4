/* Hardware abstraction: the emulated part's memory map (hal_map.h, generated per profile by
 * tinymlops.device.mcu.build from configs/devices.yaml) and its memory-mapped devices. */
#ifndef HAL_H
#define HAL_H
#include <stdint.h>

#include "hal_map.h"

/* Emulator peripheral block (tinymlops/device/mcu/devices.py), at HAL_MMIO_BASE. */
#define HAL_REG(off) (*(volatile uint32_t *)(HAL_MMIO_BASE + (off)))
#define HAL_LOG_PUTC HAL_REG(0x00)  /* w: one character to the log port */
#define HAL_CYCLES HAL_REG(0x04)    /* r: core cycles so far (the cycle model's count, low 32 bits) */
#define HAL_MARK HAL_REG(0x08)      /* w: a profiling mark; the emulator records the cycle count */
#define HAL_FC_CMD HAL_REG(0x100)   /* w: 1 = erase the page at FC_ADDR, 2 = program FC_DATA at FC_ADDR */
#define HAL_FC_ADDR HAL_REG(0x104)
#define HAL_FC_DATA HAL_REG(0x108)
#define HAL_FC_STATUS HAL_REG(0x10C) /* r: 0 ok; see hal_flash_status */

enum hal_flash_status {
  HAL_FLASH_OK = 0,
  HAL_FLASH_NOT_ERASED = 1, /* program over bytes that are not erased (0xFF) */
  HAL_FLASH_RANGE = 2,      /* address outside the model/state area or misaligned */
  HAL_FLASH_PROTECTED = 3,  /* the firmware region is write-protected */
  HAL_FLASH_POWER_CUT = 4,  /* the emulator cut power during the operation */
};

static inline void hal_putc(char c) { HAL_LOG_PUTC = (uint32_t)(uint8_t)c; }
static inline void hal_puts(const char *s) {
  while (*s) hal_putc(*s++);
}
static inline uint32_t hal_cycles(void) { return HAL_CYCLES; }

/* Flash controller (page erase, word program); return a hal_flash_status. */
static inline int hal_flash_erase(uint32_t page_addr) {
  HAL_FC_ADDR = page_addr;
  HAL_FC_CMD = 1;
  return (int)HAL_FC_STATUS;
}
static inline int hal_flash_program(uint32_t addr, uint32_t word) {
  HAL_FC_ADDR = addr;
  HAL_FC_DATA = word;
  HAL_FC_CMD = 2;
  return (int)HAL_FC_STATUS;
}
#endif
