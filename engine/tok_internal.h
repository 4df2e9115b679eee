/* tok_internal.h - the tokenizer's shared internals (tok.c, tok_spm.c, tok_bpe.c).
 *
 * struct tok holds copies of everything read from the GGUF: token texts in one pool,
 * a text -> id hash table (open addressing), rendered pieces, and for BPE the merge ranks
 * in a second hash table keyed by the (first, second) pair of strings.
 * Thread rule: immutable after tok_load; the encoders allocate their own scratch per call.
 * (tok_wpm.c is the WordPiece encoder.)
 */
#ifndef MESH_ENGINE_TOK_INTERNAL_H
#define MESH_ENGINE_TOK_INTERNAL_H

#include "engine/tok.h"
#include "engine/unicode.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Per-token attribute bits beyond the type (llama.cpp LLAMA_TOKEN_ATTR_LSTRIP/RSTRIP). */
enum { TOK_ATTR_LSTRIP = 1, TOK_ATTR_RSTRIP = 2 };

struct tok_merge {
    uint32_t off;       /* into merge_text: first then second, no separator */
    uint32_t first_len;
    uint32_t second_len;
    int32_t rank;
};

struct tok {
    enum tok_model model;
    enum unicode_pre pre;
    char pre_name[48];
    int32_t n_vocab;

    char *text;          /* token texts, concatenated */
    uint32_t *text_off;  /* [n_vocab + 1] */
    float *scores;       /* [n_vocab] */
    uint8_t *type;       /* [n_vocab] enum tok_type; 0 = undefined */
    uint8_t *attr;       /* [n_vocab] TOK_ATTR_* */
    uint8_t *is_eog;     /* [n_vocab] */
    char *piece;         /* rendered bytes of each token (control tokens as their text) */
    uint32_t *piece_off; /* [n_vocab + 1] */
    size_t max_piece_len;
    size_t max_token_len; /* longest token text in bytes */

    int32_t *map;        /* text -> id, -1 = empty slot */
    uint32_t map_mask;

    int32_t *special;    /* control / user-defined / unknown ids, longest text first */
    int32_t n_special;

    int32_t byte_id[256]; /* SPM byte fallback: <0xXX> (or the 1-byte token), -1 if none */

    char *merge_text;     /* BPE */
    struct tok_merge *merges;
    uint32_t n_merges;
    int32_t *merge_map;   /* index into merges, -1 = empty */
    uint32_t merge_mask;

    int32_t bos, eos, eot, eom, unk, pad, sep;
    bool add_bos, add_eos, add_space_prefix, ignore_merges;
};

/* Growable id output: ids beyond cap are counted, not stored (for MESH_ERANGE). */
struct tok_out {
    int32_t *ids;
    int cap;
    int n;
};

static inline void tok_out_push(struct tok_out *o, int32_t id)
{
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* Min-heap of candidate merges: smallest key first, ties by smallest left index
 * (SPM uses key = -score, BPE key = rank). */
struct tok_bigram {
    double key;
    int left, right;
    size_t size; /* bytes of the merged text when queued */
};

struct tok_heap {
    struct tok_bigram *v;
    size_t n, cap;
};

/* Pushes b; the caller sized cap for every push it can make. Returns MESH_ERANGE if full. */
int tok_heap_push(struct tok_heap *h, struct tok_bigram b);
bool tok_heap_pop(struct tok_heap *h, struct tok_bigram *out);

uint32_t tok_hash(const char *s, size_t len, uint32_t h);
/* Id of the token whose text is exactly s[0..len), -1 if none (last duplicate wins). */
int32_t tok_lookup(const struct tok *t, const char *s, size_t len);

/* SPM (tok_spm.c): tokenizes one raw fragment; add_prefix prepends the dummy space. */
int tok_spm_encode(const struct tok *t, const char *text, size_t len, bool add_prefix,
                   struct tok_out *out);

/* WordPiece (tok_wpm.c): normalizes and tokenizes one raw fragment. */
int tok_wpm_encode(const struct tok *t, const char *text, size_t len, struct tok_out *out);

/* BPE (tok_bpe.c). */
int tok_bpe_load(struct tok *t, const struct gguf *g, char *err, size_t err_cap);
int tok_bpe_encode(const struct tok *t, const char *text, size_t len, struct tok_out *out);
/* Bytes of a byte-level BPE token text (GPT-2 byte-to-unicode inverted); code points
 * outside the mapping are copied as UTF-8. Writes at most cap bytes, returns the length. */
size_t tok_bpe_unmap(const char *s, size_t len, char *buf, size_t cap);
/* Maps tokenizer.ggml.pre to a pipeline and sets ignore_merges / add_bos defaults. */
void tok_bpe_set_pre(struct tok *t, const char *name);

#endif
