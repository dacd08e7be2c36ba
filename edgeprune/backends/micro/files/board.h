/* What the example firmware needs from a board: text out, exit, a tick counter and, for the serial link
   (-DEP_SERIAL), a UART. board_qemu.c implements it with semihosting, SysTick and the CMSDK UART of
   QEMU's mps2 boards; a real board supplies its own (README). */
#ifndef BOARD_H
#define BOARD_H
#include <stdint.h>

void board_init(void);
void board_write(const char* text);
void board_exit(int code);
uint64_t board_ticks(void);  /* core clock ticks since board_init */
extern const uint32_t board_clock_hz;    /* the clock board_ticks counts */
extern const uint32_t board_ticks_kind;  /* 1: core clock ticks; 2: QEMU -icount ticks (instructions = ticks * 1e9 / clock) */

void board_serial_init(void);
int board_serial_getc(void);           /* the next received byte, or -1 when none is waiting */
void board_serial_putc(uint8_t byte);  /* waits while the transmitter is full */
#endif
