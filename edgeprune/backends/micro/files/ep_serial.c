/* `edgeprune profile FW/ --serial PORT`: the board side of the link (built with -DEP_SERIAL).
   Protocol (README, "Serial link"): every frame is
     'E' 'P' | type u8 | status u8 | length u32 LE | payload[length] | CRC-32 u32 LE
   with the CRC (IEEE 802.3, as zlib.crc32) over type..payload. The host sends 'I' (info, empty) or
   'R' (run: the inputs, packed in order); the board answers 'i' (sizes, counter, clock), 'r' (rc, counter
   ticks, the outputs packed in order) or 'e' (status: 1 bad CRC, 2 bad length, 3 unknown type). A frame whose
   bytes stop arriving for EP_SERIAL_GAP_TICKS is dropped, so a host that gave up cannot desynchronise it. */
#ifdef EP_SERIAL
#include <stdint.h>
#include "board.h"
#include "ep_check.h"
#include "ep_model.h"

#ifndef EP_SERIAL_GAP_TICKS
#define EP_SERIAL_GAP_TICKS ((uint64_t)board_clock_hz)  /* one second of the board's clock */
#endif
#define EP_SERIAL_VERSION 1u
enum { COUNTER_DWT = 0 };  /* else board_ticks_kind: 1 SysTick core ticks, 2 QEMU -icount ticks */
enum { ERR_CRC = 1, ERR_LENGTH = 2, ERR_TYPE = 3 };

#define DEMCR      (*(volatile uint32_t*)0xE000EDFCu)
#define DWT_CTRL   (*(volatile uint32_t*)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t*)0xE0001004u)

static uint32_t input_total, output_total;
static uint8_t inputs_buf[EP_CHECK_INPUT_TOTAL_BYTES + 16u * EP_MODEL_NUM_INPUTS] __attribute__((aligned(16)));
static const void* inputs[EP_MODEL_NUM_INPUTS];
static uint32_t crc;
static int dwt;

/* The DWT cycle counter, when the core has one that counts (v7-M and up; QEMU does not model it). */
static int dwt_start(void) {
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__) || defined(__ARM_ARCH_8_1M_MAIN__)
  DEMCR |= 1u << 24;                          /* TRCENA */
  if (DWT_CTRL & (1u << 25)) return 0;        /* NOCYCCNT */
  DWT_CYCCNT = 0;
  DWT_CTRL |= 1u;                             /* CYCCNTENA */
  uint32_t before = DWT_CYCCNT;
  for (volatile int i = 0; i < 8; i++) {}
  return DWT_CYCCNT != before;
#else
  return 0;
#endif
}

static void crc_byte(uint8_t b) {
  static const uint32_t table[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
  crc ^= b;
  crc = (crc >> 4) ^ table[crc & 15];
  crc = (crc >> 4) ^ table[crc & 15];
}

/* The next byte, or -1 when none came within the gap (the partial frame is then dropped). */
static int get_byte(int waiting_for_frame) {
  uint64_t start = board_ticks();
  for (;;) {
    int c = board_serial_getc();
    if (c >= 0) return c;
    if (!waiting_for_frame && board_ticks() - start > EP_SERIAL_GAP_TICKS) return -1;
  }
}

static int get_u32(uint32_t* v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    int c = get_byte(0);
    if (c < 0) return 0;
    *v |= (uint32_t)c << (8 * i);
  }
  return 1;
}

static void put(uint8_t b) { crc_byte(b); board_serial_putc(b); }
static void put_u32(uint32_t v) { for (int i = 0; i < 4; i++) put((uint8_t)(v >> (8 * i))); }
static void put_bytes(const uint8_t* p, uint32_t n) { while (n--) put(*p++); }

static void begin(char type, uint8_t status, uint32_t length) {
  board_serial_putc('E');
  board_serial_putc('P');
  crc = 0xFFFFFFFFu;
  put((uint8_t)type);
  put(status);
  put_u32(length);
}

static void end(void) {
  uint32_t v = ~crc;
  for (int i = 0; i < 4; i++) board_serial_putc((uint8_t)(v >> (8 * i)));
}

static void reply_error(uint8_t status) { begin('e', status, 0); end(); }

static void reply_info(void) {
  begin('i', 0, 4u * (5u + EP_MODEL_NUM_INPUTS + EP_MODEL_NUM_OUTPUTS));
  put_u32(EP_SERIAL_VERSION);
  put_u32(dwt ? COUNTER_DWT : board_ticks_kind);
  put_u32(board_clock_hz);
  put_u32(EP_MODEL_NUM_INPUTS);
  put_u32(EP_MODEL_NUM_OUTPUTS);
  for (uint32_t k = 0; k < EP_MODEL_NUM_INPUTS; k++) put_u32(ep_check_input_bytes[k]);
  for (uint32_t k = 0; k < EP_MODEL_NUM_OUTPUTS; k++) put_u32(ep_check_output_bytes[k]);
  end();
}

static void reply_run(void) {
  uint64_t ticks;
  int32_t rc;
  if (dwt) {
    uint32_t start = DWT_CYCCNT;
    rc = ep_model_run(inputs, ep_check_outputs);
    ticks = DWT_CYCCNT - start;  /* wraps after 2^32 cycles: fine per inference */
  } else {
    uint64_t start = board_ticks();
    rc = ep_model_run(inputs, ep_check_outputs);
    ticks = board_ticks() - start;
  }
  begin('r', 0, 12u + output_total);
  put_u32((uint32_t)rc);
  put_u32((uint32_t)ticks);
  put_u32((uint32_t)(ticks >> 32));
  for (uint32_t k = 0; k < EP_MODEL_NUM_OUTPUTS; k++) put_bytes((const uint8_t*)ep_check_outputs[k], ep_check_output_bytes[k]);
  end();
}

/* One request: hunt for the magic, read the header, the payload (inputs land in place) and the CRC. */
static void serve_one(void) {
  if (get_byte(1) != 'E') return;
  int c = get_byte(0);
  if (c != 'P') return;
  crc = 0xFFFFFFFFu;
  int type = get_byte(0), status = get_byte(0);
  uint32_t length, sent;
  if (type < 0 || status < 0 || !get_u32(&length)) return;
  crc_byte((uint8_t)type);
  crc_byte((uint8_t)status);
  for (int i = 0; i < 4; i++) crc_byte((uint8_t)(length >> (8 * i)));
  uint32_t expected = type == 'R' ? input_total : 0;
  if ((type == 'R' || type == 'I') && length != expected) { reply_error(ERR_LENGTH); return; }  /* then resync */
  uint32_t k = 0, offset = 0, base = 0;
  for (uint32_t i = 0; i < length; i++) {
    if ((c = get_byte(0)) < 0) return;
    crc_byte((uint8_t)c);
    if (type != 'R') continue;
    while (offset == ep_check_input_bytes[k]) { base = (base + ep_check_input_bytes[k] + 15u) & ~15u; offset = 0; k++; }
    inputs_buf[base + offset++] = (uint8_t)c;
  }
  if (!get_u32(&sent)) return;
  if (sent != ~crc) { reply_error(ERR_CRC); return; }
  if (type == 'I') reply_info();
  else if (type == 'R') reply_run();
  else reply_error(ERR_TYPE);
}

int ep_serial_serve(void) {
  uint32_t base = 0;
  for (uint32_t k = 0; k < EP_MODEL_NUM_INPUTS; k++) {
    inputs[k] = inputs_buf + base;
    input_total += ep_check_input_bytes[k];
    base = (base + ep_check_input_bytes[k] + 15u) & ~15u;
  }
  for (uint32_t k = 0; k < EP_MODEL_NUM_OUTPUTS; k++) output_total += ep_check_output_bytes[k];
  dwt = dwt_start();
  board_serial_init();
  board_write(dwt ? "serial: ready, DWT cycle counter\n" : "serial: ready, board_ticks counter (no DWT)\n");
  for (;;) serve_one();
}
#endif
