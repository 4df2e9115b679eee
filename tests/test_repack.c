/* test_repack.c - engine/repack: the 8-row Q4_0 layout and its decode kernels. The
 * scalar reference against quant's Q4_0 vec_dot, the AVX2 and AVX-512 kernels (each
 * that this CPU has, whatever path is selected) and the dispatcher against the
 * reference, on random shapes including row counts that are not multiples of 8 (the
 * tail then read in place by vec_dot, as the forward pass does), exact extremes, and
 * rejected shapes; and a random Q4_0 model decoding token by token with and without
 * repacking (MESHLLM_NO_REPACK=1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "engine/model.h"
#include "engine/model_gen.h"
#include "engine/model_internal.h"
#include "engine/quant.h"
#include "engine/quant_blocks.h"
#include "engine/quantize.h"
#include "engine/repack.h"
#include "tests/util/test_util.h"

typedef void (*gemv_fn)(int n, float *s, const void *x, int nr, const void *y);

/* nr random Q4_0 rows and one Q8_0 row of n elements; want[r] from quant's reference
 * vec_dot; xr the repack of the first nr & ~7 rows. */
struct prob {
    int n, nr, nrep;
    size_t bx;
    uint8_t *x, *y, *xr;
    float *want, *got;
};

static void prob_make(struct prob *p, int n, int nr, uint64_t *rng)
{
    p->n = n, p->nr = nr, p->nrep = nr & ~7;
    p->bx = quant_row_bytes(QT_Q4_0, n);
    p->x = malloc(p->bx * (size_t)nr);
    p->y = malloc(quant_row_bytes(QT_Q8_0, n));
    size_t rb = repack_q4_0_bytes(n, p->nrep);
    p->xr = malloc(rb ? rb : 1);
    p->want = calloc((size_t)nr, sizeof(float));
    p->got = calloc((size_t)nr, sizeof(float));
    float *f = malloc((size_t)n * sizeof(float));
    assert_non_null(p->x);
    assert_non_null(p->y);
    assert_non_null(p->xr);
    assert_non_null(p->want);
    assert_non_null(p->got);
    assert_non_null(f);
    for (int r = 0; r < nr; r++) {
        for (int i = 0; i < n; i++) f[i] = test_rand_uniform(rng);
        quant_traits_ref(QT_Q4_0)->from_float(f, p->x + (size_t)r * p->bx, n);
    }
    for (int i = 0; i < n; i++) f[i] = test_rand_uniform(rng) * 3.0f;
    quant_traits_ref(QT_Q8_0)->from_float(f, p->y, n);
    free(f);
    for (int r = 0; r < nr; r++)
        quant_traits_ref(QT_Q4_0)->vec_dot(n, &p->want[r], p->x + (size_t)r * p->bx, p->y);
    if (p->nrep > 0) assert_int_equal(repack_q4_0(p->x, p->bx, n, p->nrep, p->xr), 0);
}

static void prob_free(struct prob *p)
{
    free(p->x);
    free(p->y);
    free(p->xr);
    free(p->want);
    free(p->got);
}

/* got <- kernel over the repacked rows, the tail by the selected vec_dot in place. */
static void prob_run(struct prob *p, gemv_fn kernel)
{
    for (int r = 0; r < p->nr; r++) p->got[r] = NAN;
    if (p->nrep > 0) kernel(p->n, p->got, p->xr, p->nrep, p->y);
    if (p->nrep < p->nr)
        quant_vec_dot_rows(quant_traits(QT_Q4_0), p->n, p->got + p->nrep,
                           p->x + (size_t)p->nrep * p->bx, p->bx, p->y, p->nr - p->nrep);
}

/* Agreement up to float summation order, as in test_gemm. */
static void expect_close(const struct prob *p, const char *what)
{
    for (int r = 0; r < p->nr; r++) {
        float w = p->want[r], g = p->got[r];
        float tol = 1e-4f * (fabsf(w) + 0.05f * sqrtf((float)p->n));
        if (!(fabsf(w - g) <= tol))
            fail_msg("%s n=%d nr=%d: [r=%d] got %g want %g", what, p->n, p->nr, r, (double)g,
                     (double)w);
    }
}

static const int shapes[][2] = {
    {32, 8}, {64, 16}, {96, 7}, {256, 13}, {2048, 64}, {160, 3}, {288, 21},
    {5632 / 4, 9}, {128, 40}, {96, 17}, {2048, 256}, {32, 1}, {64, 31},
};

static void test_repack_reference_equals_quant_vec_dot(void **state)
{
    (void)state;
    uint64_t rng = 5;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        struct prob p;
        prob_make(&p, shapes[i][0], shapes[i][1], &rng);
        prob_run(&p, repack_ref_gemv_q4_0_q8_0);
        expect_close(&p, "ref");
        prob_free(&p);
    }
}

static void test_repack_kernels_match_scalar_on_every_path(void **state)
{
    (void)state;
    uint64_t rng = 9;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        struct prob p;
        prob_make(&p, shapes[i][0], shapes[i][1], &rng);
        /* compare against the layout's own reference, not only vec_dot */
        if (p.nrep > 0) repack_ref_gemv_q4_0_q8_0(p.n, p.want, p.xr, p.nrep, p.y);
        prob_run(&p, repack_gemv_q4_0_q8_0);
        expect_close(&p, "dispatch");
#if defined(__x86_64__)
        if (quant_isa_supported("avx2")) {
            prob_run(&p, repack_avx2_gemv_q4_0_q8_0);
            expect_close(&p, "avx2");
        }
        if (quant_isa_supported("avx512")) {
            prob_run(&p, repack_avx512_gemv_q4_0_q8_0);
            expect_close(&p, "avx512");
        }
#endif
        prob_free(&p);
    }
}

/* Nibbles all 0 or 15 and activations +-127: every block dot is exact in int32 and the
 * sums of such integers stay exact in float, so every kernel equals the reference. */
static void test_repack_extremes_exact(void **state)
{
    (void)state;
    enum { N = 512, NR = 16 };
    size_t bx = quant_row_bytes(QT_Q4_0, N);
    uint8_t *x = calloc(NR, bx), *xr = malloc(repack_q4_0_bytes(N, NR));
    struct block_q8_0 y[N / 32];
    float want[NR], got[NR];
    assert_non_null(x);
    assert_non_null(xr);
    for (int r = 0; r < NR; r++) {
        struct block_q4_0 *b = (void *)(x + (size_t)r * bx);
        for (int ib = 0; ib < N / 32; ib++) {
            b[ib].d = quant_f32_to_f16(1.0f);
            memset(b[ib].qs, (r + ib) % 3 ? 0xFF : 0x00, sizeof b[ib].qs);
        }
    }
    for (int ib = 0; ib < N / 32; ib++) {
        y[ib].d = quant_f32_to_f16(1.0f);
        memset(y[ib].qs, ib % 2 ? 127 : -127, sizeof y[ib].qs);
    }
    assert_int_equal(repack_q4_0(x, bx, N, NR, xr), 0);
    repack_ref_gemv_q4_0_q8_0(N, want, xr, NR, y);
    for (int r = 0; r < NR; r++) {
        float v;
        quant_traits_ref(QT_Q4_0)->vec_dot(N, &v, x + (size_t)r * bx, y);
        assert_true(v == want[r]);
    }
    repack_gemv_q4_0_q8_0(N, got, xr, NR, y);
    assert_memory_equal(want, got, sizeof want);
#if defined(__x86_64__)
    if (quant_isa_supported("avx2")) {
        repack_avx2_gemv_q4_0_q8_0(N, got, xr, NR, y);
        assert_memory_equal(want, got, sizeof want);
    }
    if (quant_isa_supported("avx512")) {
        repack_avx512_gemv_q4_0_q8_0(N, got, xr, NR, y);
        assert_memory_equal(want, got, sizeof want);
    }
#endif
    free(x);
    free(xr);
}

static void test_repack_rejects_bad_shapes(void **state)
{
    (void)state;
    uint8_t src[18 * 8], dst[144];
    memset(src, 0, sizeof src);
    assert_int_equal(repack_q4_0_bytes(32, 8), 144);
    assert_int_equal(repack_q4_0_bytes(64, 16), 4 * 144);
    assert_int_equal(repack_q4_0_bytes(32, 7), 0);
    assert_int_equal(repack_q4_0_bytes(31, 8), 0);
    assert_int_equal(repack_q4_0_bytes(0, 8), 0);
    assert_int_equal(repack_q4_0_bytes(32, 0), 0);
    assert_int_equal(repack_q4_0_bytes(INT64_MAX - 31, INT64_MAX - 7), 0);
    assert_int_equal(repack_q4_0(src, 18, 32, 7, dst), MESH_EINVAL);
    assert_int_equal(repack_q4_0(src, 17, 32, 8, dst), MESH_EINVAL);
    assert_int_equal(repack_q4_0(src, 18, 32, 8, dst), 0);
}

enum { N_STEP = 6 };

/* Logits of N_STEP tokens decoded one at a time (the n_tok == 1 path); sets *wq_repacked
 * and *head_repacked to whether the first layer's wq and the head were repacked, and
 * *n_vocab. */
static float *decode_steps(const char *path, bool *wq_repacked, bool *head_repacked, int *n_vocab)
{
    char err[512] = "";
    struct model *m = NULL;
    if (model_load(path, NULL, &m, err, sizeof err) < 0) fail_msg("model_load: %s", err);
    *wq_repacked = m->layers[0].wq.repack != NULL;
    *head_repacked = m->output.repack != NULL;
    if (*head_repacked) assert_true(m->output.repack_rows == (m->output.ne1 & ~(int64_t)7));
    const struct model_hparams *hp = model_hparams(m);
    *n_vocab = hp->n_vocab;
    struct model_ctx_params p;
    model_ctx_params_default(&p);
    p.n_ctx = 16;
    p.n_batch = 1;
    p.n_threads = 2;
    struct model_ctx *c = NULL;
    assert_int_equal(model_ctx_new(m, &p, &c, err, sizeof err), 0);
    float *logits = malloc((size_t)N_STEP * hp->n_vocab * sizeof(float));
    assert_non_null(logits);
    uint64_t st = 3;
    for (int i = 0; i < N_STEP; i++) {
        int32_t tok = i == 0 ? 1 : (int32_t)(test_rand_u64(&st) % 500) + 3, pos = i;
        bool want = true;
        struct model_batch b = {.n = 1, .tokens = &tok, .pos = &pos, .want_logits = &want};
        assert_int_equal(model_decode(c, &b, logits + (size_t)i * hp->n_vocab), 0);
    }
    model_ctx_free(c);
    model_free(m);
    return logits;
}

static void test_repack_model_decode_matches_unpacked(void **state)
{
    (void)state;
    struct model_gen_opts o;
    memset(&o, 0, sizeof o);
    assert_int_equal(model_gen_shape_get("test-small", &o.shape), 0);
    o.shape.n_layer = 2;
    o.shape.n_ff = 1536;
    o.shape.n_vocab = 516; /* rows of a Q4_0 head, if one is repacked, end 4 past a group */
    o.vocab_path = test_model_path("stories260K.gguf");
    o.ftype = QUANTIZE_FT_Q4_0;
    o.seed = 77;
    o.n_threads = 2;
    char path[600], err[512] = "";
    snprintf(path, sizeof path, "%s/repack-q4_0.gguf", test_tmp_dir());
    if (model_gen_write(&o, path, err, sizeof err) < 0) fail_msg("model_gen_write: %s", err);

    bool wq_r, head_r, wq_u, head_u;
    int nv, nv2;
    unsetenv("MESHLLM_NO_REPACK");
    float *a = decode_steps(path, &wq_r, &head_r, &nv);
    assert_true(wq_r == repack_enabled());
    setenv("MESHLLM_NO_REPACK", "1", 1);
    assert_false(repack_enabled());
    float *b = decode_steps(path, &wq_u, &head_u, &nv2);
    unsetenv("MESHLLM_NO_REPACK");
    assert_false(wq_u);
    assert_false(head_u);
    assert_int_equal(nv, nv2);
    print_message("  repacked: wq %d, head %d (n_vocab %d)\n", wq_r, head_r, nv);
    for (int i = 0; i < N_STEP; i++) {
        const float *x = a + (size_t)i * nv, *y = b + (size_t)i * nv;
        double e2 = 0, n2 = 0;
        int ax = 0, ay = 0;
        for (int v = 0; v < nv; v++) {
            e2 += (double)(x[v] - y[v]) * (x[v] - y[v]);
            n2 += (double)y[v] * y[v];
            if (x[v] > x[ax]) ax = v;
            if (y[v] > y[ay]) ay = v;
        }
        if (sqrt(e2) > 1e-3 * sqrt(n2)) fail_msg("step %d: logits differ by %g of %g", i, sqrt(e2), sqrt(n2));
        assert_int_equal(ax, ay);
    }
    free(a);
    free(b);
    remove(path);
}

int main(void)
{
    quant_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repack_reference_equals_quant_vec_dot),
        cmocka_unit_test(test_repack_kernels_match_scalar_on_every_path),
        cmocka_unit_test(test_repack_extremes_exact),
        cmocka_unit_test(test_repack_rejects_bad_shapes),
        cmocka_unit_test(test_repack_model_decode_matches_unpacked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
