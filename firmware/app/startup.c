/* Reset: copy .data from flash, clear .bss, run the app's init, stop at tmr_halt. */
#include <stdint.h>

#include "app.h"

extern uint32_t __stack_top[], __data_start[], __data_end[], __data_load[], __bss_start[], __bss_end[];

__attribute__((used, noinline)) void reset_c(void) {
  uint32_t *s = __data_load, *d = __data_start;
  while (d < __data_end) *d++ = *s++;
  for (d = __bss_start; d < __bss_end;) *d++ = 0;
  app_init();
  tmr_halt();
}

#if defined(__riscv)
__attribute__((naked, section(".text.reset"))) void Reset_Handler(void) {
  __asm__ volatile("la sp, __stack_top\n j reset_c\n");
}
#else
__attribute__((naked)) void Reset_Handler(void) {
  __asm__ volatile("ldr r0, =__stack_top\n mov sp, r0\n b reset_c\n");
}
static void Fault_Handler(void) { tmr_halt(); }
/* Cortex-M vector table: initial SP, reset, NMI, HardFault, the rest to the fault handler. */
__attribute__((used, section(".vectors"))) const void *const tmr_vectors[16] = {
    __stack_top, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, 0,
    0,           0,             0,             Fault_Handler, Fault_Handler, 0,             Fault_Handler, Fault_Handler,
};
#endif
