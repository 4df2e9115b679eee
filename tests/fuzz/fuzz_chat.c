/* fuzz_chat.c - fuzz target: chat template detection and rendering, and the stop-string
 * matcher, on arbitrary bytes.
 *
 * Input: the whole input is a template text for detection and default-system extraction.
 * Split on 0x00 it is also a list of fields: field 0 picks the stop-string count and chunk
 * sizes (and serves as a default system prompt), then alternating role/content fields
 * render through every family, and the same fields drive the stop matcher (the first
 * 1..3 as stop strings, the rest as streamed text). The matcher's output is checked
 * against a plain search; a mismatch aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/stop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_FIELDS = 64 };

static void fuzz_render(char **fields, size_t n_fields)
{
    static const char *const roles[] = {"system", "user", "assistant"};
    struct chat_msg msgs[MAX_FIELDS / 2];
    size_t n = 0;
    for (size_t i = 1; i + 1 < n_fields && n < MAX_FIELDS / 2; i += 2) {
        const char *r = fields[i];
        /* Mostly valid roles, sometimes the raw field (unknown role). */
        msgs[n].role = r[0] && (unsigned char)r[0] % 8 == 7 ? r : roles[(unsigned char)r[0] % 3];
        msgs[n].content = fields[i + 1];
        n++;
    }
    for (int t = CHAT_TMPL_UNKNOWN; t <= CHAT_TMPL_COUNT_; t++) {
        for (int gen = 0; gen < 2; gen++) {
            char *out = NULL;
            struct chat_opts o = {.add_generation_prompt = gen,
                                  .eos_text = gen ? NULL : "<eos>",
                                  .default_system = gen ? fields[0] : NULL,
                                  .date_string = gen ? NULL : fields[0]};
            if (chat_tmpl_render((enum chat_tmpl)t, msgs, n, &o, &out) == 0) {
                if (!out) abort();
                (void)strlen(out);
            } else if (out) {
                abort();
            }
            free(out);
        }
        for (const char *const *s = chat_tmpl_stops((enum chat_tmpl)t); *s; s++) (void)strlen(*s);
    }
}

static void fuzz_stop(char **fields, const size_t *lens, size_t n_fields)
{
    if (n_fields < 2) return;
    unsigned sel = fields[0][0] ? (unsigned char)fields[0][0] : 1;
    size_t n_strs = 1 + sel % 3;
    if (n_strs > n_fields - 1) n_strs = n_fields - 1;
    const char *strs[3];
    for (size_t i = 0; i < n_strs; i++) strs[i] = fields[1 + i];

    /* Text: the remaining fields joined with '\n'. */
    size_t tlen = 0;
    for (size_t i = 1 + n_strs; i < n_fields; i++) tlen += lens[i] + 1;
    char *text = malloc(tlen + 1), *got = malloc(tlen + 1);
    if (!text || !got) goto out;
    size_t p = 0;
    for (size_t i = 1 + n_strs; i < n_fields; i++) {
        memcpy(text + p, fields[i], lens[i]);
        p += lens[i];
        text[p++] = '\n';
    }
    text[p] = '\0';

    /* Reference: the first stop string to complete, then the longest. */
    size_t want_len = tlen, want_end = SIZE_MAX;
    int want_idx = -1;
    for (size_t j = 0; j < n_strs; j++) {
        size_t l = strlen(strs[j]);
        if (!l) continue;
        const char *m = memmem(text, tlen, strs[j], l);
        if (!m) continue;
        size_t pos = (size_t)(m - text), end = pos + l;
        if (end < want_end || (end == want_end && pos < want_len)) {
            want_len = pos;
            want_end = end;
            want_idx = (int)j;
        }
    }

    struct stop *s;
    if (stop_new(strs, n_strs, &s) != 0) goto out;
    size_t fed = 0, got_len = 0;
    bool is_stopped = false;
    unsigned chunk = sel;
    while (fed < tlen && !is_stopped) {
        size_t c = 1 + (chunk = chunk * 1103515245u + 12345u) % 9;
        if (c > tlen - fed) c = tlen - fed;
        const char *e;
        size_t n;
        if (stop_push(s, text + fed, c, &e, &n, &is_stopped) != 0) break;
        memcpy(got + got_len, e, n);
        got_len += n;
        fed += c;
    }
    if (!is_stopped && fed == tlen) {
        const char *e;
        size_t n;
        stop_flush(s, &e, &n);
        memcpy(got + got_len, e, n);
        got_len += n;
        if (got_len != tlen || want_idx != -1) abort();
    }
    if (fed == tlen || is_stopped) {
        if (got_len != want_len || memcmp(got, text, want_len) != 0) abort();
        if (stop_matched(s) != want_idx) abort();
    }
    stop_free(s);
out:
    free(text);
    free(got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';

    /* Detection reads up to the first NUL: the template text. */
    enum chat_tmpl t = chat_tmpl_detect(copy);
    (void)chat_tmpl_name(t);
    (void)chat_tmpl_from_name(copy);
    char sys[64];
    int n_sys = chat_tmpl_default_system(copy, sys, sizeof sys);
    if (n_sys > 0 && strlen(sys) != (size_t)n_sys) abort();

    char *fields[MAX_FIELDS];
    size_t lens[MAX_FIELDS], n_fields = 0, start = 0;
    for (size_t i = 0; i <= size && n_fields < MAX_FIELDS; i++) {
        if (i == size || copy[i] == '\0') {
            fields[n_fields] = copy + start;
            lens[n_fields] = i - start;
            n_fields++;
            start = i + 1;
        }
    }
    fuzz_render(fields, n_fields);
    fuzz_stop(fields, lens, n_fields);
    free(copy);
    return 0;
}
