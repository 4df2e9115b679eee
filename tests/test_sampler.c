/* test_sampler.c - engine/sampler: greedy, top-k/top-p/min-p candidate sets, penalties,
 * seeded reproducibility, empirical frequencies, logprobs, hostile logits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/sampler.h"
#include "tests/util/test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Params with every filter off (pure softmax at temperature temp) and a fixed seed. */
static struct sampler_params plain_params(float temp, uint64_t seed)
{
    struct sampler_params p;
    sampler_params_default(&p);
    p.temp = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

static int32_t argmax_lowest(const float *l, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

static void fill_random(float *l, int n, uint64_t *rs, float scale)
{
    for (int i = 0; i < n; i++) l[i] = scale * test_rand_uniform(rs);
}

/* qsort of ids by logit descending, then id ascending (the sampler's order). */
static const float *g_sort_logits;
static int cmp_by_logit(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    const float *l = g_sort_logits;
    if (l[a] != l[b]) return l[a] > l[b] ? -1 : 1;
    return a < b ? -1 : 1;
}

/* Draws n_draws tokens and marks which ids came out (seen[n_vocab]). */
static void draw_set(struct sampler *s, const float *logits, int n_draws, bool *seen, int n_vocab)
{
    memset(seen, 0, (size_t)n_vocab * sizeof *seen);
    for (int i = 0; i < n_draws; i++) {
        int32_t id = sampler_sample(s, logits);
        assert_true(id >= 0 && id < n_vocab);
        seen[id] = true;
    }
}

static void test_sampler_defaults_are_llamacpp(void **state)
{
    (void)state;
    struct sampler_params p;
    sampler_params_default(&p);
    assert_true(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f);
    assert_true(p.repeat_penalty == 1.0f && p.presence_penalty == 0.0f);
    assert_true(p.frequency_penalty == 0.0f && p.penalty_last_n == 64);
    assert_true(p.seed == SAMPLER_SEED_RANDOM);
}

static void test_sampler_greedy_is_argmax(void **state)
{
    (void)state;
    enum { N = 5000 };
    static float l[N];
    uint64_t rs = 1;
    struct sampler_params p;
    sampler_params_default(&p);
    p.temp = 0.0f;
    struct sampler *s;
    assert_int_equal(sampler_new(&p, N, &s), 0);
    for (int rep = 0; rep < 20; rep++) {
        fill_random(l, N, &rs, 10.0f);
        assert_int_equal(sampler_sample(s, l), argmax_lowest(l, N));
    }
    /* Ties go to the lowest id. */
    for (int i = 0; i < N; i++) l[i] = 1.0f;
    l[77] = l[3000] = l[4999] = 2.0f;
    assert_int_equal(sampler_sample(s, l), 77);
    sampler_free(s);
}

static void test_sampler_top_k1_equals_greedy(void **state)
{
    (void)state;
    enum { N = 3000 };
    static float l[N];
    uint64_t rs = 2;
    const float temps[] = {0.1f, 0.8f, 1.0f, 5.0f, 100.0f};
    for (size_t t = 0; t < sizeof temps / sizeof temps[0]; t++) {
        struct sampler_params p = plain_params(temps[t], 1234 + t);
        p.top_k = 1;
        struct sampler *s;
        assert_int_equal(sampler_new(&p, N, &s), 0);
        for (int rep = 0; rep < 10; rep++) {
            fill_random(l, N, &rs, 3.0f);
            if (rep == 5) l[10] = l[20] = 50.0f; /* a tie at the top */
            assert_int_equal(sampler_sample(s, l), argmax_lowest(l, N));
        }
        sampler_free(s);
    }
}

static void test_sampler_same_seed_same_sequence(void **state)
{
    (void)state;
    enum { N = 1000, T = 300 };
    static float l[N];
    uint64_t rs = 3;
    fill_random(l, N, &rs, 1.0f);
    int32_t a[T], b[T], c[T];
    struct sampler *s1, *s2, *s3;
    struct sampler_params p = plain_params(1.0f, 42);
    assert_int_equal(sampler_new(&p, N, &s1), 0);
    assert_int_equal(sampler_new(&p, N, &s2), 0);
    p.seed = 43;
    assert_int_equal(sampler_new(&p, N, &s3), 0);
    for (int i = 0; i < T; i++) {
        a[i] = sampler_sample(s1, l);
        b[i] = sampler_sample(s2, l);
        c[i] = sampler_sample(s3, l);
    }
    assert_memory_equal(a, b, sizeof a);
    int n_diff = 0;
    for (int i = 0; i < T; i++) n_diff += a[i] != c[i];
    assert_true(n_diff > T / 2);
    /* reset replays the sequence from the original seed */
    sampler_reset(s1);
    for (int i = 0; i < T; i++) assert_int_equal(sampler_sample(s1, l), a[i]);
    assert_true(sampler_seed(s1) == 42);
    sampler_free(s1);
    sampler_free(s2);
    sampler_free(s3);
}

static void test_sampler_random_seed_from_os(void **state)
{
    (void)state;
    struct sampler_params p = plain_params(1.0f, SAMPLER_SEED_RANDOM);
    struct sampler *s1, *s2;
    assert_int_equal(sampler_new(&p, 10, &s1), 0);
    assert_int_equal(sampler_new(&p, 10, &s2), 0);
    assert_true(sampler_seed(s1) != SAMPLER_SEED_RANDOM);
    assert_true(sampler_seed(s1) != sampler_seed(s2));
    sampler_free(s1);
    sampler_free(s2);
}

/* With a fixed seed the counts are deterministic; they must sit within 5 sigma of the
 * softmax probabilities (a wrong softmax/temperature/draw misses by far more). */
static void check_frequencies(float temp, const double *probs, int n)
{
    enum { DRAWS = 200000 };
    float l[8];
    double want[8], z = 0;
    for (int i = 0; i < n; i++) {
        l[i] = (float)log(probs[i]) + 3.0f;
        want[i] = pow(probs[i], 1.0 / temp);
        z += want[i];
    }
    struct sampler_params p = plain_params(temp, 7);
    struct sampler *s;
    assert_int_equal(sampler_new(&p, n, &s), 0);
    int count[8] = {0};
    for (int i = 0; i < DRAWS; i++) count[sampler_sample(s, l)]++;
    for (int i = 0; i < n; i++) {
        double q = want[i] / z;
        double sigma = sqrt(q * (1 - q) / DRAWS);
        double got = (double)count[i] / DRAWS;
        if (fabs(got - q) > 5 * sigma) fail_msg("id %d: frequency %.5f, expected %.5f", i, got, q);
    }
    sampler_free(s);
}

static void test_sampler_frequencies_match_softmax(void **state)
{
    (void)state;
    const double probs[4] = {0.1, 0.2, 0.3, 0.4};
    check_frequencies(1.0f, probs, 4);
    check_frequencies(2.0f, probs, 4); /* flattens to p^(1/2) */
    check_frequencies(0.5f, probs, 4); /* sharpens to p^2 */
}

/* Hand-made distribution, ids deliberately not in probability order. Temperature 1000
 * after the filters makes the survivors near-uniform, so 2000 draws show the kept set. */
static const float g_probs[6] = {0.05f, 0.30f, 0.01f, 0.50f, 0.04f, 0.10f};
/* sorted: id3 .50, id1 .30, id5 .10, id0 .05, id4 .04, id2 .01 */

static void kept_set(struct sampler_params p, bool *seen)
{
    float l[6];
    for (int i = 0; i < 6; i++) l[i] = logf(g_probs[i]);
    p.temp = 1000.0f;
    p.seed = 99;
    struct sampler *s;
    assert_int_equal(sampler_new(&p, 6, &s), 0);
    draw_set(s, l, 2000, seen, 6);
    sampler_free(s);
}

static void expect_set(const bool *seen, const char *ids)
{
    for (int i = 0; i < 6; i++) {
        bool want = strchr(ids, '0' + i) != NULL;
        if (seen[i] != want)
            fail_msg("id %d: kept %d, expected %d (set %s)", i, seen[i], want, ids);
    }
}

static void test_sampler_top_p_keeps_smallest_prefix(void **state)
{
    (void)state;
    bool seen[6];
    struct sampler_params p = plain_params(1.0f, 1);
    p.top_p = 0.45f; /* .50 alone reaches it */
    kept_set(p, seen);
    expect_set(seen, "3");
    p.top_p = 0.75f; /* .50+.30 */
    kept_set(p, seen);
    expect_set(seen, "31");
    p.top_p = 0.85f; /* .50+.30+.10 */
    kept_set(p, seen);
    expect_set(seen, "315");
    p.top_p = 0.97f; /* + .05 + .04 */
    kept_set(p, seen);
    expect_set(seen, "31504");
    p.top_p = 1.0f; /* disabled */
    kept_set(p, seen);
    expect_set(seen, "315042");
}

static void test_sampler_min_p_keeps_relative_set(void **state)
{
    (void)state;
    bool seen[6];
    struct sampler_params p = plain_params(1.0f, 1);
    p.min_p = 0.15f; /* >= .075 */
    kept_set(p, seen);
    expect_set(seen, "315");
    p.min_p = 0.09f; /* >= .045 */
    kept_set(p, seen);
    expect_set(seen, "3150");
    p.min_p = 0.7f; /* >= .35 */
    kept_set(p, seen);
    expect_set(seen, "3");
    p.min_p = 5.0f; /* nothing qualifies: the best survives */
    kept_set(p, seen);
    expect_set(seen, "3");
}

static void test_sampler_chain_order_top_k_then_top_p_then_min_p(void **state)
{
    (void)state;
    bool seen[6];
    struct sampler_params p = plain_params(1.0f, 1);
    /* top-k 4 leaves .50 .30 .10 .05 (renormalised /0.95); top-p 0.9 then needs
     * .50+.30+.10 = .947 -> 3 kept; min-p 0.25 then drops .10 (< .125). */
    p.top_k = 4;
    p.top_p = 0.9f;
    kept_set(p, seen);
    expect_set(seen, "315");
    p.min_p = 0.25f;
    kept_set(p, seen);
    expect_set(seen, "31");
}

/* The k best by (logit, then lower id) survive top-k; quantised logits make ties at the
 * boundary, so the id order matters too. Drawn at temperature 1000 the survivors are
 * near-uniform, so enough draws show every one of them. */
static void check_top_k(int n, int k, int draws, uint64_t seed)
{
    float *l = malloc((size_t)n * sizeof *l);
    int *order = malloc((size_t)n * sizeof *order);
    bool *seen = malloc((size_t)n), *want = calloc((size_t)n, 1);
    assert_true(l && order && seen && want);
    uint64_t rs = seed;
    for (int i = 0; i < n; i++) {
        l[i] = (float)(int)(40.0f * test_rand_uniform(&rs)) / 4.0f;
        order[i] = i;
    }
    g_sort_logits = l;
    qsort(order, (size_t)n, sizeof order[0], cmp_by_logit);
    for (int i = 0; i < k; i++) want[order[i]] = true;
    struct sampler_params p = plain_params(1000.0f, seed);
    p.top_k = k;
    struct sampler *s;
    assert_int_equal(sampler_new(&p, n, &s), 0);
    draw_set(s, l, draws, seen, n);
    for (int i = 0; i < n; i++)
        if (seen[i] != want[i])
            fail_msg("n %d k %d: id %d kept %d, expected %d", n, k, i, seen[i], want[i]);
    sampler_free(s);
    free(l);
    free(order);
    free(seen);
    free(want);
}

static void test_sampler_top_k_keeps_k_best(void **state)
{
    (void)state;
    check_top_k(8000, 25, 1000, 5); /* k << vocab: the heap pass */
    check_top_k(400, 100, 3000, 6); /* larger k: copy + quickselect */
}

/* Equal logits: ties are ordered by id, so top-p 0.49975 (= 999.5 / 2000, away from a
 * rounding edge) over 2000 equal tokens keeps ids [0, 1000); this also drives top-p past
 * its sorted chunks into the mass-quickselect. */
static void test_sampler_top_p_ties_by_id_large_vocab(void **state)
{
    (void)state;
    enum { N = 2000 };
    static float l[N];
    static bool seen[N];
    for (int i = 0; i < N; i++) l[i] = 0.25f;
    struct sampler_params p = plain_params(1.0f, 17);
    p.top_p = 0.49975f;
    struct sampler *s;
    assert_int_equal(sampler_new(&p, N, &s), 0);
    draw_set(s, l, 6000, seen, N);
    int n_seen = 0;
    for (int i = 0; i < N; i++) {
        if (seen[i]) assert_true(i < 1000);
        n_seen += seen[i];
    }
    assert_true(n_seen > 980); /* ~1000 * (1 - e^-6) = 997.5 */
    sampler_free(s);
}

/* A flat distribution puts the top-p boundary past the sorted chunks, into the
 * mass-quickselect: the kept set must equal the sorted-prefix definition. */
static void test_sampler_top_p_flat_tail_matches_sorted_reference(void **state)
{
    (void)state;
    enum { N = 3000 };
    static float l[N];
    static int order[N];
    static bool seen[N], want[N];
    uint64_t rs = 21;
    for (int i = 0; i < N; i++) {
        l[i] = 2.0f + 2.0f * test_rand_uniform(&rs);
        order[i] = i;
    }
    const float top_p = 0.3f;
    g_sort_logits = l;
    qsort(order, N, sizeof order[0], cmp_by_logit);
    float max = l[order[0]];
    double sum = 0, cum = 0;
    for (int i = 0; i < N; i++) sum += expf(l[i] - max);
    memset(want, 0, sizeof want);
    int n_want = 0;
    for (int i = 0; i < N; i++) {
        want[order[i]] = true;
        n_want++;
        cum += expf(l[order[i]] - max);
        if (cum >= top_p * sum) break;
    }
    assert_true(n_want > 150 && n_want < 700); /* past the 128 sorted */
    struct sampler_params p = plain_params(1000.0f, 5);
    p.top_p = top_p;
    struct sampler *s;
    assert_int_equal(sampler_new(&p, N, &s), 0);
    draw_set(s, l, 25 * n_want, seen, N);
    for (int i = 0; i < N; i++)
        if (seen[i] != want[i])
            fail_msg("id %d (logit %g): kept %d, expected %d", i, l[i], seen[i], want[i]);
    sampler_free(s);
}

static void test_sampler_penalties_change_only_penalised(void **state)
{
    (void)state;
    enum { N = 10 };
    float l[N] = {2.0f, -1.0f, 0.0f, 3.0f, 1.5f, -2.5f, 4.0f, 0.5f, -0.5f, 1.0f};
    float out[N];
    struct sampler_params p = plain_params(0.0f, 1);
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 0.25f;
    p.frequency_penalty = 0.125f;
    p.penalty_last_n = 4;
    struct sampler *s;
    assert_int_equal(sampler_new(&p, N, &s), 0);
    /* window after these: [1, 3, 3, 6] (9 evicted) */
    const int32_t acc[] = {9, 1, 3, 3, 6};
    for (size_t i = 0; i < sizeof acc / sizeof acc[0]; i++) sampler_accept(s, acc[i]);
    sampler_accept(s, -5);   /* ignored */
    sampler_accept(s, N);    /* ignored */
    sampler_apply_penalties(s, l, out);
    for (int i = 0; i < N; i++) {
        float want = l[i];
        if (i == 1) want = -1.0f * 2.0f - (1 * 0.125f + 0.25f);
        if (i == 3) want = 3.0f / 2.0f - (2 * 0.125f + 0.25f);
        if (i == 6) want = 4.0f / 2.0f - (1 * 0.125f + 0.25f);
        if (out[i] != want) fail_msg("id %d: %g, expected %g", i, out[i], want);
    }
    /* Greedy sees the penalised logits: 6 drops to 1.625, so 0 (2.0) wins. */
    assert_int_equal(sampler_sample(s, l), 0);
    sampler_reset(s);
    assert_int_equal(sampler_sample(s, l), 6);
    sampler_apply_penalties(s, l, out);
    assert_memory_equal(out, l, sizeof l);
    sampler_free(s);

    /* -1: the whole history counts; 0: penalties off. */
    p.penalty_last_n = -1;
    assert_int_equal(sampler_new(&p, N, &s), 0);
    for (int i = 0; i < 100; i++) sampler_accept(s, 7);
    sampler_accept(s, 2);
    sampler_apply_penalties(s, l, out);
    assert_true(out[7] == 0.5f / 2.0f - (100 * 0.125f + 0.25f));
    assert_true(out[2] == 0.0f * 2.0f - (0.125f + 0.25f));
    assert_true(out[0] == l[0]);
    sampler_free(s);
    p.penalty_last_n = 0;
    assert_int_equal(sampler_new(&p, N, &s), 0);
    sampler_accept(s, 6);
    sampler_apply_penalties(s, l, out);
    assert_memory_equal(out, l, sizeof l);
    sampler_free(s);
}

static void test_sampler_logprob_matches_top_logprobs(void **state)
{
    (void)state;
    float l[5] = {1.0f, 3.0f, NAN, 3.0f, 0.5f};
    struct sampler_params p = plain_params(1.0f, 1);
    struct sampler *s;
    assert_int_equal(sampler_new(&p, 5, &s), 0);
    int32_t ids[5];
    float lp[5];
    assert_int_equal(sampler_top_logprobs(s, l, 5, ids, lp), 5);
    for (int i = 0; i < 5; i++) assert_true(sampler_logprob(s, l, ids[i]) == lp[i]);
    double z = exp(1.0) + 2 * exp(3.0) + exp(0.5);
    assert_true(fabs(sampler_logprob(s, l, 4) - (0.5 - log(z))) < 1e-5);
    assert_true(sampler_logprob(s, l, 2) == -INFINITY);
    assert_true(sampler_logprob(s, l, 5) == -INFINITY);
    assert_true(sampler_logprob(s, l, -1) == -INFINITY);
    assert_true(sampler_logprob(NULL, l, 0) == -INFINITY);
    sampler_free(s);
}

static void test_sampler_top_logprobs_log_softmax(void **state)
{
    (void)state;
    float l[5] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
    struct sampler_params p = plain_params(1.0f, 1);
    struct sampler *s;
    assert_int_equal(sampler_new(&p, 5, &s), 0);
    int32_t ids[8];
    float lp[8];
    double z = 0;
    for (int i = 0; i < 5; i++) z += exp(l[i]);
    assert_int_equal(sampler_top_logprobs(s, l, 3, ids, lp), 3);
    const int32_t want[3] = {1, 3, 0};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ids[i], want[i]);
        assert_true(fabs(lp[i] - (l[want[i]] - log(z))) < 1e-5);
    }
    assert_int_equal(sampler_top_logprobs(s, l, 8, ids, lp), 5);
    assert_int_equal(ids[4], 2);
    double total = 0;
    for (int i = 0; i < 5; i++) total += exp(lp[i]);
    assert_true(fabs(total - 1.0) < 1e-5);
    assert_int_equal(sampler_top_logprobs(s, l, 0, NULL, NULL), 0);
    assert_int_equal(sampler_top_logprobs(s, l, -1, ids, lp), MESH_EINVAL);
    sampler_free(s);
}

static void test_sampler_hostile_logits(void **state)
{
    (void)state;
    enum { N = 300 };
    float l[N];
    for (int i = 0; i < N; i++) l[i] = NAN;
    l[123] = -5.0f;
    struct sampler_params p;
    sampler_params_default(&p);
    p.seed = 3;
    struct sampler *s;
    assert_int_equal(sampler_new(&p, N, &s), 0);
    for (int i = 0; i < 20; i++) assert_int_equal(sampler_sample(s, l), 123);
    for (int i = 0; i < N; i++) l[i] = -INFINITY;
    for (int i = 0; i < 20; i++) {
        int32_t id = sampler_sample(s, l);
        assert_true(id >= 0 && id < N);
    }
    for (int i = 0; i < N; i++) l[i] = (i % 3) ? INFINITY : NAN;
    for (int i = 0; i < 20; i++) assert_true(sampler_sample(s, l) % 3 != 0);
    int32_t ids[4];
    float lp[4];
    assert_int_equal(sampler_top_logprobs(s, l, 4, ids, lp), 4);
    assert_int_equal(ids[0], 1);
    assert_false(isnan(lp[0]));
    assert_int_equal(sampler_sample(s, NULL), -1);
    sampler_free(s);
    sampler_free(NULL);
}

static void test_sampler_new_rejects_bad_params(void **state)
{
    (void)state;
    struct sampler *s = (struct sampler *)1;
    struct sampler_params p;
    sampler_params_default(&p);
    assert_int_equal(sampler_new(&p, 0, &s), MESH_EINVAL);
    assert_null(s);
    p.temp = NAN;
    assert_int_equal(sampler_new(&p, 10, &s), MESH_EINVAL);
    sampler_params_default(&p);
    p.repeat_penalty = 0.0f;
    assert_int_equal(sampler_new(&p, 10, &s), MESH_EINVAL);
    sampler_params_default(&p);
    p.penalty_last_n = -2;
    assert_int_equal(sampler_new(&p, 10, &s), MESH_EINVAL);
    p.penalty_last_n = SAMPLER_MAX_LAST_N + 1;
    assert_int_equal(sampler_new(&p, 10, &s), MESH_EINVAL);
    assert_int_equal(sampler_new(NULL, 10, &s), MESH_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampler_defaults_are_llamacpp),
        cmocka_unit_test(test_sampler_greedy_is_argmax),
        cmocka_unit_test(test_sampler_top_k1_equals_greedy),
        cmocka_unit_test(test_sampler_same_seed_same_sequence),
        cmocka_unit_test(test_sampler_random_seed_from_os),
        cmocka_unit_test(test_sampler_frequencies_match_softmax),
        cmocka_unit_test(test_sampler_top_p_keeps_smallest_prefix),
        cmocka_unit_test(test_sampler_min_p_keeps_relative_set),
        cmocka_unit_test(test_sampler_chain_order_top_k_then_top_p_then_min_p),
        cmocka_unit_test(test_sampler_top_k_keeps_k_best),
        cmocka_unit_test(test_sampler_top_p_ties_by_id_large_vocab),
        cmocka_unit_test(test_sampler_top_p_flat_tail_matches_sorted_reference),
        cmocka_unit_test(test_sampler_penalties_change_only_penalised),
        cmocka_unit_test(test_sampler_top_logprobs_log_softmax),
        cmocka_unit_test(test_sampler_logprob_matches_top_logprobs),
        cmocka_unit_test(test_sampler_hostile_logits),
        cmocka_unit_test(test_sampler_new_rejects_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
