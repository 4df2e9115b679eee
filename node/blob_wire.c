/* blob_wire.c - the /meshllm/blob/1 messages (net/proto/blob.proto) to and from struct
 * blob_req / blob_reply (blob_internal.h). Pure functions, no I/O, so the fuzz target
 * drives them directly. What a peer sends is checked here before it reaches a struct:
 * lengths against the limits, the piece layer's length against the file's size. Whether
 * the bytes are the right ones is blobpull.c's job (the Merkle checks). Spec:
 * docs/PROTOCOL.md, /meshllm/blob/1.
 */
#include "node/blob_internal.h"

#include "core/err.h"
#include "node/blob.h"
#include "node/merkle.h"

#include "blob.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const err_names[] = {"ok", "malformed", "not_found", "range", "internal"};

const char *blob_err_name(int code)
{
    return code >= 0 && code <= BLOB_ERR_MAX ? err_names[code] : "unknown";
}

bool blob_is_hex64(const char *s)
{
    if (!s || strlen(s) != 64) return false;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

uint64_t blob_n_pieces(uint64_t size, uint32_t piece_len)
{
    return piece_len ? size / piece_len + (size % piece_len != 0) : 0;
}

void blob_reply_free(struct blob_reply *r)
{
    if (!r) return;
    free(r->pieces);
    free(r->data);
    r->pieces = r->data = NULL;
}

static int pack_msg(const ProtobufCMessage *m, uint8_t **out, size_t *out_len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > BLOB_MAX_FRAME) return MESH_ERANGE;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) return MESH_ENOMEM;
    *out_len = protobuf_c_message_pack(m, b);
    *out = b;
    return 0;
}

int blob_req_encode(const struct blob_req *q, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if ((q->kind != BLOB_INFO && q->kind != BLOB_PIECE) || !blob_is_hex64(q->content_id))
        return MESH_EINVAL;
    Meshblob__BlobRequest m = MESHBLOB__BLOB_REQUEST__INIT;
    m.has_version = m.has_kind = true;
    m.version = BLOB_VERSION;
    m.kind = (uint32_t)q->kind;
    m.content_id = (char *)q->content_id;
    if (q->kind == BLOB_PIECE) {
        m.has_piece = true;
        m.piece = q->piece;
    }
    return pack_msg(&m.base, out, out_len);
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

int blob_req_decode(const uint8_t *data, size_t len, struct blob_req *out, char *why,
                    size_t why_cap)
{
    memset(out, 0, sizeof *out);
    if (why && why_cap) why[0] = 0;
    if (len > BLOB_MAX_FRAME)
        return why_set(why, why_cap, BLOB_ERR_MALFORMED, "message of %zu bytes", len);
    Meshblob__BlobRequest *m = meshblob__blob_request__unpack(NULL, len, data);
    if (!m) return why_set(why, why_cap, BLOB_ERR_MALFORMED, "not a BlobRequest");
    int rc = BLOB_OK;
    if (!m->has_version || m->version != BLOB_VERSION)
        rc = why_set(why, why_cap, BLOB_ERR_MALFORMED, "version %u, this node speaks %d",
                     m->has_version ? m->version : 0, BLOB_VERSION);
    else if (!m->has_kind || (m->kind != BLOB_INFO && m->kind != BLOB_PIECE))
        rc = why_set(why, why_cap, BLOB_ERR_MALFORMED, "kind %u is not 1 (info) or 2 (piece)",
                     m->kind);
    else if (!blob_is_hex64(m->content_id))
        rc = why_set(why, why_cap, BLOB_ERR_MALFORMED, "the content ID is not 64 hex digits");
    else if (m->kind == BLOB_PIECE && !m->has_piece)
        rc = why_set(why, why_cap, BLOB_ERR_MALFORMED, "a piece request names no piece");
    if (rc == BLOB_OK) {
        out->kind = (int)m->kind;
        memcpy(out->content_id, m->content_id, 65);
        out->piece = m->piece;
    }
    meshblob__blob_request__free_unpacked(m, NULL);
    return rc;
}

int blob_reply_encode(const struct blob_reply *r, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (r->error < 0 || r->error > BLOB_ERR_MAX || r->data_len > BLOB_MAX_PIECE ||
        r->n_pieces > BLOB_MAX_PIECE / MERKLE_HASH)
        return MESH_EINVAL;
    Meshblob__BlobReply m = MESHBLOB__BLOB_REPLY__INIT;
    if (r->error) {
        m.has_error = true;
        m.error = (uint32_t)r->error;
        m.message = (char *)r->message;
    } else if (r->has_info) {
        m.has_size = m.has_piece_len = true;
        m.size = r->size;
        m.piece_len = r->piece_len;
        m.has_pieces = r->n_pieces > 0;
        m.pieces.data = r->pieces;
        m.pieces.len = r->n_pieces * MERKLE_HASH;
    } else {
        m.has_piece = m.has_data = true;
        m.piece = r->piece;
        m.data.data = r->data;
        m.data.len = r->data_len;
    }
    return pack_msg(&m.base, out, out_len);
}

static bool piece_len_ok(uint32_t n)
{
    return n >= MERKLE_BLOCK && n <= BLOB_MAX_PIECE && (n & (n - 1)) == 0;
}

int blob_reply_decode(const uint8_t *data, size_t len, struct blob_reply *out)
{
    memset(out, 0, sizeof *out);
    if (len > BLOB_MAX_FRAME) return MESH_EPROTO;
    Meshblob__BlobReply *m = meshblob__blob_reply__unpack(NULL, len, data);
    if (!m) return MESH_EPROTO;
    int rc = MESH_EPROTO;
    if (m->has_error && m->error) {
        if (m->error > BLOB_ERR_MAX) goto out;
        out->error = (int)m->error;
        snprintf(out->message, sizeof out->message, "%s", m->message ? m->message : "");
        for (char *c = out->message; *c; c++) /* a peer's words go to our log: no controls */
            if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
        rc = 0;
        goto out;
    }
    if (m->has_size || m->has_piece_len) { /* INFO */
        if (!m->has_size || !m->has_piece_len || !piece_len_ok(m->piece_len) ||
            m->size > BLOB_MAX_SIZE || m->has_data)
            goto out;
        uint64_t n = blob_n_pieces(m->size, m->piece_len);
        size_t got = m->has_pieces ? m->pieces.len : 0;
        /* a file of at most one piece has no piece layer (node/merkle.h) */
        if (n <= 1 ? got != 0 : (got % MERKLE_HASH || got / MERKLE_HASH != n)) goto out;
        out->has_info = true;
        out->size = m->size;
        out->piece_len = m->piece_len;
        out->n_pieces = got / MERKLE_HASH;
        if (got) {
            out->pieces = malloc(got);
            if (!out->pieces) {
                rc = MESH_ENOMEM;
                goto out;
            }
            memcpy(out->pieces, m->pieces.data, got);
        }
        rc = 0;
        goto out;
    }
    if (!m->has_piece || !m->has_data || m->data.len == 0 || m->data.len > BLOB_MAX_PIECE)
        goto out;
    out->piece = m->piece;
    out->data_len = m->data.len;
    out->data = malloc(m->data.len);
    if (!out->data) {
        rc = MESH_ENOMEM;
        goto out;
    }
    memcpy(out->data, m->data.data, m->data.len);
    rc = 0;
out:
    meshblob__blob_reply__free_unpacked(m, NULL);
    if (rc) blob_reply_free(out);
    return rc;
}
