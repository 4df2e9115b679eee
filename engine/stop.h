/* stop.h - incremental stop-string matcher for streamed generated text.
 *
 * Text arrives in chunks (one detokenized piece per token). stop_push says which bytes
 * are safe to show now: it holds back the longest tail that could still grow into a stop
 * string, and an incomplete UTF-8 character at the end, so a client never sees part of a
 * stop string or half a character. When a stop string completes, the text before it is
 * released, the stop string and anything after it are dropped, and the matcher stays
 * stopped until stop_reset. Matching is on bytes; the stop string that completes first
 * in the text wins (the same whatever the chunking).
 * Used by `run --stop`, `chat` (with chat_tmpl_stops) and the API's "stop".
 * Thread rule: one matcher per sequence; not shared between threads.
 */
#ifndef MESH_ENGINE_STOP_H
#define MESH_ENGINE_STOP_H

#include <stdbool.h>
#include <stddef.h>

struct stop;

/* Creates a matcher for n_strs NUL-terminated stop strings (copied; empty strings are
 * ignored; n_strs may be 0, leaving only the UTF-8 hold-back). Returns 0, MESH_EINVAL
 * (strs NULL with n_strs > 0, or a NULL entry) or MESH_ENOMEM. */
int stop_new(const char *const *strs, size_t n_strs, struct stop **out);
void stop_free(struct stop *s);

/* Feeds len bytes of text. *emit / *emit_len receive the bytes now safe to output (a
 * pointer into the matcher, valid until the next call on s; *emit_len may be 0).
 * *is_stopped is true once a stop string has matched: *emit then ends right before it.
 * After that, pushes emit nothing. Returns 0 or MESH_ENOMEM (state unchanged). */
int stop_push(struct stop *s, const char *text, size_t len, const char **emit,
              size_t *emit_len, bool *is_stopped);

/* End of generation without a match: releases the held-back bytes (a possible prefix
 * of a stop string, an incomplete character). Emits nothing if already stopped. */
void stop_flush(struct stop *s, const char **emit, size_t *emit_len);

/* Index (in the stop_new array) of the string that matched, or -1. */
int stop_matched(const struct stop *s);

/* Bytes currently held back (for tests and logs). */
size_t stop_held(const struct stop *s);

/* Forgets held bytes and the stopped state, for a new generation. */
void stop_reset(struct stop *s);

#endif
