/* test_attn.c - engine/attn: attention of one GQA group over an F16 or F32 cache. The
 * scalar reference against attention computed in double, every SIMD path this CPU has
 * (whatever path is selected) against the reference, and the dispatcher against the
 * selected path, on head sizes 8..128, odd position counts 1..1000, GQA ratios 1..8,
 * caches whose rows hold other heads (filled with NaN: reading them poisons the result)
 * and scratch / outputs filled with NaN beforehand.
 *
 * Tolerance (tol_bound below): each path's scores differ from the exact ones by at most
 * the float summation bound gamma_(hd+1) * scale * sum_d |q_d k_d| plus the rounding of
 * the scale multiply; through max, exp (libm or ours, a few ulp) and the normalisation,
 * every probability of every path lies within a relative window w_p of the exact one.
 * With an F16 cache each path then rounds it to F16, so two paths' probabilities differ
 * by at most the F16 values the window's ends round to; the V sums add the float
 * accumulation bound gamma_(n_kv) sum_p p |v|. Positions whose window holds no F16
 * rounding boundary must therefore agree exactly, which keeps the bound tight. */
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

#include "engine/attn.h"
#include "engine/quant.h"
#include "engine/quant_blocks.h"
#include "tests/util/test_util.h"

typedef void (*attn_fn)(const struct attn_group_args *a);

enum { N_HEADS_KV = 3, OUR_HEAD = 1 }; /* cache rows hold 3 heads; the group reads head 1 */

/* One random problem: q, the cache (values as double for the exact sums), scratch. */
struct prob {
    struct attn_group_args a;
    float *q;
    void *k, *v;    /* [n_kv][N_HEADS_KV * hd] of F16 or float */
    double *kd, *vd; /* [n_kv][hd] our head's values */
    float *out;
    void *scratch;
    size_t scratch_bytes;
};

static uint16_t f16(float f) { return quant_f32_to_f16(f); }
static float h2f(uint16_t h) { return quant_f16_to_f32(h); }

static void prob_make(struct prob *p, int hd, int n_q, int n_kv, bool kv_f16, float amp,
                      uint64_t *rng)
{
    memset(p, 0, sizeof *p);
    size_t stride = (size_t)N_HEADS_KV * (size_t)hd, elem = kv_f16 ? 2 : 4;
    p->q = malloc((size_t)n_q * (size_t)hd * sizeof(float));
    p->k = malloc((size_t)n_kv * stride * elem);
    p->v = malloc((size_t)n_kv * stride * elem);
    p->kd = malloc((size_t)n_kv * (size_t)hd * sizeof(double));
    p->vd = malloc((size_t)n_kv * (size_t)hd * sizeof(double));
    p->out = malloc((size_t)n_q * (size_t)hd * sizeof(float));
    p->scratch_bytes = attn_scratch_bytes(hd, n_q, n_kv);
    assert_true(p->scratch_bytes > 0);
    p->scratch = aligned_alloc(64, (p->scratch_bytes + 63) / 64 * 64);
    assert_non_null(p->q);
    assert_non_null(p->k);
    assert_non_null(p->v);
    assert_non_null(p->kd);
    assert_non_null(p->vd);
    assert_non_null(p->out);
    assert_non_null(p->scratch);
    for (int i = 0; i < n_q * hd; i++) p->q[i] = amp * test_rand_uniform(rng);
    for (int pos = 0; pos < n_kv; pos++) {
        for (size_t e = 0; e < stride; e++) {
            size_t at = (size_t)pos * stride + e;
            bool ours = e / (size_t)hd == OUR_HEAD;
            float kf = ours ? amp * test_rand_uniform(rng) : NAN;
            float vf = ours ? test_rand_uniform(rng) : NAN;
            if (kv_f16) {
                ((uint16_t *)p->k)[at] = f16(kf);
                ((uint16_t *)p->v)[at] = f16(vf);
                kf = h2f(f16(kf));
                vf = h2f(f16(vf));
            } else {
                ((float *)p->k)[at] = kf;
                ((float *)p->v)[at] = vf;
            }
            if (ours) {
                size_t d = (size_t)pos * (size_t)hd + e % (size_t)hd;
                p->kd[d] = kf;
                p->vd[d] = vf;
            }
        }
    }
    size_t off = (size_t)OUR_HEAD * (size_t)hd * elem;
    p->a = (struct attn_group_args){
        .head_dim = hd, .n_q = n_q, .n_kv = n_kv, .k_type = kv_f16 ? ATTN_KV_F16 : ATTN_KV_F32,
        .v_type = kv_f16 ? ATTN_KV_F16 : ATTN_KV_F32, .q = p->q,
        .k = (const uint8_t *)p->k + off, .v = (const uint8_t *)p->v + off, .kv_stride = stride,
        .scale = 1.0f / sqrtf((float)hd), .out = p->out, .scratch = p->scratch};
}

static void prob_free(struct prob *p)
{
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->kd);
    free(p->vd);
    free(p->out);
    free(p->scratch);
}

/* Runs fn on p with NaN in scratch and out beforehand; result copied to got. */
static void prob_run(struct prob *p, attn_fn fn, float *got)
{
    memset(p->scratch, 0xff, p->scratch_bytes);
    memset(p->out, 0xff, (size_t)p->a.n_q * (size_t)p->a.head_dim * sizeof(float));
    fn(&p->a);
    memcpy(got, p->out, (size_t)p->a.n_q * (size_t)p->a.head_dim * sizeof(float));
}

static double gamma_n(int n)
{
    const double u = 0x1p-24;
    return n * u / (1 - n * u);
}

/* For head i: want[d] (attention in double, probabilities rounded to F16 with an F16
 * cache) and tol[d], the bound on |path - want| (and, counted once more for the second
 * path's accumulation, on |path_a - path_b|) from the header comment. */
static void exact_and_bound(const struct prob *p, int i, double *want, double *tol)
{
    const struct attn_group_args *a = &p->a;
    const int hd = a->head_dim, n_kv = a->n_kv;
    const double u = 0x1p-24;
    double *s = malloc((size_t)n_kv * sizeof(double)), *e = malloc((size_t)n_kv * sizeof(double));
    assert_non_null(s);
    assert_non_null(e);
    double max = -INFINITY, e_max = 0;
    for (int pos = 0; pos < n_kv; pos++) {
        double dot = 0, absdot = 0;
        for (int d = 0; d < hd; d++) {
            double qd = (a->k_type == ATTN_KV_F16) ? h2f(f16(a->q[i * hd + d])) : a->q[i * hd + d];
            dot += qd * p->kd[(size_t)pos * hd + d];
            absdot += fabs(qd * p->kd[(size_t)pos * hd + d]);
        }
        s[pos] = a->scale * dot;
        /* float dot in any order (products exact for F16 inputs, one rounding each for
         * F32: hd + 1 roundings deep), then the scale multiply */
        e[pos] = gamma_n(hd + 1) * a->scale * absdot + 2 * u * fabs(s[pos]);
        if (s[pos] > max) max = s[pos];
        if (e[pos] > e_max) e_max = e[pos];
    }
    /* relative error of exp(s_p - max): argument error + subtraction + exp (<= 8 ulp) */
    double sum = 0, w_sum = 0;
    for (int pos = 0; pos < n_kv; pos++) {
        double w_exp = e[pos] + e_max + u * fabs(s[pos] - max) + 8 * u;
        if (w_exp > w_sum) w_sum = w_exp; /* the sum's relative error is at most the worst */
        sum += exp(s[pos] - max);
    }
    for (int d = 0; d < hd; d++) want[d] = tol[d] = 0;
    for (int pos = 0; pos < n_kv; pos++) {
        double pr = exp(s[pos] - max) / sum;
        /* x1.5 covers the second-order terms of the first-order sum of relative errors */
        double w = 1.5 * (e[pos] + e_max + u * fabs(s[pos] - max) + 8 * u + w_sum + 4 * u);
        double lo = pr * (1 - w), hi = pr * (1 + w), pw = pr, span = hi - lo;
        if ((a->k_type == ATTN_KV_F16)) {
            pw = h2f(f16((float)pr));
            lo = h2f(f16((float)lo));
            hi = h2f(f16((float)hi));
            span = hi - lo;
        }
        for (int d = 0; d < hd; d++) {
            double v = p->vd[(size_t)pos * hd + d];
            want[d] += pw * v;
            tol[d] += span * fabs(v) + 2 * gamma_n(n_kv) * hi * fabs(v);
        }
    }
    /* exp of arguments below about -86 may be flushed to 0: < 1e-37 absolute */
    for (int d = 0; d < hd; d++) tol[d] += 1e-30;
    free(s);
    free(e);
}

/* got (each path) vs want within tol; prints the first failure's shape. */
static void check_close(const struct prob *p, const char *what, const float *got, const float *ref)
{
    const int hd = p->a.head_dim;
    double *want = malloc((size_t)hd * sizeof(double)), *tol = malloc((size_t)hd * sizeof(double));
    assert_non_null(want);
    assert_non_null(tol);
    for (int i = 0; i < p->a.n_q; i++) {
        exact_and_bound(p, i, want, tol);
        for (int d = 0; d < hd; d++) {
            double w = ref ? ref[i * hd + d] : want[d];
            double err = fabs(got[i * hd + d] - w);
            if (!(err <= tol[d])) {
                print_error("%s: hd %d n_q %d n_kv %d %s: head %d dim %d got %.9g want %.9g "
                            "(err %.3g > tol %.3g)\n",
                            what, hd, p->a.n_q, p->a.n_kv, (p->a.k_type == ATTN_KV_F16) ? "f16" : "f32", i, d,
                            got[i * hd + d], w, err, tol[d]);
                fail();
            }
        }
    }
    free(want);
    free(tol);
}

static const int n_kvs[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65, 127, 255, 501, 999, 1000};
static const int hds[] = {64, 128, 8, 16, 48, 80, 12};
static const int groups[] = {1, 4, 8, 2, 3, 7};

static void test_attn_reference_matches_exact(void **state)
{
    (void)state;
    uint64_t rng = 11;
    for (int f = 0; f < 2; f++) {
        for (size_t ih = 0; ih < sizeof hds / sizeof hds[0]; ih++) {
            for (size_t ik = 0; ik < sizeof n_kvs / sizeof n_kvs[0]; ik += 3) {
                struct prob p;
                prob_make(&p, hds[ih], groups[ik % 6], n_kvs[ik], f == 0, 1.0f, &rng);
                float *got = malloc((size_t)p.a.n_q * (size_t)hds[ih] * sizeof(float));
                assert_non_null(got);
                prob_run(&p, attn_ref_group, got);
                check_close(&p, "scalar vs exact", got, NULL);
                free(got);
                prob_free(&p);
            }
        }
    }
}

/* Every shape of the tables through fn, against the reference. */
static void kernel_vs_reference(const char *name, attn_fn fn, float amp)
{
    uint64_t rng = 29;
    for (int f = 0; f < 2; f++)
        for (size_t ih = 0; ih < sizeof hds / sizeof hds[0]; ih++)
            for (size_t ig = 0; ig < sizeof groups / sizeof groups[0]; ig++)
                for (size_t ik = 0; ik < sizeof n_kvs / sizeof n_kvs[0]; ik++) {
                    /* the long contexts on the main shapes only: the double bound is slow */
                    if (n_kvs[ik] > 300 && (ig > 2 || ih > 2)) continue;
                    struct prob p;
                    prob_make(&p, hds[ih], groups[ig], n_kvs[ik], f == 0, amp, &rng);
                    size_t n_out = (size_t)p.a.n_q * (size_t)hds[ih];
                    float *ref = malloc(n_out * sizeof(float)), *got = malloc(n_out * sizeof(float));
                    assert_non_null(ref);
                    assert_non_null(got);
                    prob_run(&p, attn_ref_group, ref);
                    prob_run(&p, fn, got);
                    check_close(&p, name, got, ref);
                    free(ref);
                    free(got);
                    prob_free(&p);
                }
}

static void test_attn_kernels_match_scalar_on_every_path(void **state)
{
    (void)state;
    int n_run = 0;
#if defined(__x86_64__)
    if (quant_isa_supported("avx2")) {
        kernel_vs_reference("avx2", attn_avx2_group, 1.0f);
        n_run++;
    }
    if (quant_isa_supported("avx512")) {
        kernel_vs_reference("avx512", attn_avx512_group, 1.0f);
        n_run++;
    }
#endif
    print_message("attn: %d SIMD paths checked\n", n_run);
}

/* Large scores: most probabilities underflow, one or two positions dominate. */
static void test_attn_kernels_match_scalar_on_peaked_scores(void **state)
{
    (void)state;
#if defined(__x86_64__)
    if (quant_isa_supported("avx2")) kernel_vs_reference("avx2 peaked", attn_avx2_group, 6.0f);
    if (quant_isa_supported("avx512")) kernel_vs_reference("avx512 peaked", attn_avx512_group, 6.0f);
#endif
}

/* Scores set exactly (q = e_0, k_p = x_p e_0, scale 1/8) and V = the identity, so out[d]
 * is the probability of position d as the path computed it: softmax (exp, sum,
 * normalisation) within 8 float ulps of the value in double, arguments from 0 to -100
 * (below -86 our exp may flush to 0: the true value is then < 5e-38). */
static void check_probabilities(const char *name, attn_fn fn)
{
    enum { HD = 64, N = 64 };
    float q[HD] = {1.0f}, k[N * HD] = {0}, v[N * HD] = {0}, out[HD];
    double x[N], sum = 0, max = -INFINITY;
    uint64_t rng = 17;
    for (int p = 0; p < N; p++) {
        /* a spread of arguments, dense near 0 where the probabilities are large */
        x[p] = p < 8 ? -(double)p / 8 : -100.0 * (test_rand_uniform(&rng) + 1) / 2;
        k[p * HD] = (float)(x[p] * 8);
        x[p] = (double)k[p * HD] / 8;
        v[p * HD + p] = 1.0f;
        if (x[p] > max) max = x[p];
    }
    for (int p = 0; p < N; p++) sum += exp(x[p] - max);
    size_t sb = attn_scratch_bytes(HD, 1, N);
    void *scratch = aligned_alloc(64, (sb + 63) / 64 * 64);
    assert_non_null(scratch);
    struct attn_group_args a = {.head_dim = HD, .n_q = 1, .n_kv = N, .q = q, .k = k, .v = v,
                                .kv_stride = HD, .scale = 0.125f, .out = out, .scratch = scratch};
    fn(&a);
    for (int p = 0; p < N; p++) {
        double want = exp(x[p] - max) / sum;
        double tol = 8 * 0x1p-24 * want + (x[p] - max < -86 ? 5e-38 : 0);
        if (!(fabs(out[p] - want) <= tol)) {
            print_error("%s: position %d (argument %.6g): got %.9g want %.9g\n", name, p,
                        x[p] - max, out[p], want);
            fail();
        }
    }
    free(scratch);
}

static void test_attn_softmax_within_8_ulps(void **state)
{
    (void)state;
    check_probabilities("scalar", attn_ref_group);
#if defined(__x86_64__)
    if (quant_isa_supported("avx2")) check_probabilities("avx2", attn_avx2_group);
    if (quant_isa_supported("avx512")) check_probabilities("avx512", attn_avx512_group);
#endif
}

/* attn_group runs the path quant_isa_name() reports: bit for bit the same result. */
/* Quantized caches (Q8_0 / Q4_0, and mixed with F16 / F32): rows of 4 heads quantized as
 * whole 32-element blocks, a head at every offset a block allows. Every SIMD path must
 * agree with the scalar reference (which dequantizes element by element) within float
 * summation error, and the reference must agree with attention over the dequantized
 * rows in double. */
static void quant_rows(enum attn_kv_type t, const float *src, void *dst, int n)
{
    switch (t) {
    case ATTN_KV_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case ATTN_KV_F16: quant_f32_to_f16_row(src, dst, n); break;
    case ATTN_KV_Q8_0: quant_traits_ref(QT_Q8_0)->from_float(src, dst, n); break;
    case ATTN_KV_Q4_0: quant_traits_ref(QT_Q4_0)->from_float(src, dst, n); break;
    }
}

static size_t row_bytes(enum attn_kv_type t, int n)
{
    return t == ATTN_KV_F32 ? (size_t)n * 4 : t == ATTN_KV_F16 ? (size_t)n * 2
           : t == ATTN_KV_Q8_0 ? (size_t)n / 32 * 34 : (size_t)n / 32 * 18;
}

static void test_attn_quantized_cache_paths_match_reference(void **state)
{
    (void)state;
    uint64_t rng = 99;
    const int head_sizes[] = {8, 16, 32, 64, 128};
    const enum attn_kv_type kts[][2] = {{ATTN_KV_Q8_0, ATTN_KV_Q8_0}, {ATTN_KV_Q4_0, ATTN_KV_Q4_0},
                                        {ATTN_KV_Q8_0, ATTN_KV_F16}, {ATTN_KV_F16, ATTN_KV_Q4_0},
                                        {ATTN_KV_F32, ATTN_KV_Q8_0}};
    for (size_t ih = 0; ih < sizeof head_sizes / sizeof head_sizes[0]; ih++) {
        const int hd = head_sizes[ih], stride = 4 * hd < 32 ? 32 : 4 * hd, n_q = 1 + (int)ih % 4;
        const int n_kv = 38 + 50 * (int)ih;
        for (size_t it = 0; it < sizeof kts / sizeof kts[0]; it++) {
            enum attn_kv_type kt = kts[it][0], vt = kts[it][1];
            float *src = malloc((size_t)stride * sizeof(float));
            float *kf = malloc((size_t)n_kv * (size_t)stride * sizeof(float));
            float *vf = malloc((size_t)n_kv * (size_t)stride * sizeof(float));
            uint8_t *k = malloc((size_t)n_kv * row_bytes(kt, stride));
            uint8_t *v = malloc((size_t)n_kv * row_bytes(vt, stride));
            float *q = malloc((size_t)n_q * (size_t)hd * sizeof(float));
            float *ref = malloc((size_t)n_q * (size_t)hd * sizeof(float));
            float *out = malloc((size_t)n_q * (size_t)hd * sizeof(float));
            size_t sb = attn_scratch_bytes(hd, n_q, n_kv);
            void *scratch = aligned_alloc(64, (sb + 63) / 64 * 64);
            assert_non_null(scratch);
            for (int i = 0; i < n_q * hd; i++) q[i] = 2.0f * test_rand_uniform(&rng);
            for (int p = 0; p < n_kv; p++) {
                for (int e = 0; e < stride; e++) src[e] = 2.0f * test_rand_uniform(&rng);
                quant_rows(kt, src, k + (size_t)p * row_bytes(kt, stride), stride);
                for (int e = 0; e < stride; e++) src[e] = test_rand_uniform(&rng);
                quant_rows(vt, src, v + (size_t)p * row_bytes(vt, stride), stride);
            }
            for (int p = 0; p < n_kv; p++) { /* the values the cache holds */
                const struct quant_traits *tk = kt == ATTN_KV_F32 ? quant_traits_ref(QT_F32)
                    : kt == ATTN_KV_F16 ? quant_traits_ref(QT_F16) : kt == ATTN_KV_Q8_0
                    ? quant_traits_ref(QT_Q8_0) : quant_traits_ref(QT_Q4_0);
                const struct quant_traits *tv = vt == ATTN_KV_F32 ? quant_traits_ref(QT_F32)
                    : vt == ATTN_KV_F16 ? quant_traits_ref(QT_F16) : vt == ATTN_KV_Q8_0
                    ? quant_traits_ref(QT_Q8_0) : quant_traits_ref(QT_Q4_0);
                tk->to_float(k + (size_t)p * row_bytes(kt, stride), kf + (size_t)p * stride, stride);
                tv->to_float(v + (size_t)p * row_bytes(vt, stride), vf + (size_t)p * stride, stride);
            }
            for (int off = 0; off + hd <= stride; off += hd) {
                struct attn_group_args a = {.head_dim = hd, .n_q = n_q, .n_kv = n_kv,
                                            .k_type = kt, .v_type = vt, .q = q, .k = k, .v = v,
                                            .kv_stride = (size_t)stride, .kv_off = (size_t)off,
                                            .scale = 1.0f / sqrtf((float)hd), .out = ref,
                                            .scratch = scratch};
                attn_ref_group(&a);
                /* the reference against double attention over the dequantized rows */
                for (int i = 0; i < n_q; i++) {
                    double sc[1024], mx = -INFINITY, sum = 0;
                    for (int p = 0; p < n_kv; p++) {
                        double d = 0;
                        for (int e = 0; e < hd; e++) {
                            double qe = q[i * hd + e];
                            if (kt == ATTN_KV_F16) qe = h2f(f16(q[i * hd + e]));
                            d += qe * kf[(size_t)p * stride + (size_t)off + (size_t)e];
                        }
                        sc[p] = d * a.scale;
                        if (sc[p] > mx) mx = sc[p];
                    }
                    for (int p = 0; p < n_kv; p++) sum += (sc[p] = exp(sc[p] - mx));
                    for (int e = 0; e < hd; e++) {
                        double o = 0;
                        for (int p = 0; p < n_kv; p++)
                            o += sc[p] / sum * vf[(size_t)p * stride + (size_t)off + (size_t)e];
                        /* F16 probabilities (F16 V) round by 2^-11 relative */
                        double tol = vt == ATTN_KV_F16 ? 2e-3 : 1e-4;
                        if (!(fabs(ref[i * hd + e] - o) <= tol)) {
                            print_error("ref hd %d types %d/%d off %d head %d d %d: %.7g vs %.7g\n",
                                        hd, kt, vt, off, i, e, ref[i * hd + e], o);
                            fail();
                        }
                    }
                }
                static const struct { const char *isa; attn_fn fn; } paths[] = {
#if defined(__x86_64__)
                    {"avx2", attn_avx2_group}, {"avx512", attn_avx512_group},
#endif
                    {"scalar", attn_ref_group}};
                for (size_t ip = 0; ip < sizeof paths / sizeof paths[0]; ip++) {
                    if (strcmp(paths[ip].isa, "scalar") && !quant_isa_supported(paths[ip].isa)) continue;
                    for (int i = 0; i < n_q * hd; i++) out[i] = NAN;
                    a.out = out;
                    paths[ip].fn(&a);
                    a.out = ref;
                    for (int i = 0; i < n_q * hd; i++) {
                        if (!(fabsf(out[i] - ref[i]) <= 2e-5f + 1e-5f * fabsf(ref[i]))) {
                            print_error("%s hd %d types %d/%d off %d elem %d: %.9g vs ref %.9g\n",
                                        paths[ip].isa, hd, kt, vt, off, i, out[i], ref[i]);
                            fail();
                        }
                    }
                }
            }
            free(src); free(kf); free(vf); free(k); free(v); free(q); free(ref); free(out);
            free(scratch);
        }
    }
}

static void test_attn_dispatch_follows_selected_isa(void **state)
{
    (void)state;
    attn_fn fn = attn_ref_group;
#if defined(__x86_64__)
    if (strcmp(quant_isa_name(), "avx2") == 0) fn = attn_avx2_group;
    if (strcmp(quant_isa_name(), "avx512") == 0) fn = attn_avx512_group;
#endif
    uint64_t rng = 5;
    struct prob p;
    prob_make(&p, 64, 4, 77, true, 1.0f, &rng);
    float want[4 * 64], got[4 * 64];
    prob_run(&p, fn, want);
    prob_run(&p, attn_group, got);
    assert_memory_equal(want, got, sizeof want);
    prob_free(&p);
}

/* One position: the output is that position's V row (probability exactly 1). */
static void test_attn_single_position_returns_its_value(void **state)
{
    (void)state;
    uint64_t rng = 3;
    attn_fn fns[3] = {attn_ref_group, attn_group, attn_ref_group};
#if defined(__x86_64__)
    if (quant_isa_supported("avx2")) fns[2] = attn_avx2_group;
#endif
    for (int f = 0; f < 2; f++)
        for (int k = 0; k < 3; k++) {
            struct prob p;
            prob_make(&p, 64, 8, 1, f == 0, 1.0f, &rng);
            float got[8 * 64];
            prob_run(&p, fns[k], got);
            for (int i = 0; i < 8; i++)
                for (int d = 0; d < 64; d++) assert_float_equal(got[i * 64 + d], p.vd[d], 0.0);
            prob_free(&p);
        }
}

static void test_attn_scratch_bytes_rejects_bad_sizes(void **state)
{
    (void)state;
    assert_int_equal(attn_scratch_bytes(0, 1, 1), 0);
    assert_int_equal(attn_scratch_bytes(64, 0, 1), 0);
    assert_int_equal(attn_scratch_bytes(64, ATTN_MAX_GROUP + 1, 1), 0);
    assert_int_equal(attn_scratch_bytes(64, 1, 0), 0);
    assert_true(attn_scratch_bytes(128, 8, 4096) >= (size_t)8 * (4096 + 128) * sizeof(float));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attn_reference_matches_exact),
        cmocka_unit_test(test_attn_kernels_match_scalar_on_every_path),
        cmocka_unit_test(test_attn_kernels_match_scalar_on_peaked_scores),
        cmocka_unit_test(test_attn_softmax_within_8_ulps),
        cmocka_unit_test(test_attn_quantized_cache_paths_match_reference),
        cmocka_unit_test(test_attn_dispatch_follows_selected_isa),
        cmocka_unit_test(test_attn_single_position_returns_its_value),
        cmocka_unit_test(test_attn_scratch_bytes_rejects_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
