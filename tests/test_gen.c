/* test_gen.c - engine/gen.h's per-token step on stories260K's tokenizer: sampling with NaN
 * logits and the sampler's logprobs, EOG, stop strings across tokens, the end-of-text
 * flush, and replay (continuation): pushing k tokens unseen then the rest shows exactly the
 * text an uninterrupted run shows after token k, even when the cut splits a UTF-8 character
 * or a stop-string candidate. gen_run itself is covered token-for-token by test_model.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/gen.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tok.h"
#include "tests/util/test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture {
    struct model *m;
    const struct tok *t;
    int n_vocab;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    char err[256];
    struct model_load_opts lo = {0};
    if (model_load(test_model_path("stories260K.gguf"), &lo, &f->m, err, sizeof err)) {
        fprintf(stderr, "load: %s\n", err);
        free(f);
        return -1;
    }
    f->t = model_tok(f->m);
    f->n_vocab = tok_n_vocab(f->t);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    model_free(f->m);
    free(f);
    return 0;
}

static struct sampler *greedy(int n_vocab)
{
    struct sampler_params p;
    sampler_params_default(&p);
    p.temp = 0;
    struct sampler *s = NULL;
    assert_int_equal(sampler_new(&p, n_vocab, &s), 0);
    return s;
}

/* Byte token for byte b (stories260K: <0x00>.. at 3..258). */
static int32_t byte_tok(const struct tok *t, unsigned b)
{
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    int32_t id = tok_find(t, name, strlen(name));
    assert_true(id >= 0);
    return id;
}

/* Text shown so far by pushing ids into a fresh sequence; optional finish. */
struct shown {
    char text[1024];
    size_t len;
    size_t after[64]; /* bytes shown once the first i ids were pushed */
};

static int shown_add(void *user, const char *text, int len)
{
    struct shown *sh = user;
    if (len <= 0) return 0; /* a step that shows nothing has no text pointer */
    memcpy(sh->text + sh->len, text, (size_t)len);
    sh->len += (size_t)len;
    return 0;
}

static void push_all(const struct fixture *f, const char *stop, const int32_t *ids, int n,
                     int replay_k, struct shown *sh)
{
    memset(sh, 0, sizeof *sh);
    struct sampler *s = greedy(f->n_vocab);
    struct gen_seq g;
    const char *stops[1] = {stop};
    struct gen_seq_opts o = {.stops = stop ? stops : NULL, .n_stops = stop ? 1 : 0,
                             .n_logprobs = -1};
    assert_int_equal(gen_seq_init(&g, f->t, s, &o), 0);
    int end = -1;
    assert_int_equal(gen_seq_replay(&g, ids, replay_k, &end), 0);
    assert_int_equal(end, 0);
    assert_int_equal(g.n_gen, replay_k);
    for (int i = replay_k; i < n; i++) {
        struct gen_tok tk;
        assert_int_equal(gen_seq_push(&g, ids[i], &tk), 0);
        assert_false(tk.is_eog);
        shown_add(sh, tk.text, (int)tk.len);
        sh->after[i + 1] = sh->len;
    }
    assert_true(gen_seq_finish(&g, shown_add, sh) >= 0);
    gen_seq_free(&g);
    sampler_free(s);
}

static void test_gen_replay_cut_utf8_and_stop(void **state)
{
    struct fixture *f = *state;
    const struct tok *t = f->t;
    /* "é" (C3 A9) split over two byte tokens between words, then "€" (E2 82 AC) */
    int32_t ids[16];
    int n = 0;
    assert_int_equal(tok_encode(t, "Hi the", 6, false, false, ids, 16, &n), 0);
    ids[n++] = byte_tok(t, 0xC3);
    ids[n++] = byte_tok(t, 0xA9);
    int32_t tail[8];
    int nt = 0;
    assert_int_equal(tok_encode(t, " cat", 4, false, false, tail, 8, &nt), 0);
    for (int i = 0; i < nt; i++) ids[n++] = tail[i];
    ids[n++] = byte_tok(t, 0xE2);
    ids[n++] = byte_tok(t, 0x82);
    ids[n++] = byte_tok(t, 0xAC);
    /* "cat\x01" never completes; "é c" holds while it may */
    const char *stops[] = {NULL, "cat\x01", "\xC3\xA9 c!"};
    for (int si = 0; si < 3; si++) {
        struct shown whole, part;
        push_all(f, stops[si], ids, n, 0, &whole);
        assert_non_null(memmem(whole.text, whole.len, "\xC3\xA9", 2));
        assert_non_null(memmem(whole.text, whole.len, "\xE2\x82\xAC", 3));
        for (int k = 1; k < n; k++) {
            push_all(f, stops[si], ids, n, k, &part);
            /* what the client saw after k tokens, then the continuation: the whole text */
            size_t seen = whole.after[k];
            assert_int_equal(seen + part.len, whole.len);
            assert_memory_equal(part.text, whole.text + seen, part.len);
        }
    }
    /* the cut after C3 shows nothing of the character, the one after A9 shows "é" - unless
     * "é" may begin a stop string: then it is held too */
    struct shown whole;
    push_all(f, NULL, ids, n, 0, &whole);
    int kc3 = n - nt - 4; /* ids[kc3 - 1] is <0xC3> */
    assert_int_equal(whole.after[kc3], whole.after[kc3 - 1]);
    assert_int_equal(whole.after[kc3 + 1], whole.after[kc3 - 1] + 2);
    push_all(f, stops[2], ids, n, 0, &whole);
    assert_int_equal(whole.after[kc3 + 1], whole.after[kc3 - 1]);
}

static void test_gen_step_nan_logits_and_logprobs(void **state)
{
    struct fixture *f = *state;
    float *l = malloc((size_t)f->n_vocab * sizeof *l);
    for (int i = 0; i < f->n_vocab; i++) l[i] = -5.0f + 0.001f * (float)i;
    int32_t best = 300; /* a merged (normal) token */
    assert_false(tok_is_eog(f->t, best));
    l[best] = 4.0f;
    l[best + 1] = NAN; /* never chosen, never in the top list */
    l[7] = 3.0f;
    struct sampler *s = greedy(f->n_vocab);
    struct gen_seq g;
    struct gen_seq_opts o = {.n_logprobs = 2};
    assert_int_equal(gen_seq_init(&g, f->t, s, &o), 0);
    struct gen_tok tk;
    assert_int_equal(gen_step(&g, l, &tk), 0);
    assert_int_equal(tk.id, best);
    assert_false(tk.is_eog);
    assert_true(tk.has_lp);
    assert_int_equal(tk.lp.n_top, 2);
    assert_int_equal(tk.lp.top_id[0], best);
    assert_int_equal(tk.lp.top_id[1], 7);
    assert_true(isfinite(tk.lp.logprob) && tk.lp.logprob < 0);
    assert_true(fabsf(tk.lp.top_lp[0] - tk.lp.logprob) < 1e-6f);
    /* log-softmax with NaN as -inf: exp(4 - lse) by hand */
    double z = 0;
    for (int i = 0; i < f->n_vocab; i++)
        if (!isnan(l[i])) z += exp((double)l[i]);
    assert_true(fabs(tk.lp.logprob - (4.0 - log(z))) < 1e-4);
    assert_true(fabs(tk.lp.top_lp[1] - (3.0 - log(z))) < 1e-4);
    assert_int_equal(g.n_gen, 1);
    /* EOG: no text, not counted, no logprobs */
    l[tok_eos(f->t)] = 100.0f;
    assert_int_equal(gen_step(&g, l, &tk), 0);
    assert_true(tk.is_eog);
    assert_false(tk.has_lp);
    assert_int_equal(tk.len, 0);
    assert_int_equal(g.n_gen, 1);
    assert_true(sampler_logprob(s, l, best + 1) == -INFINITY);
    assert_true(sampler_logprob(s, l, f->n_vocab) == -INFINITY);
    gen_seq_free(&g);
    sampler_free(s);
    free(l);
}

static void test_gen_stop_across_tokens_and_flush(void **state)
{
    struct fixture *f = *state;
    int32_t ids[32];
    int n = 0;
    const char *text = "the cat sat on the mat";
    assert_int_equal(tok_encode(f->t, text, strlen(text), false, false, ids, 32, &n), 0);
    assert_true(n >= 4);
    /* "t on" spans tokens: the text stops right before it, and nothing is shown after */
    struct shown sh;
    push_all(f, "t on", ids, n, 0, &sh);
    sh.text[sh.len] = 0;
    assert_string_equal(sh.text, " the cat sa"); /* SPM's leading space kept: not stripped */
    /* no match: the held "ma" of "mat!" is released by the flush */
    push_all(f, "mat!", ids, n, 0, &sh);
    sh.text[sh.len] = 0;
    assert_string_equal(sh.text, " the cat sat on the mat");
    assert_true(sh.after[n] < sh.len); /* it was held until the end */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gen_step_nan_logits_and_logprobs),
        cmocka_unit_test(test_gen_stop_across_tokens_and_flush),
        cmocka_unit_test(test_gen_replay_cut_utf8_and_stop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
