/* mdns.c - libp2p mDNS discovery core (see mdns.h; libp2p/specs discovery/mdns.md, RFC 6762,
 * RFC 1035 section 4 message format, 4.1.4 compression).
 *
 * The parser copies every name out in dotted text form, following compression pointers only
 * backwards and each one strictly before the previous (so it always ends), and records rdata
 * as a pointer into the caller's buffer. The builder writes names uncompressed. Queues of
 * packets and discovered peers are small fixed arrays; overflow drops the newest.
 */
#include "net/mdns.h"

#include "core/err.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HDR_LEN 12
#define FLAG_QR 0x8000
#define FLAG_AA 0x0400
#define OPCODE_MASK 0x7800
#define CLASS_TOP 0x8000   /* QU bit in questions, cache-flush bit in records */
#define JUMPS_MAX 32
#define OUT_MAX 8
#define FOUND_MAX 32

/* ---- parsing ------------------------------------------------------------------------- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads a (possibly compressed) name at *pos into out (MDNS_NAME_MAX + 1 bytes) and moves
 * *pos past it. */
static int name_read(const uint8_t *b, size_t len, size_t *pos, char *out)
{
    size_t p = *pos, o = 0, end = 0, bound = *pos;
    int jumps = 0;
    out[0] = 0;
    for (;;) {
        if (p >= len) return MESH_EPROTO;
        uint8_t l = b[p];
        if ((l & 0xC0) == 0xC0) {
            if (p + 1 >= len) return MESH_EPROTO;
            size_t target = (size_t)(l & 0x3F) << 8 | b[p + 1];
            /* Backwards, and before every earlier jump target: no loops possible. */
            if (target >= bound || target >= p || ++jumps > JUMPS_MAX) return MESH_EPROTO;
            if (!end) end = p + 2;
            bound = target;
            p = target;
            continue;
        }
        if (l & 0xC0) return MESH_EPROTO; /* 0x40 / 0x80 label types are reserved */
        if (l == 0) {
            p++;
            break;
        }
        if (p + 1 + l > len) return MESH_EPROTO;
        if (o + (o ? 1u : 0u) + l > MDNS_NAME_MAX) return MESH_EPROTO;
        if (o) out[o++] = '.';
        for (size_t i = 0; i < l; i++) {
            uint8_t c = b[p + 1 + i];
            if (c < 0x21 || c > 0x7e || c == '.') return MESH_EPROTO;
            out[o++] = (char)c;
        }
        p += 1 + (size_t)l;
    }
    out[o] = 0;
    *pos = end ? end : p;
    return 0;
}

static int rdata_check(const uint8_t *b, size_t len, struct mdns_rr *rr, size_t rd_pos)
{
    switch (rr->type) {
    case MDNS_TYPE_A:
        return rr->rdata_len == 4 ? 0 : MESH_EPROTO;
    case MDNS_TYPE_AAAA:
        return rr->rdata_len == 16 ? 0 : MESH_EPROTO;
    case MDNS_TYPE_PTR: {
        size_t p = rd_pos;
        /* The target may point anywhere before it, but must end exactly with the rdata. */
        if (name_read(b, rd_pos + rr->rdata_len, &p, rr->ptr) < 0) return MESH_EPROTO;
        return p == rd_pos + rr->rdata_len ? 0 : MESH_EPROTO;
    }
    case MDNS_TYPE_TXT: {
        size_t p = 0;
        if (rr->rdata_len == 0) return MESH_EPROTO;
        while (p < rr->rdata_len) p += 1 + (size_t)rr->rdata[p];
        return p == rr->rdata_len ? 0 : MESH_EPROTO;
    }
    default:
        (void)len;
        return 0;
    }
}

int mdns_msg_parse(const uint8_t *b, size_t len, struct mdns_msg *out)
{
    memset(out, 0, sizeof *out);
    if (len < HDR_LEN || len > MDNS_MSG_MAX) return MESH_EPROTO;
    out->id = rd16(b);
    out->flags = rd16(b + 2);
    if (out->flags & OPCODE_MASK) return MESH_EPROTO; /* RFC 6762 18.3: opcode must be 0 */
    size_t qd = rd16(b + 4), an = rd16(b + 6), ns = rd16(b + 8), ar = rd16(b + 10);
    if (qd > MDNS_QUESTIONS_MAX || an + ns + ar > MDNS_RRS_MAX) return MESH_EPROTO;
    size_t p = HDR_LEN;
    for (size_t i = 0; i < qd; i++) {
        struct mdns_question *q = &out->q[i];
        if (name_read(b, len, &p, q->name) < 0 || p + 4 > len) return MESH_EPROTO;
        q->type = rd16(b + p);
        uint16_t c = rd16(b + p + 2);
        q->unicast_response = (c & CLASS_TOP) != 0;
        q->qclass = c & (uint16_t)~CLASS_TOP;
        p += 4;
    }
    out->n_questions = qd;
    for (size_t i = 0; i < an + ns + ar; i++) {
        struct mdns_rr *rr = &out->rr[i];
        if (name_read(b, len, &p, rr->name) < 0 || p + 10 > len) return MESH_EPROTO;
        rr->type = rd16(b + p);
        rr->rclass = rd16(b + p + 2) & (uint16_t)~CLASS_TOP;
        rr->ttl = rd32(b + p + 4);
        rr->rdata_len = rd16(b + p + 8);
        p += 10;
        if (rr->rdata_len > len - p) return MESH_EPROTO;
        rr->rdata = b + p;
        rr->section = i < an ? MDNS_SEC_ANSWER : i < an + ns ? MDNS_SEC_AUTHORITY
                                                             : MDNS_SEC_ADDITIONAL;
        if (rdata_check(b, len, rr, p) < 0) return MESH_EPROTO;
        p += rr->rdata_len;
    }
    out->n_rrs = an + ns + ar;
    return p == len ? 0 : MESH_EPROTO;
}

int mdns_txt_next(const struct mdns_rr *rr, size_t *pos, const uint8_t **s, size_t *s_len)
{
    if (rr->type != MDNS_TYPE_TXT || *pos >= rr->rdata_len) return 0;
    size_t l = rr->rdata[*pos];
    if (*pos + 1 + l > rr->rdata_len) return 0;
    *s = rr->rdata + *pos + 1;
    *s_len = l;
    *pos += 1 + l;
    return 1;
}

/* ---- building ------------------------------------------------------------------------ */

struct wbuf {
    uint8_t *b;
    size_t cap, len;
    bool overflow;
};

static void put(struct wbuf *w, const void *p, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return;
    }
    memcpy(w->b + w->len, p, n);
    w->len += n;
}

static void put16(struct wbuf *w, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(w, x, 2);
}

static void put32(struct wbuf *w, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(w, x, 4);
}

/* Writes a dotted name as labels. */
static int put_name(struct wbuf *w, const char *name)
{
    size_t n = strlen(name);
    if (n > MDNS_NAME_MAX) return MESH_EINVAL;
    const char *s = name;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t l = dot ? (size_t)(dot - s) : strlen(s);
        if (l == 0 || l > 63) return MESH_EINVAL;
        uint8_t lb = (uint8_t)l;
        put(w, &lb, 1);
        put(w, s, l);
        s += l + (dot ? 1 : 0);
        if (dot && !*s) return MESH_EINVAL;
    }
    uint8_t z = 0;
    put(w, &z, 1);
    return 0;
}

static void put_header(struct wbuf *w, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ar)
{
    put16(w, 0);
    put16(w, flags);
    put16(w, qd);
    put16(w, an);
    put16(w, 0);
    put16(w, ar);
}

int mdns_query_build(uint8_t *buf, size_t cap, size_t *len)
{
    struct wbuf w = {buf, cap, 0, false};
    *len = 0;
    put_header(&w, 0, 1, 0, 0);
    put_name(&w, MDNS_SERVICE);
    put16(&w, MDNS_TYPE_PTR);
    put16(&w, MDNS_CLASS_IN);
    if (w.overflow) return MESH_ERANGE;
    *len = w.len;
    return 0;
}

static bool label_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e || s[i] == '.') return false;
    return true;
}

int mdns_response_build(const char *peer_name, const struct multiaddr *addrs, size_t n_addrs,
                        uint32_t ttl_s, uint8_t *buf, size_t cap, size_t *len)
{
    char full[MDNS_NAME_MAX + 1], text[MULTIADDR_TEXT_CAP];
    struct wbuf w = {buf, cap, 0, false};
    *len = 0;
    if (!label_ok(peer_name) || n_addrs == 0) return MESH_EINVAL;
    memcpy(full, peer_name, strlen(peer_name));
    memcpy(full + strlen(peer_name), "." MDNS_SERVICE, sizeof MDNS_SERVICE + 1);
    put_header(&w, FLAG_QR | FLAG_AA, 0, 1, 1);
    /* answer: _p2p._udp.local PTR <peer>._p2p._udp.local (shared record: no cache flush) */
    put_name(&w, MDNS_SERVICE);
    put16(&w, MDNS_TYPE_PTR);
    put16(&w, MDNS_CLASS_IN);
    put32(&w, ttl_s);
    put16(&w, (uint16_t)(strlen(full) + 2));
    put_name(&w, full);
    /* additional: <peer>._p2p._udp.local TXT "dnsaddr=..." ... (unique: cache flush) */
    put_name(&w, full);
    put16(&w, MDNS_TYPE_TXT);
    put16(&w, MDNS_CLASS_IN | CLASS_TOP);
    put32(&w, ttl_s);
    size_t rdlen_at = w.len;
    put16(&w, 0);
    size_t rd_start = w.len;
    for (size_t i = 0; i < n_addrs; i++) {
        if (multiaddr_to_text(&addrs[i], text, sizeof text) < 0) return MESH_EINVAL;
        size_t l = strlen(text) + 8;
        if (l > 255) return MESH_ERANGE;
        uint8_t lb = (uint8_t)l;
        put(&w, &lb, 1);
        put(&w, "dnsaddr=", 8);
        put(&w, text, strlen(text));
    }
    if (w.overflow) return MESH_ERANGE;
    size_t rdlen = w.len - rd_start;
    if (rdlen > 0xffff) return MESH_ERANGE;
    buf[rdlen_at] = (uint8_t)(rdlen >> 8);
    buf[rdlen_at + 1] = (uint8_t)rdlen;
    *len = w.len;
    return 0;
}

/* ---- the discovery core -------------------------------------------------------------- */

struct mdns_pkt {
    uint8_t *b;
    size_t len;
};

struct mdns {
    struct mdns_config cfg;
    char name[64];
    struct multiaddr addrs[MDNS_ADDRS_MAX];
    size_t n_addrs;
    struct mdns_pkt out[OUT_MAX];
    size_t n_out;
    struct mdns_peer found[FOUND_MAX];
    size_t n_found;
    bool has_time;
    uint64_t next_query_ms;
};

int mdns_new(const struct mdns_config *cfg, struct mdns **out)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    uint8_t h[32];
    *out = NULL;
    if (!cfg || cfg->self.len == 0) return MESH_EINVAL;
    struct mdns *m = calloc(1, sizeof *m);
    if (!m) return MESH_ENOMEM;
    m->cfg = *cfg;
    if (!m->cfg.query_interval_ms) m->cfg.query_interval_ms = 10000;
    if (!m->cfg.ttl_s) m->cfg.ttl_s = 120;
    /* A random 32-character label, as the spec suggests, so the name reveals nothing. */
    crypto_hash_sha256(h, cfg->seed, sizeof cfg->seed);
    for (int i = 0; i < 32; i++) m->name[i] = alphabet[h[i] % 36];
    m->name[32] = 0;
    *out = m;
    return 0;
}

void mdns_free(struct mdns *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_out; i++) free(m->out[i].b);
    free(m);
}

const char *mdns_peer_name(const struct mdns *m) { return m->name; }

int mdns_set_addrs(struct mdns *m, const struct multiaddr *addrs, size_t n)
{
    if (n > MDNS_ADDRS_MAX) return MESH_ERANGE;
    for (size_t i = 0; i < n; i++) {
        struct peer_id id;
        struct multiaddr a = addrs[i];
        if (multiaddr_peer_id(&a, &id) == 0) {
            if (!peer_id_equal(&id, &m->cfg.self)) return MESH_EINVAL;
        } else if (multiaddr_append_p2p(&a, &m->cfg.self) < 0) {
            return MESH_ERANGE;
        }
        m->addrs[i] = a;
    }
    m->n_addrs = n;
    return 0;
}

static void queue_packet(struct mdns *m, uint8_t *b, size_t len)
{
    if (m->n_out == OUT_MAX) {
        free(b);
        return;
    }
    m->out[m->n_out++] = (struct mdns_pkt){b, len};
}

static void queue_response(struct mdns *m)
{
    if (m->n_addrs == 0) return;
    uint8_t *b = malloc(MDNS_MSG_MAX);
    size_t len;
    if (!b) return;
    if (mdns_response_build(m->name, m->addrs, m->n_addrs, m->cfg.ttl_s, b, MDNS_MSG_MAX,
                            &len) < 0) {
        free(b);
        return;
    }
    queue_packet(m, b, len);
}

static bool ends_with_service(const char *name)
{
    size_t n = strlen(name), s = sizeof MDNS_SERVICE - 1;
    return n > s + 1 && name[n - s - 1] == '.' && strcasecmp(name + n - s, MDNS_SERVICE) == 0;
}

/* Adds an address to the found list under its peer ID. */
static void found_add(struct mdns *m, size_t first, const struct peer_id *id,
                      const struct multiaddr *a)
{
    for (size_t i = first; i < m->n_found; i++) {
        struct mdns_peer *p = &m->found[i];
        if (!peer_id_equal(&p->id, id)) continue;
        for (size_t j = 0; j < p->n_addrs; j++)
            if (multiaddr_equal(&p->addrs[j], a)) return;
        if (p->n_addrs < MDNS_ADDRS_MAX) p->addrs[p->n_addrs++] = *a;
        return;
    }
    if (m->n_found == FOUND_MAX) return;
    struct mdns_peer *p = &m->found[m->n_found++];
    memset(p, 0, sizeof *p);
    p->id = *id;
    p->addrs[0] = *a;
    p->n_addrs = 1;
}

/* TXT strings "dnsaddr=<multiaddr>" of one record. */
static void take_txt(struct mdns *m, size_t first, const struct mdns_rr *rr)
{
    size_t pos = 0, l;
    const uint8_t *s;
    char text[256];
    while (mdns_txt_next(rr, &pos, &s, &l)) {
        if (l <= 8 || memcmp(s, "dnsaddr=", 8) != 0) continue;
        memcpy(text, s + 8, l - 8);
        text[l - 8] = 0;
        if (memchr(text, 0, l - 8)) continue;
        struct multiaddr a;
        struct peer_id id;
        if (multiaddr_from_text(text, &a) < 0 || multiaddr_peer_id(&a, &id) < 0) continue;
        if (peer_id_equal(&id, &m->cfg.self)) continue;
        found_add(m, first, &id, &a);
    }
}

static void handle_response(struct mdns *m, const struct mdns_msg *msg)
{
    size_t first = m->n_found;
    for (size_t i = 0; i < msg->n_rrs; i++) {
        const struct mdns_rr *ptr = &msg->rr[i];
        if (ptr->type != MDNS_TYPE_PTR || ptr->ttl == 0 ||
            strcasecmp(ptr->name, MDNS_SERVICE) != 0 || !ends_with_service(ptr->ptr))
            continue;
        for (size_t j = 0; j < msg->n_rrs; j++) {
            const struct mdns_rr *txt = &msg->rr[j];
            if (txt->type == MDNS_TYPE_TXT && txt->ttl > 0 &&
                strcasecmp(txt->name, ptr->ptr) == 0)
                take_txt(m, first, txt);
        }
    }
}

int mdns_on_packet(struct mdns *m, uint64_t now_ms, const uint8_t *b, size_t len)
{
    (void)now_ms;
    struct mdns_msg *msg = malloc(sizeof *msg);
    if (!msg) return MESH_ENOMEM;
    int rc = mdns_msg_parse(b, len, msg);
    if (rc < 0) goto done;
    if (!(msg->flags & FLAG_QR)) {
        for (size_t i = 0; i < msg->n_questions; i++) {
            const struct mdns_question *q = &msg->q[i];
            if ((q->type == MDNS_TYPE_PTR || q->type == MDNS_TYPE_ANY) &&
                strcasecmp(q->name, MDNS_SERVICE) == 0) {
                queue_response(m);
                break;
            }
        }
    } else {
        handle_response(m, msg);
    }
done:
    free(msg);
    return rc;
}

int mdns_next_packet(struct mdns *m, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (m->n_out == 0) return MESH_ENOTFOUND;
    *buf = m->out[0].b;
    *len = m->out[0].len;
    memmove(m->out, m->out + 1, (m->n_out - 1) * sizeof *m->out);
    m->n_out--;
    return 0;
}

int mdns_next_peer(struct mdns *m, struct mdns_peer *p)
{
    if (m->n_found == 0) return MESH_ENOTFOUND;
    *p = m->found[0];
    memmove(m->found, m->found + 1, (m->n_found - 1) * sizeof *m->found);
    m->n_found--;
    return 0;
}

uint64_t mdns_periodic(struct mdns *m, uint64_t now_ms)
{
    if (!m->has_time || now_ms >= m->next_query_ms) {
        m->has_time = true;
        m->next_query_ms = now_ms + m->cfg.query_interval_ms;
        uint8_t *b = malloc(64);
        size_t len;
        if (b && mdns_query_build(b, 64, &len) == 0) queue_packet(m, b, len);
        else free(b);
    }
    return m->next_query_ms;
}
