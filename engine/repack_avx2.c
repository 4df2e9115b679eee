/* repack_avx2.c - AVX2 decode kernel for 8-row repacked Q4_0 weights (repack.h).
 *
 * Per block record, the activation block's two 16-byte halves are broadcast to both
 * 128-bit lanes once, and so is the offset term 8 * sum(y) (as pairwise int32 sums
 * matching the lanes of the products); each of the four 32-byte loads then holds two
 * rows' nibble bytes, multiplied unsigned x signed with maddubs (exact in int16: at most
 * 2 * 15 * 128 per pair, two pairs added), widened with madd, the offset subtracted,
 * converted, and scaled by d_x[row] * d_y per lane. Lanes 0-3 / 4-7 of accumulator k
 * hold rows 2k / 2k + 1, summed at the end of the group. */
#include "engine/repack.h"

#include <immintrin.h>

#include "engine/quant_blocks.h"
#include "engine/quant_internal.h"

void repack_avx2_gemv_q4_0_q8_0(int n, float *s, const void *x, int nr, const void *y)
{
    const int nb = n / QK8_0;
    const struct block_q8_0 *yb = y;
    const struct repack_q4_0x8 *xr = x;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i eights = _mm256_set1_epi8(8);
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i idx[4] = {
        _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3),
        _mm256_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5), _mm256_setr_epi32(6, 6, 6, 6, 7, 7, 7, 7)};
    for (int g = 0; g < nr / REPACK_ROWS; g++) {
        const struct repack_q4_0x8 *rec = xr + (size_t)g * (size_t)nb;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                         _mm256_setzero_ps()};
        for (int ib = 0; ib < nb; ib++, rec++) {
            const __m256i ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)yb[ib].qs));
            const __m256i yhi =
                _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(yb[ib].qs + 16)));
            const __m256i off = _mm256_madd_epi16(
                _mm256_add_epi16(_mm256_maddubs_epi16(eights, ylo), _mm256_maddubs_epi16(eights, yhi)),
                ones);
            const __m256 sc = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)rec->d)),
                                            _mm256_set1_ps(quant_h2f(yb[ib].d)));
            for (int k = 0; k < 4; k++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(rec->qs + 32 * k));
                const __m256i lo = _mm256_and_si256(q, m4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                __m256i p = _mm256_madd_epi16(
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi)), ones);
                p = _mm256_sub_epi32(p, off);
                acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_permutevar8x32_ps(sc, idx[k]),
                                         acc[k]);
            }
        }
        for (int k = 0; k < 4; k++) {
            float t[8];
            _mm256_storeu_ps(t, acc[k]);
            s[g * REPACK_ROWS + 2 * k] = (t[0] + t[1]) + (t[2] + t[3]);
            s[g * REPACK_ROWS + 2 * k + 1] = (t[4] + t[5]) + (t[6] + t[7]);
        }
    }
}
