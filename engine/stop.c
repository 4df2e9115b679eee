/* stop.c - incremental stop-string matcher (see stop.h).
 *
 * State: the held-back tail of the text so far. Invariant: no stop string occurs in it
 * and it is the longest tail that is a prefix of some stop string (or an incomplete UTF-8
 * character, whichever is longer), so a match can only start inside the held tail or in
 * new text, and searching held + new finds every match exactly once.
 * UTF-8 (RFC 3629): a lead byte C2..DF, E0..EF, F0..F4 announces 2, 3 or 4 bytes.
 */
#include "engine/stop.h"

#include "core/err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct stop {
    char **strs;     /* [n] non-empty stop strings (copies) */
    size_t *lens;    /* [n] their lengths */
    int *index;      /* [n] their index in the caller's array */
    size_t n;
    char *buf;       /* held tail at buf[off .. off + len) */
    size_t off, len, cap;
    bool is_stopped;
    int matched;
};

void stop_free(struct stop *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->strs[i]);
    free(s->strs);
    free(s->lens);
    free(s->index);
    free(s->buf);
    free(s);
}

int stop_new(const char *const *strs, size_t n_strs, struct stop **out)
{
    *out = NULL;
    if (n_strs > 0 && !strs) return MESH_EINVAL;
    for (size_t i = 0; i < n_strs; i++)
        if (!strs[i]) return MESH_EINVAL;
    struct stop *s = calloc(1, sizeof *s);
    if (!s) return MESH_ENOMEM;
    s->matched = -1;
    if (n_strs > 0) {
        s->strs = calloc(n_strs, sizeof *s->strs);
        s->lens = calloc(n_strs, sizeof *s->lens);
        s->index = calloc(n_strs, sizeof *s->index);
        if (!s->strs || !s->lens || !s->index) goto fail;
    }
    for (size_t i = 0; i < n_strs; i++) {
        size_t l = strlen(strs[i]);
        if (l == 0) continue;
        s->strs[s->n] = malloc(l + 1);
        if (!s->strs[s->n]) goto fail;
        memcpy(s->strs[s->n], strs[i], l + 1);
        s->lens[s->n] = l;
        s->index[s->n] = i > INT32_MAX ? INT32_MAX : (int)i;
        s->n++;
    }
    *out = s;
    return 0;
fail:
    stop_free(s);
    return MESH_ENOMEM;
}

void stop_reset(struct stop *s)
{
    s->off = s->len = 0;
    s->is_stopped = false;
    s->matched = -1;
}

int stop_matched(const struct stop *s)
{
    return s->matched;
}

size_t stop_held(const struct stop *s)
{
    return s->len;
}

/* Bytes of an incomplete UTF-8 character at the end of p[0..n) (0 if none). */
static size_t utf8_incomplete_tail(const unsigned char *p, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = p[n - k];
        if ((c & 0xC0) == 0x80) continue; /* continuation: look further back */
        size_t need = c < 0xC2 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c <= 0xF4 ? 4 : 1;
        return k < need ? k : 0;
    }
    return 0;
}

/* Longest k < len(stop) such that the last k bytes of p[0..n) start some stop string. */
static size_t stop_prefix_tail(const struct stop *s, const char *p, size_t n)
{
    size_t best = 0;
    for (size_t i = 0; i < s->n; i++) {
        size_t l = s->lens[i];
        size_t k = l - 1 < n ? l - 1 : n;
        for (; k > best; k--)
            if (p[n - k] == s->strs[i][0] && !memcmp(p + n - k, s->strs[i], k)) break;
        if (k > best) best = k;
    }
    return best;
}

/* Moves the held tail to the front of buf (the previous emit pointer dies here). */
static void compact(struct stop *s)
{
    if (s->off > 0) {
        memmove(s->buf, s->buf + s->off, s->len);
        s->off = 0;
    }
}

int stop_push(struct stop *s, const char *text, size_t len, const char **emit,
              size_t *emit_len, bool *is_stopped)
{
    *emit = "";
    *emit_len = 0;
    *is_stopped = s->is_stopped;
    if (s->is_stopped) return 0;
    compact(s);
    if (len > SIZE_MAX - s->len) return MESH_ENOMEM;
    size_t total = s->len + len;
    if (total > s->cap) {
        size_t cap = s->cap ? s->cap : 64;
        while (cap < total) cap = cap > SIZE_MAX / 2 ? total : cap * 2;
        char *nb = realloc(s->buf, cap);
        if (!nb) return MESH_ENOMEM;
        s->buf = nb;
        s->cap = cap;
    }
    if (len > 0) memcpy(s->buf + s->len, text, len);

    /* The stop string that completes first wins (smallest end), as if the text came one
     * byte at a time, so the result does not depend on chunking; at equal ends, the
     * longer one (earlier start); then the first given. */
    size_t best_pos = SIZE_MAX, best_end = SIZE_MAX;
    int best = -1;
    for (size_t i = 0; i < s->n; i++) {
        const char *m = memmem(s->buf, total, s->strs[i], s->lens[i]);
        if (!m) continue;
        size_t pos = (size_t)(m - s->buf), end = pos + s->lens[i];
        if (end < best_end || (end == best_end && pos < best_pos)) {
            best_pos = pos;
            best_end = end;
            best = s->index[i];
        }
    }
    *emit = s->buf;
    if (best >= 0) {
        *emit_len = best_pos;
        *is_stopped = s->is_stopped = true;
        s->matched = best;
        s->len = 0;
        return 0;
    }
    size_t hold = stop_prefix_tail(s, s->buf, total);
    size_t u = utf8_incomplete_tail((const unsigned char *)s->buf, total);
    if (u > hold) hold = u;
    *emit_len = total - hold;
    s->off = total - hold;
    s->len = hold;
    return 0;
}

void stop_flush(struct stop *s, const char **emit, size_t *emit_len)
{
    *emit = "";
    *emit_len = 0;
    if (s->is_stopped) return;
    compact(s);
    if (s->len == 0) return;
    *emit = s->buf;
    *emit_len = s->len;
    s->off = s->len;
    s->len = 0;
}
