/* repack_internal.h - the 16-row group records of the K-quant kinds (repack.h), shared
 * by repack_k.c (packing, scalar reference) and repack_k_avx2.c / repack_k_avx512.c.
 *
 * A repacked matrix is nrows / 16 groups, each n / 256 records, record ib of group g
 * holding super-block ib of rows 16g..16g+15 (group-major: a kernel walks one group's
 * records in order). Inside a record every per-row quantity is stored row-minor, so one
 * 64-byte load holds the same 4-byte slice of all 16 rows and a 16-byte load the same
 * 6-bit scale of all 16 rows. Not part of the engine's public API.
 */
#ifndef MESH_ENGINE_REPACK_INTERNAL_H
#define MESH_ENGINE_REPACK_INTERNAL_H

#include <stdint.h>

#include "engine/repack.h"

/* dst <- nrows rows (nrows % REPACK_GROUP == 0) of nb blocks of blk_bytes, row_bytes
 * apart, as groups of nb records of rec_bytes: put(record, r, block) stores row r's
 * block into the record. 0, or MESH_EINVAL when the rows are shorter than nb blocks.
 * Shared by every kind's packing (repack.c, repack_k.c). */
int repack_pack_groups(const void *src, size_t row_bytes, int64_t nb, int64_t nrows, void *dst,
                       size_t blk_bytes, size_t rec_bytes, void (*put)(void *, int, const void *));

/* Q4_K, 16 rows x 256 weights (2368 bytes; the 16 source blocks are 2304):
 *   d[r], dmin[r]  row r's F16 super-block scale and min scale;
 *   sc[j][r]       row r's 6-bit scale of sub-block j (elements 32j..32j+31);
 *   m[p][r][i]     row r's 6-bit min of sub-block 2p + i (pairs, so a zero-extension to
 *                  16 bits gives (m[2p], m[2p+1]) per 32-bit lane for vpmaddwd);
 *   qs[c][t][r][b] row r's source byte qs[32c + 4t + b]: lo nibble = level of element
 *                  64c + 4t + b (sub-block 2c), hi nibble = element 64c + 32 + 4t + b
 *                  (sub-block 2c + 1). */
struct repack_q4_kx16 {
    uint16_t d[REPACK_GROUP];
    uint16_t dmin[REPACK_GROUP];
    uint8_t sc[8][REPACK_GROUP];
    uint8_t m[4][REPACK_GROUP][2];
    uint8_t qs[4][8][REPACK_GROUP][4];
};
_Static_assert(sizeof(struct repack_q4_kx16) == 2368, "repack_q4_kx16 is 2368 bytes");

/* A quarter of a Q6_K record: half h (elements 128h..128h+127), slices t = 4tq + i
 * (i = 0..3) of its two 64-element chunks, in the order the kernels read them:
 *   qh[i][r][b]    bits 2s..2s+1 = high 2 bits of u of element 128h + 32s + 4t + b
 *                  (the source's qh[32h + 4t + b], unchanged);
 *   ql[p][i][r][b] lo nibble = low 4 bits of u of element 128h + 64p + 4t + b, hi
 *                  nibble = of element 128h + 64p + 32 + 4t + b (fields s = 2p, 2p + 1).
 * Field s of slice t lies in sub-block 8h + 2s + tq. */
struct repack_q6_k_quarter {
    uint8_t qh[4][REPACK_GROUP][4];
    uint8_t ql[2][4][REPACK_GROUP][4];
};

/* Q6_K, 16 rows x 256 weights (3360 bytes, as the 16 source blocks). Levels u are 0..63
 * (the weight is d * sc * (u - 32)):
 *   d[r]           row r's F16 super-block scale;
 *   sc[j][r]       row r's signed 8-bit scale of sub-block j (elements 16j..16j+15);
 *   q[2h + tq]     the quarters, so a kernel streams the record front to back. */
struct repack_q6_kx16 {
    uint16_t d[REPACK_GROUP];
    int8_t sc[16][REPACK_GROUP];
    struct repack_q6_k_quarter q[4];
};
_Static_assert(sizeof(struct repack_q6_kx16) == 3360, "repack_q6_kx16 is 3360 bytes");

#endif
