/* Decoder for EPHC containers of Huffman-coded weights (edgeprune/coding/FORMAT.md).
 *
 * Portable C99 for microcontrollers: no allocation, no stdio, no floating point but in
 * ep_param_f32, nothing from libc but memcpy and memcmp. The container stays where it is (flash or RAM) and is read in place; the
 * caller decodes it tensor by tensor into a buffer of its own, e.g. one scratch buffer reused for
 * every layer:
 *
 *     ep_reader r; ep_tensor t; int rc;
 *     if ((rc = ep_open(&r, blob, blob_len)) != EP_OK) return rc;
 *     while ((rc = ep_next(&r, &t)) == EP_OK) {
 *         rc = ep_decode(&t, scratch, sizeof scratch);   // t.n_elements values of t.dtype
 *         // or, for containers with compact pair tables (t.work_bytes > 0; see encode_tensors' work_limit):
 *         // rc = ep_decode_work(&t, scratch, sizeof scratch, work, sizeof work);
 *         if (rc != EP_OK) return rc;
 *         ...use scratch (dequantize with ep_param_f32 / ep_zero_point)...
 *     }
 *     return rc == EP_END ? EP_OK : rc;
 *
 * Shared code tables (version 4): a stream may keep its table in one of EP_TABLE_SLOTS slots, and
 * streams of later records may code with it instead of carrying their own. The reader remembers
 * where each kept table is (a pointer into the container: the container must stay in place while
 * it is read, as above), and ep_next copies the location of the tables a tensor reuses into the
 * ep_tensor, so ep_decode needs nothing but the tensor. Tensors must go through ep_next in order
 * (a table is kept when its record is read); a reference to a slot that holds no table, or a table
 * of other symbols, is EP_ERR_FORMAT.
 *
 * Every length is checked against the buffer and every record against its CRC-32, so a corrupt or
 * truncated container gives an error code, never a read or write out of bounds.
 */
#ifndef EP_HUFFMAN_H
#define EP_HUFFMAN_H

#include <stddef.h>
#include <stdint.h>

#define EP_VERSION 4 /* newest version read; versions 1 to 3 are read too */
#define EP_MAX_DIMS 8
#define EP_MAX_CODE_LEN 16
#define EP_TABLE_SLOTS 8 /* shared code tables kept at once (version 4) */

enum ep_status {
    EP_OK = 0,
    EP_END = 1,            /* ep_next: every tensor has been read */
    EP_ERR_MAGIC = -1,     /* not an EPHC container */
    EP_ERR_VERSION = -2,   /* a version this decoder does not read */
    EP_ERR_TRUNCATED = -3, /* the container ends inside a header or record */
    EP_ERR_CRC = -4,       /* a record does not match its CRC-32 */
    EP_ERR_FORMAT = -5,    /* a record that passes its CRC but breaks a rule of the format */
    EP_ERR_STREAM = -6,    /* bits that do not decode to the recorded symbols and sync points */
    EP_ERR_BUFFER = -7     /* the caller's buffer is smaller than the tensor, or its workspace than work_bytes */
};

enum ep_dtype { EP_INT8 = 1, EP_UINT8 = 2, EP_INT16 = 3, EP_UINT16 = 4 };
enum ep_quant { EP_QUANT_NONE = 0, EP_QUANT_AFFINE = 1, EP_QUANT_CODEBOOK = 2 };
enum ep_coding { EP_DENSE = 0, EP_SPARSE = 1 };

/* Where a kept code table is: from its stream's max_len byte to the end of its record (table NULL: none). */
typedef struct {
    const uint8_t *table, *end;
    uint8_t flags; /* the stream's symbol size and pair flags, which a stream reusing the table must have */
} ep_table_slot;

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    uint32_t n_tensors, index;
    uint16_t version;
    ep_table_slot slots[EP_TABLE_SLOTS];
} ep_reader;

typedef struct {
    const char *name;          /* UTF-8, not NUL-terminated, inside the container */
    uint16_t name_len;
    uint8_t dtype, ndim, quant, coding;
    uint32_t dims[EP_MAX_DIMS];
    uint32_t n_elements;
    int8_t axis;               /* affine: channel axis, -1 for one scale per tensor */
    uint32_t n_params;         /* affine: scales (and zero points); codebook: values */
    const uint8_t *params;     /* little-endian f32 * n_params, then i32 * n_params if affine */
    const uint8_t *coded, *end; /* the record's coding section */
    uint16_t version;          /* the container's: paired streams need 2, compact pair tables 3, shared tables 4 */
    uint32_t work_bytes;       /* workspace ep_decode_work needs: 2 bytes per pair of compact tables, else 0 */
    ep_table_slot tables[2];   /* gaps, values: the table a stream keeps or reuses (version 4) */
    uint8_t keep[2];           /* gaps, values: 1 + the slot the stream's table goes to, 0 for none */
} ep_tensor;

/* Checks magic and version (1 to 4) and empties the table slots; EP_OK or an error. */
int ep_open(ep_reader *r, const uint8_t *buf, size_t len);
/* Reads the next tensor's header and code tables after checking its record's CRC; EP_OK, EP_END or an error. */
int ep_next(ep_reader *r, ep_tensor *t);
/* Bytes per value of a dtype (0 if unknown). */
size_t ep_dtype_size(uint8_t dtype);
/* Decodes t->n_elements values into out (aligned for the dtype), expanding sparse tensors. */
int ep_decode(const ep_tensor *t, void *out, size_t out_size);
/* The same, with a workspace of at least t->work_bytes (any alignment) for compact pair tables. */
int ep_decode_work(const ep_tensor *t, void *out, size_t out_size, void *work, size_t work_size);
/* Scale i (affine) or codebook value i. */
float ep_param_f32(const ep_tensor *t, uint32_t i);
/* Zero point i (affine only). */
int32_t ep_zero_point(const ep_tensor *t, uint32_t i);
/* zlib-compatible CRC-32; start with crc = 0. */
uint32_t ep_crc32(uint32_t crc, const uint8_t *p, size_t n);

#endif
