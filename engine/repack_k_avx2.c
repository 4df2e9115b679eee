/* repack_k_avx2.c - AVX2 kernels for Q4_K / Q6_K weights in 16-row groups (repack.h,
 * layout in repack_internal.h) against Q8_K activation rows; no VNNI.
 *
 * A 256-bit register holds the same 4-byte slice of 8 rows (half of a 64-byte slice), so
 * each record is walked twice, once per half group (the second walk hits L1). vpmaddubsw
 * (u8 levels x s8 activations, broadcast) gives int16 pair sums that are accumulated in
 * int16 while they provably fit (Q4_K: 8 slices, <= 8 * 2 * 15 * 128; Q6_K: 2 slices,
 * <= 2 * 2 * 63 * 128), then vpmaddwd by the rows' scales, duplicated into both 16-bit
 * halves of a lane, gives int32 scale x dot. Mins and the Q6_K -32 offset as in the
 * AVX-512 kernels. Plain AVX2 + FMA + F16C.
 */
#include "engine/repack.h"

#include <immintrin.h>
#include <string.h>

#include "engine/quant_blocks.h"
#include "engine/quant_internal.h"
#include "engine/repack_internal.h"

#define KX_INLINE static inline __attribute__((always_inline))

enum { Q4_TILE = 4, Q6_TILE = 4, HALF = REPACK_GROUP / 2 };

KX_INLINE __m256i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

/* 8 scales (u8 or s8 already widened to int32) as (sc, sc) int16 pairs per lane. */
KX_INLINE __m256i dup16(__m256i sc32)
{
    return _mm256_blend_epi16(sc32, _mm256_slli_epi32(sc32, 16), 0xAA);
}

KX_INLINE void acc_rows(float *sk, __m256 t, float dy)
{
    _mm256_storeu_ps(sk, _mm256_fmadd_ps(t, _mm256_set1_ps(dy), _mm256_loadu_ps(sk)));
}

/* Rows 8hg..8hg+7 of one Q4_K record against T activation blocks; bsub as in AVX-512. */
KX_INLINE void q4_k_half(const struct repack_q4_kx16 *rec, int hg,
                         const struct block_q8_K *const *yb, int32_t (*bsub)[4],
                         float *const *sk, const int T)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const int r0 = HALF * hg;
    __m256i isum[Q4_TILE];
#pragma GCC unroll 4
    for (int k = 0; k < T; k++) isum[k] = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i a0[Q4_TILE], a1[Q4_TILE];
#pragma GCC unroll 4
        for (int k = 0; k < T; k++) a0[k] = a1[k] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)rec->qs[c][t][r0]);
            const __m256i lo = _mm256_and_si256(q, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
#pragma GCC unroll 4
            for (int k = 0; k < T; k++) {
                a0[k] = _mm256_add_epi16(
                    a0[k], _mm256_maddubs_epi16(lo, bcast4(yb[k]->qs + 64 * c + 4 * t)));
                a1[k] = _mm256_add_epi16(
                    a1[k], _mm256_maddubs_epi16(hi, bcast4(yb[k]->qs + 64 * c + 32 + 4 * t)));
            }
        }
        const __m256i sc0 =
            dup16(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)&rec->sc[2 * c][r0])));
        const __m256i sc1 =
            dup16(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)&rec->sc[2 * c + 1][r0])));
#pragma GCC unroll 4
        for (int k = 0; k < T; k++)
            isum[k] = _mm256_add_epi32(isum[k], _mm256_add_epi32(_mm256_madd_epi16(a0[k], sc0),
                                                                 _mm256_madd_epi16(a1[k], sc1)));
    }
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)&rec->d[r0]));
    const __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)&rec->dmin[r0]));
#pragma GCC unroll 4
    for (int k = 0; k < T; k++) {
        __m256i summ = _mm256_setzero_si256();
        for (int p = 0; p < 4; p++) {
            const __m256i m16 =
                _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)rec->m[p][r0]));
            summ = _mm256_add_epi32(summ, _mm256_madd_epi16(m16, _mm256_set1_epi32(bsub[k][p])));
        }
        __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(isum[k]), d);
        t = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(summ), dm, t);
        acc_rows(sk[k] + r0, t, yb[k]->d);
    }
}

KX_INLINE void q4_k_tile(const struct repack_q4_kx16 *rec, const struct block_q8_K *const *yb,
                         float *const *sk, const int T)
{
    int32_t bsub[Q4_TILE][4];
    for (int k = 0; k < T; k++) {
        const __m256i bs = _mm256_loadu_si256((const __m256i *)yb[k]->bsums);
        const __m256i p = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
        const __m256i pk = _mm256_permute4x64_epi64(_mm256_packs_epi32(p, p), 0x08);
        _mm_storeu_si128((__m128i *)bsub[k], _mm256_castsi256_si128(pk));
    }
    q4_k_half(rec, 0, yb, bsub, sk, T);
    q4_k_half(rec, 1, yb, bsub, sk, T);
}

/* Level bytes of field s (0..3) of slice i of quarter qq, rows r0..r0+7 of a Q6_K record. */
KX_INLINE __m256i q6_k_levels(const struct repack_q6_k_quarter *qq, int i, int s, int r0)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)qq->qh[i][r0]);
    const __m256i ql = _mm256_loadu_si256((const __m256i *)qq->ql[s / 2][i][r0]);
    const __m256i lo = _mm256_and_si256(s % 2 ? _mm256_srli_epi16(ql, 4) : ql, m4);
    __m256i hb;
    switch (s) {
    case 0: hb = _mm256_slli_epi16(qh, 4); break;
    case 1: hb = _mm256_slli_epi16(qh, 2); break;
    case 2: hb = qh; break;
    default: hb = _mm256_srli_epi16(qh, 2); break;
    }
    return _mm256_or_si256(lo, _mm256_and_si256(hb, m30));
}

KX_INLINE void q6_k_half(const struct repack_q6_kx16 *rec, int hg,
                         const struct block_q8_K *const *yb, int32_t (*neg)[16],
                         float *const *sk, const int T)
{
    const int r0 = HALF * hg;
    __m256i isum[Q6_TILE];
#pragma GCC unroll 4
    for (int k = 0; k < T; k++) isum[k] = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++)
        for (int tq = 0; tq < 2; tq++)
#pragma GCC unroll 4
            for (int s = 0; s < 4; s++) {
                const int j = 8 * h + 2 * s + tq; /* sub-block of slices 4tq..4tq+3 */
                const __m256i sc32 =
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)&rec->sc[j][r0]));
                const __m256i sc = dup16(sc32);
#pragma GCC unroll 2
                for (int pair = 0; pair < 2; pair++) {
                    const int t = 4 * tq + 2 * pair;
                    const struct repack_q6_k_quarter *qq = &rec->q[2 * h + tq];
                    const __m256i w0 = q6_k_levels(qq, 2 * pair, s, r0);
                    const __m256i w1 = q6_k_levels(qq, 2 * pair + 1, s, r0);
                    const int e = 128 * h + 32 * s + 4 * t;
#pragma GCC unroll 4
                    for (int k = 0; k < T; k++) {
                        const __m256i a = _mm256_add_epi16(
                            _mm256_maddubs_epi16(w0, bcast4(yb[k]->qs + e)),
                            _mm256_maddubs_epi16(w1, bcast4(yb[k]->qs + e + 4)));
                        isum[k] = _mm256_add_epi32(isum[k], _mm256_madd_epi16(a, sc));
                    }
                }
#pragma GCC unroll 4
                for (int k = 0; k < T; k++)
                    isum[k] = _mm256_add_epi32(
                        isum[k], _mm256_mullo_epi32(sc32, _mm256_set1_epi32(neg[k][j])));
            }
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)&rec->d[r0]));
#pragma GCC unroll 4
    for (int k = 0; k < T; k++)
        acc_rows(sk[k] + r0, _mm256_mul_ps(_mm256_cvtepi32_ps(isum[k]), d), yb[k]->d);
}

KX_INLINE void q6_k_tile(const struct repack_q6_kx16 *rec, const struct block_q8_K *const *yb,
                         float *const *sk, const int T)
{
    int32_t neg[Q6_TILE][16];
    for (int k = 0; k < T; k++)
        for (int j = 0; j < 16; j++) neg[k][j] = -32 * yb[k]->bsums[j];
    q6_k_half(rec, 0, yb, neg, sk, T);
    q6_k_half(rec, 1, yb, neg, sk, T);
}

static void zero_group(float *s, size_t lds, int g, int nc)
{
    for (int c = 0; c < nc; c++) {
        float *p = s + (size_t)c * lds + (size_t)g * REPACK_GROUP;
        _mm256_storeu_ps(p, _mm256_setzero_ps());
        _mm256_storeu_ps(p + 8, _mm256_setzero_ps());
    }
}

static void tile_ptrs(const void *y, size_t by, int ib, float *s, size_t lds, int g, int kc,
                      int T, const struct block_q8_K **yb, float **sk)
{
    for (int k = 0; k < T; k++) {
        yb[k] = (const struct block_q8_K *)((const uint8_t *)y + (size_t)(kc + k) * by) + ib;
        sk[k] = s + (size_t)(kc + k) * lds + (size_t)g * REPACK_GROUP;
    }
}

void repack_avx2_gemm_q4_k_q8_k(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                                size_t by, const int32_t *ysum, int nc)
{
    (void)ysum;
    const int nb = n / QK_K;
    const struct repack_q4_kx16 *xr = x;
    for (int g = 0; g < nr / REPACK_GROUP; g++) {
        zero_group(s, lds, g, nc);
        for (int ib = 0; ib < nb; ib++) {
            const struct repack_q4_kx16 *rec = xr + (size_t)g * (size_t)nb + (size_t)ib;
            for (int kc = 0; kc < nc; kc += Q4_TILE) {
                const int T = nc - kc < Q4_TILE ? nc - kc : Q4_TILE;
                const struct block_q8_K *yb[Q4_TILE];
                float *sk[Q4_TILE];
                tile_ptrs(y, by, ib, s, lds, g, kc, T, yb, sk);
                switch (T) {
                case 1: q4_k_tile(rec, yb, sk, 1); break;
                case 2: q4_k_tile(rec, yb, sk, 2); break;
                case 3: q4_k_tile(rec, yb, sk, 3); break;
                default: q4_k_tile(rec, yb, sk, 4); break;
                }
            }
        }
    }
}

void repack_avx2_gemm_q6_k_q8_k(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                                size_t by, const int32_t *ysum, int nc)
{
    (void)ysum;
    const int nb = n / QK_K;
    const struct repack_q6_kx16 *xr = x;
    for (int g = 0; g < nr / REPACK_GROUP; g++) {
        zero_group(s, lds, g, nc);
        for (int ib = 0; ib < nb; ib++) {
            const struct repack_q6_kx16 *rec = xr + (size_t)g * (size_t)nb + (size_t)ib;
            for (int kc = 0; kc < nc; kc += Q6_TILE) {
                const int T = nc - kc < Q6_TILE ? nc - kc : Q6_TILE;
                const struct block_q8_K *yb[Q6_TILE];
                float *sk[Q6_TILE];
                tile_ptrs(y, by, ib, s, lds, g, kc, T, yb, sk);
                switch (T) {
                case 1: q6_k_tile(rec, yb, sk, 1); break;
                case 2: q6_k_tile(rec, yb, sk, 2); break;
                case 3: q6_k_tile(rec, yb, sk, 3); break;
                default: q6_k_tile(rec, yb, sk, 4); break;
                }
            }
        }
    }
}
