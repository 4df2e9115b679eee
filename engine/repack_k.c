/* repack_k.c - Q4_K and Q6_K weights in 16-row groups (repack.h, repack_internal.h):
 * packing from the GGUF row layout and the scalar reference kernels.
 *
 * The reference reads the repacked layout and forms, per row and super-block, the same
 * exact integer sums as quant's reference vec_dot (quant_ref.c), scaled and summed in
 * the same order, so it equals quant_traits_ref(...)->vec_dot on the original rows up
 * to float rounding. No dispatch here: the caller picks repack_{ref,avx2,avx512}_* by
 * quant_isa_name(). Row counts that are not a multiple of 16 are rejected, not padded.
 */
#include "engine/repack.h"

#include <string.h>

#include "core/err.h"
#include "engine/quant.h"
#include "engine/quant_blocks.h"
#include "engine/quant_internal.h"
#include "engine/repack_internal.h"

/* Bytes of nrows / 16 groups of n / 256 records of rec_bytes; 0 when the shape does not
 * qualify or the size overflows. */
static size_t kx16_bytes(int64_t n, int64_t nrows, size_t rec_bytes)
{
    if (n <= 0 || nrows <= 0 || n % QK_K != 0 || nrows % REPACK_GROUP != 0) return 0;
    uint64_t recs = (uint64_t)(n / QK_K);
    uint64_t groups = (uint64_t)(nrows / REPACK_GROUP);
    if (recs > SIZE_MAX / rec_bytes / groups) return 0;
    return (size_t)(recs * groups * rec_bytes);
}

size_t repack_q4_k_bytes(int64_t n, int64_t nrows)
{
    return kx16_bytes(n, nrows, sizeof(struct repack_q4_kx16));
}

size_t repack_q6_k_bytes(int64_t n, int64_t nrows)
{
    return kx16_bytes(n, nrows, sizeof(struct repack_q6_kx16));
}

/* Row r's super-block b stored into a 16-row record. */
static void put_q4_k(void *out, int r, const void *blk)
{
    struct repack_q4_kx16 *rec = out;
    const struct block_q4_K *b = blk;
    rec->d[r] = b->d;
    rec->dmin[r] = b->dmin;
    for (int j = 0; j < 8; j++) quant_scale_min_k4(j, b->scales, &rec->sc[j][r], &rec->m[j / 2][r][j % 2]);
    for (int c = 0; c < 4; c++)
        for (int t = 0; t < 8; t++) memcpy(rec->qs[c][t][r], &b->qs[32 * c + 4 * t], 4);
}

static void put_q6_k(void *out, int r, const void *blk)
{
    struct repack_q6_kx16 *rec = out;
    const struct block_q6_K *b = blk;
    rec->d[r] = b->d;
    for (int j = 0; j < 16; j++) rec->sc[j][r] = b->scales[j];
    /* Per half h and l = 4t + b: source ql[64h + l] holds elements 128h + l (lo) and + 64
     * (hi), ql[64h + 32 + l] elements + 32 and + 96; qh[32h + l] already holds the four
     * high-bit fields in our order. Four bytes at a time with nibble masks. */
    for (int h = 0; h < 2; h++)
        for (int t = 0; t < 8; t++) {
            struct repack_q6_k_quarter *qq = &rec->q[2 * h + t / 4];
            uint32_t lo, hi;
            memcpy(&lo, &b->ql[64 * h + 4 * t], 4);
            memcpy(&hi, &b->ql[64 * h + 32 + 4 * t], 4);
            const uint32_t p0 = (lo & 0x0F0F0F0Fu) | (hi & 0x0F0F0F0Fu) << 4;
            const uint32_t p1 = (lo >> 4 & 0x0F0F0F0Fu) | (hi & 0xF0F0F0F0u);
            memcpy(qq->ql[0][t % 4][r], &p0, 4);
            memcpy(qq->ql[1][t % 4][r], &p1, 4);
            memcpy(qq->qh[t % 4][r], &b->qh[32 * h + 4 * t], 4);
        }
}

int repack_q4_k(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst)
{
    if (repack_q4_k_bytes(n, nrows) == 0) return MESH_EINVAL;
    return repack_pack_groups(src, row_bytes, n / QK_K, nrows, dst, sizeof(struct block_q4_K),
                              sizeof(struct repack_q4_kx16), put_q4_k);
}

int repack_q6_k(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst)
{
    if (repack_q6_k_bytes(n, nrows) == 0) return MESH_EINVAL;
    return repack_pack_groups(src, row_bytes, n / QK_K, nrows, dst, sizeof(struct block_q6_K),
                              sizeof(struct repack_q6_kx16), put_q6_k);
}

/* Level (0..15) of element e of row r in a Q4_K record. */
static int q4_k_level(const struct repack_q4_kx16 *rec, int r, int e)
{
    int c = e / 64, hi = (e % 64) / 32, t = (e % 32) / 4;
    return (rec->qs[c][t][r][e % 4] >> (4 * hi)) & 0xF;
}

/* Level (0..63) of element e of row r in a Q6_K record. */
static int q6_k_level(const struct repack_q6_kx16 *rec, int r, int e)
{
    const int h = e / 128, p = (e % 128) / 64, s = (e % 128) / 32, t = (e % 32) / 4;
    const struct repack_q6_k_quarter *qq = &rec->q[2 * h + t / 4];
    int lo = (qq->ql[p][t % 4][r][e % 4] >> (4 * (s % 2))) & 0xF;
    return lo | ((qq->qh[t % 4][r][e % 4] >> (2 * s)) & 3) << 4;
}

void repack_ref_gemm_q4_k_q8_k(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                               size_t by, const int32_t *ysum, int nc)
{
    (void)ysum;
    const int nb = n / QK_K;
    const struct repack_q4_kx16 *xr = x;
    for (int c = 0; c < nc; c++) {
        const struct block_q8_K *yb = (const void *)((const uint8_t *)y + (size_t)c * by);
        for (int g = 0; g < nr / REPACK_GROUP; g++)
            for (int r = 0; r < REPACK_GROUP; r++) {
                float sumf = 0.0f;
                for (int ib = 0; ib < nb; ib++) {
                    const struct repack_q4_kx16 *rec = &xr[(size_t)g * (size_t)nb + (size_t)ib];
                    int sumi = 0, summ = 0;
                    for (int j = 0; j < 8; j++) {
                        int dot = 0;
                        for (int l = 0; l < 32; l++)
                            dot += q4_k_level(rec, r, 32 * j + l) * yb[ib].qs[32 * j + l];
                        sumi += rec->sc[j][r] * dot;
                        const int bsum = yb[ib].bsums[2 * j] + yb[ib].bsums[2 * j + 1];
                        summ += rec->m[j / 2][r][j % 2] * bsum;
                    }
                    sumf += quant_h2f(rec->d[r]) * yb[ib].d * (float)sumi;
                    sumf -= quant_h2f(rec->dmin[r]) * yb[ib].d * (float)summ;
                }
                s[(size_t)c * lds + (size_t)g * REPACK_GROUP + (size_t)r] = sumf;
            }
    }
}

void repack_ref_gemm_q6_k_q8_k(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                               size_t by, const int32_t *ysum, int nc)
{
    (void)ysum;
    const int nb = n / QK_K;
    const struct repack_q6_kx16 *xr = x;
    for (int c = 0; c < nc; c++) {
        const struct block_q8_K *yb = (const void *)((const uint8_t *)y + (size_t)c * by);
        for (int g = 0; g < nr / REPACK_GROUP; g++)
            for (int r = 0; r < REPACK_GROUP; r++) {
                float sumf = 0.0f;
                for (int ib = 0; ib < nb; ib++) {
                    const struct repack_q6_kx16 *rec = &xr[(size_t)g * (size_t)nb + (size_t)ib];
                    int sumi = 0;
                    for (int j = 0; j < 16; j++) {
                        int dot = 0;
                        for (int l = 0; l < 16; l++)
                            dot += (q6_k_level(rec, r, 16 * j + l) - 32) * yb[ib].qs[16 * j + l];
                        sumi += rec->sc[j][r] * dot;
                    }
                    sumf += quant_h2f(rec->d[r]) * yb[ib].d * (float)sumi;
                }
                s[(size_t)c * lds + (size_t)g * REPACK_GROUP + (size_t)r] = sumf;
            }
    }
}
