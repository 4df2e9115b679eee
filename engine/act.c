/* act.c - SwiGLU's scalar reference and the choice of kernel (act.h). */
#include "engine/act.h"

#include <math.h>
#include <string.h>

#include "engine/quant.h"

void act_swiglu_ref(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

act_swiglu_fn act_swiglu_select(void)
{
#if defined(__x86_64__)
    const char *isa = quant_isa_name();
    if (strcmp(isa, "avx512") == 0) return act_avx512_swiglu;
    if (strcmp(isa, "avx2") == 0) return act_avx2_swiglu;
#endif
    return act_swiglu_ref;
}
