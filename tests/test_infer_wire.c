/* test_infer_wire.c - the /meshllm/infer/1 codec (node/infer_wire.c, node/infer_internal.h)
 * without a network: requests and frames round trip with every field; the limits refuse on
 * both sides (MESH_ERANGE/MESH_EINVAL when we encode, MESH_EPROTO for a peer's hand-made
 * protobuf); error frames map to fail BUSY or REFUSED; infer_chunk_part splits output too big
 * for one frame into frames under INFER_MAX_FRAME that reassemble exactly; truncated input is
 * refused. The stream behaviour is tests/test_infer.c; random input is tests/fuzz/fuzz_infer.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "node/infer_internal.h"

#include "infer.pb-c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static void lp_set(struct node_lp *l, int32_t id, const char *text, float logprob, int n_top)
{
    memset(l, 0, sizeof *l);
    l->id = id;
    l->tok.len = (int)strlen(text);
    memcpy(l->tok.text, text, (size_t)l->tok.len);
    l->tok.logprob = logprob;
    l->n_top = n_top;
    for (int k = 0; k < n_top; k++) {
        l->top[k].len = snprintf(l->top[k].text, NODE_PIECE_CAP, "%s#%d", text, k);
        l->top[k].logprob = logprob - 0.25f * (float)(k + 1);
    }
}

static void assert_entry_equal(const struct node_lp_entry *a, const struct node_lp_entry *b)
{
    assert_int_equal(a->len, b->len);
    assert_memory_equal(a->text, b->text, (size_t)a->len);
    assert_true(a->logprob == b->logprob);
}

static void assert_lp_equal(const struct node_lp *a, const struct node_lp *b)
{
    assert_int_equal(a->id, b->id);
    assert_entry_equal(&a->tok, &b->tok);
    assert_int_equal(a->n_top, b->n_top);
    for (int k = 0; k < a->n_top; k++) assert_entry_equal(&a->top[k], &b->top[k]);
}

/* Text, cuts (relative to 0), ids and logprobs equal. */
static void assert_output_equal(const struct node_chunk *a, const struct node_chunk *b)
{
    assert_int_equal(a->len, b->len);
    if (a->len) assert_memory_equal(a->text, b->text, a->len);
    assert_int_equal(a->n_cuts, b->n_cuts);
    for (int i = 0; i < a->n_cuts; i++) assert_int_equal(a->cuts[i], b->cuts[i]);
    assert_int_equal(a->n_ids, b->n_ids);
    if (a->n_ids) assert_memory_equal(a->ids, b->ids, (size_t)a->n_ids * sizeof *a->ids);
    assert_int_equal(a->n_lps, b->n_lps);
    for (int i = 0; i < a->n_lps; i++) assert_lp_equal(&a->lps[i], &b->lps[i]);
}

static void request_round_trip(const struct node_gen_req *in, struct node_gen_req *out)
{
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(infer_request_encode(in, &b, &len), 0);
    assert_non_null(b);
    assert_int_equal(infer_request_decode(b, len, out), 0);
    free(b);
}

static void frame_round_trip(const struct node_chunk *in, size_t cut_base, struct node_chunk *out)
{
    uint8_t *b = NULL;
    size_t len = 0;
    bool is_error = true;
    assert_int_equal(infer_frame_encode(in, cut_base, &b, &len), 0);
    assert_true(len <= INFER_MAX_FRAME);
    assert_int_equal(infer_frame_decode(b, len, out, &is_error), 0);
    assert_false(is_error);
    free(b);
}

/* ---- requests ----------------------------------------------------------------------------- */

static void test_infer_wire_chat_round_trip(void **state)
{
    (void)state;
    struct node_msg msgs[] = {
        {.role = "system", .content = "Answer in one line."},
        {.role = "user", .content = "Who wrote \"Kademlia\"?"},
        {.role = "assistant", .content = "",
         .tool_calls_json = "[{\"id\":\"call_1\",\"type\":\"function\",\"function\":"
                            "{\"name\":\"search\",\"arguments\":\"{}\"}}]"},
        {.role = "tool", .content = "caf\xc3\xa9 \xe2\x98\x95", .tool_call_id = "call_1",
         .name = "search"}};
    char *stop[] = {"\n", "User:", ""};
    int32_t cont[] = {0, 1, 31999, 2147483647};
    struct node_gen_req r, d;
    node_gen_req_init(&r);
    r.kind = NODE_KIND_CHAT;
    r.model = "tinyllama-1.1b-chat.Q4_K_M";
    r.msgs = msgs;
    r.n_msgs = 4;
    r.json_mode = true;
    r.tools_json = "[{\"type\":\"function\",\"function\":{\"name\":\"search\"}}]";
    r.temperature = 0.3f;
    r.top_p = 0.95f;
    r.min_p = 0.05f;
    r.repeat_penalty = 1.15f;
    r.presence_penalty = -0.5f;
    r.frequency_penalty = 1.75f;
    r.top_k = 40;
    r.has_seed = true;
    r.seed = UINT64_MAX - 7;
    r.max_tokens = 256;
    r.max_tokens_must_fit = true;
    memcpy(r.stop, stop, sizeof stop);
    r.n_stop = 3;
    r.n_logprobs = NODE_MAX_TOP_LOGPROBS;
    r.strip_leading_space = true;
    r.route = NODE_ROUTE_MESH;
    r.cont_ids = cont;
    r.n_cont = 4;
    r.grammar = "root ::= \"{\" [^}]* \"}\" # é\n";
    request_round_trip(&r, &d);
    assert_int_equal(d.kind, NODE_KIND_CHAT);
    assert_int_equal(d.route, NODE_ROUTE_LOCAL); /* a delegated request is never delegated again */
    assert_string_equal(d.model, r.model);
    assert_int_equal(d.n_msgs, 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(d.msgs[i].role, msgs[i].role);
        assert_string_equal(d.msgs[i].content, msgs[i].content);
    }
    assert_null(d.msgs[1].tool_calls_json);
    assert_string_equal(d.msgs[2].tool_calls_json, msgs[2].tool_calls_json);
    assert_string_equal(d.msgs[3].tool_call_id, "call_1");
    assert_string_equal(d.msgs[3].name, "search");
    assert_null(d.msgs[2].tool_call_id);
    assert_string_equal(d.tools_json, r.tools_json);
    assert_null(d.prompt);
    assert_null(d.system);
    assert_false(d.raw);
    assert_true(d.json_mode);
    assert_true(d.temperature == 0.3f && d.top_p == 0.95f && d.min_p == 0.05f);
    assert_true(d.repeat_penalty == 1.15f && d.presence_penalty == -0.5f);
    assert_true(d.frequency_penalty == 1.75f);
    assert_int_equal(d.top_k, 40);
    assert_true(d.has_seed);
    assert_true(d.seed == UINT64_MAX - 7);
    assert_int_equal(d.max_tokens, 256);
    assert_true(d.max_tokens_must_fit);
    assert_int_equal(d.n_stop, 3);
    for (int i = 0; i < 3; i++) assert_string_equal(d.stop[i], stop[i]);
    assert_null(d.stop[3]);
    assert_int_equal(d.n_logprobs, NODE_MAX_TOP_LOGPROBS);
    assert_true(d.strip_leading_space);
    assert_int_equal(d.n_cont, 4);
    assert_memory_equal(d.cont_ids, cont, sizeof cont);
    assert_string_equal(d.grammar, r.grammar); /* a delegated request stays constrained */
    node_gen_req_free(&d);
}

static void test_infer_wire_completion_round_trip(void **state)
{
    (void)state;
    struct node_gen_req r, d;
    node_gen_req_init(&r);
    r.kind = NODE_KIND_COMPLETION;
    r.model = "stories260K";
    r.prompt = "Once upon a time";
    r.system = "You tell stories.";
    r.raw = true;
    r.temperature = 0;
    r.max_tokens = -1;
    r.n_logprobs = 0;
    request_round_trip(&r, &d);
    assert_int_equal(d.kind, NODE_KIND_COMPLETION);
    assert_int_equal(d.route, NODE_ROUTE_LOCAL);
    assert_string_equal(d.prompt, "Once upon a time");
    assert_string_equal(d.system, "You tell stories.");
    assert_true(d.raw);
    assert_false(d.json_mode);
    assert_int_equal(d.n_msgs, 0);
    assert_null(d.msgs);
    assert_true(d.temperature == 0.0f && d.top_p == 1.0f && d.repeat_penalty == 1.0f);
    assert_false(d.has_seed); /* absent stays absent: the server picks a random seed */
    assert_int_equal(d.max_tokens, -1);
    assert_int_equal(d.n_stop, 0);
    assert_int_equal(d.n_logprobs, 0);
    assert_int_equal(d.n_cont, 0);
    assert_null(d.cont_ids);
    assert_null(d.grammar); /* an old peer's request (no field 23): unconstrained */
    node_gen_req_free(&d);
    /* the defaults survive a trip (n_logprobs -1: none) */
    node_gen_req_init(&r);
    r.kind = NODE_KIND_COMPLETION;
    r.model = "m";
    request_round_trip(&r, &d);
    assert_null(d.prompt);
    assert_int_equal(d.n_logprobs, -1);
    assert_true(d.temperature == 1.0f);
    node_gen_req_free(&d);
}

static void test_infer_wire_request_encode_limits(void **state)
{
    (void)state;
    uint8_t *b = (uint8_t *)"not touched";
    size_t len = 1;
    struct node_gen_req r;
    struct node_msg one = {.role = "user", .content = "hi"};
    node_gen_req_init(&r);
    r.kind = NODE_KIND_CHAT;
    r.model = "m";
    r.msgs = &one;
    r.n_msgs = 1;
    assert_int_equal(infer_request_encode(&r, &b, &len), 0);
    free(b);
    /* too many messages (checked before the array is read) */
    r.n_msgs = INFER_MAX_MSGS + 1;
    assert_int_equal(infer_request_encode(&r, &b, &len), MESH_ERANGE);
    assert_null(b);
    assert_int_equal(len, 0);
    r.n_msgs = 1;
    /* a model name too long */
    char name[INFER_MAX_NAME + 2];
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = 0;
    r.model = name;
    assert_int_equal(infer_request_encode(&r, &b, &len), MESH_ERANGE);
    name[INFER_MAX_NAME] = 0; /* exactly the limit is fine */
    assert_int_equal(infer_request_encode(&r, &b, &len), 0);
    free(b);
    r.model = "m";
    r.n_stop = NODE_MAX_STOP + 1;
    assert_int_equal(infer_request_encode(&r, &b, &len), MESH_ERANGE);
    r.n_stop = 0;
    r.n_logprobs = NODE_MAX_TOP_LOGPROBS + 1;
    assert_int_equal(infer_request_encode(&r, &b, &len), MESH_ERANGE);
    r.n_logprobs = -2;
    assert_int_equal(infer_request_encode(&r, &b, &len), MESH_ERANGE);
    r.n_logprobs = -1;
    r.n_stop = 1; /* a counted stop string that is not there */
    assert_int_equal(infer_request_encode(&r, &b, &len), MESH_EINVAL);
    r.n_stop = 0;
    /* a request bigger than INFER_MAX_REQUEST */
    char *big = malloc(INFER_MAX_REQUEST + 1);
    assert_non_null(big);
    memset(big, 'x', INFER_MAX_REQUEST);
    big[INFER_MAX_REQUEST] = 0;
    one.content = big;
    assert_int_equal(infer_request_encode(&r, &b, &len), MESH_ERANGE);
    assert_null(b);
    free(big);
    one.content = "hi";
    /* embeddings are not delegated */
    r.kind = NODE_KIND_EMBEDDING;
    assert_int_equal(infer_request_encode(&r, &b, &len), MESH_EINVAL);
    r.kind = (enum node_kind)0;
    assert_int_equal(infer_request_encode(&r, &b, &len), MESH_EINVAL);
}

/* A peer's request, written with protobuf-c directly so it can break every rule. */
enum req_breakage {
    REQ_VALID, REQ_VERSION_2, REQ_NO_VERSION, REQ_KIND_EMBEDDING, REQ_NO_KIND, REQ_NO_MODEL,
    REQ_EMPTY_MODEL, REQ_NUL_IN_MODEL, REQ_LONG_MODEL, REQ_TOO_MANY_MSGS, REQ_EMPTY_ROLE,
    REQ_NO_ROLE, REQ_LONG_ROLE, REQ_NUL_IN_CONTENT, REQ_TOO_MANY_STOPS, REQ_NUL_IN_STOP,
    REQ_LOGPROBS_21, REQ_LOGPROBS_MINUS_2, REQ_NAN_TEMPERATURE, REQ_INF_TOP_P,
    REQ_NEGATIVE_CONT_ID, REQ_COUNT
};

static int decode_broken(enum req_breakage k)
{
    static Meshinfer__Msg msgs[INFER_MAX_MSGS + 1];
    static Meshinfer__Msg *pmsgs[INFER_MAX_MSGS + 1];
    static char long_name[INFER_MAX_NAME + 1];
    ProtobufCBinaryData stops[NODE_MAX_STOP + 1];
    int32_t cont[2] = {5, 6};
    Meshinfer__InferRequest m = MESHINFER__INFER_REQUEST__INIT;
    memset(long_name, 'r', sizeof long_name);
    for (int i = 0; i <= INFER_MAX_MSGS; i++) {
        meshinfer__msg__init(&msgs[i]);
        msgs[i].has_role = msgs[i].has_content = true;
        msgs[i].role = (ProtobufCBinaryData){4, (uint8_t *)"user"};
        msgs[i].content = (ProtobufCBinaryData){2, (uint8_t *)"hi"};
        pmsgs[i] = &msgs[i];
    }
    for (int i = 0; i <= NODE_MAX_STOP; i++) stops[i] = (ProtobufCBinaryData){3, (uint8_t *)"end"};
    m.has_version = m.has_kind = m.has_model = true;
    m.version = 1;
    m.kind = NODE_KIND_CHAT;
    m.model = (ProtobufCBinaryData){1, (uint8_t *)"m"};
    m.n_messages = 2;
    m.messages = pmsgs;
    m.n_stop = 1;
    m.stop = stops;
    m.n_cont_ids = 2;
    m.cont_ids = cont;
    switch (k) {
    case REQ_VALID: break;
    case REQ_VERSION_2: m.version = 2; break;
    case REQ_NO_VERSION: m.has_version = false; break;
    case REQ_KIND_EMBEDDING: m.kind = NODE_KIND_EMBEDDING; break;
    case REQ_NO_KIND: m.has_kind = false; break;
    case REQ_NO_MODEL: m.has_model = false; break;
    case REQ_EMPTY_MODEL: m.model.len = 0; break;
    case REQ_NUL_IN_MODEL: m.model = (ProtobufCBinaryData){3, (uint8_t *)"m\0x"}; break;
    case REQ_LONG_MODEL: m.model = (ProtobufCBinaryData){INFER_MAX_NAME + 1, (uint8_t *)long_name}; break;
    case REQ_TOO_MANY_MSGS: m.n_messages = INFER_MAX_MSGS + 1; break;
    case REQ_EMPTY_ROLE: msgs[1].role.len = 0; break;
    case REQ_NO_ROLE: msgs[1].has_role = false; break;
    case REQ_LONG_ROLE: msgs[1].role = (ProtobufCBinaryData){INFER_MAX_NAME + 1, (uint8_t *)long_name}; break;
    case REQ_NUL_IN_CONTENT: msgs[0].content = (ProtobufCBinaryData){3, (uint8_t *)"h\0i"}; break;
    case REQ_TOO_MANY_STOPS: m.n_stop = NODE_MAX_STOP + 1; break;
    case REQ_NUL_IN_STOP: stops[0] = (ProtobufCBinaryData){2, (uint8_t *)"\0e"}; break;
    case REQ_LOGPROBS_21: m.has_n_logprobs = true; m.n_logprobs = 21; break;
    case REQ_LOGPROBS_MINUS_2: m.has_n_logprobs = true; m.n_logprobs = -2; break;
    case REQ_NAN_TEMPERATURE: m.has_temperature = true; m.temperature = NAN; break;
    case REQ_INF_TOP_P: m.has_top_p = true; m.top_p = INFINITY; break;
    case REQ_NEGATIVE_CONT_ID: cont[1] = -1; break;
    case REQ_COUNT: break;
    }
    size_t len = meshinfer__infer_request__get_packed_size(&m);
    uint8_t *b = malloc(len);
    assert_non_null(b);
    meshinfer__infer_request__pack(&m, b);
    struct node_gen_req r;
    int rc = infer_request_decode(b, len, &r);
    if (rc) { /* a refused request leaves nothing behind */
        assert_null(r.model);
        assert_null(r.msgs);
        assert_int_equal(r.n_msgs, 0);
        assert_null(r.stop[0]);
        assert_null(r.cont_ids);
    } else {
        assert_string_equal(r.model, "m");
        assert_int_equal(r.n_msgs, 2);
        assert_int_equal(r.n_cont, 2);
    }
    node_gen_req_free(&r);
    free(b);
    return rc;
}

static void test_infer_wire_request_decode_refusals(void **state)
{
    (void)state;
    assert_int_equal(decode_broken(REQ_VALID), 0);
    for (int k = REQ_VALID + 1; k < REQ_COUNT; k++) {
        print_message("breakage %d\n", k);
        assert_int_equal(decode_broken((enum req_breakage)k), MESH_EPROTO);
    }
    /* bigger than INFER_MAX_REQUEST: refused before parsing */
    uint8_t *big = calloc(1, INFER_MAX_REQUEST + 1);
    assert_non_null(big);
    struct node_gen_req r;
    assert_int_equal(infer_request_decode(big, INFER_MAX_REQUEST + 1, &r), MESH_EPROTO);
    free(big);
    /* not protobuf at all, and nothing */
    assert_int_equal(infer_request_decode((const uint8_t *)"\xff\xff\xff", 3, &r), MESH_EPROTO);
    assert_int_equal(infer_request_decode(NULL, 0, &r), MESH_EPROTO);
}

/* ---- frames ------------------------------------------------------------------------------- */

static void test_infer_wire_frame_round_trip(void **state)
{
    (void)state;
    char text[] = "Once upon a time";
    size_t cuts[] = {4, 9, 11, 11, 16}; /* an empty piece (a token with no text) is kept */
    int32_t ids[] = {9038, 2501, 263, 0, 931};
    struct node_lp lps[3];
    lp_set(&lps[0], 9038, "Once", -0.01f, NODE_MAX_TOP_LOGPROBS);
    lp_set(&lps[1], 2501, " upon", -INFINITY, 2);
    lp_set(&lps[2], 263, "", 0.0f, 0);
    lps[1].tok.len = NODE_PIECE_CAP; /* a full piece buffer */
    memset(lps[1].tok.text, 'z', NODE_PIECE_CAP);
    struct node_chunk c = {.text = text, .len = 16, .cuts = cuts, .n_cuts = 5, .ids = ids,
                           .n_ids = 5, .lps = lps, .n_lps = 3};
    struct node_chunk d;
    frame_round_trip(&c, 0, &d);
    assert_output_equal(&c, &d);
    assert_int_equal(d.text[d.len], 0);
    assert_false(d.done);
    assert_null(d.finish_reason);
    node_chunk_free(&d);
    /* a part: cuts relative to cut_base */
    size_t part_cuts[] = {104, 109};
    struct node_chunk p = {.text = text, .len = 9, .cuts = part_cuts, .n_cuts = 2};
    frame_round_trip(&p, 100, &d);
    assert_int_equal(d.n_cuts, 2);
    assert_int_equal(d.cuts[0], 4);
    assert_int_equal(d.cuts[1], 9);
    node_chunk_free(&d);
    /* the last frame: done, finish, usage */
    c.done = true;
    c.finish_reason = "length";
    c.n_prompt = 123;
    c.n_gen = 45;
    c.n_cached = 67;
    frame_round_trip(&c, 0, &d);
    assert_output_equal(&c, &d);
    assert_true(d.done);
    assert_string_equal(d.finish_reason, "length");
    assert_int_equal(d.fail, NODE_FAIL_NONE);
    assert_int_equal(d.n_prompt, 123);
    assert_int_equal(d.n_gen, 45);
    assert_int_equal(d.n_cached, 67);
    node_chunk_free(&d);
    /* an empty frame is a valid frame */
    struct node_chunk e = {0};
    frame_round_trip(&e, 0, &d);
    assert_int_equal(d.len, 0);
    assert_null(d.text);
    assert_false(d.done);
    node_chunk_free(&d);
}

static void test_infer_wire_frame_finish_and_fail(void **state)
{
    (void)state;
    static const char *const names[] = {"stop", "length", "cancelled", "error"};
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(infer_finish_code(names[i]), i + 1);
        assert_string_equal(infer_finish_name(i + 1), names[i]);
        struct node_chunk c = {.done = true, .finish_reason = names[i], .n_gen = 3};
        struct node_chunk d;
        frame_round_trip(&c, 0, &d);
        assert_string_equal(d.finish_reason, names[i]);
        assert_int_equal(d.n_gen, 3);
        node_chunk_free(&d);
    }
    assert_int_equal(infer_finish_code("eos"), 0);
    assert_int_equal(infer_finish_code(NULL), 0);
    assert_null(infer_finish_name(0));
    assert_null(infer_finish_name(5));
    /* finish error with the reason: fail and err travel */
    struct node_chunk c = {.done = true, .finish_reason = "error", .fail = NODE_FAIL_ENGINE};
    node_error_set(&c.err, 500, "server_error", NULL, NULL, "NaN in the logits at token %d", 7);
    struct node_chunk d;
    frame_round_trip(&c, 0, &d);
    assert_int_equal(d.fail, NODE_FAIL_ENGINE);
    assert_int_equal(d.err.status, 500);
    assert_string_equal(d.err.type, "server_error");
    assert_string_equal(d.err.message, "NaN in the logits at token 7");
    node_chunk_free(&d);
    /* ... or without: the client still gets an error it can show */
    struct node_chunk bare = {.done = true, .finish_reason = "error"};
    frame_round_trip(&bare, 0, &d);
    assert_int_equal(d.fail, NODE_FAIL_ENGINE);
    assert_int_equal(d.err.status, 500);
    assert_string_equal(d.err.type, "server_error");
    assert_true(strlen(d.err.message) > 0);
    node_chunk_free(&d);
    /* what the encoder refuses */
    uint8_t *b = NULL;
    size_t len = 0;
    struct node_chunk bad = {.done = true, .finish_reason = "eos"};
    assert_int_equal(infer_frame_encode(&bad, 0, &b, &len), MESH_EINVAL);
    char text[] = "abc";
    size_t short_cut = 2, long_cut = 4;
    struct node_chunk t = {.text = text, .len = 3, .cuts = &short_cut, .n_cuts = 1};
    assert_int_equal(infer_frame_encode(&t, 0, &b, &len), MESH_EINVAL); /* not at the end */
    t.cuts = &long_cut;
    assert_int_equal(infer_frame_encode(&t, 0, &b, &len), MESH_EINVAL);
    t.n_cuts = 0; /* text with no pieces */
    assert_int_equal(infer_frame_encode(&t, 0, &b, &len), MESH_EINVAL);
    t.cuts = &short_cut;
    t.n_cuts = 1;
    assert_int_equal(infer_frame_encode(&t, 5, &b, &len), MESH_EINVAL); /* before cut_base */
    struct node_lp l;
    lp_set(&l, 1, "x", -1, 0);
    l.n_top = NODE_MAX_TOP_LOGPROBS + 1;
    struct node_chunk tl = {.lps = &l, .n_lps = 1};
    assert_int_equal(infer_frame_encode(&tl, 0, &b, &len), MESH_EINVAL);
    assert_null(b);
}

static void error_frame(const struct node_error *e, struct node_chunk *d)
{
    uint8_t *b = NULL;
    size_t len = 0;
    bool is_error = false;
    assert_int_equal(infer_frame_encode_error(e, &b, &len), 0);
    assert_int_equal(infer_frame_decode(b, len, d, &is_error), 0);
    assert_true(is_error);
    assert_true(d->done);
    assert_string_equal(d->finish_reason, "error");
    free(b);
}

static void test_infer_wire_error_frame(void **state)
{
    (void)state;
    struct node_error e;
    struct node_chunk d;
    node_error_set(&e, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                   "every slot of %s is busy", "stories260K");
    e.retry_after_s = 7;
    error_frame(&e, &d);
    assert_int_equal(d.fail, NODE_FAIL_BUSY);
    assert_int_equal(d.err.status, 429);
    assert_string_equal(d.err.type, "rate_limit_error");
    assert_string_equal(d.err.code, "rate_limit_exceeded");
    assert_null(d.err.param);
    assert_int_equal(d.err.retry_after_s, 7);
    assert_string_equal(d.err.message, "every slot of stories260K is busy");
    node_chunk_free(&d);
    node_error_set(&e, 503, "server_error", "model_loading", NULL, "loading");
    error_frame(&e, &d);
    assert_int_equal(d.fail, NODE_FAIL_BUSY);
    assert_int_equal(d.err.retry_after_s, 0);
    node_chunk_free(&d);
    node_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                   "no model 'x' here");
    error_frame(&e, &d);
    assert_int_equal(d.fail, NODE_FAIL_REFUSED);
    assert_int_equal(d.err.status, 404);
    assert_string_equal(d.err.code, "model_not_found");
    assert_string_equal(d.err.param, "model");
    node_chunk_free(&d);
    static const int refused[] = {400, 413, 500};
    for (int i = 0; i < 3; i++) {
        node_error_set(&e, refused[i], "invalid_request_error", NULL, NULL, "no");
        error_frame(&e, &d);
        assert_int_equal(d.fail, NODE_FAIL_REFUSED);
        node_chunk_free(&d);
    }
    /* a peer's unknown strings: the type falls back, the code and param are dropped */
    node_error_set(&e, 400, "made_up_type", "made_up_code", "made_up_param", "hm");
    error_frame(&e, &d);
    assert_string_equal(d.err.type, "server_error");
    assert_null(d.err.code);
    assert_null(d.err.param);
    node_chunk_free(&d);
    /* no status said: 500 */
    memset(&e, 0, sizeof e);
    error_frame(&e, &d);
    assert_int_equal(d.err.status, 500);
    node_chunk_free(&d);
}

/* A peer's frame, written with protobuf-c directly. */
enum frame_breakage {
    FR_VALID, FR_ERROR_WITH_TEXT, FR_ERROR_WITH_IDS, FR_STATUS_99, FR_STATUS_600, FR_NO_STATUS,
    FR_RETRY_TOO_LONG, FR_LONG_TYPE, FR_CUT_BEYOND, FR_CUTS_DECREASING, FR_LAST_CUT_SHORT,
    FR_TEXT_NO_CUTS, FR_NEGATIVE_ID, FR_LP_NO_TOK, FR_LP_NAN, FR_LP_POSITIVE, FR_LP_LONG_TEXT,
    FR_LP_NO_ID, FR_LP_TOO_MANY_TOP, FR_FINISH_0, FR_FINISH_5, FR_FAIL_5, FR_COUNT
};

static int decode_broken_frame(enum frame_breakage k)
{
    static Meshinfer__LpEntry ents[NODE_MAX_TOP_LOGPROBS + 2], *pents[NODE_MAX_TOP_LOGPROBS + 2];
    static char long_text[INFER_MAX_NAME + 1];
    uint32_t cuts[] = {2, 3};
    int32_t ids[] = {1, 2};
    Meshinfer__Logprob lp = MESHINFER__LOGPROB__INIT, *plp = &lp;
    Meshinfer__InferError err = MESHINFER__INFER_ERROR__INIT;
    Meshinfer__InferFrame f = MESHINFER__INFER_FRAME__INIT;
    memset(long_text, 'q', sizeof long_text);
    for (int i = 0; i < NODE_MAX_TOP_LOGPROBS + 2; i++) {
        meshinfer__lp_entry__init(&ents[i]);
        ents[i].has_text = ents[i].has_logprob = true;
        ents[i].text = (ProtobufCBinaryData){2, (uint8_t *)"ab"};
        ents[i].logprob = -1.0f;
        pents[i] = &ents[i];
    }
    lp.has_id = true;
    lp.id = 1;
    lp.tok = &ents[0];
    lp.n_top = 2;
    lp.top = pents + 1;
    f.has_text = true;
    f.text = (ProtobufCBinaryData){3, (uint8_t *)"abc"};
    f.n_cuts = 2;
    f.cuts = cuts;
    f.n_ids = 2;
    f.ids = ids;
    f.n_lps = 1;
    f.lps = &plp;
    f.has_done = f.has_finish = f.has_fail = true;
    f.done = true;
    f.finish = 1;
    err.has_status = true;
    err.status = 429;
    switch (k) {
    case FR_VALID: break;
    case FR_ERROR_WITH_TEXT:
    case FR_ERROR_WITH_IDS:
    case FR_STATUS_99:
    case FR_STATUS_600:
    case FR_NO_STATUS:
    case FR_RETRY_TOO_LONG:
    case FR_LONG_TYPE:
        /* an error frame: nothing else may come with it */
        f.has_done = f.has_finish = f.has_fail = false;
        f.error = &err;
        if (k != FR_ERROR_WITH_TEXT) {
            f.has_text = false;
            f.n_cuts = 0;
        }
        if (k != FR_ERROR_WITH_IDS) f.n_ids = 0;
        f.n_lps = 0;
        if (k == FR_STATUS_99) err.status = 99;
        if (k == FR_STATUS_600) err.status = 600;
        if (k == FR_NO_STATUS) err.has_status = false;
        err.has_retry_after_s = k == FR_RETRY_TOO_LONG;
        err.retry_after_s = 86401;
        err.has_type = k == FR_LONG_TYPE;
        err.type = (ProtobufCBinaryData){INFER_MAX_NAME + 1, (uint8_t *)long_text};
        break;
    case FR_CUT_BEYOND: cuts[1] = 4; break;
    case FR_CUTS_DECREASING: cuts[0] = 3; cuts[1] = 2; break;
    case FR_LAST_CUT_SHORT: cuts[1] = 2; break;
    case FR_TEXT_NO_CUTS: f.n_cuts = 0; break;
    case FR_NEGATIVE_ID: ids[1] = -5; break;
    case FR_LP_NO_TOK: lp.tok = NULL; break;
    case FR_LP_NAN: ents[2].logprob = NAN; break;
    case FR_LP_POSITIVE: ents[0].logprob = 2.0f; break;
    case FR_LP_LONG_TEXT: ents[0].text = (ProtobufCBinaryData){NODE_PIECE_CAP + 1, (uint8_t *)long_text}; break;
    case FR_LP_NO_ID: lp.has_id = false; break;
    case FR_LP_TOO_MANY_TOP: lp.n_top = NODE_MAX_TOP_LOGPROBS + 1; break;
    case FR_FINISH_0: f.finish = 0; break;
    case FR_FINISH_5: f.finish = 5; break;
    case FR_FAIL_5: f.finish = 4; f.fail = 5; break;
    case FR_COUNT: break;
    }
    size_t len = meshinfer__infer_frame__get_packed_size(&f);
    uint8_t *b = malloc(len);
    assert_non_null(b);
    meshinfer__infer_frame__pack(&f, b);
    struct node_chunk c;
    bool is_error = true;
    int rc = infer_frame_decode(b, len, &c, &is_error);
    if (rc) {
        assert_false(is_error);
        assert_null(c.text);
        assert_null(c.cuts);
        assert_null(c.ids);
        assert_null(c.lps);
        assert_false(c.done);
    } else {
        assert_string_equal(c.text, "abc");
        assert_int_equal(c.n_lps, 1);
        assert_int_equal(c.lps[0].n_top, 2);
    }
    node_chunk_free(&c);
    free(b);
    return rc;
}

static void test_infer_wire_frame_decode_refusals(void **state)
{
    (void)state;
    assert_int_equal(decode_broken_frame(FR_VALID), 0);
    for (int k = FR_VALID + 1; k < FR_COUNT; k++) {
        print_message("breakage %d\n", k);
        assert_int_equal(decode_broken_frame((enum frame_breakage)k), MESH_EPROTO);
    }
    uint8_t *big = calloc(1, INFER_MAX_FRAME + 1);
    assert_non_null(big);
    struct node_chunk c;
    bool is_error;
    assert_int_equal(infer_frame_decode(big, INFER_MAX_FRAME + 1, &c, &is_error), MESH_EPROTO);
    free(big);
}

/* ---- splitting ---------------------------------------------------------------------------- */

/* Output far beyond one frame: 1.2 MB of text in 1000-byte pieces, 100000 ids (10 bytes
 * each in the budget), 1000 logprobs with 20 alternatives of full pieces. */
#define SPLIT_PIECES 1200
#define SPLIT_PIECE_LEN 1000
#define SPLIT_IDS 100000
#define SPLIT_LPS 1000

static void test_infer_wire_chunk_part_splits(void **state)
{
    (void)state;
    struct node_chunk c = {0};
    c.len = (size_t)SPLIT_PIECES * SPLIT_PIECE_LEN;
    c.text = malloc(c.len + 1);
    c.cuts = malloc(SPLIT_PIECES * sizeof *c.cuts);
    c.ids = malloc(SPLIT_IDS * sizeof *c.ids);
    c.lps = calloc(SPLIT_LPS, sizeof *c.lps);
    assert_true(c.text && c.cuts && c.ids && c.lps);
    for (size_t i = 0; i < c.len; i++) c.text[i] = (char)('a' + (i * 7 + i / 1000) % 26);
    c.text[c.len] = 0;
    for (int i = 0; i < SPLIT_PIECES; i++) c.cuts[i] = (size_t)(i + 1) * SPLIT_PIECE_LEN;
    c.n_cuts = SPLIT_PIECES;
    for (int i = 0; i < SPLIT_IDS; i++) c.ids[i] = (i * 7919) % 32000;
    c.n_ids = SPLIT_IDS;
    for (int i = 0; i < SPLIT_LPS; i++) {
        lp_set(&c.lps[i], i, "tok", -0.001f * (float)i, NODE_MAX_TOP_LOGPROBS);
        c.lps[i].tok.len = NODE_PIECE_CAP;
        memset(c.lps[i].tok.text, 'A' + i % 26, NODE_PIECE_CAP);
    }
    c.n_lps = SPLIT_LPS;
    c.done = true;
    c.finish_reason = "stop";
    c.n_prompt = 10;
    c.n_gen = SPLIT_IDS;
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_not_equal(infer_frame_encode(&c, 0, &b, &len), 0); /* one frame cannot hold it */
    /* reassemble the way the client does (infer.c's pend_append) */
    struct node_chunk acc = {0};
    acc.text = malloc(c.len + 1);
    acc.cuts = malloc(SPLIT_PIECES * sizeof *acc.cuts);
    acc.ids = malloc(SPLIT_IDS * sizeof *acc.ids);
    acc.lps = malloc(SPLIT_LPS * sizeof *acc.lps);
    assert_true(acc.text && acc.cuts && acc.ids && acc.lps);
    int piece = 0, id = 0, lp = 0, n_frames = 0;
    bool last = false;
    while (!last) {
        struct node_chunk part, d;
        size_t base = 0;
        assert_int_equal(infer_chunk_part(&c, &piece, &id, &lp, &part, &base, &last), 0);
        assert_true(++n_frames < 100);
        frame_round_trip(&part, base, &d); /* asserts the frame is under INFER_MAX_FRAME */
        assert_true(d.done == last);
        assert_true(acc.len + d.len <= c.len);
        assert_true(acc.n_cuts + d.n_cuts <= SPLIT_PIECES && acc.n_ids + d.n_ids <= SPLIT_IDS);
        assert_true(acc.n_lps + d.n_lps <= SPLIT_LPS);
        for (int i = 0; i < d.n_cuts; i++) acc.cuts[acc.n_cuts++] = acc.len + d.cuts[i];
        if (d.len) memcpy(acc.text + acc.len, d.text, d.len);
        acc.len += d.len;
        if (d.n_ids) memcpy(acc.ids + acc.n_ids, d.ids, (size_t)d.n_ids * sizeof *d.ids);
        acc.n_ids += d.n_ids;
        if (d.n_lps) memcpy(acc.lps + acc.n_lps, d.lps, (size_t)d.n_lps * sizeof *d.lps);
        acc.n_lps += d.n_lps;
        if (last) {
            assert_string_equal(d.finish_reason, "stop");
            assert_int_equal(d.n_prompt, 10);
            assert_int_equal(d.n_gen, SPLIT_IDS);
        }
        node_chunk_free(&d);
    }
    /* 1.2 MB of text + ~1 MB of ids + ~1.4 MB of logprobs against a 512 KiB budget */
    assert_true(n_frames >= 6);
    acc.text[acc.len] = 0;
    assert_output_equal(&c, &acc);
    node_chunk_free(&acc);
    node_chunk_free(&c);
}

static void test_infer_wire_chunk_part_piece_too_big(void **state)
{
    (void)state;
    size_t n = INFER_MAX_FRAME - 100;
    char *text = malloc(n + 1);
    assert_non_null(text);
    memset(text, 'x', n);
    text[n] = 0;
    size_t cut = n;
    struct node_chunk c = {.text = text, .len = n, .cuts = &cut, .n_cuts = 1}, part;
    int piece = 0, id = 0, lp = 0;
    size_t base;
    bool last;
    assert_int_equal(infer_chunk_part(&c, &piece, &id, &lp, &part, &base, &last), MESH_ERANGE);
    /* an empty chunk is one empty last part */
    struct node_chunk e = {.done = true, .finish_reason = "cancelled"};
    piece = id = lp = 0;
    assert_int_equal(infer_chunk_part(&e, &piece, &id, &lp, &part, &base, &last), 0);
    assert_true(last && part.done);
    assert_int_equal(part.len, 0);
    free(text);
}

/* ---- truncation --------------------------------------------------------------------------- */

static void test_infer_wire_truncated(void **state)
{
    (void)state;
    struct node_msg msgs[] = {{.role = "user", .content = "Hello there"}};
    int32_t cont[] = {300, 301, 302};
    struct node_gen_req r, d;
    node_gen_req_init(&r);
    r.kind = NODE_KIND_CHAT;
    r.model = "stories260K";
    r.msgs = msgs;
    r.n_msgs = 1;
    r.cont_ids = cont;
    r.n_cont = 3;
    uint8_t *b;
    size_t len;
    assert_int_equal(infer_request_encode(&r, &b, &len), 0);
    /* cut inside the last field (packed cont_ids), and inside the model name */
    assert_int_equal(infer_request_decode(b, len - 1, &d), MESH_EPROTO);
    const uint8_t *model = memmem(b, len, "stories260K", 11);
    assert_non_null(model);
    assert_int_equal(infer_request_decode(b, (size_t)(model - b) + 5, &d), MESH_EPROTO);
    /* every prefix: refused, or (cut between fields) a valid shorter request */
    for (size_t n = 0; n < len; n++) {
        int rc = infer_request_decode(b, n, &d);
        assert_true(rc == 0 || rc == MESH_EPROTO);
        node_gen_req_free(&d);
    }
    free(b);
    char text[] = "Once upon";
    size_t cuts[] = {4, 9};
    struct node_lp lps[1];
    lp_set(&lps[0], 9038, "Once", -0.5f, 3);
    struct node_chunk c = {.text = text, .len = 9, .cuts = cuts, .n_cuts = 2, .lps = lps,
                           .n_lps = 1, .done = true, .finish_reason = "stop", .n_gen = 2};
    struct node_chunk f;
    bool is_error;
    assert_int_equal(infer_frame_encode(&c, 0, &b, &len), 0);
    assert_int_equal(infer_frame_decode(b, len - 1, &f, &is_error), MESH_EPROTO);
    assert_int_equal(infer_frame_decode(b, 4, &f, &is_error), MESH_EPROTO); /* inside the text */
    for (size_t n = 0; n < len; n++) {
        int rc = infer_frame_decode(b, n, &f, &is_error);
        assert_true(rc == 0 || rc == MESH_EPROTO);
        node_chunk_free(&f);
    }
    free(b);
    struct node_error e;
    node_error_set(&e, 429, "rate_limit_error", NULL, NULL, "busy");
    assert_int_equal(infer_frame_encode_error(&e, &b, &len), 0);
    assert_int_equal(infer_frame_decode(b, len - 1, &f, &is_error), MESH_EPROTO);
    assert_false(is_error);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_infer_wire_chat_round_trip),
        cmocka_unit_test(test_infer_wire_completion_round_trip),
        cmocka_unit_test(test_infer_wire_request_encode_limits),
        cmocka_unit_test(test_infer_wire_request_decode_refusals),
        cmocka_unit_test(test_infer_wire_frame_round_trip),
        cmocka_unit_test(test_infer_wire_frame_finish_and_fail),
        cmocka_unit_test(test_infer_wire_error_frame),
        cmocka_unit_test(test_infer_wire_frame_decode_refusals),
        cmocka_unit_test(test_infer_wire_chunk_part_splits),
        cmocka_unit_test(test_infer_wire_chunk_part_piece_too_big),
        cmocka_unit_test(test_infer_wire_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
