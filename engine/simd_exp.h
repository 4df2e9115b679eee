/* simd_exp.h - e^x on AVX2 / AVX-512 vectors, shared by the *_avx2.c / *_avx512.c kernels
 * that need it (attention's softmax, SwiGLU). x = n ln2 + r with ln2 split in two
 * (Cody-Waite, so n ln2 is exact for |n| < 512), |r| <= ln2 / 2, e^r by its degree-7
 * Taylor polynomial (truncation < 3e-9 relative), times 2^n through the exponent bits:
 * about 1 ulp (0.89 ulp measured over [-86, 0]; tests/test_attn.c, tests/test_act.c). Inputs below -86 (and -inf) give 0; inputs above 88
 * are clamped to 88 (e^88 = 1.65e38, still finite), which no caller can tell from
 * infinity after dividing by it. Static inline: include only from files compiled with
 * the matching ISA flags (the Makefile's per-file rules). */
#ifndef MESH_ENGINE_SIMD_EXP_H
#define MESH_ENGINE_SIMD_EXP_H

#include <immintrin.h>

#if defined(__AVX2__) && defined(__FMA__)
static inline __attribute__((always_inline)) __m256 simd_exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), x); /* NaN stays NaN (then 0) */
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606820309417232e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    const __m256 y = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
    return _mm256_and_ps(y, _mm256_cmp_ps(x, _mm256_set1_ps(-86.0f), _CMP_GE_OQ));
}
#endif

#if defined(__AVX512F__)
static inline __attribute__((always_inline)) __m512 simd_exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), x); /* NaN stays NaN (then 0) */
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606820309417232e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __mmask16 ok = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-86.0f), _CMP_GE_OQ);
    const __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23);
    return _mm512_maskz_mov_ps(ok, _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), e)));
}
#endif

#endif
