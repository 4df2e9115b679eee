/* test_node_local.c - node/local.c and node/router.c on stories260K: a request through the
 * node_req handle (text, token ids, logprobs with their texts, ran_on), cancel and release,
 * the refusals (404, 413, 429 with a queue of 0), embeddings of several inputs, and
 * continuation: N greedy tokens in one go equal k tokens then a continuation of those k,
 * for several k, including a cut inside a stop-string candidate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/model.h"
#include "engine/tok.h"
#include "node/local.h"
#include "node/registry.h"
#include "node/router.h"
#include "tests/util/test_util.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROMPT "Once upon a time, there was a little girl named Lily."

static struct registry *new_registry(int n_slots, int queue_cap, int n_ctx)
{
    struct sched_params sp;
    sched_params_default(&sp);
    sp.n_slots = n_slots;
    sp.queue_cap = queue_cap;
    sp.n_ctx = n_ctx;
    sp.n_threads = 1;
    struct registry *reg = NULL;
    char err[256];
    assert_int_equal(registry_new(&sp, &reg), 0);
    assert_int_equal(registry_add(reg, test_model_path("stories260K.gguf"), err, sizeof err), 0);
    assert_int_equal(registry_load_wait(reg), 0);
    return reg;
}

static const struct tok *reg_tok(struct registry *reg)
{
    enum registry_state st;
    struct registry_entry *e = registry_find(reg, "stories260K", &st);
    assert_non_null(e);
    assert_int_equal(st, REGISTRY_READY);
    return model_tok(e->model);
}

/* A greedy raw completion of PROMPT (strings borrowed: nothing to free but cont_ids). */
static void completion(struct node_gen_req *r, int max_tokens)
{
    node_gen_req_init(r);
    r->kind = NODE_KIND_COMPLETION;
    r->model = "stories260K";
    r->prompt = PROMPT;
    r->raw = true;
    r->temperature = 0;
    r->max_tokens = max_tokens;
}

/* Everything a request produced. */
struct result {
    char text[16384];
    size_t len;
    int32_t ids[2048];
    int n_ids;
    struct node_lp lps[64];
    int n_lps;
    const char *finish;
    int n_prompt, n_gen;
    enum node_fail fail;
    float *embd;
    int n_embd, n_vecs;
};

static void result_add(struct result *res, struct node_chunk *ch)
{
    assert_true(res->len + ch->len < sizeof res->text);
    if (ch->len) memcpy(res->text + res->len, ch->text, ch->len);
    res->len += ch->len;
    if (ch->n_cuts) assert_int_equal(ch->cuts[ch->n_cuts - 1], ch->len);
    for (int i = 0; i < ch->n_ids && res->n_ids < 2048; i++) res->ids[res->n_ids++] = ch->ids[i];
    for (int i = 0; i < ch->n_lps && res->n_lps < 64; i++) res->lps[res->n_lps++] = ch->lps[i];
    res->n_prompt = ch->n_prompt;
    res->n_gen = ch->n_gen;
    if (ch->done) {
        res->finish = ch->finish_reason;
        res->fail = ch->fail;
        res->embd = ch->embd;
        res->n_embd = ch->n_embd;
        res->n_vecs = ch->n_vecs;
        ch->embd = NULL;
    }
}

/* Polls r until done (the notify path is tested by the continuation test). */
static void drain(struct node_req *r, struct result *res)
{
    memset(res, 0, sizeof *res);
    for (int spins = 0; spins < 400000; spins++) {
        struct node_chunk ch;
        assert_int_equal(node_req_take(r, &ch), 0);
        result_add(res, &ch);
        bool done = ch.done;
        node_chunk_free(&ch);
        if (done) return;
        usleep(100);
    }
    fail_msg("request did not finish");
}

static struct node_req *submit_ok(struct registry *reg, const struct node_gen_req *q)
{
    struct node_req *r = NULL;
    struct node_error e;
    int rc = node_local_submit(reg, q, NULL, &r, &e);
    if (rc) fail_msg("submit: %d %s", e.status, e.message);
    assert_non_null(r);
    return r;
}

static void test_node_local_generate_ids_logprobs(void **state)
{
    (void)state;
    struct registry *reg = new_registry(2, 4, 256);
    const struct tok *t = reg_tok(reg);
    struct node_gen_req q;
    completion(&q, 24);
    q.n_logprobs = 3;
    struct node_req *r = submit_ok(reg, &q);
    char where[NODE_RAN_ON_CAP];
    node_req_ran_on(r, where, sizeof where);
    assert_string_equal(where, "local");
    struct result *res = calloc(1, sizeof *res);
    drain(r, res);
    node_req_release(r);
    assert_string_equal(res->finish, "length");
    assert_int_equal(res->n_gen, 24);
    assert_int_equal(res->n_ids, 24);
    assert_int_equal(res->n_lps, 24);
    assert_true(res->len > 0);
    /* the ids are the tokens of the text */
    char dec[4096];
    int n = tok_decode(t, res->ids, res->n_ids, false, false, dec, sizeof dec);
    assert_int_equal(n, (int)res->len);
    assert_memory_equal(dec, res->text, res->len);
    int32_t pids[256];
    int n_p = 0;
    assert_int_equal(tok_encode(t, PROMPT, strlen(PROMPT), true, true, pids, 256, &n_p), 0);
    assert_int_equal(res->n_prompt, n_p);
    for (int i = 0; i < res->n_lps; i++) {
        const struct node_lp *lp = &res->lps[i];
        assert_int_equal(lp->id, res->ids[i]);
        char piece[64];
        int pl = tok_piece(t, lp->id, false, piece, sizeof piece);
        assert_int_equal(lp->tok.len, pl);
        assert_memory_equal(lp->tok.text, piece, (size_t)pl);
        assert_true(lp->tok.logprob <= 0 && isfinite(lp->tok.logprob));
        /* greedy: the chosen token is the most likely one, with the same value */
        assert_int_equal(lp->n_top, 3);
        assert_int_equal(lp->top[0].len, lp->tok.len);
        assert_memory_equal(lp->top[0].text, lp->tok.text, (size_t)lp->tok.len);
        assert_true(fabsf(lp->top[0].logprob - lp->tok.logprob) < 1e-6f);
        assert_true(lp->top[1].logprob <= lp->top[0].logprob);
        assert_true(lp->top[2].logprob <= lp->top[1].logprob);
    }
    free(res);
    registry_free(reg);
}

static void test_node_local_refusals(void **state)
{
    (void)state;
    struct registry *reg = new_registry(1, 0, 64);
    struct node_gen_req q;
    struct node_req *r = NULL;
    struct node_error e;
    completion(&q, 8);
    q.model = "no-such-model";
    assert_int_equal(node_local_submit(reg, &q, NULL, &r, &e), MESH_ENOTFOUND);
    assert_null(r);
    assert_int_equal(e.status, 404);
    assert_string_equal(e.code, "model_not_found");
    assert_string_equal(e.message, "The model 'no-such-model' does not exist on this node.");
    /* 413: prompt + max_tokens beyond the context when they must fit, not otherwise */
    completion(&q, 100);
    q.max_tokens_must_fit = true;
    assert_int_equal(node_local_submit(reg, &q, NULL, &r, &e), MESH_ERANGE);
    assert_int_equal(e.status, 413);
    assert_string_equal(e.code, "context_length_exceeded");
    assert_non_null(strstr(e.message, "maximum context length is 64 tokens. However, you "
                                      "requested"));
    assert_non_null(strstr(e.message, "100 for the completion)."));
    q.max_tokens_must_fit = false;
    q.max_tokens = 1;
    r = submit_ok(reg, &q);
    struct result *res = calloc(1, sizeof *res);
    drain(r, res);
    node_req_release(r);
    assert_string_equal(res->finish, "length");
    char long_prompt[2048] = "";
    for (int i = 0; i < 20; i++) strcat(long_prompt, "the cat sat on the mat. ");
    q.prompt = long_prompt;
    assert_int_equal(node_local_submit(reg, &q, NULL, &r, &e), MESH_ERANGE);
    assert_int_equal(e.status, 413);
    /* 429: one slot, a queue of 0 - the second request finds no room */
    completion(&q, 60);
    struct node_req *a = submit_ok(reg, &q);
    assert_int_equal(node_local_submit(reg, &q, NULL, &r, &e), MESH_EFULL);
    assert_int_equal(e.status, 429);
    assert_string_equal(e.code, "rate_limit_exceeded");
    assert_string_equal(e.type, "rate_limit_error");
    assert_int_equal(e.retry_after_s, 1);
    /* cancel: ends "cancelled" before its 60 tokens */
    node_req_cancel(a);
    drain(a, res);
    node_req_release(a);
    assert_string_equal(res->finish, "cancelled");
    assert_true(res->n_gen < 60);
    /* a released request frees its slot: the next one runs */
    a = submit_ok(reg, &q);
    node_req_release(a);
    q.max_tokens = 2;
    for (int tries = 0; tries < 2000; tries++) {
        if (node_local_submit(reg, &q, NULL, &a, &e) == 0) break;
        assert_int_equal(e.status, 429);
        usleep(1000);
    }
    assert_non_null(a);
    drain(a, res);
    node_req_release(a);
    assert_string_equal(res->finish, "length");
    /* shutting down: 503 */
    registry_stop(reg);
    assert_int_equal(node_local_submit(reg, &q, NULL, &a, &e), MESH_ECLOSED);
    assert_int_equal(e.status, 503);
    assert_string_equal(e.code, "shutting_down");
    free(res);
    registry_free(reg);
}

static void test_node_local_embeddings_two_inputs(void **state)
{
    (void)state;
    struct registry *reg = new_registry(2, 4, 256);
    const struct tok *t = reg_tok(reg);
    char *in[2] = {"The dog ran to the park.", "Lily liked to play with her red ball."};
    struct node_gen_req q;
    node_gen_req_init(&q);
    q.kind = NODE_KIND_EMBEDDING;
    q.model = "stories260K";
    q.inputs = in;
    q.n_inputs = 2;
    struct result *two = calloc(1, sizeof *two), *one = calloc(1, sizeof *one);
    struct node_req *r = submit_ok(reg, &q);
    drain(r, two);
    node_req_release(r);
    assert_string_equal(two->finish, "stop");
    assert_int_equal(two->n_vecs, 2);
    assert_int_equal(two->n_embd, 64);
    int n_tok = 0;
    for (int k = 0; k < 2; k++) {
        int32_t ids[128];
        int n = 0;
        assert_int_equal(tok_encode(t, in[k], strlen(in[k]), true, true, ids, 128, &n), 0);
        n_tok += n;
        double norm = 0;
        for (int j = 0; j < 64; j++) norm += (double)two->embd[k * 64 + j] * two->embd[k * 64 + j];
        assert_true(fabs(norm - 1.0) < 1e-4);
    }
    assert_int_equal(two->n_prompt, n_tok);
    assert_true(memcmp(two->embd, two->embd + 64, 64 * sizeof(float)) != 0);
    /* the second vector is the second input's own embedding */
    q.inputs = in + 1;
    q.n_inputs = 1;
    r = submit_ok(reg, &q);
    drain(r, one);
    node_req_release(r);
    assert_int_equal(one->n_vecs, 1);
    for (int j = 0; j < 64; j++) assert_true(fabsf(one->embd[j] - two->embd[64 + j]) < 1e-5f);
    free(two->embd);
    free(one->embd);
    free(two);
    free(one);
    registry_free(reg);
}

/* A client that takes on every notify (the scheduler notifies once per token), so it knows
 * how much text had been shown after each token: what a client of a peer that died there
 * would have received. */
struct watcher {
    pthread_mutex_t mu;
    struct node_req *r;
    struct result res;
    size_t shown_after[2049]; /* text bytes shown once the first i tokens were generated */
    bool done;
};

static void watcher_notify(void *arg)
{
    struct watcher *w = arg;
    pthread_mutex_lock(&w->mu); /* held by the submitter until w->r is set */
    struct node_chunk ch;
    if (w->r && !w->done && node_req_take(w->r, &ch) == 0) {
        result_add(&w->res, &ch);
        if (w->res.n_ids <= 2048) w->shown_after[w->res.n_ids] = w->res.len;
        w->done = ch.done;
        node_chunk_free(&ch);
    }
    pthread_mutex_unlock(&w->mu);
}

static void watch(struct registry *reg, const struct node_gen_req *q, struct watcher *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    struct node_client cl = {.notify = watcher_notify, .arg = w};
    struct node_error e;
    pthread_mutex_lock(&w->mu);
    int rc = node_local_submit(reg, q, &cl, &w->r, &e);
    pthread_mutex_unlock(&w->mu);
    if (rc) fail_msg("submit: %s", e.message);
    for (int spins = 0; spins < 200000; spins++) {
        pthread_mutex_lock(&w->mu);
        bool done = w->done;
        pthread_mutex_unlock(&w->mu);
        if (done) break;
        usleep(100);
    }
    assert_true(w->done);
    node_req_release(w->r);
    pthread_mutex_destroy(&w->mu);
}

/* One run of n tokens against continuations after k of them: same text, same ids. */
static void check_continuations(struct registry *reg, const char *stop, const int *ks, int n_ks,
                                struct watcher *full, struct watcher *part)
{
    const int N = 40;
    struct node_gen_req q;
    completion(&q, N);
    if (stop) {
        q.stop[0] = (char *)stop;
        q.n_stop = 1;
    }
    watch(reg, &q, full);
    assert_string_equal(full->res.finish, "length");
    assert_int_equal(full->res.n_ids, N);
    assert_int_equal(full->res.n_gen, N);
    for (int i = 0; i < n_ks; i++) {
        int k = ks[i];
        completion(&q, N);
        if (stop) {
            q.stop[0] = (char *)stop;
            q.n_stop = 1;
        }
        q.cont_ids = full->res.ids;
        q.n_cont = k;
        watch(reg, &q, part);
        size_t shown = full->shown_after[k];
        assert_string_equal(part->res.finish, "length");
        assert_int_equal(part->res.n_gen, N); /* continuation tokens count as generated */
        assert_int_equal(part->res.n_ids, N - k);
        assert_memory_equal(part->res.ids, full->res.ids + k, (size_t)(N - k) * sizeof(int32_t));
        assert_int_equal(shown + part->res.len, full->res.len);
        assert_memory_equal(part->res.text, full->res.text + shown, part->res.len);
        assert_int_equal(part->res.n_prompt, full->res.n_prompt); /* the client's prompt */
    }
}

static void test_node_local_continuation_equals_one_run(void **state)
{
    (void)state;
    struct registry *reg = new_registry(2, 4, 256);
    const struct tok *t = reg_tok(reg);
    struct watcher *full = calloc(1, sizeof *full), *part = calloc(1, sizeof *part);
    const int ks[] = {1, 2, 7, 20, 39};
    check_continuations(reg, NULL, ks, 5, full, part);
    /* A stop-string candidate across a token boundary: the text of the first k tokens ends
     * with the stop string's first bytes, so they are held back at the cut. The string can
     * never complete (\x01 is not in the text), so the text stays the same. */
    int k = 20;
    char head[4096];
    int b = tok_decode(t, full->res.ids, k, false, false, head, sizeof head);
    assert_true(b >= 2 && (size_t)b < full->res.len);
    char stop[8] = {head[b - 2], head[b - 1], full->res.text[b], '\x01', 0};
    char plain[16384];
    size_t plain_len = full->res.len;
    memcpy(plain, full->res.text, plain_len);
    const int ks_stop[] = {k, k + 1};
    check_continuations(reg, stop, ks_stop, 2, full, part);
    assert_int_equal(full->res.len, plain_len);
    assert_memory_equal(full->res.text, plain, plain_len);
    assert_true(full->shown_after[k] <= (size_t)b - 2); /* the cut was inside the candidate */
    free(full);
    free(part);
    registry_free(reg);
}

static void test_node_router_local_only(void **state)
{
    (void)state;
    struct registry *reg = new_registry(1, 4, 256);
    struct router_config cfg = {.reg = reg};
    struct router *rt = NULL;
    assert_int_equal(router_new(&cfg, &rt), 0);
    assert_int_equal(router_default_route(rt), NODE_ROUTE_LOCAL);
    struct router_model ms[4];
    assert_int_equal(router_models(rt, ms, 4), 1);
    assert_string_equal(ms[0].name, "stories260K");
    assert_true(ms[0].is_local);
    assert_int_equal(ms[0].state, ROUTER_READY);
    assert_true(ms[0].file_bytes > 1000000);
    assert_true(ms[0].has_stats);
    assert_int_equal(ms[0].n_ctx, 256);
    assert_string_equal(ms[0].arch, "llama");
    struct router_model m;
    assert_int_equal(router_model_get(rt, "stories260K:latest", &m), 0);
    assert_string_equal(m.name, "stories260K");
    assert_int_equal(router_model_get(rt, "nope", &m), MESH_ENOTFOUND);
    struct node_gen_req q;
    completion(&q, 5);
    struct node_req *r = NULL;
    struct node_error e;
    assert_int_equal(router_submit(rt, &q, NULL, &r, &e), 0);
    struct result *res = calloc(1, sizeof *res);
    drain(r, res);
    node_req_release(r);
    assert_int_equal(res->n_gen, 5);
    router_stop(rt);
    assert_int_equal(router_submit(rt, &q, NULL, &r, &e), MESH_ECLOSED);
    assert_int_equal(e.status, 503);
    assert_int_equal(router_models(rt, ms, 4), 1);
    assert_false(ms[0].has_stats); /* the schedulers are gone */
    free(res);
    router_free(rt);
    registry_free(reg);
}

static void test_node_req_copy_and_routes(void **state)
{
    (void)state;
    struct node_gen_req a, b;
    node_gen_req_init(&a);
    assert_int_equal(a.n_logprobs, -1);
    assert_true(a.temperature == 1.0f);
    a.kind = NODE_KIND_CHAT;
    a.model = strdup("m");
    a.msgs = calloc(1, sizeof *a.msgs);
    a.msgs[0].role = strdup("user");
    a.msgs[0].content = strdup("hi");
    a.n_msgs = 1;
    a.stop[0] = strdup("END");
    a.n_stop = 1;
    a.cont_ids = malloc(2 * sizeof *a.cont_ids);
    a.cont_ids[0] = 5;
    a.cont_ids[1] = 7;
    a.n_cont = 2;
    assert_int_equal(node_gen_req_copy(&b, &a), 0);
    assert_ptr_not_equal(b.model, a.model);
    assert_string_equal(b.msgs[0].content, "hi");
    assert_string_equal(b.stop[0], "END");
    assert_int_equal(b.cont_ids[1], 7);
    node_gen_req_free(&a);
    assert_string_equal(b.msgs[0].role, "user"); /* deep: survives the original */
    node_gen_req_free(&b);
    enum node_route r;
    assert_int_equal(node_route_parse("own", &r), 0);
    assert_int_equal(r, NODE_ROUTE_OWN);
    assert_string_equal(node_route_name(NODE_ROUTE_MESH), "mesh");
    assert_int_equal(node_route_parse("everywhere", &r), MESH_EINVAL);
    struct node_error e;
    assert_int_equal(node_error_set(&e, 400, "invalid_request_error", NULL, "x", "bad %d", 3),
                     MESH_EINVAL);
    assert_string_equal(e.message, "bad 3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_local_generate_ids_logprobs),
        cmocka_unit_test(test_node_local_refusals),
        cmocka_unit_test(test_node_local_embeddings_two_inputs),
        cmocka_unit_test(test_node_local_continuation_equals_one_run),
        cmocka_unit_test(test_node_router_local_only),
        cmocka_unit_test(test_node_req_copy_and_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
