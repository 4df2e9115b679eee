/* repack_avx2.c - AVX2 kernels for 16-row packed Q4_0 and Q8_0 weights (repack.h).
 *
 * A 256-bit register holds one 4-byte slice of 8 rows, so a group is two halves of 8
 * rows. Q4_0: per activation row and block, the 8 nibble registers are multiplied by
 * 32-bit broadcasts of the activation with maddubs (unsigned nibble x signed int8: at
 * most 2 * 15 * 128 per int16 lane), all 8 products summed in int16 (8 * 3840 < 2^15),
 * widened once with madd, and -8 * sum(y) added: exact. Q8_0: the stored q + 128 is
 * turned back into q, and maddubs takes |q| against y carrying q's sign (2 * 128 * 127
 * fits int16), widened per slice. Then conversion and fma by d_x[row] * d_y. Activation
 * rows are tiled by up to 4 per pass over a half group. */
#include "engine/repack.h"

#include <immintrin.h>
#include <string.h>

#include "engine/quant_blocks.h"

enum { TILE = 4 };

static inline __m256i bcast32(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

static inline __attribute__((always_inline)) void
q4_0_tile(int nb, float *s, size_t lds, const struct repack_q4_0x16 *rec, int half,
          const uint8_t *y, size_t by, const int32_t *ysum, int ct)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[TILE];
    for (int c = 0; c < ct; c++) acc[c] = _mm256_setzero_ps();
    for (int ib = 0; ib < nb; ib++, rec++) {
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rec->d + 8 * half)));
        __m256i w[8];
        for (int k = 0; k < 4; k++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)rec->qs[k][8 * half]);
            w[k] = _mm256_and_si256(q, m4);
            w[4 + k] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        }
        for (int c = 0; c < ct; c++) {
            const struct block_q8_0 *yb = (const struct block_q8_0 *)(y + (size_t)c * by) + ib;
            __m256i p = _mm256_maddubs_epi16(w[0], bcast32(yb->qs + 0));
            for (int k = 1; k < 4; k++)
                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w[k], bcast32(yb->qs + 4 * k)));
            for (int k = 0; k < 4; k++)
                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w[4 + k], bcast32(yb->qs + 16 + 4 * k)));
            __m256i p32 = _mm256_madd_epi16(p, ones);
            p32 = _mm256_add_epi32(p32, _mm256_set1_epi32(-8 * ysum[(size_t)c * (size_t)nb + (size_t)ib]));
            const __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(_cvtsh_ss(yb->d)));
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), sc, acc[c]);
        }
    }
    for (int c = 0; c < ct; c++) _mm256_storeu_ps(s + (size_t)c * lds, acc[c]);
}

static inline __attribute__((always_inline)) void
q8_0_tile(int nb, float *s, size_t lds, const struct repack_q8_0x16 *rec, int half,
          const uint8_t *y, size_t by, const int32_t *ysum, int ct)
{
    (void)ysum;
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[TILE];
    for (int c = 0; c < ct; c++) acc[c] = _mm256_setzero_ps();
    for (int ib = 0; ib < nb; ib++, rec++) {
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rec->d + 8 * half)));
        __m256i w[8], a[8];
        for (int k = 0; k < 8; k++) {
            w[k] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)rec->qs[k][8 * half]), flip);
            a[k] = _mm256_abs_epi8(w[k]);
        }
        for (int c = 0; c < ct; c++) {
            const struct block_q8_0 *yb = (const struct block_q8_0 *)(y + (size_t)c * by) + ib;
            __m256i p32 = _mm256_setzero_si256();
            for (int k = 0; k < 8; k++) {
                const __m256i ys = _mm256_sign_epi8(bcast32(yb->qs + 4 * k), w[k]);
                p32 = _mm256_add_epi32(p32, _mm256_madd_epi16(_mm256_maddubs_epi16(a[k], ys), ones));
            }
            const __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(_cvtsh_ss(yb->d)));
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), sc, acc[c]);
        }
    }
    for (int c = 0; c < ct; c++) _mm256_storeu_ps(s + (size_t)c * lds, acc[c]);
}

#define REPACK_TILES(body, rec_t)                                                               \
    for (int g = 0; g < nr / REPACK_GROUP; g++) {                                           \
        const rec_t *rec = (const rec_t *)x + (size_t)g * (size_t)nb;                      \
        for (int half = 0; half < 2; half++)                                                 \
            for (int c0 = 0; c0 < nc; c0 += TILE) {                                          \
                float *so = s + (size_t)c0 * lds + (size_t)g * REPACK_GROUP + 8 * (size_t)half; \
                const uint8_t *yo = (const uint8_t *)y + (size_t)c0 * by;                    \
                const int32_t *ys = ysum + (size_t)c0 * (size_t)nb;                          \
                switch (nc - c0 < TILE ? nc - c0 : TILE) {                                   \
                case 1: body(nb, so, lds, rec, half, yo, by, ys, 1); break;                  \
                case 2: body(nb, so, lds, rec, half, yo, by, ys, 2); break;                  \
                case 3: body(nb, so, lds, rec, half, yo, by, ys, 3); break;                  \
                default: body(nb, so, lds, rec, half, yo, by, ys, 4); break;                 \
                }                                                                            \
            }                                                                                \
    }

void repack_avx2_gemm_q4_0_q8_0(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                                size_t by, const int32_t *ysum, int nc)
{
    const int nb = n / QK8_0;
    REPACK_TILES(q4_0_tile, struct repack_q4_0x16)
}

void repack_avx2_gemm_q8_0_q8_0(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                                size_t by, const int32_t *ysum, int nc)
{
    const int nb = n / QK8_0;
    REPACK_TILES(q8_0_tile, struct repack_q8_0x16)
}
