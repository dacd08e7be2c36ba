/* Test driver for ep_huffman.c (test code: it may allocate and print).
 *
 *   ep_driver decode IN OUT   decode every tensor of IN; OUT gets, per tensor:
 *                             name_len u16, name, dtype u8, quant u8, coding u8, ndim u8,
 *                             dims u32 * ndim, n_params u32, params (f32 * n, then i32 * n if affine),
 *                             values (n_elements * dtype size)
 *   ep_driver batch IN MAX [nowork]
 *                             IN is a series of (u32 length, container); prints one line per
 *                             container: its status and the CRC-32 of all decoded values. A tensor
 *                             of more than MAX elements gets an empty buffer (so EP_ERR_BUFFER);
 *                             with nowork, no tensor gets a workspace (ep_decode)
 *
 * Each container, tensor and workspace gets a buffer of exactly its size, so a sanitizer build
 * catches any access beyond them. Exit 1 with "error CODE" on stdout if decode fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ep_huffman.h"

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) exit(2);
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) exit(2);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Decodes all tensors of a container; writes them to `out` if given; folds values into *crc. */
static int decode_all(const uint8_t *buf, size_t len, unsigned long max_elements, int use_work, FILE *out,
                      uint32_t *crc) {
    ep_reader r;
    ep_tensor t;
    int rc = ep_open(&r, buf, len);
    while (rc == EP_OK && (rc = ep_next(&r, &t)) == EP_OK) {
        size_t size = t.n_elements > max_elements ? 0 : (size_t)t.n_elements * ep_dtype_size(t.dtype);
        void *values = malloc(size ? size : 1), *work = malloc(t.work_bytes ? t.work_bytes : 1);
        if (!values || !work) exit(2);
        rc = use_work ? ep_decode_work(&t, values, size, work, t.work_bytes) : ep_decode(&t, values, size);
        if (rc == EP_OK) {
            *crc = ep_crc32(*crc, values, size);
            if (out) {
                uint32_t i;
                fwrite(&t.name_len, 2, 1, out);
                fwrite(t.name, 1, t.name_len, out);
                fwrite(&t.dtype, 1, 1, out);
                fwrite(&t.quant, 1, 1, out);
                fwrite(&t.coding, 1, 1, out);
                fwrite(&t.ndim, 1, 1, out);
                fwrite(t.dims, 4, t.ndim, out);
                fwrite(&t.n_params, 4, 1, out);
                for (i = 0; i < t.n_params; i++) { /* through the getters, to test them */
                    float f = ep_param_f32(&t, i);
                    fwrite(&f, 4, 1, out);
                }
                for (i = 0; t.quant == EP_QUANT_AFFINE && i < t.n_params; i++) {
                    int32_t z = ep_zero_point(&t, i);
                    fwrite(&z, 4, 1, out);
                }
                fwrite(values, 1, size, out);
            }
        }
        free(values);
        free(work);
    }
    return rc == EP_END ? EP_OK : rc;
}

int main(int argc, char **argv) {
    size_t len, pos = 0;
    uint8_t *buf;
    if (argc < 3) return 2;
    buf = read_file(argv[2], &len);
    if (strcmp(argv[1], "decode") == 0 && argc == 4) {
        FILE *out = fopen(argv[3], "wb");
        uint32_t crc = 0;
        int rc;
        if (!out) return 2;
        rc = decode_all(buf, len, 0xFFFFFFFFUL, 1, out, &crc);
        fclose(out);
        free(buf);
        if (rc != EP_OK) {
            printf("error %d\n", rc);
            return 1;
        }
        return 0;
    }
    if (strcmp(argv[1], "batch") == 0 && (argc == 4 || (argc == 5 && strcmp(argv[4], "nowork") == 0))) {
        unsigned long max_elements = strtoul(argv[3], NULL, 10);
        while (len - pos >= 4) {
            uint32_t n = (uint32_t)buf[pos] | (uint32_t)buf[pos + 1] << 8 | (uint32_t)buf[pos + 2] << 16 |
                         (uint32_t)buf[pos + 3] << 24, crc = 0;
            uint8_t *one = malloc(n ? n : 1);
            if (!one || n > len - pos - 4) return 2;
            memcpy(one, buf + pos + 4, n);
            pos += 4 + (size_t)n;
            int rc = decode_all(one, n, max_elements, argc == 4, NULL, &crc);
            printf("%d %lu\n", rc, (unsigned long)crc);
            free(one);
        }
        free(buf);
        return 0;
    }
    return 2;
}
