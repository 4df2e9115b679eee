/* repack_avx512.c - AVX-512 VNNI decode kernel for 8-row repacked Q4_0 weights
 * (repack.h).
 *
 * Per block record the activation halves are broadcast to the four 128-bit lanes and
 * the offset -8 * sum(y) is formed once with vpdpbusd (as pairwise sums matching the
 * lanes of the products); each of the two 64-byte loads holds four rows' nibble bytes,
 * multiplied unsigned x signed with vpdpbusd starting from that offset (exact in int32),
 * converted and scaled by d_x[row] * d_y per lane. Lanes 4j..4j+3 of accumulator k hold
 * row 4k + j, summed at the end of the group. */
#include "engine/repack.h"

#include <immintrin.h>

#include "engine/quant_blocks.h"
#include "engine/quant_internal.h"

void repack_avx512_gemv_q4_0_q8_0(int n, float *s, const void *x, int nr, const void *y)
{
    const int nb = n / QK8_0;
    const struct block_q8_0 *yb = y;
    const struct repack_q4_0x8 *xr = x;
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i eights = _mm512_set1_epi8(8);
    const __m512i idx[2] = {
        _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
        _mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7)};
    for (int g = 0; g < nr / REPACK_ROWS; g++) {
        const struct repack_q4_0x8 *rec = xr + (size_t)g * (size_t)nb;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        for (int ib = 0; ib < nb; ib++, rec++) {
            const __m512i ylo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)yb[ib].qs));
            const __m512i yhi =
                _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(yb[ib].qs + 16)));
            const __m512i pos = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), eights, ylo),
                                                    eights, yhi);
            const __m512i off = _mm512_sub_epi32(_mm512_setzero_si512(), pos);
            const __m256 sc8 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)rec->d)),
                                             _mm256_set1_ps(quant_h2f(yb[ib].d)));
            const __m512 sc = _mm512_castps256_ps512(sc8);
            const __m512i q0 = _mm512_loadu_si512((const void *)rec->qs);
            const __m512i q1 = _mm512_loadu_si512((const void *)(rec->qs + 64));
            __m512i p0 = _mm512_dpbusd_epi32(off, _mm512_and_si512(q0, m4), ylo);
            __m512i p1 = _mm512_dpbusd_epi32(off, _mm512_and_si512(q1, m4), ylo);
            p0 = _mm512_dpbusd_epi32(p0, _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4), yhi);
            p1 = _mm512_dpbusd_epi32(p1, _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4), yhi);
            acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), _mm512_permutexvar_ps(idx[0], sc), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p1), _mm512_permutexvar_ps(idx[1], sc), acc1);
        }
        float t[32];
        _mm512_storeu_ps(t, acc0);
        _mm512_storeu_ps(t + 16, acc1);
        for (int r = 0; r < REPACK_ROWS; r++)
            s[g * REPACK_ROWS + r] = (t[4 * r] + t[4 * r + 1]) + (t[4 * r + 2] + t[4 * r + 3]);
    }
}
