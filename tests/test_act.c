/* test_act.c - engine/act: SwiGLU on every path this CPU has against the scalar
 * reference (libm expf) over the whole useful range of gate values, ragged lengths for
 * the vector tails, and the selected kernel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/act.h"
#include "engine/quant.h"
#include "tests/util/test_util.h"

enum { N = 4099 };

/* got within 4 float ulps of want (e^x to ~1 ulp, then a division and a product), or
 * both below 1e-30 in magnitude (gates under -87, where e^-g saturates). */
static void expect_close(const float *want, const float *got, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        float w = want[i], g = got[i];
        if (fabsf(w) < 1e-30f && fabsf(g) < 1e-30f) continue;
        if (!(fabsf(w - g) <= 4 * 5.96e-8f * fabsf(w)))
            fail_msg("%s [%d]: got %.9g want %.9g", what, i, (double)g, (double)w);
    }
}

static void run_path(act_swiglu_fn fn, const char *what)
{
    float *g = malloc(N * sizeof(float)), *u = malloc(N * sizeof(float));
    float *want = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
    assert_true(g && u && want && got);
    uint64_t rng = 5;
    for (int i = 0; i < N; i++) {
        /* gates from -100 to 100, denser near 0 where SiLU bends; a few exact values */
        float r = test_rand_uniform(&rng);
        g[i] = i % 3 == 0 ? 100.0f * r : i % 3 == 1 ? 8.0f * r : 0.01f * r;
        u[i] = 2.0f * test_rand_uniform(&rng);
    }
    g[0] = 0.0f, g[1] = -0.0f, g[2] = 1e-30f, g[3] = -87.5f, g[4] = 88.5f, g[5] = -20.0f;
    for (int n = 0; n <= N; n += n < 40 ? 1 : 997) { /* every tail length, then long rows */
        memcpy(want, g, (size_t)n * sizeof(float));
        memcpy(got, g, (size_t)n * sizeof(float));
        act_swiglu_ref(want, u, n);
        fn(got, u, n);
        expect_close(want, got, n, what);
    }
    /* silu(0) = 0, silu(x) -> x for large x, -> 0 for very negative x, in every lane of
     * the vector loop (32 elements: no scalar tail on any path) */
    float a[32], one[32];
    for (int i = 0; i < 32; i++) {
        a[i] = i % 3 == 0 ? 0.0f : i % 3 == 1 ? 50.0f : -200.0f;
        one[i] = 1.0f;
    }
    fn(a, one, 32);
    for (int i = 0; i < 32; i++) {
        if (i % 3 == 0) assert_true(a[i] == 0.0f);
        else if (i % 3 == 1) assert_true(a[i] == 50.0f);
        else assert_true(fabsf(a[i]) < 1e-30f);
    }
    free(g);
    free(u);
    free(want);
    free(got);
}

static void test_act_swiglu_every_path_matches_reference(void **state)
{
    (void)state;
    run_path(act_swiglu_select(), "selected");
#if defined(__x86_64__)
    if (quant_isa_supported("avx2")) run_path(act_avx2_swiglu, "avx2");
    if (quant_isa_supported("avx512")) run_path(act_avx512_swiglu, "avx512");
#endif
}

int main(void)
{
    quant_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_act_swiglu_every_path_matches_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
