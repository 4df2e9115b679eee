/* test_repack_k.c - engine/repack's Q4_K and Q6_K 16-row group kinds (repack_k*.c).
 * The scalar reference on the repacked layout against quant's reference Q4_K / Q6_K
 * vec_dot on the original rows; the AVX2 and AVX-512 kernels (each this CPU has,
 * whatever path is selected) against both, for nc = 1, 3, 8, 17 (and more) activation
 * rows and an lds wider than nr (padding must stay untouched); exact equality on
 * extreme levels and scales where every sum is exact; rejected shapes. */
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
#include "engine/quant.h"
#include "engine/quant_blocks.h"
#include "engine/repack.h"
#include "tests/util/test_util.h"

/* One kind: its weight type, packing and kernels. */
struct kind {
    const char *name;
    int type;
    size_t (*bytes)(int64_t n, int64_t nrows);
    int (*pack)(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst);
    repack_gemm_fn ref, avx2, avx512;
};

/* The SIMD kernels exist in x86-64 builds only. */
#if defined(__x86_64__)
#define KX_SIMD(avx2, avx512) avx2, avx512
#else
#define KX_SIMD(avx2, avx512) NULL, NULL
#endif
static const struct kind kinds[] = {
    {"Q4_K", QT_Q4_K, repack_q4_k_bytes, repack_q4_k, repack_ref_gemm_q4_k_q8_k,
     KX_SIMD(repack_avx2_gemm_q4_k_q8_k, repack_avx512_gemm_q4_k_q8_k)},
    {"Q6_K", QT_Q6_K, repack_q6_k_bytes, repack_q6_k, repack_ref_gemm_q6_k_q8_k,
     KX_SIMD(repack_avx2_gemm_q6_k_q8_k, repack_avx512_gemm_q6_k_q8_k)},
};

/* nr weight rows (bx bytes apart, with 8 bytes of slack to test row_bytes) and nc Q8_K
 * rows of n elements; want[c * nr + r] from quant's reference vec_dot, mag[...] the sum
 * of |x||y| of the dequantized values; xr the repacked rows. */
struct prob {
    const struct kind *k;
    int n, nr, nc;
    size_t bx, by, lds;
    uint8_t *x, *y, *xr;
    float *want, *mag, *got;
};

/* Row r's floats: mostly uniform at a row-dependent scale, with some rows all zero,
 * all positive, all negative, or one huge outlier among tiny values. */
static void fill_row(float *f, int n, int r, uint64_t *rng)
{
    const float scale = powf(10.0f, (float)(r % 7) - 3.0f);
    for (int i = 0; i < n; i++) f[i] = scale * test_rand_uniform(rng);
    switch (r % 11) {
    case 3: memset(f, 0, (size_t)n * sizeof *f); break;
    case 5: for (int i = 0; i < n; i++) f[i] = fabsf(f[i]); break;
    case 7: for (int i = 0; i < n; i++) f[i] = -fabsf(f[i]) - scale; break;
    case 9:
        for (int i = 0; i < n; i++) f[i] *= 1e-4f;
        f[(r * 37) % n] = 1e3f;
        break;
    default: break;
    }
}

static void prob_make(struct prob *p, const struct kind *k, int n, int nr, int nc, uint64_t *rng)
{
    memset(p, 0, sizeof *p);
    p->k = k, p->n = n, p->nr = nr, p->nc = nc;
    p->bx = quant_row_bytes(k->type, n) + 8;
    p->by = quant_row_bytes(QT_Q8_K, n);
    p->lds = (size_t)nr + 5;
    p->x = malloc(p->bx * (size_t)nr);
    p->y = malloc(p->by * (size_t)nc);
    p->xr = malloc(k->bytes(n, nr));
    p->want = malloc((size_t)nc * (size_t)nr * sizeof(float));
    p->mag = malloc((size_t)nc * (size_t)nr * sizeof(float));
    p->got = malloc((size_t)nc * p->lds * sizeof(float));
    float *f = malloc((size_t)n * sizeof(float)), *xf = malloc((size_t)n * nr * sizeof(float));
    float *yf = malloc((size_t)n * nc * sizeof(float));
    assert_true(p->x && p->y && p->xr && p->want && p->mag && p->got && f && xf && yf);
    const struct quant_traits *tx = quant_traits_ref(k->type), *ty = quant_traits_ref(QT_Q8_K);
    for (int r = 0; r < nr; r++) {
        fill_row(f, n, r, rng);
        tx->from_float(f, p->x + (size_t)r * p->bx, n);
        tx->to_float(p->x + (size_t)r * p->bx, xf + (size_t)r * n, n);
    }
    for (int c = 0; c < nc; c++) {
        for (int i = 0; i < n; i++) f[i] = test_rand_uniform(rng) * (c % 2 ? 3.0f : 0.01f);
        if (c % 4 == 2) f[c % n] = 50.0f; /* one activation outlier */
        ty->from_float(f, p->y + (size_t)c * p->by, n);
        ty->to_float(p->y + (size_t)c * p->by, yf + (size_t)c * n, n);
    }
    for (int c = 0; c < nc; c++)
        for (int r = 0; r < nr; r++) {
            tx->vec_dot(n, &p->want[c * nr + r], p->x + (size_t)r * p->bx,
                        p->y + (size_t)c * p->by);
            double m = 0;
            for (int i = 0; i < n; i++)
                m += fabs((double)xf[(size_t)r * n + i] * yf[(size_t)c * n + i]);
            p->mag[c * nr + r] = (float)m;
        }
    assert_int_equal(k->pack(p->x, p->bx, n, nr, p->xr), 0);
    free(f);
    free(xf);
    free(yf);
}

static void prob_free(struct prob *p)
{
    free(p->x);
    free(p->y);
    free(p->xr);
    free(p->want);
    free(p->mag);
    free(p->got);
}

/* got <- fn over the repacked rows, padding of each s row set to a sentinel first. */
static void prob_run(struct prob *p, repack_gemm_fn fn)
{
    for (size_t i = 0; i < (size_t)p->nc * p->lds; i++) p->got[i] = NAN;
    for (int c = 0; c < p->nc; c++)
        for (size_t r = (size_t)p->nr; r < p->lds; r++) p->got[(size_t)c * p->lds + r] = -7.0f;
    fn(p->n, p->got, p->lds, p->xr, p->nr, p->y, p->by, NULL, p->nc);
}

/* got agrees with want (nc x nr, packed) up to float summation order: 1e-5 of sum
 * |x||y|; the padding is untouched. */
static void expect_close(const struct prob *p, const float *want, const char *what)
{
    for (int c = 0; c < p->nc; c++) {
        for (int r = 0; r < p->nr; r++) {
            float w = want[c * p->nr + r], g = p->got[(size_t)c * p->lds + (size_t)r];
            float tol = 1e-5f * p->mag[c * p->nr + r] + 1e-30f;
            if (!(fabsf(w - g) <= tol))
                fail_msg("%s %s n=%d nr=%d nc=%d: [c=%d r=%d] got %g want %g (tol %g)",
                         p->k->name, what, p->n, p->nr, p->nc, c, r, (double)g, (double)w,
                         (double)tol);
        }
        for (size_t r = (size_t)p->nr; r < p->lds; r++)
            if (p->got[(size_t)c * p->lds + r] != -7.0f)
                fail_msg("%s %s: wrote s[%d][%zu] past nr", p->k->name, what, c, r);
    }
}

static const int shapes[][3] = {
    /* n, nr, nc */
    {256, 16, 1}, {512, 32, 3}, {2048, 48, 8}, {1024, 16, 17}, {768, 64, 2},
    {256, 32, 5}, {1536, 16, 1}, {256, 16, 12}, {512, 16, 15}, {256, 32, 6},
};
enum { N_SHAPES = sizeof shapes / sizeof shapes[0] };

static void test_repack_k_reference_equals_quant_vec_dot(void **state)
{
    (void)state;
    uint64_t rng = 11;
    for (size_t ki = 0; ki < 2; ki++)
        for (int i = 0; i < N_SHAPES; i++) {
            struct prob p;
            prob_make(&p, &kinds[ki], shapes[i][0], shapes[i][1], shapes[i][2], &rng);
            prob_run(&p, p.k->ref);
            expect_close(&p, p.want, "ref vs vec_dot");
            prob_free(&p);
        }
}

static void test_repack_k_kernels_match_on_every_path(void **state)
{
    (void)state;
    uint64_t rng = 13;
    for (size_t ki = 0; ki < 2; ki++)
        for (int i = 0; i < N_SHAPES; i++) {
            struct prob p;
            prob_make(&p, &kinds[ki], shapes[i][0], shapes[i][1], shapes[i][2], &rng);
            /* the layout's own reference, packed nc x nr */
            float *ref = malloc((size_t)p.nc * (size_t)p.nr * sizeof(float));
            assert_non_null(ref);
            prob_run(&p, p.k->ref);
            for (int c = 0; c < p.nc; c++)
                memcpy(ref + (size_t)c * p.nr, p.got + (size_t)c * p.lds,
                       (size_t)p.nr * sizeof(float));
#if defined(__x86_64__)
            if (quant_isa_supported("avx2")) {
                prob_run(&p, p.k->avx2);
                expect_close(&p, ref, "avx2 vs ref");
                expect_close(&p, p.want, "avx2 vs vec_dot");
            }
            if (quant_isa_supported("avx512")) {
                prob_run(&p, p.k->avx512);
                expect_close(&p, ref, "avx512 vs ref");
                expect_close(&p, p.want, "avx512 vs vec_dot");
            }
#endif
            free(ref);
            prob_free(&p);
        }
}

/* One super-block (n = 256) of extreme raw levels and scales (random bytes: every 6-bit
 * scale and min pattern, Q6_K scales -128..127, levels 0/15 or 0/63 in long runs) with
 * power-of-two d, dmin and activations +-127 (d_y = 1): each sum is one rounding of an
 * exact integer, so all paths and quant's vec_dot agree bit for bit, and the int16
 * partial sums of the AVX2 kernels reach their bound. */
static void test_repack_k_extremes_exact(void **state)
{
    (void)state;
    enum { N = 256, NR = 32, NC = 9 };
    uint64_t rng = 17;
    struct block_q8_K y[NC];
    for (int c = 0; c < NC; c++) {
        y[c].d = 1.0f;
        for (int i = 0; i < N; i++) {
            int sign = c == 0 ? 1 : c == 1 ? -1 : ((i / 32 + c) % 3 ? 1 : -1);
            y[c].qs[i] = (int8_t)(sign * (c == 2 ? (int)(test_rand_u64(&rng) % 255) - 127 : 127));
        }
        for (int j = 0; j < N / 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += y[c].qs[16 * j + i];
            y[c].bsums[j] = (int16_t)sum;
        }
    }
    for (size_t ki = 0; ki < 2; ki++) {
        const struct kind *k = &kinds[ki];
        const size_t bx = quant_row_bytes(k->type, N);
        uint8_t *x = malloc(bx * NR), *xr = malloc(k->bytes(N, NR));
        assert_non_null(x);
        assert_non_null(xr);
        for (int r = 0; r < NR; r++) {
            uint8_t *b = x + (size_t)r * bx;
            for (size_t i = 0; i < bx; i++) b[i] = (uint8_t)test_rand_u64(&rng);
            const uint8_t fill = r % 4 == 0 ? 0xFF : r % 4 == 1 ? 0x00 : (uint8_t)(r * 29);
            if (k->type == QT_Q4_K) {
                struct block_q4_K *q = (void *)b;
                q->d = quant_f32_to_f16(r % 2 ? 0.25f : 1.0f);
                q->dmin = quant_f32_to_f16(r % 3 ? 0.5f : 2.0f);
                if (r < 16) memset(q->qs, fill, sizeof q->qs);
                if (r % 5 == 0) memset(q->scales, 0xFF, sizeof q->scales);
            } else {
                struct block_q6_K *q = (void *)b;
                q->d = quant_f32_to_f16(r % 2 ? 0.125f : 1.0f);
                if (r < 16) {
                    memset(q->ql, fill, sizeof q->ql);
                    memset(q->qh, fill, sizeof q->qh);
                }
                if (r % 5 == 0) memset(q->scales, r % 10 ? 0x80 : 0x7F, sizeof q->scales);
            }
        }
        assert_int_equal(k->pack(x, bx, N, NR, xr), 0);
        float want[NC * NR];
        k->ref(N, want, NR, xr, NR, y, sizeof y[0], NULL, NC);
        for (int c = 0; c < NC; c++)
            for (int r = 0; r < NR; r++) {
                float v;
                quant_traits_ref(k->type)->vec_dot(N, &v, x + (size_t)r * bx, &y[c]);
                if (v != want[c * NR + r])
                    fail_msg("%s ref [c=%d r=%d] %g != vec_dot %g", k->name, c, r,
                             (double)want[c * NR + r], (double)v);
            }
#if defined(__x86_64__)
        float got[NC * NR];
        if (quant_isa_supported("avx2")) {
            k->avx2(N, got, NR, xr, NR, y, sizeof y[0], NULL, NC);
            assert_memory_equal(want, got, sizeof want);
        }
        if (quant_isa_supported("avx512")) {
            k->avx512(N, got, NR, xr, NR, y, sizeof y[0], NULL, NC);
            assert_memory_equal(want, got, sizeof want);
        }
#endif
        free(x);
        free(xr);
    }
}

static void test_repack_k_rejects_bad_shapes(void **state)
{
    (void)state;
    static uint8_t src[210 * 16 * 2], dst[3360 * 2];
    assert_int_equal(repack_q4_k_bytes(256, 16), 2368);
    assert_int_equal(repack_q4_k_bytes(512, 32), 4 * 2368);
    assert_int_equal(repack_q6_k_bytes(256, 16), 3360);
    assert_int_equal(repack_q6_k_bytes(768, 48), 9 * 3360);
    for (size_t ki = 0; ki < 2; ki++) {
        const struct kind *k = &kinds[ki];
        const size_t rb = quant_row_bytes(k->type, 256);
        assert_int_equal(k->bytes(256, 8), 0);
        assert_int_equal(k->bytes(256, 24), 0);
        assert_int_equal(k->bytes(128, 16), 0);
        assert_int_equal(k->bytes(0, 16), 0);
        assert_int_equal(k->bytes(256, 0), 0);
        assert_int_equal(k->bytes(-256, 16), 0);
        assert_int_equal(k->bytes(INT64_MAX - 255, INT64_MAX - 15), 0);
        assert_int_equal(k->pack(src, rb, 256, 8, dst), MESH_EINVAL);
        assert_int_equal(k->pack(src, rb, 320, 16, dst), MESH_EINVAL);
        assert_int_equal(k->pack(src, rb - 1, 256, 16, dst), MESH_EINVAL);
        assert_int_equal(k->pack(src, rb, 256, 16, dst), 0);
    }
}

int main(void)
{
    quant_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repack_k_reference_equals_quant_vec_dot),
        cmocka_unit_test(test_repack_k_kernels_match_on_every_path),
        cmocka_unit_test(test_repack_k_extremes_exact),
        cmocka_unit_test(test_repack_k_rejects_bad_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
