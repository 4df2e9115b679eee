/* mss.c - multistream-select 1.0 state machine (see mss.h; spec: multiformats/
 * multistream-select README, libp2p connections spec "Protocol Negotiation"). */
#include "net/mss.h"

#include "core/err.h"
#include "net/varint.h"

#include <string.h>

size_t mss_encode_line(const char *id, uint8_t *out, size_t cap)
{
    size_t n = strlen(id);
    uint8_t hdr[VARINT_MAX_LEN];
    size_t h = varint_encode(n + 1, hdr);
    if (n + 1 > MSS_MAX_LINE || h + n + 1 > cap) return 0;
    memcpy(out, hdr, h);
    memcpy(out + h, id, n);
    out[h + n] = '\n';
    return h + n + 1;
}

static int queue_line(struct mss *m, const char *id)
{
    size_t n = mss_encode_line(id, m->out + m->out_len, sizeof m->out - m->out_len);
    if (n == 0) return MESH_EINVAL;
    m->out_len += n;
    return 0;
}

static bool valid_id(const char *id)
{
    size_t n = strlen(id);
    return n > 0 && n < MSS_MAX_LINE && !memchr(id, '\n', n);
}

int mss_dialer_init(struct mss *m, const char *const *protocols, size_t n)
{
    memset(m, 0, sizeof *m);
    m->is_dialer = true;
    if (n == 0 || n > MSS_MAX_PROPOSALS) return MESH_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!valid_id(protocols[i])) return MESH_EINVAL;
        m->proposals[i] = protocols[i];
    }
    m->n_proposals = n;
    /* Header and first proposal go out together (the spec allows pipelining them). */
    queue_line(m, MSS_PROTOCOL_ID);
    return queue_line(m, protocols[0]);
}

void mss_listener_init(struct mss *m, mss_supports_fn supports, void *ctx)
{
    memset(m, 0, sizeof *m);
    m->supports = supports;
    m->supports_ctx = ctx;
    queue_line(m, MSS_PROTOCOL_ID);
}

void mss_output(const struct mss *m, const uint8_t **data, size_t *len)
{
    *data = m->out;
    *len = m->out_len;
}

void mss_output_clear(struct mss *m)
{
    m->out_len = 0;
}

/* Handles one complete line (without '\n', NUL-terminated). */
static int on_line(struct mss *m, const char *line)
{
    if (m->step == 0) {
        if (strcmp(line, MSS_PROTOCOL_ID) != 0) return MESH_EPROTO;
        m->step = 1;
        return 0;
    }
    if (m->is_dialer) {
        if (!strcmp(line, m->proposals[m->i_proposal])) {
            strcpy(m->protocol, line);
            m->state = MSS_DONE;
            return 0;
        }
        if (strcmp(line, "na") != 0) return MESH_EPROTO;
        if (++m->i_proposal == m->n_proposals) {
            m->state = MSS_FAILED;
            return MESH_ENOTFOUND;
        }
        return queue_line(m, m->proposals[m->i_proposal]);
    }
    if (line[0] && m->supports(m->supports_ctx, line)) {
        strcpy(m->protocol, line);
        m->state = MSS_DONE;
        return queue_line(m, line);
    }
    /* Each "na" is small; a peer flooding proposals without reading fills out[]. */
    if (m->out_len + 4 > sizeof m->out) return MESH_EPROTO;
    return queue_line(m, "na");
}

int mss_input(struct mss *m, const uint8_t *data, size_t len, size_t *consumed)
{
    size_t i = 0;
    int rc = 0;

    *consumed = 0;
    if (m->state == MSS_FAILED) return MESH_ENOTFOUND;
    while (i < len && m->state == MSS_NEGOTIATING) {
        uint64_t line_len;
        size_t used;
        m->in[m->in_len++] = data[i++];
        int vr = varint_decode(m->in, m->in_len, &line_len, &used);
        if (vr == MESH_EAGAIN && m->in_len < 3) continue;
        if (vr != 0) return MESH_EPROTO; /* > 2 varint bytes means > MSS_MAX_LINE */
        if (line_len == 0 || line_len > MSS_MAX_LINE) return MESH_EPROTO;
        if (m->in_len < used + line_len) continue;
        /* complete message: a line that ends in '\n' and has no other '\n' or NUL */
        uint8_t *line = m->in + used;
        if (line[line_len - 1] != '\n') return MESH_EPROTO;
        line[line_len - 1] = 0;
        if (memchr(line, 0, line_len - 1) || memchr(line, '\n', line_len - 1)) return MESH_EPROTO;
        m->in_len = 0;
        rc = on_line(m, (const char *)line);
        if (rc) break;
    }
    *consumed = i;
    return rc;
}
