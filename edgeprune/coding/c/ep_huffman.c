/* EPHC decoder: see ep_huffman.h for use, FORMAT.md for the layout and its rules. */
#include "ep_huffman.h"

#include <string.h>

/* Stream bits are counted in a uint32_t: FORMAT.md caps a stream at 2**29 - 1 bytes. */
#define MAX_STREAM_BYTES ((1UL << 29) - 1)

typedef struct {
    const uint8_t *p, *end;
} cursor;

/* A stream of n symbols, coded one by one, or (paired, version 2) as n_codes = ceil(n / 2) pair
 * symbols first * 256 + second; index, interval and sync points count codes. A compact pair table
 * (version 3) is unpacked into `pairs` (the caller's workspace, 2 bytes a pair) in canonical order. */
typedef struct {
    uint32_t n, n_codes, interval, n_bytes, bitpos, index, second, n_used, table_len;
    uint8_t sym_bytes, table_bytes, max_len, paired, compact, have_second;
    uint32_t count[EP_MAX_CODE_LEN + 1]; /* count[l]: symbols with code length l */
    const uint8_t *symbols, *sync, *data, *table;
    uint8_t *pairs;
} stream;

/* Compact pair tables (FORMAT.md): a 256-bit alphabet, 3-bit lengths of a 20-token code, then tokens:
 * 0..16 one code length, 17..19 runs of (extra bits, shortest run): zeros, zeros, the previous length. */
#define TOKENS 20
#define TOKEN_MAX_LEN 7
static const uint8_t run_extra[TOKENS] = {[17] = 3, [18] = 7, [19] = 2};
static const uint8_t run_shortest[TOKENS] = {[17] = 3, [18] = 11, [19] = 3};

typedef struct {
    const uint8_t *p;
    uint32_t n_bits, pos;
} bit_reader;

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }

static uint32_t rd32(const uint8_t *p) { return rd16(p) | rd16(p + 2) << 16; }

/* Takes n bytes if they are there; n is counted in items of `size` so it cannot overflow. */
static const uint8_t *take(cursor *c, uint32_t n, size_t size) {
    const uint8_t *p = c->p;
    if (n > (size_t)(c->end - c->p) / size) return NULL;
    c->p += (size_t)n * size;
    return p;
}

uint32_t ep_crc32(uint32_t crc, const uint8_t *p, size_t n) {
    /* Four bits at a time: a 64-byte table, small enough for any flash. */
    static const uint32_t table[16] = {
        0x00000000UL, 0x1DB71064UL, 0x3B6E20C8UL, 0x26D930ACUL, 0x76DC4190UL, 0x6B6B51F4UL,
        0x4DB26158UL, 0x5005713CUL, 0xEDB88320UL, 0xF00F9344UL, 0xD6D6A3E8UL, 0xCB61B38CUL,
        0x9B64C2B0UL, 0x86D3D2D4UL, 0xA00AE278UL, 0xBDBDF21CUL};
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ table[crc & 15];
        crc = (crc >> 4) ^ table[crc & 15];
    }
    return ~crc;
}

size_t ep_dtype_size(uint8_t dtype) {
    return dtype == EP_INT8 || dtype == EP_UINT8 ? 1 : dtype == EP_INT16 || dtype == EP_UINT16 ? 2 : 0;
}

int ep_open(ep_reader *r, const uint8_t *buf, size_t len) {
    int i;
    if (len < 4 || memcmp(buf, "EPHC", 4) != 0) return EP_ERR_MAGIC;
    if (len < 10) return EP_ERR_TRUNCATED;
    if (rd16(buf + 4) < 1 || rd16(buf + 4) > EP_VERSION) return EP_ERR_VERSION;
    r->version = (uint16_t)rd16(buf + 4);
    r->buf = buf;
    r->len = len;
    r->pos = 10;
    r->n_tensors = rd32(buf + 6);
    r->index = 0;
    for (i = 0; i < EP_TABLE_SLOTS; i++) r->slots[i].table = NULL;
    return EP_OK;
}

static int parse_quant(cursor *c, ep_tensor *t) {
    const uint8_t *p = take(c, 1, 1);
    if (!p) return EP_ERR_FORMAT;
    t->quant = p[0];
    t->axis = -1;
    t->n_params = 0;
    t->params = NULL;
    if (t->quant == EP_QUANT_NONE) return EP_OK;
    if (t->quant == EP_QUANT_AFFINE) {
        if (!(p = take(c, 5, 1))) return EP_ERR_FORMAT;
        t->axis = (int8_t)p[0]; /* stored as two's complement */
        t->n_params = rd32(p + 1);
        if (t->axis < -1 || t->axis >= (int)t->ndim) return EP_ERR_FORMAT;
        if (t->n_params != (t->axis == -1 ? 1 : t->dims[t->axis])) return EP_ERR_FORMAT;
        t->params = take(c, t->n_params, 8);
    } else if (t->quant == EP_QUANT_CODEBOOK) {
        if (!(p = take(c, 4, 1))) return EP_ERR_FORMAT;
        t->n_params = rd32(p);
        if ((t->dtype != EP_UINT8 && t->dtype != EP_UINT16) || t->n_params < 1 || t->n_params > 65536UL)
            return EP_ERR_FORMAT;
        t->params = take(c, t->n_params, 4);
    } else {
        return EP_ERR_FORMAT;
    }
    return t->params ? EP_OK : EP_ERR_FORMAT;
}

static int open_streams(const ep_tensor *t, stream *gaps, stream *values, uint32_t *fill, ep_table_slot *tables,
                        uint8_t *keep, const ep_table_slot *slots);
static uint32_t work_of(const ep_tensor *t, const stream *gaps, const stream *values);

int ep_next(ep_reader *r, ep_tensor *t) {
    stream gaps, values;
    uint32_t fill;
    cursor c;
    const uint8_t *p;
    size_t left = r->len - r->pos;
    uint32_t body_len, i;
    uint64_t n = 1;
    int zero = 0, rc;

    if (r->index == r->n_tensors) return left == 0 ? EP_END : EP_ERR_FORMAT;
    if (left < 4) return EP_ERR_TRUNCATED;
    body_len = rd32(r->buf + r->pos);
    if (body_len > left - 4 || left - 4 - body_len < 4) return EP_ERR_TRUNCATED;
    c.p = r->buf + r->pos + 4;
    c.end = c.p + body_len;
    if (ep_crc32(0, c.p, body_len) != rd32(c.end)) return EP_ERR_CRC;
    r->pos += 8 + (size_t)body_len;
    r->index++;

    if (!(p = take(&c, 2, 1))) return EP_ERR_FORMAT;
    t->name_len = (uint16_t)rd16(p);
    if (!(t->name = (const char *)take(&c, t->name_len, 1)) || !(p = take(&c, 2, 1))) return EP_ERR_FORMAT;
    t->dtype = p[0];
    t->ndim = p[1];
    if (!ep_dtype_size(t->dtype) || t->ndim > EP_MAX_DIMS || !(p = take(&c, t->ndim, 4))) return EP_ERR_FORMAT;
    for (i = 0; i < t->ndim; i++) {
        t->dims[i] = rd32(p + 4 * i);
        zero |= t->dims[i] == 0;
        if (n <= 0xFFFFFFFFUL) n *= t->dims[i]; /* both factors < 2**32: no overflow */
    }
    if (!zero && n > 0xFFFFFFFFUL) return EP_ERR_FORMAT;
    t->n_elements = zero ? 0 : (uint32_t)n;
    if ((rc = parse_quant(&c, t)) != EP_OK) return rc;
    if (!(p = take(&c, 1, 1)) || (p[0] != EP_DENSE && p[0] != EP_SPARSE)) return EP_ERR_FORMAT;
    t->coding = p[0];
    t->coded = c.p;
    t->end = c.end;
    t->version = r->version;
    if ((rc = open_streams(t, &gaps, &values, &fill, t->tables, t->keep, r->slots)) != EP_OK) return rc;
    t->work_bytes = work_of(t, &gaps, &values);
    for (i = 0; i < 2; i++) /* a record's tables are kept once all of it has passed */
        if (t->keep[i]) r->slots[t->keep[i] - 1] = t->tables[i];
    return EP_OK;
}

static int read_bits(bit_reader *b, uint32_t n, uint32_t *v) {
    uint32_t x = 0;
    if (n > b->n_bits - b->pos) return 0;
    for (; n; n--, b->pos++) x = x << 1 | ((b->p[b->pos >> 3] >> (7 - (b->pos & 7))) & 1);
    *v = x;
    return 1;
}

/* Canonical decoding one bit at a time: codes of length l are first_l .. first_l + count[l] - 1. */
static int read_token(bit_reader *b, const uint32_t *count, const uint8_t *symbols, uint32_t *token) {
    int32_t code = 0, first = 0, index = 0;
    uint32_t l, bit;
    for (l = 1; l <= TOKEN_MAX_LEN; l++) {
        if (!read_bits(b, 1, &bit)) return 0;
        code |= (int32_t)bit;
        if (code < first + (int32_t)count[l]) {
            *token = symbols[index + code - first];
            return 1;
        }
        index += (int32_t)count[l];
        first = (first + (int32_t)count[l]) << 1;
        code <<= 1;
    }
    return 0; /* unreachable for a complete code */
}

/* Walks a compact pair table: without `next`, counts its code lengths into s->count; with it (next[l]:
 * canonical index of the next pair of length l), writes every pair into s->pairs. */
static int walk_table(stream *s, uint32_t *next) {
    bit_reader b;
    uint8_t alphabet[256], token_symbols[TOKENS], token_len[TOKENS];
    uint32_t token_count[TOKEN_MAX_LEN + 1] = {0}, n_alpha = 0, cells, cell = 0, i, l, v, token, run, prev = 0;
    uint32_t left = 1;
    b.p = s->table;
    b.n_bits = s->table_len * 8;
    b.pos = 0;
    for (i = 0; i < 256; i++) {
        if (!read_bits(&b, 1, &v)) return EP_ERR_FORMAT;
        if (v) alphabet[n_alpha++] = (uint8_t)i;
    }
    for (i = 0; i < TOKENS; i++) {
        if (!read_bits(&b, 3, &v)) return EP_ERR_FORMAT;
        token_len[i] = (uint8_t)v;
        token_count[v]++;
    }
    for (l = 1, v = 0; l <= TOKEN_MAX_LEN; l++) { /* complete token code, symbols by length then token */
        left <<= 1;
        if (token_count[l] > left) return EP_ERR_FORMAT;
        left -= token_count[l];
        for (i = 0; i < TOKENS; i++)
            if (token_len[i] == l) token_symbols[v++] = (uint8_t)i;
    }
    if (left != 0 || n_alpha == 0) return EP_ERR_FORMAT;
    cells = n_alpha * n_alpha;
    while (cell < cells) {
        if (!read_token(&b, token_count, token_symbols, &token)) return EP_ERR_FORMAT;
        run = 1;
        v = token;
        if (run_extra[token]) {
            if (!read_bits(&b, run_extra[token], &run)) return EP_ERR_FORMAT;
            run += run_shortest[token];
            if ((token == 19 && cell == 0) || run > cells - cell) return EP_ERR_FORMAT;
            v = token == 19 ? prev : 0;
        }
        for (; run; run--, cell++) {
            if (!v) continue;
            if (!next) {
                s->count[v]++;
            } else {
                s->pairs[2 * next[v]] = alphabet[cell / n_alpha];
                s->pairs[2 * next[v]++ + 1] = alphabet[cell % n_alpha];
            }
        }
        prev = v;
    }
    return (b.pos + 7) / 8 == s->table_len ? EP_OK : EP_ERR_FORMAT;
}

/* Unpacks a compact table into pairs (2 * s->n_used bytes). */
static int load_table(stream *s, uint8_t *pairs) {
    uint32_t next[EP_MAX_CODE_LEN + 1], l, index = 0;
    for (l = 1; l <= EP_MAX_CODE_LEN; l++) {
        next[l] = index;
        index += s->count[l];
    }
    s->pairs = pairs;
    return walk_table(s, next);
}

/* Reads stream k (0 gaps, 1 values) of a tensor and checks its table; sym_bytes 0 accepts 1- or 2-byte
 * symbols. A compact table still has to be unpacked (load_table). Version 4: a stream that keeps its table
 * (flag 0x20) records where it is in tables[k] and its slot in keep[k]; one that reuses a slot's table
 * (flag 0x10) finds it in slots[slot] or, kept by the gaps just before, in tables[0] (ep_next), or in
 * tables[k] (ep_decode, slots NULL: what ep_next found). */
static int open_stream(cursor *c, stream *s, uint8_t sym_bytes, uint16_t version, ep_table_slot *tables,
                       uint8_t *keep, int k, const ep_table_slot *slots) {
    ep_table_slot *table = &tables[k];
    const uint8_t *p = take(c, 5, 1);
    uint32_t l, left = 1, n_used = 0, n_sync, i;
    uint8_t flags, slot = 0, reuse;
    cursor shared, *tc = c; /* where the table is read from */
    int rc;
    if (!p) return EP_ERR_FORMAT;
    s->n = rd32(p);
    flags = p[4];
    reuse = (flags & 0x10) != 0;
    keep[k] = 0;
    if (flags & 0x30) {
        if (version < 4 || (flags & 0x30) == 0x30 || !(p = take(c, 1, 1)) || p[0] >= EP_TABLE_SLOTS)
            return EP_ERR_FORMAT;
        slot = p[0];
    }
    if (reuse) {
        if (slots) *table = k == 1 && keep[0] == slot + 1 ? tables[0] : slots[slot];
        if (!table->table || table->flags != (flags & 0xCF)) return EP_ERR_FORMAT;
        shared.p = table->table;
        shared.end = table->end;
        tc = &shared;
    } else if (flags & 0x20) {
        table->table = c->p;
        table->end = c->end;
        table->flags = flags & 0xCF;
        keep[k] = (uint8_t)(slot + 1);
    }
    if (!(p = take(tc, 1, 1))) return EP_ERR_FORMAT;
    s->paired = (flags & 0x80) != 0;
    s->compact = (flags & 0x40) != 0;
    s->sym_bytes = flags & 0x0F;
    s->max_len = p[0];
    if ((s->sym_bytes != 1 && s->sym_bytes != 2) || (sym_bytes && s->sym_bytes != sym_bytes) ||
        (s->paired && (version < 2 || s->sym_bytes != 1)) || (s->compact && (version < 3 || !s->paired)) ||
        s->max_len > EP_MAX_CODE_LEN || (keep[k] && s->max_len == 0))
        return EP_ERR_FORMAT;
    s->n_codes = s->paired ? s->n / 2 + (s->n & 1) : s->n;
    s->table_bytes = s->paired ? 2 : s->sym_bytes;
    memset(s->count, 0, sizeof s->count);
    if (s->compact) {
        if (!(p = take(tc, 4, 1))) return EP_ERR_FORMAT;
        s->table_len = rd32(p);
        if (s->table_len > MAX_STREAM_BYTES || !(s->table = take(tc, s->table_len, 1))) return EP_ERR_FORMAT;
        if ((rc = walk_table(s, NULL)) != EP_OK) return rc;
        for (l = s->max_len + 1; l <= EP_MAX_CODE_LEN; l++)
            if (s->count[l]) return EP_ERR_FORMAT; /* the stream's max_len is the table's longest code */
        if (s->max_len == 0) return EP_ERR_FORMAT;
    } else {
        if (!(p = take(tc, s->max_len, 4))) return EP_ERR_FORMAT;
        for (l = 1; l <= s->max_len; l++) s->count[l] = rd32(p + 4 * (l - 1));
    }
    for (l = 1; l <= s->max_len; l++) { /* the code must be complete: every bit pattern decodes */
        left <<= 1;
        if (s->count[l] > left) return EP_ERR_FORMAT;
        left -= s->count[l];
        n_used += s->count[l];
    }
    if (s->max_len && (left != 0 || s->count[s->max_len] == 0 || s->n == 0)) return EP_ERR_FORMAT;
    if (!s->max_len) n_used = s->n > 0;
    s->n_used = n_used;
    s->pairs = NULL;
    if ((!s->compact && !(s->symbols = take(tc, n_used, s->table_bytes))) || !(p = take(c, 4, 1)))
        return EP_ERR_FORMAT;
    s->interval = rd32(p);
    if (s->interval == 0) return EP_ERR_FORMAT;
    n_sync = s->n_codes ? (s->n_codes - 1) / s->interval : 0;
    if (!(s->sync = take(c, n_sync, 4)) || !(p = take(c, 4, 1))) return EP_ERR_FORMAT;
    s->n_bytes = rd32(p);
    if (s->n_bytes > MAX_STREAM_BYTES || !(s->data = take(c, s->n_bytes, 1))) return EP_ERR_FORMAT;
    if (!s->max_len) { /* one symbol repeated: no bits */
        if (s->n_bytes) return EP_ERR_FORMAT;
        for (i = 0; i < n_sync; i++)
            if (rd32(s->sync + 4 * i)) return EP_ERR_FORMAT;
    }
    s->bitpos = 0;
    s->index = 0;
    s->have_second = 0;
    return EP_OK;
}

static uint32_t symbol_at(const stream *s, uint32_t i) {
    if (s->compact) return (uint32_t)s->pairs[2 * i] << 8 | s->pairs[2 * i + 1];
    return s->table_bytes == 1 ? s->symbols[i] : rd16(s->symbols + 2 * i);
}

/* Canonical decoding one bit at a time: codes of length l are first_l .. first_l + count[l] - 1. */
static int next_code(stream *s, uint32_t *sym) {
    int32_t code = 0, first = 0, index = 0, count;
    uint32_t l;
    if (s->max_len == 0) {
        *sym = symbol_at(s, 0);
        return EP_OK;
    }
    if (s->index && s->index % s->interval == 0 && s->bitpos != rd32(s->sync + 4 * (s->index / s->interval - 1)))
        return EP_ERR_STREAM;
    s->index++;
    for (l = 1; l <= s->max_len; l++) {
        if (s->bitpos >> 3 >= s->n_bytes) return EP_ERR_STREAM;
        code |= (s->data[s->bitpos >> 3] >> (7 - (s->bitpos & 7))) & 1;
        s->bitpos++;
        count = (int32_t)s->count[l];
        if (code < first + count) {
            *sym = symbol_at(s, (uint32_t)(index + code - first));
            return EP_OK;
        }
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return EP_ERR_STREAM; /* unreachable for a complete code */
}

/* The next symbol; a paired stream yields a pair's first symbol, then keeps its second for the next call.
 * Callers read exactly n symbols, so an odd stream's padding second symbol is never returned. */
static int next_symbol(stream *s, uint32_t *sym) {
    int rc;
    if (s->have_second) {
        s->have_second = 0;
        *sym = s->second;
        return EP_OK;
    }
    if ((rc = next_code(s, sym)) != EP_OK || !s->paired) return rc;
    s->second = *sym & 0xFF;
    s->have_second = 1;
    *sym >>= 8;
    return EP_OK;
}

/* Every symbol read and nothing left over but the padding of the last byte. */
static int close_stream(const stream *s) {
    return s->max_len == 0 || (s->bitpos + 7) / 8 == s->n_bytes ? EP_OK : EP_ERR_STREAM;
}

static void store(void *out, size_t size, uint32_t i, uint32_t v) {
    if (size == 1)
        ((uint8_t *)out)[i] = (uint8_t)v;
    else
        ((uint16_t *)out)[i] = (uint16_t)v;
}

/* Opens a tensor's streams (the gaps only if sparse): nothing may follow them. tables, keep: gaps', values'
 * (see open_stream). */
static int open_streams(const ep_tensor *t, stream *gaps, stream *values, uint32_t *fill, ep_table_slot *tables,
                        uint8_t *keep, const ep_table_slot *slots) {
    cursor c;
    const uint8_t *p;
    int rc;
    c.p = t->coded;
    c.end = t->end;
    *fill = 0;
    keep[0] = 0;
    if (t->coding == EP_SPARSE) {
        if (!(p = take(&c, 2, 1))) return EP_ERR_FORMAT;
        *fill = rd16(p);
        if ((rc = open_stream(&c, gaps, 0, t->version, tables, keep, 0, slots)) != EP_OK) return rc;
    }
    if ((rc = open_stream(&c, values, (uint8_t)ep_dtype_size(t->dtype), t->version, tables, keep, 1, slots)) != EP_OK)
        return rc;
    return c.p == c.end ? EP_OK : EP_ERR_FORMAT;
}

static uint32_t work_of(const ep_tensor *t, const stream *gaps, const stream *values) {
    return 2 * ((t->coding == EP_SPARSE && gaps->compact ? gaps->n_used : 0) + (values->compact ? values->n_used : 0));
}

int ep_decode(const ep_tensor *t, void *out, size_t out_size) { return ep_decode_work(t, out, out_size, NULL, 0); }

int ep_decode_work(const ep_tensor *t, void *out, size_t out_size, void *work, size_t work_size) {
    size_t size = ep_dtype_size(t->dtype);
    uint32_t limit = t->quant == EP_QUANT_CODEBOOK ? t->n_params : 0xFFFFFFFFUL, fill, i, v, gap, pos = 0;
    stream values, gaps;
    uint8_t *pairs = (uint8_t *)work, keep[2];
    ep_table_slot tables[2];
    int rc;

    if (t->n_elements > out_size / size) return EP_ERR_BUFFER;
    tables[0] = t->tables[0];
    tables[1] = t->tables[1];
    if ((rc = open_streams(t, &gaps, &values, &fill, tables, keep, NULL)) != EP_OK) return rc;
    if (work_of(t, &gaps, &values) > work_size) return EP_ERR_BUFFER;
    if (t->coding == EP_SPARSE && gaps.compact) {
        if ((rc = load_table(&gaps, pairs)) != EP_OK) return rc;
        pairs += 2 * (size_t)gaps.n_used;
    }
    if (values.compact && (rc = load_table(&values, pairs)) != EP_OK) return rc;
    if (t->coding == EP_DENSE) {
        if (values.n != t->n_elements) return EP_ERR_FORMAT;
        for (i = 0; i < values.n; i++) {
            if ((rc = next_symbol(&values, &v)) != EP_OK) return rc;
            if (v >= limit) return EP_ERR_FORMAT;
            store(out, size, i, v);
        }
        return close_stream(&values);
    }
    if (gaps.n != values.n || (size == 1 && fill > 255) || (t->n_elements && fill >= limit)) return EP_ERR_FORMAT;
    for (i = 0; i < t->n_elements; i++) store(out, size, i, fill);
    for (i = 0; i < values.n; i++) { /* skip `gap` fill values, then place one value */
        if ((rc = next_symbol(&gaps, &gap)) != EP_OK || (rc = next_symbol(&values, &v)) != EP_OK) return rc;
        if (gap >= t->n_elements - pos || v >= limit) return EP_ERR_FORMAT; /* pos <= n_elements */
        pos += gap;
        store(out, size, pos++, v);
    }
    return (rc = close_stream(&gaps)) != EP_OK ? rc : close_stream(&values);
}

float ep_param_f32(const ep_tensor *t, uint32_t i) {
    uint32_t bits = rd32(t->params + 4 * (size_t)i);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

int32_t ep_zero_point(const ep_tensor *t, uint32_t i) {
    uint32_t bits = rd32(t->params + 4 * ((size_t)t->n_params + i));
    return bits <= 0x7FFFFFFFUL ? (int32_t)bits : -(int32_t)(0xFFFFFFFFUL - bits) - 1;
}
