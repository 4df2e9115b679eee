/* act_avx2.c - SwiGLU on 8 floats at a time (act.h); the tail by the reference. */
#include "engine/act.h"

#include <immintrin.h>

#include "engine/simd_exp.h"

void act_avx2_swiglu(float *g, const float *u, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = simd_exp8(_mm256_sub_ps(zero, x));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    act_swiglu_ref(g + i, u + i, n - i);
}
