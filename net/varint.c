/* varint.c - multiformats unsigned varints (see varint.h). */
#include "net/varint.h"

#include "core/err.h"

size_t varint_encode(uint64_t v, uint8_t *out)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

int varint_decode(const uint8_t *b, size_t len, uint64_t *v, size_t *used)
{
    uint64_t x = 0;
    *v = 0;
    *used = 0;
    for (size_t i = 0; i < VARINT_MAX_LEN; i++) {
        if (i >= len) return MESH_EAGAIN;
        x |= (uint64_t)(b[i] & 0x7f) << (7 * i);
        if (!(b[i] & 0x80)) {
            if (b[i] == 0 && i > 0) return MESH_EPROTO; /* trailing zero group: not minimal */
            *v = x;
            *used = i + 1;
            return 0;
        }
    }
    return MESH_EPROTO;
}
