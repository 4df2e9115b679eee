/* test_infer.c - /meshllm/infer/1 over real libp2p nodes on 127.0.0.1 (node/infer.c): a
 * delegated greedy request returns exactly what this node's scheduler returns (text, ids,
 * logprobs, usage) and names the peer; a continuation over the wire goes on where the ids
 * stopped; a cancelled request ends "cancelled" and frees the server's stream; and the
 * failure paths of a client facing a peer that lies or dies: garbage frames, a stream cut
 * mid-answer, a busy refusal, nobody listening, a frame after the last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/host.h"
#include "net/identity.h"
#include "net/p2pnode.h"
#include "node/infer.h"
#include "node/infer_internal.h"
#include "node/local.h"
#include "node/registry.h"
#include "tests/util/test_util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROMPT "Once upon a time, there was a little girl named Lily."

/* ---- fixtures ---------------------------------------------------------------------------- */

static struct registry *g_reg;

static int local_submit(void *ctx, const struct node_gen_req *req, const struct node_client *cl,
                        struct node_req **out, struct node_error *err)
{
    return node_local_submit(ctx, req, cl, out, err);
}

static struct infer_server *g_srv;

static int server_setup(void *ctx, struct p2pnode *n)
{
    struct infer_server_config c = {.pn = n, .submit = local_submit, .submit_ctx = ctx};
    return infer_server_new(&c, &g_srv);
}

static void server_teardown(struct p2pnode *n, void *arg)
{
    (void)n;
    (void)arg;
    infer_server_free(g_srv);
    g_srv = NULL;
}

/* How the lying server answers. */
enum liar_mode { LIAR_GARBAGE, LIAR_CUT, LIAR_BUSY, LIAR_AFTER_DONE, LIAR_SILENT };
static _Atomic int g_liar_mode;

static void liar_write_frame(struct host_stream *s, const char *text, bool done)
{
    size_t cut = strlen(text);
    struct node_chunk c = {.text = (char *)text, .len = cut, .cuts = &cut, .n_cuts = 1,
                           .done = done, .finish_reason = done ? "stop" : NULL,
                           .n_prompt = 5, .n_gen = 1};
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(infer_frame_encode(&c, 0, &b, &len), 0);
    host_stream_write_msg(s, b, len);
    free(b);
}

static void liar_on_data(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    (void)ctx;
    (void)d;
    (void)n;
    switch (atomic_load(&g_liar_mode)) {
    case LIAR_GARBAGE: {
        static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01, 0x02};
        host_stream_write_msg(s, junk, sizeof junk);
        host_stream_close(s);
        break;
    }
    case LIAR_CUT: /* one piece, then the peer "dies" */
        liar_write_frame(s, " Once", false);
        host_stream_reset(s);
        break;
    case LIAR_BUSY: {
        struct node_error e;
        node_error_set(&e, 429, "rate_limit_error", "rate_limit_exceeded", NULL, "full here");
        e.retry_after_s = 3;
        uint8_t *b = NULL;
        size_t len = 0;
        assert_int_equal(infer_frame_encode_error(&e, &b, &len), 0);
        host_stream_write_msg(s, b, len);
        free(b);
        host_stream_close(s);
        break;
    }
    case LIAR_AFTER_DONE: /* a whole answer, then one frame too many */
        liar_write_frame(s, " done", true);
        liar_write_frame(s, " extra", false);
        host_stream_close(s);
        break;
    case LIAR_SILENT:
        host_stream_close(s);
        break;
    }
}

static void liar_on_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    (void)s;
}

static void liar_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)ctx;
    (void)s;
    (void)status;
}

static const struct host_stream_cbs liar_cbs = {liar_on_data, liar_on_eof, liar_on_close};

static void liar_stream(void *ctx, struct host_stream *s)
{
    host_stream_set_message_mode(s, INFER_MAX_REQUEST);
    host_stream_set_callbacks(s, &liar_cbs, ctx);
}

static int liar_setup(void *ctx, struct p2pnode *n)
{
    return host_set_handler(p2pnode_host(n), INFER_PROTOCOL_ID, liar_stream, ctx);
}

struct nodes {
    struct p2pnode *server, *client, *liar;
    struct multiaddr server_addr, liar_addr;
};
static struct nodes g_n;

static void start_node(const char *name, int (*setup)(void *, struct p2pnode *), void *ctx,
                       struct p2pnode **out, struct multiaddr *addr)
{
    char dir[512], err[256];
    snprintf(dir, sizeof dir, "%s/%s", test_tmp_dir(), name);
    mkdir(dir, 0700);
    struct multiaddr lo;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    struct p2pnode_config c = {.data_dir = dir, .listen = &lo, .n_listen = 1,
                               .setup = setup, .setup_ctx = ctx};
    if (p2pnode_start(&c, out, err, sizeof err)) fail_msg("p2pnode_start: %s", err);
    if (addr) assert_int_equal(p2pnode_listen_addrs(*out, addr, 1), 1);
}

static int group_setup(void **state)
{
    (void)state;
    struct sched_params sp;
    sched_params_default(&sp);
    sp.n_slots = 2;
    sp.n_ctx = 256;
    sp.n_threads = 1;
    char err[256];
    if (registry_new(&sp, &g_reg) ||
        registry_add(g_reg, test_model_path("stories260K.gguf"), err, sizeof err) ||
        registry_load_wait(g_reg))
        return -1;
    start_node("server", server_setup, g_reg, &g_n.server, &g_n.server_addr);
    start_node("liar", liar_setup, NULL, &g_n.liar, &g_n.liar_addr);
    start_node("client", NULL, NULL, &g_n.client, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    p2pnode_call(g_n.server, server_teardown, NULL);
    p2pnode_stop(g_n.server);
    p2pnode_stop(g_n.liar);
    p2pnode_stop(g_n.client);
    registry_free(g_reg);
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------------- */

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

struct result {
    char text[16384];
    size_t len;
    int32_t ids[512];
    int n_ids;
    struct node_lp lps[64];
    int n_lps;
    const char *finish;
    int n_prompt, n_gen;
    enum node_fail fail;
    struct node_error err;
};

static struct atomic_counter {
    _Atomic int n;
} g_notified;

static void on_notify(void *arg)
{
    (void)arg;
    atomic_fetch_add(&g_notified.n, 1);
}

static void drain(struct node_req *r, struct result *res)
{
    memset(res, 0, sizeof *res);
    for (int spins = 0; spins < 200000; spins++) {
        struct node_chunk ch;
        assert_int_equal(node_req_take(r, &ch), 0);
        assert_true(res->len + ch.len < sizeof res->text);
        if (ch.len) memcpy(res->text + res->len, ch.text, ch.len);
        res->len += ch.len;
        if (ch.n_cuts) assert_int_equal(ch.cuts[ch.n_cuts - 1], ch.len);
        for (int i = 0; i < ch.n_ids && res->n_ids < 512; i++) res->ids[res->n_ids++] = ch.ids[i];
        for (int i = 0; i < ch.n_lps && res->n_lps < 64; i++) res->lps[res->n_lps++] = ch.lps[i];
        if (ch.n_prompt) res->n_prompt = ch.n_prompt;
        if (ch.n_gen) res->n_gen = ch.n_gen;
        bool done = ch.done;
        if (done) {
            res->finish = ch.finish_reason;
            res->fail = ch.fail;
            res->err = ch.err;
        }
        node_chunk_free(&ch);
        if (done) return;
        usleep(200);
    }
    fail_msg("request did not finish");
}

static struct node_req *remote(const struct multiaddr *addr, const struct node_gen_req *q)
{
    struct peer_id pid;
    assert_int_equal(multiaddr_peer_id(addr, &pid), 0);
    struct node_client cl = {.notify = on_notify};
    struct node_req *r = NULL;
    assert_int_equal(infer_client_submit(g_n.client, &pid, addr, q, &cl, &r), 0);
    assert_non_null(r);
    return r;
}

static void local_run(const struct node_gen_req *q, struct result *res)
{
    struct node_req *r = NULL;
    struct node_error e;
    if (node_local_submit(g_reg, q, NULL, &r, &e)) fail_msg("local: %s", e.message);
    drain(r, res);
    node_req_release(r);
}

static void wait_server_idle(void)
{
    struct infer_server_stats st;
    for (int i = 0; i < 5000; i++) {
        infer_server_stats(g_srv, &st);
        if (st.n_active == 0) return;
        usleep(1000);
    }
    fail_msg("the server still has %llu streams", (unsigned long long)st.n_active);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_infer_delegated_equals_local(void **state)
{
    (void)state;
    struct node_gen_req q;
    completion(&q, 32);
    q.n_logprobs = 2;
    struct result *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
    local_run(&q, want);
    struct infer_server_stats before, after;
    infer_server_stats(g_srv, &before);
    int notified = atomic_load(&g_notified.n);
    struct node_req *r = remote(&g_n.server_addr, &q);
    drain(r, got);
    char who[NODE_RAN_ON_CAP], want_who[NODE_RAN_ON_CAP];
    node_req_ran_on(r, who, sizeof who);
    struct infer_client_stats cs;
    assert_int_equal(infer_client_stats(r, &cs), 0);
    node_req_release(r);
    struct peer_id pid;
    assert_int_equal(multiaddr_peer_id(&g_n.server_addr, &pid), 0);
    assert_int_equal(peer_id_to_text(&pid, want_who, sizeof want_who), 0);
    assert_string_equal(who, want_who);
    assert_string_equal(got->finish, "length");
    assert_int_equal(got->fail, NODE_FAIL_NONE);
    assert_int_equal(got->len, want->len);
    assert_memory_equal(got->text, want->text, want->len);
    assert_int_equal(got->n_ids, 32);
    assert_memory_equal(got->ids, want->ids, sizeof want->ids[0] * 32);
    assert_int_equal(got->n_prompt, want->n_prompt);
    assert_int_equal(got->n_gen, 32);
    assert_int_equal(got->n_lps, want->n_lps);
    for (int i = 0; i < got->n_lps; i++) {
        assert_int_equal(got->lps[i].id, want->lps[i].id);
        assert_int_equal(got->lps[i].tok.len, want->lps[i].tok.len);
        assert_memory_equal(got->lps[i].tok.text, want->lps[i].tok.text,
                            (size_t)want->lps[i].tok.len);
        assert_true(got->lps[i].tok.logprob == want->lps[i].tok.logprob);
        assert_int_equal(got->lps[i].n_top, 2);
    }
    assert_true(cs.ttff_us > 0 && cs.total_us >= cs.ttff_us);
    assert_int_equal(cs.n_ids, 32);
    assert_true(atomic_load(&g_notified.n) > notified);
    wait_server_idle();
    infer_server_stats(g_srv, &after);
    assert_int_equal(after.n_opened, before.n_opened + 1);
    assert_int_equal(after.n_served, before.n_served + 1);
    free(want);
    free(got);
}

/* The failover path: a second peer given the ids delivered so far goes on exactly there. */
static void test_infer_continuation(void **state)
{
    (void)state;
    struct node_gen_req q;
    completion(&q, 40);
    struct result *full = calloc(1, sizeof *full), *rest = calloc(1, sizeof *rest);
    local_run(&q, full);
    assert_int_equal(full->n_ids, 40);
    q.cont_ids = full->ids;
    q.n_cont = 13;
    struct node_req *r = remote(&g_n.server_addr, &q);
    drain(r, rest);
    node_req_release(r);
    assert_string_equal(rest->finish, "length");
    assert_int_equal(rest->n_ids, 40 - 13);
    assert_memory_equal(rest->ids, full->ids + 13, sizeof full->ids[0] * (40 - 13));
    /* the text after the cut is the tail of the whole text */
    assert_true(rest->len < full->len);
    assert_memory_equal(rest->text, full->text + (full->len - rest->len), rest->len);
    assert_int_equal(rest->n_gen, 40);
    free(full);
    free(rest);
}

static void test_infer_cancel_frees_server_stream(void **state)
{
    (void)state;
    struct node_gen_req q;
    completion(&q, 200);
    struct infer_server_stats before, after;
    infer_server_stats(g_srv, &before);
    struct node_req *r = remote(&g_n.server_addr, &q);
    node_req_cancel(r);
    struct result *res = calloc(1, sizeof *res);
    drain(r, res);
    node_req_release(r);
    /* cancelled here at once; the server either saw the reset or had finished */
    assert_true(!strcmp(res->finish, "cancelled") || !strcmp(res->finish, "length"));
    wait_server_idle();
    infer_server_stats(g_srv, &after);
    assert_true(after.n_opened <= before.n_opened + 1);
    /* and a release without take, mid-answer, is fine too */
    r = remote(&g_n.server_addr, &q);
    usleep(2000);
    node_req_release(r);
    wait_server_idle();
    free(res);
}

static void liar_case(enum liar_mode mode, struct result *res)
{
    atomic_store(&g_liar_mode, mode);
    fprintf(stderr, "liar mode %d\n", (int)mode);
    struct node_gen_req q;
    completion(&q, 8);
    struct node_req *r = remote(&g_n.liar_addr, &q);
    drain(r, res);
    node_req_release(r);
}

static void test_infer_lying_and_dying_peers(void **state)
{
    (void)state;
    struct result *res = calloc(1, sizeof *res);
    liar_case(LIAR_GARBAGE, res);
    assert_string_equal(res->finish, "error");
    assert_int_equal(res->fail, NODE_FAIL_LOST);
    assert_non_null(strstr(res->err.message, "protocol"));

    liar_case(LIAR_CUT, res);
    assert_string_equal(res->finish, "error");
    assert_int_equal(res->fail, NODE_FAIL_LOST);
    assert_int_equal(res->len, 5); /* what arrived before the cut stays delivered */
    assert_memory_equal(res->text, " Once", 5);

    liar_case(LIAR_BUSY, res);
    assert_string_equal(res->finish, "error");
    assert_int_equal(res->fail, NODE_FAIL_BUSY);
    assert_int_equal(res->err.status, 429);
    assert_int_equal(res->err.retry_after_s, 3);
    assert_string_equal(res->err.message, "full here");

    liar_case(LIAR_SILENT, res);
    assert_string_equal(res->finish, "error");
    assert_int_equal(res->fail, NODE_FAIL_LOST);
    assert_int_equal(res->len, 0);

    /* an answer, then a frame after the last: the answer stands */
    liar_case(LIAR_AFTER_DONE, res);
    assert_string_equal(res->finish, "stop");
    assert_int_equal(res->len, 5);
    assert_memory_equal(res->text, " done", 5);
    free(res);
}

static void test_infer_unreachable_and_bad_requests(void **state)
{
    (void)state;
    /* a peer nobody connected to, at a port nobody listens on */
    char text[MULTIADDR_TEXT_CAP], pid_text[PEER_ID_TEXT_CAP];
    struct identity ghost;
    uint8_t seed[32];
    memset(seed, 7, sizeof seed);
    assert_int_equal(identity_from_seed(seed, &ghost), 0);
    assert_int_equal(peer_id_to_text(&ghost.id, pid_text, sizeof pid_text), 0);
    struct peer_id pid;
    assert_int_equal(multiaddr_peer_id(&g_n.liar_addr, &pid), 0);
    snprintf(text, sizeof text, "/ip4/127.0.0.1/tcp/1/p2p/%s", pid_text);
    struct multiaddr dead;
    assert_int_equal(multiaddr_from_text(text, &dead), 0);
    struct node_gen_req q;
    completion(&q, 8);
    struct result *res = calloc(1, sizeof *res);
    struct node_req *r = remote(&dead, &q);
    drain(r, res);
    node_req_release(r);
    assert_string_equal(res->finish, "error");
    assert_int_equal(res->fail, NODE_FAIL_LOST);
    /* the server refuses what its model cannot serve, with the model's own reasons */
    completion(&q, 8);
    q.model = "no-such-model";
    r = remote(&g_n.server_addr, &q);
    drain(r, res);
    node_req_release(r);
    assert_int_equal(res->fail, NODE_FAIL_REFUSED);
    assert_int_equal(res->err.status, 404);
    assert_string_equal(res->err.code, "model_not_found");
    /* embeddings are not delegated */
    struct node_gen_req e;
    node_gen_req_init(&e);
    e.kind = NODE_KIND_EMBEDDING;
    e.model = "stories260K";
    struct node_client cl = {0};
    r = NULL;
    assert_int_equal(infer_client_submit(g_n.client, &pid, &g_n.liar_addr, &e, &cl, &r),
                     MESH_EUNSUPPORTED);
    assert_null(r);
    free(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_infer_delegated_equals_local),
        cmocka_unit_test(test_infer_continuation),
        cmocka_unit_test(test_infer_cancel_frees_server_stream),
        cmocka_unit_test(test_infer_lying_and_dying_peers),
        cmocka_unit_test(test_infer_unreachable_and_bad_requests),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
