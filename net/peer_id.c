/* peer_id.c - libp2p peer IDs (see peer_id.h; spec: libp2p/specs peer-ids/peer-ids.md).
 *
 * Base58btc is the Bitcoin alphabet with leading zero bytes written as '1'. The CIDv1 form is
 * only parsed, never produced (the spec says to display base58btc). No allocation.
 */
#include "net/peer_id.h"

#include "core/err.h"

#include <sodium.h>
#include <string.h>

static const char g_b58[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/* Longest input (bytes or characters) the base58 codec accepts: ample for any peer ID or
 * multihash, and bounds the quadratic conversion. */
#define B58_MAX 128

int peer_id_base58_encode(const uint8_t *b, size_t len, char *buf, size_t cap)
{
    uint8_t digits[B58_MAX * 2]; /* base-58 digits, least significant first */
    size_t n_digits = 0, n_zeros = 0;

    if (cap == 0) return MESH_ERANGE;
    buf[0] = 0;
    if (len > B58_MAX) return MESH_ERANGE;
    while (n_zeros < len && b[n_zeros] == 0) n_zeros++;
    for (size_t i = n_zeros; i < len; i++) {
        unsigned carry = b[i];
        /* digits = digits * 256 + b[i] */
        for (size_t j = 0; j < n_digits; j++) {
            carry += (unsigned)digits[j] << 8;
            digits[j] = (uint8_t)(carry % 58);
            carry /= 58;
        }
        while (carry) {
            digits[n_digits++] = (uint8_t)(carry % 58);
            carry /= 58;
        }
    }
    if (n_zeros + n_digits + 1 > cap) return MESH_ERANGE;
    size_t o = 0;
    for (size_t i = 0; i < n_zeros; i++) buf[o++] = '1';
    for (size_t i = 0; i < n_digits; i++) buf[o++] = g_b58[digits[n_digits - 1 - i]];
    buf[o] = 0;
    return 0;
}

int peer_id_base58_decode(const char *text, size_t len, uint8_t *out, size_t cap,
                          size_t *out_len)
{
    uint8_t bytes[B58_MAX]; /* base-256 digits, least significant first */
    size_t n_bytes = 0, n_ones = 0;

    *out_len = 0;
    if (len > B58_MAX) return MESH_ERANGE;
    while (n_ones < len && text[n_ones] == '1') n_ones++;
    for (size_t i = n_ones; i < len; i++) {
        const char *p = text[i] ? strchr(g_b58, text[i]) : NULL;
        if (!p) return MESH_EPROTO;
        unsigned carry = (unsigned)(p - g_b58);
        /* bytes = bytes * 58 + digit */
        for (size_t j = 0; j < n_bytes; j++) {
            carry += (unsigned)bytes[j] * 58;
            bytes[j] = (uint8_t)(carry & 0xff);
            carry >>= 8;
        }
        while (carry) {
            if (n_bytes == sizeof bytes) return MESH_ERANGE;
            bytes[n_bytes++] = (uint8_t)(carry & 0xff);
            carry >>= 8;
        }
    }
    if (n_ones + n_bytes > cap) return MESH_ERANGE;
    memset(out, 0, n_ones);
    for (size_t i = 0; i < n_bytes; i++) out[n_ones + i] = bytes[n_bytes - 1 - i];
    *out_len = n_ones + n_bytes;
    return 0;
}

/* Reads an unsigned varint (at most 9 bytes, minimal encoding) from b[*pos..len). */
static int read_uvarint(const uint8_t *b, size_t len, size_t *pos, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned i = 0, shift = 0; i < 9; i++, shift += 7) {
        if (*pos >= len) return MESH_EPROTO;
        uint8_t c = b[(*pos)++];
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            if (c == 0 && i > 0) return MESH_EPROTO; /* not minimal */
            *v = x;
            return 0;
        }
    }
    return MESH_EPROTO;
}

int peer_id_from_pubkey_proto(const uint8_t *pub, size_t pub_len, struct peer_id *out)
{
    memset(out, 0, sizeof *out);
    if (!pub || pub_len == 0) return MESH_EINVAL;
    if (pub_len <= 42) {
        out->bytes[0] = PEER_ID_MH_IDENTITY;
        out->bytes[1] = (uint8_t)pub_len;
        memcpy(out->bytes + 2, pub, pub_len);
        out->len = (uint8_t)(pub_len + 2);
    } else {
        out->bytes[0] = PEER_ID_MH_SHA256;
        out->bytes[1] = 32;
        crypto_hash_sha256(out->bytes + 2, pub, pub_len);
        out->len = 34;
    }
    return 0;
}

int peer_id_from_bytes(const uint8_t *b, size_t len, struct peer_id *out)
{
    size_t pos = 0;
    uint64_t code, dlen;

    memset(out, 0, sizeof *out);
    if (read_uvarint(b, len, &pos, &code) || read_uvarint(b, len, &pos, &dlen))
        return MESH_EPROTO;
    if (dlen != len - pos) return MESH_EPROTO;
    if (code == PEER_ID_MH_IDENTITY) {
        if (dlen == 0 || dlen > 42) return MESH_EPROTO;
    } else if (code == PEER_ID_MH_SHA256) {
        if (dlen != 32) return MESH_EPROTO;
    } else {
        return MESH_EPROTO;
    }
    memcpy(out->bytes, b, len);
    out->len = (uint8_t)len;
    return 0;
}

int peer_id_pubkey_proto(const struct peer_id *id, const uint8_t **pub, size_t *pub_len)
{
    *pub = NULL;
    *pub_len = 0;
    if (id->len < 3 || id->bytes[0] != PEER_ID_MH_IDENTITY) return MESH_ENOTFOUND;
    *pub = id->bytes + 2;
    *pub_len = id->bytes[1];
    return 0;
}

int peer_id_to_text(const struct peer_id *id, char *buf, size_t cap)
{
    return peer_id_base58_encode(id->bytes, id->len, buf, cap);
}

/* RFC 4648 base32, lower case, no padding (multibase 'b'). */
static int base32_decode(const char *s, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        char c = s[i];
        if (c >= 'a' && c <= 'z') v = (unsigned)(c - 'a');
        else if (c >= '2' && c <= '7') v = (unsigned)(c - '2') + 26;
        else return MESH_EPROTO;
        acc = (acc << 5) | v;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap) return MESH_ERANGE;
            out[o++] = (uint8_t)(acc >> bits);
        }
        acc &= (1u << bits) - 1;
    }
    if (bits >= 5 || acc != 0) return MESH_EPROTO; /* non-canonical tail */
    *out_len = o;
    return 0;
}

int peer_id_from_text(const char *text, size_t len, struct peer_id *out)
{
    uint8_t raw[B58_MAX];
    size_t raw_len = 0, pos = 0;
    uint64_t version, codec;

    memset(out, 0, sizeof *out);
    if (len == 0) return MESH_EPROTO;
    if (text[0] == '1' || text[0] == 'Q') {
        if (peer_id_base58_decode(text, len, raw, sizeof raw, &raw_len)) return MESH_EPROTO;
        return peer_id_from_bytes(raw, raw_len, out);
    }
    if (text[0] != 'b') return MESH_EPROTO;
    if (base32_decode(text + 1, len - 1, raw, sizeof raw, &raw_len)) return MESH_EPROTO;
    if (read_uvarint(raw, raw_len, &pos, &version) || version != 1) return MESH_EPROTO;
    if (read_uvarint(raw, raw_len, &pos, &codec) || codec != 0x72) return MESH_EPROTO;
    return peer_id_from_bytes(raw + pos, raw_len - pos, out);
}

bool peer_id_equal(const struct peer_id *a, const struct peer_id *b)
{
    return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}
