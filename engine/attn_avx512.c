/* attn_avx512.c - AVX-512 attention of one GQA group (attn.h).
 *
 * The passes and tiles of attn_avx2.c (scores in tiles of heads x positions whose partial
 * sums fold into one vector of scores; softmax with a vectorised expf and the sum in
 * double lanes; P V in tiles of heads x chunks) with 16-element chunks, so it takes
 * head_dim % 16 == 0; other head sizes go to the AVX2 kernel. On Zen 4 the 512-bit units
 * are double-pumped: the gain is fewer instructions (loads, F16 conversions, loop
 * overhead), not more FLOPs per cycle.
 */
#include "engine/attn.h"

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "engine/quant_blocks.h"
#include "engine/simd_exp.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))
#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* 16 elements of a cache at element index i, as floats (t: enum attn_kv_type); a
 * quantized block is dequantized in registers, d * q. */
static ALWAYS_INLINE __m512 ld16(const void *base, size_t i, int t)
{
    if (t == ATTN_KV_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i)));
    if (t == ATTN_KV_F32) return _mm512_loadu_ps((const float *)base + i);
    const size_t j = i % 32; /* i % 16 == 0: the 16 elements lie in one block (one nibble half) */
    if (t == ATTN_KV_Q8_0) {
        const struct block_q8_0 *b = (const struct block_q8_0 *)base + i / 32;
        const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + j)));
        return _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b->d)), _mm512_cvtepi32_ps(q));
    }
    const struct block_q4_0 *b = (const struct block_q4_0 *)base + i / 32;
    __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b->qs));
    if (j >= 16) q = _mm512_srli_epi32(q, 4);
    q = _mm512_sub_epi32(_mm512_and_si512(q, _mm512_set1_epi32(15)), _mm512_set1_epi32(8));
    return _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(b->d)), _mm512_cvtepi32_ps(q));
}

/* Lane l = the horizontal sum of a[l] (the two 256-bit halves added, then an hadd tree). */
static ALWAYS_INLINE __m256 fold8(const __m512 a[8])
{
    __m256 h[8];
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++)
        h[t] = _mm256_add_ps(_mm512_castps512_ps256(a[t]), _mm512_extractf32x8_ps(a[t], 1));
    __m256 t0 = _mm256_hadd_ps(h[0], h[1]), t1 = _mm256_hadd_ps(h[2], h[3]);
    __m256 t2 = _mm256_hadd_ps(h[4], h[5]), t3 = _mm256_hadd_ps(h[6], h[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* scores[h][p0 + j] = scale * qr_h . k_{p0+j} for hb heads and pb = 8 / hb positions;
 * positions past n_kv reuse the last row (their scores land in the padding). */
static ALWAYS_INLINE void score_tile(const struct attn_group_args *a, const float *qr,
                                     float *scores, size_t n_pad, int i0, int p0, int hb,
                                     int kt)
{
    const int pb = 8 / hb, hd = a->head_dim;
    size_t row[8];
#pragma GCC unroll 8
    for (int j = 0; j < pb; j++)
        row[j] = (size_t)(p0 + j < a->n_kv ? p0 + j : a->n_kv - 1) * a->kv_stride + a->kv_off;
    __m512 acc[8];
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++) acc[t] = _mm512_setzero_ps();
    for (int c = 0; c < hd; c += 16) {
        __m512 kv[8];
#pragma GCC unroll 8
        for (int j = 0; j < pb; j++) kv[j] = ld16(a->k, row[j] + (size_t)c, kt);
#pragma GCC unroll 8
        for (int h = 0; h < hb; h++) {
            const __m512 qv = _mm512_loadu_ps(qr + (size_t)(i0 + h) * (size_t)hd + (size_t)c);
#pragma GCC unroll 8
            for (int j = 0; j < pb; j++) acc[h * pb + j] = _mm512_fmadd_ps(qv, kv[j], acc[h * pb + j]);
        }
    }
    const __m256 sv = _mm256_mul_ps(fold8(acc), _mm256_set1_ps(a->scale));
    float *dst = scores + (size_t)i0 * n_pad + (size_t)p0; /* lane h * pb + j -> dst[h][j] */
    if (pb == 8) {
        _mm256_storeu_ps(dst, sv);
    } else if (pb == 4) {
        _mm_storeu_ps(dst, _mm256_castps256_ps128(sv));
        _mm_storeu_ps(dst + n_pad, _mm256_extractf128_ps(sv, 1));
    } else {
        float s[8];
        _mm256_storeu_ps(s, sv);
#pragma GCC unroll 8
        for (int h = 0; h < hb; h++)
#pragma GCC unroll 8
            for (int j = 0; j < pb; j++) dst[(size_t)h * n_pad + (size_t)j] = s[h * pb + j];
    }
}

/* out[h][16 c0 .. 16 (c0 + cb)) = sum_p prob[h][p] v_p for hb heads, cb chunks of 16, with
 * ns position streams (p = ns k + s) summed at the end; hb * cb * ns == 8. */
static ALWAYS_INLINE void value_tile(const struct attn_group_args *a, const float *prob,
                                     size_t n_pad, int i0, int c0, int hb, int cb, int ns,
                                     int vt)
{
    const int hd = a->head_dim, n_kv = a->n_kv;
    __m512 acc[8];
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++) acc[t] = _mm512_setzero_ps();
    int p = 0;
    for (; p + ns <= n_kv; p += ns) {
#pragma GCC unroll 8
        for (int s = 0; s < ns; s++) {
            const size_t row = (size_t)(p + s) * a->kv_stride + a->kv_off + (size_t)c0 * 16;
            __m512 vv[8];
#pragma GCC unroll 8
            for (int c = 0; c < cb; c++) vv[c] = ld16(a->v, row + (size_t)c * 16, vt);
#pragma GCC unroll 8
            for (int h = 0; h < hb; h++) {
                const __m512 pr = _mm512_set1_ps(prob[(size_t)(i0 + h) * n_pad + (size_t)(p + s)]);
#pragma GCC unroll 8
                for (int c = 0; c < cb; c++)
                    acc[(s * hb + h) * cb + c] = _mm512_fmadd_ps(pr, vv[c], acc[(s * hb + h) * cb + c]);
            }
        }
    }
    for (; p < n_kv; p++) {
        const size_t row = (size_t)p * a->kv_stride + a->kv_off + (size_t)c0 * 16;
#pragma GCC unroll 8
        for (int h = 0; h < hb; h++) {
            const __m512 pr = _mm512_set1_ps(prob[(size_t)(i0 + h) * n_pad + (size_t)p]);
#pragma GCC unroll 8
            for (int c = 0; c < cb; c++)
                acc[h * cb + c] = _mm512_fmadd_ps(pr, ld16(a->v, row + (size_t)c * 16, vt), acc[h * cb + c]);
        }
    }
#pragma GCC unroll 8
    for (int s = 1; s < ns; s++)
#pragma GCC unroll 8
        for (int t = 0; t < hb * cb; t++) acc[t] = _mm512_add_ps(acc[t], acc[s * hb * cb + t]);
#pragma GCC unroll 8
    for (int h = 0; h < hb; h++)
#pragma GCC unroll 8
        for (int c = 0; c < cb; c++)
            _mm512_storeu_ps(a->out + (size_t)(i0 + h) * (size_t)hd + (size_t)(c0 + c) * 16, acc[h * cb + c]);
}

/* Softmax of one head's scores[0..n_kv) in place (padding up to a multiple of 16 holds
 * -inf); probabilities rounded to F16 when f16. */
static void softmax_row(float *row, int n_kv, bool f16)
{
    const int n16 = (n_kv + 15) / 16 * 16;
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int p = 0; p < n16; p += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(row + p));
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int p = 0; p < n16; p += 16) {
        const __m512 e = simd_exp16(_mm512_sub_ps(_mm512_loadu_ps(row + p), mx));
        _mm512_storeu_ps(row + p, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    }
    const __m512 inv = _mm512_set1_ps((float)(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(s0, s1))));
    for (int p = 0; p < n16; p += 16) {
        __m512 pr = _mm512_mul_ps(_mm512_loadu_ps(row + p), inv);
        if (f16) pr = _mm512_cvtph_ps(_mm512_cvtps_ph(pr, RNE));
        _mm512_storeu_ps(row + p, pr);
    }
}

static ALWAYS_INLINE void group(const struct attn_group_args *a, int kt, int vt)
{
    const int hd = a->head_dim, n_q = a->n_q, n_kv = a->n_kv;
    const size_t n_pad = ((size_t)n_kv + 15) / 16 * 16;
    float *scores = a->scratch;               /* [n_q][n_pad] scores, then probabilities */
    float *qr = scores + (size_t)n_q * n_pad; /* [n_q][hd] query as the dot sees it */
    for (int i = 0; i < n_q * hd; i += 16) {
        __m512 q = _mm512_loadu_ps(a->q + i);
        if (kt == ATTN_KV_F16) q = _mm512_cvtph_ps(_mm512_cvtps_ph(q, RNE));
        _mm512_storeu_ps(qr + i, q);
    }
    /* 1. scores */
    for (int i0 = 0; i0 < n_q;) {
        const int left = n_q - i0;
        if (left >= 8) {
            for (int p = 0; p < n_kv; p += 1) score_tile(a, qr, scores, n_pad, i0, p, 8, kt);
            i0 += 8;
        } else if (left >= 4) {
            for (int p = 0; p < n_kv; p += 2) score_tile(a, qr, scores, n_pad, i0, p, 4, kt);
            i0 += 4;
        } else if (left >= 2) {
            for (int p = 0; p < n_kv; p += 4) score_tile(a, qr, scores, n_pad, i0, p, 2, kt);
            i0 += 2;
        } else {
            for (int p = 0; p < n_kv; p += 8) score_tile(a, qr, scores, n_pad, i0, p, 1, kt);
            i0 += 1;
        }
    }
    /* 2. softmax per head; -inf in the padding the vector loops read */
    for (int i = 0; i < n_q; i++) {
        float *row = scores + (size_t)i * n_pad;
        for (size_t p = (size_t)n_kv; p < n_pad; p++) row[p] = -INFINITY;
        softmax_row(row, n_kv, vt == ATTN_KV_F16);
    }
    /* 3. out = P V, tiles of heads x chunks; a remainder chunk uses position streams */
    const int n_ch = hd / 16;
    for (int i0 = 0; i0 < n_q;) {
        const int left = n_q - i0;
        const int hb = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
        const int cb = 8 / hb;
        int c0 = 0;
        for (; c0 + cb <= n_ch; c0 += cb) {
            switch (hb) {
            case 8: value_tile(a, scores, n_pad, i0, c0, 8, 1, 1, vt); break;
            case 4: value_tile(a, scores, n_pad, i0, c0, 4, 2, 1, vt); break;
            case 2: value_tile(a, scores, n_pad, i0, c0, 2, 4, 1, vt); break;
            default: value_tile(a, scores, n_pad, i0, c0, 1, 8, 1, vt); break;
            }
        }
        for (; c0 < n_ch; c0++) {
            switch (hb) {
            case 4: value_tile(a, scores, n_pad, i0, c0, 4, 1, 2, vt); break;
            case 2: value_tile(a, scores, n_pad, i0, c0, 2, 1, 4, vt); break;
            default: value_tile(a, scores, n_pad, i0, c0, 1, 1, 8, vt); break;
            }
        }
        i0 += hb;
    }
}

void attn_avx512_group(const struct attn_group_args *a)
{
    if (a->head_dim % 16 != 0) {
        attn_avx2_group(a);
        return;
    }
    const bool quant = a->k_type >= ATTN_KV_Q8_0 || a->v_type >= ATTN_KV_Q8_0;
    if (quant && a->kv_off % 16 != 0) {
        attn_avx2_group(a); /* a head that starts inside a 16-element chunk of a block */
        return;
    }
    /* one instance per (K type, V type): the loads are resolved at compile time */
#define KV_CASE(kt, vt) \
    case (kt) * 4 + (vt): group(a, kt, vt); break
    switch ((int)a->k_type * 4 + (int)a->v_type) {
        KV_CASE(0, 0); KV_CASE(0, 1); KV_CASE(0, 2); KV_CASE(0, 3);
        KV_CASE(1, 0); KV_CASE(1, 1); KV_CASE(1, 2); KV_CASE(1, 3);
        KV_CASE(2, 0); KV_CASE(2, 1); KV_CASE(2, 2); KV_CASE(2, 3);
        KV_CASE(3, 0); KV_CASE(3, 1); KV_CASE(3, 2); KV_CASE(3, 3);
    default: attn_ref_group(a); break;
    }
#undef KV_CASE
}
