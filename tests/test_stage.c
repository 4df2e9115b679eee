/* test_stage.c - split models: /meshllm/stage/1 (node/stage.c, stage_wire.c) and the
 * requester's pipeline (node/pipeline.c) on real nodes over 127.0.0.1, in one process.
 * S1 creates a mesh and holds the first third of the layers of stories260K and of a
 * random-weight model of a real shape (dim 512, 8 layers, GQA, Q8_0); S2 and S3 join and
 * hold the other thirds; R joins holding none (`--layers none`: embedding and head only).
 * R's greedy answers equal a single node's token for token, logprobs within F16 rounding,
 * and X-Meshllm-Ran-On names the stages. RS, a second requester with n-gram speculative
 * decoding, verifies its proposals through the three stages (rejected positions rewind the
 * stages' sessions) and still equals the single node. A stage answers garbage with errors and goes on
 * serving; a full stage says busy; a node without a certificate is refused. Recovery: the
 * middle stage stopped mid-generation is replaced by a spare of the same range and the
 * output still equals a single node's; with no spare left the request ends with an error
 * and R serves again once a new stage joins. Also the wire format and the planner alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/model.h"
#include "engine/model_gen.h"
#include "engine/quantize.h"
#include "net/p2pnode.h"
#include "node/local.h"
#include "node/member.h"
#include "node/mesh.h"
#include "node/peers.h"
#include "node/pipeline.h"
#include "node/registry.h"
#include "node/router.h"
#include "node/stage.h"
#include "node/store.h"
#include "tests/util/test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROMPT "Once upon a time, there was a little girl named Lily."

static char g_rand_path[600];
static const char *g_models[2]; /* stories260K, the random model */
static const char *g_names[2] = {"stories260K", "rand-small"};
static int g_n_layer[2];
static struct registry *g_full, *g_reg_r, *g_reg_s[3], *g_reg_rs;
static struct mesh *g_r, *g_s[3], *g_rs;
static enum spec_mode g_spec; /* what the next reg_make's schedulers speculate with */
static struct p2pnode *g_x;
static struct multiaddr g_s_addr[3];
static struct mesh *g_spare;          /* S2b: a spare for the middle range */
static struct registry *g_reg_spare;
/* gen stops *g_kill (and clears it) once it holds g_kill_after tokens */
static struct mesh **g_kill;
static int g_kill_after;

static const char *node_dir(const char *name)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", test_tmp_dir(), name);
    mkdir(dir, 0700);
    return dir;
}

static struct member *member_at(const char *dir, struct store **st)
{
    char err[256];
    struct member *m = NULL;
    if (store_open(dir, st, err, sizeof err) ||
        member_open(dir, *st, (uint64_t)time(NULL), &m, err, sizeof err))
        fail_msg("member_open %s: %s", dir, err);
    return m;
}

static char *invite_from(const char *dir)
{
    struct store *st = NULL;
    struct member *mo = member_at(dir, &st);
    struct member_invite_opts io = {.expires_at = (uint64_t)time(NULL) + 3600};
    char *tok = NULL, err[256];
    if (member_invite_make(mo, &io, (uint64_t)time(NULL), &tok, err, sizeof err))
        fail_msg("invite: %s", err);
    member_close(mo);
    store_close(st);
    return tok;
}

static struct mesh *start(const char *name, struct registry *reg, const char *token,
                          const struct multiaddr *boot)
{
    struct multiaddr lo;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    struct mesh_config c = {.data_dir = node_dir(name), .reg = reg, .listen = &lo, .n_listen = 1,
                            .bootstrap = boot, .n_bootstrap = boot ? 1 : 0,
                            .join_token = token};
    struct mesh *m = NULL;
    char err[512];
    if (mesh_start(&c, &m, err, sizeof err)) fail_msg("mesh_start %s: %s", name, err);
    return m;
}

static void sched_small(struct sched_params *sp, int n_slots)
{
    sched_params_default(sp);
    sp->n_slots = n_slots;
    sp->n_ctx = 256;
    sp->n_threads = 1;
    sp->spec = g_spec;
}

/* A registry holding layers [third k) of both models (k -1: whole, 3: none). */
static struct registry *reg_make(int k, int n_slots)
{
    struct sched_params sp;
    sched_small(&sp, n_slots);
    struct registry *reg = NULL;
    char err[512] = "";
    if (registry_new(&sp, &reg)) fail_msg("registry_new");
    for (int i = 0; i < 2; i++) {
        int n = g_n_layer[i], b = k * n / 3, e = (k + 1) * n / 3;
        int rc = k < 0 ? registry_add(reg, g_models[i], err, sizeof err)
                 : k == 3 ? registry_add_split(reg, g_models[i], 0, 0, err, sizeof err)
                          : registry_add_split(reg, g_models[i], b, e, err, sizeof err);
        if (rc) fail_msg("registry_add: %s", err);
    }
    if (registry_load_wait(reg)) {
        enum registry_state st;
        fail_msg("load: %s", registry_at(reg, 0, &st)->err);
    }
    registry_hash_wait(reg);
    return reg;
}

static int n_heard_by(struct registry *reg, struct mesh *mesh, int model)
{
    const char *dg = registry_digest(reg, model);
    struct peers_stage *c = calloc(PEERS_MAX, sizeof *c);
    int n = dg ? peers_stages(mesh_peers(mesh), dg, g_n_layer[model], NULL, 0, mesh_now_ms(), c,
                              PEERS_MAX)
               : 0;
    free(c);
    return n;
}

static int n_stages_heard(int model)
{
    return n_heard_by(g_reg_r, g_r, model) < n_heard_by(g_reg_rs, g_rs, model)
               ? n_heard_by(g_reg_r, g_r, model)
               : n_heard_by(g_reg_rs, g_rs, model);
}

static int group_setup(void **state)
{
    (void)state;
    /* every step of a scheduler waits a little, so a test can stop a stage mid-stream */
    setenv("MESHLLM_SCHED_STEP_DELAY_MS", "10", 1);
    g_models[0] = test_model_path("stories260K.gguf");
    snprintf(g_rand_path, sizeof g_rand_path, "%s/rand-small.gguf", node_dir("models"));
    struct model_gen_opts o;
    memset(&o, 0, sizeof o);
    assert_int_equal(model_gen_shape_get("test-small", &o.shape), 0);
    o.shape.n_ff = 1536;
    o.vocab_path = g_models[0];
    o.ftype = QUANTIZE_FT_Q8_0;
    o.seed = 4321;
    o.n_threads = 2;
    char err[512] = "";
    if (model_gen_write(&o, g_rand_path, err, sizeof err) < 0) fail_msg("model_gen: %s", err);
    g_models[1] = g_rand_path;
    for (int i = 0; i < 2; i++) {
        struct model *m = NULL;
        if (model_load(g_models[i], NULL, &m, err, sizeof err)) fail_msg("%s", err);
        g_n_layer[i] = model_hparams(m)->n_layer;
        model_free(m);
        assert_true(g_n_layer[i] >= 3);
    }
    g_full = reg_make(-1, 2);
    for (int k = 0; k < 3; k++) g_reg_s[k] = reg_make(k, 4);
    g_reg_r = reg_make(3, 2);
    /* S1 creates the mesh; everyone else joins with its invites */
    {
        struct store *st = NULL;
        struct member *m = member_at(node_dir("S1"), &st);
        if (member_mesh_create(m, false, (uint64_t)time(NULL), err, sizeof err))
            fail_msg("mesh create: %s", err);
        member_close(m);
        store_close(st);
    }
    g_s[0] = start("S1", g_reg_s[0], NULL, NULL);
    assert_true(p2pnode_listen_addrs(mesh_p2pnode(g_s[0]), &g_s_addr[0], 1) == 1);
    const char *names[] = {"S1", "S2", "S3"};
    for (int k = 1; k < 3; k++) {
        char *tok = invite_from(node_dir("S1"));
        g_s[k] = start(names[k], g_reg_s[k], tok, &g_s_addr[0]);
        free(tok);
        assert_true(p2pnode_listen_addrs(mesh_p2pnode(g_s[k]), &g_s_addr[k], 1) == 1);
    }
    char *tok = invite_from(node_dir("S1"));
    g_r = start("R", g_reg_r, tok, &g_s_addr[0]);
    free(tok);
    g_spec = SPEC_NGRAM;
    g_reg_rs = reg_make(3, 2);
    g_spec = SPEC_OFF;
    tok = invite_from(node_dir("S1"));
    g_rs = start("RS", g_reg_rs, tok, &g_s_addr[0]);
    free(tok);
    /* X: a libp2p node with no certificate */
    struct multiaddr lo;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    struct p2pnode_config xc = {.data_dir = node_dir("X"), .listen = &lo, .n_listen = 1,
                                .bootstrap = &g_s_addr[0], .n_bootstrap = 1, .use_gossip = true};
    if (p2pnode_start(&xc, &g_x, err, sizeof err)) fail_msg("X: %s", err);
    for (int i = 0; i < 600 && (n_stages_heard(0) < 3 || n_stages_heard(1) < 3); i++)
        usleep(50000);
    if (n_stages_heard(0) < 3 || n_stages_heard(1) < 3)
        fail_msg("R heard %d and %d stages, not 3", n_stages_heard(0), n_stages_heard(1));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    p2pnode_stop(g_x);
    mesh_stop(g_rs);
    mesh_stop(g_spare);
    registry_free(g_reg_spare);
    mesh_stop(g_r);
    for (int k = 2; k >= 0; k--) mesh_stop(g_s[k]);
    registry_free(g_reg_rs);
    registry_free(g_reg_r);
    for (int k = 0; k < 3; k++) registry_free(g_reg_s[k]);
    registry_free(g_full);
    return 0;
}

/* ---- wire and planner ------------------------------------------------------------------- */

static void req_fill(struct stage_req *q, int n, int n_embd, int pos0, int32_t *pos, float *x)
{
    memset(q, 0, sizeof *q);
    memset(q->session, 7, sizeof q->session);
    memset(q->model, 'a', 64);
    q->model[64] = 0;
    q->layer_begin = 2;
    q->layer_end = 4;
    q->n_embd = n_embd;
    q->n_tokens = n;
    for (int i = 0; i < n; i++) pos[i] = pos0 + i;
    uint64_t st = 5;
    for (int i = 0; i < n * n_embd; i++) x[i] = test_rand_uniform(&st);
    q->pos = pos;
    q->x = x;
}

static void test_stage_wire_roundtrip_and_garbage(void **state)
{
    (void)state;
    int32_t pos[4];
    float x[4 * 8];
    struct stage_req q, d;
    req_fill(&q, 4, 8, 10, pos, x);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(stage_req_encode(&q, &buf, &len), 0);
    bool has_s;
    char why[256];
    assert_int_equal(stage_req_decode(buf, len, &d, &has_s, why, sizeof why), STAGE_OK);
    assert_true(has_s);
    assert_int_equal(d.n_tokens, 4);
    assert_int_equal(d.pos[3], 13);
    assert_string_equal(d.model, q.model);
    for (int i = 0; i < 32; i++) assert_true(fabsf(d.x[i] - x[i]) <= 1e-3f); /* F16 rounding */
    stage_req_free(&d);
    /* cut short: malformed, nothing allocated */
    assert_int_equal(stage_req_decode(buf, len - 3, &d, &has_s, why, sizeof why),
                     STAGE_ERR_MALFORMED);
    free(buf);
    /* non-finite */
    x[5] = INFINITY;
    assert_int_equal(stage_req_encode(&q, &buf, &len), 0);
    assert_int_equal(stage_req_decode(buf, len, &d, &has_s, why, sizeof why), STAGE_ERR_NONFINITE);
    assert_true(has_s);
    free(buf);
    x[5] = 0;
    /* positions not consecutive */
    pos[2] = 40;
    assert_int_equal(stage_req_encode(&q, &buf, &len), 0);
    assert_int_equal(stage_req_decode(buf, len, &d, &has_s, why, sizeof why), STAGE_ERR_POS);
    free(buf);
    /* a reply round trip, and one that claims more states than it carries */
    struct stage_reply r, rd;
    memset(&r, 0, sizeof r);
    r.pos = 3;
    r.n_tokens = 2;
    r.n_embd = 8;
    r.x = x;
    r.n_cached = 5;
    assert_int_equal(stage_reply_encode(&r, &buf, &len), 0);
    assert_int_equal(stage_reply_decode(buf, len, 8, &rd), 0);
    assert_int_equal(rd.n_tokens, 2);
    assert_int_equal(rd.n_cached, 5);
    stage_reply_free(&rd);
    assert_int_equal(stage_reply_decode(buf, len, 16, &rd), MESH_EPROTO); /* wrong width */
    free(buf);
}

static void cand(struct peers_stage *c, int b, int e, double score, uint8_t tag)
{
    memset(c, 0, sizeof *c);
    c->layer_begin = b;
    c->layer_end = e;
    c->pick.score_ms = score;
    snprintf(c->pick.id_text, sizeof c->pick.id_text, "peer%u", tag);
}

static void test_stage_plan_covers_layers(void **state)
{
    (void)state;
    struct peers_stage c[5];
    struct pipeline_hop h[PIPELINE_MAX_HOPS];
    cand(&c[0], 0, 4, 10, 0);
    cand(&c[1], 4, 8, 50, 1);
    cand(&c[2], 4, 8, 5, 2);  /* the same range, cheaper */
    cand(&c[3], 8, 12, 10, 3);
    cand(&c[4], 0, 6, 1, 4);  /* leads nowhere: nothing starts at 6 */
    int n = pipeline_plan(c, 5, 12, 0, 0, h, PIPELINE_MAX_HOPS);
    assert_int_equal(n, 3);
    assert_string_equal(h[0].id_text, "peer0");
    assert_string_equal(h[1].id_text, "peer2");
    assert_int_equal(h[2].layer_begin, 8);
    assert_int_equal(h[2].layer_end, 12);
    /* a local range is used (it costs nothing) */
    n = pipeline_plan(c, 5, 12, 4, 8, h, PIPELINE_MAX_HOPS);
    assert_int_equal(n, 3);
    assert_true(h[1].is_local);
    /* a hole: nothing covers 8-11 */
    assert_int_equal(pipeline_plan(c, 3, 12, 0, 0, h, PIPELINE_MAX_HOPS), MESH_ENOTFOUND);
    assert_int_equal(pipeline_plan(c, 5, 12, 0, 0, h, 2), MESH_ERANGE);
}

/* ---- the pipeline ----------------------------------------------------------------------- */

struct result {
    int32_t ids[64];
    int n_ids;
    float lp[64];                 /* logprob of each chosen token */
    float top[64][5];             /* and of the top alternatives */
    int n_top[64];
    const char *finish;
    char ran_on[NODE_RAN_ON_CAP];
};

static void gen(struct registry *reg, struct mesh *mesh, const char *model, int max_tokens,
                struct result *res)
{
    memset(res, 0, sizeof *res);
    struct node_gen_req q;
    struct node_msg msg = {.role = "user", .content = PROMPT};
    node_gen_req_init(&q);
    q.kind = NODE_KIND_CHAT;
    q.model = (char *)model;
    q.msgs = &msg;
    q.n_msgs = 1;
    q.temperature = 0;
    q.max_tokens = max_tokens;
    q.n_logprobs = 5;
    struct router *rt = NULL;
    struct router_config rc = {.reg = reg, .mesh = mesh, .default_route = NODE_ROUTE_LOCAL};
    assert_int_equal(router_new(&rc, &rt), 0);
    struct node_client cl = {0};
    struct node_req *r = NULL;
    struct node_error e;
    if (router_submit(rt, &q, &cl, &r, &e)) fail_msg("submit: %d %s", e.status, e.message);
    for (int spins = 0; spins < 200000; spins++) {
        struct node_chunk ch;
        assert_int_equal(node_req_take(r, &ch), 0);
        for (int i = 0; i < ch.n_ids && res->n_ids < 64; i++) res->ids[res->n_ids++] = ch.ids[i];
        for (int i = 0; i < ch.n_lps; i++) {
            int at = res->n_ids - ch.n_lps + i;
            if (at < 0 || at >= 64) continue;
            res->lp[at] = ch.lps[i].tok.logprob;
            res->n_top[at] = ch.lps[i].n_top < 5 ? ch.lps[i].n_top : 5;
            for (int k = 0; k < res->n_top[at]; k++) res->top[at][k] = ch.lps[i].top[k].logprob;
        }
        bool done = ch.done;
        if (done) res->finish = ch.finish_reason;
        if (g_kill && *g_kill && !done && res->n_ids >= g_kill_after) {
            print_message("stopping %s after %d tokens\n", mesh_self_text(*g_kill), res->n_ids);
            mesh_stop(*g_kill);
            *g_kill = NULL;
            g_kill = NULL;
        }
        node_chunk_free(&ch);
        if (done) break;
        usleep(200);
    }
    node_req_ran_on(r, res->ran_on, sizeof res->ran_on);
    node_req_release(r);
    router_free(rt);
    assert_non_null(res->finish);
}

static void pipeline_equals_single(int model, int max_tokens)
{
    struct result *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
    gen(g_full, NULL, g_names[model], max_tokens, want);
    gen(g_reg_r, g_r, g_names[model], max_tokens, got);
    assert_string_equal(want->finish, got->finish);
    assert_true(want->n_ids > 0);
    assert_int_equal(got->n_ids, want->n_ids);
    assert_memory_equal(got->ids, want->ids, (size_t)want->n_ids * sizeof want->ids[0]);
    /* the hops carry F16: logprobs move by rounding only */
    double worst = 0;
    for (int i = 0; i < want->n_ids; i++) {
        worst = fmax(worst, fabs(got->lp[i] - want->lp[i]));
        assert_int_equal(got->n_top[i], want->n_top[i]);
        for (int k = 0; k < want->n_top[i]; k++)
            worst = fmax(worst, fabs(got->top[i][k] - want->top[i][k]));
    }
    print_message("%s: %d tokens equal, worst logprob difference %.5f, ran on %s\n",
                  g_names[model], want->n_ids, worst, got->ran_on);
    assert_true(worst < 0.02);
    /* X-Meshllm-Ran-On names the three stages */
    for (int k = 0; k < 3; k++) assert_non_null(strstr(got->ran_on, mesh_self_text(g_s[k])));
    assert_non_null(strstr(got->ran_on, "local:none"));
    free(want);
    free(got);
}

static void test_stage_pipeline_stories_equals_single(void **state)
{
    (void)state;
    pipeline_equals_single(0, 32);
    /* the same again: the slots' cached prefix is reused along the route */
    pipeline_equals_single(0, 32);
}

static void test_stage_pipeline_random_equals_single(void **state)
{
    (void)state;
    pipeline_equals_single(1, 16);
}

/* Speculative decoding through the pipeline: RS verifies each step's proposal as one run of
 * tokens per slot on every stage; a rejection leaves the stages holding positions the next
 * pass overwrites (it starts earlier, which rewinds the session). Greedy output equals a
 * single node's without speculation. */
static void test_stage_pipeline_spec_equals_single(void **state)
{
    (void)state;
    for (int model = 0; model < 2; model++) {
        struct result *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
        int max_tokens = model ? 24 : 64;
        gen(g_full, NULL, g_names[model], max_tokens, want);
        gen(g_reg_rs, g_rs, g_names[model], max_tokens, got);
        assert_string_equal(want->finish, got->finish);
        assert_int_equal(got->n_ids, want->n_ids);
        assert_memory_equal(got->ids, want->ids, (size_t)want->n_ids * sizeof want->ids[0]);
        double worst = 0;
        for (int i = 0; i < want->n_ids; i++) worst = fmax(worst, fabs(got->lp[i] - want->lp[i]));
        assert_true(worst < 0.02);
        for (int k = 0; k < 3; k++) assert_non_null(strstr(got->ran_on, mesh_self_text(g_s[k])));
        enum registry_state rst;
        struct sched_stats st;
        sched_stats(registry_at(g_reg_rs, model, &rst)->sched, &st);
        print_message("%s over 3 stages with n-gram drafts: %d tokens equal (worst logprob "
                      "difference %.5f); drafted %llu, accepted %llu\n",
                      g_names[model], want->n_ids, worst, (unsigned long long)st.n_spec_drafted,
                      (unsigned long long)st.n_spec_accepted);
        if (model == 0) {
            assert_true(st.n_spec_accepted > 0);
            assert_true(st.n_spec_drafted > st.n_spec_accepted); /* some were rolled back */
        }
        free(want);
        free(got);
    }
}

/* What a stage holds: its own range only; all stages together what a whole node packs. */
static void test_stage_loads_only_its_range(void **state)
{
    (void)state;
    enum registry_state st;
    size_t whole = model_packed_bytes(registry_at(g_full, 1, &st)->model), sum = 0;
    for (int k = 0; k < 3; k++) {
        size_t b = model_packed_bytes(registry_at(g_reg_s[k], 1, &st)->model);
        assert_true(b > 0 && b < whole);
        sum += b;
    }
    size_t none = model_packed_bytes(registry_at(g_reg_r, 1, &st)->model);
    print_message("packed: whole %zu, stages sum %zu, none (head) %zu\n", whole, sum, none);
    assert_int_equal(sum, whole);
    assert_true(none < whole / 4);
}

/* -ctk/-ctv reach every context a split entry makes: its scheduler (over the pipeline) and
 * its stage engine; the mesh's registries above keep the f16 default. */
static void test_stage_kv_types_reach_stage_and_sched(void **state)
{
    (void)state;
    struct sched_params sp;
    sched_small(&sp, 2);
    sp.k_type = MODEL_KV_Q8_0;
    sp.v_type = MODEL_KV_Q4_0;
    struct registry *reg = NULL;
    char err[512] = "", line[256];
    assert_int_equal(registry_new(&sp, &reg), 0);
    assert_int_equal(registry_add_split(reg, g_models[0], 0, 2, err, sizeof err), 0);
    assert_int_equal(registry_load_wait(reg), 0);
    enum registry_state st;
    struct registry_entry *e = registry_at(reg, 0, &st);
    assert_non_null(e->stage);
    stage_engine_kv_describe(e->stage, line, sizeof line);
    print_message("stage: %s\n", line);
    /* 2 of stories260K's layers x 2 slots x 256 positions x 32 elements: 64 KiB of f16 K, as
     * much V; q8_0 K is 34/64 of it, q4_0 V 18/64: 52 KiB */
    assert_string_equal(line, "KV cache: q8_0/q4_0, 256 ctx x 2 slots = 0.05 MiB (f16 would be 0.12 MiB)");
    sched_kv_describe(e->sched, line, sizeof line);
    assert_non_null(strstr(line, "KV cache: q8_0/q4_0, 256 ctx x 2 slots"));
    registry_free(reg);
    stage_engine_kv_describe(registry_at(g_reg_s[0], 0, &st)->stage, line, sizeof line);
    assert_non_null(strstr(line, "KV cache: f16/f16, "));
}

/* ---- a stage under fire ----------------------------------------------------------------- */

struct probe {
    struct stage_conn *c;
    int model;
    int n_embd;
    int b, e;
};

static int send_one(struct probe *p, const uint8_t sess, int pos0, int n, float poison,
                    int n_embd, struct stage_reply *rep)
{
    int32_t *pos = calloc((size_t)n, sizeof *pos);
    float *x = calloc((size_t)n * (size_t)(n_embd > 0 ? n_embd : 1), sizeof *x);
    struct stage_req q;
    req_fill(&q, n, n_embd, pos0, pos, x);
    for (int i = 0; i < n * n_embd; i++) x[i] *= 0.1f;
    if (poison != 0) x[0] = poison;
    memset(q.session, sess, sizeof q.session);
    snprintf(q.model, sizeof q.model, "%s", registry_digest(g_reg_s[1], p->model));
    q.layer_begin = p->b;
    q.layer_end = p->e;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(stage_req_encode(&q, &buf, &len), 0);
    free(pos);
    free(x);
    return stage_conn_call(p->c, &buf, &len, 1, p->n_embd, rep, 10000, NULL);
}

static int send_raw(struct probe *p, const void *bytes, size_t len, struct stage_reply *rep)
{
    uint8_t *buf = malloc(len);
    memcpy(buf, bytes, len);
    return stage_conn_call(p->c, &buf, &len, 1, p->n_embd, rep, 10000, NULL);
}

static void expect(struct probe *p, int rc, struct stage_reply *rep, int err)
{
    assert_int_equal(rc, 0);
    if (rep->error != err)
        fail_msg("expected %s, got %s (%s)", stage_err_name(err), stage_err_name(rep->error),
                 rep->message);
    (void)p;
    stage_reply_free(rep);
}

static void test_stage_garbage_and_busy_keep_serving(void **state)
{
    (void)state;
    struct probe p = {.model = 0};
    p.b = g_n_layer[0] / 3;
    p.e = 2 * g_n_layer[0] / 3;
    enum registry_state st;
    p.n_embd = model_hparams(registry_at(g_reg_s[1], 0, &st)->model)->n_embd;
    struct peer_id s2 = *p2pnode_peer_id(mesh_p2pnode(g_s[1]));
    assert_int_equal(stage_conn_new(mesh_p2pnode(g_r), &s2, &g_s_addr[1], &p.c), 0);
    struct stage_reply rep;
    /* session 1: a good prefill of 4 tokens */
    int rc = send_one(&p, 1, 0, 4, 0, p.n_embd, &rep);
    assert_int_equal(rc, 0);
    assert_int_equal(rep.error, 0);
    assert_int_equal(rep.n_tokens, 4);
    assert_int_equal(rep.n_cached, 4);
    stage_reply_free(&rep);
    /* garbage, each answered with its error */
    expect(&p, send_one(&p, 2, 0, 2, 0, p.n_embd / 2, &rep), &rep, STAGE_ERR_DIMS);
    expect(&p, send_one(&p, 2, 0, 2, NAN, p.n_embd, &rep), &rep, STAGE_ERR_NONFINITE);
    expect(&p, send_one(&p, 1, 9, 1, 0, p.n_embd, &rep), &rep, STAGE_ERR_POS); /* a gap */
    expect(&p, send_one(&p, 3, 5, 1, 0, p.n_embd, &rep), &rep, STAGE_ERR_POS); /* unknown */
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01, 0x02, 0x03};
    expect(&p, send_raw(&p, junk, sizeof junk, &rep), &rep, STAGE_ERR_MALFORMED);
    p.b += 1; /* a range this stage does not serve */
    expect(&p, send_one(&p, 2, 0, 1, 0, p.n_embd, &rep), &rep, STAGE_ERR_RANGE);
    p.b -= 1;
    /* session 1 goes on where it was */
    rc = send_one(&p, 1, 4, 1, 0, p.n_embd, &rep);
    assert_int_equal(rc, 0);
    assert_int_equal(rep.error, 0);
    assert_int_equal(rep.n_cached, 5);
    stage_reply_free(&rep);
    /* fill the slots: the stage says busy, and an ended session frees one */
    bool busy = false;
    for (int s = 10; s < 20 && !busy; s++) {
        rc = send_one(&p, (uint8_t)s, 0, 2, 0, p.n_embd, &rep);
        assert_int_equal(rc, 0);
        busy = rep.error == STAGE_ERR_BUSY;
        assert_true(rep.error == 0 || busy);
        stage_reply_free(&rep);
    }
    assert_true(busy);
    struct stage_req end;
    memset(&end, 0, sizeof end);
    memset(end.session, 1, sizeof end.session);
    end.end = true;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(stage_req_encode(&end, &buf, &len), 0);
    assert_int_equal(stage_conn_call(p.c, &buf, &len, 1, p.n_embd, &rep, 10000, NULL), 0);
    assert_int_equal(rep.error, 0);
    stage_reply_free(&rep);
    rc = send_one(&p, 30, 0, 2, 0, p.n_embd, &rep);
    assert_int_equal(rc, 0);
    assert_int_equal(rep.error, 0);
    stage_reply_free(&rep);
    stage_conn_free(p.c, true);
    /* the pipeline still works through the same stage */
    pipeline_equals_single(0, 8);
}

/* ---- recovery ---------------------------------------------------------------------------- */

/* Whether R's peers table has the stage peer id announcing model's middle range. */
static bool heard(int model, const char *id_text)
{
    const char *dg = registry_digest(g_reg_r, model);
    struct peers_stage *c = calloc(PEERS_MAX, sizeof *c);
    int n = dg ? peers_stages(mesh_peers(g_r), dg, g_n_layer[model], NULL, 0, mesh_now_ms(), c,
                              PEERS_MAX)
               : 0;
    bool found = false;
    for (int i = 0; i < n; i++) found |= strcmp(c[i].pick.id_text, id_text) == 0;
    free(c);
    return found;
}

/* A node holding the middle third of both models joins (S2b, S2c...). */
static struct mesh *spare_start(const char *name, struct registry **reg)
{
    *reg = reg_make(1, 4);
    char *tok = invite_from(node_dir("S1"));
    struct mesh *m = start(name, *reg, tok, &g_s_addr[0]);
    free(tok);
    for (int i = 0; i < 600 && !(heard(0, mesh_self_text(m)) && heard(1, mesh_self_text(m)));
         i++)
        usleep(50000);
    if (!heard(0, mesh_self_text(m))) fail_msg("R never heard %s", name);
    return m;
}

static void pl_stats(struct pipeline_stats *st)
{
    enum registry_state rs;
    pipeline_stats(registry_at(g_reg_r, 0, &rs)->pipe, st);
}

/* The middle stage of R's route stops after 6 tokens of a 60-token answer; a spare holding
 * the same layers takes over, its KV rebuilt by replay: every token equals a single node's,
 * and the answer says it ran on the spare. */
static void test_stage_recovery_replaces_stopped_stage(void **state)
{
    (void)state;
    g_spare = spare_start("S2b", &g_reg_spare);
    struct result *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
    gen(g_full, NULL, g_names[0], 60, want);
    /* the route was planned through S2 before the spare came; stop whichever it uses */
    gen(g_reg_r, g_r, g_names[0], 4, got);
    struct mesh **victim = strstr(got->ran_on, mesh_self_text(g_s[1])) ? &g_s[1] : &g_spare;
    struct mesh *other = victim == &g_s[1] ? g_spare : g_s[1];
    char victim_id[128], other_id[128];
    snprintf(victim_id, sizeof victim_id, "%s", mesh_self_text(*victim));
    snprintf(other_id, sizeof other_id, "%s", mesh_self_text(other));
    struct pipeline_stats st0, st1;
    pl_stats(&st0);
    g_kill = victim;
    g_kill_after = 6;
    gen(g_reg_r, g_r, g_names[0], 60, got);
    assert_null(*victim); /* it was stopped mid-stream */
    pl_stats(&st1);
    print_message("recoveries %llu, replayed %llu positions, %d tokens, ran on %s\n",
                  (unsigned long long)(st1.n_recoveries - st0.n_recoveries),
                  (unsigned long long)(st1.n_replayed - st0.n_replayed), got->n_ids,
                  got->ran_on);
    assert_true(st1.n_recoveries > st0.n_recoveries);
    assert_true(st1.n_replayed > st0.n_replayed);
    assert_string_equal(got->finish, want->finish);
    assert_int_equal(got->n_ids, want->n_ids);
    assert_true(want->n_ids > g_kill_after);
    assert_memory_equal(got->ids, want->ids, (size_t)want->n_ids * sizeof want->ids[0]);
    assert_non_null(strstr(got->ran_on, other_id));
    assert_null(strstr(got->ran_on, victim_id));
    /* stopped mid-stream from here on: the stopped one is always g_s[1]'s slot or the spare */
    if (victim == &g_spare) {
        registry_free(g_reg_spare);
        g_reg_spare = NULL;
    }
    free(want);
    free(got);
}

/* The last middle stage stops mid-stream with no replacement: the request ends with an
 * error (and quickly); a new stage for the range joins and R answers right again. */
static void test_stage_recovery_without_spare_fails_then_serves(void **state)
{
    (void)state;
    struct mesh **last = g_s[1] ? &g_s[1] : &g_spare;
    assert_non_null(*last);
    struct result *got = calloc(1, sizeof *got);
    struct pipeline_stats st0, st1;
    pl_stats(&st0);
    g_kill = last;
    g_kill_after = 4;
    gen(g_reg_r, g_r, g_names[0], 60, got);
    assert_null(*last);
    pl_stats(&st1);
    print_message("finish %s after %d tokens; failures %llu\n", got->finish, got->n_ids,
                  (unsigned long long)(st1.n_failures - st0.n_failures));
    assert_string_equal(got->finish, "error");
    assert_true(got->n_ids < 60);
    assert_true(st1.n_failures > st0.n_failures);
    assert_int_equal(st1.n_recoveries, st0.n_recoveries);
    /* the node keeps serving: a new stage for the range, and the output is right again */
    struct registry *reg = NULL;
    struct mesh *m = spare_start("S2c", &reg);
    struct result *want = calloc(1, sizeof *want);
    gen(g_full, NULL, g_names[0], 24, want);
    gen(g_reg_r, g_r, g_names[0], 24, got);
    assert_string_equal(got->finish, want->finish);
    assert_int_equal(got->n_ids, want->n_ids);
    assert_memory_equal(got->ids, want->ids, (size_t)want->n_ids * sizeof want->ids[0]);
    assert_non_null(strstr(got->ran_on, mesh_self_text(m)));
    mesh_stop(m);
    registry_free(reg);
    free(want);
    free(got);
}

static void test_stage_non_member_refused(void **state)
{
    (void)state;
    struct probe p = {.model = 0};
    p.b = g_n_layer[0] / 3;
    p.e = 2 * g_n_layer[0] / 3;
    enum registry_state st;
    p.n_embd = model_hparams(registry_at(g_reg_s[1], 0, &st)->model)->n_embd;
    struct peer_id s2 = *p2pnode_peer_id(mesh_p2pnode(g_s[1]));
    assert_int_equal(stage_conn_new(g_x, &s2, &g_s_addr[1], &p.c), 0);
    struct stage_reply rep;
    int rc = send_one(&p, 1, 0, 2, 0, p.n_embd, &rep);
    assert_int_equal(rc, MESH_EIO); /* refused: no answer, the stream fails */
    stage_conn_free(p.c, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stage_wire_roundtrip_and_garbage),
        cmocka_unit_test(test_stage_plan_covers_layers),
        cmocka_unit_test(test_stage_kv_types_reach_stage_and_sched),
        cmocka_unit_test(test_stage_pipeline_stories_equals_single),
        cmocka_unit_test(test_stage_pipeline_random_equals_single),
        cmocka_unit_test(test_stage_pipeline_spec_equals_single),
        cmocka_unit_test(test_stage_loads_only_its_range),
        cmocka_unit_test(test_stage_garbage_and_busy_keep_serving),
        cmocka_unit_test(test_stage_non_member_refused),
        cmocka_unit_test(test_stage_recovery_replaces_stopped_stage),
        cmocka_unit_test(test_stage_recovery_without_spare_fails_then_serves),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
