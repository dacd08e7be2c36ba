/* Example application: runs the model on the samples in ep_check.c, prints each output's bytes
   (hex), the core ticks per inference and, with EP_PROFILE_LAYERS, per layer; exits 0 when every
   output is within EP_CHECK_TOLERANCE of the reference stored at build time. Built with -DEP_SERIAL it
   serves `edgeprune profile --serial` instead (ep_serial.c). */
#include <stdint.h>
#include "board.h"
#include "ep_check.h"
#include "ep_model.h"

#ifdef EP_PROFILE_LAYERS
static uint64_t layer_ticks[EP_MODEL_NUM_LAYERS], layer_start;
#endif

static void put_hex(const uint8_t* bytes, uint32_t n) {
  static const char digits[] = "0123456789abcdef";
  char chunk[65];
  uint32_t k = 0;
  for (uint32_t i = 0; i < n; i++) {
    chunk[k++] = digits[bytes[i] >> 4];
    chunk[k++] = digits[bytes[i] & 15];
    if (k == 64 || i + 1 == n) { chunk[k] = 0; board_write(chunk); k = 0; }
  }
}

static void put_u64(uint64_t v) {
  char text[21];
  int i = 20;
  text[i] = 0;
  do { text[--i] = (char)('0' + v % 10); v /= 10; } while (v);
  board_write(text + i);
}

int ep_serial_serve(void);

int main(void) {
  board_init();
#ifdef EP_SERIAL
  return ep_serial_serve();
#endif
  int failed = 0;
  for (uint32_t s = 0; s < EP_CHECK_SAMPLES; s++) {
    uint64_t start = board_ticks();
    int32_t rc = ep_model_run(ep_check_inputs[s], ep_check_outputs);
    uint64_t ticks = board_ticks() - start;
    board_write("run "); put_u64(s); board_write(" rc "); put_u64((uint64_t)rc);
    board_write(" ticks "); put_u64(ticks); board_write("\n");
    failed |= rc != 0;
    for (uint32_t k = 0; k < EP_MODEL_NUM_OUTPUTS; k++) {
      board_write("out "); put_u64(s); board_write(" "); put_u64(k); board_write(" ");
      put_hex((const uint8_t*)ep_check_outputs[k], ep_check_output_bytes[k]);
      board_write("\n");
    }
    failed |= !ep_check_compare(s);
  }
#ifdef EP_PROFILE_LAYERS
  for (uint32_t i = 0; i < EP_MODEL_NUM_LAYERS; i++) {
    board_write("layer "); put_u64(i); board_write(" "); board_write(ep_model_layer_names[i]);
    board_write(" ticks "); put_u64(layer_ticks[i]); board_write("\n");
  }
#endif
  board_write(failed ? "check FAILED\n" : "check OK\n");
  return failed;
}

#ifdef EP_PROFILE_LAYERS
/* ep_model.c is compiled with EP_LAYER_BEGIN/END calling these (see the Makefile). */
void ep_layer_begin(int i);
void ep_layer_end(int i);
void ep_layer_begin(int i) { (void)i; layer_start = board_ticks(); }
void ep_layer_end(int i) { layer_ticks[i] += board_ticks() - layer_start; }
#endif
