/* tok.c - tokenizer loading from GGUF metadata, special-token partitioning, the encode
 * driver, pieces, decoding and streaming detokenization.
 *
 * Follows llama.cpp's llama-vocab.cpp (commit c392e50): the same defaults per tokenizer
 * model, the same special-token ids and end-of-generation detection by token text, the
 * same partition of the input on special tokens (tokenizer_st_partition: longest texts
 * first; user-defined tokens even without parse_special) and the same pieces
 * (token_to_piece with special = true, cached). Deliberate differences: invalid UTF-8
 * keeps its bytes (llama.cpp turns it into U+FFFD for BPE), decoding never applies
 * clean_up_tokenization_spaces (bytes stay exact), and the SPM leading space is stripped
 * from the first non-empty piece rather than from the first token. The algorithms per
 * model live in tok_spm.c, tok_bpe.c and tok_wpm.c.
 */
#include "engine/tok_internal.h"

#include "core/err.h"
#include "core/log.h"
#include "engine/gguf.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hashing, lookup, heap ------------------------------------------------------------ */

uint32_t tok_hash(const char *s, size_t len, uint32_t h)
{
    /* FNV-1a; h is the running state (2166136261 to start). */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

int32_t tok_lookup(const struct tok *t, const char *s, size_t len)
{
    uint32_t i = tok_hash(s, len, 2166136261u) & t->map_mask;
    for (;;) {
        int32_t id = t->map[i];
        if (id < 0) return -1;
        uint32_t off = t->text_off[id];
        if (t->text_off[id + 1] - off == len && !memcmp(t->text + off, s, len)) return id;
        i = (i + 1) & t->map_mask;
    }
}

static bool bigram_less(const struct tok_bigram *a, const struct tok_bigram *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

int tok_heap_push(struct tok_heap *h, struct tok_bigram b)
{
    if (h->n == h->cap) return MESH_ERANGE;
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bigram_less(&b, &h->v[parent])) break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = b;
    return 0;
}

bool tok_heap_pop(struct tok_heap *h, struct tok_bigram *out)
{
    if (h->n == 0) return false;
    *out = h->v[0];
    struct tok_bigram last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && bigram_less(&h->v[c + 1], &h->v[c])) c++;
        if (!bigram_less(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0) h->v[i] = last;
    return true;
}

/* ---- loading -------------------------------------------------------------------------- */

static bool str_eq(struct gguf_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && !memcmp(s.ptr, lit, n);
}

/* Copies the token texts into one pool and builds the text -> id table. */
static int load_texts(struct tok *t, const struct gguf *g, char *err, size_t err_cap)
{
    uint64_t total = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        struct gguf_str s;
        if (gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s))
            return err_set(err, err_cap, MESH_EBADMODEL, "tokenizer.ggml.tokens[%d] unreadable", i);
        total += s.len;
        if (total > UINT32_MAX / 2)
            return err_set(err, err_cap, MESH_EBADMODEL, "tokenizer.ggml.tokens: texts too large");
    }
    t->text = malloc(total ? total : 1);
    t->text_off = malloc(((size_t)t->n_vocab + 1) * sizeof *t->text_off);
    uint32_t map_cap = 1;
    while (map_cap < 2u * (uint32_t)t->n_vocab) map_cap <<= 1;
    t->map = malloc((size_t)map_cap * sizeof *t->map);
    if (!t->text || !t->text_off || !t->map) return MESH_ENOMEM;
    t->map_mask = map_cap - 1;
    memset(t->map, 0xFF, (size_t)map_cap * sizeof *t->map);
    uint32_t off = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        struct gguf_str s;
        gguf_get_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s);
        memcpy(t->text + off, s.ptr, (size_t)s.len);
        t->text_off[i] = off;
        off += (uint32_t)s.len;
        t->text_off[i + 1] = off;
        if (s.len > t->max_token_len) t->max_token_len = (size_t)s.len;
        if (s.len == 0) continue; /* an empty text can never be matched */
        /* Insert; a later duplicate replaces the earlier id, as llama.cpp's map does. */
        uint32_t h = tok_hash(s.ptr, (size_t)s.len, 2166136261u) & t->map_mask;
        while (t->map[h] >= 0 && !(t->text_off[t->map[h] + 1] - t->text_off[t->map[h]] == s.len &&
                                   !memcmp(t->text + t->text_off[t->map[h]], s.ptr, s.len)))
            h = (h + 1) & t->map_mask;
        t->map[h] = i;
    }
    return 0;
}

/* Scores (f32) and token types (i32) arrays: optional, but if present one per token. */
static int load_scores_types(struct tok *t, const struct gguf *g, char *err, size_t err_cap)
{
    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    size_t nv = (size_t)t->n_vocab;
    t->scores = calloc(nv, sizeof *t->scores);
    t->type = malloc(nv);
    t->attr = calloc(nv, 1);
    t->is_eog = calloc(nv, 1);
    if (!t->scores || !t->type || !t->attr || !t->is_eog) return MESH_ENOMEM;
    memset(t->type, TOK_TYPE_NORMAL, nv);
    if (gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &data) == 0) {
        if (et != GGUF_VT_F32 || n != nv)
            return err_set(err, err_cap, MESH_EBADMODEL,
                           "tokenizer.ggml.scores: expected %zu f32 values", nv);
        memcpy(t->scores, data, nv * sizeof(float));
    }
    if (gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data) == 0) {
        if ((et != GGUF_VT_I32 && et != GGUF_VT_U32) || n != nv)
            return err_set(err, err_cap, MESH_EBADMODEL,
                           "tokenizer.ggml.token_type: expected %zu i32 values", nv);
        for (size_t i = 0; i < nv; i++) {
            int32_t v;
            memcpy(&v, (const char *)data + 4 * i, 4);
            t->type[i] = (v >= TOK_TYPE_NORMAL && v <= TOK_TYPE_BYTE) ? (uint8_t)v : 0;
        }
    }
    return 0;
}

/* Special ids and flags from the keys, over the per-model defaults. */
static void load_special_keys(struct tok *t, const struct gguf *g)
{
    static const struct {
        const char *key;
        size_t field;
    } ids[] = {
        {"tokenizer.ggml.bos_token_id", offsetof(struct tok, bos)},
        {"tokenizer.ggml.eos_token_id", offsetof(struct tok, eos)},
        {"tokenizer.ggml.eot_token_id", offsetof(struct tok, eot)},
        {"tokenizer.ggml.eom_token_id", offsetof(struct tok, eom)},
        {"tokenizer.ggml.unknown_token_id", offsetof(struct tok, unk)},
        {"tokenizer.ggml.padding_token_id", offsetof(struct tok, pad)},
        {"tokenizer.ggml.seperator_token_id", offsetof(struct tok, sep)}, /* sic */
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int32_t *field = (int32_t *)((char *)t + ids[i].field);
        uint32_t v;
        if (gguf_get_u32(g, ids[i].key, &v) != 0 || v == UINT32_MAX) continue; /* -1: none */
        if (v >= (uint32_t)t->n_vocab) {
            log_warn("tokenizer: %s = %u is out of range, using %d", ids[i].key, v, *field);
            continue;
        }
        *field = (int32_t)v;
    }
    bool b;
    if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) == 0) t->add_bos = b;
    if (gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b) == 0) t->add_eos = b;
    if (gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b) == 0) t->add_space_prefix = b;
}

/* End-of-generation tokens: eos, eot, eom and the tokens llama.cpp recognises by text
 * (which it also forces to the control type). */
static void find_eog(struct tok *t)
{
    static const char *const eot_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>",
                                            "<end_of_turn>", "<|endoftext|>", "<EOT>",
                                            "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81"
                                            "sentence\xef\xbd\x9c>"};
    static const char *const eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>",
                                            "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
                                            "<EOT>", "<|fim_pad|>", "<fim-pad>", "<PAD>",
                                            "<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>", "<|file_sep|>"};
    for (size_t i = 0; t->eot < 0 && i < sizeof eot_texts / sizeof eot_texts[0]; i++) {
        int32_t id = tok_lookup(t, eot_texts[i], strlen(eot_texts[i]));
        if (id >= 0) {
            t->eot = id;
            t->type[id] = TOK_TYPE_CONTROL;
        }
    }
    if (t->eom < 0) {
        int32_t id = tok_lookup(t, "<|eom_id|>", 10);
        if (id >= 0) t->eom = id;
    }
    for (size_t i = 0; i < sizeof eog_texts / sizeof eog_texts[0]; i++) {
        int32_t id = tok_lookup(t, eog_texts[i], strlen(eog_texts[i]));
        if (id < 0) continue;
        t->is_eog[id] = 1;
        t->type[id] = TOK_TYPE_CONTROL;
    }
    if (t->eos >= 0) t->is_eog[t->eos] = 1;
    if (t->eot >= 0) t->is_eog[t->eot] = 1;
    if (t->eom >= 0) t->is_eog[t->eom] = 1;
}

static int cmp_special(const void *a, const void *b, void *arg)
{
    const struct tok *t = arg;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = t->text_off[x + 1] - t->text_off[x], ly = t->text_off[y + 1] - t->text_off[y];
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int build_specials(struct tok *t)
{
    t->special = malloc((size_t)t->n_vocab * sizeof *t->special);
    if (!t->special) return MESH_ENOMEM;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        uint8_t ty = t->type[i];
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) &&
            t->text_off[i + 1] > t->text_off[i])
            t->special[t->n_special++] = i;
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Rendered bytes of token id (llama.cpp token_to_piece with special = true). */
static size_t render_piece(const struct tok *t, int32_t id, char *dst)
{
    const char *s = t->text + t->text_off[id];
    size_t len = t->text_off[id + 1] - t->text_off[id], n = 0;
    switch (t->type[id]) {
    case TOK_TYPE_CONTROL:
    case TOK_TYPE_UNKNOWN:
    case TOK_TYPE_USER_DEFINED:
        memcpy(dst, s, len);
        return len;
    case TOK_TYPE_NORMAL:
        if (t->model == TOK_MODEL_BPE) return tok_bpe_unmap(s, len, dst, len);
        for (size_t i = 0; i < len; i++) { /* U+2581 -> ' ' */
            if (i + 2 < len && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                dst[n++] = ' ';
                i += 2;
            } else {
                dst[n++] = s[i];
            }
        }
        return n;
    case TOK_TYPE_BYTE: /* "<0xAB>" */
        if (t->model == TOK_MODEL_SPM && len == 6 && hex_digit(s[3]) >= 0 && hex_digit(s[4]) >= 0) {
            dst[0] = (char)(hex_digit(s[3]) * 16 + hex_digit(s[4]));
            return 1;
        }
        return 0;
    default:
        return 0;
    }
}

static int build_pieces(struct tok *t)
{
    size_t pool = t->text_off[t->n_vocab];
    t->piece = malloc(pool ? pool : 1);
    t->piece_off = malloc(((size_t)t->n_vocab + 1) * sizeof *t->piece_off);
    if (!t->piece || !t->piece_off) return MESH_ENOMEM;
    uint32_t off = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        size_t n = render_piece(t, i, t->piece + off); /* never longer than the text */
        t->piece_off[i] = off;
        off += (uint32_t)n;
        if (n > t->max_piece_len) t->max_piece_len = n;
    }
    t->piece_off[t->n_vocab] = off;
    for (int b = 0; b < 256; b++) {
        char name[8];
        static const char hex[] = "0123456789ABCDEF";
        memcpy(name, "<0x", 3);
        name[3] = hex[b >> 4];
        name[4] = hex[b & 15];
        name[5] = '>';
        char one = (char)b;
        t->byte_id[b] = tok_lookup(t, name, 6);
        if (t->byte_id[b] < 0) t->byte_id[b] = tok_lookup(t, &one, 1);
    }
    return 0;
}

/* Phi-3 models strip white space after their special tokens (llama.cpp sets RSTRIP by
 * general.name); the only per-model attribute rule we carry. */
static void set_model_attrs(struct tok *t, const struct gguf *g)
{
    char *name = gguf_get_str_dup(g, "general.name");
    if (!name) return;
    for (char *p = name; *p; p++) *p = (char)tolower((unsigned char)*p);
    if (strstr(name, "phi-3") || strstr(name, "phi3")) {
        for (int32_t i = 0; i < t->n_special; i++) t->attr[t->special[i]] |= TOK_ATTR_RSTRIP;
        int32_t id = tok_lookup(t, "</s>", 4);
        if (id >= 0) t->attr[id] |= TOK_ATTR_RSTRIP;
        static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
        for (size_t i = 0; i < 3; i++) {
            id = tok_lookup(t, keep[i], strlen(keep[i]));
            if (id >= 0) t->attr[id] &= (uint8_t)~TOK_ATTR_RSTRIP;
        }
    }
    free(name);
}

/* Model type and its defaults (llama.cpp llama_vocab::impl::load). */
static int load_model_kind(struct tok *t, const struct gguf *g, char *err, size_t err_cap)
{
    struct gguf_str model;
    if (gguf_get_str(g, "tokenizer.ggml.model", &model) != 0)
        return err_set(err, err_cap, MESH_EBADMODEL,
                       "no tokenizer.ggml.model string: the file has no vocabulary");
    t->eot = t->eom = t->pad = t->sep = -1;
    if (str_eq(model, "llama")) {
        t->model = TOK_MODEL_SPM;
        t->bos = 1, t->eos = 2, t->unk = 0;
        t->add_bos = true, t->add_space_prefix = true;
        snprintf(t->pre_name, sizeof t->pre_name, "default");
        return 0;
    }
    if (str_eq(model, "gpt2")) {
        t->model = TOK_MODEL_BPE;
        t->bos = 11, t->eos = 11, t->unk = -1;
        char *pre = gguf_get_str_dup(g, "tokenizer.ggml.pre");
        tok_bpe_set_pre(t, pre ? pre : "");
        free(pre);
        return 0;
    }
    if (str_eq(model, "bert")) {
        t->model = TOK_MODEL_WPM;
        t->bos = 101, t->eos = -1, t->unk = 100, t->sep = 102, t->pad = 0;
        t->add_bos = true;
        snprintf(t->pre_name, sizeof t->pre_name, "default");
        return 0;
    }
    return err_set(err, err_cap, MESH_EUNSUPPORTED,
                   "tokenizer model '%.*s' is not supported; only 'llama' (SentencePiece), "
                   "'gpt2' (byte-level BPE) and 'bert' (WordPiece) are",
                   (int)(model.len > 64 ? 64 : model.len), model.ptr);
}

int tok_load(const struct gguf *g, struct tok **out, char *err, size_t err_cap)
{
    *out = NULL;
    struct tok *t = calloc(1, sizeof *t);
    if (!t) return MESH_ENOMEM;
    int rc = load_model_kind(t, g, err, err_cap);
    if (rc) goto fail;
    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data) != 0 || et != GGUF_VT_STRING ||
        n == 0 || n > INT32_MAX / 4) {
        rc = err_set(err, err_cap, MESH_EBADMODEL,
                     "tokenizer.ggml.tokens missing or not a non-empty string array");
        goto fail;
    }
    t->n_vocab = (int32_t)n;
    if (t->bos >= t->n_vocab) t->bos = -1;
    if (t->eos >= t->n_vocab) t->eos = -1;
    if (t->unk >= t->n_vocab) t->unk = -1;
    if (t->sep >= t->n_vocab) t->sep = -1;
    if (t->pad >= t->n_vocab) t->pad = -1;
    if ((rc = load_texts(t, g, err, err_cap)) || (rc = load_scores_types(t, g, err, err_cap)))
        goto fail;
    load_special_keys(t, g);
    find_eog(t);
    if ((rc = build_specials(t)) || (rc = build_pieces(t))) goto fail;
    set_model_attrs(t, g);
    if (t->model == TOK_MODEL_BPE && (rc = tok_bpe_load(t, g, err, err_cap))) goto fail;
    *out = t;
    return 0;
fail:
    if (rc == MESH_ENOMEM) err_set(err, err_cap, rc, "out of memory loading the vocabulary");
    tok_free(t);
    return rc;
}

void tok_free(struct tok *t)
{
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->scores);
    free(t->type);
    free(t->attr);
    free(t->is_eog);
    free(t->piece);
    free(t->piece_off);
    free(t->map);
    free(t->special);
    free(t->merge_text);
    free(t->merges);
    free(t->merge_map);
    free(t);
}

/* ---- queries -------------------------------------------------------------------------- */

enum tok_model tok_model(const struct tok *t)
{
    return t->model;
}

const char *tok_pre_name(const struct tok *t)
{
    return t->pre_name;
}

int32_t tok_n_vocab(const struct tok *t)
{
    return t->n_vocab;
}

int32_t tok_bos(const struct tok *t)
{
    return t->bos;
}

int32_t tok_eos(const struct tok *t)
{
    return t->eos;
}

bool tok_is_eog(const struct tok *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->is_eog[id];
}

bool tok_adds_bos(const struct tok *t)
{
    return t->add_bos && t->bos >= 0;
}

enum tok_type tok_type_of(const struct tok *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab) return (enum tok_type)0;
    return (enum tok_type)t->type[id];
}

int32_t tok_find(const struct tok *t, const char *piece, size_t len)
{
    if (len == 0) return -1;
    return tok_lookup(t, piece, len);
}

size_t tok_max_piece_len(const struct tok *t)
{
    return t->max_piece_len;
}

int tok_vocab_compare(const struct tok *a, const struct tok *b, int32_t *id_out)
{
    *id_out = -1;
    int32_t n = tok_n_vocab(a);
    if (tok_n_vocab(b) != n || tok_bos(a) != tok_bos(b) || tok_eos(a) != tok_eos(b))
        return MESH_EBADMODEL;
    size_t cap = tok_max_piece_len(a) + 1;
    if (tok_max_piece_len(b) + 1 > cap) cap = tok_max_piece_len(b) + 1;
    char *pa = malloc(cap), *pb = malloc(cap);
    int rc = pa && pb ? 0 : MESH_ENOMEM;
    for (int32_t id = 0; rc == 0 && id < n; id++) {
        int la = tok_piece(a, id, true, pa, cap), lb = tok_piece(b, id, true, pb, cap);
        if (la != lb || (la > 0 && memcmp(pa, pb, (size_t)la) != 0)) {
            *id_out = id;
            rc = MESH_EBADMODEL;
        }
    }
    free(pa);
    free(pb);
    return rc;
}

/* ---- encoding ------------------------------------------------------------------------- */

/* A fragment of the input: raw text (id < 0) or an already recognised special token. */
struct frag {
    size_t off, len;
    int32_t id;
};

struct frag_vec {
    struct frag *v;
    size_t n, cap;
};

static int frag_push(struct frag_vec *fv, size_t off, size_t len, int32_t id)
{
    if (fv->n == fv->cap) {
        size_t cap = fv->cap ? fv->cap * 2 : 16;
        struct frag *v = realloc(fv->v, cap * sizeof *v);
        if (!v) return MESH_ENOMEM;
        fv->v = v;
        fv->cap = cap;
    }
    fv->v[fv->n++] = (struct frag){off, len, id};
    return 0;
}

static bool c_isspace(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Splits the raw fragments of in on every occurrence of special token id into out
 * (llama.cpp tokenizer_st_partition for one token, with its lstrip/rstrip attributes). */
static int split_on_token(const struct tok *t, const char *text, int32_t id,
                          const struct frag_vec *in, struct frag_vec *out)
{
    const char *tt = t->text + t->text_off[id];
    size_t tl = t->text_off[id + 1] - t->text_off[id];
    int rc = 0;
    out->n = 0;
    for (size_t f = 0; f < in->n && !rc; f++) {
        struct frag fr = in->v[f];
        if (fr.id >= 0) {
            rc = frag_push(out, fr.off, fr.len, fr.id);
            continue;
        }
        size_t off = fr.off, end = fr.off + fr.len;
        while (!rc && end - off >= tl) {
            const char *p = memmem(text + off, end - off, tt, tl);
            if (!p) break;
            size_t m = (size_t)(p - text), left = m - off;
            if (t->attr[id] & TOK_ATTR_LSTRIP)
                while (left > 0 && c_isspace(text[off + left - 1])) left--;
            if (left > 0) rc = frag_push(out, off, left, -1);
            if (!rc) rc = frag_push(out, m, tl, id);
            off = m + tl;
            if (t->attr[id] & TOK_ATTR_RSTRIP)
                while (off < end && c_isspace(text[off])) off++;
        }
        if (!rc && off < end) rc = frag_push(out, off, end - off, -1);
    }
    return rc;
}

/* Byte pairs present in the text (a 65536-bit set, plus single bytes), so that special
 * tokens that cannot occur are skipped without a search: vocabularies with hundreds of
 * added tokens would otherwise scan the whole text once per token. */
struct pair_set {
    uint64_t pairs[65536 / 64];
    uint64_t bytes[4];
};

static void pair_set_build(struct pair_set *ps, const char *text, size_t len)
{
    memset(ps, 0, sizeof *ps);
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned char)text[i];
        ps->bytes[c >> 6] |= 1ull << (c & 63);
        if (i + 1 < len) {
            unsigned p = c << 8 | (unsigned char)text[i + 1];
            ps->pairs[p >> 6] |= 1ull << (p & 63);
        }
    }
}

static bool pair_set_may_contain(const struct pair_set *ps, const char *s, size_t len)
{
    if (len == 1) {
        unsigned c = (unsigned char)s[0];
        return ps->bytes[c >> 6] >> (c & 63) & 1;
    }
    for (size_t i = 0; i + 1 < len; i++) {
        unsigned p = (unsigned)(unsigned char)s[i] << 8 | (unsigned char)s[i + 1];
        if (!(ps->pairs[p >> 6] >> (p & 63) & 1)) return false;
    }
    return true;
}

static int partition(const struct tok *t, const char *text, size_t len, bool parse_special,
                     struct frag_vec *a, struct frag_vec *b)
{
    int rc = frag_push(a, 0, len, -1);
    struct pair_set *ps = malloc(sizeof *ps);
    if (!ps) return MESH_ENOMEM;
    pair_set_build(ps, text, len);
    for (int32_t i = 0; i < t->n_special && !rc; i++) {
        int32_t id = t->special[i];
        uint8_t ty = t->type[id];
        /* Control and unknown tokens only with parse_special; user-defined always. */
        if (!parse_special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) continue;
        const char *tt = t->text + t->text_off[id];
        if (!pair_set_may_contain(ps, tt, t->text_off[id + 1] - t->text_off[id])) continue;
        rc = split_on_token(t, text, id, a, b);
        struct frag_vec tmp = *a;
        *a = *b;
        *b = tmp;
    }
    free(ps);
    return rc;
}

int tok_encode(const struct tok *t, const char *text, size_t len, bool add_special,
               bool parse_special, int32_t *ids, int cap, int *n_out)
{
    *n_out = 0;
    if (!t || (!text && len) || cap < 0 || (!ids && cap)) return MESH_EINVAL;
    if (len > (size_t)INT32_MAX / 8) return MESH_ERANGE;
    struct tok_out o = {ids, cap, 0};
    struct frag_vec a = {0}, b = {0};
    int rc = 0;
    if (len > 0) rc = partition(t, text, len, parse_special, &a, &b);
    /* WordPiece: [CLS] text [SEP] whenever special tokens are asked for (llama.cpp). */
    bool wpm = t->model == TOK_MODEL_WPM;
    if (add_special && (t->add_bos || wpm) && t->bos >= 0) tok_out_push(&o, t->bos);
    bool prev_special = true; /* SPM: the dummy space goes before text that follows a token */
    for (size_t i = 0; i < a.n && !rc; i++) {
        const struct frag *f = &a.v[i];
        if (f->id >= 0) {
            tok_out_push(&o, f->id);
            prev_special = true;
        } else if (t->model == TOK_MODEL_SPM) {
            rc = tok_spm_encode(t, text + f->off, f->len, t->add_space_prefix && prev_special, &o);
            prev_special = false;
        } else if (wpm) {
            rc = tok_wpm_encode(t, text + f->off, f->len, &o);
        } else {
            rc = tok_bpe_encode(t, text + f->off, f->len, &o);
        }
    }
    if (add_special && wpm && t->sep >= 0) tok_out_push(&o, t->sep);
    if (add_special && t->add_eos && t->eos >= 0) tok_out_push(&o, t->eos);
    free(a.v);
    free(b.v);
    if (rc) return rc;
    *n_out = o.n;
    return o.n > cap ? MESH_ERANGE : 0;
}

/* ---- pieces and decoding -------------------------------------------------------------- */

/* Piece bytes of id; NULL for a bad id. Control/unknown tokens are "" unless rendered. */
static const char *piece_of(const struct tok *t, int32_t id, bool render_special, size_t *len)
{
    if (id < 0 || id >= t->n_vocab) return NULL;
    uint8_t ty = t->type[id];
    *len = t->piece_off[id + 1] - t->piece_off[id];
    if (!render_special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) *len = 0;
    return t->piece + t->piece_off[id];
}

int tok_piece(const struct tok *t, int32_t id, bool render_special, char *buf, size_t cap)
{
    size_t len;
    const char *p = piece_of(t, id, render_special, &len);
    if (!p) return MESH_EINVAL;
    if (len > cap) len = cap;
    if (len) memcpy(buf, p, len);
    return (int)len;
}

int tok_decode(const struct tok *t, const int32_t *ids, int n, bool remove_leading_space,
               bool render_special, char *buf, size_t cap)
{
    size_t total = 0;
    bool strip = remove_leading_space && t->add_space_prefix;
    if (n < 0 || (!ids && n)) return MESH_EINVAL;
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *p = piece_of(t, ids[i], render_special, &len);
        if (!p) return MESH_EINVAL;
        if (strip && len > 0) {
            if (p[0] == ' ') p++, len--;
            strip = false;
        }
        if (total < cap) memcpy(buf + total, p, len < cap - total ? len : cap - total);
        total += len;
        if (total > INT_MAX) return MESH_ERANGE;
    }
    if (cap > 0) buf[total < cap ? total : cap - 1] = '\0';
    return (int)total;
}

void tok_stream_init(struct tok_stream *s, const struct tok *t, bool strip_leading_space)
{
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->at_start = strip_leading_space && t->add_space_prefix;
}

int tok_stream_push(struct tok_stream *s, int32_t id, char *out, size_t cap)
{
    size_t len;
    const char *p = piece_of(s->tok, id, false, &len);
    if (!p) return MESH_EINVAL;
    bool strip = s->at_start && len > 0 && p[0] == ' ';
    if (strip) p++, len--;
    /* The last (up to 3) bytes of pending + piece decide how much is complete. */
    unsigned char tail[3];
    size_t total = (size_t)s->n_pend + len, k = total < 3 ? total : 3;
    for (size_t i = 0; i < k; i++) {
        size_t pos = total - k + i;
        tail[i] = pos < (size_t)s->n_pend ? s->pend[pos] : (unsigned char)p[pos - (size_t)s->n_pend];
    }
    size_t keep = k - unicode_utf8_complete_len(tail, k), emit = total - keep;
    if (emit > cap) return MESH_ERANGE; /* nothing consumed: retry with a larger buffer */
    if (len > 0 || strip) s->at_start = false;
    unsigned char all_pend[8];
    memcpy(all_pend, s->pend, (size_t)s->n_pend);
    size_t n_old = (size_t)s->n_pend;
    /* Emit the first emit bytes of (old pending, piece); the rest becomes pending. */
    size_t from_old = emit < n_old ? emit : n_old;
    memcpy(out, all_pend, from_old);
    memcpy(out + from_old, p, emit - from_old);
    size_t np = 0;
    for (size_t pos = emit; pos < total; pos++)
        s->pend[np++] = pos < n_old ? all_pend[pos] : (unsigned char)p[pos - n_old];
    s->n_pend = (int)np;
    return (int)emit;
}

int tok_stream_flush(struct tok_stream *s, char *out, size_t cap)
{
    if (s->n_pend == 0) return 0;
    if (cap < 3) return MESH_ERANGE;
    memcpy(out, "\xef\xbf\xbd", 3);
    s->n_pend = 0;
    return 3;
}
