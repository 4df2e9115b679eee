/* kernels_avx2.c - AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c -mbmi2;
 * installed only when quant.c saw all of those in cpuid).
 *
 * Same signatures and results as the scalar reference in quant_ref.c up to float
 * summation order: every block's integer dot product is computed exactly (maddubs on
 * unsigned x signed bytes into 16-bit pairs, madd into 32 bits, as llama.cpp's x86
 * kernels do); only the float accumulation across blocks is reordered. No 16-bit pair
 * can saturate: weights are at most 63 in magnitude as unsigned and activations at most
 * 127 (2 * 63 * 127 < 32767). The Q8_0 and Q8_K quantizers are bit-exact with the
 * reference ones (roundf for Q8_0, ties-to-even for Q8_K, the same scale arithmetic).
 */
#include <immintrin.h>

#include "engine/quant_internal.h"

static inline float h2f(uint16_t h)
{
    return _cvtsh_ss(h);
}

/* A block's half scale broadcast straight from quant_f16_lut: one load instead of
 * three conversion instructions, which matters at ~15 instructions per block. */
static inline __m256 bcast_h(uint16_t h)
{
    return _mm256_broadcast_ss(&quant_f16_lut[h]);
}

static inline float hsum_ps(__m256 v)
{
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* 16 bytes of nibbles -> 32 bytes 0..15: low nibbles (elements 0-15) in the low lane,
 * high nibbles (elements 16-31) in the high lane (the Q4_0/Q5_0 element order). */
static inline __m256i nibbles_32(const uint8_t *p)
{
    __m128i t = _mm_loadu_si128((const __m128i *)p);
    __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

/* 32 bits -> 32 bytes, 0xFF where the bit is set (bit i -> byte i). */
static inline __m256i bits_32(const uint8_t *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)w), shuf);
    b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
}

/* Signed x signed bytes -> 8 int32 sums of 4 products: |x| as unsigned times y with
 * x's sign (|x| <= 127 or x == -128 read as 128 unsigned: still exact). */
static inline __m256i dot_s8(__m256i x, __m256i y)
{
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* ---- F32 / F16 / BF16 ------------------------------------------------------------------ */

static void f16_to_f32_row(const void *vsrc, float *dst, int64_t n)
{
    const uint16_t *src = vsrc;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = quant_f16_to_f32(src[i]);
}

static void f32_to_f16_row(const float *src, void *vdst, int64_t n)
{
    uint16_t *dst = vdst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = quant_f32_to_f16(src[i]);
}

static void f32_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const float *x = vx, *y = vy;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) sum += x[i] * y[i];
    *s = sum;
}

static inline __m256 ld_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static void f16_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const uint16_t *x = vx, *y = vy;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(ld_f16(x + i), ld_f16(y + i), a0);
        a1 = _mm256_fmadd_ps(ld_f16(x + i + 8), ld_f16(y + i + 8), a1);
        a2 = _mm256_fmadd_ps(ld_f16(x + i + 16), ld_f16(y + i + 16), a2);
        a3 = _mm256_fmadd_ps(ld_f16(x + i + 24), ld_f16(y + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(ld_f16(x + i), ld_f16(y + i), a0);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) sum += h2f(x[i]) * h2f(y[i]);
    *s = sum;
}

static inline __m256 ld_bf16(const uint16_t *p)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

static void bf16_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const uint16_t *x = vx, *y = vy;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(ld_bf16(x + i), ld_bf16(y + i), a0);
        a1 = _mm256_fmadd_ps(ld_bf16(x + i + 8), ld_bf16(y + i + 8), a1);
        a2 = _mm256_fmadd_ps(ld_bf16(x + i + 16), ld_bf16(y + i + 16), a2);
        a3 = _mm256_fmadd_ps(ld_bf16(x + i + 24), ld_bf16(y + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(ld_bf16(x + i), ld_bf16(y + i), a0);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) sum += quant_bf16_to_f32(x[i]) * quant_bf16_to_f32(y[i]);
    *s = sum;
}

/* ---- Q8_0 / Q8_K activations ------------------------------------------------------------- */

static inline __m256 abs_ps(__m256 v)
{
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

static inline float hmax_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* 32 int32 -> 32 int8 in element order (values already within int8). */
static inline __m256i pack_32(__m256i i0, __m256i i1, __m256i i2, __m256i i3)
{
    /* packs work per 128-bit lane; the permute restores element order */
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* Round to nearest, ties to even (ggml's nearest_int for |v| < 2^22). */
static inline __m256i rne(__m256 v)
{
    return _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* Round half away from zero, exactly roundf: truncate, then step away from zero when
 * the (exact) remainder is at least one half. */
static inline __m256i round_away(__m256 v)
{
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = abs_ps(_mm256_sub_ps(v, t));
    const __m256 step = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, _mm256_set1_ps(-0.0f)));
    const __m256 up = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), step);
    return _mm256_cvtps_epi32(_mm256_add_ps(t, up));
}

/* Bit-identical to quant_ref_q8_0_from_float (d = amax / 127, levels roundf(x / d)), so
 * weights written through this path equal llama.cpp's reference quantizer's bytes. */
static void q8_0_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q8_0 *y = vy;
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(abs_ps(v0), abs_ps(v1)),
                                 _mm256_max_ps(abs_ps(v2), abs_ps(v3)));
        const float d = hmax_ps(m) / 127.f;
        y[i].d = quant_f32_to_f16(d);
        const __m256 id = _mm256_set1_ps(d ? 1.0f / d : 0.0f);
        __m256i q = pack_32(round_away(_mm256_mul_ps(v0, id)), round_away(_mm256_mul_ps(v1, id)),
                            round_away(_mm256_mul_ps(v2, id)), round_away(_mm256_mul_ps(v3, id)));
        _mm256_storeu_si256((__m256i *)y[i].qs, q);
    }
}

static void q8_K_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q8_K *y = vy;
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + j)));
        const float amax = hmax_ps(m);
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        /* the reference takes the sign of the first element of largest magnitude */
        float max = 0;
        const __m256 va = _mm256_set1_ps(amax);
        for (int j = 0; j < QK_K; j += 8) {
            int mask = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + j)), va, _CMP_EQ_OQ));
            if (mask) {
                max = x[j + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int j = 0; j < QK_K; j += 32) {
            __m256i q = pack_32(rne(_mm256_mul_ps(_mm256_loadu_ps(x + j), vs)),
                                rne(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8), vs)),
                                rne(_mm256_mul_ps(_mm256_loadu_ps(x + j + 16), vs)),
                                rne(_mm256_mul_ps(_mm256_loadu_ps(x + j + 24), vs)));
            _mm256_storeu_si256((__m256i *)(y[i].qs + j), q);
            /* sums of 16: bias to unsigned, sum 8-byte groups, add pairs, unbias */
            __m256i sad = _mm256_sad_epu8(_mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)),
                                          _mm256_setzero_si256());
            int64_t g[4];
            _mm256_storeu_si256((__m256i *)g, sad);
            y[i].bsums[j / 16] = (int16_t)(g[0] + g[1] - 16 * 128);
            y[i].bsums[j / 16 + 1] = (int16_t)(g[2] + g[3] - 16 * 128);
        }
        y[i].d = 1 / iscale;
    }
}

/* ---- 32-element block types ---------------------------------------------------------------- */

static void q4_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q4_0 *x = vx;
    const struct block_q8_0 *y = vy;
    const int nb = n / QK8_0;
    const __m256i eight = _mm256_set1_epi8(8), ones = _mm256_set1_epi16(1);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int ib = 0;
    /* (q - 8) . y = q . y - 8 . y with q unsigned: two maddubs, no sign fix-ups */
#define Q4_0_BLOCK(acc, b)                                                                    \
    do {                                                                                      \
        const __m256i q = nibbles_32(x[b].qs);                                                \
        const __m256i yv = _mm256_loadu_si256((const __m256i *)y[b].qs);                      \
        __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, yv), _mm256_maddubs_epi16(eight, yv)); \
        const __m256 d = _mm256_mul_ps(bcast_h(x[b].d), bcast_h(y[b].d));                                 \
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), acc);        \
    } while (0)
    for (; ib + 1 < nb; ib += 2) {
        Q4_0_BLOCK(acc0, ib);
        Q4_0_BLOCK(acc1, ib + 1);
    }
    if (ib < nb) Q4_0_BLOCK(acc0, ib);
#undef Q4_0_BLOCK
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* Q4_0 rows, two per 256-bit register: [row a's 16 nibble bytes | row b's] expands to
 * [a lo | b lo] and [a hi | b hi], which meet the activation's first and second 16 bytes
 * broadcast to both lanes. Lanes 0-3 of the accumulator belong to row a, 4-7 to row b.
 * Activation work (loads, the 8 * y offset, its scale) is shared by the four rows of a
 * pass: about 9 instructions per row-block instead of 15. */
static void q4_0_vec_dot_rows(int n, float *s, const void *vx, size_t bx, const void *vy, int nr)
{
    const struct block_q8_0 *y = vy;
    const int nb = n / QK8_0;
    const __m256i m4 = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
    const __m256i ones = _mm256_set1_epi16(1);
    int r = 0;
#define Q4_0_PAIR(acc, xa, xb)                                                                 \
    do {                                                                                       \
        const __m256i v = _mm256_inserti128_si256(                                             \
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)xa[ib].qs)),               \
            _mm_loadu_si128((const __m128i *)xb[ib].qs), 1);                                   \
        const __m256i lo = _mm256_and_si256(v, m4);                                            \
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);                     \
        __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi)); \
        p = _mm256_madd_epi16(_mm256_sub_epi16(p, off), ones);                                 \
        const __m256 dx = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_broadcast_ss(&quant_f16_lut[xa[ib].d])), \
                                               _mm_broadcast_ss(&quant_f16_lut[xb[ib].d]), 1); \
        acc = _mm256_fmadd_ps(_mm256_mul_ps(dx, dy), _mm256_cvtepi32_ps(p), acc);              \
    } while (0)
    for (; r + 3 < nr; r += 4) {
        const struct block_q4_0 *x0 = (const void *)((const char *)vx + (size_t)r * bx);
        const struct block_q4_0 *x1 = (const void *)((const char *)x0 + bx);
        const struct block_q4_0 *x2 = (const void *)((const char *)x1 + bx);
        const struct block_q4_0 *x3 = (const void *)((const char *)x2 + bx);
        __m256 acc01 = _mm256_setzero_ps(), acc23 = _mm256_setzero_ps();
        for (int ib = 0; ib < nb; ib++) {
            const __m256i ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)y[ib].qs));
            const __m256i yhi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(y[ib].qs + 16)));
            const __m256i off = _mm256_add_epi16(_mm256_maddubs_epi16(eight, ylo), _mm256_maddubs_epi16(eight, yhi));
            const __m256 dy = bcast_h(y[ib].d);
            Q4_0_PAIR(acc01, x0, x1);
            Q4_0_PAIR(acc23, x2, x3);
        }
        const __m128 s01 = _mm_hadd_ps(_mm256_castps256_ps128(acc01), _mm256_extractf128_ps(acc01, 1));
        const __m128 s23 = _mm_hadd_ps(_mm256_castps256_ps128(acc23), _mm256_extractf128_ps(acc23, 1));
        _mm_storeu_ps(s + r, _mm_shuffle_ps(_mm_hadd_ps(s01, s01), _mm_hadd_ps(s23, s23), 0x44));
    }
    for (; r + 1 < nr; r += 2) {
        const struct block_q4_0 *x0 = (const void *)((const char *)vx + (size_t)r * bx);
        const struct block_q4_0 *x1 = (const void *)((const char *)x0 + bx);
        __m256 acc01 = _mm256_setzero_ps();
        for (int ib = 0; ib < nb; ib++) {
            const __m256i ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)y[ib].qs));
            const __m256i yhi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(y[ib].qs + 16)));
            const __m256i off = _mm256_add_epi16(_mm256_maddubs_epi16(eight, ylo), _mm256_maddubs_epi16(eight, yhi));
            const __m256 dy = bcast_h(y[ib].d);
            Q4_0_PAIR(acc01, x0, x1);
        }
        const __m128 s01 = _mm_hadd_ps(_mm256_castps256_ps128(acc01), _mm256_extractf128_ps(acc01, 1));
        const __m128 h = _mm_hadd_ps(s01, s01);
        s[r] = _mm_cvtss_f32(h);
        s[r + 1] = _mm_cvtss_f32(_mm_shuffle_ps(h, h, 1));
    }
#undef Q4_0_PAIR
    if (r < nr) q4_0_vec_dot(n, s + r, (const char *)vx + (size_t)r * bx, vy);
}

/* Q4_1 / Q5_1 against Q8_1: unsigned levels times y, plus the offset m times y's stored
 * d * sum (a per-block scalar, summed apart). */
static void q4_1_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q4_1 *x = vx;
    const struct block_q8_1 *y = vy;
    const int nb = n / QK8_1;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int ib = 0; ib < nb; ib++) {
        const __m256i p = _mm256_maddubs_epi16(nibbles_32(x[ib].qs), _mm256_loadu_si256((const __m256i *)y[ib].qs));
        const __m256 d = _mm256_mul_ps(bcast_h(x[ib].d), bcast_h(y[ib].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), acc);
        summs += quant_f16_lut[x[ib].m] * quant_f16_lut[y[ib].s];
    }
    *s = hsum_ps(acc) + summs;
}

static void q5_1_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q5_1 *x = vx;
    const struct block_q8_1 *y = vy;
    const int nb = n / QK8_1;
    const __m256i ones = _mm256_set1_epi16(1), b4 = _mm256_set1_epi8(0x10);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0;
    for (int ib = 0; ib < nb; ib++) {
        const __m256i q = _mm256_or_si256(nibbles_32(x[ib].qs), _mm256_and_si256(bits_32(x[ib].qh), b4));
        const __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)y[ib].qs));
        const __m256 d = _mm256_mul_ps(bcast_h(x[ib].d), bcast_h(y[ib].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), acc);
        summs += quant_f16_lut[x[ib].m] * quant_f16_lut[y[ib].s];
    }
    *s = hsum_ps(acc) + summs;
}

/* ---- tiles (prompt batches): 2 weight rows x 4 activation columns ------------------------------ */

/* Rows past the last pair and columns past the last group of 4 (quant_gemm's contract). */
static void gemm_rest(quant_vec_dot_fn dot, int n, float *s, size_t lds, const char *x, size_t bx,
                      int r0, int nr, const char *y, size_t by, int c0, int nc)
{
    for (int c = 0; c < nc; c++)
        for (int r = c < c0 ? r0 : 0; r < nr; r++)
            dot(n, s + (size_t)c * lds + r, x + (size_t)r * bx, y + (size_t)c * by);
}

/* Q4_0: the row pair's nibbles as in q4_0_vec_dot_rows ([a lo | b lo], [a hi | b hi]),
 * unpacked once per block for four columns; each column's broadcast halves and its
 * 8 * y offset are shared by the pair. */
static void q4_0_gemm(int n, float *s, size_t lds, const void *vx, size_t bx, int nr,
                      const void *vy, size_t by, int nc)
{
    const int nb = n / QK8_0, nr2 = nr & ~1;
    const __m256i m4 = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8), ones = _mm256_set1_epi16(1);
    int c = 0;
    for (; c + 3 < nc; c += 4) {
        const struct block_q8_0 *yc[4];
        for (int k = 0; k < 4; k++) yc[k] = (const void *)((const char *)vy + (size_t)(c + k) * by);
        for (int r = 0; r < nr2; r += 2) {
            const struct block_q4_0 *xa = (const void *)((const char *)vx + (size_t)r * bx);
            const struct block_q4_0 *xb = (const void *)((const char *)xa + bx);
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int ib = 0; ib < nb; ib++) {
                const __m256i v = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)xa[ib].qs)),
                    _mm_loadu_si128((const __m128i *)xb[ib].qs), 1);
                const __m256i lo = _mm256_and_si256(v, m4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                const __m256 dx = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_broadcast_ss(&quant_f16_lut[xa[ib].d])),
                                                       _mm_broadcast_ss(&quant_f16_lut[xb[ib].d]), 1);
                for (int k = 0; k < 4; k++) {
                    const struct block_q8_0 *yb = &yc[k][ib];
                    const __m256i ylo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)yb->qs));
                    const __m256i yhi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(yb->qs + 16)));
                    const __m256i off = _mm256_add_epi16(_mm256_maddubs_epi16(eight, ylo), _mm256_maddubs_epi16(eight, yhi));
                    __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_maddubs_epi16(hi, yhi));
                    p = _mm256_madd_epi16(_mm256_sub_epi16(p, off), ones);
                    acc[k] = _mm256_fmadd_ps(_mm256_mul_ps(dx, bcast_h(yb->d)), _mm256_cvtepi32_ps(p), acc[k]);
                }
            }
            for (int k = 0; k < 4; k++) {
                const __m128 h = _mm_hadd_ps(_mm256_castps256_ps128(acc[k]), _mm256_extractf128_ps(acc[k], 1));
                const __m128 t = _mm_hadd_ps(h, h); /* [a, b, a, b] */
                s[(size_t)(c + k) * lds + r] = _mm_cvtss_f32(t);
                s[(size_t)(c + k) * lds + r + 1] = _mm_cvtss_f32(_mm_shuffle_ps(t, t, 1));
            }
        }
    }
    gemm_rest(q4_0_vec_dot, n, s, lds, vx, bx, nr2, nr, vy, by, c, nc);
}

static void q5_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q5_0 *x = vx;
    const struct block_q8_0 *y = vy;
    const int nb = n / QK8_0;
    const __m256i hi_clear = _mm256_set1_epi8((char)0xF0);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int ib = 0;
    /* q - 16 as a signed byte: low nibble, OR 0xF0 where bit 4 is clear */
#define Q5_0_BLOCK(acc, b)                                                                    \
    do {                                                                                      \
        __m256i q = nibbles_32(x[b].qs);                                                      \
        q = _mm256_or_si256(q, _mm256_andnot_si256(bits_32(x[b].qh), hi_clear));              \
        const __m256i yv = _mm256_loadu_si256((const __m256i *)y[b].qs);                      \
        const __m256 d = _mm256_mul_ps(bcast_h(x[b].d), bcast_h(y[b].d));                                 \
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_s8(q, yv)), acc);                     \
    } while (0)
    for (; ib + 1 < nb; ib += 2) {
        Q5_0_BLOCK(acc0, ib);
        Q5_0_BLOCK(acc1, ib + 1);
    }
    if (ib < nb) Q5_0_BLOCK(acc0, ib);
#undef Q5_0_BLOCK
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

static void q8_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q8_0 *x = vx, *y = vy;
    const int nb = n / QK8_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int ib = 0;
#define Q8_0_BLOCK(acc, b)                                                                    \
    do {                                                                                      \
        const __m256i xv = _mm256_loadu_si256((const __m256i *)x[b].qs);                      \
        const __m256i yv = _mm256_loadu_si256((const __m256i *)y[b].qs);                      \
        const __m256 d = _mm256_mul_ps(bcast_h(x[b].d), bcast_h(y[b].d));                                 \
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_s8(xv, yv)), acc);                    \
    } while (0)
    for (; ib + 1 < nb; ib += 2) {
        Q8_0_BLOCK(acc0, ib);
        Q8_0_BLOCK(acc1, ib + 1);
    }
    if (ib < nb) Q8_0_BLOCK(acc0, ib);
#undef Q8_0_BLOCK
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

/* Q8_0: |x| and x's sign once per block for a pair of rows, four columns each. */
static void q8_0_gemm(int n, float *s, size_t lds, const void *vx, size_t bx, int nr,
                      const void *vy, size_t by, int nc)
{
    const int nb = n / QK8_0, nr2 = nr & ~1;
    const __m256i ones = _mm256_set1_epi16(1);
    int c = 0;
    for (; c + 3 < nc; c += 4) {
        const struct block_q8_0 *yc[4];
        for (int k = 0; k < 4; k++) yc[k] = (const void *)((const char *)vy + (size_t)(c + k) * by);
        for (int r = 0; r < nr2; r += 2) {
            const struct block_q8_0 *xa = (const void *)((const char *)vx + (size_t)r * bx);
            const struct block_q8_0 *xb = (const void *)((const char *)xa + bx);
            __m256 acca[4], accb[4];
            for (int k = 0; k < 4; k++) acca[k] = accb[k] = _mm256_setzero_ps();
            for (int ib = 0; ib < nb; ib++) {
                const __m256i va = _mm256_loadu_si256((const __m256i *)xa[ib].qs);
                const __m256i vb = _mm256_loadu_si256((const __m256i *)xb[ib].qs);
                const __m256i aa = _mm256_sign_epi8(va, va), ab = _mm256_sign_epi8(vb, vb);
                const __m256 da = bcast_h(xa[ib].d), db = bcast_h(xb[ib].d);
                for (int k = 0; k < 4; k++) {
                    const __m256i yv = _mm256_loadu_si256((const __m256i *)yc[k][ib].qs);
                    const __m256 dy = bcast_h(yc[k][ib].d);
                    const __m256i pa = _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(yv, va)), ones);
                    const __m256i pb = _mm256_madd_epi16(_mm256_maddubs_epi16(ab, _mm256_sign_epi8(yv, vb)), ones);
                    acca[k] = _mm256_fmadd_ps(_mm256_mul_ps(da, dy), _mm256_cvtepi32_ps(pa), acca[k]);
                    accb[k] = _mm256_fmadd_ps(_mm256_mul_ps(db, dy), _mm256_cvtepi32_ps(pb), accb[k]);
                }
            }
            for (int k = 0; k < 4; k++) {
                s[(size_t)(c + k) * lds + r] = hsum_ps(acca[k]);
                s[(size_t)(c + k) * lds + r + 1] = hsum_ps(accb[k]);
            }
        }
    }
    gemm_rest(q8_0_vec_dot, n, s, lds, vx, bx, nr2, nr, vy, by, c, nc);
}

/* ---- K-quants ------------------------------------------------------------------------------ */

/* The 12 packed bytes of Q4_K/Q5_K -> sc[0..7] in bytes 0-7, m[0..7] in bytes 8-15
 * (quant_blocks.h: j < 4 low 6 bits of bytes j / j+4; j >= 4 a nibble of byte j+4 with
 * the top 2 bits of byte j-4 / j). */
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

/* sum_j m[j] * (bsums[2j] + bsums[2j+1]) as 4 int32 partial sums. */
static inline __m128i kx_min_sums(__m256i mins16_hi, const int16_t *bsums)
{
    const __m256i b = _mm256_loadu_si256((const __m256i *)bsums);
    const __m128i pair = _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    return _mm_madd_epi16(_mm256_extracti128_si256(mins16_hi, 1), pair);
}

static void q4_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q4_K *x = vx;
    const struct block_q8_K *y = vy;
    const int nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const float d = y[i].d * h2f(x[i].d);
        const float dmin = -y[i].d * h2f(x[i].dmin);
        /* 16-bit sc[0..7] then m[0..7] */
        const __m256i sm = _mm256_cvtepu8_epi16(kx_scales_mins(x[i].scales));
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(kx_min_sums(sm, y[i].bsums)), acc_m);
        const __m128i sc128 = _mm256_castsi256_si128(sm);
        const __m256i scales = _mm256_inserti128_si256(_mm256_castsi128_si256(sc128), sc128, 1);
        const uint8_t *q4 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; j++, q4 += 32, q8 += 64) {
            /* broadcast the 16-bit scales of sub-blocks 2j and 2j+1 */
            const __m256i sc_l = _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)(0x0100 * (4 * j + 1) + 4 * j)));
            const __m256i sc_h = _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)(0x0100 * (4 * j + 3) + 4 * j + 2)));
            const __m256i bits = _mm256_loadu_si256((const __m256i *)q4);
            const __m256i lo = _mm256_and_si256(bits, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            __m256i pl = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)q8));
            __m256i ph = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
            pl = _mm256_madd_epi16(sc_l, pl);
            ph = _mm256_madd_epi16(sc_h, ph);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    *s = hsum_ps(acc) + _mm_cvtss_f32(acc_m);
}

static void q5_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q5_K *x = vx;
    const struct block_q8_K *y = vy;
    const int nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF), sixteen = _mm256_set1_epi8(16);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const float d = y[i].d * h2f(x[i].d);
        const float dmin = -y[i].d * h2f(x[i].dmin);
        const __m256i sm = _mm256_cvtepu8_epi16(kx_scales_mins(x[i].scales));
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(kx_min_sums(sm, y[i].bsums)), acc_m);
        const __m128i sc128 = _mm256_castsi256_si128(sm);
        const __m256i scales = _mm256_inserti128_si256(_mm256_castsi128_si256(sc128), sc128, 1);
        const uint8_t *q5 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        const __m256i hbits = _mm256_loadu_si256((const __m256i *)x[i].qh);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; j++, q5 += 32, q8 += 64) {
            const __m256i sc_l = _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)(0x0100 * (4 * j + 1) + 4 * j)));
            const __m256i sc_h = _mm256_shuffle_epi8(scales, _mm256_set1_epi16((short)(0x0100 * (4 * j + 3) + 4 * j + 2)));
            const __m256i bits = _mm256_loadu_si256((const __m256i *)q5);
            /* bit 2j of qh[l] is bit 4 of element 64j + l, bit 2j+1 that of 64j + 32 + l */
            const __m256i bl = _mm256_set1_epi8((char)(1 << (2 * j)));
            const __m256i bh = _mm256_set1_epi8((char)(2 << (2 * j)));
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(bits, m4),
                _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, bl), bl), sixteen));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4),
                _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, bh), bh), sixteen));
            __m256i pl = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)q8));
            __m256i ph = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(q8 + 32)));
            pl = _mm256_madd_epi16(sc_l, pl);
            ph = _mm256_madd_epi16(sc_h, ph);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    *s = hsum_ps(acc) + _mm_cvtss_f32(acc_m);
}

static void q6_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q6_K *x = vx;
    const struct block_q8_K *y = vy;
    const int nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const float d = y[i].d * h2f(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *q8 = y[i].qs;
        const __m128i scales = _mm_loadu_si128((const __m128i *)x[i].scales);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, q8 += 128) {
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)ql);
            const __m256i b2 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            const __m256i bh = _mm256_loadu_si256((const __m256i *)qh);
            /* levels 0..63 of elements 128h + 32k + l, k = 0..3 */
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(b1, m4), _mm256_slli_epi16(_mm256_and_si256(bh, m2), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(b2, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 2), m2), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 4), m2), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(bh, 6), m2), 4));
            for (int k = 0; k < 4; k++) {
                /* scales of sub-blocks 8h + 2k (first 16 elements) and 8h + 2k + 1 */
                const int is = 8 * h + 2 * k;
                const __m128i shuf = _mm_set_epi64x(0x0101010101010101LL * (is + 1), 0x0101010101010101LL * is);
                const __m256i sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, shuf));
                __m256i p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256((const __m256i *)(q8 + 32 * k)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p));
            }
        }
        /* the -32 offset as lanes: 32 * scales[k] * bsums[k], summed with the rest */
        const __m256i off = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[i].scales)),
                                              _mm256_loadu_si256((const __m256i *)y[i].bsums));
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(off, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_ps(acc);
}

void quant_avx2_install(struct quant_traits *tab)
{
    tab[QT_F32].vec_dot = f32_vec_dot;
    tab[QT_F16].to_float = f16_to_f32_row;
    tab[QT_F16].from_float = f32_to_f16_row;
    tab[QT_F16].vec_dot = f16_vec_dot;
    tab[QT_BF16].vec_dot = bf16_vec_dot;
    tab[QT_Q8_0].from_float = q8_0_from_float;
    tab[QT_Q8_K].from_float = q8_K_from_float;
    tab[QT_Q4_0].vec_dot = q4_0_vec_dot;
    tab[QT_Q4_0].vec_dot_rows = q4_0_vec_dot_rows;
    tab[QT_Q4_0].gemm = q4_0_gemm;
    tab[QT_Q8_0].gemm = q8_0_gemm;
    tab[QT_Q5_0].vec_dot = q5_0_vec_dot;
    tab[QT_Q4_1].vec_dot = q4_1_vec_dot;
    tab[QT_Q5_1].vec_dot = q5_1_vec_dot;
    tab[QT_Q8_0].vec_dot = q8_0_vec_dot;
    tab[QT_Q4_K].vec_dot = q4_K_vec_dot;
    tab[QT_Q5_K].vec_dot = q5_K_vec_dot;
    tab[QT_Q6_K].vec_dot = q6_K_vec_dot;
}
