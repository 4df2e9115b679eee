/* buf.c - growable byte queue (see buf.h). */
#include "buf.h"

#include "err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int buf_append(struct buf *b, const uint8_t *d, size_t n)
{
    if (n == 0) return 0;
    if (b->off && b->off == b->len) b->off = b->len = 0;
    if (n > b->cap - b->len) {
        if (b->off) { /* compact first, then grow */
            memmove(b->p, b->p + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        if (n > b->cap - b->len) {
            size_t cap = b->cap ? b->cap : 1024;
            while (cap - b->len < n) {
                if (cap > SIZE_MAX / 2) return MESH_ENOMEM;
                cap *= 2;
            }
            uint8_t *p = realloc(b->p, cap);
            if (!p) return MESH_ENOMEM;
            b->p = p;
            b->cap = cap;
        }
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) b->off = b->len = 0;
}

void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}
