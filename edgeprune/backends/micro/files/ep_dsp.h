/* edgeprune: multiply-accumulate micro-kernels for Armv7E-M cores with the DSP extension (Cortex-M4/M7).
   TVM's int8 convolutions call them for the reduction over one output pixel's window, copied into a
   contiguous int16 column (x - zero point) in the weights' own order; the weights are stored widened
   to int16 so that one 32-bit load feeds one SMLAD (two multiply-accumulates) with no unpacking.
   Exact integer arithmetic: the same sums as TVM's C loops. The signatures are the ones TVM's C code
   declares for an extern call (plain pointers). */
#ifndef EP_DSP_H
#define EP_DSP_H
#include <stdint.h>
#include <string.h>
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>

/* Two halfwords as one 32-bit load (unaligned is fine on Armv7-M: LDR, not LDRD/LDM). */
static inline int16x2_t ep_pair(const int16_t* p) {
  int16x2_t v;
  memcpy(&v, p, 4);
  return v;
}
#endif

/* acc[o] += sum_i x[i] * w[o * n + i] for o < 4: one load of the column feeds four channels.
   Per 2 column entries: 1 load of x, then per channel 1 load and 1 SMLAD. */
static inline int32_t ep_dot_s16s16_4(int16_t* x, int16_t* w, int32_t n, int32_t* acc) {
  int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  int32_t i = 0;
#if defined(__ARM_FEATURE_DSP)
  const int16_t *w1 = w + n, *w2 = w + 2 * n, *w3 = w + 3 * n;
  for (; i + 4 <= n; i += 4) { /* two pairs per turn: the loop's own add/compare/branch on 16 MACs */
    int16x2_t xp = ep_pair(x + i), xq = ep_pair(x + i + 2);
    a0 = __smlad(xp, ep_pair(w + i), a0);
    a1 = __smlad(xp, ep_pair(w1 + i), a1);
    a2 = __smlad(xp, ep_pair(w2 + i), a2);
    a3 = __smlad(xp, ep_pair(w3 + i), a3);
    a0 = __smlad(xq, ep_pair(w + i + 2), a0);
    a1 = __smlad(xq, ep_pair(w1 + i + 2), a1);
    a2 = __smlad(xq, ep_pair(w2 + i + 2), a2);
    a3 = __smlad(xq, ep_pair(w3 + i + 2), a3);
  }
#endif
  for (; i < n; ++i) {
    a0 += (int32_t)x[i] * w[i];
    a1 += (int32_t)x[i] * w[n + i];
    a2 += (int32_t)x[i] * w[2 * n + i];
    a3 += (int32_t)x[i] * w[3 * n + i];
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
  return 0;
}

/* The same for two output channels (a channel count that 4 does not divide). */
static inline int32_t ep_dot_s16s16_2(int16_t* x, int16_t* w, int32_t n, int32_t* acc) {
  int32_t a0 = acc[0], a1 = acc[1];
  int32_t i = 0;
#if defined(__ARM_FEATURE_DSP)
  const int16_t* w1 = w + n;
  for (; i + 2 <= n; i += 2) {
    int16x2_t xp = ep_pair(x + i);
    a0 = __smlad(xp, ep_pair(w + i), a0);
    a1 = __smlad(xp, ep_pair(w1 + i), a1);
  }
#endif
  for (; i < n; ++i) {
    a0 += (int32_t)x[i] * w[i];
    a1 += (int32_t)x[i] * w[n + i];
  }
  acc[0] = a0;
  acc[1] = a1;
  return 0;
}

#endif
