/* test_ppl.c - engine/ppl.h: the per-token NLL, the running and final perplexity, the KL
 * divergence statistics against closed forms, llama.cpp's percentile rule, the chunk count,
 * and ppl_chunk_logits on stories260K: the scored logits equal one full-chunk decode's
 * whatever the batch size, the first token is replaced by BOS, and the cache starts empty.
 * The figure against llama-perplexity is tests/cli_perplexity.test.sh's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/model.h"
#include "engine/ppl.h"
#include "engine/tok.h"
#include "tests/util/test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_ppl_token_nll_closed_form(void **state)
{
    (void)state;
    float l[8] = {0};
    /* uniform: -log(1/8) */
    assert_float_equal(ppl_token_nll(l, 8, 3), log(8.0), 1e-9);
    /* two tokens, logits 0 and ln 3: p = 1/4, 3/4 */
    float l2[2] = {0.0f, (float)log(3.0)};
    assert_float_equal(ppl_token_nll(l2, 2, 0), log(4.0), 1e-6);
    assert_float_equal(ppl_token_nll(l2, 2, 1), log(4.0 / 3.0), 1e-6);
    /* shifting all logits changes nothing, even far from 0 */
    float l3[2] = {1000.0f, 1000.0f + (float)log(3.0)};
    assert_float_equal(ppl_token_nll(l3, 2, 0), log(4.0), 1e-4);
}

static void test_ppl_stats_final_formula(void **state)
{
    (void)state;
    struct ppl_stats s = {0};
    double ppl, e;
    assert_int_equal(ppl_stats_final(&s, &ppl, &e), MESH_ERANGE);
    const double v[4] = {1.0, 2.0, 3.0, 4.0};
    for (int i = 0; i < 4; i++) ppl_stats_add(&s, v[i]);
    assert_int_equal(ppl_stats_final(&s, &ppl, &e), 0);
    /* mean 2.5, population variance 1.25, error = ppl * sqrt(1.25 / 3) */
    assert_float_equal(ppl, exp(2.5), 1e-9);
    assert_float_equal(e, exp(2.5) * sqrt(1.25 / 3.0), 1e-9);
    struct ppl_stats same = {0};
    for (int i = 0; i < 5; i++) ppl_stats_add(&same, 0.7);
    assert_int_equal(ppl_stats_final(&same, &ppl, &e), MESH_ERANGE);
}

static void test_ppl_chunks_count(void **state)
{
    (void)state;
    assert_int_equal(ppl_n_chunks(255, 128, 0), 0); /* needs 2 * n_ctx */
    assert_int_equal(ppl_n_chunks(256, 128, 0), 2);
    assert_int_equal(ppl_n_chunks(1000, 128, 0), 7);
    assert_int_equal(ppl_n_chunks(1000, 128, 3), 3);
    assert_int_equal(ppl_n_scored(128), 63);
    assert_int_equal(ppl_n_scored(512), 255);
    assert_int_equal(ppl_n_scored(7), 3);
}

static void test_ppl_kld_closed_form(void **state)
{
    (void)state;
    struct ppl_kld k;
    assert_int_equal(ppl_kld_init(&k, 200), 0);
    /* base p = (1/4, 3/4), model q = (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2) */
    float base[2] = {0.0f, (float)log(3.0)}, q[2] = {0.0f, 0.0f};
    double kl = 0.25 * log(0.5) + 0.75 * log(1.5);
    for (int i = 0; i < 150; i++) assert_int_equal(ppl_kld_add(&k, q, base, 2, 1), 0);
    struct ppl_kld_summary s;
    assert_int_equal(ppl_kld_summarize(&k, &s), 0);
    assert_float_equal(s.kld.val, kl, 1e-6);
    assert_float_equal(s.kld_median, kl, 1e-6);
    assert_float_equal(s.kld_max, kl, 1e-6);
    assert_float_equal(s.ppl.val, 2.0, 1e-5);       /* q(1) = 1/2 */
    assert_float_equal(s.ppl_base.val, 4.0 / 3.0, 1e-5);
    assert_float_equal(s.p_diff.val, 0.5 - 0.75, 1e-6);
    assert_float_equal(s.dp_rms.val, 0.25, 1e-6);
    /* q's argmax is token 0 (first of a tie), base's is 1 */
    assert_float_equal(s.same_top.val, 0.0, 0);
    assert_int_equal(s.count, 150);
    /* the same model as its base: no divergence, full agreement */
    struct ppl_kld k2;
    assert_int_equal(ppl_kld_init(&k2, 20), 0);
    float a[3] = {0.3f, -1.0f, 2.0f};
    for (int i = 0; i < 20; i++) ppl_kld_add(&k2, a, a, 3, i % 3);
    assert_int_equal(ppl_kld_add(&k2, a, a, 3, 0), MESH_EFULL);
    assert_int_equal(ppl_kld_summarize(&k2, &s), 0);
    assert_true(fabs(s.kld.val) < 1e-7);
    assert_float_equal(s.same_top.val, 1.0, 0);
    assert_float_equal(s.ln_ratio.val, 0.0, 1e-9);
    ppl_kld_free(&k2);
    ppl_kld_free(&k);
}

static void test_ppl_kld_percentiles_llamacpp_rule(void **state)
{
    (void)state;
    struct ppl_kld k;
    assert_int_equal(ppl_kld_init(&k, 100), 0);
    /* inject KL values 0..99 in reverse order through the value arrays */
    for (int i = 0; i < 100; i++) {
        k.kld_values[i] = (float)(99 - i);
        k.p_diff_values[i] = (float)(i - 50) / 100.0f;
    }
    k.count = 100;
    struct ppl_kld_summary s;
    assert_int_equal(ppl_kld_summarize(&k, &s), 0);
    assert_float_equal(s.kld_min, 0.0, 0);
    assert_float_equal(s.kld_max, 99.0, 0);
    assert_float_equal(s.kld_median, 49.5, 1e-6);   /* even count: mean of the middle two */
    assert_float_equal(s.kld_p10, 9.9, 1e-4);       /* 0.1 * 99, interpolated */
    assert_float_equal(s.kld_p99, 98.01, 1e-3);
    assert_float_equal(s.dp_p25, (24.75 - 50) / 100.0, 1e-5);
    ppl_kld_free(&k);
}

/* ppl_chunk_logits against a single full-chunk decode of the same tokens with BOS first. */
static void test_ppl_chunk_logits_stories(void **state)
{
    (void)state;
    struct model *m = NULL;
    char err[256];
    struct model_load_opts lo = {0};
    assert_int_equal(model_load(test_model_path("stories260K.gguf"), &lo, &m, err, sizeof err), 0);
    const struct tok *t = model_tok(m);
    int V = model_hparams(m)->n_vocab, n_ctx = 64, n_sc = ppl_n_scored(n_ctx);
    const char *text = "Once upon a time, there was a little girl named Lily. She loved to play "
                       "outside in the park with her friends. One day, she saw a big red ball "
                       "under a tree and she ran to get it. The ball was soft and shiny. Lily threw "
                       "it to her friend Tom, and Tom threw it back. They laughed and played "
                       "until the sun went down and their moms called them home for dinner.";
    int32_t ids[256];
    int n = 0;
    assert_int_equal(tok_encode(t, text, strlen(text), true, false, ids, 256, &n), 0);
    assert_true(n >= n_ctx + 1);
    const int32_t *chunk = ids + 1; /* a chunk that does not start with BOS */
    float *full = malloc((size_t)n_ctx * V * sizeof *full);
    float *got = malloc((size_t)n_sc * V * sizeof *got);
    float *got2 = malloc((size_t)n_sc * V * sizeof *got2);
    assert_non_null(full);
    assert_non_null(got);
    assert_non_null(got2);

    struct model_ctx_params p;
    model_ctx_params_default(&p);
    p.n_ctx = n_ctx;
    p.n_batch = n_ctx;
    p.n_threads = 1;
    p.k_type = p.v_type = MODEL_KV_F32;
    struct model_ctx *c = NULL;
    assert_int_equal(model_ctx_new(m, &p, &c, err, sizeof err), 0);
    int32_t tok[64], pos[64];
    bool want[64];
    for (int i = 0; i < n_ctx; i++) tok[i] = i ? chunk[i] : tok_bos(t), pos[i] = i, want[i] = true;
    struct model_batch b = {.n = n_ctx, .tokens = tok, .pos = pos, .want_logits = want};
    assert_int_equal(model_decode(c, &b, full), 0);
    /* the cache is full of this chunk: ppl_chunk_logits must start over */
    assert_int_equal(ppl_chunk_logits(c, chunk, n_ctx, tok_bos(t), got), 0);
    for (size_t i = 0; i < (size_t)n_sc * V; i++)
        assert_float_equal(got[i], full[(size_t)(n_ctx / 2) * V + i], 1e-4);
    model_ctx_free(c);

    /* batches of 10 tokens: same logits */
    p.n_batch = 10;
    assert_int_equal(model_ctx_new(m, &p, &c, err, sizeof err), 0);
    assert_int_equal(ppl_chunk_logits(c, chunk, n_ctx, tok_bos(t), got2), 0);
    for (size_t i = 0; i < (size_t)n_sc * V; i++) assert_float_equal(got2[i], got[i], 1e-4);
    /* without BOS the first token is kept, and the logits differ */
    assert_int_equal(ppl_chunk_logits(c, chunk, n_ctx, -1, got2), 0);
    double diff = 0;
    for (size_t i = 0; i < (size_t)n_sc * V; i++) diff += fabs(got2[i] - got[i]);
    assert_true(diff > 1e-2);
    assert_int_equal(ppl_chunk_logits(c, chunk, n_ctx + 1, -1, got2), MESH_EINVAL);
    model_ctx_free(c);
    free(got2);
    free(got);
    free(full);
    model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ppl_token_nll_closed_form),
        cmocka_unit_test(test_ppl_stats_final_formula),
        cmocka_unit_test(test_ppl_chunks_count),
        cmocka_unit_test(test_ppl_kld_closed_form),
        cmocka_unit_test(test_ppl_kld_percentiles_llamacpp_rule),
        cmocka_unit_test(test_ppl_chunk_logits_stories),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
