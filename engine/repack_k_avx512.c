/* repack_k_avx512.c - AVX-512 VNNI kernels for Q4_K / Q6_K weights in 16-row groups
 * (repack.h, layout in repack_internal.h) against Q8_K activation rows.
 *
 * One 64-byte load holds the same 4-byte slice of all 16 rows; the levels unpacked from
 * it (u8) meet the activation's matching 4 bytes, broadcast from memory, in vpdpbusd, so
 * lane r of an accumulator is row r's exact int32 sub-block dot. Sub-block dots are
 * scaled by the rows' 6/8-bit scales (vpmulld), summed per super-block, converted and
 * scaled by d_x[r] * d_y. Q4_K's mins enter as sum_j m_j[r] * bsum_j (vpmaddwd of
 * (m[2p], m[2p+1]) against (bsum[2p], bsum[2p+1])); Q6_K's -32 offset as a -32 * bsum
 * start value of each sub-block dot. Up to 8 activation rows (a column tile) share each
 * unpacked weight register; the s rows accumulate across super-blocks in memory (L1), so
 * any nc works. For nc >= 4 the kernels prefetch ahead (see PF_MIN_NC).
 */
#include "engine/repack.h"

#include <immintrin.h>
#include <string.h>

#include "engine/quant_blocks.h"
#include "engine/quant_internal.h"
#include "engine/repack_internal.h"

#define KX_INLINE static inline __attribute__((always_inline))

/* Columns per tile: Q4_K keeps 3 int32 accumulators per column, Q6_K 2 (of 32 zmm). */
enum { Q4_TILE = 8, Q6_TILE = 8 };

/* Software prefetch, for nc >= PF_MIN_NC only: the VNNI-bound loop of a column tile
 * demands one record's lines in bursts too far apart for the hardware prefetchers to
 * keep DRAM busy (nc = 8 from DRAM ran at ~60 % of its L3 speed without it); at nc = 1
 * the hardware streams well and prefetching slowed it. Each record's tile prefetches,
 * spread over its slices, every line of the record PF_RECS ahead (~5-7 KB), if that
 * record belongs to this call. */
enum { PF_MIN_NC = 4, PF_RECS = 2 };

/* The record PF_RECS after rec if the call's records [.., end) hold it, else NULL. */
static const char *pf_target(const void *rec, size_t rec_bytes, const void *end, int nc)
{
    const size_t left = (size_t)((const char *)end - (const char *)rec);
    return nc >= PF_MIN_NC && left > PF_RECS * rec_bytes ? (const char *)rec + PF_RECS * rec_bytes
                                                         : NULL;
}

/* The 4 activation bytes at p, broadcast to every 32-bit lane. */
KX_INLINE __m512i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

/* s rows sk[k][0..15] += d_y[k] * t, t a per-row float partial. */
KX_INLINE void acc_rows(float *sk, __m512 t, float dy)
{
    _mm512_storeu_ps(sk, _mm512_fmadd_ps(t, _mm512_set1_ps(dy), _mm512_loadu_ps(sk)));
}

/* One Q4_K record (16 rows x 256) against the T activation blocks yb[k]. */
KX_INLINE void q4_k_tile(const struct repack_q4_kx16 *rec, const struct block_q8_K *const *yb,
                         float *const *sk, const char *pf, const int T)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    /* bsub[k][p] = (bsum of sub-block 2p, of 2p + 1) as two int16 */
    int32_t bsub[Q4_TILE][4];
#pragma GCC unroll 8
    for (int k = 0; k < T; k++) {
        const __m256i bs = _mm256_loadu_si256((const __m256i *)yb[k]->bsums);
        const __m256i p = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
        const __m256i pk = _mm256_permute4x64_epi64(_mm256_packs_epi32(p, p), 0x08);
        _mm_storeu_si128((__m128i *)bsub[k], _mm256_castsi256_si128(pk));
    }
    __m512i isum[Q4_TILE];
#pragma GCC unroll 8
    for (int k = 0; k < T; k++) isum[k] = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        __m512i a0[Q4_TILE], a1[Q4_TILE];
#pragma GCC unroll 8
        for (int k = 0; k < T; k++) a0[k] = a1[k] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++) {
            const __m512i q = _mm512_loadu_si512((const void *)rec->qs[c][t]);
            if (pf) { /* lines 0..31, and 32..36 on the first chunk: the 37 of a record */
                _mm_prefetch(pf + 64 * (8 * c + t), _MM_HINT_NTA);
                if (c == 0 && t < 5) _mm_prefetch(pf + 64 * (32 + t), _MM_HINT_NTA);
            }
            const __m512i lo = _mm512_and_si512(q, m4);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
#pragma GCC unroll 8
            for (int k = 0; k < T; k++) {
                a0[k] = _mm512_dpbusd_epi32(a0[k], lo, bcast4(yb[k]->qs + 64 * c + 4 * t));
                a1[k] = _mm512_dpbusd_epi32(a1[k], hi, bcast4(yb[k]->qs + 64 * c + 32 + 4 * t));
            }
        }
        const __m512i sc0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)rec->sc[2 * c]));
        const __m512i sc1 =
            _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)rec->sc[2 * c + 1]));
#pragma GCC unroll 8
        for (int k = 0; k < T; k++)
            isum[k] = _mm512_add_epi32(isum[k], _mm512_add_epi32(_mm512_mullo_epi32(a0[k], sc0),
                                                                 _mm512_mullo_epi32(a1[k], sc1)));
    }
    __m512i m16[4];
    for (int p = 0; p < 4; p++)
        m16[p] = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)rec->m[p]));
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)rec->d));
    const __m512 dm = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)rec->dmin));
#pragma GCC unroll 8
    for (int k = 0; k < T; k++) {
        __m512i summ = _mm512_madd_epi16(m16[0], _mm512_set1_epi32(bsub[k][0]));
        for (int p = 1; p < 4; p++)
            summ = _mm512_add_epi32(summ, _mm512_madd_epi16(m16[p], _mm512_set1_epi32(bsub[k][p])));
        __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(isum[k]), d);
        t = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(summ), dm, t);
        acc_rows(sk[k], t, yb[k]->d);
    }
}

/* Level bytes u (0..63) of field s (0..3) of slice i of quarter qq of a Q6_K record:
 * the ql nibble, low or high, | the qh bit pair moved to bits 4-5. */
KX_INLINE __m512i q6_k_levels(const struct repack_q6_k_quarter *qq, int i, int s)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    const __m512i qh = _mm512_loadu_si512((const void *)qq->qh[i]);
    const __m512i ql = _mm512_loadu_si512((const void *)qq->ql[s / 2][i]);
    __m512i hb;
    switch (s) {
    case 0: hb = _mm512_slli_epi16(qh, 4); break;
    case 1: hb = _mm512_slli_epi16(qh, 2); break;
    case 2: hb = qh; break;
    default: hb = _mm512_srli_epi16(qh, 2); break;
    }
    /* (A & 0x0F) | B: ternary-logic immediate 0xEC */
    return _mm512_ternarylogic_epi32(s % 2 ? _mm512_srli_epi16(ql, 4) : ql,
                                     _mm512_and_si512(hb, m30), m4, 0xEC);
}

/* One Q6_K record (16 rows x 256) against the T activation blocks yb[k]. */
KX_INLINE void q6_k_tile(const struct repack_q6_kx16 *rec, const struct block_q8_K *const *yb,
                         float *const *sk, const char *pf, const int T)
{
    /* neg[k][j] = -32 * bsum j: the start of sub-block j's dot, so u - 32 is what counts */
    int32_t neg[Q6_TILE][16];
#pragma GCC unroll 8
    for (int k = 0; k < T; k++) {
        const __m512i bs =
            _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)yb[k]->bsums));
        _mm512_storeu_si512(neg[k],
                            _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(bs, 5)));
    }
    __m512i isum[Q6_TILE];
#pragma GCC unroll 8
    for (int k = 0; k < T; k++) isum[k] = _mm512_setzero_si512();
    for (int h = 0; h < 2; h++)
        for (int tq = 0; tq < 2; tq++)
#pragma GCC unroll 4
            for (int s = 0; s < 4; s++) {
                /* slices t = 4tq..4tq+3 of field s: sub-block j */
                const int j = 8 * h + 2 * s + tq;
                __m512i a[Q6_TILE];
#pragma GCC unroll 8
                for (int k = 0; k < T; k++) a[k] = _mm512_set1_epi32(neg[k][j]);
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    const int t = 4 * tq + i;
                    const int line = 16 * (2 * h + tq) + 4 * s + i; /* 0..63 */
                    /* a record spans at most 53 lines (3360 bytes, maybe 32 into one) */
                    if (pf && line < 53) _mm_prefetch(pf + 64 * line, _MM_HINT_NTA);
                    const __m512i w = q6_k_levels(&rec->q[2 * h + tq], i, s);
#pragma GCC unroll 8
                    for (int k = 0; k < T; k++)
                        a[k] = _mm512_dpbusd_epi32(a[k], w,
                                                   bcast4(yb[k]->qs + 128 * h + 32 * s + 4 * t));
                }
                const __m512i sc =
                    _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)rec->sc[j]));
#pragma GCC unroll 8
                for (int k = 0; k < T; k++)
                    isum[k] = _mm512_add_epi32(isum[k], _mm512_mullo_epi32(a[k], sc));
            }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)rec->d));
#pragma GCC unroll 8
    for (int k = 0; k < T; k++)
        acc_rows(sk[k], _mm512_mul_ps(_mm512_cvtepi32_ps(isum[k]), d), yb[k]->d);
}

/* Zeroes the 16 s entries of group g for each of the nc columns. */
static void zero_group(float *s, size_t lds, int g, int nc)
{
    for (int c = 0; c < nc; c++)
        _mm512_storeu_ps(s + (size_t)c * lds + (size_t)g * REPACK_GROUP, _mm512_setzero_ps());
}

/* Pointers of the tile's T columns: activation block ib of columns kc.., s rows of g. */
static void tile_ptrs(const void *y, size_t by, int ib, float *s, size_t lds, int g, int kc,
                      int T, const struct block_q8_K **yb, float **sk)
{
    for (int k = 0; k < T; k++) {
        yb[k] = (const struct block_q8_K *)((const uint8_t *)y + (size_t)(kc + k) * by) + ib;
        sk[k] = s + (size_t)(kc + k) * lds + (size_t)g * REPACK_GROUP;
    }
}

void repack_avx512_gemm_q4_k_q8_k(int n, float *s, size_t lds, const void *x, int nr,
                                  const void *y, size_t by, const int32_t *ysum, int nc)
{
    (void)ysum;
    const int nb = n / QK_K;
    const struct repack_q4_kx16 *xr = x;
    const void *end = xr + (size_t)(nr / REPACK_GROUP) * (size_t)nb;
    for (int g = 0; g < nr / REPACK_GROUP; g++) {
        zero_group(s, lds, g, nc);
        for (int ib = 0; ib < nb; ib++) {
            const struct repack_q4_kx16 *rec = xr + (size_t)g * (size_t)nb + (size_t)ib;
            const char *pf = pf_target(rec, sizeof *rec, end, nc);
            for (int kc = 0; kc < nc; kc += Q4_TILE, pf = NULL) {
                const int T = nc - kc < Q4_TILE ? nc - kc : Q4_TILE;
                const struct block_q8_K *yb[Q4_TILE];
                float *sk[Q4_TILE];
                tile_ptrs(y, by, ib, s, lds, g, kc, T, yb, sk);
                switch (T) {
                case 1: q4_k_tile(rec, yb, sk, pf, 1); break;
                case 2: q4_k_tile(rec, yb, sk, pf, 2); break;
                case 3: q4_k_tile(rec, yb, sk, pf, 3); break;
                case 4: q4_k_tile(rec, yb, sk, pf, 4); break;
                case 5: q4_k_tile(rec, yb, sk, pf, 5); break;
                case 6: q4_k_tile(rec, yb, sk, pf, 6); break;
                case 7: q4_k_tile(rec, yb, sk, pf, 7); break;
                default: q4_k_tile(rec, yb, sk, pf, 8); break;
                }
            }
        }
    }
}

void repack_avx512_gemm_q6_k_q8_k(int n, float *s, size_t lds, const void *x, int nr,
                                  const void *y, size_t by, const int32_t *ysum, int nc)
{
    (void)ysum;
    const int nb = n / QK_K;
    const struct repack_q6_kx16 *xr = x;
    const void *end = xr + (size_t)(nr / REPACK_GROUP) * (size_t)nb;
    for (int g = 0; g < nr / REPACK_GROUP; g++) {
        zero_group(s, lds, g, nc);
        for (int ib = 0; ib < nb; ib++) {
            const struct repack_q6_kx16 *rec = xr + (size_t)g * (size_t)nb + (size_t)ib;
            const char *pf = pf_target(rec, sizeof *rec, end, nc);
            for (int kc = 0; kc < nc; kc += Q6_TILE, pf = NULL) {
                const int T = nc - kc < Q6_TILE ? nc - kc : Q6_TILE;
                const struct block_q8_K *yb[Q6_TILE];
                float *sk[Q6_TILE];
                tile_ptrs(y, by, ib, s, lds, g, kc, T, yb, sk);
                switch (T) {
                case 1: q6_k_tile(rec, yb, sk, pf, 1); break;
                case 2: q6_k_tile(rec, yb, sk, pf, 2); break;
                case 3: q6_k_tile(rec, yb, sk, pf, 3); break;
                case 4: q6_k_tile(rec, yb, sk, pf, 4); break;
                case 5: q6_k_tile(rec, yb, sk, pf, 5); break;
                case 6: q6_k_tile(rec, yb, sk, pf, 6); break;
                case 7: q6_k_tile(rec, yb, sk, pf, 7); break;
                default: q6_k_tile(rec, yb, sk, pf, 8); break;
                }
            }
        }
    }
}
