/* test_model_random.c - a random-weight model of realistic shape (dim 512, 8 layers, GQA
 * 8/4 heads, ff 1536, the stories260K vocabulary), written by our own GGUF writer
 * (engine/model_gen) and quantized by our quantizer to every type: the forward pass runs
 * on each, its top-1 token agrees with F32 on most positions, and layer splits give the
 * same logits as the whole. Also a qwen2-shaped model (QKV biases, NeoX RoPE, tied output). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/model.h"
#include "engine/model_gen.h"
#include "engine/quant.h"
#include "engine/quantize.h"
#include "tests/util/test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_POS = 24 };

static char g_f32_path[512];

static void gen_model(const char *shape_name, const char *arch, const char *path)
{
    struct model_gen_opts o;
    memset(&o, 0, sizeof o);
    assert_int_equal(model_gen_shape_get(shape_name, &o.shape), 0);
    if (arch) snprintf(o.shape.arch, sizeof o.shape.arch, "%s", arch);
    o.shape.n_ff = 1536; /* a multiple of 256, so ffn_down gets real K-quant blocks too */
    o.vocab_path = test_model_path("stories260K.gguf");
    o.ftype = QUANTIZE_FT_F32;
    o.seed = 1234;
    o.n_threads = 2;
    char err[512] = "";
    int rc = model_gen_write(&o, path, err, sizeof err);
    if (rc < 0) fail_msg("model_gen_write: %s", err);
}

/* Teacher-forced logits of N_POS fixed tokens: out[N_POS][n_vocab]. */
static int run_logits(const char *path, float **out, int *n_vocab, int lb_split)
{
    char err[512] = "";
    struct model *m = NULL;
    int rc = model_load(path, NULL, &m, err, sizeof err);
    if (rc < 0) fail_msg("model_load(%s): %s", path, err);
    const struct model_hparams *hp = model_hparams(m);
    *n_vocab = hp->n_vocab;
    int32_t toks[N_POS], pos[N_POS];
    bool want[N_POS];
    uint64_t st = 99;
    for (int i = 0; i < N_POS; i++) {
        toks[i] = i == 0 ? 1 : (int32_t)(test_rand_u64(&st) % 500) + 3;
        pos[i] = i;
        want[i] = true;
    }
    float *logits = malloc((size_t)N_POS * hp->n_vocab * sizeof(float));
    struct model_ctx_params p;
    model_ctx_params_default(&p);
    p.n_ctx = 64;
    p.n_batch = N_POS;
    p.n_threads = 2;
    if (lb_split <= 0) {
        struct model_ctx *c = NULL;
        assert_int_equal(model_ctx_new(m, &p, &c, err, sizeof err), 0);
        struct model_batch b = {.n = N_POS, .tokens = toks, .pos = pos, .want_logits = want};
        assert_int_equal(model_decode(c, &b, logits), 0);
        model_ctx_free(c);
    } else {
        /* the same through two contexts: layers [0,k) then [k,n) */
        struct model_ctx *a = NULL, *b2 = NULL;
        p.layer_begin = 0;
        p.layer_end = lb_split;
        assert_int_equal(model_ctx_new(m, &p, &a, err, sizeof err), 0);
        p.layer_begin = lb_split;
        p.layer_end = hp->n_layer;
        assert_int_equal(model_ctx_new(m, &p, &b2, err, sizeof err), 0);
        float *x = malloc((size_t)N_POS * hp->n_embd * sizeof(float));
        struct model_batch b = {.n = N_POS, .tokens = toks, .pos = pos};
        assert_int_equal(model_embed(a, toks, N_POS, x), 0);
        assert_int_equal(model_layers(a, &b, x), 0);
        assert_int_equal(model_layers(b2, &b, x), 0);
        assert_int_equal(model_head(b2, x, N_POS, logits), 0);
        free(x);
        model_ctx_free(a);
        model_ctx_free(b2);
    }
    model_free(m);
    *out = logits;
    return 0;
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_f32_path, sizeof g_f32_path, "%s/small-f32.gguf", test_tmp_dir());
    gen_model("test-small", NULL, g_f32_path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_tmp_dir());
    return system(cmd) == 0 ? 0 : -1;
}

static void test_model_random_shape_is_realistic(void **state)
{
    (void)state;
    char err[256];
    struct model *m = NULL;
    assert_int_equal(model_load(g_f32_path, NULL, &m, err, sizeof err), 0);
    const struct model_hparams *hp = model_hparams(m);
    assert_int_equal(hp->n_embd, 512);
    assert_int_equal(hp->n_layer, 8);
    assert_true(hp->n_head_kv < hp->n_head); /* GQA */
    assert_int_equal(hp->n_vocab, 512);
    model_free(m);
}

/* Each quantized type: top-1 agrees with F32 on most positions. */
static void test_model_random_quantized_agree_with_f32(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int ftype;
        int min_agree;   /* of N_POS: top-1 equal */
        double max_rel;  /* bound on ||logits - f32|| / ||f32 - mean(f32)|| */
    } types[] = {
        /* Random weights give flat logits (small top-1 margins), so 4-bit noise flips some
         * top-1s; the relative error is the sharper check of the kernels. */
        {"F16", QUANTIZE_FT_F16, N_POS, 0.01},         {"BF16", QUANTIZE_FT_BF16, N_POS - 1, 0.03},
        {"Q8_0", QUANTIZE_FT_Q8_0, N_POS - 2, 0.05},    {"Q6_K", QUANTIZE_FT_Q6_K, N_POS - 3, 0.08},
        {"Q5_0", QUANTIZE_FT_Q5_0, N_POS / 2 + 1, 0.2}, {"Q4_K_M", QUANTIZE_FT_Q4_K_M, N_POS / 2 + 1, 0.25},
        {"Q4_0", QUANTIZE_FT_Q4_0, N_POS / 3, 0.4},
    };
    float *ref;
    int n_vocab;
    run_logits(g_f32_path, &ref, &n_vocab, 0);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char path[600], err[512] = "";
        snprintf(path, sizeof path, "%s/small-%s.gguf", test_tmp_dir(), types[i].name);
        int rc = quantize_model(g_f32_path, path, types[i].ftype, 2, NULL, NULL, err, sizeof err);
        if (rc < 0) fail_msg("quantize %s: %s", types[i].name, err);
        float *got;
        int nv;
        run_logits(path, &got, &nv, 0);
        assert_int_equal(nv, n_vocab);
        int agree = 0, in_top5 = 0;
        double err2 = 0, var2 = 0;
        for (int p = 0; p < N_POS; p++) {
            const float *r = ref + (size_t)p * n_vocab, *g = got + (size_t)p * n_vocab;
            int best = argmax(r, n_vocab);
            agree += best == argmax(g, n_vocab);
            int rank = 0; /* tokens the quantized model ranks above F32's top-1 */
            for (int v = 0; v < n_vocab; v++) rank += g[v] > g[best];
            in_top5 += rank < 5;
            double mean = 0;
            for (int v = 0; v < n_vocab; v++) mean += r[v];
            mean /= n_vocab;
            for (int v = 0; v < n_vocab; v++) {
                err2 += (double)(g[v] - r[v]) * (g[v] - r[v]);
                var2 += (r[v] - mean) * (r[v] - mean);
            }
        }
        double rel = sqrt(err2 / var2);
        print_message("  %-7s top-1 agrees with F32 on %2d/%d positions (in top-5 on %2d), "
                      "relative logit error %.4f\n", types[i].name, agree, N_POS, in_top5, rel);
        if (in_top5 < N_POS * 3 / 4)
            fail_msg("%s: F32's top-1 is in the top 5 on only %d/%d positions", types[i].name, in_top5, N_POS);
        if (agree < types[i].min_agree)
            fail_msg("%s: top-1 agrees on only %d/%d positions", types[i].name, agree, N_POS);
        if (rel > types[i].max_rel)
            fail_msg("%s: relative logit error %.4f > %.2f", types[i].name, rel, types[i].max_rel);
        free(got);
        remove(path);
    }
    free(ref);
}

static void test_model_random_layer_split_equals_full(void **state)
{
    (void)state;
    char path[600], err[512] = "";
    snprintf(path, sizeof path, "%s/small-split-Q4_K_M.gguf", test_tmp_dir());
    assert_int_equal(quantize_model(g_f32_path, path, QUANTIZE_FT_Q4_K_M, 2, NULL, NULL, err, sizeof err), 0);
    float *full, *split;
    int nv;
    run_logits(path, &full, &nv, 0);
    for (int k = 1; k < 8; k += 3) {
        run_logits(path, &split, &nv, k);
        assert_memory_equal(full, split, (size_t)N_POS * nv * sizeof(float));
        free(split);
    }
    free(full);
    remove(path);
}

static void test_model_random_qwen2_runs(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/small-qwen2.gguf", test_tmp_dir());
    gen_model("test-small", "qwen2", path);
    char err[256];
    struct model *m = NULL;
    assert_int_equal(model_load(path, NULL, &m, err, sizeof err), 0);
    assert_int_equal(model_hparams(m)->arch, MODEL_ARCH_QWEN2);
    assert_true(model_hparams(m)->has_qkv_bias);
    assert_int_equal(model_hparams(m)->rope_type, MODEL_ROPE_NEOX);
    model_free(m);
    float *a, *b;
    int nv;
    run_logits(path, &a, &nv, 0);
    run_logits(path, &b, &nv, 3);
    assert_memory_equal(a, b, (size_t)N_POS * nv * sizeof(float));
    for (int i = 0; i < N_POS * nv; i++) assert_true(isfinite(a[i]));
    free(a);
    free(b);
    remove(path);
}

int main(void)
{
    quant_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_random_shape_is_realistic),
        cmocka_unit_test(test_model_random_quantized_agree_with_f32),
        cmocka_unit_test(test_model_random_layer_split_equals_full),
        cmocka_unit_test(test_model_random_qwen2_runs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
