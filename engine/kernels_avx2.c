/* kernels_avx2.c - AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c -mbmi2;
 * only called when quant.c saw those features in cpuid).
 *
 * Same signatures and results as the scalar reference in quant_ref.c, up to float
 * summation order. Integer dot products use maddubs (u8 x s8 -> s16 pairs) on |x| and
 * sign(y, x), as llama.cpp's x86 kernels do; partial products never saturate because
 * every operand is within [-127, 127] (Q8 activations) or tighter (weights).
 */
#include <immintrin.h>

#include "engine/quant_internal.h"

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

void quant_avx2_install(struct quant_traits *tab)
{
    tab[QT_F16].to_float = f16_to_f32_row;
    tab[QT_F16].from_float = f32_to_f16_row;
}
