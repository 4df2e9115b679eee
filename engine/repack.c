/* repack.c - 16-row group packing of Q4_0 and Q8_0 weights, the scalar reference
 * kernels, activation block sums and the choice of kernel per type (repack.h; the
 * K-quant kinds live in repack_k.c). */
#include "engine/repack.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "engine/quant_blocks.h"
#include "engine/quant_internal.h"
#include "engine/repack_internal.h"

void repack_q8_0_sums(int n, const void *y, int32_t *sums)
{
    const struct block_q8_0 *yb = y;
    for (int b = 0; b < n / QK8_0; b++) {
        int32_t s = 0;
        for (int j = 0; j < QK8_0; j++) s += yb[b].qs[j];
        sums[b] = s;
    }
}

/* Records of nrows rows of n elements in groups; 0 if the shape does not qualify. */
static size_t group_bytes(int64_t n, int64_t nrows, int block_len, size_t rec_bytes)
{
    if (n <= 0 || nrows <= 0 || n % block_len != 0 || nrows % REPACK_GROUP != 0) return 0;
    uint64_t recs = (uint64_t)(n / block_len);
    uint64_t groups = (uint64_t)(nrows / REPACK_GROUP);
    if (recs > SIZE_MAX / rec_bytes / groups) return 0;
    return (size_t)(recs * groups * rec_bytes);
}

size_t repack_q4_0_bytes(int64_t n, int64_t nrows)
{
    return group_bytes(n, nrows, QK4_0, sizeof(struct repack_q4_0x16));
}

size_t repack_q8_0_bytes(int64_t n, int64_t nrows)
{
    return group_bytes(n, nrows, QK8_0, sizeof(struct repack_q8_0x16));
}

/* Row r's block of a 16-row record: its scale into d, and (ref_gemm) its exact integer
 * dot with the activation block yq, or (pack_groups) its weights stored from blk. */
static void put_q4_0(void *rec, int r, const void *blk)
{
    struct repack_q4_0x16 *o = rec;
    const struct block_q4_0 *b = blk;
    o->d[r] = b->d;
    for (int k = 0; k < 4; k++) memcpy(o->qs[k][r], b->qs + 4 * k, 4);
}

static void put_q8_0(void *rec, int r, const void *blk)
{
    struct repack_q8_0x16 *o = rec;
    const struct block_q8_0 *b = blk;
    o->d[r] = b->d;
    for (int k = 0; k < 8; k++)
        for (int j = 0; j < 4; j++) o->qs[k][r][j] = (uint8_t)(b->qs[4 * k + j] + 128);
}

static int dot_q4_0(const void *rec, int r, const int8_t *yq, uint16_t *d)
{
    const struct repack_q4_0x16 *o = rec;
    int dot = 0;
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 4; j++) {
            int q = o->qs[k][r][j];
            dot += ((q & 0xF) - 8) * yq[4 * k + j];
            dot += ((q >> 4) - 8) * yq[16 + 4 * k + j];
        }
    *d = o->d[r];
    return dot;
}

static int dot_q8_0(const void *rec, int r, const int8_t *yq, uint16_t *d)
{
    const struct repack_q8_0x16 *o = rec;
    int dot = 0;
    for (int k = 0; k < 8; k++)
        for (int j = 0; j < 4; j++) dot += ((int)o->qs[k][r][j] - 128) * yq[4 * k + j];
    *d = o->d[r];
    return dot;
}

int repack_pack_groups(const void *src, size_t row_bytes, int64_t nb, int64_t nrows, void *dst,
                       size_t blk_bytes, size_t rec_bytes, void (*put)(void *, int, const void *))
{
    if (row_bytes < (size_t)nb * blk_bytes) return MESH_EINVAL;
    for (int64_t g = 0; g < nrows / REPACK_GROUP; g++)
        for (int r = 0; r < REPACK_GROUP; r++) {
            const uint8_t *row = (const uint8_t *)src + (size_t)(g * REPACK_GROUP + r) * row_bytes;
            for (int64_t ib = 0; ib < nb; ib++)
                put((uint8_t *)dst + (size_t)(g * nb + ib) * rec_bytes, r, row + (size_t)ib * blk_bytes);
        }
    return 0;
}

int repack_q4_0(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst)
{
    if (repack_q4_0_bytes(n, nrows) == 0) return MESH_EINVAL;
    return repack_pack_groups(src, row_bytes, n / QK4_0, nrows, dst, sizeof(struct block_q4_0),
                       sizeof(struct repack_q4_0x16), put_q4_0);
}

int repack_q8_0(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst)
{
    if (repack_q8_0_bytes(n, nrows) == 0) return MESH_EINVAL;
    return repack_pack_groups(src, row_bytes, n / QK8_0, nrows, dst, sizeof(struct block_q8_0),
                       sizeof(struct repack_q8_0x16), put_q8_0);
}

/* The references compute each row's block dot exactly as Q4_0's / Q8_0's vec_dot do
 * (integer dot, then d_x * d_y * dot summed over blocks in order), reading the packed
 * layout; ysum is not needed by this arithmetic. */
static void ref_gemm(int n, float *s, size_t lds, const void *x, size_t rec_bytes, int nr,
                     const void *y, size_t by, int nc, int (*dot)(const void *, int, const int8_t *, uint16_t *))
{
    const int nb = n / QK8_0;
    for (int c = 0; c < nc; c++) {
        const struct block_q8_0 *yb = (const void *)((const uint8_t *)y + (size_t)c * by);
        for (int g = 0; g < nr / REPACK_GROUP; g++)
            for (int r = 0; r < REPACK_GROUP; r++) {
                float acc = 0.0f;
                for (int ib = 0; ib < nb; ib++) {
                    uint16_t d;
                    const void *rec = (const uint8_t *)x + ((size_t)g * (size_t)nb + (size_t)ib) * rec_bytes;
                    int v = dot(rec, r, yb[ib].qs, &d);
                    acc += quant_h2f(d) * quant_h2f(yb[ib].d) * (float)v;
                }
                s[(size_t)c * lds + (size_t)g * REPACK_GROUP + (size_t)r] = acc;
            }
    }
}

void repack_ref_gemm_q4_0_q8_0(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                               size_t by, const int32_t *ysum, int nc)
{
    (void)ysum;
    ref_gemm(n, s, lds, x, sizeof(struct repack_q4_0x16), nr, y, by, nc, dot_q4_0);
}

void repack_ref_gemm_q8_0_q8_0(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                               size_t by, const int32_t *ysum, int nc)
{
    (void)ysum;
    ref_gemm(n, s, lds, x, sizeof(struct repack_q8_0x16), nr, y, by, nc, dot_q8_0);
}

enum { KIND_Q4_0, KIND_Q8_0, KIND_Q4_K, KIND_Q6_K, KIND_COUNT };

const struct repack_kind *repack_kind_get(enum qtype type)
{
#if defined(__x86_64__)
    static const struct repack_kind avx512[KIND_COUNT] = {
        {QT_Q4_0, repack_q4_0_bytes, repack_q4_0, repack_avx512_gemm_q4_0_q8_0, true},
        {QT_Q8_0, repack_q8_0_bytes, repack_q8_0, repack_avx512_gemm_q8_0_q8_0, true},
        {QT_Q4_K, repack_q4_k_bytes, repack_q4_k, repack_avx512_gemm_q4_k_q8_k, false},
        {QT_Q6_K, repack_q6_k_bytes, repack_q6_k, repack_avx512_gemm_q6_k_q8_k, false},
    };
    static const struct repack_kind avx2[KIND_COUNT] = {
        {QT_Q4_0, repack_q4_0_bytes, repack_q4_0, repack_avx2_gemm_q4_0_q8_0, true},
        {QT_Q8_0, repack_q8_0_bytes, repack_q8_0, repack_avx2_gemm_q8_0_q8_0, true},
        {QT_Q4_K, repack_q4_k_bytes, repack_q4_k, repack_avx2_gemm_q4_k_q8_k, false},
        {QT_Q6_K, repack_q6_k_bytes, repack_q6_k, repack_avx2_gemm_q6_k_q8_k, false},
    };
    const char *off = getenv("MESHLLM_NO_REPACK");
    if (off && off[0] && strcmp(off, "0") != 0) return NULL;
    const char *isa = quant_isa_name();
    const struct repack_kind *tab = strcmp(isa, "avx512") == 0 ? avx512
                                    : strcmp(isa, "avx2") == 0 ? avx2
                                                               : NULL;
    if (!tab) return NULL;
    for (int i = 0; i < KIND_COUNT; i++)
        if (tab[i].type == type) return &tab[i];
#else
    (void)type;
#endif
    return NULL;
}
