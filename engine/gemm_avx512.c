/* gemm_avx512.c - AVX-512 VNNI tile kernel of gemm_q4_0_q8_0 (see gemm.h).
 *
 * Tile: 8 weight rows (two registers of four rows' 16 nibble bytes side by side, as
 * quant's q4_0_vec_dot_rows) x NC <= 8 activation columns; 16 accumulators. Per block:
 * the nibbles q (0..15) are used unsigned as dpbusd's first operand; each column's low and
 * high 16 activation bytes are broadcast to the four rows and the dot starts from the
 * prepared -2 * sum(y) in every lane, so the four lanes of a row add up to
 * sum(q * y) - 8 * sum(y) = sum((q - 8) * y) exactly in int32.
 */
#include "engine/gemm.h"

#include <immintrin.h>
#include <string.h>

#include "engine/quant.h"
#include "engine/quant_internal.h"

/* One 4- or 8-row (NG = 1 or 2 groups) by NC-column pass at rows [r, r + 4 NG),
 * columns [c, c + NC). NG and NC are constants at each call (unrolled, in registers). */
static inline __attribute__((always_inline)) void
tile(const int NG, const int NC, int nb, float *s, size_t lds, const char *vx, size_t bx, int r,
     const char *vy, size_t by, int c, const int32_t *aux)
{
    const size_t colw = gemm_q8_0_aux_bytes(nb * QK8_0, 1) / sizeof(int32_t);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i rep4 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const struct block_q8_0 *yc[8];
    const struct block_q4_0 *xr[8];
    __m512 acc[2][8];
#pragma GCC unroll 8
    for (int k = 0; k < NC; k++) {
        yc[k] = (const void *)(vy + (size_t)(c + k) * by);
        acc[0][k] = acc[1][k] = _mm512_setzero_ps();
    }
    for (int i = 0; i < 4 * NG; i++) xr[i] = (const void *)(vx + (size_t)(r + i) * bx);
    for (int ib = 0; ib < nb; ib++) {
        __m512i lo[2], hi[2];
        __m512 dx[2];
#pragma GCC unroll 2
        for (int g = 0; g < NG; g++) {
            const struct block_q4_0 *a = &xr[4 * g][ib], *b = &xr[4 * g + 1][ib],
                                    *cc = &xr[4 * g + 2][ib], *d = &xr[4 * g + 3][ib];
            __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)a->qs));
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)b->qs), 1);
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)cc->qs), 2);
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)d->qs), 3);
            lo[g] = _mm512_and_si512(v, m4);
            hi[g] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            const __m128 d4 = _mm_set_ps(quant_f16_lut[d->d], quant_f16_lut[cc->d],
                                         quant_f16_lut[b->d], quant_f16_lut[a->d]);
            dx[g] = _mm512_permutexvar_ps(rep4, _mm512_castps128_ps512(d4));
        }
#pragma GCC unroll 8
        for (int k = 0; k < NC; k++) {
            const struct block_q8_0 *yb = &yc[k][ib];
            const __m512i ylo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)yb->qs));
            const __m512i yhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(yb->qs + 16)));
            const int32_t *ya = aux + (size_t)(c + k) * colw;
            const __m512i o = _mm512_set1_epi32(ya[ib]);
            float dyf;
            memcpy(&dyf, &ya[nb + ib], sizeof dyf);
            const __m512 dy = _mm512_set1_ps(dyf);
#pragma GCC unroll 2
            for (int g = 0; g < NG; g++) {
                __m512i dot = _mm512_dpbusd_epi32(o, lo[g], ylo);
                dot = _mm512_dpbusd_epi32(dot, hi[g], yhi);
                acc[g][k] = _mm512_fmadd_ps(_mm512_mul_ps(dx[g], dy), _mm512_cvtepi32_ps(dot), acc[g][k]);
            }
        }
    }
    for (int k = 0; k < NC; k++)
        for (int g = 0; g < NG; g++) {
            float t[16];
            _mm512_storeu_ps(t, acc[g][k]);
            for (int j = 0; j < 4; j++)
                s[(size_t)(c + k) * lds + r + 4 * g + j] =
                    (t[4 * j] + t[4 * j + 1]) + (t[4 * j + 2] + t[4 * j + 3]);
        }
}

/* Columns [c, c + nc_left) (nc_left < 8) of rows [r, r + 4 NG): one pass per count. */
static inline __attribute__((always_inline)) void
tile_cols(const int NG, int nc_left, int nb, float *s, size_t lds, const char *vx, size_t bx,
          int r, const char *vy, size_t by, int c, const int32_t *aux)
{
    switch (nc_left) {
    case 7: tile(NG, 7, nb, s, lds, vx, bx, r, vy, by, c, aux); break;
    case 6: tile(NG, 6, nb, s, lds, vx, bx, r, vy, by, c, aux); break;
    case 5: tile(NG, 5, nb, s, lds, vx, bx, r, vy, by, c, aux); break;
    case 4: tile(NG, 4, nb, s, lds, vx, bx, r, vy, by, c, aux); break;
    case 3: tile(NG, 3, nb, s, lds, vx, bx, r, vy, by, c, aux); break;
    case 2: tile(NG, 2, nb, s, lds, vx, bx, r, vy, by, c, aux); break;
    case 1: tile(NG, 1, nb, s, lds, vx, bx, r, vy, by, c, aux); break;
    default: break;
    }
}

void gemm_avx512_q4_0_q8_0(int n, float *s, size_t lds, const void *vx, size_t bx, int nr,
                           const void *vy, size_t by, int nc, const void *vaux)
{
    const int nb = n / QK8_0;
    const int32_t *aux = vaux;
    const char *x = vx, *y = vy;
    const int nr8 = nr & ~7, nr4 = nr & ~3, nc8 = nc & ~7;
    /* columns outer: a column tile's activations stay in L1 while the rows stream by */
    for (int c = 0; c < nc8; c += 8) {
        for (int r = 0; r < nr8; r += 8) tile(2, 8, nb, s, lds, x, bx, r, y, by, c, aux);
        if (nr4 > nr8) tile(1, 8, nb, s, lds, x, bx, nr8, y, by, c, aux);
    }
    if (nc8 < nc) {
        for (int r = 0; r < nr8; r += 8)
            tile_cols(2, nc - nc8, nb, s, lds, x, bx, r, y, by, nc8, aux);
        if (nr4 > nr8) tile_cols(1, nc - nc8, nb, s, lds, x, bx, nr8, y, by, nc8, aux);
    }
    /* rows past the last group of 4: quant's kernels, column by column */
    if (nr4 < nr) {
        const struct quant_traits *tr = quant_traits(QT_Q4_0);
        for (int c = 0; c < nc; c++)
            quant_vec_dot_rows(tr, n, s + (size_t)c * lds + nr4, x + (size_t)nr4 * bx, bx,
                               y + (size_t)c * by, nr - nr4);
    }
}

/* ---- Q8_0 weights ------------------------------------------------------------------------- */

/* Rows [r, r + 2 NG) x columns [c, c + NC): a register holds two rows' 32 bytes of a block
 * ([row a | row b], lanes 0-7 and 8-15). Per block and row pair: the offset
 * -128 * sum(x) from one dpbusd against 0x80 bytes; per column: one broadcast of its
 * 32 unsigned bytes, then per row pair one dpbusd, a conversion and two float ops. */
static inline __attribute__((always_inline)) void
tile8(const int NG, const int NC, int nb, float *s, size_t lds, const char *vx, size_t bx, int r,
      int c, const uint8_t *aux)
{
    const size_t colb = gemm_q8_0_aux_bytes(nb * QK8_0, 1);
    const __m512i x80 = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    const float *yd[8];
    const uint8_t *yu[8];
    const struct block_q8_0 *xr[8];
    __m512 acc[4][8];
#pragma GCC unroll 8
    for (int k = 0; k < NC; k++) {
        const uint8_t *col = aux + (size_t)(c + k) * colb;
        yd[k] = (const float *)(col + (size_t)nb * sizeof(int32_t));
        yu[k] = col + (size_t)nb * (sizeof(int32_t) + sizeof(float));
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) acc[g][k] = _mm512_setzero_ps();
    }
    for (int i = 0; i < 2 * NG; i++) xr[i] = (const void *)(vx + (size_t)(r + i) * bx);
    for (int ib = 0; ib < nb; ib++) {
        __m512i w[4], o[4];
        __m512 dx[4];
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) {
            const struct block_q8_0 *a = &xr[2 * g][ib], *b = &xr[2 * g + 1][ib];
            w[g] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a->qs)),
                                      _mm256_loadu_si256((const __m256i *)b->qs), 1);
            o[g] = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, x80, w[g]));
            dx[g] = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(quant_f16_lut[a->d]),
                                         _mm512_set1_ps(quant_f16_lut[b->d]));
        }
#pragma GCC unroll 8
        for (int k = 0; k < NC; k++) {
            const __m512i y = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(yu[k] + ib * QK8_0)));
            const __m512 dy = _mm512_set1_ps(yd[k][ib]);
#pragma GCC unroll 4
            for (int g = 0; g < NG; g++) {
                const __m512i dot = _mm512_dpbusd_epi32(o[g], y, w[g]);
                acc[g][k] = _mm512_fmadd_ps(_mm512_mul_ps(dx[g], dy), _mm512_cvtepi32_ps(dot), acc[g][k]);
            }
        }
    }
    for (int k = 0; k < NC; k++)
        for (int g = 0; g < NG; g++) {
            float t[16];
            _mm512_storeu_ps(t, acc[g][k]);
            for (int h = 0; h < 2; h++) {
                const float *u = t + 8 * h;
                s[(size_t)(c + k) * lds + r + 2 * g + h] =
                    ((u[0] + u[1]) + (u[2] + u[3])) + ((u[4] + u[5]) + (u[6] + u[7]));
            }
        }
}

static inline __attribute__((always_inline)) void
tile8_cols(const int NG, int nc_left, int nb, float *s, size_t lds, const char *vx, size_t bx,
           int r, int c, const uint8_t *aux)
{
    switch (nc_left) {
    case 5: tile8(NG, 5, nb, s, lds, vx, bx, r, c, aux); break;
    case 4: tile8(NG, 4, nb, s, lds, vx, bx, r, c, aux); break;
    case 3: tile8(NG, 3, nb, s, lds, vx, bx, r, c, aux); break;
    case 2: tile8(NG, 2, nb, s, lds, vx, bx, r, c, aux); break;
    case 1: tile8(NG, 1, nb, s, lds, vx, bx, r, c, aux); break;
    default: break;
    }
}

void gemm_avx512_q8_0_q8_0(int n, float *s, size_t lds, const void *vx, size_t bx, int nr,
                           const void *vy, size_t by, int nc, const void *vaux)
{
    const int nb = n / QK8_0;
    const uint8_t *aux = vaux;
    const char *x = vx, *y = vy;
    /* 8 rows (4 pairs) x 4 columns: 16 accumulators */
    const int nr8 = nr - nr % 8, nr2 = nr & ~1, nc6 = nc - nc % 4;
    for (int c = 0; c < nc6; c += 4) {
        for (int r = 0; r < nr8; r += 8) tile8(4, 4, nb, s, lds, x, bx, r, c, aux);
        for (int r = nr8; r < nr2; r += 2) tile8(1, 4, nb, s, lds, x, bx, r, c, aux);
    }
    if (nc6 < nc) {
        for (int r = 0; r < nr8; r += 8) tile8_cols(4, nc - nc6, nb, s, lds, x, bx, r, nc6, aux);
        for (int r = nr8; r < nr2; r += 2) tile8_cols(1, nc - nc6, nb, s, lds, x, bx, r, nc6, aux);
    }
    if (nr2 < nr) {
        const struct quant_traits *tr = quant_traits(QT_Q8_0);
        for (int cc = 0; cc < nc; cc++)
            quant_vec_dot_rows(tr, n, s + (size_t)cc * lds + nr2, x + (size_t)nr2 * bx, bx,
                               y + (size_t)cc * by, nr - nr2);
    }
}
