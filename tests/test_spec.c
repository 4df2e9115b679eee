/* test_spec.c - speculative decoding (node/spec.c, node/sched.c): the n-gram lookup and the
 * rejection rule alone, then schedulers on stories260K and on a random-weight model of a real
 * shape (dim 512, 8 layers, GQA, Q8_0) with n-gram drafting and with a draft model
 * (stories260K as its own draft: everything accepted; a random-weight draft of the same
 * vocabulary: rejections) against the same scheduler without speculation: greedy ids, text
 * and finish reasons equal token for token, sampling with a fixed seed too (the verify step
 * draws exactly as plain decoding), stop strings and max_tokens cut at the same place, and
 * the acceptance counters move. A draft model of another vocabulary is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "core/rng.h"
#include "engine/model.h"
#include "engine/model_gen.h"
#include "engine/quantize.h"
#include "engine/tok.h"
#include "node/sched.h"
#include "node/spec.h"
#include "tests/util/test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *g_stories;
static char g_rand_path[600], g_rdraft_path[600], g_bigvocab_path[600];
static struct model *g_m, *g_rand;

static const char *const g_prompts[] = {
    "Once upon a time, there was a little girl named Lily.",
    "Tom and his dog went to the park. Tom and his dog",
    "One day, a big bird",
    "The cat said, \"I want to play!\" The cat said,",
};

static void gen_model(const char *path, const char *shape, int n_vocab, int ftype, uint64_t seed)
{
    struct model_gen_opts o;
    memset(&o, 0, sizeof o);
    if (shape) {
        assert_int_equal(model_gen_shape_get(shape, &o.shape), 0);
        o.shape.n_ff = 1536;
    } else { /* a stories260K-sized model */
        snprintf(o.shape.name, sizeof o.shape.name, "tiny");
        snprintf(o.shape.arch, sizeof o.shape.arch, "llama");
        o.shape.n_embd = 64;
        o.shape.n_layer = 2;
        o.shape.n_head = 8;
        o.shape.n_head_kv = 4;
        o.shape.n_ff = 192;
        o.shape.n_ctx = 512;
        o.shape.rope_theta = 10000;
        o.shape.rms_eps = 1e-5f;
    }
    if (n_vocab) o.shape.n_vocab = n_vocab;
    o.vocab_path = g_stories;
    o.ftype = ftype;
    o.seed = seed;
    o.n_threads = 2;
    char err[512] = "";
    if (model_gen_write(&o, path, err, sizeof err) < 0) fail_msg("model_gen: %s", err);
}

static int group_setup(void **state)
{
    (void)state;
    g_stories = test_model_path("stories260K.gguf");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/spec", test_tmp_dir());
    mkdir(dir, 0700);
    snprintf(g_rand_path, sizeof g_rand_path, "%s/rand-small.gguf", dir);
    snprintf(g_rdraft_path, sizeof g_rdraft_path, "%s/rand-draft.gguf", dir);
    snprintf(g_bigvocab_path, sizeof g_bigvocab_path, "%s/rand-bigvocab.gguf", dir);
    gen_model(g_rand_path, "test-small", 0, QUANTIZE_FT_Q8_0, 4321);
    gen_model(g_rdraft_path, NULL, 0, QUANTIZE_FT_F32, 99);
    gen_model(g_bigvocab_path, NULL, 1024, QUANTIZE_FT_F32, 7);
    char err[512] = "";
    if (model_load(g_stories, NULL, &g_m, err, sizeof err)) fail_msg("%s", err);
    if (model_load(g_rand_path, NULL, &g_rand, err, sizeof err)) fail_msg("%s", err);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    model_free(g_m);
    model_free(g_rand);
    return 0;
}

/* ---- the pieces alone ------------------------------------------------------------------------ */

static void test_spec_ngram_lookup(void **state)
{
    (void)state;
    int32_t out[8];
    /* the suffix "5 6 7" (no 4-gram repeats) occurred at the start: what followed it */
    const int32_t h[] = {1, 5, 6, 7, 8, 9, 2, 3, 5, 6, 7};
    int n = spec_ngram_draft(h, 11, 8, out);
    assert_int_equal(n, 7); /* up to the end of the history */
    const int32_t want[] = {8, 9, 2, 3, 5, 6, 7};
    assert_memory_equal(out, want, 7 * sizeof *out);
    assert_int_equal(spec_ngram_draft(h, 11, 2, out), 2);
    assert_int_equal(out[0], 8);
    assert_int_equal(out[1], 9);
    /* the most recent occurrence wins: "1 2" occurs twice, followed by 3 then by 4 */
    const int32_t h2[] = {1, 2, 3, 0, 1, 2, 4, 0, 1, 2};
    assert_int_equal(spec_ngram_draft(h2, 10, 1, out), 1);
    assert_int_equal(out[0], 4);
    /* a longer match beats a more recent shorter one: "0 1 2" vs "x 1 2" */
    const int32_t h3[] = {0, 1, 2, 7, 9, 1, 2, 8, 0, 1, 2};
    assert_int_equal(spec_ngram_draft(h3, 11, 1, out), 1);
    assert_int_equal(out[0], 7);
    /* nothing repeats: no proposal; a single repeated token is below SPEC_NGRAM_MIN */
    const int32_t h4[] = {1, 2, 3, 4, 5, 3};
    assert_int_equal(spec_ngram_draft(h4, 6, 4, out), 0);
    assert_int_equal(spec_ngram_draft(h4, 1, 4, out), 0);
}

/* p = (0.5, 0.3, 0.2), q = (0.2, 0.6, 0.2): x = 1 is kept with probability p/q = 0.5; on
 * rejection the residual max(0, p - q) = (0.3, 0, 0) leaves only token 0. x = 0 (p/q = 2.5)
 * is always kept. Then the distribution of the outcome over many draws x ~ q equals p. */
static void test_spec_rejection_rule(void **state)
{
    (void)state;
    const float p[] = {0.5f, 0.3f, 0.2f}, q[] = {0.2f, 0.6f, 0.2f};
    bool acc;
    assert_int_equal(spec_verify_dist(p, q, 3, 1, 0.49, 0.9, &acc), 1);
    assert_true(acc);
    assert_int_equal(spec_verify_dist(p, q, 3, 1, 0.51, 0.9, &acc), 0);
    assert_false(acc);
    assert_int_equal(spec_verify_dist(p, q, 3, 0, 0.999, 0.0, &acc), 0);
    assert_true(acc);
    assert_int_equal(spec_verify_dist(p, q, 3, 2, 0.99, 0.5, &acc), 2); /* p/q = 1 */
    assert_true(acc);
    /* p = (0.1, 0.6, 0.3), q = (0.5, 0.1, 0.4), x = 0 rejected with u >= 0.2: the residual is
     * (0, 0.5, 0) -> 1 */
    const float p2[] = {0.1f, 0.6f, 0.3f}, q2[] = {0.5f, 0.1f, 0.4f};
    assert_int_equal(spec_verify_dist(p2, q2, 3, 0, 0.3, 0.99, &acc), 1);
    assert_false(acc);
    /* statistically: the outcome follows p */
    struct rng r;
    rng_seed(&r, 12345);
    int count[3] = {0, 0, 0}, N = 200000;
    for (int i = 0; i < N; i++) {
        double u = rng_uniform(&r);
        int32_t x = u < q2[0] ? 0 : u < q2[0] + q2[1] ? 1 : 2;
        count[spec_verify_dist(p2, q2, 3, x, rng_uniform(&r), rng_uniform(&r), &acc)]++;
    }
    for (int k = 0; k < 3; k++) {
        double f = (double)count[k] / N, sd = sqrt(p2[k] * (1 - p2[k]) / N);
        print_message("token %d: %.4f (p %.2f)\n", k, f, p2[k]);
        assert_true(fabs(f - p2[k]) < 5 * sd);
    }
}

/* ---- schedulers --------------------------------------------------------------------------- */

struct result {
    char text[8192];
    size_t len;
    int32_t ids[1024];
    float lp[1024];
    int n_ids;
    const char *finish;
};

static struct sched *sched_make(const struct model *m, enum spec_mode spec, const char *draft,
                                int n_slots)
{
    struct sched_params p;
    sched_params_default(&p);
    p.n_slots = n_slots;
    p.n_ctx = 512;
    p.n_threads = 1;
    p.spec = spec;
    p.draft_path = draft;
    struct sched *s = NULL;
    char err[512] = "";
    if (sched_new(m, &p, &s, err, sizeof err)) fail_msg("sched_new: %s", err);
    return s;
}

static struct sched_req *submit(struct sched *s, const struct model *m, const char *prompt,
                                float temp, int max_tokens, const char *stop)
{
    int32_t ids[256];
    int n = 0;
    assert_int_equal(tok_encode(model_tok(m), prompt, strlen(prompt), true, false, ids, 256, &n), 0);
    struct sched_gen_params gp;
    sched_gen_params_default(&gp);
    gp.sp.temp = temp;
    gp.sp.seed = 42;
    gp.max_tokens = max_tokens;
    gp.n_logprobs = 0;
    if (stop) {
        gp.stop[0] = stop;
        gp.n_stop = 1;
    }
    struct sched_req *r = NULL;
    assert_int_equal(sched_submit_gen(s, ids, n, &gp, NULL, NULL, &r), 0);
    return r;
}

static void wait_done(struct sched_req *r, struct result *res)
{
    memset(res, 0, sizeof *res);
    for (int spins = 0; spins < 400000; spins++) {
        struct sched_chunk ch;
        assert_int_equal(sched_req_take(r, &ch), 0);
        assert_true(res->len + ch.len < sizeof res->text);
        if (ch.len) memcpy(res->text + res->len, ch.text, ch.len);
        res->len += ch.len;
        for (int i = 0; i < ch.n_lps && res->n_ids < 1024; i++) {
            res->lp[res->n_ids] = ch.lps[i].logprob;
            res->ids[res->n_ids++] = ch.lps[i].id;
        }
        bool done = ch.done;
        res->finish = ch.finish_reason;
        sched_chunk_free(&ch);
        if (done) {
            sched_req_release(r);
            return;
        }
        usleep(100);
    }
    fail_msg("request did not finish");
}

static void run_one(struct sched *s, const struct model *m, const char *prompt, float temp,
                    int max_tokens, const char *stop, struct result *res)
{
    wait_done(submit(s, m, prompt, temp, max_tokens, stop), res);
}

static void assert_same(const struct result *want, const struct result *got, const char *what)
{
    if (got->n_ids != want->n_ids || memcmp(got->ids, want->ids, (size_t)want->n_ids * 4))
        fail_msg("%s: %d ids, plain decoding %d; text '%.*s' vs '%.*s'", what, got->n_ids,
                 want->n_ids, (int)got->len, got->text, (int)want->len, want->text);
    assert_int_equal(got->len, want->len);
    assert_memory_equal(got->text, want->text, want->len);
    assert_string_equal(got->finish, want->finish);
    for (int i = 0; i < want->n_ids; i++) assert_true(fabsf(got->lp[i] - want->lp[i]) < 1e-3f);
}

/* Every prompt, greedy and sampled, on a plain scheduler and on spec; returns the rate. */
static double compare(const struct model *m, enum spec_mode spec, const char *draft,
                      int max_tokens, const char *stop, bool sampled)
{
    struct sched *plain = sched_make(m, SPEC_OFF, NULL, 2), *sp = sched_make(m, spec, draft, 2);
    struct result *want = malloc(sizeof *want), *got = malloc(sizeof *got);
    int n_tok = 0;
    for (size_t i = 0; i < sizeof g_prompts / sizeof g_prompts[0]; i++)
        for (int t = 0; t < (sampled ? 2 : 1); t++) {
            float temp = t ? 0.8f : 0.0f;
            run_one(plain, m, g_prompts[i], temp, max_tokens, stop, want);
            run_one(sp, m, g_prompts[i], temp, max_tokens, stop, got);
            char what[128];
            snprintf(what, sizeof what, "%s prompt %zu temp %.1f", spec_mode_name(spec), i, temp);
            assert_same(want, got, what);
            n_tok += want->n_ids;
        }
    struct sched_stats st;
    sched_stats(sp, &st);
    double rate = st.n_spec_drafted ? (double)st.n_spec_accepted / (double)st.n_spec_drafted : 0;
    print_message("%s%s: %d tokens equal; drafted %llu, accepted %llu (%.0f%%)\n",
                  spec_mode_name(spec), draft ? " (draft model)" : "", n_tok,
                  (unsigned long long)st.n_spec_drafted, (unsigned long long)st.n_spec_accepted,
                  100 * rate);
    if (max_tokens > 1) assert_true(st.n_spec_drafted > 0); /* 1: nothing to propose */
    assert_true(st.n_spec_accepted <= st.n_spec_drafted);
    sched_stats(plain, &st);
    assert_int_equal(st.n_spec_drafted, 0);
    free(want);
    free(got);
    sched_free(plain);
    sched_free(sp);
    return rate;
}

static void test_spec_ngram_equals_plain(void **state)
{
    (void)state;
    double rate = compare(g_m, SPEC_NGRAM, NULL, 200, NULL, true);
    assert_true(rate > 0.1); /* the tiny stories repeat themselves */
}

static void test_spec_ngram_random_model_equals_plain(void **state)
{
    (void)state;
    compare(g_rand, SPEC_NGRAM, NULL, 48, NULL, false);
}

static void test_spec_draft_self_accepts_all(void **state)
{
    (void)state;
    /* the model as its own draft proposes what greedy decoding picks */
    double rate = compare(g_m, SPEC_DRAFT, g_stories, 120, NULL, false);
    assert_true(rate > 0.95);
    compare(g_m, SPEC_DRAFT, g_stories, 60, NULL, true); /* sampled: same draws as plain */
}

static void test_spec_draft_random_rejects(void **state)
{
    (void)state;
    double rate = compare(g_m, SPEC_DRAFT, g_rdraft_path, 80, NULL, true);
    assert_true(rate < 0.9); /* a random draft is mostly wrong: rejected and rolled back */
}

/* A stop string or max_tokens inside an accepted run ends the output where plain decoding
 * does. */
static void test_spec_stop_and_length_inside_a_run(void **state)
{
    (void)state;
    compare(g_m, SPEC_DRAFT, g_stories, 200, "Lily", true);
    compare(g_m, SPEC_NGRAM, NULL, 200, " the", true);
    for (int max = 1; max <= 12; max += 5) compare(g_m, SPEC_DRAFT, g_stories, max, NULL, false);
}

/* Concurrent slots verify in one batch and stay independent. */
static void test_spec_concurrent_slots(void **state)
{
    (void)state;
    struct sched *plain = sched_make(g_m, SPEC_OFF, NULL, 4), *sp = sched_make(g_m, SPEC_NGRAM, NULL, 4);
    struct result *want = calloc(4, sizeof *want), *got = calloc(4, sizeof *got);
    struct sched_req *r[4];
    for (int i = 0; i < 4; i++) run_one(plain, g_m, g_prompts[i], 0, 150, NULL, &want[i]);
    for (int i = 0; i < 4; i++) r[i] = submit(sp, g_m, g_prompts[i], 0, 150, NULL);
    for (int i = 0; i < 4; i++) wait_done(r[i], &got[i]);
    for (int i = 0; i < 4; i++) assert_same(&want[i], &got[i], "concurrent");
    free(want);
    free(got);
    sched_free(plain);
    sched_free(sp);
}

static void test_spec_draft_other_vocab_refused(void **state)
{
    (void)state;
    struct sched_params p;
    sched_params_default(&p);
    p.n_slots = 1;
    p.n_ctx = 128;
    p.n_threads = 1;
    p.spec = SPEC_DRAFT;
    p.draft_path = g_bigvocab_path;
    struct sched *s = NULL;
    char err[512] = "";
    assert_int_equal(sched_new(g_m, &p, &s, err, sizeof err), MESH_EBADMODEL);
    assert_null(s);
    print_message("refused: %s\n", err);
    assert_non_null(strstr(err, "vocabulary"));
    p.draft_path = NULL;
    assert_int_equal(sched_new(g_m, &p, &s, err, sizeof err), MESH_EINVAL);
    p.draft_path = g_stories;
    p.n_draft_max = SPEC_DRAFT_MAX_CAP + 1;
    assert_int_equal(sched_new(g_m, &p, &s, err, sizeof err), MESH_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_ngram_lookup),
        cmocka_unit_test(test_spec_rejection_rule),
        cmocka_unit_test(test_spec_ngram_equals_plain),
        cmocka_unit_test(test_spec_ngram_random_model_equals_plain),
        cmocka_unit_test(test_spec_draft_self_accepts_all),
        cmocka_unit_test(test_spec_draft_random_rejects),
        cmocka_unit_test(test_spec_stop_and_length_inside_a_run),
        cmocka_unit_test(test_spec_concurrent_slots),
        cmocka_unit_test(test_spec_draft_other_vocab_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
