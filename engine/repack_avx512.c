/* repack_avx512.c - AVX-512 VNNI kernels for 16-row packed Q4_0 and Q8_0 weights
 * (repack.h).
 *
 * Per group record the 16 rows' 4-byte slices fill one register each (Q4_0: 4 loads,
 * split into low and high nibbles; Q8_0: 8 loads, already unsigned), and the 16 scales
 * convert at once. Per activation row the slices' partners are 32-bit broadcasts from
 * memory: 8 vpdpbusd (two chains) make every lane one row's exact block dot, starting
 * from the offset -8 * sum(y) (Q4_0: weights are q - 8) or -128 * sum(y) (Q8_0: stored
 * as q + 128); then one conversion and one fma by d_x[row] * d_y. Activation rows are
 * tiled by up to 8, so each group's weights are loaded and unpacked once per tile and
 * stay in L2 across tiles. */
#include "engine/repack.h"

#include <immintrin.h>
#include <string.h>

#include "engine/quant_blocks.h"

enum { TILE = 8 };

/* Batches: a record takes long enough to compute (8 dot chains per activation row) that
 * the hardware prefetchers fall behind and the weights' lines, used once per tile, push
 * the activations out of L1. So the tiles fetch PF_RECS records ahead with the
 * non-temporal hint (into L1, not kept in the outer caches' recency order); prefetches
 * never fault, so running past the matrix is harmless. Measured with 8 activation rows:
 * 157 -> 200 t/s batched decode of a 1.1B Q4_0 model. Decode (one row, nc == 1) is
 * memory-bound and streams better without. */
enum { PF_RECS = 4 };

static inline void prefetch_nta(const void *p, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + o, _MM_HINT_NTA);
}

static inline __m512i bcast32(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

static inline __attribute__((always_inline)) void
q4_0_tile(int nb, float *s, size_t lds, const struct repack_q4_0x16 *rec, const uint8_t *y,
          size_t by, const int32_t *ysum, int ct)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512 acc[TILE];
    for (int c = 0; c < ct; c++) acc[c] = _mm512_setzero_ps();
    for (int ib = 0; ib < nb; ib++, rec++) {
        if (ct >= 2) prefetch_nta(rec + PF_RECS, sizeof *rec);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)rec->d));
        __m512i w[8];
        for (int k = 0; k < 4; k++) {
            const __m512i q = _mm512_loadu_si512((const void *)rec->qs[k]);
            w[k] = _mm512_and_si512(q, m4);
            w[4 + k] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
        }
        for (int c = 0; c < ct; c++) {
            const struct block_q8_0 *yb = (const struct block_q8_0 *)(y + (size_t)c * by) + ib;
            __m512i p0 = _mm512_set1_epi32(-8 * ysum[(size_t)c * (size_t)nb + (size_t)ib]);
            __m512i p1 = _mm512_setzero_si512();
            p0 = _mm512_dpbusd_epi32(p0, w[0], bcast32(yb->qs + 0));
            p1 = _mm512_dpbusd_epi32(p1, w[1], bcast32(yb->qs + 4));
            p0 = _mm512_dpbusd_epi32(p0, w[2], bcast32(yb->qs + 8));
            p1 = _mm512_dpbusd_epi32(p1, w[3], bcast32(yb->qs + 12));
            p0 = _mm512_dpbusd_epi32(p0, w[4], bcast32(yb->qs + 16));
            p1 = _mm512_dpbusd_epi32(p1, w[5], bcast32(yb->qs + 20));
            p0 = _mm512_dpbusd_epi32(p0, w[6], bcast32(yb->qs + 24));
            p1 = _mm512_dpbusd_epi32(p1, w[7], bcast32(yb->qs + 28));
            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(_cvtsh_ss(yb->d)));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1)), sc, acc[c]);
        }
    }
    for (int c = 0; c < ct; c++) _mm512_storeu_ps(s + (size_t)c * lds, acc[c]);
}

static inline __attribute__((always_inline)) void
q8_0_tile(int nb, float *s, size_t lds, const struct repack_q8_0x16 *rec, const uint8_t *y,
          size_t by, const int32_t *ysum, int ct)
{
    __m512 acc[TILE];
    for (int c = 0; c < ct; c++) acc[c] = _mm512_setzero_ps();
    for (int ib = 0; ib < nb; ib++, rec++) {
        if (ct >= 2) prefetch_nta(rec + PF_RECS / 2, sizeof *rec);
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)rec->d));
        __m512i w[8];
        for (int k = 0; k < 8; k++) w[k] = _mm512_loadu_si512((const void *)rec->qs[k]);
        for (int c = 0; c < ct; c++) {
            const struct block_q8_0 *yb = (const struct block_q8_0 *)(y + (size_t)c * by) + ib;
            __m512i p0 = _mm512_set1_epi32(-128 * ysum[(size_t)c * (size_t)nb + (size_t)ib]);
            __m512i p1 = _mm512_setzero_si512();
            for (int k = 0; k < 8; k += 2) {
                p0 = _mm512_dpbusd_epi32(p0, w[k], bcast32(yb->qs + 4 * k));
                p1 = _mm512_dpbusd_epi32(p1, w[k + 1], bcast32(yb->qs + 4 * k + 4));
            }
            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(_cvtsh_ss(yb->d)));
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(p0, p1)), sc, acc[c]);
        }
    }
    for (int c = 0; c < ct; c++) _mm512_storeu_ps(s + (size_t)c * lds, acc[c]);
}

/* Decode (one activation row): two groups at once, so each record's dot chains are
 * four independent ones and the activation broadcasts, offset and scale are shared by
 * 32 rows. With one group the chains of a record are too long for the out-of-order
 * window to overlap records. */
static void q4_0_pair(int nb, float *s, const struct repack_q4_0x16 *ra,
                      const struct repack_q4_0x16 *rb, const struct block_q8_0 *yb,
                      const int32_t *ysum)
{
    /* Low nibbles as they are, high nibbles masked in place (16 * hi): their dot is
     * 16 times the wanted one, exactly, so one arithmetic shift per record replaces a
     * shift per register. */
    const __m512i m4 = _mm512_set1_epi8(0x0F), mf0 = _mm512_set1_epi8((char)0xF0);
    __m512 acc_a = _mm512_setzero_ps(), acc_b = _mm512_setzero_ps();
    for (int ib = 0; ib < nb; ib++, ra++, rb++, yb++) {
        const __m512i off = _mm512_set1_epi32(-8 * ysum[ib]);
        const __m512 dy = _mm512_set1_ps(_cvtsh_ss(yb->d));
        __m512i la = off, ha = _mm512_setzero_si512(), lb = off, hb = _mm512_setzero_si512();
        for (int k = 0; k < 4; k++) {
            const __m512i ylo = bcast32(yb->qs + 4 * k), yhi = bcast32(yb->qs + 16 + 4 * k);
            const __m512i qa = _mm512_loadu_si512((const void *)ra->qs[k]);
            const __m512i qb = _mm512_loadu_si512((const void *)rb->qs[k]);
            la = _mm512_dpbusd_epi32(la, _mm512_and_si512(qa, m4), ylo);
            ha = _mm512_dpbusd_epi32(ha, _mm512_and_si512(qa, mf0), yhi);
            lb = _mm512_dpbusd_epi32(lb, _mm512_and_si512(qb, m4), ylo);
            hb = _mm512_dpbusd_epi32(hb, _mm512_and_si512(qb, mf0), yhi);
        }
        const __m512i pa = _mm512_add_epi32(la, _mm512_srai_epi32(ha, 4));
        const __m512i pb = _mm512_add_epi32(lb, _mm512_srai_epi32(hb, 4));
        const __m512 da = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)ra->d)), dy);
        const __m512 db = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)rb->d)), dy);
        acc_a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pa), da, acc_a);
        acc_b = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pb), db, acc_b);
    }
    _mm512_storeu_ps(s, acc_a);
    _mm512_storeu_ps(s + REPACK_GROUP, acc_b);
}

static void q8_0_pair(int nb, float *s, const struct repack_q8_0x16 *ra,
                      const struct repack_q8_0x16 *rb, const struct block_q8_0 *yb,
                      const int32_t *ysum)
{
    __m512 acc_a = _mm512_setzero_ps(), acc_b = _mm512_setzero_ps();
    for (int ib = 0; ib < nb; ib++, ra++, rb++, yb++) {
        const __m512i off = _mm512_set1_epi32(-128 * ysum[ib]);
        const __m512 dy = _mm512_set1_ps(_cvtsh_ss(yb->d));
        __m512i pa0 = off, pa1 = _mm512_setzero_si512(), pb0 = off, pb1 = _mm512_setzero_si512();
        for (int k = 0; k < 8; k += 2) {
            const __m512i y0 = bcast32(yb->qs + 4 * k), y1 = bcast32(yb->qs + 4 * k + 4);
            pa0 = _mm512_dpbusd_epi32(pa0, _mm512_loadu_si512((const void *)ra->qs[k]), y0);
            pa1 = _mm512_dpbusd_epi32(pa1, _mm512_loadu_si512((const void *)ra->qs[k + 1]), y1);
            pb0 = _mm512_dpbusd_epi32(pb0, _mm512_loadu_si512((const void *)rb->qs[k]), y0);
            pb1 = _mm512_dpbusd_epi32(pb1, _mm512_loadu_si512((const void *)rb->qs[k + 1]), y1);
        }
        const __m512 da = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)ra->d)), dy);
        const __m512 db = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)rb->d)), dy);
        acc_a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(pa0, pa1)), da, acc_a);
        acc_b = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(pb0, pb1)), db, acc_b);
    }
    _mm512_storeu_ps(s, acc_a);
    _mm512_storeu_ps(s + REPACK_GROUP, acc_b);
}

/* One group against columns c0.. in tiles of TILE; the switch hands each tile width to
 * the inlined body as a constant so acc[] and the column loop live in registers. */
#define REPACK_TILES(body, pair, rec_t)                                                         \
    int g0 = 0;                                                                              \
    if (nc == 1)                                                                             \
        for (; g0 + 2 <= nr / REPACK_GROUP; g0 += 2) {                                      \
            const rec_t *ra = (const rec_t *)x + (size_t)g0 * (size_t)nb;                   \
            pair(nb, s + (size_t)g0 * REPACK_GROUP, ra, ra + nb, y, ysum);                  \
        }                                                                                    \
    for (int g = g0; g < nr / REPACK_GROUP; g++) {                                           \
        const rec_t *rec = (const rec_t *)x + (size_t)g * (size_t)nb;                      \
        for (int c0 = 0; c0 < nc; c0 += TILE) {                                              \
            float *so = s + (size_t)c0 * lds + (size_t)g * REPACK_GROUP;                      \
            const uint8_t *yo = (const uint8_t *)y + (size_t)c0 * by;                        \
            const int32_t *ys = ysum + (size_t)c0 * (size_t)nb;                              \
            switch (nc - c0 < TILE ? nc - c0 : TILE) {                                       \
            case 1: body(nb, so, lds, rec, yo, by, ys, 1); break;                            \
            case 2: body(nb, so, lds, rec, yo, by, ys, 2); break;                            \
            case 3: body(nb, so, lds, rec, yo, by, ys, 3); break;                            \
            case 4: body(nb, so, lds, rec, yo, by, ys, 4); break;                            \
            case 5: body(nb, so, lds, rec, yo, by, ys, 5); break;                            \
            case 6: body(nb, so, lds, rec, yo, by, ys, 6); break;                            \
            case 7: body(nb, so, lds, rec, yo, by, ys, 7); break;                            \
            default: body(nb, so, lds, rec, yo, by, ys, 8); break;                           \
            }                                                                                \
        }                                                                                    \
    }

void repack_avx512_gemm_q4_0_q8_0(int n, float *s, size_t lds, const void *x, int nr,
                                  const void *y, size_t by, const int32_t *ysum, int nc)
{
    const int nb = n / QK8_0;
    REPACK_TILES(q4_0_tile, q4_0_pair, struct repack_q4_0x16)
}

void repack_avx512_gemm_q8_0_q8_0(int n, float *s, size_t lds, const void *x, int nr,
                                  const void *y, size_t by, const int32_t *ysum, int nc)
{
    const int nb = n / QK8_0;
    REPACK_TILES(q8_0_tile, q8_0_pair, struct repack_q8_0x16)
}
