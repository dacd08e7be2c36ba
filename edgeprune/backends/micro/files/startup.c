/* Minimal Cortex-M start-up for the QEMU boards (and a starting point for a real one):
   vector table, .data copy, .bss zeroing, FPU on, main(), exit through semihosting. */
#include <stdint.h>
#include "board.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

void Reset_Handler(void) {
  uint32_t *src = &_sidata, *dst = &_sdata;
  while (dst < &_edata) *dst++ = *src++;
  for (dst = &_sbss; dst < &_ebss; ) *dst++ = 0;
#if defined(__ARM_FP)
  *(volatile uint32_t*)0xE000ED88u |= 0xFu << 20;  /* CPACR: full access to CP10/CP11 (the FPU) */
  __asm volatile("dsb\n isb");
#endif
  board_exit(main());
}

static void Fault_Handler(void) {
  board_write("FAULT: hard fault\n");
  board_exit(3);
}

static void Default_Handler(void) {
  board_write("FAULT: unexpected interrupt\n");
  board_exit(4);
}

void SysTick_Handler(void);

__attribute__((section(".isr_vector"), used))
static void (*const vectors[16])(void) = {
  (void (*)(void))&_estack, Reset_Handler, Default_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
  Fault_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler, SysTick_Handler,
};
