/* stage_wire.c - the /meshllm/stage/1 messages (net/proto/stage.proto) to and from
 * struct stage_req / stage_reply (stage_internal.h). Pure functions, no I/O, so the fuzz
 * target drives them directly. Everything a peer sends is checked here before it reaches
 * a struct: sizes against the limits (overflow-checked before multiplying), positions
 * consecutive, every hidden state finite. Spec: docs/PROTOCOL.md, /meshllm/stage/1.
 */
#include "node/stage_internal.h"

#include "core/err.h"
#include "engine/quant.h"
#include "node/stage.h"

#include "stage.pb-c.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const err_names[] = {"ok",    "malformed", "busy",     "unknown_model",
                                        "range", "dims",      "nonfinite", "positions",
                                        "internal", "closing"};

const char *stage_err_name(int code)
{
    return code >= 0 && code <= STAGE_ERR_MAX ? err_names[code] : "unknown";
}

static int why_set(char *why, size_t cap, int code, const char *fmt, ...)
{
    if (why && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return code;
}

static bool is_hex64(const char *s)
{
    if (!s || strlen(s) != 64) return false;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

/* F16 bytes (little-endian) of n floats; x NULL for n 0. */
static int f16_pack(const float *x, size_t n, ProtobufCBinaryData *b)
{
    b->len = 0;
    b->data = NULL;
    if (n == 0) return 0;
    uint16_t *h = malloc(n * sizeof *h);
    if (!h) return MESH_ENOMEM;
    quant_f32_to_f16_row(x, h, (int64_t)n);
    b->len = n * sizeof *h; /* little-endian hosts only (the build targets x86-64, arm64) */
    b->data = (uint8_t *)h;
    return 0;
}

/* Floats of F16 bytes; false when one is NaN or infinite. */
static bool f16_unpack(const uint8_t *src, size_t n, float *x)
{
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
        if ((h & 0x7c00) == 0x7c00) ok = false; /* exponent all ones: inf or NaN */
        x[i] = quant_f16_to_f32(h);
    }
    return ok;
}

static int pack_msg(const ProtobufCMessage *m, uint8_t **out, size_t *out_len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > STAGE_MAX_FRAME) return MESH_ERANGE;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) return MESH_ENOMEM;
    *out_len = protobuf_c_message_pack(m, b);
    *out = b;
    return 0;
}

/* ---- request ---------------------------------------------------------------------------- */

void stage_req_free(struct stage_req *q)
{
    if (!q) return;
    free(q->pos);
    free(q->x);
    q->pos = NULL;
    q->x = NULL;
}

int stage_req_encode(const struct stage_req *q, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    Meshstage__StageRequest m = MESHSTAGE__STAGE_REQUEST__INIT;
    if (!q->end && (!is_hex64(q->model) || q->n_embd <= 0 || q->n_tokens <= 0 || !q->pos ||
                    !q->x || q->layer_begin < 0 || q->layer_begin >= q->layer_end ||
                    q->out < 0 || q->out > STAGE_OUT_NONE))
        return MESH_EINVAL;
    if (q->n_embd > STAGE_MAX_EMBD || q->n_tokens > STAGE_MAX_TOKENS ||
        q->layer_end > STAGE_MAX_LAYERS)
        return MESH_ERANGE;
    uint32_t *pos = NULL;
    m.has_version = m.has_session = true;
    m.version = STAGE_VERSION;
    m.session.len = STAGE_SESSION_LEN;
    m.session.data = (uint8_t *)q->session;
    int rc = 0;
    if (q->end) {
        m.has_end = m.end = true;
    } else {
        m.model = (char *)q->model;
        m.has_layer_begin = m.has_layer_end = m.has_n_embd = m.has_hidden = m.has_out = true;
        m.layer_begin = (uint32_t)q->layer_begin;
        m.layer_end = (uint32_t)q->layer_end;
        m.n_embd = (uint32_t)q->n_embd;
        m.out = (uint32_t)q->out;
        pos = malloc((size_t)q->n_tokens * sizeof *pos);
        if (!pos) return MESH_ENOMEM;
        for (int i = 0; i < q->n_tokens; i++) {
            if (q->pos[i] < 0) {
                free(pos);
                return MESH_EINVAL;
            }
            pos[i] = (uint32_t)q->pos[i];
        }
        m.n_pos = (size_t)q->n_tokens;
        m.pos = pos;
        rc = f16_pack(q->x, (size_t)q->n_tokens * (size_t)q->n_embd, &m.hidden);
    }
    if (rc == 0) rc = pack_msg(&m.base, out, out_len);
    free(pos);
    free(m.hidden.data);
    return rc;
}

int stage_req_decode(const uint8_t *data, size_t len, struct stage_req *out, bool *has_session,
                     char *why, size_t why_cap)
{
    memset(out, 0, sizeof *out);
    *has_session = false;
    if (why && why_cap) why[0] = 0;
    if (len > STAGE_MAX_FRAME)
        return why_set(why, why_cap, STAGE_ERR_MALFORMED, "message of %zu bytes", len);
    Meshstage__StageRequest *m = meshstage__stage_request__unpack(NULL, len, data);
    if (!m) return why_set(why, why_cap, STAGE_ERR_MALFORMED, "not a StageRequest");
    int rc = STAGE_OK;
    if (!m->has_session || m->session.len != STAGE_SESSION_LEN) {
        rc = why_set(why, why_cap, STAGE_ERR_MALFORMED, "no 16-byte session id");
        goto out;
    }
    memcpy(out->session, m->session.data, STAGE_SESSION_LEN);
    *has_session = true;
    if (!m->has_version || m->version != STAGE_VERSION) {
        rc = why_set(why, why_cap, STAGE_ERR_MALFORMED, "version %u, this node speaks %d",
                     m->has_version ? m->version : 0, STAGE_VERSION);
        goto out;
    }
    if (m->has_end && m->end) {
        out->end = true;
        goto out;
    }
    if (!is_hex64(m->model)) {
        rc = why_set(why, why_cap, STAGE_ERR_MALFORMED, "the model is not a hex SHA-256");
        goto out;
    }
    memcpy(out->model, m->model, 65);
    if (!m->has_layer_begin || !m->has_layer_end || m->layer_end > STAGE_MAX_LAYERS ||
        m->layer_begin >= m->layer_end) {
        rc = why_set(why, why_cap, STAGE_ERR_MALFORMED, "no layer range");
        goto out;
    }
    out->layer_begin = (int)m->layer_begin;
    out->layer_end = (int)m->layer_end;
    if (!m->has_out || m->out > STAGE_OUT_NONE) {
        rc = why_set(why, why_cap, STAGE_ERR_MALFORMED, "out %u is not 0, 1 or 2", m->out);
        goto out;
    }
    out->out = (int)m->out;
    if (!m->has_n_embd || m->n_embd == 0 || m->n_embd > STAGE_MAX_EMBD) {
        rc = why_set(why, why_cap, STAGE_ERR_DIMS, "n_embd %u", m->n_embd);
        goto out;
    }
    out->n_embd = (int)m->n_embd;
    if (m->n_pos == 0 || m->n_pos > STAGE_MAX_TOKENS) {
        rc = why_set(why, why_cap, STAGE_ERR_DIMS, "%zu tokens (1..%d)", m->n_pos,
                     STAGE_MAX_TOKENS);
        goto out;
    }
    /* n_pos <= 4096 and n_embd <= 65536: the product fits easily, times 2 bytes too */
    size_t n_vals = m->n_pos * (size_t)m->n_embd;
    if (!m->has_hidden || m->hidden.len != 2 * n_vals) {
        rc = why_set(why, why_cap, STAGE_ERR_DIMS, "%zu bytes of hidden states for %zu x %u",
                     m->hidden.len, m->n_pos, m->n_embd);
        goto out;
    }
    for (size_t i = 0; i < m->n_pos; i++)
        if (m->pos[i] >= (1u << 24) || (i && m->pos[i] != m->pos[i - 1] + 1)) {
            rc = why_set(why, why_cap, STAGE_ERR_POS, "positions not consecutive at token %zu",
                         i);
            goto out;
        }
    out->n_tokens = (int)m->n_pos;
    out->pos = malloc(m->n_pos * sizeof *out->pos);
    out->x = malloc(n_vals * sizeof *out->x);
    if (!out->pos || !out->x) {
        rc = MESH_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < m->n_pos; i++) out->pos[i] = (int32_t)m->pos[i];
    if (!f16_unpack(m->hidden.data, n_vals, out->x))
        rc = why_set(why, why_cap, STAGE_ERR_NONFINITE, "a hidden state is NaN or infinite");
out:
    meshstage__stage_request__free_unpacked(m, NULL);
    if (rc != STAGE_OK) {
        stage_req_free(out);
        out->n_tokens = 0;
    }
    return rc;
}

/* ---- reply ------------------------------------------------------------------------------ */

void stage_reply_free(struct stage_reply *r)
{
    if (!r) return;
    free(r->x);
    r->x = NULL;
}

int stage_reply_encode(const struct stage_reply *r, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (r->error < 0 || r->error > STAGE_ERR_MAX || r->n_tokens < 0 || r->pos < 0 ||
        r->n_cached < 0 || (r->n_tokens && (!r->x || r->n_embd <= 0)))
        return MESH_EINVAL;
    if (r->n_tokens > STAGE_MAX_TOKENS || r->n_embd > STAGE_MAX_EMBD) return MESH_ERANGE;
    Meshstage__StageReply m = MESHSTAGE__STAGE_REPLY__INIT;
    m.has_session = true;
    m.session.len = STAGE_SESSION_LEN;
    m.session.data = (uint8_t *)r->session;
    m.has_pos = m.has_n_tokens = m.has_n_cached = true;
    m.pos = (uint32_t)r->pos;
    m.n_tokens = (uint32_t)r->n_tokens;
    m.n_cached = (uint32_t)r->n_cached;
    if (r->error) {
        m.has_error = true;
        m.error = (uint32_t)r->error;
        m.message = (char *)r->message;
    }
    int rc = f16_pack(r->x, (size_t)r->n_tokens * (size_t)r->n_embd, &m.hidden);
    m.has_hidden = m.hidden.len > 0;
    if (rc == 0) rc = pack_msg(&m.base, out, out_len);
    free(m.hidden.data);
    return rc;
}

int stage_reply_decode(const uint8_t *data, size_t len, int n_embd, struct stage_reply *out)
{
    memset(out, 0, sizeof *out);
    out->n_embd = n_embd;
    if (len > STAGE_MAX_FRAME || n_embd <= 0 || n_embd > STAGE_MAX_EMBD) return MESH_EPROTO;
    Meshstage__StageReply *m = meshstage__stage_reply__unpack(NULL, len, data);
    if (!m) return MESH_EPROTO;
    int rc = MESH_EPROTO;
    if (!m->has_session || m->session.len != STAGE_SESSION_LEN) goto out;
    memcpy(out->session, m->session.data, STAGE_SESSION_LEN);
    if (m->has_error && (m->error == 0 || m->error > STAGE_ERR_MAX)) goto out;
    if (m->n_tokens > STAGE_MAX_TOKENS || m->pos >= (1u << 24) || m->n_cached > (1u << 24))
        goto out;
    size_t n_vals = (size_t)m->n_tokens * (size_t)n_embd;
    if ((m->has_hidden ? m->hidden.len : 0) != 2 * n_vals) goto out;
    out->pos = (int)m->pos;
    out->n_tokens = (int)m->n_tokens;
    out->n_cached = (int)m->n_cached;
    out->error = m->has_error ? (int)m->error : 0;
    if (m->message) {
        snprintf(out->message, sizeof out->message, "%s", m->message);
        for (char *c = out->message; *c; c++) /* a peer's words go to our log: no controls */
            if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    }
    if (n_vals) {
        out->x = malloc(n_vals * sizeof *out->x);
        if (!out->x) {
            rc = MESH_ENOMEM;
            goto out;
        }
        if (!f16_unpack(m->hidden.data, n_vals, out->x)) goto out;
    }
    rc = 0;
out:
    meshstage__stage_reply__free_unpacked(m, NULL);
    if (rc) {
        stage_reply_free(out);
        out->n_tokens = 0;
    }
    return rc;
}

/* ---- /meshllm/stageload/1 ----------------------------------------------------------------- */

static const char *const load_names[] = {"ok",      "malformed", "refused", "no_file",
                                         "no_memory", "busy",    "failed",  "closing"};

const char *stageload_status_name(int status)
{
    return status >= 0 && status <= STAGELOAD_STATUS_MAX ? load_names[status] : "unknown";
}

static bool is_name(const char *s)
{
    size_t n = strlen(s);
    if (n >= STAGELOAD_NAME_CAP) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok || (i == 0 && c == '.')) return false;
    }
    return true;
}

/* "" or an absolute path with no control bytes and no ".." component. */
static bool is_path(const char *s)
{
    size_t n = strlen(s);
    if (n == 0) return true;
    if (n >= STAGELOAD_PATH_CAP || s[0] != '/') return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    for (const char *p = s; (p = strstr(p, "..")); p += 2)
        if ((p == s || p[-1] == '/') && (p[2] == 0 || p[2] == '/')) return false;
    return true;
}

int stageload_req_encode(const struct stageload_req *q, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!is_hex64(q->model) || !is_name(q->name) || !is_path(q->path) || q->layer_begin < 0 ||
        q->layer_begin >= q->layer_end || q->layer_end > q->n_layer ||
        q->n_layer > STAGE_MAX_LAYERS)
        return MESH_EINVAL;
    Meshstage__StageLoadRequest m = MESHSTAGE__STAGE_LOAD_REQUEST__INIT;
    m.has_version = m.has_file_bytes = m.has_layer_begin = m.has_layer_end = true;
    m.has_n_layer = m.has_range_bytes = true;
    m.version = STAGELOAD_VERSION;
    m.model = (char *)q->model;
    m.name = (char *)q->name;
    m.file_bytes = q->file_bytes;
    m.path = (char *)q->path;
    m.layer_begin = (uint32_t)q->layer_begin;
    m.layer_end = (uint32_t)q->layer_end;
    m.n_layer = (uint32_t)q->n_layer;
    m.range_bytes = q->range_bytes;
    return pack_msg(&m.base, out, out_len);
}

int stageload_req_decode(const uint8_t *data, size_t len, struct stageload_req *out, char *why,
                         size_t why_cap)
{
    memset(out, 0, sizeof *out);
    if (why && why_cap) why[0] = 0;
    if (len > STAGELOAD_MAX_FRAME)
        return why_set(why, why_cap, STAGELOAD_MALFORMED, "message too long");
    Meshstage__StageLoadRequest *m = meshstage__stage_load_request__unpack(NULL, len, data);
    if (!m) return why_set(why, why_cap, STAGELOAD_MALFORMED, "not a StageLoadRequest");
    int rc = STAGELOAD_MALFORMED;
    if (!m->has_version || m->version != STAGELOAD_VERSION) {
        why_set(why, why_cap, rc, "version %u (this node speaks %d)", m->version,
                STAGELOAD_VERSION);
        goto out;
    }
    if (!is_hex64(m->model)) {
        why_set(why, why_cap, rc, "model: not 64 lowercase hex digits");
        goto out;
    }
    if (!m->has_n_layer || m->n_layer == 0 || m->n_layer > STAGE_MAX_LAYERS ||
        m->layer_begin >= m->layer_end || m->layer_end > m->n_layer) {
        why_set(why, why_cap, rc, "layers %u-%u of %u: not a range of the model",
                m->layer_begin, m->layer_end, m->n_layer);
        goto out;
    }
    if (m->name && !is_name(m->name)) {
        why_set(why, why_cap, rc, "name: only letters, digits, '.', '_' and '-' (100 at most)");
        goto out;
    }
    if (m->path && !is_path(m->path)) {
        why_set(why, why_cap, rc, "path: not an absolute path");
        goto out;
    }
    memcpy(out->model, m->model, 65);
    snprintf(out->name, sizeof out->name, "%s", m->name ? m->name : "");
    snprintf(out->path, sizeof out->path, "%s", m->path ? m->path : "");
    out->file_bytes = m->file_bytes;
    out->layer_begin = (int)m->layer_begin;
    out->layer_end = (int)m->layer_end;
    out->n_layer = (int)m->n_layer;
    out->range_bytes = m->range_bytes;
    rc = STAGELOAD_OK;
out:
    meshstage__stage_load_request__free_unpacked(m, NULL);
    return rc;
}

int stageload_reply_encode(const struct stageload_reply *r, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (r->status < 0 || r->status > STAGELOAD_STATUS_MAX) return MESH_EINVAL;
    Meshstage__StageLoadReply m = MESHSTAGE__STAGE_LOAD_REPLY__INIT;
    m.has_status = true;
    m.status = (uint32_t)r->status;
    m.message = (char *)r->message;
    return pack_msg(&m.base, out, out_len);
}

int stageload_reply_decode(const uint8_t *data, size_t len, struct stageload_reply *out)
{
    memset(out, 0, sizeof *out);
    if (len > STAGELOAD_MAX_FRAME) return MESH_EPROTO;
    Meshstage__StageLoadReply *m = meshstage__stage_load_reply__unpack(NULL, len, data);
    if (!m) return MESH_EPROTO;
    int rc = MESH_EPROTO;
    if (!m->has_status || m->status > STAGELOAD_STATUS_MAX) goto out;
    out->status = (int)m->status;
    if (m->message) {
        snprintf(out->message, sizeof out->message, "%s", m->message);
        for (char *c = out->message; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    }
    rc = 0;
out:
    meshstage__stage_load_reply__free_unpacked(m, NULL);
    return rc;
}
