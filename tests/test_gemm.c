/* test_gemm.c - engine/gemm: the prepared-activation Q4_0 x Q8_0 and Q8_0 x Q8_0 tile
 * products against their scalar references and against quant's vec_dot, on random shapes with ragged
 * edges (rows and columns not multiples of the 8 x 8 tile, odd block counts), with a
 * leading dimension larger than the row count, on every path this CPU has. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gemm.h"
#include "engine/quant.h"
#include "engine/quant_blocks.h"
#include "tests/util/test_util.h"

/* A random problem: nr Q4_0 rows and nc Q8_0 rows of n elements, quantized from
 * uniform floats with the reference quantizers. */
struct prob {
    int wtype; /* QT_Q4_0 or QT_Q8_0 */
    int n, nr, nc;
    size_t bx, by, lds;
    uint8_t *x, *y;
    void *aux;
    float *want, *got;
};

static void prob_ref(struct prob *p)
{
    if (p->wtype == QT_Q4_0)
        gemm_ref_q4_0_q8_0(p->n, p->want, p->lds, p->x, p->bx, p->nr, p->y, p->by, p->nc);
    else
        gemm_ref_q8_0_q8_0(p->n, p->want, p->lds, p->x, p->bx, p->nr, p->y, p->by, p->nc);
}

static void prob_make(struct prob *p, int wtype, int n, int nr, int nc, uint64_t *rng)
{
    p->wtype = wtype;
    p->n = n, p->nr = nr, p->nc = nc;
    p->bx = quant_row_bytes(wtype, n);
    p->by = quant_row_bytes(QT_Q8_0, n);
    p->lds = (size_t)nr + 3;
    p->x = malloc(p->bx * (size_t)nr);
    p->y = malloc(p->by * (size_t)nc);
    p->aux = malloc(gemm_q8_0_aux_bytes(n, nc));
    p->want = calloc(p->lds * (size_t)nc, sizeof(float));
    p->got = calloc(p->lds * (size_t)nc, sizeof(float));
    float *f = malloc((size_t)n * sizeof(float));
    assert_non_null(p->x);
    assert_non_null(p->y);
    assert_non_null(p->aux);
    assert_non_null(p->want);
    assert_non_null(p->got);
    assert_non_null(f);
    for (int r = 0; r < nr; r++) {
        for (int i = 0; i < n; i++) f[i] = test_rand_uniform(rng);
        quant_traits_ref(wtype)->from_float(f, p->x + (size_t)r * p->bx, n);
    }
    for (int c = 0; c < nc; c++) {
        for (int i = 0; i < n; i++) f[i] = test_rand_uniform(rng) * 3.0f;
        quant_traits_ref(QT_Q8_0)->from_float(f, p->y + (size_t)c * p->by, n);
    }
    free(f);
    gemm_q8_0_prepare(n, p->y, p->by, nc, p->aux);
    prob_ref(p);
}

static void prob_run(const struct prob *p, float *got, bool vnni_kernel)
{
    for (size_t k = 0; k < p->lds * (size_t)p->nc; k++) got[k] = NAN;
#if defined(__x86_64__)
    if (vnni_kernel) {
        if (p->wtype == QT_Q4_0)
            gemm_avx512_q4_0_q8_0(p->n, got, p->lds, p->x, p->bx, p->nr, p->y, p->by, p->nc, p->aux);
        else
            gemm_avx512_q8_0_q8_0(p->n, got, p->lds, p->x, p->bx, p->nr, p->y, p->by, p->nc, p->aux);
        return;
    }
#endif
    (void)vnni_kernel;
    if (p->wtype == QT_Q4_0)
        gemm_q4_0_q8_0(p->n, got, p->lds, p->x, p->bx, p->nr, p->y, p->by, p->nc, p->aux);
    else
        gemm_q8_0_q8_0(p->n, got, p->lds, p->x, p->bx, p->nr, p->y, p->by, p->nc, p->aux);
}

static void prob_free(struct prob *p)
{
    free(p->x);
    free(p->y);
    free(p->aux);
    free(p->want);
    free(p->got);
}

/* Results agree up to float summation order: |got - want| small against the sum of
 * |terms| (bounded by n * 8 * 127 * |dx dy|; here relative to the larger of the two). */
static void expect_close(const struct prob *p, const float *got)
{
    for (int c = 0; c < p->nc; c++)
        for (int r = 0; r < p->nr; r++) {
            float w = p->want[(size_t)c * p->lds + r], g = got[(size_t)c * p->lds + r];
            float tol = 1e-4f * (fabsf(w) + 0.05f * sqrtf((float)p->n));
            if (fabsf(w - g) > tol)
                fail_msg("n=%d nr=%d nc=%d: [c=%d][r=%d] got %g want %g", p->n, p->nr, p->nc, c,
                         r, (double)g, (double)w);
        }
}

static const int shapes[][3] = {
    {32, 1, 1}, {64, 8, 8}, {96, 7, 9}, {256, 13, 3}, {2048, 32, 64}, {160, 3, 17},
    {288, 21, 5}, {64, 4, 15}, {5632 / 4, 9, 11}, {128, 2, 6}, {96, 17, 13},
};
static const int wtypes[2] = {QT_Q4_0, QT_Q8_0};

static void test_gemm_reference_equals_quant_vec_dot(void **state)
{
    (void)state;
    uint64_t rng = 7;
    for (size_t i = 0; i < 2 * sizeof shapes / sizeof shapes[0]; i++) {
        struct prob p;
        int wt = wtypes[i % 2];
        const struct quant_traits *ref = quant_traits_ref(wt);
        prob_make(&p, wt, shapes[i / 2][0], shapes[i / 2][1], shapes[i / 2][2], &rng);
        for (int c = 0; c < p.nc; c++)
            for (int r = 0; r < p.nr; r++)
                ref->vec_dot(p.n, &p.got[(size_t)c * p.lds + r], p.x + (size_t)r * p.bx,
                             p.y + (size_t)c * p.by);
        expect_close(&p, p.got);
        prob_free(&p);
    }
}

static void test_gemm_matches_scalar_on_every_path(void **state)
{
    (void)state;
    uint64_t rng = 11;
    for (size_t i = 0; i < 2 * sizeof shapes / sizeof shapes[0]; i++) {
        struct prob p;
        prob_make(&p, wtypes[i % 2], shapes[i / 2][0], shapes[i / 2][1], shapes[i / 2][2], &rng);
        /* the dispatching entry point (path chosen by MESHLLM_ISA / the CPU) */
        prob_run(&p, p.got, false);
        expect_close(&p, p.got);
        /* the VNNI kernel itself, whatever path is selected */
        if (quant_isa_supported("avx512")) {
            prob_run(&p, p.got, true);
            expect_close(&p, p.got);
            /* padding between lds and nr is never written */
            for (int c = 0; c < p.nc; c++)
                for (size_t r = (size_t)p.nr; r < p.lds; r++)
                    assert_true(isnan(p.got[(size_t)c * p.lds + r]));
        }
        prob_free(&p);
    }
}

/* Extreme values: all nibbles 0 or 15 and activations +-127 stay exact in int32. */
static void test_gemm_q4_0_extremes_exact(void **state)
{
    (void)state;
    enum { N = 512, NR = 9, NC = 10 };
    struct prob p = {.wtype = QT_Q4_0, .n = N, .nr = NR, .nc = NC};
    p.bx = quant_row_bytes(QT_Q4_0, N);
    p.by = quant_row_bytes(QT_Q8_0, N);
    p.lds = NR;
    p.x = calloc((size_t)NR, p.bx);
    p.y = calloc((size_t)NC, p.by);
    p.aux = malloc(gemm_q8_0_aux_bytes(N, NC));
    p.want = calloc((size_t)NR * NC, sizeof(float));
    p.got = calloc((size_t)NR * NC, sizeof(float));
    assert_non_null(p.x);
    assert_non_null(p.y);
    assert_non_null(p.aux);
    assert_non_null(p.want);
    assert_non_null(p.got);
    for (int r = 0; r < NR; r++) {
        struct block_q4_0 *b = (void *)(p.x + (size_t)r * p.bx);
        for (int ib = 0; ib < N / 32; ib++) {
            b[ib].d = quant_f32_to_f16(1.0f);
            memset(b[ib].qs, (r + ib) % 2 ? 0xFF : 0x00, sizeof b[ib].qs);
        }
    }
    for (int c = 0; c < NC; c++) {
        struct block_q8_0 *b = (void *)(p.y + (size_t)c * p.by);
        for (int ib = 0; ib < N / 32; ib++) {
            b[ib].d = quant_f32_to_f16(1.0f);
            memset(b[ib].qs, c % 2 ? 127 : -127, sizeof b[ib].qs);
        }
    }
    gemm_q8_0_prepare(N, p.y, p.by, NC, p.aux);
    gemm_ref_q4_0_q8_0(N, p.want, p.lds, p.x, p.bx, NR, p.y, p.by, NC);
    gemm_q4_0_q8_0(N, p.got, p.lds, p.x, p.bx, NR, p.y, p.by, NC, p.aux);
    /* each block contributes (+-7 or -8) * 32 * +-127 exactly; sums of such integers
     * below 2^24 are exact in float, so both agree exactly */
    assert_memory_equal(p.want, p.got, sizeof(float) * NR * NC);
    prob_free(&p);
}

int main(void)
{
    quant_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_reference_equals_quant_vec_dot),
        cmocka_unit_test(test_gemm_matches_scalar_on_every_path),
        cmocka_unit_test(test_gemm_q4_0_extremes_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
