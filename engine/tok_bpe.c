/* tok_bpe.c - byte-level BPE ("gpt2" vocabularies), llama.cpp's llm_tokenizer_bpe.
 *
 * The text is split into words by the pre-tokenizer of tokenizer.ggml.pre (unicode.c);
 * each word's bytes are mapped to printable code points (GPT-2 bytes_to_unicode), then
 * the adjacent pair with the lowest merge rank (tokenizer.ggml.merges order; ties:
 * leftmost) is merged until no pair has a rank. llama3-style vocabularies first look the
 * whole word up (ignore_merges). A final symbol that is not a token falls back to its
 * single bytes, as llama.cpp does. Invalid UTF-8 is split as U+FFFD but the word keeps its
 * original bytes, so every input byte is encoded.
 */
#include "engine/tok_internal.h"

#include "core/err.h"
#include "core/log.h"
#include "engine/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes
 * (0x00-0x20, 0x7F-0xA0, 0xAD) to U+0100.. in byte order. */
static uint32_t byte_to_cp(unsigned b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    if (b <= 0x20) return 256 + b;
    if (b <= 0xA0) return 256 + 33 + (b - 0x7F);
    return 256 + 33 + 34; /* 0xAD */
}

static int cp_to_byte(uint32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp >= 256 && cp <= 256 + 32) return (int)(cp - 256);
    if (cp >= 256 + 33 && cp <= 256 + 66) return (int)(0x7F + cp - 256 - 33);
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

size_t tok_bpe_unmap(const char *s, size_t len, char *buf, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t used;
        uint32_t cp = unicode_utf8_decode((const unsigned char *)s + i, len - i, &used);
        int b = cp_to_byte(cp);
        if (b >= 0) {
            if (n < cap) buf[n] = (char)b;
            n++;
        } else {
            for (size_t k = 0; k < used; k++, n++)
                if (n < cap) buf[n] = s[i + k];
        }
        i += used;
    }
    return n < cap ? n : cap;
}

/* ---- pre-tokenizer names (llama.cpp llama_vocab::impl::load) -------------------------- */

enum { PRE_IGNORE_MERGES_ADD_BOS = 1, PRE_NO_BOS = 2 };

static const struct {
    const char *name;
    enum unicode_pre pre;
    int flags;
} k_pre_names[] = {
    {"default", UNICODE_PRE_DEFAULT, 0},
    {"llama3", UNICODE_PRE_LLAMA3, PRE_IGNORE_MERGES_ADD_BOS},
    {"llama-v3", UNICODE_PRE_LLAMA3, PRE_IGNORE_MERGES_ADD_BOS},
    {"llama-bpe", UNICODE_PRE_LLAMA3, PRE_IGNORE_MERGES_ADD_BOS},
    {"falcon3", UNICODE_PRE_LLAMA3, PRE_IGNORE_MERGES_ADD_BOS},
    {"dbrx", UNICODE_PRE_LLAMA3, 0},
    {"smaug-bpe", UNICODE_PRE_LLAMA3, 0},
    {"chatglm-bpe", UNICODE_PRE_LLAMA3, PRE_NO_BOS},
    {"deepseek-llm", UNICODE_PRE_DEEPSEEK_LLM, 0},
    {"deepseek-coder", UNICODE_PRE_DEEPSEEK_CODER, 0},
    {"falcon", UNICODE_PRE_FALCON, 0},
    {"gpt-2", UNICODE_PRE_GPT2, 0},
    {"phi-2", UNICODE_PRE_GPT2, 0},
    {"mpt", UNICODE_PRE_GPT2, 0},
    {"olmo", UNICODE_PRE_GPT2, 0},
    {"jais", UNICODE_PRE_GPT2, 0},
    {"jina-es", UNICODE_PRE_GPT2, 0},
    {"jina-de", UNICODE_PRE_GPT2, 0},
    {"jina-v1-en", UNICODE_PRE_GPT2, 0},
    {"jina-v2-es", UNICODE_PRE_GPT2, 0},
    {"jina-v2-de", UNICODE_PRE_GPT2, 0},
    {"jina-v2-code", UNICODE_PRE_GPT2, 0},
    {"gigachat", UNICODE_PRE_GPT2, 0},
    {"roberta-bpe", UNICODE_PRE_GPT2, 0},
    {"starcoder", UNICODE_PRE_STARCODER, 0},
    {"refact", UNICODE_PRE_STARCODER, 0},
    {"command-r", UNICODE_PRE_STARCODER, 0},
    {"smollm", UNICODE_PRE_STARCODER, 0},
    {"codeshell", UNICODE_PRE_STARCODER, 0},
    {"exaone", UNICODE_PRE_STARCODER, 0},
    {"minerva-7b", UNICODE_PRE_STARCODER, 0},
    {"qwen2", UNICODE_PRE_QWEN2, 0},
    {"deepseek-r1-qwen", UNICODE_PRE_QWEN2, 0},
    {"stablelm2", UNICODE_PRE_QWEN2, 0},
    {"megrez", UNICODE_PRE_QWEN2, 0},
    {"poro-chat", UNICODE_PRE_PORO, 0},
    {"bloom", UNICODE_PRE_PORO, 0},
    {"gpt3-finnish", UNICODE_PRE_PORO, 0},
    {"viking", UNICODE_PRE_VIKING, 0},
    {"tekken", UNICODE_PRE_TEKKEN, PRE_IGNORE_MERGES_ADD_BOS},
    {"pixtral", UNICODE_PRE_LLAMA3, PRE_IGNORE_MERGES_ADD_BOS},
    {"deepseek-v3", UNICODE_PRE_DEEPSEEK3_LLM, 0},
};

void tok_bpe_set_pre(struct tok *t, const char *name)
{
    t->pre = UNICODE_PRE_DEFAULT;
    snprintf(t->pre_name, sizeof t->pre_name, "default");
    for (size_t i = 0; i < sizeof k_pre_names / sizeof k_pre_names[0]; i++) {
        if (strcmp(name, k_pre_names[i].name) != 0) continue;
        t->pre = k_pre_names[i].pre;
        snprintf(t->pre_name, sizeof t->pre_name, "%s", name);
        if (k_pre_names[i].flags & PRE_IGNORE_MERGES_ADD_BOS) t->ignore_merges = t->add_bos = true;
        if (k_pre_names[i].flags & PRE_NO_BOS) t->bos = -1;
        return;
    }
    if (name[0] == '\0')
        log_warn("tokenizer: no tokenizer.ggml.pre; using the 'default' pre-tokenizer "
                 "(token ids may differ from the model's own tokenizer)");
    else
        log_warn("tokenizer: unknown pre-tokenizer '%.40s'; using 'default' "
                 "(token ids may differ from the model's own tokenizer)", name);
}

/* ---- merges --------------------------------------------------------------------------- */

static uint32_t merge_hash(const char *a, size_t al, const char *b, size_t bl)
{
    uint32_t h = tok_hash(a, al, 2166136261u);
    h = tok_hash("\xff", 1, h); /* separator: ("ab","c") and ("a","bc") hash apart */
    return tok_hash(b, bl, h);
}

/* Rank of merging a with b, -1 if they do not merge. */
static int32_t merge_rank(const struct tok *t, const char *a, size_t al, const char *b, size_t bl)
{
    uint32_t i = merge_hash(a, al, b, bl) & t->merge_mask;
    for (;;) {
        int32_t k = t->merge_map[i];
        if (k < 0) return -1;
        const struct tok_merge *m = &t->merges[k];
        const char *s = t->merge_text + m->off;
        if (m->first_len == al && m->second_len == bl && !memcmp(s, a, al) &&
            !memcmp(s + al, b, bl))
            return m->rank;
        i = (i + 1) & t->merge_mask;
    }
}

int tok_bpe_load(struct tok *t, const struct gguf *g, char *err, size_t err_cap)
{
    static const char key[] = "tokenizer.ggml.merges";
    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(g, key, &et, &n, &data) != 0 || et != GGUF_VT_STRING)
        return err_set(err, err_cap, MESH_EBADMODEL, "BPE vocabulary without %s", key);
    if (n > INT32_MAX / 4) return err_set(err, err_cap, MESH_EBADMODEL, "%s: too many", key);
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct gguf_str s;
        if (gguf_get_arr_str(g, key, i, &s))
            return err_set(err, err_cap, MESH_EBADMODEL, "%s[%llu] unreadable", key,
                           (unsigned long long)i);
        total += s.len;
        if (total > UINT32_MAX / 2) return err_set(err, err_cap, MESH_EBADMODEL, "%s: too large", key);
    }
    uint32_t cap = 1;
    while (cap < 2 * (uint32_t)n + 2) cap <<= 1;
    t->merge_text = malloc(total ? total : 1);
    t->merges = malloc((n ? n : 1) * sizeof *t->merges);
    t->merge_map = malloc((size_t)cap * sizeof *t->merge_map);
    if (!t->merge_text || !t->merges || !t->merge_map) return MESH_ENOMEM;
    memset(t->merge_map, 0xFF, (size_t)cap * sizeof *t->merge_map);
    t->merge_mask = cap - 1;
    uint32_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct gguf_str s;
        gguf_get_arr_str(g, key, i, &s);
        /* "first second", split at the first space after the first byte. */
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', (size_t)s.len - 1) : NULL;
        if (!sp) continue;
        size_t fl = (size_t)(sp - s.ptr), sl = (size_t)s.len - fl - 1;
        uint32_t h = merge_hash(s.ptr, fl, sp + 1, sl) & t->merge_mask;
        if (merge_rank(t, s.ptr, fl, sp + 1, sl) >= 0) continue; /* first rank wins */
        while (t->merge_map[h] >= 0) h = (h + 1) & t->merge_mask;
        struct tok_merge *m = &t->merges[t->n_merges];
        *m = (struct tok_merge){off, (uint32_t)fl, (uint32_t)sl, (int32_t)i};
        memcpy(t->merge_text + off, s.ptr, fl);
        memcpy(t->merge_text + off + fl, sp + 1, sl);
        off += (uint32_t)(fl + sl);
        t->merge_map[h] = (int32_t)t->n_merges++;
    }
    return 0;
}

/* ---- encoding ------------------------------------------------------------------------- */

struct bpe_sym {
    int prev, next;
    size_t off, n;
};

struct bpe_work {
    const struct tok *t;
    const char *w; /* mapped word */
    struct bpe_sym *sym;
    struct tok_heap heap;
};

static int bpe_add_bigram(struct bpe_work *bw, int left, int right)
{
    if (left < 0 || right < 0) return 0;
    const struct bpe_sym *l = &bw->sym[left], *r = &bw->sym[right];
    int32_t rank = merge_rank(bw->t, bw->w + l->off, l->n, bw->w + r->off, r->n);
    if (rank < 0) return 0;
    struct tok_bigram b = {(double)rank, left, right, l->n + r->n};
    return tok_heap_push(&bw->heap, b);
}

/* BPE of one mapped word of m bytes. */
static int bpe_word(struct bpe_work *bw, size_t m, struct tok_out *out)
{
    const struct tok *t = bw->t;
    if (t->ignore_merges) {
        int32_t id = tok_lookup(t, bw->w, m);
        if (id >= 0) {
            tok_out_push(out, id);
            return 0;
        }
    }
    int n_sym = 0, rc = 0;
    for (size_t off = 0; off < m;) {
        size_t n = unicode_utf8_len((unsigned char)bw->w[off]);
        if (n > m - off) n = m - off;
        bw->sym[n_sym] = (struct bpe_sym){n_sym - 1, off + n == m ? -1 : n_sym + 1, off, n};
        off += n;
        n_sym++;
    }
    bw->heap.n = 0;
    for (int i = 1; i < n_sym && !rc; i++) rc = bpe_add_bigram(bw, i - 1, i);
    struct tok_bigram b;
    while (!rc && tok_heap_pop(&bw->heap, &b)) {
        struct bpe_sym *l = &bw->sym[b.left], *r = &bw->sym[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* outdated */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) bw->sym[r->next].prev = b.left;
        rc = bpe_add_bigram(bw, l->prev, b.left);
        if (!rc) rc = bpe_add_bigram(bw, b.left, l->next);
    }
    for (int i = 0; !rc && i >= 0 && n_sym > 0; i = bw->sym[i].next) {
        const struct bpe_sym *y = &bw->sym[i];
        int32_t id = tok_lookup(t, bw->w + y->off, y->n);
        if (id >= 0) {
            tok_out_push(out, id);
            continue;
        }
        for (size_t k = 0; k < y->n; k++) { /* llama.cpp: single bytes that are tokens */
            id = tok_lookup(t, bw->w + y->off + k, 1);
            if (id >= 0) tok_out_push(out, id);
        }
    }
    return rc;
}

int tok_bpe_encode(const struct tok *t, const char *text, size_t len, struct tok_out *out)
{
    uint32_t *cps = malloc(len * sizeof *cps);
    size_t *boff = malloc((len + 1) * sizeof *boff);
    uint32_t *lens = malloc(len * sizeof *lens);
    uint32_t *scratch = malloc(len * sizeof *scratch);
    struct bpe_work bw = {t, NULL, NULL, {NULL, 0, 0}};
    char *wbuf = NULL;
    int rc = 0;
    if (!cps || !boff || !lens || !scratch) {
        rc = MESH_ENOMEM;
        goto done;
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t used;
        boff[n] = i;
        cps[n++] = unicode_utf8_decode((const unsigned char *)text + i, len - i, &used);
        i += used;
    }
    boff[n] = len;
    size_t n_words;
    unicode_pre_split(t->pre, cps, n, lens, scratch, &n_words);

    /* Scratch sized for the longest word: mapped bytes <= 2 per byte. */
    size_t max_bytes = 0;
    for (size_t w = 0, c = 0; w < n_words; c += lens[w++]) {
        size_t nb = boff[c + lens[w]] - boff[c];
        if (nb > max_bytes) max_bytes = nb;
    }
    wbuf = malloc(2 * max_bytes + 1);
    bw.sym = malloc((2 * max_bytes + 1) * sizeof *bw.sym);
    bw.heap.cap = 6 * max_bytes + 1;
    bw.heap.v = malloc(bw.heap.cap * sizeof *bw.heap.v);
    if (!wbuf || !bw.sym || !bw.heap.v) {
        rc = MESH_ENOMEM;
        goto done;
    }
    bw.w = wbuf;
    for (size_t w = 0, c = 0; w < n_words && !rc; c += lens[w++]) {
        size_t m = 0;
        for (size_t i = boff[c]; i < boff[c + lens[w]]; i++) {
            char u[4];
            size_t k = unicode_utf8_encode(byte_to_cp((unsigned char)text[i]), u);
            memcpy(wbuf + m, u, k);
            m += k;
        }
        rc = bpe_word(&bw, m, out);
    }
done:
    free(cps);
    free(boff);
    free(lens);
    free(scratch);
    free(wbuf);
    free(bw.sym);
    free(bw.heap.v);
    return rc;
}
