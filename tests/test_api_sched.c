/* test_api_sched.c - node/sched (continuous batching) and node/registry on stories260K:
 * greedy ids equal llama.cpp's reference, batched requests equal the same requests alone,
 * KV prefix reuse gives the same output, queue back-pressure, cancellation, stop strings,
 * context limits, embeddings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/model.h"
#include "engine/tok.h"
#include "node/registry.h"
#include "node/sched.h"
#include "tests/util/test_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

struct fixture {
    struct model *m;
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

static struct sched *new_sched(const struct model *m, int n_slots, int queue_cap, int n_ctx)
{
    struct sched_params p;
    sched_params_default(&p);
    p.n_slots = n_slots;
    p.queue_cap = queue_cap;
    p.n_ctx = n_ctx;
    p.n_threads = 1;
    struct sched *s = NULL;
    char err[256];
    assert_int_equal(sched_new(m, &p, &s, err, sizeof err), 0);
    return s;
}

static int encode(const struct model *m, const char *text, int32_t *ids, int cap)
{
    int n = 0;
    assert_int_equal(tok_encode(model_tok(m), text, strlen(text), true, false, ids, cap, &n), 0);
    return n;
}

/* Result of one finished request: text, ids (from logprobs), finish reason. */
struct result {
    char text[8192];
    size_t len;
    int32_t ids[2048];
    int n_ids;
    const char *finish;
    int n_cached;
};

/* Drains r until it is done (polling; the notify callback is tested through the API). */
static void wait_done(struct sched_req *r, struct result *res)
{
    memset(res, 0, sizeof *res);
    for (int spins = 0; spins < 200000; spins++) {
        struct sched_chunk ch;
        assert_int_equal(sched_req_take(r, &ch), 0);
        if (ch.len) {
            assert_true(res->len + ch.len < sizeof res->text);
            memcpy(res->text + res->len, ch.text, ch.len);
            res->len += ch.len;
        }
        for (int i = 0; i < ch.n_lps && res->n_ids < 2048; i++) res->ids[res->n_ids++] = ch.lps[i].id;
        bool done = ch.done;
        res->finish = ch.finish_reason;
        res->n_cached = ch.n_cached;
        sched_chunk_free(&ch);
        if (done) return;
        usleep(200);
    }
    fail_msg("request did not finish");
}

static struct sched_req *submit(struct sched *s, const int32_t *ids, int n, int max_tokens,
                                const char *stop)
{
    struct sched_gen_params gp;
    sched_gen_params_default(&gp);
    gp.sp.temp = 0;
    gp.max_tokens = max_tokens;
    gp.n_logprobs = 0; /* ids come back with the logprobs */
    if (stop) {
        gp.stop[0] = stop;
        gp.n_stop = 1;
    }
    struct sched_req *r = NULL;
    assert_int_equal(sched_submit_gen(s, ids, n, &gp, NULL, NULL, &r), 0);
    return r;
}

static void test_api_sched_greedy_matches_llamacpp(void **state)
{
    struct fixture *f = *state;
    size_t len;
    char *js = test_read_file(test_model_path("reference/stories260K.llamacpp-greedy.json"), &len);
    assert_non_null(js);
    cJSON *root = cJSON_Parse(js);
    cJSON *runs = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "variants"), 0), "runs");
    cJSON *run = NULL, *it;
    cJSON_ArrayForEach(it, runs)
        if (!strcmp(cJSON_GetObjectItem(it, "prompt")->valuestring, "Once upon a time")) run = it;
    assert_non_null(run);
    int32_t prompt[64];
    int n = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(run, "prompt_ids")) prompt[n++] = (int32_t)it->valueint;
    cJSON *gen = cJSON_GetObjectItem(run, "generated_ids");
    int n_gen = cJSON_GetArraySize(gen);

    struct sched *s = new_sched(f->m, 4, 8, 0);
    struct sched_req *r = submit(s, prompt, n, n_gen, NULL);
    struct result res;
    wait_done(r, &res);
    sched_req_release(r);
    assert_int_equal(res.n_ids, n_gen);
    for (int i = 0; i < n_gen; i++) assert_int_equal(res.ids[i], cJSON_GetArrayItem(gen, i)->valueint);
    assert_string_equal(res.finish, "length");
    sched_free(s);
    cJSON_Delete(root);
    free(js);
}

static void test_api_sched_batched_equals_alone(void **state)
{
    struct fixture *f = *state;
    static const char *prompts[] = {"Once upon a time", "The little dog", "Lily and Tom went",
                                    "One day, a bird", "The sun was", "Sam had a red ball"};
    enum { N = 6 };
    static struct result alone[N], together[N];
    int32_t ids[N][64];
    int n[N];
    struct sched *s = new_sched(f->m, 8, 16, 0);
    for (int i = 0; i < N; i++) {
        n[i] = encode(f->m, prompts[i], ids[i], 64);
        struct sched_req *r = submit(s, ids[i], n[i], 40, NULL);
        wait_done(r, &alone[i]);
        sched_req_release(r);
    }
    sched_free(s);
    /* A fresh scheduler (no cached prefixes) with all requests at once. */
    s = new_sched(f->m, 8, 16, 0);
    struct sched_req *rs[N];
    for (int i = 0; i < N; i++) rs[i] = submit(s, ids[i], n[i], 40, NULL);
    for (int i = 0; i < N; i++) {
        wait_done(rs[i], &together[i]);
        sched_req_release(rs[i]);
        assert_int_equal(together[i].n_ids, alone[i].n_ids);
        assert_memory_equal(together[i].ids, alone[i].ids, (size_t)alone[i].n_ids * sizeof(int32_t));
        assert_int_equal(together[i].len, alone[i].len);
        assert_memory_equal(together[i].text, alone[i].text, alone[i].len);
    }
    struct sched_stats st;
    sched_stats(s, &st);
    assert_int_equal(st.n_requests, N);
    assert_int_equal(st.n_gen_tokens, N * 40);
    assert_int_equal(st.n_active, 0);
    sched_free(s);
}

static void test_api_sched_prefix_reuse_same_output(void **state)
{
    struct fixture *f = *state;
    int32_t a[128], b[128];
    int na = encode(f->m, "Once upon a time, there was a little girl named Lily.", a, 128);
    int nb = encode(f->m, "Once upon a time, there was a little girl named Lily. She loved", b, 128);
    struct result fresh, first, reused;
    struct sched *s = new_sched(f->m, 1, 4, 0);
    struct sched_req *r = submit(s, b, nb, 30, NULL);
    wait_done(r, &fresh);
    sched_req_release(r);
    sched_free(s);

    s = new_sched(f->m, 1, 4, 0);
    r = submit(s, a, na, 5, NULL);
    wait_done(r, &first);
    sched_req_release(r);
    assert_int_equal(first.n_cached, 0);
    r = submit(s, b, nb, 30, NULL);
    wait_done(r, &reused);
    sched_req_release(r);
    /* the whole first prompt was kept (and the generated tokens that match b's next ones) */
    assert_true(reused.n_cached >= na);
    int cached1 = reused.n_cached;
    assert_int_equal(reused.n_ids, fresh.n_ids);
    assert_memory_equal(reused.ids, fresh.ids, (size_t)fresh.n_ids * sizeof(int32_t));
    /* the same prompt again: everything but the last token is reused */
    r = submit(s, b, nb, 30, NULL);
    wait_done(r, &reused);
    sched_req_release(r);
    assert_int_equal(reused.n_cached, nb - 1);
    assert_memory_equal(reused.ids, fresh.ids, (size_t)fresh.n_ids * sizeof(int32_t));
    struct sched_stats st;
    sched_stats(s, &st);
    assert_int_equal(st.n_cached_tokens, (uint64_t)(cached1 + nb - 1));
    sched_free(s);
}

static void test_api_sched_queue_full_and_cancel(void **state)
{
    struct fixture *f = *state;
    int32_t ids[64];
    int n = encode(f->m, "Once upon a time", ids, 64);
    struct sched *s = new_sched(f->m, 1, 0, 0);
    struct sched_req *a = submit(s, ids, n, 1500, NULL);
    struct sched_gen_params gp;
    sched_gen_params_default(&gp);
    struct sched_req *b = NULL;
    /* one slot, no waiting room: a second request is refused while the first runs */
    assert_int_equal(sched_submit_gen(s, ids, n, &gp, NULL, NULL, &b), MESH_EFULL);
    assert_null(b);
    sched_req_release(a); /* the client goes away: cancelled at the next step */
    struct sched_stats st;
    for (int i = 0; i < 5000; i++) {
        sched_stats(s, &st);
        if (st.n_active == 0 && st.n_queued == 0 && st.n_cancelled == 1) break;
        usleep(1000);
    }
    assert_int_equal(st.n_active, 0);
    assert_int_equal(st.n_rejected, 1);
    assert_true(st.n_gen_tokens < 1500);
    assert_int_equal(st.n_cancelled, 1);
    /* and the slot serves again */
    struct result res;
    struct sched_req *c = submit(s, ids, n, 3, NULL);
    wait_done(c, &res);
    sched_req_release(c);
    assert_int_equal(res.n_ids, 3);
    sched_free(s);
}

static void test_api_sched_stop_string_cuts_text(void **state)
{
    struct fixture *f = *state;
    int32_t ids[64];
    int n = encode(f->m, "Once upon a time", ids, 64);
    struct sched *s = new_sched(f->m, 2, 4, 0);
    struct result full, cut;
    struct sched_req *r = submit(s, ids, n, 40, NULL);
    wait_done(r, &full);
    sched_req_release(r);
    const char *at = strstr(full.text, "Lily");
    assert_non_null(at);
    r = submit(s, ids, n, 40, "Lily");
    wait_done(r, &cut);
    sched_req_release(r);
    assert_string_equal(cut.finish, "stop");
    assert_int_equal(cut.len, (size_t)(at - full.text));
    assert_memory_equal(cut.text, full.text, cut.len);
    sched_free(s);
}

static void test_api_sched_context_limits(void **state)
{
    struct fixture *f = *state;
    struct sched *s = new_sched(f->m, 1, 4, 32);
    assert_int_equal(sched_n_ctx(s), 32);
    int32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = 300 + i;
    struct sched_gen_params gp;
    sched_gen_params_default(&gp);
    struct sched_req *r = NULL;
    assert_int_equal(sched_submit_gen(s, ids, 32, &gp, NULL, NULL, &r), MESH_ERANGE);
    ids[0] = 100000; /* not a token */
    assert_int_equal(sched_submit_gen(s, ids, 4, &gp, NULL, NULL, &r), MESH_EINVAL);
    ids[0] = 1;
    /* a generation runs until the context is full */
    struct result res;
    r = submit(s, ids, 20, 0, NULL);
    wait_done(r, &res);
    sched_req_release(r);
    /* 12 generated tokens fill positions 20..31; the 13th is sampled from the last logits */
    assert_true(res.n_ids <= 13);
    if (strcmp(res.finish, "stop")) assert_int_equal(res.n_ids, 13);
    sched_free(s);
}

static void test_api_sched_embedding_normalised(void **state)
{
    struct fixture *f = *state;
    struct sched *s = new_sched(f->m, 2, 4, 0);
    int32_t a[64], b[64];
    int na = encode(f->m, "The cat sat on the mat.", a, 64);
    int nb = encode(f->m, "A dog ran in the park.", b, 64);
    float va[64], vb[64], va2[64];
    const int32_t *in[3] = {a, b, a};
    int n_in[3] = {na, nb, na};
    float *out[3] = {va, vb, va2};
    for (int k = 0; k < 3; k++) {
        struct sched_req *r = NULL;
        assert_int_equal(sched_submit_embed(s, in[k], n_in[k], NULL, NULL, &r), 0);
        struct sched_chunk ch;
        for (int i = 0; i < 100000; i++) {
            sched_req_take(r, &ch);
            if (ch.done) break;
            sched_chunk_free(&ch);
            usleep(200);
        }
        assert_true(ch.done);
        assert_string_equal(ch.finish_reason, "stop");
        assert_int_equal(ch.n_embd, 64);
        memcpy(out[k], ch.embd, 64 * sizeof(float));
        sched_chunk_free(&ch);
        sched_req_release(r);
    }
    double na2 = 0, dot = 0;
    for (int i = 0; i < 64; i++) {
        na2 += (double)va[i] * va[i];
        dot += (double)va[i] * vb[i];
    }
    assert_true(fabs(na2 - 1.0) < 1e-5);
    assert_true(dot < 0.9999);
    assert_memory_equal(va, va2, sizeof va);
    sched_free(s);
}

static void test_api_registry_resolves_names_and_paths(void **state)
{
    (void)state;
    char path[4096], name[128], err[256];
    setenv("MESHLLM_MODELS", test_models_dir(), 1);
    assert_int_equal(registry_resolve("stories260K", path, sizeof path, name, sizeof name, err,
                                      sizeof err), 0);
    assert_string_equal(name, "stories260K");
    assert_non_null(strstr(path, "stories260K.gguf"));
    assert_int_equal(registry_resolve(test_model_path("stories260K-F16.gguf"), path, sizeof path,
                                      name, sizeof name, err, sizeof err), 0);
    assert_string_equal(name, "stories260K-F16");
    assert_int_equal(registry_resolve("no-such-model", path, sizeof path, name, sizeof name, err,
                                      sizeof err), MESH_ENOTFOUND);
    assert_non_null(strstr(err, "no-such-model"));

    struct sched_params sp;
    sched_params_default(&sp);
    sp.n_slots = 1;
    sp.n_threads = 1;
    struct registry *r = NULL;
    assert_int_equal(registry_new(&sp, &r), 0);
    assert_int_equal(registry_add(r, "stories260K", err, sizeof err), 0);
    assert_int_equal(registry_add(r, test_model_path("stories260K.gguf"), err, sizeof err), MESH_EINVAL);
    assert_int_equal(registry_load_wait(r), 0);
    enum registry_state st;
    struct registry_entry *e = registry_find(r, "stories260K:latest", &st);
    assert_non_null(e);
    assert_int_equal(st, REGISTRY_READY);
    assert_non_null(e->sched);
    assert_non_null(registry_find(r, "stories260K.gguf", &st));
    assert_null(registry_find(r, "stories", &st));
    registry_free(r);
}

static void notify_nop(void *arg) { (void)arg; }
static bool wanted_never(void *arg)
{
    atomic_int *n = arg;
    atomic_fetch_add(n, 1);
    return false;
}

/* A queued request whose client says it is gone when its turn comes never runs: it ends
 * "cancelled" with no output, and the scheduler asked exactly once. */
static void test_api_sched_unwanted_queued_request_never_runs(void **state)
{
    struct fixture *f = *state;
    int32_t ids[64];
    int n = encode(f->m, "Once upon a time", ids, 64);
    struct sched *s = new_sched(f->m, 1, 4, 0);
    struct sched_req *a = submit(s, ids, n, 200, NULL);
    struct sched_gen_params gp;
    sched_gen_params_default(&gp);
    gp.sp.temp = 0;
    gp.max_tokens = 50;
    gp.still_wanted = wanted_never;
    atomic_int asked;
    atomic_init(&asked, 0);
    struct sched_req *b = NULL;
    assert_int_equal(sched_submit_gen(s, ids, n, &gp, notify_nop, &asked, &b), 0);
    struct result ra, rb;
    wait_done(a, &ra);
    wait_done(b, &rb);
    assert_string_equal(rb.finish, "cancelled");
    assert_int_equal((int)rb.len, 0);
    assert_int_equal(atomic_load(&asked), 1);
    assert_true(ra.len > 0);
    sched_req_release(a);
    sched_req_release(b);
    sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_sched_greedy_matches_llamacpp),
        cmocka_unit_test(test_api_sched_unwanted_queued_request_never_runs),
        cmocka_unit_test(test_api_sched_batched_equals_alone),
        cmocka_unit_test(test_api_sched_prefix_reuse_same_output),
        cmocka_unit_test(test_api_sched_queue_full_and_cancel),
        cmocka_unit_test(test_api_sched_stop_string_cuts_text),
        cmocka_unit_test(test_api_sched_context_limits),
        cmocka_unit_test(test_api_sched_embedding_normalised),
        cmocka_unit_test(test_api_registry_resolves_names_and_paths),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
