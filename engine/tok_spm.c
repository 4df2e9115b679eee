/* tok_spm.c - SentencePiece BPE ("llama" vocabularies), llama.cpp's llm_tokenizer_spm.
 *
 * Spaces become U+2581 (and a dummy one is prepended when asked); the text is split into
 * UTF-8 characters (an invalid byte is a character of its own); the
 * adjacent pair whose concatenation is a token with the highest score is merged first
 * (ties: leftmost), until no pair is a token. A final symbol that is not a token is
 * emitted byte by byte as <0xXX> tokens (byte fallback). llama.cpp's resegment() never
 * splits such a symbol further: it can only be a single unmerged character, because a
 * merge happens only when the merged text is a token.
 */
#include "engine/tok_internal.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

struct spm_sym {
    int prev, next;
    size_t off, n; /* bytes in the escaped text; n == 0 once merged away */
};

struct spm_state {
    const struct tok *t;
    const char *s; /* escaped text */
    struct spm_sym *sym;
    struct tok_heap heap;
};

/* Queues the pair (left, right) if their concatenation is a token. */
static int spm_try_bigram(struct spm_state *st, int left, int right)
{
    if (left < 0 || right < 0) return 0;
    size_t size = st->sym[left].n + st->sym[right].n;
    int32_t id = tok_lookup(st->t, st->s + st->sym[left].off, size);
    if (id < 0) return 0;
    struct tok_bigram b = {-(double)st->t->scores[id], left, right, size};
    return tok_heap_push(&st->heap, b);
}

static void spm_emit(const struct spm_state *st, const struct spm_sym *y, struct tok_out *out)
{
    int32_t id = tok_lookup(st->t, st->s + y->off, y->n);
    if (id >= 0) {
        tok_out_push(out, id);
        return;
    }
    for (size_t i = 0; i < y->n; i++) {
        int32_t b = st->t->byte_id[(unsigned char)st->s[y->off + i]];
        if (b < 0) b = st->t->unk;
        if (b >= 0) tok_out_push(out, b);
    }
}

int tok_spm_encode(const struct tok *t, const char *text, size_t len, bool add_prefix,
                   struct tok_out *out)
{
    /* Escape: ' ' -> U+2581 (3 bytes), with the optional dummy prefix. */
    size_t n_sp = add_prefix ? 1 : 0;
    for (size_t i = 0; i < len; i++) n_sp += text[i] == ' ';
    size_t esc_len = len + (add_prefix ? 1 : 0) + 2 * n_sp;
    if (esc_len == 0) return 0;
    char *esc = malloc(esc_len);
    struct spm_sym *sym = malloc(esc_len * sizeof *sym);
    struct spm_state st = {t, esc, sym, {NULL, 0, 3 * esc_len}};
    st.heap.v = malloc(st.heap.cap * sizeof *st.heap.v);
    int rc = 0;
    if (!esc || !sym || !st.heap.v) {
        rc = MESH_ENOMEM;
        goto done;
    }
    size_t e = 0;
    if (add_prefix) memcpy(esc + e, "\xe2\x96\x81", 3), e += 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ')
            memcpy(esc + e, "\xe2\x96\x81", 3), e += 3;
        else
            esc[e++] = text[i];
    }

    /* One symbol per UTF-8 character. Unlike llama.cpp (which trusts the lead byte), an
     * invalid byte is a symbol of its own, so it cannot swallow the U+2581 of a following
     * space and every byte comes back exactly; valid text is split identically. */
    int n_sym = 0;
    for (size_t off = 0; off < esc_len;) {
        size_t n;
        unicode_utf8_decode((const unsigned char *)esc + off, esc_len - off, &n);
        sym[n_sym] = (struct spm_sym){n_sym - 1, off + n == esc_len ? -1 : n_sym + 1, off, n};
        off += n;
        n_sym++;
    }
    for (int i = 1; i < n_sym && !rc; i++) rc = spm_try_bigram(&st, i - 1, i);

    /* Merge the best-scoring pair until none is left. Pushes: n_sym - 1 seeds plus at
     * most 2 per merge, so the heap (3 * esc_len) never fills. */
    struct tok_bigram b;
    while (!rc && tok_heap_pop(&st.heap, &b)) {
        struct spm_sym *l = &sym[b.left], *r = &sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        rc = spm_try_bigram(&st, l->prev, b.left);
        if (!rc) rc = spm_try_bigram(&st, b.left, l->next);
    }
    for (int i = 0; !rc && i != -1; i = sym[i].next) spm_emit(&st, &sym[i], out);
done:
    free(esc);
    free(sym);
    free(st.heap.v);
    return rc;
}
