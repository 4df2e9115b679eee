/* infer_wire.c - the /meshllm/infer/1 messages (net/proto/infer.proto) to and from the
 * node's request and chunk structs (node/req.h). Pure functions, no I/O, so the fuzz target
 * drives them directly. Everything a peer sends is checked against the limits of
 * infer_internal.h and node/req.h before it reaches a struct: a violation is MESH_EPROTO.
 * Spec: docs/PROTOCOL.md, /meshllm/infer/1.
 */
#include "node/infer_internal.h"

#include "core/err.h"
#include "node/infer.h"

#include "infer.pb-c.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static ProtobufCBinaryData bin_of(const char *s)
{
    ProtobufCBinaryData b = {s ? strlen(s) : 0, (uint8_t *)s};
    return b;
}

/* A peer's bytes as a C string: no NUL inside (it would silently cut the text), at most
 * max bytes. NULL when absent. Returns 0, MESH_EPROTO or MESH_ENOMEM. */
static int str_from_bin(const ProtobufCBinaryData *b, bool has, size_t max, char **out)
{
    *out = NULL;
    if (!has) return 0;
    if (b->len > max || (b->len && memchr(b->data, 0, b->len))) return MESH_EPROTO;
    char *s = malloc(b->len + 1);
    if (!s) return MESH_ENOMEM;
    if (b->len) memcpy(s, b->data, b->len);
    s[b->len] = 0;
    *out = s;
    return 0;
}

/* Packs m into a malloc'd buffer if it fits max. */
static int pack_msg(const ProtobufCMessage *m, size_t max, uint8_t **out, size_t *out_len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > max) return MESH_ERANGE;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) return MESH_ENOMEM;
    *out_len = protobuf_c_message_pack(m, b);
    *out = b;
    return 0;
}

static const char *const finish_names[] = {NULL, "stop", "length", "cancelled", "error"};

unsigned infer_finish_code(const char *finish_reason)
{
    for (unsigned i = 1; finish_reason && i < 5; i++)
        if (!strcmp(finish_reason, finish_names[i])) return i;
    return 0;
}

const char *infer_finish_name(unsigned code)
{
    return code >= 1 && code < 5 ? finish_names[code] : NULL;
}

/* node_error's type/code/param are static strings: a peer's are mapped to ours. */
static const char *const known_types[] = {"invalid_request_error", "server_error",
                                          "rate_limit_error", "not_found_error", NULL};
static const char *const known_codes[] = {
    "model_not_found", "model_loading",   "model_unavailable", "context_length_exceeded",
    "rate_limit_exceeded", "shutting_down", "too_many_requests", "invalid_value",
    "unsupported", "too_many_streams", "peer_lost", "peer_unreachable", NULL};
static const char *const known_params[] = {"model", "messages", "prompt", "input",
                                           "max_tokens", "stop", "logprobs", "top_logprobs",
                                           "temperature", "top_p", "seed", NULL};

static const char *intern(const ProtobufCBinaryData *b, bool has, const char *const *table)
{
    for (int i = 0; has && table[i]; i++)
        if (b->len == strlen(table[i]) && !memcmp(b->data, table[i], b->len)) return table[i];
    return NULL;
}

static bool finite_or_absent(bool has, float v) { return !has || isfinite(v); }

/* ---- request ------------------------------------------------------------------------------ */

int infer_request_encode(const struct node_gen_req *r, uint8_t **out, size_t *out_len)
{
    Meshinfer__InferRequest m = MESHINFER__INFER_REQUEST__INIT;
    Meshinfer__Msg *msgs = NULL, **pmsgs = NULL;
    ProtobufCBinaryData stop[NODE_MAX_STOP];
    int rc = 0;
    *out = NULL;
    *out_len = 0;
    if (r->kind != NODE_KIND_CHAT && r->kind != NODE_KIND_COMPLETION) return MESH_EINVAL;
    if (r->n_msgs < 0 || r->n_msgs > INFER_MAX_MSGS || r->n_stop < 0 ||
        r->n_stop > NODE_MAX_STOP || r->n_logprobs < -1 ||
        r->n_logprobs > NODE_MAX_TOP_LOGPROBS || r->n_cont < 0 ||
        (r->model && strlen(r->model) > INFER_MAX_NAME))
        return MESH_ERANGE;
    m.has_version = m.has_kind = true;
    m.version = INFER_VERSION;
    m.kind = (uint32_t)r->kind;
    m.has_model = r->model != NULL;
    m.model = bin_of(r->model);
    if (r->n_msgs > 0) {
        msgs = calloc((size_t)r->n_msgs, sizeof *msgs);
        pmsgs = calloc((size_t)r->n_msgs, sizeof *pmsgs);
        if (!msgs || !pmsgs) {
            rc = MESH_ENOMEM;
            goto out;
        }
        for (int i = 0; i < r->n_msgs; i++) {
            meshinfer__msg__init(&msgs[i]);
            msgs[i].has_role = r->msgs[i].role != NULL;
            msgs[i].role = bin_of(r->msgs[i].role);
            msgs[i].has_content = r->msgs[i].content != NULL;
            msgs[i].content = bin_of(r->msgs[i].content);
            msgs[i].has_tool_calls_json = r->msgs[i].tool_calls_json != NULL;
            msgs[i].tool_calls_json = bin_of(r->msgs[i].tool_calls_json);
            msgs[i].has_tool_call_id = r->msgs[i].tool_call_id != NULL;
            msgs[i].tool_call_id = bin_of(r->msgs[i].tool_call_id);
            msgs[i].has_name = r->msgs[i].name != NULL;
            msgs[i].name = bin_of(r->msgs[i].name);
            pmsgs[i] = &msgs[i];
        }
        m.n_messages = (size_t)r->n_msgs;
        m.messages = pmsgs;
    }
    m.has_prompt = r->prompt != NULL;
    m.prompt = bin_of(r->prompt);
    m.has_system = r->system != NULL;
    m.system = bin_of(r->system);
    m.has_tools_json = r->tools_json != NULL;
    m.tools_json = bin_of(r->tools_json);
    m.has_raw = m.has_json_mode = m.has_max_tokens_must_fit = m.has_strip_leading_space = true;
    m.raw = r->raw;
    m.json_mode = r->json_mode;
    m.max_tokens_must_fit = r->max_tokens_must_fit;
    m.strip_leading_space = r->strip_leading_space;
    m.has_temperature = m.has_top_p = m.has_min_p = m.has_repeat_penalty = true;
    m.has_presence_penalty = m.has_frequency_penalty = m.has_top_k = true;
    m.temperature = r->temperature;
    m.top_p = r->top_p;
    m.min_p = r->min_p;
    m.repeat_penalty = r->repeat_penalty;
    m.presence_penalty = r->presence_penalty;
    m.frequency_penalty = r->frequency_penalty;
    m.top_k = r->top_k;
    m.has_seed = r->has_seed;
    m.seed = r->seed;
    m.has_max_tokens = true;
    m.max_tokens = r->max_tokens;
    for (int i = 0; i < r->n_stop; i++) {
        if (!r->stop[i]) {
            rc = MESH_EINVAL;
            goto out;
        }
        stop[i] = bin_of(r->stop[i]);
    }
    m.n_stop = (size_t)r->n_stop;
    m.stop = stop;
    m.has_n_logprobs = true;
    m.n_logprobs = r->n_logprobs;
    m.n_cont_ids = r->cont_ids ? (size_t)r->n_cont : 0;
    m.cont_ids = r->cont_ids;
    m.has_grammar = r->grammar != NULL;
    m.grammar = bin_of(r->grammar);
    rc = pack_msg(&m.base, INFER_MAX_REQUEST, out, out_len);
out:
    free(pmsgs);
    free(msgs);
    return rc;
}

/* The sampling parameters and flags of m into r (r holds node_gen_req_init's defaults). */
static int request_params(const Meshinfer__InferRequest *m, struct node_gen_req *r)
{
    if (!finite_or_absent(m->has_temperature, m->temperature) ||
        !finite_or_absent(m->has_top_p, m->top_p) || !finite_or_absent(m->has_min_p, m->min_p) ||
        !finite_or_absent(m->has_repeat_penalty, m->repeat_penalty) ||
        !finite_or_absent(m->has_presence_penalty, m->presence_penalty) ||
        !finite_or_absent(m->has_frequency_penalty, m->frequency_penalty))
        return MESH_EPROTO;
    if (m->has_temperature) r->temperature = m->temperature;
    if (m->has_top_p) r->top_p = m->top_p;
    if (m->has_min_p) r->min_p = m->min_p;
    if (m->has_repeat_penalty) r->repeat_penalty = m->repeat_penalty;
    if (m->has_presence_penalty) r->presence_penalty = m->presence_penalty;
    if (m->has_frequency_penalty) r->frequency_penalty = m->frequency_penalty;
    if (m->has_top_k) r->top_k = m->top_k;
    r->has_seed = m->has_seed;
    r->seed = m->seed;
    if (m->has_max_tokens) r->max_tokens = m->max_tokens;
    r->raw = m->has_raw && m->raw;
    r->json_mode = m->has_json_mode && m->json_mode;
    r->max_tokens_must_fit = m->has_max_tokens_must_fit && m->max_tokens_must_fit;
    r->strip_leading_space = m->has_strip_leading_space && m->strip_leading_space;
    if (m->has_n_logprobs) {
        if (m->n_logprobs < -1 || m->n_logprobs > NODE_MAX_TOP_LOGPROBS) return MESH_EPROTO;
        r->n_logprobs = m->n_logprobs;
    }
    return 0;
}

/* Strings and arrays of m into r. */
static int request_texts(const Meshinfer__InferRequest *m, struct node_gen_req *r)
{
    int rc;
    if (!m->has_model || m->model.len == 0) return MESH_EPROTO;
    if ((rc = str_from_bin(&m->model, true, INFER_MAX_NAME, &r->model)) ||
        (rc = str_from_bin(&m->prompt, m->has_prompt, INFER_MAX_REQUEST, &r->prompt)) ||
        (rc = str_from_bin(&m->system, m->has_system, INFER_MAX_REQUEST, &r->system)) ||
        (rc = str_from_bin(&m->tools_json, m->has_tools_json, INFER_MAX_REQUEST, &r->tools_json)) ||
        (rc = str_from_bin(&m->grammar, m->has_grammar, INFER_MAX_REQUEST, &r->grammar)))
        return rc;
    if (m->n_messages > INFER_MAX_MSGS || m->n_stop > NODE_MAX_STOP) return MESH_EPROTO;
    if (m->n_messages) {
        r->msgs = calloc(m->n_messages, sizeof *r->msgs);
        if (!r->msgs) return MESH_ENOMEM;
        r->n_msgs = (int)m->n_messages;
        for (size_t i = 0; i < m->n_messages; i++) {
            const Meshinfer__Msg *g = m->messages[i];
            if (!g->has_role || !g->role.len) return MESH_EPROTO;
            if ((rc = str_from_bin(&g->role, true, INFER_MAX_NAME, &r->msgs[i].role)) ||
                (rc = str_from_bin(&g->content, true, INFER_MAX_REQUEST, &r->msgs[i].content)) ||
                (rc = str_from_bin(&g->tool_calls_json, g->has_tool_calls_json, INFER_MAX_REQUEST,
                                   &r->msgs[i].tool_calls_json)) ||
                (rc = str_from_bin(&g->tool_call_id, g->has_tool_call_id, INFER_MAX_NAME,
                                   &r->msgs[i].tool_call_id)) ||
                (rc = str_from_bin(&g->name, g->has_name, INFER_MAX_NAME, &r->msgs[i].name)))
                return rc;
        }
    }
    for (size_t i = 0; i < m->n_stop; i++) {
        if ((rc = str_from_bin(&m->stop[i], true, INFER_MAX_REQUEST, &r->stop[i]))) return rc;
        r->n_stop = (int)i + 1;
    }
    if (m->n_cont_ids) {
        for (size_t i = 0; i < m->n_cont_ids; i++)
            if (m->cont_ids[i] < 0) return MESH_EPROTO;
        r->cont_ids = malloc(m->n_cont_ids * sizeof *r->cont_ids);
        if (!r->cont_ids) return MESH_ENOMEM;
        memcpy(r->cont_ids, m->cont_ids, m->n_cont_ids * sizeof *r->cont_ids);
        r->n_cont = (int)m->n_cont_ids;
    }
    return 0;
}

int infer_request_decode(const uint8_t *data, size_t len, struct node_gen_req *out)
{
    Meshinfer__InferRequest *m = NULL;
    int rc = MESH_EPROTO;
    node_gen_req_init(out);
    if (len > INFER_MAX_REQUEST) goto out;
    m = meshinfer__infer_request__unpack(NULL, len, data);
    if (!m) goto out; /* malformed (or out of memory, which a peer cannot tell apart) */
    if (!m->has_version || m->version != INFER_VERSION || !m->has_kind ||
        (m->kind != NODE_KIND_CHAT && m->kind != NODE_KIND_COMPLETION))
        goto out;
    out->kind = (enum node_kind)m->kind;
    out->route = NODE_ROUTE_LOCAL;
    if ((rc = request_params(m, out)) || (rc = request_texts(m, out))) goto out;
    rc = 0;
out:
    if (m) meshinfer__infer_request__free_unpacked(m, NULL);
    if (rc) {
        node_gen_req_free(out);
        node_gen_req_init(out);
    }
    return rc;
}

/* ---- frames ------------------------------------------------------------------------------- */

static void error_to_pb(const struct node_error *e, Meshinfer__InferError *pe)
{
    meshinfer__infer_error__init(pe);
    pe->has_status = true;
    pe->status = e->status > 0 ? (uint32_t)e->status : 500;
    pe->has_type = e->type != NULL;
    pe->type = bin_of(e->type);
    pe->has_code = e->code != NULL;
    pe->code = bin_of(e->code);
    pe->has_param = e->param != NULL;
    pe->param = bin_of(e->param);
    pe->has_message = true;
    pe->message.data = (uint8_t *)e->message;
    pe->message.len = strnlen(e->message, sizeof e->message);
    pe->has_retry_after_s = e->retry_after_s > 0;
    pe->retry_after_s = e->retry_after_s > 0 ? (uint32_t)e->retry_after_s : 0;
}

int infer_frame_encode_error(const struct node_error *e, uint8_t **out, size_t *out_len)
{
    Meshinfer__InferFrame f = MESHINFER__INFER_FRAME__INIT;
    Meshinfer__InferError pe;
    *out = NULL;
    *out_len = 0;
    error_to_pb(e, &pe);
    f.error = &pe;
    return pack_msg(&f.base, INFER_MAX_FRAME, out, out_len);
}

static void lp_entry_to_pb(const struct node_lp_entry *e, Meshinfer__LpEntry *pe)
{
    meshinfer__lp_entry__init(pe);
    pe->has_text = pe->has_logprob = true;
    pe->text.data = (uint8_t *)e->text;
    pe->text.len = e->len > 0 ? ((size_t)e->len < NODE_PIECE_CAP ? (size_t)e->len : NODE_PIECE_CAP)
                              : 0;
    pe->logprob = e->logprob;
}

/* The logprobs of c as protobuf structs in one allocation (*mem, free it). */
static int lps_to_pb(const struct node_chunk *c, Meshinfer__Logprob ***out, void **mem)
{
    size_t n = (size_t)c->n_lps, n_ent = 0;
    for (size_t i = 0; i < n; i++) {
        int k = c->lps[i].n_top;
        if (k < 0 || k > NODE_MAX_TOP_LOGPROBS) return MESH_EINVAL;
        n_ent += 1 + (size_t)k;
    }
    char *b = malloc(n * (sizeof(Meshinfer__Logprob *) + sizeof(Meshinfer__Logprob)) +
                     n_ent * (sizeof(Meshinfer__LpEntry) + sizeof(Meshinfer__LpEntry *)) + 1);
    if (!b) return MESH_ENOMEM;
    Meshinfer__Logprob **pp = (Meshinfer__Logprob **)b;
    Meshinfer__LpEntry **pe = (Meshinfer__LpEntry **)(pp + n);
    Meshinfer__Logprob *lp = (Meshinfer__Logprob *)(pe + n_ent);
    Meshinfer__LpEntry *ent = (Meshinfer__LpEntry *)(lp + n);
    for (size_t i = 0; i < n; i++) {
        const struct node_lp *s = &c->lps[i];
        meshinfer__logprob__init(&lp[i]);
        lp[i].has_id = true;
        lp[i].id = s->id;
        lp_entry_to_pb(&s->tok, ent);
        lp[i].tok = ent++;
        lp[i].n_top = (size_t)s->n_top;
        lp[i].top = pe;
        for (int k = 0; k < s->n_top; k++) {
            lp_entry_to_pb(&s->top[k], ent);
            *pe++ = ent++;
        }
        pp[i] = &lp[i];
    }
    *out = pp;
    *mem = b;
    return 0;
}

int infer_frame_encode(const struct node_chunk *c, size_t cut_base, uint8_t **out,
                       size_t *out_len)
{
    Meshinfer__InferFrame f = MESHINFER__INFER_FRAME__INIT;
    Meshinfer__InferError pe;
    uint32_t *cuts = NULL;
    void *lp_mem = NULL;
    int rc = 0;
    *out = NULL;
    *out_len = 0;
    size_t len = c->text ? c->len : 0;
    if (c->n_cuts < 0 || c->n_ids < 0 || c->n_lps < 0 || (len > 0) != (c->n_cuts > 0) ||
        len > INFER_MAX_FRAME)
        return MESH_EINVAL;
    f.has_text = len > 0;
    f.text.data = (uint8_t *)c->text;
    f.text.len = len;
    if (c->n_cuts) {
        if (!(cuts = malloc((size_t)c->n_cuts * sizeof *cuts))) return MESH_ENOMEM;
        size_t prev = 0;
        for (int i = 0; i < c->n_cuts; i++) {
            /* offsets relative to this frame's text; each piece ends after the previous */
            if (c->cuts[i] < cut_base || c->cuts[i] - cut_base < prev ||
                c->cuts[i] - cut_base > len) {
                rc = MESH_EINVAL;
                goto out;
            }
            prev = c->cuts[i] - cut_base;
            cuts[i] = (uint32_t)prev;
        }
        if (prev != len) {
            rc = MESH_EINVAL;
            goto out;
        }
        f.n_cuts = (size_t)c->n_cuts;
        f.cuts = cuts;
    }
    f.n_ids = c->ids ? (size_t)c->n_ids : 0;
    f.ids = c->ids;
    if (c->n_lps && c->lps) {
        if ((rc = lps_to_pb(c, &f.lps, &lp_mem))) goto out;
        f.n_lps = (size_t)c->n_lps;
    }
    if (c->done) {
        unsigned fin = infer_finish_code(c->finish_reason);
        if (!fin) {
            rc = MESH_EINVAL;
            goto out;
        }
        f.has_done = f.has_finish = f.has_n_prompt = f.has_n_gen = f.has_n_cached = true;
        f.done = true;
        f.finish = fin;
        f.n_prompt = c->n_prompt > 0 ? (uint32_t)c->n_prompt : 0;
        f.n_gen = c->n_gen > 0 ? (uint32_t)c->n_gen : 0;
        f.n_cached = c->n_cached > 0 ? (uint32_t)c->n_cached : 0;
        if (fin == 4) {
            f.has_fail = true;
            f.fail = c->fail != NODE_FAIL_NONE ? (uint32_t)c->fail : NODE_FAIL_ENGINE;
            if (c->err.status) {
                error_to_pb(&c->err, &pe);
                f.error = &pe;
            }
        }
    }
    rc = pack_msg(&f.base, INFER_MAX_FRAME, out, out_len);
out:
    free(lp_mem);
    free(cuts);
    return rc;
}

/* An InferError into e (message cut to its buffer). */
static int error_from_pb(const Meshinfer__InferError *pe, struct node_error *e)
{
    memset(e, 0, sizeof *e);
    if (!pe->has_status || pe->status < 100 || pe->status > 599) return MESH_EPROTO;
    if ((pe->has_type && pe->type.len > INFER_MAX_NAME) ||
        (pe->has_code && pe->code.len > INFER_MAX_NAME) ||
        (pe->has_param && pe->param.len > INFER_MAX_NAME) ||
        (pe->has_retry_after_s && pe->retry_after_s > 86400))
        return MESH_EPROTO;
    e->status = (int)pe->status;
    e->type = intern(&pe->type, pe->has_type, known_types);
    if (!e->type) e->type = "server_error";
    e->code = intern(&pe->code, pe->has_code, known_codes);
    e->param = intern(&pe->param, pe->has_param, known_params);
    e->retry_after_s = pe->has_retry_after_s ? (int)pe->retry_after_s : 0;
    if (pe->has_message) {
        size_t n = pe->message.len < sizeof e->message - 1 ? pe->message.len
                                                            : sizeof e->message - 1;
        if (n) memcpy(e->message, pe->message.data, n);
        e->message[n] = 0; /* a NUL inside just ends the text early */
    }
    return 0;
}

static int lp_entry_from_pb(const Meshinfer__LpEntry *pe, struct node_lp_entry *e)
{
    if (!pe || !pe->has_text || pe->text.len > NODE_PIECE_CAP || !pe->has_logprob ||
        isnan(pe->logprob) || pe->logprob > 1.0f)
        return MESH_EPROTO;
    memset(e, 0, sizeof *e);
    if (pe->text.len) memcpy(e->text, pe->text.data, pe->text.len);
    e->len = (int)pe->text.len;
    e->logprob = pe->logprob;
    return 0;
}

/* Text, cuts, ids and logprobs of f into c. */
static int frame_output(const Meshinfer__InferFrame *f, struct node_chunk *c)
{
    size_t len = f->has_text ? f->text.len : 0;
    if ((len > 0) != (f->n_cuts > 0)) return MESH_EPROTO;
    for (size_t i = 0; i < f->n_cuts; i++)
        if (f->cuts[i] > len || (i && f->cuts[i] < f->cuts[i - 1])) return MESH_EPROTO;
    if (f->n_cuts && f->cuts[f->n_cuts - 1] != len) return MESH_EPROTO;
    for (size_t i = 0; i < f->n_ids; i++)
        if (f->ids[i] < 0) return MESH_EPROTO;
    if (len) {
        if (!(c->text = malloc(len + 1)) || !(c->cuts = malloc(f->n_cuts * sizeof *c->cuts)))
            return MESH_ENOMEM;
        memcpy(c->text, f->text.data, len);
        c->text[len] = 0;
        c->len = len;
        for (size_t i = 0; i < f->n_cuts; i++) c->cuts[i] = f->cuts[i];
        c->n_cuts = (int)f->n_cuts;
    }
    if (f->n_ids) {
        if (!(c->ids = malloc(f->n_ids * sizeof *c->ids))) return MESH_ENOMEM;
        memcpy(c->ids, f->ids, f->n_ids * sizeof *c->ids);
        c->n_ids = (int)f->n_ids;
    }
    if (f->n_lps) {
        if (!(c->lps = calloc(f->n_lps, sizeof *c->lps))) return MESH_ENOMEM;
        c->n_lps = (int)f->n_lps;
        for (size_t i = 0; i < f->n_lps; i++) {
            const Meshinfer__Logprob *pl = f->lps[i];
            struct node_lp *l = &c->lps[i];
            if (!pl->has_id || pl->id < 0 || pl->n_top > NODE_MAX_TOP_LOGPROBS ||
                lp_entry_from_pb(pl->tok, &l->tok))
                return MESH_EPROTO;
            l->id = pl->id;
            l->n_top = (int)pl->n_top;
            for (size_t k = 0; k < pl->n_top; k++)
                if (lp_entry_from_pb(pl->top[k], &l->top[k])) return MESH_EPROTO;
        }
    }
    return 0;
}

/* done, finish, fail, usage. */
static int frame_end(const Meshinfer__InferFrame *f, struct node_chunk *c)
{
    if (!f->has_done || !f->done) return 0;
    const char *fin = f->has_finish ? infer_finish_name(f->finish) : NULL;
    if (!fin || f->n_prompt > INT_MAX || f->n_gen > INT_MAX || f->n_cached > INT_MAX ||
        (f->has_fail && f->fail > NODE_FAIL_ENGINE))
        return MESH_EPROTO;
    c->done = true;
    c->finish_reason = fin;
    c->n_prompt = (int)f->n_prompt;
    c->n_gen = (int)f->n_gen;
    c->n_cached = (int)f->n_cached;
    if (f->finish == 4) {
        c->fail = f->has_fail && f->fail ? (enum node_fail)f->fail : NODE_FAIL_ENGINE;
        if (f->error) return error_from_pb(f->error, &c->err);
        c->err.status = 500;
        c->err.type = "server_error";
        strcpy(c->err.message, "the peer's model failed while generating");
    }
    return 0;
}

int infer_frame_decode(const uint8_t *data, size_t len, struct node_chunk *out, bool *is_error)
{
    Meshinfer__InferFrame *f = NULL;
    int rc = MESH_EPROTO;
    memset(out, 0, sizeof *out);
    *is_error = false;
    if (len > INFER_MAX_FRAME) goto out;
    f = meshinfer__infer_frame__unpack(NULL, len, data);
    if (!f) goto out;
    bool done = f->has_done && f->done;
    if (f->error && !done) {
        /* refused before starting: nothing else may come with it */
        if (f->has_text || f->n_cuts || f->n_ids || f->n_lps) goto out;
        if ((rc = error_from_pb(f->error, &out->err))) goto out;
        *is_error = true;
        out->done = true;
        out->finish_reason = "error";
        out->fail = out->err.status == 429 || out->err.status == 503 ? NODE_FAIL_BUSY
                                                                     : NODE_FAIL_REFUSED;
        goto out;
    }
    if ((rc = frame_output(f, out)) || (rc = frame_end(f, out))) goto out;
out:
    if (f) meshinfer__infer_frame__free_unpacked(f, NULL);
    if (rc) {
        node_chunk_free(out);
        *is_error = false;
    }
    return rc;
}

/* ---- splitting ---------------------------------------------------------------------------- */

/* Upper bounds of what one element costs in a frame (tags, lengths, varints). */
static size_t lp_cost(const struct node_lp *l)
{
    size_t n = 32 + (size_t)(l->tok.len > 0 ? l->tok.len : 0);
    for (int k = 0; k < l->n_top && k < NODE_MAX_TOP_LOGPROBS; k++)
        n += 16 + (size_t)(l->top[k].len > 0 ? l->top[k].len : 0);
    return n;
}

int infer_chunk_part(const struct node_chunk *c, int *piece, int *id, int *lp,
                     struct node_chunk *part, size_t *cut_base, bool *is_last)
{
    size_t budget = INFER_FRAME_BUDGET, used = 0;
    memset(part, 0, sizeof *part);
    /* pieces: text [base, cuts[p1-1]) with their end offsets */
    size_t base = *piece > 0 ? c->cuts[*piece - 1] : 0;
    int p1 = *piece;
    while (p1 < c->n_cuts) {
        size_t cost = c->cuts[p1] - (p1 > 0 ? c->cuts[p1 - 1] : 0) + 5;
        if (used + cost > budget && p1 > *piece) break;
        if (cost > INFER_MAX_FRAME - 4096) return MESH_ERANGE;
        used += cost;
        p1++;
    }
    if (p1 > *piece) {
        part->text = c->text + base;
        part->len = c->cuts[p1 - 1] - base;
        part->cuts = c->cuts + *piece;
        part->n_cuts = p1 - *piece;
    }
    *cut_base = base;
    *piece = p1;
    /* ids: 10 bytes at most each (a negative int32 varint) */
    int i1 = *id;
    while (i1 < c->n_ids && used + 10 <= budget) used += 10, i1++;
    if (i1 > *id) part->ids = c->ids + *id; /* no arithmetic on a NULL array */
    part->n_ids = i1 - *id;
    *id = i1;
    int l1 = *lp;
    while (l1 < c->n_lps) {
        size_t cost = lp_cost(&c->lps[l1]);
        if (used + cost > budget && (l1 > *lp || used > 0)) break;
        used += cost;
        l1++;
    }
    if (l1 > *lp) part->lps = c->lps + *lp;
    part->n_lps = l1 - *lp;
    *lp = l1;
    *is_last = *piece == c->n_cuts && *id == c->n_ids && *lp == c->n_lps;
    if (*is_last) {
        part->done = c->done;
        part->finish_reason = c->finish_reason;
        part->fail = c->fail;
        part->err = c->err;
        part->n_prompt = c->n_prompt;
        part->n_gen = c->n_gen;
        part->n_cached = c->n_cached;
    }
    return 0;
}
