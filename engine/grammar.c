/* grammar.c - the GBNF matcher: pushdown stacks over code points, token masks (grammar.h).
 *
 * A stack is a linked list of frames (element position, parent frame). Frames are hash-consed
 * in a pool: (pos, parent) is stored once, so two equal stacks are one frame id and a set of
 * stacks dedupes by id. The top frame of a live stack always points at a character element;
 * a parent frame holds where to continue once the rule above it ends. Frame -1 is "below the
 * root": a stack that pops to it has parsed a whole sentence (accepting). Advancing by a code
 * point keeps the stacks whose top matches and expands what follows (references push their
 * continuation and start each alternative) until every top is a character element again.
 * UTF-8 decoding is incremental: a token may end inside a character; it is allowed while some
 * stack can still match a code point that starts with those bytes.
 * The vocabulary mask walks a byte trie of all token pieces depth first, advancing the stack
 * set one byte at a time and pruning a subtree as soon as the set dies. Frames made during a
 * walk are dropped after it (the pool truncates back); committed states are compacted now and
 * then so the pool does not grow with the text.
 */
#include "engine/grammar.h"
#include "engine/grammar_internal.h"

#include "core/err.h"
#include "engine/tok.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- vocabulary: token bytes and their trie ------------------------------------------------ */

struct gtrie_node {
    uint32_t child_lo;  /* children are nodes[child_lo .. child_lo + n_child) */
    uint32_t tok_lo;    /* tokens whose piece ends here: sorted[tok_lo .. tok_lo + n_tok) */
    uint32_t n_tok;
    uint16_t n_child;
    uint8_t byte;
};

struct grammar_vocab {
    int32_t n_vocab;
    char *bytes;            /* all pieces */
    uint32_t *off;          /* [n_vocab + 1] */
    uint8_t *is_eog;        /* [n_vocab] */
    int32_t *sorted;        /* non-empty, non-EOG token ids sorted by piece */
    int32_t n_sorted;
    struct gtrie_node *nodes;
    uint32_t n_nodes;
};

struct gsort_ent {
    const uint8_t *p;
    uint32_t len;
    int32_t id;
};

static int cmp_piece(const void *a, const void *b)
{
    const struct gsort_ent *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Builds node ni's subtree over sorted[lo, hi), whose pieces share their first depth bytes. */
static void trie_build(struct grammar_vocab *v, uint32_t ni, int32_t lo, int32_t hi, uint32_t depth)
{
    int32_t i = lo;
    while (i < hi && v->off[v->sorted[i] + 1] - v->off[v->sorted[i]] == depth) i++;
    v->nodes[ni].tok_lo = (uint32_t)lo;
    v->nodes[ni].n_tok = (uint32_t)(i - lo);
    uint32_t n_child = 0;
    for (int32_t j = i; j < hi; j++) {
        int32_t t = v->sorted[j];
        if (j == i || (uint8_t)v->bytes[v->off[t] + depth] !=
                          (uint8_t)v->bytes[v->off[v->sorted[j - 1]] + depth])
            n_child++;
    }
    uint32_t c0 = v->n_nodes;
    v->n_nodes += n_child;
    v->nodes[ni].child_lo = c0;
    v->nodes[ni].n_child = (uint16_t)n_child;
    uint32_t c = c0;
    for (int32_t j = i; j < hi;) {
        uint8_t b = (uint8_t)v->bytes[v->off[v->sorted[j]] + depth];
        int32_t k = j;
        while (k < hi && (uint8_t)v->bytes[v->off[v->sorted[k]] + depth] == b) k++;
        memset(&v->nodes[c], 0, sizeof v->nodes[c]);
        v->nodes[c].byte = b;
        trie_build(v, c, j, k, depth + 1);
        c++;
        j = k;
    }
}

static int vocab_finish(struct grammar_vocab *v)
{
    struct gsort_ent *ent = malloc(((size_t)v->n_vocab + 1) * sizeof *ent);
    v->sorted = malloc(((size_t)v->n_vocab + 1) * sizeof *v->sorted);
    v->nodes = malloc(((size_t)v->off[v->n_vocab] + 1) * sizeof *v->nodes);
    if (!ent || !v->sorted || !v->nodes) {
        free(ent);
        return MESH_ENOMEM;
    }
    int32_t n = 0;
    for (int32_t i = 0; i < v->n_vocab; i++)
        if (!v->is_eog[i] && v->off[i + 1] > v->off[i])
            ent[n++] = (struct gsort_ent){.p = (const uint8_t *)v->bytes + v->off[i],
                                          .len = v->off[i + 1] - v->off[i], .id = i};
    qsort(ent, (size_t)n, sizeof *ent, cmp_piece);
    for (int32_t i = 0; i < n; i++) v->sorted[i] = ent[i].id;
    v->n_sorted = n;
    free(ent);
    memset(&v->nodes[0], 0, sizeof v->nodes[0]);
    v->n_nodes = 1;
    trie_build(v, 0, 0, v->n_sorted, 0);
    return 0;
}

int grammar_vocab_from_pieces(const char *const *pieces, const size_t *lens, const bool *is_eog,
                              int32_t n_vocab, struct grammar_vocab **out)
{
    *out = NULL;
    if (n_vocab <= 0 || !pieces || !lens) return MESH_EINVAL;
    struct grammar_vocab *v = calloc(1, sizeof *v);
    if (!v) return MESH_ENOMEM;
    v->n_vocab = n_vocab;
    size_t total = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (lens[i] > 65536 || (lens[i] && !pieces[i])) {
            grammar_vocab_free(v);
            return MESH_EINVAL;
        }
        total += lens[i];
    }
    int rc = MESH_ENOMEM;
    if (total > UINT32_MAX - 1) goto fail;
    v->bytes = malloc(total + 1);
    v->off = malloc(((size_t)n_vocab + 1) * sizeof *v->off);
    v->is_eog = calloc((size_t)n_vocab, 1);
    if (!v->bytes || !v->off || !v->is_eog) goto fail;
    uint32_t o = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        v->off[i] = o;
        if (lens[i]) memcpy(v->bytes + o, pieces[i], lens[i]);
        o += (uint32_t)lens[i];
        v->is_eog[i] = is_eog && is_eog[i];
    }
    v->off[n_vocab] = o;
    if ((rc = vocab_finish(v)) == 0) {
        *out = v;
        return 0;
    }
fail:
    grammar_vocab_free(v);
    return rc;
}

int grammar_vocab_new(const struct tok *t, struct grammar_vocab **out)
{
    *out = NULL;
    int32_t n = tok_n_vocab(t);
    if (n <= 0) return MESH_EINVAL;
    struct grammar_vocab *v = calloc(1, sizeof *v);
    if (!v) return MESH_ENOMEM;
    v->n_vocab = n;
    size_t piece_cap = tok_max_piece_len(t) + 1, cap = (size_t)n * 4 + piece_cap, len = 0;
    int rc = MESH_ENOMEM;
    v->bytes = malloc(cap);
    v->off = malloc(((size_t)n + 1) * sizeof *v->off);
    v->is_eog = calloc((size_t)n, 1);
    if (!v->bytes || !v->off || !v->is_eog) goto fail;
    for (int32_t i = 0; i < n; i++) {
        if (len + piece_cap > cap) {
            char *b = realloc(v->bytes, cap * 2);
            if (!b) goto fail;
            v->bytes = b, cap *= 2;
        }
        int k = tok_piece(t, i, false, v->bytes + len, piece_cap);
        v->off[i] = (uint32_t)len;
        len += k > 0 ? (size_t)k : 0;
        if (len > UINT32_MAX / 2) {
            rc = MESH_ERANGE;
            goto fail;
        }
        v->is_eog[i] = tok_is_eog(t, i);
    }
    v->off[n] = (uint32_t)len;
    if ((rc = vocab_finish(v)) == 0) {
        *out = v;
        return 0;
    }
fail:
    grammar_vocab_free(v);
    return rc;
}

void grammar_vocab_free(struct grammar_vocab *v)
{
    if (!v) return;
    free(v->bytes);
    free(v->off);
    free(v->is_eog);
    free(v->sorted);
    free(v->nodes);
    free(v);
}

int32_t grammar_vocab_n(const struct grammar_vocab *v) { return v ? v->n_vocab : 0; }

/* ---- the frame pool: hash-consed stacks ------------------------------------------------------ */

struct gframe {
    uint32_t pos;
    int32_t parent;
    int32_t hnext;   /* next frame in the same hash bucket (lower index) */
};

struct gpool {
    struct gframe *f;
    int32_t n, cap;
    int32_t *bucket;
    uint32_t n_bucket;  /* power of two */
};

static uint32_t frame_hash(uint32_t pos, int32_t parent)
{
    uint64_t x = ((uint64_t)pos << 32) ^ (uint32_t)parent;
    x *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(x >> 32);
}

static int pool_rehash(struct gpool *p, uint32_t n_bucket)
{
    int32_t *b = malloc(n_bucket * sizeof *b);
    if (!b) return MESH_ENOMEM;
    for (uint32_t i = 0; i < n_bucket; i++) b[i] = -1;
    /* in index order, so every chain stays ordered from the newest frame (truncation) */
    for (int32_t i = 0; i < p->n; i++) {
        uint32_t h = frame_hash(p->f[i].pos, p->f[i].parent) & (n_bucket - 1);
        p->f[i].hnext = b[h];
        b[h] = i;
    }
    free(p->bucket);
    p->bucket = b, p->n_bucket = n_bucket;
    return 0;
}

/* Frame id of (pos, parent), made if new; -2 when out of memory. */
static int32_t pool_intern(struct gpool *p, uint32_t pos, int32_t parent)
{
    uint32_t h = frame_hash(pos, parent) & (p->n_bucket - 1);
    for (int32_t i = p->bucket[h]; i >= 0; i = p->f[i].hnext)
        if (p->f[i].pos == pos && p->f[i].parent == parent) return i;
    if (p->n == p->cap) {
        int32_t cap = p->cap * 2;
        struct gframe *f = cap > 0 ? realloc(p->f, (size_t)cap * sizeof *f) : NULL;
        if (!f) return -2;
        p->f = f, p->cap = cap;
    }
    if ((uint32_t)p->n >= p->n_bucket) {
        if (pool_rehash(p, p->n_bucket * 2)) return -2;
        h = frame_hash(pos, parent) & (p->n_bucket - 1);
    }
    int32_t i = p->n++;
    p->f[i] = (struct gframe){.pos = pos, .parent = parent, .hnext = p->bucket[h]};
    p->bucket[h] = i;
    return i;
}

/* Drops frames made after mark: each is the head of its bucket when removed newest first. */
static void pool_truncate(struct gpool *p, int32_t mark)
{
    while (p->n > mark) {
        int32_t i = --p->n;
        uint32_t h = frame_hash(p->f[i].pos, p->f[i].parent) & (p->n_bucket - 1);
        p->bucket[h] = p->f[i].hnext;
    }
}

static int pool_init(struct gpool *p)
{
    memset(p, 0, sizeof *p);
    p->cap = 1024;
    p->f = malloc((size_t)p->cap * sizeof *p->f);
    if (!p->f) return MESH_ENOMEM;
    return pool_rehash(p, 1024);
}

static void pool_free(struct gpool *p)
{
    free(p->f);
    free(p->bucket);
    memset(p, 0, sizeof *p);
}

/* ---- the state ----------------------------------------------------------------------------- */

#define GSET_ACCEPT (-1) /* the empty stack: a whole sentence parsed */
#define GRAMMAR_MASK_CACHE 4
struct gwalk;
static void gwalk_free(struct gwalk *w);
#define GRAMMAR_MAX_DEPTH 3000 /* nested expansions in one step (C recursion) */

struct grammar_state {
    const struct grammar *g;
    const struct grammar_vocab *v;
    struct gpool pool;
    int32_t *cur;           /* current stack set: frame ids, GSET_ACCEPT at most once */
    int32_t n_cur, cap_cur;
    uint32_t part_val;      /* pending UTF-8 character: bits so far and bytes still due */
    int part_rem;
    bool skip_space;        /* the next non-empty token's leading space is not text */
    bool skip_space0;
    /* scratch for walks: stack sets stored end to end */
    int32_t *ar;
    size_t ar_n, ar_cap;
    uint32_t *seen;         /* [pool cap] set-build stamps, for dedupe */
    int32_t seen_cap;
    uint32_t stamp;
    bool set_has_accept;
    int32_t *remap;         /* compaction: old frame -> new frame */
    int32_t remap_cap;
    int32_t n_live_after_gc;
    uint8_t *mask;          /* [n_vocab] */
    int err;                /* first error inside a walk (MESH_EFULL, MESH_ENOMEM) */
    struct gwalk *w;        /* the mask walk's memo (grammar_state_mask) */
    /* Masks of recent states: a loop such as a JSON string's characters comes back to the
     * same stack set token after token (frames are hash-consed, so the ids are equal), and
     * then the mask is a copy. Frame ids change at compaction: epoch invalidates. */
    struct gmask_cache {
        int32_t *set;
        int32_t n_set, cap_set;
        uint32_t val, epoch;
        int rem;
        bool skip, used;
        int32_t n_allowed;
        uint8_t *mask;      /* [n_vocab] */
    } mc[GRAMMAR_MASK_CACHE];
    int mc_next;
    uint32_t epoch;
};

static void ar_push(struct grammar_state *s, int32_t x)
{
    if (s->ar_n == s->ar_cap) {
        size_t cap = s->ar_cap ? s->ar_cap * 2 : 1024;
        int32_t *a = realloc(s->ar, cap * sizeof *a);
        if (!a) {
            s->err = MESH_ENOMEM;
            return;
        }
        s->ar = a, s->ar_cap = cap;
    }
    s->ar[s->ar_n++] = x;
}

/* Adds frame id (or GSET_ACCEPT) to the set being built at the end of the arena, once. */
static void set_add(struct grammar_state *s, size_t set_lo, int32_t id)
{
    if (id == GSET_ACCEPT) {
        if (s->set_has_accept) return;
        s->set_has_accept = true;
    } else {
        if (id >= s->seen_cap) {
            int32_t cap = s->pool.cap > id + 1 ? s->pool.cap : id + 1;
            uint32_t *sn = realloc(s->seen, (size_t)cap * sizeof *sn);
            if (!sn) {
                s->err = MESH_ENOMEM;
                return;
            }
            memset(sn + s->seen_cap, 0, (size_t)(cap - s->seen_cap) * sizeof *sn);
            s->seen = sn, s->seen_cap = cap;
        }
        if (s->seen[id] == s->stamp) return;
        s->seen[id] = s->stamp;
    }
    if (s->ar_n - set_lo >= GRAMMAR_MAX_STACKS) {
        s->err = MESH_EFULL;
        return;
    }
    ar_push(s, id);
}

static void set_begin(struct grammar_state *s)
{
    s->set_has_accept = false;
    if (++s->stamp == 0) { /* wrapped: forget old stamps */
        if (s->seen) memset(s->seen, 0, (size_t)s->seen_cap * sizeof *s->seen);
        s->stamp = 1;
    }
}

/* Continues a stack at element pos over parent until every top is a character element. */
static void expand(struct grammar_state *s, size_t set_lo, uint32_t pos, int32_t parent, int depth)
{
    if (s->err) return;
    if (depth > GRAMMAR_MAX_DEPTH) {
        s->err = MESH_EFULL;
        return;
    }
    const struct grammar *g = s->g;
    const struct gram_elem *e = &g->elems[pos];
    if (gram_is_end(e->type)) { /* the rule ended: pop to the continuation */
        if (parent < 0) {
            set_add(s, set_lo, GSET_ACCEPT);
            return;
        }
        struct gframe f = s->pool.f[parent];
        expand(s, set_lo, f.pos, f.parent, depth + 1);
        return;
    }
    if (e->type == GRAM_REF) {
        uint32_t r = e->value, cont = pos + 1;
        int32_t np = parent;
        if (!gram_is_end(g->elems[cont].type)) { /* tail position: nothing to come back to */
            np = pool_intern(&s->pool, cont, parent);
            if (np == -2) {
                s->err = MESH_ENOMEM;
                return;
            }
        }
        for (uint32_t a = g->alt_lo[r]; a < g->alt_lo[r + 1] && !s->err; a++)
            expand(s, set_lo, g->alts[a], np, depth + 1);
        return;
    }
    int32_t id = pool_intern(&s->pool, pos, parent);
    if (id == -2) s->err = MESH_ENOMEM;
    else set_add(s, set_lo, id);
}

/* Whether the class at pos matches cp; *next gets the element after the class. */
static bool match_char(const struct gram_elem *e0, uint32_t cp, const struct gram_elem **next)
{
    const struct gram_elem *e = e0;
    if (e->type == GRAM_CHAR_ANY) {
        *next = e + 1;
        return true;
    }
    bool neg = e->type == GRAM_CHAR_NOT, found = false;
    do {
        if (e[1].type == GRAM_RNG_UPPER) {
            found |= e->value <= cp && cp <= e[1].value;
            e += 2;
        } else {
            found |= e->value == cp;
            e += 1;
        }
    } while (e->type == GRAM_CHAR_ALT);
    *next = e;
    return found != neg;
}

/* Whether the class at e0 matches some code point in [lo, hi] (a character still incomplete). */
static bool match_range(const struct gram_elem *e0, uint32_t lo, uint32_t hi)
{
    if (e0->type == GRAM_CHAR_ANY) return true;
    bool neg = e0->type == GRAM_CHAR_NOT;
    if (!neg) {
        const struct gram_elem *e = e0;
        do {
            uint32_t a = e->value, b = e[1].type == GRAM_RNG_UPPER ? e[1].value : a;
            if (a <= hi && b >= lo) return true;
            e += e[1].type == GRAM_RNG_UPPER ? 2 : 1;
        } while (e->type == GRAM_CHAR_ALT);
        return false;
    }
    /* negated: some point of [lo, hi] is outside every listed range */
    uint32_t cur = lo;
    for (bool moved = true; moved && cur <= hi;) {
        moved = false;
        const struct gram_elem *e = e0;
        do {
            uint32_t a = e->value, b = e[1].type == GRAM_RNG_UPPER ? e[1].value : a;
            if (a <= cur && cur <= b) {
                if (b >= hi) return false;
                cur = b + 1, moved = true;
            }
            e += e[1].type == GRAM_RNG_UPPER ? 2 : 1;
        } while (e->type == GRAM_CHAR_ALT);
    }
    return cur <= hi;
}

/* Appends to the arena the set {in[n_in]} advanced by code point cp; returns its size. */
static int32_t set_advance(struct grammar_state *s, size_t in_lo, int32_t n_in, uint32_t cp)
{
    set_begin(s);
    size_t out_lo = s->ar_n;
    for (int32_t i = 0; i < n_in && !s->err; i++) {
        int32_t t = s->ar[in_lo + (size_t)i];
        if (t < 0) continue;
        struct gframe f = s->pool.f[t];
        const struct gram_elem *next;
        if (match_char(&s->g->elems[f.pos], cp, &next))
            expand(s, out_lo, (uint32_t)(next - s->g->elems), f.parent, 0);
    }
    return s->err ? -1 : (int32_t)(s->ar_n - out_lo);
}

/* A pending UTF-8 character is val = (sequence length << 24) | bits so far, with rem bytes
 * still due. Its possible code points: the bits followed by any rem continuation bytes,
 * clamped to what a well-formed sequence of that length encodes (no overlong forms, no
 * surrogates, nothing above U+10FFFF). False if none is left. */
static bool partial_range(uint32_t val, int rem, uint32_t *lo, uint32_t *hi)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    uint32_t len = val >> 24, bits = val & 0xFFFFFF;
    uint32_t a = bits << (6 * rem), b = a | ((1u << (6 * rem)) - 1);
    if (len < 2 || len > 4) return false;
    if (a < min_cp[len]) a = min_cp[len];
    if (b > 0x10FFFF) b = 0x10FFFF;
    if (a >= 0xD800 && b <= 0xDFFF) return false;
    *lo = a, *hi = b;
    return a <= b;
}

static bool set_partial_ok(const struct grammar_state *s, size_t lo, int32_t n, uint32_t val, int rem)
{
    uint32_t clo, chi;
    if (!partial_range(val, rem, &clo, &chi)) return false;
    for (int32_t i = 0; i < n; i++) {
        int32_t t = s->ar[lo + (size_t)i];
        if (t >= 0 && match_range(&s->g->elems[s->pool.f[t].pos], clo, chi)) return true;
    }
    return false;
}

/* One byte from (the set at lo of size n, partial character val/rem): the new set may be
 * appended to the arena (then lo and n move to it). Returns false when no stack survives. */
static bool step_byte(struct grammar_state *s, size_t *lo, int32_t *n, uint32_t *val, int *rem,
                      uint8_t b)
{
    uint32_t cp;
    if (*rem > 0) {
        if ((b & 0xC0) != 0x80) return false;
        uint32_t len = *val >> 24;
        *val = (len << 24) | (((*val << 6) | (b & 0x3F)) & 0xFFFFFF);
        if (--*rem > 0) return set_partial_ok(s, *lo, *n, *val, *rem);
        uint32_t clo, chi;
        if (!partial_range(*val, 0, &clo, &chi)) return false; /* overlong, surrogate */
        cp = *val & 0xFFFFFF;
        if (cp >= 0xD800 && cp <= 0xDFFF) return false;
        *val = 0;
    } else if (b < 0x80) {
        cp = b;
    } else {
        if (b >= 0xC2 && b <= 0xDF) *val = (2u << 24) | (b & 0x1F), *rem = 1;
        else if ((b & 0xF0) == 0xE0) *val = (3u << 24) | (b & 0x0F), *rem = 2;
        else if (b >= 0xF0 && b <= 0xF4) *val = (4u << 24) | (b & 0x07), *rem = 3;
        else return false;
        return set_partial_ok(s, *lo, *n, *val, *rem);
    }
    size_t out_lo = s->ar_n;
    int32_t k = set_advance(s, *lo, *n, cp);
    if (k <= 0) return false;
    *lo = out_lo, *n = k;
    return true;
}

static int state_start(struct grammar_state *s)
{
    pool_truncate(&s->pool, 0);
    s->ar_n = 0;
    s->err = 0;
    set_begin(s);
    const struct grammar *g = s->g;
    for (uint32_t a = g->alt_lo[g->root]; a < g->alt_lo[g->root + 1] && !s->err; a++)
        expand(s, 0, g->alts[a], -1, 0);
    if (s->err) return s->err;
    if ((size_t)s->cap_cur < s->ar_n) {
        int32_t *c = realloc(s->cur, s->ar_n * sizeof *c);
        if (!c) return MESH_ENOMEM;
        s->cur = c, s->cap_cur = (int32_t)s->ar_n;
    }
    memcpy(s->cur, s->ar, s->ar_n * sizeof *s->cur);
    s->n_cur = (int32_t)s->ar_n;
    s->part_val = 0, s->part_rem = 0;
    s->skip_space = s->skip_space0;
    s->n_live_after_gc = s->pool.n;
    s->epoch++;
    return 0;
}

int grammar_state_new(const struct grammar *g, const struct grammar_vocab *v,
                      bool skip_leading_space, struct grammar_state **out)
{
    *out = NULL;
    if (!g) return MESH_EINVAL;
    struct grammar_state *s = calloc(1, sizeof *s);
    if (!s) return MESH_ENOMEM;
    s->g = g, s->v = v, s->skip_space0 = skip_leading_space;
    int rc = pool_init(&s->pool);
    if (!rc && v && !(s->mask = malloc((size_t)v->n_vocab))) rc = MESH_ENOMEM;
    if (!rc) rc = state_start(s);
    if (rc) {
        grammar_state_free(s);
        return rc == MESH_EFULL ? MESH_EINVAL : rc;
    }
    *out = s;
    return 0;
}

int grammar_state_reset(struct grammar_state *s) { return state_start(s); }

void grammar_state_free(struct grammar_state *s)
{
    if (!s) return;
    pool_free(&s->pool);
    free(s->cur);
    free(s->ar);
    free(s->seen);
    free(s->remap);
    free(s->mask);
    gwalk_free(s->w);
    for (int i = 0; i < GRAMMAR_MASK_CACHE; i++) {
        free(s->mc[i].set);
        free(s->mc[i].mask);
    }
    free(s);
}

/* Walks bytes from the current state; on success the result set is at ar[*lo..*lo+*n). */
static bool walk_bytes(struct grammar_state *s, const uint8_t *b, size_t len, size_t *lo,
                       int32_t *n, uint32_t *val, int *rem)
{
    s->ar_n = 0;
    s->err = 0;
    for (int32_t i = 0; i < s->n_cur; i++) ar_push(s, s->cur[i]);
    *lo = 0, *n = s->n_cur, *val = s->part_val, *rem = s->part_rem;
    size_t i = 0;
    if (s->skip_space && len > 0 && b[0] == ' ') i = 1;
    for (; i < len; i++)
        if (s->err || !step_byte(s, lo, n, val, rem, b[i])) return false;
    return !s->err && (*n > 0 || *rem > 0);
}

bool grammar_state_allows_bytes(struct grammar_state *s, const char *bytes, size_t len)
{
    int32_t mark = s->pool.n, n;
    size_t lo;
    uint32_t val;
    int rem;
    bool ok = walk_bytes(s, (const uint8_t *)bytes, len, &lo, &n, &val, &rem);
    pool_truncate(&s->pool, mark);
    return ok;
}

/* Keeps only the frames the current set reaches, copied into a fresh pool. A parent is always
 * interned before its children, so one pass in index order rebuilds every chain. */
static int state_compact(struct grammar_state *s)
{
    struct gpool np;
    int rc = pool_init(&np);
    if (rc) return rc;
    if (s->remap_cap < s->pool.n) {
        int32_t *m = realloc(s->remap, (size_t)s->pool.n * sizeof *m);
        if (!m) {
            pool_free(&np);
            return MESH_ENOMEM;
        }
        s->remap = m, s->remap_cap = s->pool.n;
    }
    for (int32_t i = 0; i < s->pool.n; i++) s->remap[i] = -3; /* -3: unreached */
    for (int32_t k = 0; k < s->n_cur; k++)
        for (int32_t x = s->cur[k]; x >= 0 && s->remap[x] == -3; x = s->pool.f[x].parent)
            s->remap[x] = -4; /* reached */
    for (int32_t i = 0; i < s->pool.n; i++) {
        if (s->remap[i] != -4) continue;
        int32_t par = s->pool.f[i].parent;
        int32_t nid = pool_intern(&np, s->pool.f[i].pos, par >= 0 ? s->remap[par] : par);
        if (nid == -2) {
            pool_free(&np);
            return MESH_ENOMEM;
        }
        s->remap[i] = nid;
    }
    for (int32_t k = 0; k < s->n_cur; k++)
        if (s->cur[k] >= 0) s->cur[k] = s->remap[s->cur[k]];
    pool_free(&s->pool);
    s->pool = np;
    s->n_live_after_gc = np.n;
    s->epoch++;
    return 0;
}

int grammar_state_accept_bytes(struct grammar_state *s, const char *bytes, size_t len)
{
    if (len == 0) return 0;
    int32_t mark = s->pool.n, n;
    size_t lo;
    uint32_t val;
    int rem;
    if (!walk_bytes(s, (const uint8_t *)bytes, len, &lo, &n, &val, &rem)) {
        int err = s->err;
        pool_truncate(&s->pool, mark);
        return err ? err : MESH_EINVAL;
    }
    if (s->cap_cur < n) {
        int32_t *c = realloc(s->cur, (size_t)n * sizeof *c);
        if (!c) return MESH_ENOMEM;
        s->cur = c, s->cap_cur = n;
    }
    memmove(s->cur, s->ar + lo, (size_t)n * sizeof *s->cur);
    s->n_cur = n;
    s->part_val = val, s->part_rem = rem;
    s->skip_space = false;
    if (s->pool.n > 2 * s->n_live_after_gc + 4096) return state_compact(s);
    return 0;
}

bool grammar_state_allows_token(struct grammar_state *s, int32_t id)
{
    const struct grammar_vocab *v = s->v;
    if (!v || id < 0 || id >= v->n_vocab) return false;
    if (v->is_eog[id]) return grammar_state_is_accepting(s);
    uint32_t len = v->off[id + 1] - v->off[id];
    if (len == 0) return false;
    return grammar_state_allows_bytes(s, v->bytes + v->off[id], len);
}

int grammar_state_accept_token(struct grammar_state *s, int32_t id)
{
    const struct grammar_vocab *v = s->v;
    if (!v || id < 0 || id >= v->n_vocab) return MESH_EINVAL;
    if (v->is_eog[id]) return grammar_state_is_accepting(s) ? 0 : MESH_EINVAL;
    uint32_t len = v->off[id + 1] - v->off[id];
    if (len == 0) return MESH_EINVAL;
    return grammar_state_accept_bytes(s, v->bytes + v->off[id], len);
}

bool grammar_state_is_accepting(const struct grammar_state *s)
{
    if (s->part_rem) return false;
    for (int32_t i = 0; i < s->n_cur; i++)
        if (s->cur[i] == GSET_ACCEPT) return true;
    return false;
}

bool grammar_state_is_done(const struct grammar_state *s)
{
    return s->n_cur == 1 && s->cur[0] == GSET_ACCEPT && !s->part_rem;
}

/* ---- the vocabulary mask ---------------------------------------------------------------- */

/* The walk memoizes: a walk state is (stack set, partial character), interned to an id, and
 * each (state, byte) transition is computed once. Trie nodes at the same depth usually share
 * their state (inside a string every letter leads to the same set), so most of the trie costs
 * one table lookup per node. Both tables live for one walk: frame ids above the pool's mark
 * are dropped after it. */
struct gwalk {
    int32_t *mem;            /* members of every state, end to end */
    size_t n_mem, cap_mem;
    struct gwstate {
        uint32_t lo, val;
        int32_t n;
        int rem;
        uint64_t hash;
    } *st;
    int32_t n_st, cap_st;
    struct gwslot {
        int32_t id;          /* state id */
        uint32_t gen;        /* valid when equal to gwalk.gen: no clearing between walks */
    } *st_tab;
    uint32_t st_tab_cap;
    int32_t *next;           /* [cap_st * 256]: state after (state, byte); -2 not yet computed,
                                -1 dead */
    uint32_t gen;
};

static uint64_t mix64(uint64_t h, uint64_t x)
{
    h ^= x + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h * 0xBF58476D1CE4E5B9ull;
}

static void gwalk_free(struct gwalk *w)
{
    if (!w) return;
    free(w->mem);
    free(w->st);
    free(w->st_tab);
    free(w->next);
    free(w);
}

static int gwalk_reset(struct gwalk *w)
{
    w->n_mem = 0, w->n_st = 0;
    if (!w->st_tab) {
        w->st_tab_cap = 1024;
        w->st_tab = calloc(w->st_tab_cap, sizeof *w->st_tab);
        if (!w->st_tab) return MESH_ENOMEM;
    }
    if (++w->gen == 0) { /* wrapped: clear once, then start at 1 */
        memset(w->st_tab, 0, w->st_tab_cap * sizeof *w->st_tab);
        w->gen = 1;
    }
    return 0;
}

static bool state_equal(const struct gwalk *w, int32_t id, const int32_t *m, int32_t n, uint32_t val, int rem)
{
    const struct gwstate *x = &w->st[id];
    return x->n == n && x->val == val && x->rem == rem &&
           memcmp(w->mem + x->lo, m, (size_t)n * sizeof *m) == 0;
}

static int st_tab_grow(struct gwalk *w)
{
    uint32_t cap = w->st_tab_cap * 2;
    struct gwslot *t = calloc(cap, sizeof *t);
    if (!t) return MESH_ENOMEM;
    for (int32_t i = 0; i < w->n_st; i++) {
        uint32_t h = (uint32_t)w->st[i].hash & (cap - 1);
        while (t[h].gen == w->gen) h = (h + 1) & (cap - 1);
        t[h] = (struct gwslot){.id = i, .gen = w->gen};
    }
    free(w->st_tab);
    w->st_tab = t, w->st_tab_cap = cap;
    return 0;
}

/* The id of state (m[n], val, rem), interned. -1 on out of memory. */
static int32_t state_intern(struct gwalk *w, const int32_t *m, int32_t n, uint32_t val, int rem)
{
    uint64_t h = mix64(mix64(0x1234, val), (uint64_t)rem);
    for (int32_t i = 0; i < n; i++) h = mix64(h, (uint32_t)m[i]);
    uint32_t slot = (uint32_t)h & (w->st_tab_cap - 1);
    for (; w->st_tab[slot].gen == w->gen; slot = (slot + 1) & (w->st_tab_cap - 1)) {
        int32_t id = w->st_tab[slot].id;
        if (w->st[id].hash == h && state_equal(w, id, m, n, val, rem)) return id;
    }
    if (w->n_st == w->cap_st) {
        int32_t cap = w->cap_st ? w->cap_st * 2 : 256;
        struct gwstate *st = realloc(w->st, (size_t)cap * sizeof *st);
        if (st) w->st = st;
        int32_t *nx = st ? realloc(w->next, (size_t)cap * 256 * sizeof *nx) : NULL;
        if (!nx) return -1;
        w->next = nx, w->cap_st = cap;
    }
    if (w->n_mem + (size_t)n > w->cap_mem) {
        size_t cap = w->cap_mem ? w->cap_mem * 2 : 4096;
        while (cap < w->n_mem + (size_t)n) cap *= 2;
        int32_t *mem = realloc(w->mem, cap * sizeof *mem);
        if (!mem) return -1;
        w->mem = mem, w->cap_mem = cap;
    }
    int32_t id = w->n_st++;
    w->st[id] = (struct gwstate){.lo = (uint32_t)w->n_mem, .val = val, .n = n, .rem = rem, .hash = h};
    memcpy(w->mem + w->n_mem, m, (size_t)n * sizeof *m);
    w->n_mem += (size_t)n;
    for (int b = 0; b < 256; b++) w->next[(size_t)id * 256 + (size_t)b] = -2;
    w->st_tab[slot] = (struct gwslot){.id = id, .gen = w->gen};
    if ((uint32_t)w->n_st * 2 > w->st_tab_cap && st_tab_grow(w)) return -1;
    return id;
}

/* The state after byte b from state id: its id, or -1 when no stack survives (-3 on error). */
static int32_t walk_step(struct grammar_state *s, int32_t id, uint8_t b)
{
    struct gwalk *w = s->w;
    int32_t known = w->next[(size_t)id * 256 + b];
    if (known != -2) return known;
    /* compute: the state's set into the scratch arena, one byte */
    s->ar_n = 0;
    struct gwstate x = w->st[id];
    for (int32_t i = 0; i < x.n; i++) ar_push(s, w->mem[x.lo + (uint32_t)i]);
    size_t lo = 0;
    int32_t n = x.n;
    uint32_t val = x.val;
    int rem = x.rem;
    bool ok = !s->err && step_byte(s, &lo, &n, &val, &rem, b) && (n > 0 || rem > 0);
    if (s->err) return -3;
    int32_t to = ok ? state_intern(w, s->ar + lo, n, val, rem) : -1;
    if (ok && to < 0) {
        s->err = MESH_ENOMEM;
        return -3;
    }
    w->next[(size_t)id * 256 + b] = to;
    return to;
}

static void mask_node_tokens(struct grammar_state *s, const struct gtrie_node *nd, int32_t *n_allowed)
{
    for (uint32_t k = 0; k < nd->n_tok; k++) s->mask[s->v->sorted[nd->tok_lo + k]] = 1;
    *n_allowed += (int32_t)nd->n_tok;
}

/* Depth-first over the children of trie node ni from walk state id. skip: this is the root
 * and a leading space is not text (the state stays). */
static void mask_walk(struct grammar_state *s, uint32_t ni, int32_t id, bool skip, int32_t *n_allowed)
{
    const struct grammar_vocab *v = s->v;
    const struct gtrie_node nd = v->nodes[ni];
    for (uint32_t c = nd.child_lo; c < nd.child_lo + nd.n_child && !s->err; c++) {
        const struct gtrie_node *ch = &v->nodes[c];
        int32_t to = skip && ch->byte == ' ' ? id : walk_step(s, id, ch->byte);
        if (to < 0) continue;
        mask_node_tokens(s, ch, n_allowed);
        if (ch->n_child) mask_walk(s, c, to, false, n_allowed);
    }
}

static struct gmask_cache *mask_cache_find(struct grammar_state *s)
{
    for (int i = 0; i < GRAMMAR_MASK_CACHE; i++) {
        struct gmask_cache *c = &s->mc[i];
        if (c->used && c->epoch == s->epoch && c->n_set == s->n_cur && c->val == s->part_val &&
            c->rem == s->part_rem && c->skip == s->skip_space &&
            memcmp(c->set, s->cur, (size_t)s->n_cur * sizeof *s->cur) == 0)
            return c;
    }
    return NULL;
}

/* Remembers s->mask for the current state (best effort: no memory, no entry). */
static void mask_cache_put(struct grammar_state *s, int32_t n_allowed)
{
    struct gmask_cache *c = &s->mc[s->mc_next];
    s->mc_next = (s->mc_next + 1) % GRAMMAR_MASK_CACHE;
    c->used = false;
    if (!c->mask && !(c->mask = malloc((size_t)s->v->n_vocab))) return;
    if (c->cap_set < s->n_cur) {
        int32_t *set = realloc(c->set, (size_t)s->n_cur * sizeof *set);
        if (!set) return;
        c->set = set, c->cap_set = s->n_cur;
    }
    memcpy(c->set, s->cur, (size_t)s->n_cur * sizeof *s->cur);
    memcpy(c->mask, s->mask, (size_t)s->v->n_vocab);
    c->n_set = s->n_cur, c->val = s->part_val, c->rem = s->part_rem;
    c->skip = s->skip_space, c->epoch = s->epoch, c->n_allowed = n_allowed;
    c->used = true;
}

int grammar_state_mask(struct grammar_state *s, uint8_t *allowed, int32_t *n_allowed)
{
    const struct grammar_vocab *v = s->v;
    if (!v) return MESH_EINVAL;
    struct gmask_cache *hit = mask_cache_find(s);
    if (hit) {
        memcpy(s->mask, hit->mask, (size_t)v->n_vocab);
        if (allowed) memcpy(allowed, s->mask, (size_t)v->n_vocab);
        if (n_allowed) *n_allowed = hit->n_allowed;
        return 0;
    }
    if (!s->w && !(s->w = calloc(1, sizeof *s->w))) return MESH_ENOMEM;
    int32_t mark = s->pool.n, n = 0;
    memset(s->mask, 0, (size_t)v->n_vocab);
    s->err = gwalk_reset(s->w);
    int32_t root = s->err ? -1 : state_intern(s->w, s->cur, s->n_cur, s->part_val, s->part_rem);
    if (!s->err && root < 0) s->err = MESH_ENOMEM;
    if (!s->err) mask_walk(s, 0, root, s->skip_space, &n);
    pool_truncate(&s->pool, mark);
    if (s->err) return s->err;
    if (grammar_state_is_accepting(s))
        for (int32_t i = 0; i < v->n_vocab; i++)
            if (v->is_eog[i]) s->mask[i] = 1, n++;
    mask_cache_put(s, n);
    if (allowed) memcpy(allowed, s->mask, (size_t)v->n_vocab);
    if (n_allowed) *n_allowed = n;
    return 0;
}

int32_t grammar_state_apply(struct grammar_state *s, float *logits)
{
    int32_t n = 0;
    int rc = grammar_state_mask(s, NULL, &n);
    if (rc) return rc;
    for (int32_t i = 0; i < s->v->n_vocab; i++)
        if (!s->mask[i]) logits[i] = -INFINITY;
    return n;
}
