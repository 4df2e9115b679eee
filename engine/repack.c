/* repack.c - Q4_0 8-row repacking, scalar reference and dispatch (repack.h). */
#include "engine/repack.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "engine/quant.h"
#include "engine/quant_blocks.h"
#include "engine/quant_internal.h"

bool repack_enabled(void)
{
#if defined(__x86_64__)
    const char *off = getenv("MESHLLM_NO_REPACK");
    if (off && off[0] && strcmp(off, "0") != 0) return false;
    const char *isa = quant_isa_name();
    return strcmp(isa, "avx2") == 0 || strcmp(isa, "avx512") == 0;
#else
    return false;
#endif
}

size_t repack_q4_0_bytes(int64_t n, int64_t nrows)
{
    if (n <= 0 || nrows <= 0 || n % QK4_0 != 0 || nrows % REPACK_ROWS != 0) return 0;
    uint64_t recs = (uint64_t)(n / QK4_0);
    uint64_t groups = (uint64_t)(nrows / REPACK_ROWS);
    if (recs > SIZE_MAX / sizeof(struct repack_q4_0x8) / groups) return 0;
    return (size_t)(recs * groups * sizeof(struct repack_q4_0x8));
}

int repack_q4_0(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst)
{
    if (repack_q4_0_bytes(n, nrows) == 0) return MESH_EINVAL;
    const int64_t nb = n / QK4_0;
    if (row_bytes < (size_t)nb * sizeof(struct block_q4_0)) return MESH_EINVAL;
    struct repack_q4_0x8 *out = dst;
    for (int64_t g = 0; g < nrows / REPACK_ROWS; g++) {
        for (int r = 0; r < REPACK_ROWS; r++) {
            const struct block_q4_0 *xb =
                (const void *)((const uint8_t *)src + (size_t)(g * REPACK_ROWS + r) * row_bytes);
            for (int64_t ib = 0; ib < nb; ib++) {
                struct repack_q4_0x8 *rec = &out[g * nb + ib];
                rec->d[r] = xb[ib].d;
                memcpy(&rec->qs[r * 16], xb[ib].qs, 16);
            }
        }
    }
    return 0;
}

void repack_ref_gemv_q4_0_q8_0(int n, float *s, const void *x, int nr, const void *y)
{
    const int nb = n / QK8_0;
    const struct block_q8_0 *yb = y;
    const struct repack_q4_0x8 *xr = x;
    for (int g = 0; g < nr / REPACK_ROWS; g++) {
        for (int r = 0; r < REPACK_ROWS; r++) {
            float acc = 0.0f;
            for (int ib = 0; ib < nb; ib++) {
                const struct repack_q4_0x8 *rec = &xr[(size_t)g * (size_t)nb + (size_t)ib];
                int dot = 0;
                for (int j = 0; j < 16; j++) {
                    dot += ((rec->qs[r * 16 + j] & 0xF) - 8) * yb[ib].qs[j];
                    dot += ((rec->qs[r * 16 + j] >> 4) - 8) * yb[ib].qs[j + 16];
                }
                acc += quant_h2f(rec->d[r]) * quant_h2f(yb[ib].d) * (float)dot;
            }
            s[g * REPACK_ROWS + r] = acc;
        }
    }
}

void repack_gemv_q4_0_q8_0(int n, float *s, const void *x, int nr, const void *y)
{
#if defined(__x86_64__)
    const char *isa = quant_isa_name();
    if (strcmp(isa, "avx512") == 0) {
        repack_avx512_gemv_q4_0_q8_0(n, s, x, nr, y);
        return;
    }
    if (strcmp(isa, "avx2") == 0) {
        repack_avx2_gemv_q4_0_q8_0(n, s, x, nr, y);
        return;
    }
#endif
    repack_ref_gemv_q4_0_q8_0(n, s, x, nr, y);
}
