/* multiaddr.c - multiaddr binary/text codec (see multiaddr.h; spec: multiformats/multiaddr
 * README and protocols.csv for codes and value sizes).
 *
 * Binary form: repeated (uvarint code, value); fixed-size values for ip4 (4), ip6 (16),
 * tcp/udp (2, big endian); uvarint length + bytes for dns* and p2p; none for p2p-circuit.
 */
#include "net/multiaddr.h"

#include "core/err.h"
#include "net/varint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define SIZE_VAR (-1) /* value is uvarint length + bytes */

struct ma_proto {
    uint32_t code;
    const char *name;
    int size; /* value bytes, 0 none, SIZE_VAR length-prefixed */
};

static const struct ma_proto g_protos[] = {
    {MA_IP4, "ip4", 4},        {MA_TCP, "tcp", 2},       {MA_UDP, "udp", 2},
    {MA_DNS, "dns", SIZE_VAR}, {MA_DNS4, "dns4", SIZE_VAR}, {MA_DNS6, "dns6", SIZE_VAR},
    {MA_IP6, "ip6", 16},       {MA_P2P_CIRCUIT, "p2p-circuit", 0}, {MA_P2P, "p2p", SIZE_VAR},
};

static const struct ma_proto *proto_by_code(uint64_t code)
{
    for (size_t i = 0; i < sizeof g_protos / sizeof g_protos[0]; i++)
        if (g_protos[i].code == code) return &g_protos[i];
    return NULL;
}

static const struct ma_proto *proto_by_name(const char *name, size_t len)
{
    if (len == 4 && !memcmp(name, "ipfs", 4)) return proto_by_code(MA_P2P); /* old alias */
    for (size_t i = 0; i < sizeof g_protos / sizeof g_protos[0]; i++)
        if (strlen(g_protos[i].name) == len && !memcmp(g_protos[i].name, name, len))
            return &g_protos[i];
    return NULL;
}

/* A DNS name we can carry in both forms: 1..255 printable bytes, no '/' (the text separator). */
static int check_dns(const uint8_t *v, size_t len)
{
    if (len == 0 || len > 255) return MESH_EPROTO;
    for (size_t i = 0; i < len; i++)
        if (v[i] <= 0x20 || v[i] >= 0x7f || v[i] == '/') return MESH_EPROTO;
    return 0;
}

static int check_value(const struct ma_proto *p, const uint8_t *v, size_t len)
{
    struct peer_id id;
    switch (p->code) {
    case MA_DNS:
    case MA_DNS4:
    case MA_DNS6:
        return check_dns(v, len);
    case MA_P2P:
        return peer_id_from_bytes(v, len, &id);
    default:
        return 0;
    }
}

int multiaddr_from_bytes(const uint8_t *b, size_t len, struct multiaddr *out)
{
    size_t pos = 0, used;
    uint64_t code, vlen;

    memset(out, 0, sizeof *out);
    if (len == 0) return MESH_EPROTO;
    if (len > MULTIADDR_MAX_LEN) return MESH_ERANGE;
    while (pos < len) {
        if (varint_decode(b + pos, len - pos, &code, &used)) return MESH_EPROTO;
        pos += used;
        const struct ma_proto *p = proto_by_code(code);
        if (!p) return MESH_EUNSUPPORTED;
        if (p->size == SIZE_VAR) {
            if (varint_decode(b + pos, len - pos, &vlen, &used)) return MESH_EPROTO;
            pos += used;
        } else {
            vlen = (uint64_t)p->size;
        }
        if (vlen > len - pos) return MESH_EPROTO;
        if (check_value(p, b + pos, (size_t)vlen)) return MESH_EPROTO;
        pos += (size_t)vlen;
    }
    memcpy(out->bytes, b, len);
    out->len = len;
    return 0;
}

int multiaddr_next(const struct multiaddr *ma, size_t *pos, struct multiaddr_part *part)
{
    uint64_t code, vlen;
    size_t used;

    memset(part, 0, sizeof *part);
    if (*pos >= ma->len) return 0;
    if (varint_decode(ma->bytes + *pos, ma->len - *pos, &code, &used)) return 0;
    *pos += used;
    const struct ma_proto *p = proto_by_code(code);
    if (!p) return 0;
    if (p->size == SIZE_VAR) {
        if (varint_decode(ma->bytes + *pos, ma->len - *pos, &vlen, &used)) return 0;
        *pos += used;
    } else {
        vlen = (uint64_t)p->size;
    }
    if (vlen > ma->len - *pos) return 0;
    part->code = (uint32_t)code;
    part->value = ma->bytes + *pos;
    part->value_len = (size_t)vlen;
    *pos += (size_t)vlen;
    return 1;
}

/* Strict dotted decimal: four parts 0..255, no leading zeros, no other characters. */
static int parse_ip4(const char *s, size_t len, uint8_t out[4])
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= len || s[i] != '.') return MESH_EPROTO;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 3) v = v * 10 + (unsigned)(s[i++] - '0');
        if (i == start || v > 255 || (s[start] == '0' && i - start > 1)) return MESH_EPROTO;
        out[part] = (uint8_t)v;
    }
    return i == len ? 0 : MESH_EPROTO;
}

static int parse_port(const char *s, size_t len, uint8_t out[2])
{
    unsigned v = 0;
    if (len == 0 || len > 5 || (s[0] == '0' && len > 1)) return MESH_EPROTO;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return MESH_EPROTO;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535) return MESH_EPROTO;
    out[0] = (uint8_t)(v >> 8);
    out[1] = (uint8_t)v;
    return 0;
}

/* Appends bytes to out, failing with MESH_ERANGE when the buffer is full. */
static int put(struct multiaddr *out, const void *b, size_t n)
{
    if (n > MULTIADDR_MAX_LEN - out->len) return MESH_ERANGE;
    memcpy(out->bytes + out->len, b, n);
    out->len += n;
    return 0;
}

static int put_varint(struct multiaddr *out, uint64_t v)
{
    uint8_t tmp[VARINT_MAX_LEN];
    return put(out, tmp, varint_encode(v, tmp));
}

/* Encodes the text value s[0..len) of protocol p and appends it (with length prefix). */
static int put_text_value(struct multiaddr *out, const struct ma_proto *p, const char *s,
                          size_t len)
{
    uint8_t v[64];
    char tmp[64];
    struct peer_id id;
    int rc;

    switch (p->code) {
    case MA_IP4:
        if (parse_ip4(s, len, v)) return MESH_EPROTO;
        return put(out, v, 4);
    case MA_IP6:
        if (len == 0 || len >= sizeof tmp) return MESH_EPROTO;
        memcpy(tmp, s, len);
        tmp[len] = 0;
        if (inet_pton(AF_INET6, tmp, v) != 1) return MESH_EPROTO;
        return put(out, v, 16);
    case MA_TCP:
    case MA_UDP:
        if (parse_port(s, len, v)) return MESH_EPROTO;
        return put(out, v, 2);
    case MA_DNS:
    case MA_DNS4:
    case MA_DNS6:
        if (check_dns((const uint8_t *)s, len)) return MESH_EPROTO;
        if ((rc = put_varint(out, len))) return rc;
        return put(out, s, len);
    case MA_P2P:
        if (peer_id_from_text(s, len, &id)) return MESH_EPROTO;
        if ((rc = put_varint(out, id.len))) return rc;
        return put(out, id.bytes, id.len);
    default:
        return MESH_EUNSUPPORTED;
    }
}

int multiaddr_from_text(const char *text, struct multiaddr *out)
{
    const char *s = text;
    int rc;

    memset(out, 0, sizeof *out);
    if (!text || text[0] != '/' || text[1] == 0) return MESH_EPROTO;
    while (*s) {
        /* s points at '/', then a protocol name up to the next '/' or the end. */
        if (*s != '/') return MESH_EPROTO;
        const char *name = ++s;
        while (*s && *s != '/') s++;
        const struct ma_proto *p = proto_by_name(name, (size_t)(s - name));
        if (!p) return s == name ? MESH_EPROTO : MESH_EUNSUPPORTED;
        if ((rc = put_varint(out, p->code))) return rc;
        if (p->size == 0) continue;
        if (*s != '/') return MESH_EPROTO; /* value missing */
        const char *val = ++s;
        while (*s && *s != '/') s++;
        if ((rc = put_text_value(out, p, val, (size_t)(s - val)))) return rc;
    }
    return 0;
}

/* Appends printf output at *o in buf (cap), failing with MESH_ERANGE when truncated. */
static int text_put(char *buf, size_t cap, size_t *o, const char *fmt, const char *a,
                    const char *b)
{
    int n = snprintf(buf + *o, cap - *o, fmt, a, b);
    if (n < 0 || (size_t)n >= cap - *o) return MESH_ERANGE;
    *o += (size_t)n;
    return 0;
}

int multiaddr_to_text(const struct multiaddr *ma, char *buf, size_t cap)
{
    struct multiaddr_part part;
    size_t pos = 0, o = 0;
    char val[300];
    int rc;

    if (cap == 0) return MESH_ERANGE;
    buf[0] = 0;
    while (multiaddr_next(ma, &pos, &part)) {
        const struct ma_proto *p = proto_by_code(part.code);
        switch (part.code) {
        case MA_IP4:
            inet_ntop(AF_INET, part.value, val, sizeof val);
            break;
        case MA_IP6:
            inet_ntop(AF_INET6, part.value, val, sizeof val);
            break;
        case MA_TCP:
        case MA_UDP:
            snprintf(val, sizeof val, "%u", (unsigned)part.value[0] << 8 | part.value[1]);
            break;
        case MA_P2P:
            if (peer_id_base58_encode(part.value, part.value_len, val, sizeof val))
                return MESH_ERANGE;
            break;
        case MA_P2P_CIRCUIT:
            val[0] = 0;
            break;
        default: /* dns*: validated printable */
            memcpy(val, part.value, part.value_len);
            val[part.value_len] = 0;
            break;
        }
        if (p->size == 0) rc = text_put(buf, cap, &o, "/%s%s", p->name, "");
        else rc = text_put(buf, cap, &o, "/%s/%s", p->name, val);
        if (rc) return rc;
    }
    return 0;
}

int multiaddr_append_p2p(struct multiaddr *ma, const struct peer_id *id)
{
    size_t saved = ma->len;
    int rc = put_varint(ma, MA_P2P);
    if (!rc) rc = put_varint(ma, id->len);
    if (!rc) rc = put(ma, id->bytes, id->len);
    if (rc) ma->len = saved;
    return rc;
}

int multiaddr_peer_id(const struct multiaddr *ma, struct peer_id *out)
{
    struct multiaddr_part part;
    size_t pos = 0;
    int rc = MESH_ENOTFOUND;

    memset(out, 0, sizeof *out);
    while (multiaddr_next(ma, &pos, &part))
        if (part.code == MA_P2P && peer_id_from_bytes(part.value, part.value_len, out) == 0)
            rc = 0;
    return rc;
}

int multiaddr_from_sockaddr(const struct sockaddr *sa, struct multiaddr *out)
{
    uint8_t port[2];
    memset(out, 0, sizeof *out);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        put_varint(out, MA_IP4);
        put(out, &in->sin_addr, 4);
        memcpy(port, &in->sin_port, 2);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        put_varint(out, MA_IP6);
        put(out, &in6->sin6_addr, 16);
        memcpy(port, &in6->sin6_port, 2);
    } else {
        return MESH_EUNSUPPORTED;
    }
    put_varint(out, MA_TCP);
    put(out, port, 2);
    return 0;
}

int multiaddr_to_sockaddr(const struct multiaddr *ma, struct sockaddr_storage *out)
{
    struct multiaddr_part ip, tcp;
    size_t pos = 0;

    memset(out, 0, sizeof *out);
    if (!multiaddr_next(ma, &pos, &ip) || !multiaddr_next(ma, &pos, &tcp) ||
        tcp.code != MA_TCP)
        return MESH_EUNSUPPORTED;
    if (ip.code == MA_IP4) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, ip.value, 4);
        memcpy(&in->sin_port, tcp.value, 2);
    } else if (ip.code == MA_IP6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, ip.value, 16);
        memcpy(&in6->sin6_port, tcp.value, 2);
    } else {
        return MESH_EUNSUPPORTED;
    }
    return 0;
}

bool multiaddr_equal(const struct multiaddr *a, const struct multiaddr *b)
{
    return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}
