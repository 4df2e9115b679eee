/* buf.h - a growable byte queue: append at the end, consume from the front.
 *
 * Bytes [off, len) of p are live. Appending compacts consumed space before growing, and
 * an emptied queue rewinds to the start, so a steady stream reuses one allocation.
 * Used for socket and stream buffers in net/. Thread rule: owned by one thread.
 */
#ifndef MESH_CORE_BUF_H
#define MESH_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *p;
    size_t off, len, cap;
};

/* Appends n bytes of d. Returns 0 or MESH_ENOMEM (the queue is unchanged). */
int buf_append(struct buf *b, const uint8_t *d, size_t n);
/* Live bytes (len - off). */
static inline size_t buf_size(const struct buf *b) { return b->len - b->off; }
/* Drops n live bytes from the front (n <= buf_size). */
void buf_consume(struct buf *b, size_t n);
/* Frees the storage; the struct is empty and reusable afterwards. */
void buf_free(struct buf *b);

#endif
