/* identify.c - identify message codec (see identify.h; spec: libp2p/specs identify). */
#include "net/identify.h"

#include "core/err.h"
#include "identify.pb-c.h"

#include <stdio.h>
#include <string.h>

int identify_encode(const struct identify_info *info, const uint8_t *pubkey_proto,
                    size_t pubkey_len, uint8_t *out, size_t cap, size_t *out_len)
{
    P2pidentify__Identify m = P2PIDENTIFY__IDENTIFY__INIT;
    ProtobufCBinaryData addrs[IDENTIFY_MAX_ADDRS];
    char *protos[IDENTIFY_MAX_PROTOCOLS];

    *out_len = 0;
    m.protocolversion = (char *)info->protocol_version;
    m.agentversion = (char *)info->agent;
    if (pubkey_proto) {
        m.has_publickey = 1;
        m.publickey.data = (uint8_t *)pubkey_proto;
        m.publickey.len = pubkey_len;
    }
    for (size_t i = 0; i < info->n_listen_addrs && i < IDENTIFY_MAX_ADDRS; i++) {
        addrs[i].data = (uint8_t *)info->listen_addrs[i].bytes;
        addrs[i].len = info->listen_addrs[i].len;
        m.n_listenaddrs++;
    }
    m.listenaddrs = addrs;
    for (size_t i = 0; i < info->n_protocols && i < IDENTIFY_MAX_PROTOCOLS; i++)
        protos[m.n_protocols++] = (char *)info->protocols[i];
    m.protocols = protos;
    if (info->observed_addr.len) {
        m.has_observedaddr = 1;
        m.observedaddr.data = (uint8_t *)info->observed_addr.bytes;
        m.observedaddr.len = info->observed_addr.len;
    }
    size_t n = p2pidentify__identify__get_packed_size(&m);
    if (n > cap) return MESH_ERANGE;
    *out_len = p2pidentify__identify__pack(&m, out);
    return 0;
}

/* Copies a peer's string into a fixed buffer if it fits and has no control characters. */
static bool copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)src[i] < 0x20 || src[i] == 0x7f) return false;
    memcpy(dst, src ? src : "", n);
    dst[n] = 0;
    return true;
}

int identify_decode(const uint8_t *b, size_t len, const struct peer_id *peer,
                    struct identify_info *out)
{
    int rc = 0;
    P2pidentify__Identify *m;

    memset(out, 0, sizeof *out);
    if (len > IDENTIFY_MAX_MSG) return MESH_EPROTO;
    m = p2pidentify__identify__unpack(NULL, len, b);
    if (!m) return MESH_EPROTO;
    if (m->has_publickey) {
        struct peer_id pid;
        if (peer_id_from_pubkey_proto(m->publickey.data, m->publickey.len, &pid) ||
            !peer_id_equal(&pid, peer)) {
            rc = MESH_ECRYPTO;
            goto out;
        }
    }
    if (!copy_text(out->agent, sizeof out->agent, m->agentversion))
        snprintf(out->agent, sizeof out->agent, "(unprintable)");
    if (!copy_text(out->protocol_version, sizeof out->protocol_version, m->protocolversion))
        out->protocol_version[0] = 0;
    for (size_t i = 0; i < m->n_protocols && out->n_protocols < IDENTIFY_MAX_PROTOCOLS; i++)
        if (copy_text(out->protocols[out->n_protocols], IDENTIFY_MAX_PROTOCOL_LEN,
                      m->protocols[i]))
            out->n_protocols++;
    for (size_t i = 0; i < m->n_listenaddrs && out->n_listen_addrs < IDENTIFY_MAX_ADDRS; i++)
        if (multiaddr_from_bytes(m->listenaddrs[i].data, m->listenaddrs[i].len,
                                 &out->listen_addrs[out->n_listen_addrs]) == 0)
            out->n_listen_addrs++;
    if (m->has_observedaddr &&
        multiaddr_from_bytes(m->observedaddr.data, m->observedaddr.len, &out->observed_addr))
        memset(&out->observed_addr, 0, sizeof out->observed_addr);
out:
    p2pidentify__identify__free_unpacked(m, NULL);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}
