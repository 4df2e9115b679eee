/* act_avx512.c - SwiGLU on 16 floats at a time (act.h); the tail by the reference. */
#include "engine/act.h"

#include <immintrin.h>

#include "engine/simd_exp.h"

void act_avx512_swiglu(float *g, const float *u, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i);
        const __m512 e = simd_exp16(_mm512_sub_ps(zero, x));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)), _mm512_loadu_ps(u + i)));
    }
    act_swiglu_ref(g + i, u + i, n - i);
}
