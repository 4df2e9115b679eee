/* kernels_avx512.c - AVX-512 kernels (F, BW, VL, DQ, VNNI, BF16) for the hot types;
 * installed over the AVX2 set (quant.c) when the CPU has every one of those features.
 *
 * Same signatures and results as the scalar reference in quant_ref.c up to float
 * summation order. F16 stays on the AVX2 kernels (see below). Integer dot products use VNNI: dpbusd (u8 x s8, 4 products into an
 * int32 lane) for Q4_0/Q8_0, two blocks per 512-bit register; maddubs + dpwssd (16-bit
 * products times 16-bit scales into int32) for the K-quants. BF16 uses vdpbf16ps (exact
 * products; denormal inputs read as zero, as the instruction defines).
 */
#include <immintrin.h>

#include "engine/quant_internal.h"

static inline float h2f(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* Product of two half scales in every lane, broadcast from quant_f16_lut. */
static inline __m512 dscale(uint16_t a, uint16_t b)
{
    return _mm512_mul_ps(_mm512_set1_ps(quant_f16_lut[a]), _mm512_set1_ps(quant_f16_lut[b]));
}

/* ---- F32 / F16 / BF16 -------------------------------------------------------------------- */

static void f32_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const float *x = vx, *y = vy;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(y + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(y + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), a0);
    if (i < n) { /* masked tail: lanes past n read nothing */
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i), a1);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* F16 keeps the AVX2 kernels on this path: on Zen 4 the 512-bit vcvtph2ps runs at half
 * the rate, and the AVX-512 F16 dot product measured 35 GB/s against AVX2's 53 in cache
 * (bench/bench_kernels -r 128). */

static void bf16_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const uint16_t *x = vx, *y = vy;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(x + i), (__m512bh)_mm512_loadu_si512(y + i));
        a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(x + i + 32),
                              (__m512bh)_mm512_loadu_si512(y + i + 32));
    }
    if (i < n) { /* one masked step covers up to 32 elements; a second the rest */
        for (; i < n; i += 32) {
            int rem = n - i < 32 ? n - i : 32;
            __mmask32 m = rem == 32 ? 0xFFFFFFFFu : (__mmask32)((1u << rem) - 1);
            a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi16(m, x + i),
                                  (__m512bh)_mm512_maskz_loadu_epi16(m, y + i));
        }
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* ---- Q8_0 / Q4_0: two blocks per 512-bit register ----------------------------------------- */

/* [a's 32 bytes | b's 32 bytes] */
static inline __m512i ld2_32(const int8_t *a, const int8_t *b)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                              _mm256_loadu_si256((const __m256i *)b), 1);
}

static void q8_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q8_0 *x = vx, *y = vy;
    const int nb = n / QK8_0;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int ib = 0;
    /* lanes 0-7 block a, 8-15 block b; |x| as unsigned, y carrying x's sign */
#define Q8_0_PAIR(acc, a, b)                                                                  \
    do {                                                                                      \
        const __m512i xv = ld2_32(x[a].qs, x[b].qs), yv = ld2_32(y[a].qs, y[b].qs);           \
        const __m512i sy = _mm512_mask_sub_epi8(yv, _mm512_movepi8_mask(xv), _mm512_setzero_si512(), yv); \
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(xv), sy); \
        const __m512 d = _mm512_mask_blend_ps(0xFF00, dscale(x[a].d, y[a].d), dscale(x[b].d, y[b].d)); \
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc);                               \
    } while (0)
    for (; ib + 3 < nb; ib += 4) {
        Q8_0_PAIR(acc0, ib, ib + 1);
        Q8_0_PAIR(acc1, ib + 2, ib + 3);
    }
    for (; ib + 1 < nb; ib += 2) Q8_0_PAIR(acc0, ib, ib + 1);
#undef Q8_0_PAIR
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    if (ib < nb) { /* odd block: 256-bit VNNI */
        const __m256i xv = _mm256_loadu_si256((const __m256i *)x[ib].qs);
        const __m256i yv = _mm256_loadu_si256((const __m256i *)y[ib].qs);
        const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(xv, xv),
                                                _mm256_sign_epi8(yv, xv));
        __m128i r = _mm_add_epi32(_mm256_castsi256_si128(dot), _mm256_extracti128_si256(dot, 1));
        r = _mm_add_epi32(r, _mm_unpackhi_epi64(r, r));
        r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 1));
        sum += (float)_mm_cvtsi128_si32(r) * (h2f(x[ib].d) * h2f(y[ib].d));
    }
    *s = sum;
}

static void q4_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q4_0 *x = vx;
    const struct block_q8_0 *y = vy;
    const int nb = n / QK8_0;
    const __m512i m4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
    /* y qwords reordered to [ya 0-15, yb 0-15, ya 16-31, yb 16-31], the order the two
     * blocks' nibbles come out in: [a lo, b lo, a hi, b hi] */
    const __m512i yperm = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int ib = 0;
#define Q4_0_PAIR(acc, a, b)                                                                  \
    do {                                                                                      \
        const __m256i v = _mm256_inserti128_si256(                                            \
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)x[a].qs)),                \
            _mm_loadu_si128((const __m128i *)x[b].qs), 1);                                    \
        const __m512i q = _mm512_and_si512(                                                   \
            _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1), m4);   \
        const __m512i yv = _mm512_permutex2var_epi64(                                         \
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)y[a].qs)), yperm,      \
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)y[b].qs)));            \
        /* (q - 8) . y = q . y - 8 . y */                                                     \
        const __m512i dot = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, yv), \
                                             _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, yv)); \
        const __m512 d = _mm512_mask_blend_ps(0xF0F0, dscale(x[a].d, y[a].d), dscale(x[b].d, y[b].d)); \
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc);                               \
    } while (0)
    for (; ib + 3 < nb; ib += 4) {
        Q4_0_PAIR(acc0, ib, ib + 1);
        Q4_0_PAIR(acc1, ib + 2, ib + 3);
    }
    for (; ib + 1 < nb; ib += 2) Q4_0_PAIR(acc0, ib, ib + 1);
#undef Q4_0_PAIR
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    if (ib < nb) {
        int sumi = 0;
        for (int j = 0; j < QK8_0 / 2; j++)
            sumi += ((x[ib].qs[j] & 0x0F) - 8) * y[ib].qs[j] + ((x[ib].qs[j] >> 4) - 8) * y[ib].qs[j + 16];
        sum += (float)sumi * (h2f(x[ib].d) * h2f(y[ib].d));
    }
    *s = sum;
}

/* Q4_0 rows, four per 512-bit register: the four rows' 16 nibble bytes side by side
 * expand to [r0 lo, r1 lo, r2 lo, r3 lo] and [.. hi ..], which meet the activation's
 * first and second 16 bytes broadcast to all four lanes; int32 lanes 4r..4r+3 belong to
 * row r. A pass takes eight rows (two registers) so the activation's loads, its 8 * y
 * offset and its scale are shared eight ways. */
static void q4_0_vec_dot_rows(int n, float *s, const void *vx, size_t bx, const void *vy, int nr)
{
    const struct block_q8_0 *y = vy;
    const int nb = n / QK8_0;
    const __m512i m4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
    const __m512i rep4 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    int r = 0;
#define ROWP(k) ((const struct block_q4_0 *)((const char *)vx + (size_t)(r + (k)) * bx))
#define Q4_0_QUAD(acc, xa, xb, xc, xd)                                                         \
    do {                                                                                       \
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)xa[ib].qs));       \
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)xb[ib].qs), 1);             \
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)xc[ib].qs), 2);             \
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)xd[ib].qs), 3);             \
        __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(v, m4), ylo); \
        dot = _mm512_dpbusd_epi32(dot, _mm512_and_si512(_mm512_srli_epi16(v, 4), m4), yhi);    \
        const __m128 dx = _mm_set_ps(quant_f16_lut[xd[ib].d], quant_f16_lut[xc[ib].d],         \
                                     quant_f16_lut[xb[ib].d], quant_f16_lut[xa[ib].d]);        \
        const __m512 d = _mm512_mul_ps(_mm512_permutexvar_ps(rep4, _mm512_castps128_ps512(dx)), dy); \
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(dot, off)), acc);         \
    } while (0)
#define Q4_0_Y()                                                                               \
    const __m512i ylo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)y[ib].qs));    \
    const __m512i yhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(y[ib].qs + 16))); \
    const __m512i off = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, ylo), \
                                            eight, yhi);                                       \
    const __m512 dy = _mm512_set1_ps(quant_f16_lut[y[ib].d])
    for (; r + 7 < nr; r += 8) {
        const struct block_q4_0 *x0 = ROWP(0), *x1 = ROWP(1), *x2 = ROWP(2), *x3 = ROWP(3);
        const struct block_q4_0 *x4 = ROWP(4), *x5 = ROWP(5), *x6 = ROWP(6), *x7 = ROWP(7);
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        for (int ib = 0; ib < nb; ib++) {
            Q4_0_Y();
            Q4_0_QUAD(acc0, x0, x1, x2, x3);
            Q4_0_QUAD(acc1, x4, x5, x6, x7);
        }
        float t[32];
        _mm512_storeu_ps(t, acc0);
        _mm512_storeu_ps(t + 16, acc1);
        for (int k = 0; k < 8; k++) s[r + k] = (t[4 * k] + t[4 * k + 1]) + (t[4 * k + 2] + t[4 * k + 3]);
    }
    for (; r + 3 < nr; r += 4) {
        const struct block_q4_0 *x0 = ROWP(0), *x1 = ROWP(1), *x2 = ROWP(2), *x3 = ROWP(3);
        __m512 acc0 = _mm512_setzero_ps();
        for (int ib = 0; ib < nb; ib++) {
            Q4_0_Y();
            Q4_0_QUAD(acc0, x0, x1, x2, x3);
        }
        float t[16];
        _mm512_storeu_ps(t, acc0);
        for (int k = 0; k < 4; k++) s[r + k] = (t[4 * k] + t[4 * k + 1]) + (t[4 * k + 2] + t[4 * k + 3]);
    }
#undef Q4_0_Y
#undef Q4_0_QUAD
#undef ROWP
    for (; r < nr; r++) q4_0_vec_dot(n, s + r, (const char *)vx + (size_t)r * bx, vy);
}

static void q8_0_vec_dot_rows_fallback(int n, float *s, const void *x, size_t bx, const void *y, int nr)
{
    for (int r = 0; r < nr; r++) q8_0_vec_dot(n, s + r, (const char *)x + (size_t)r * bx, y);
}

/* ---- tiles: 4 weight rows x 8 (or 4) activation columns ------------------------------------- */

/* Remainders of a tile product (rows past the last group of 4, columns past the last
 * group of 4) go through the single-column kernels. */
static void gemm_rest(quant_vec_dot_rows_fn rows_fn, int n, float *s, size_t lds, const char *x,
                      size_t bx, int r0, int nr, const char *y, size_t by, int c0, int nc)
{
    for (int c = 0; c < nc; c++) {
        const char *yc = y + (size_t)c * by;
        if (c < c0) { /* tile columns: only the rows past the 4-groups */
            if (r0 < nr) rows_fn(n, s + (size_t)c * lds + r0, x + (size_t)r0 * bx, bx, yc, nr - r0);
        } else {
            rows_fn(n, s + (size_t)c * lds, x, bx, yc, nr);
        }
    }
}

/* Q4_0: four rows' nibbles in one register as in q4_0_vec_dot_rows; (q - 8) made signed
 * once per block and row group, |q - 8| against each column's activation carrying the
 * sign (dpbusd is unsigned x signed), so a column costs two broadcasts, two negations,
 * two dpbusd, a conversion and two float ops. One pass: rows [r, r+4) x columns
 * [c, c + NCT); NCT is a constant at each call, so the column loops unroll and the
 * accumulators stay in registers. */
static inline __attribute__((always_inline)) void
q4_0_tile(const int NCT, int nb, float *s, size_t lds, const char *vx, size_t bx, int r,
          const char *vy, size_t by, int c)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
    const __m512i rep4 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const __m512i zero = _mm512_setzero_si512();
    const struct block_q8_0 *yc[8];
    __m512 acc[8];
#pragma GCC unroll 8
    for (int k = 0; k < NCT; k++) {
        yc[k] = (const void *)(vy + (size_t)(c + k) * by);
        acc[k] = _mm512_setzero_ps();
    }
    const struct block_q4_0 *x0 = (const void *)(vx + (size_t)r * bx);
    const struct block_q4_0 *x1 = (const void *)((const char *)x0 + bx);
    const struct block_q4_0 *x2 = (const void *)((const char *)x1 + bx);
    const struct block_q4_0 *x3 = (const void *)((const char *)x2 + bx);
    for (int ib = 0; ib < nb; ib++) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)x0[ib].qs));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)x1[ib].qs), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)x2[ib].qs), 2);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)x3[ib].qs), 3);
        const __m512i lo = _mm512_sub_epi8(_mm512_and_si512(v, m4), eight);
        const __m512i hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), eight);
        const __m512i alo = _mm512_abs_epi8(lo), ahi = _mm512_abs_epi8(hi);
        const __mmask64 nlo = _mm512_movepi8_mask(lo), nhi = _mm512_movepi8_mask(hi);
        const __m128 dx4 = _mm_set_ps(quant_f16_lut[x3[ib].d], quant_f16_lut[x2[ib].d],
                                      quant_f16_lut[x1[ib].d], quant_f16_lut[x0[ib].d]);
        const __m512 dx = _mm512_permutexvar_ps(rep4, _mm512_castps128_ps512(dx4));
#pragma GCC unroll 8
        for (int k = 0; k < NCT; k++) {
            const struct block_q8_0 *yb = &yc[k][ib];
            const __m512i ylo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)yb->qs));
            const __m512i yhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(yb->qs + 16)));
            __m512i dot = _mm512_dpbusd_epi32(zero, alo, _mm512_mask_sub_epi8(ylo, nlo, zero, ylo));
            dot = _mm512_dpbusd_epi32(dot, ahi, _mm512_mask_sub_epi8(yhi, nhi, zero, yhi));
            acc[k] = _mm512_fmadd_ps(_mm512_mul_ps(dx, _mm512_set1_ps(quant_f16_lut[yb->d])),
                                     _mm512_cvtepi32_ps(dot), acc[k]);
        }
    }
    for (int k = 0; k < NCT; k++) {
        float t[16];
        _mm512_storeu_ps(t, acc[k]);
        for (int j = 0; j < 4; j++)
            s[(size_t)(c + k) * lds + r + j] = (t[4 * j] + t[4 * j + 1]) + (t[4 * j + 2] + t[4 * j + 3]);
    }
}

static void q4_0_gemm(int n, float *s, size_t lds, const void *vx, size_t bx, int nr,
                      const void *vy, size_t by, int nc)
{
    const int nb = n / QK8_0;
    const int nr4 = nr & ~3;
    int c = 0;
    for (; c + 7 < nc; c += 8)
        for (int r = 0; r < nr4; r += 4) q4_0_tile(8, nb, s, lds, vx, bx, r, vy, by, c);
    for (; c + 3 < nc; c += 4)
        for (int r = 0; r < nr4; r += 4) q4_0_tile(4, nb, s, lds, vx, bx, r, vy, by, c);
    gemm_rest(q4_0_vec_dot_rows, n, s, lds, vx, bx, nr4, nr, vy, by, c, nc);
}

static inline __attribute__((always_inline)) void
q8_0_tile(const int NCT, int nb, float *s, size_t lds, const char *vx, size_t bx, int r,
          const char *vy, size_t by, int c)
{
    const __m512i zero = _mm512_setzero_si512();
    const struct block_q8_0 *yc[8];
    __m512 acc[2][8];
#pragma GCC unroll 8
    for (int k = 0; k < NCT; k++) {
        yc[k] = (const void *)(vy + (size_t)(c + k) * by);
        acc[0][k] = acc[1][k] = _mm512_setzero_ps();
    }
    const struct block_q8_0 *x0 = (const void *)(vx + (size_t)r * bx);
    const struct block_q8_0 *x1 = (const void *)((const char *)x0 + bx);
    const struct block_q8_0 *x2 = (const void *)((const char *)x1 + bx);
    const struct block_q8_0 *x3 = (const void *)((const char *)x2 + bx);
    for (int ib = 0; ib < nb; ib++) {
        const __m512i xa = ld2_32(x0[ib].qs, x1[ib].qs), xb = ld2_32(x2[ib].qs, x3[ib].qs);
        const __m512i axa = _mm512_abs_epi8(xa), axb = _mm512_abs_epi8(xb);
        const __mmask64 na = _mm512_movepi8_mask(xa), nb_ = _mm512_movepi8_mask(xb);
        const __m512 dxa = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(quant_f16_lut[x0[ib].d]),
                                                _mm512_set1_ps(quant_f16_lut[x1[ib].d]));
        const __m512 dxb = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(quant_f16_lut[x2[ib].d]),
                                                _mm512_set1_ps(quant_f16_lut[x3[ib].d]));
#pragma GCC unroll 8
        for (int k = 0; k < NCT; k++) {
            const __m512i yv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)yc[k][ib].qs));
            const __m512 dy = _mm512_set1_ps(quant_f16_lut[yc[k][ib].d]);
            const __m512i da = _mm512_dpbusd_epi32(zero, axa, _mm512_mask_sub_epi8(yv, na, zero, yv));
            const __m512i db = _mm512_dpbusd_epi32(zero, axb, _mm512_mask_sub_epi8(yv, nb_, zero, yv));
            acc[0][k] = _mm512_fmadd_ps(_mm512_mul_ps(dxa, dy), _mm512_cvtepi32_ps(da), acc[0][k]);
            acc[1][k] = _mm512_fmadd_ps(_mm512_mul_ps(dxb, dy), _mm512_cvtepi32_ps(db), acc[1][k]);
        }
    }
    for (int k = 0; k < NCT; k++)
        for (int p = 0; p < 2; p++) {
            float t[16];
            _mm512_storeu_ps(t, acc[p][k]);
            float sa = 0, sb = 0;
            for (int j = 0; j < 8; j++) sa += t[j], sb += t[8 + j];
            s[(size_t)(c + k) * lds + r + 2 * p] = sa;
            s[(size_t)(c + k) * lds + r + 2 * p + 1] = sb;
        }
}

/* Q8_0: two rows per register ([row a | row b], lanes 0-7 and 8-15); |x| and x's sign
 * once per block and row pair, then per column a broadcast, a negation, one dpbusd. */
static void q8_0_gemm(int n, float *s, size_t lds, const void *vx, size_t bx, int nr,
                      const void *vy, size_t by, int nc)
{
    const int nb = n / QK8_0;
    const int nr4 = nr & ~3;
    int c = 0;
    for (; c + 7 < nc; c += 8)
        for (int r = 0; r < nr4; r += 4) q8_0_tile(8, nb, s, lds, vx, bx, r, vy, by, c);
    for (; c + 3 < nc; c += 4)
        for (int r = 0; r < nr4; r += 4) q8_0_tile(4, nb, s, lds, vx, bx, r, vy, by, c);
    gemm_rest(q8_0_vec_dot_rows_fallback, n, s, lds, vx, bx, nr4, nr, vy, by, c, nc);
}

/* ---- K-quants -------------------------------------------------------------------------------- */

/* As in kernels_avx2.c: sc[0..7] in bytes 0-7, m[0..7] in bytes 8-15. */
static inline __m128i kx_scales_mins(const uint8_t *packed)
{
    uint32_t w[3], u[4];
    memcpy(w, packed, 12);
    u[0] = w[0] & 0x3f3f3f3f;
    u[1] = (w[2] & 0x0f0f0f0f) | (((w[0] >> 6) & 0x03030303) << 4);
    u[2] = w[1] & 0x3f3f3f3f;
    u[3] = ((w[2] >> 4) & 0x0f0f0f0f) | (((w[1] >> 6) & 0x03030303) << 4);
    return _mm_loadu_si128((const __m128i *)u);
}

/* permutexvar_epi16 indices spreading 16-bit scales over the lanes of a 64-element
 * chunk after maddubs (32 lanes of 2 elements). Q4_K/Q5_K chunk c: sub-blocks 2c, 2c+1
 * (16 lanes each). Q6_K chunk g: sub-blocks 4g..4g+3 (8 lanes each). */
static const int16_t kx_idx16[4][32] __attribute__((aligned(64))) = {
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5},
    {6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}};
static const int16_t q6_idx16[4][32] __attribute__((aligned(64))) = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15}};

static inline void load_idx(const int16_t tab[4][32], __m512i idx[4])
{
    for (int i = 0; i < 4; i++) idx[i] = _mm512_load_si512(tab[i]);
}

/* ---- K-quant tiles: one weight row x 8 (or 4) activation columns ---------------------------
 * A block of the row is unpacked once (levels per 64-element chunk, 16-bit scales spread
 * to their lanes, the mins) and met by the columns: per column and chunk one load,
 * maddubs and dpwssd. Columns past the last group of 4 use vec_dot. */

static void kx_rest(quant_vec_dot_fn dot, int n, float *s, size_t lds, const char *x, size_t bx,
                    int nr, const char *y, size_t by, int c0, int nc)
{
    for (int c = c0; c < nc; c++)
        for (int r = 0; r < nr; r++) dot(n, s + (size_t)c * lds + r, x + (size_t)r * bx, y + (size_t)c * by);
}

/* Levels of the four 64-element chunks of a Q4_K (qh NULL) or Q5_K block: chunk c's 32
 * bytes give elements 64c..64c+31 (low nibbles) and 64c+32..64c+63 (high nibbles); Q5_K
 * adds bit 2c / 2c+1 of qh[l] as bit 4 (per-half shift counts pick the bit). */
static inline __attribute__((always_inline)) void kx_levels(const uint8_t *qs, const uint8_t *qh,
                                                            __m512i q[4])
{
    const __m256i m4 = _mm256_set1_epi8(0xF);
#pragma GCC unroll 4
    for (int ch = 0; ch < 4; ch++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * ch));
        q[ch] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(v, m4)),
                                   _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), 1);
    }
    if (qh) {
        const __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qh));
        const __m512i one = _mm512_set1_epi8(1);
#pragma GCC unroll 4
        for (int ch = 0; ch < 4; ch++) {
            const __m512i cnt = _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * ch)),
                                                   _mm256_set1_epi16((short)(2 * ch + 1)), 1);
            const __m512i bit = _mm512_and_si512(_mm512_srlv_epi16(h, cnt), one);
            q[ch] = _mm512_or_si512(q[ch], _mm512_slli_epi16(bit, 4));
        }
    }
}

static inline __attribute__((always_inline)) void
kx_tile(const int NCT, const int Q5, int nb, float *s, size_t lds, const uint8_t *xrow,
        const char *vy, size_t by, int r, int c, const __m512i *idx)
{
    const size_t bb = Q5 ? sizeof(struct block_q5_K) : sizeof(struct block_q4_K);
    const struct block_q8_K *yc[8];
    __m512 acc[8];
    __m128 accm[8];
#pragma GCC unroll 8
    for (int k = 0; k < NCT; k++) {
        yc[k] = (const void *)(vy + (size_t)(c + k) * by);
        acc[k] = _mm512_setzero_ps();
        accm[k] = _mm_setzero_ps();
    }
    for (int i = 0; i < nb; i++) {
        /* d, dmin, scales lead both block layouts (quant_blocks.h) */
        const struct block_q4_K *xb = (const void *)(xrow + (size_t)i * bb);
        const __m256i sm = _mm256_cvtepu8_epi16(kx_scales_mins(xb->scales));
        const __m512i sc = _mm512_castsi256_si512(sm);
        const __m128i mins = _mm256_extracti128_si256(sm, 1);
        __m512i q[4], scv[4];
        if (Q5) {
            const struct block_q5_K *x5 = (const void *)xb;
            kx_levels(x5->qs, x5->qh, q);
        } else {
            kx_levels(xb->qs, NULL, q);
        }
#pragma GCC unroll 4
        for (int ch = 0; ch < 4; ch++) scv[ch] = _mm512_permutexvar_epi16(idx[ch], sc);
        const float d = quant_f16_lut[xb->d], dmin = quant_f16_lut[xb->dmin];
#pragma GCC unroll 8
        for (int k = 0; k < NCT; k++) {
            const struct block_q8_K *yb = &yc[k][i];
            __m512i sumi = _mm512_dpwssd_epi32(_mm512_setzero_si512(),
                                               _mm512_maddubs_epi16(q[0], _mm512_loadu_si512(yb->qs)), scv[0]);
            sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[1], _mm512_loadu_si512(yb->qs + 64)), scv[1]);
            sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[2], _mm512_loadu_si512(yb->qs + 128)), scv[2]);
            sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[3], _mm512_loadu_si512(yb->qs + 192)), scv[3]);
            acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(d * yb->d), _mm512_cvtepi32_ps(sumi), acc[k]);
            const __m256i bs = _mm256_loadu_si256((const __m256i *)yb->bsums);
            const __m128i pair = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            accm[k] = _mm_fmadd_ps(_mm_set1_ps(dmin * yb->d), _mm_cvtepi32_ps(_mm_madd_epi16(mins, pair)), accm[k]);
        }
    }
    for (int k = 0; k < NCT; k++) {
        __m128 m = _mm_add_ps(accm[k], _mm_movehl_ps(accm[k], accm[k]));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        s[(size_t)(c + k) * lds + r] = _mm512_reduce_add_ps(acc[k]) - _mm_cvtss_f32(m);
    }
}

/* Q4_K / Q5_K against one column: a one-column tile (the same unpacking and sums;
 * measured faster than a dedicated loop with per-block horizontal sums). */
static void q5_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    __m512i idx[4];
    load_idx(kx_idx16, idx);
    kx_tile(1, 1, n / QK_K, s, 1, vx, vy, 0, 0, 0, idx);
}

static void q4_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    __m512i idx[4];
    load_idx(kx_idx16, idx);
    kx_tile(1, 0, n / QK_K, s, 1, vx, vy, 0, 0, 0, idx);
}

static void q4_K_gemm(int n, float *s, size_t lds, const void *vx, size_t bx, int nr,
                      const void *vy, size_t by, int nc)
{
    const int nb = n / QK_K;
    __m512i idx[4];
    load_idx(kx_idx16, idx);
    int c = 0;
    for (; c + 7 < nc; c += 8)
        for (int r = 0; r < nr; r++) kx_tile(8, 0, nb, s, lds, (const uint8_t *)vx + (size_t)r * bx, vy, by, r, c, idx);
    for (; c + 3 < nc; c += 4)
        for (int r = 0; r < nr; r++) kx_tile(4, 0, nb, s, lds, (const uint8_t *)vx + (size_t)r * bx, vy, by, r, c, idx);
    kx_rest(q4_K_vec_dot, n, s, lds, vx, bx, nr, vy, by, c, nc);
}

static void q5_K_gemm(int n, float *s, size_t lds, const void *vx, size_t bx, int nr,
                      const void *vy, size_t by, int nc)
{
    const int nb = n / QK_K;
    __m512i idx[4];
    load_idx(kx_idx16, idx);
    int c = 0;
    for (; c + 7 < nc; c += 8)
        for (int r = 0; r < nr; r++) kx_tile(8, 1, nb, s, lds, (const uint8_t *)vx + (size_t)r * bx, vy, by, r, c, idx);
    for (; c + 3 < nc; c += 4)
        for (int r = 0; r < nr; r++) kx_tile(4, 1, nb, s, lds, (const uint8_t *)vx + (size_t)r * bx, vy, by, r, c, idx);
    kx_rest(q5_K_vec_dot, n, s, lds, vx, bx, nr, vy, by, c, nc);
}

/* One Q6_K pass: row r x columns [c, c + NCT); the -32 offset is applied as a vector
 * (32 * scale[k] * bsums[k] lanes) rather than a horizontal sum per block. */
static inline __attribute__((always_inline)) void
q6_K_tile(const int NCT, int nb, float *s, size_t lds, const struct block_q6_K *x,
          const char *vy, size_t by, int r, int c, const __m512i *idx)
{
    const __m512i m4 = _mm512_set1_epi8(0xF), m2 = _mm512_set1_epi8(3);
    const __m512i sh_lo = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i sh_hi = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    const struct block_q8_K *yc[8];
    __m512 acc[8];
#pragma GCC unroll 8
    for (int k = 0; k < NCT; k++) {
        yc[k] = (const void *)(vy + (size_t)(c + k) * by);
        acc[k] = _mm512_setzero_ps();
    }
    for (int i = 0; i < nb; i++) {
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[i].scales));
        const __m512i sc = _mm512_castsi256_si512(sc16);
        __m512i q[4], scv[4];
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m512i ql = _mm512_loadu_si512(x[i].ql + 64 * h);
            const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x[i].qh + 32 * h)));
            q[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                       _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_lo), m2), 4));
            q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                           _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_hi), m2), 4));
            scv[2 * h] = _mm512_permutexvar_epi16(idx[2 * h], sc);
            scv[2 * h + 1] = _mm512_permutexvar_epi16(idx[2 * h + 1], sc);
        }
        const float d = quant_f16_lut[x[i].d];
#pragma GCC unroll 8
        for (int k = 0; k < NCT; k++) {
            const struct block_q8_K *yb = &yc[k][i];
            const __m256i off = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)yb->bsums));
            __m512i sumi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(_mm256_slli_epi32(off, 5)));
            sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[0], _mm512_loadu_si512(yb->qs)), scv[0]);
            sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[1], _mm512_loadu_si512(yb->qs + 64)), scv[1]);
            sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[2], _mm512_loadu_si512(yb->qs + 128)), scv[2]);
            sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[3], _mm512_loadu_si512(yb->qs + 192)), scv[3]);
            acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(d * yb->d), _mm512_cvtepi32_ps(sumi), acc[k]);
        }
    }
    for (int k = 0; k < NCT; k++) s[(size_t)(c + k) * lds + r] = _mm512_reduce_add_ps(acc[k]);
}

/* Q6_K against one column: a one-column tile. */
static void q6_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    __m512i idx[4];
    load_idx(q6_idx16, idx);
    q6_K_tile(1, n / QK_K, s, 1, vx, vy, 0, 0, 0, idx);
}

static void q6_K_gemm(int n, float *s, size_t lds, const void *vx, size_t bx, int nr,
                      const void *vy, size_t by, int nc)
{
    const int nb = n / QK_K;
    __m512i idx[4];
    load_idx(q6_idx16, idx);
    int c = 0;
    for (; c + 7 < nc; c += 8)
        for (int r = 0; r < nr; r++)
            q6_K_tile(8, nb, s, lds, (const void *)((const char *)vx + (size_t)r * bx), vy, by, r, c, idx);
    for (; c + 3 < nc; c += 4)
        for (int r = 0; r < nr; r++)
            q6_K_tile(4, nb, s, lds, (const void *)((const char *)vx + (size_t)r * bx), vy, by, r, c, idx);
    kx_rest(q6_K_vec_dot, n, s, lds, vx, bx, nr, vy, by, c, nc);
}

void quant_avx512_install(struct quant_traits *tab)
{
    tab[QT_F32].vec_dot = f32_vec_dot;
    tab[QT_BF16].vec_dot = bf16_vec_dot;
    tab[QT_Q8_0].vec_dot = q8_0_vec_dot;
    tab[QT_Q4_0].vec_dot = q4_0_vec_dot;
    tab[QT_Q4_0].vec_dot_rows = q4_0_vec_dot_rows;
    tab[QT_Q4_0].gemm = q4_0_gemm;
    tab[QT_Q8_0].gemm = q8_0_gemm;
    tab[QT_Q4_K].vec_dot = q4_K_vec_dot;
    tab[QT_Q6_K].vec_dot = q6_K_vec_dot;
    tab[QT_Q4_K].gemm = q4_K_gemm;
    tab[QT_Q5_K].vec_dot = q5_K_vec_dot;
    tab[QT_Q5_K].gemm = q5_K_gemm;
    tab[QT_Q6_K].gemm = q6_K_gemm;
}
