/* board.h for QEMU's mps2 machines: semihosting for text and exit, SysTick for time, UART0 (CMSDK APB
   UART, QEMU's first -serial) for the serial link. Under `qemu-system-arm -icount shift=0` each instruction
   takes 1 ns of virtual time, so ticks * (1e9 / board_clock_hz) is the number of instructions executed. */
#include "board.h"

const uint32_t board_clock_hz = 25000000u;  /* the mps2 FPGA images' system clock */
const uint32_t board_ticks_kind = 2u;

#define UART0_DATA    (*(volatile uint32_t*)0x40004000u)
#define UART0_STATE   (*(volatile uint32_t*)0x40004004u)  /* bit 0: TX full, bit 1: RX full */
#define UART0_CTRL    (*(volatile uint32_t*)0x40004008u)  /* bit 0: TX enable, bit 1: RX enable */
#define UART0_BAUDDIV (*(volatile uint32_t*)0x40004010u)

#define SYST_CSR (*(volatile uint32_t*)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018u)
#define SYST_RELOAD 0xFFFFFFu

static volatile uint32_t wraps;

void SysTick_Handler(void) { wraps++; }

static int semihost(int op, const void* arg) {
  register int r0 __asm("r0") = op;
  register const void* r1 __asm("r1") = arg;
  __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void board_init(void) {
  SYST_RVR = SYST_RELOAD;
  SYST_CVR = 0;
  SYST_CSR = 7u;  /* core clock, interrupt on wrap, enabled */
  while (SYST_CVR == 0) {}  /* the first tick loads the reload value */
}

void board_write(const char* text) { semihost(0x04, text); }  /* SYS_WRITE0 */

void board_exit(int code) {
  uint32_t block[2] = {0x20026u, (uint32_t)code};  /* ADP_Stopped_ApplicationExit, exit code */
  semihost(0x20, block);                            /* SYS_EXIT_EXTENDED */
  for (;;) {}
}

uint64_t board_ticks(void) {
  uint32_t high, low;
  do {
    high = wraps;
    low = SYST_CVR;
  } while (high != wraps);
  return (uint64_t)high * (SYST_RELOAD + 1u) + (SYST_RELOAD - low);
}

void board_serial_init(void) {
  UART0_BAUDDIV = 25000000u / 115200u;  /* QEMU ignores the rate but moves no data below 16 */
  UART0_CTRL = 3u;
}

int board_serial_getc(void) { return (UART0_STATE & 2u) ? (int)(UART0_DATA & 0xFFu) : -1; }

void board_serial_putc(uint8_t byte) {
  while (UART0_STATE & 1u) {}
  UART0_DATA = byte;
}
