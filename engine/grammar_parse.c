/* grammar_parse.c - GBNF text -> rule table (engine/grammar_internal.h).
 *
 * Recursive descent over llama.cpp's GBNF (grammars/README.md there): rules, alternatives,
 * groups, literals with escapes, classes with ranges and negation, `.`, repetition and
 * comments. A group becomes a helper rule; `x*` becomes `r ::= x r |`, `x+` is `x x*`, `x?` is
 * `r ::= x |`, `x{m,n}` is m copies of x then n-m nested optional rules (all right-recursive,
 * as llama.cpp expands them). After parsing: every referenced rule must be defined, `root`
 * must exist, and no rule may reach itself through left positions (nullable prefixes count),
 * because the matcher would expand such a rule forever.
 * Not supported: token references (<[id]>, <name>).
 */
#include "engine/grammar.h"
#include "engine/grammar_internal.h"

#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ebuf {
    struct gram_elem *v;
    size_t n, cap;
};

struct gparser {
    const char *src, *end;
    struct ebuf *rules;     /* [n_rules] elements of each rule (empty until defined) */
    char **names;
    bool *defined;
    int n_rules, cap_rules;
    uint32_t *ref_first;    /* where each rule was first referenced (offset), for errors */
    int32_t *htab;          /* name -> rule id, open addressing, -1 empty */
    uint32_t hcap;
    size_t n_elems;         /* elements in all rules (limit) */
    char *err;
    size_t err_cap;
    int rc;
};

/* ---- errors with a position ------------------------------------------------------------ */

static void perr_at(struct gparser *p, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void perr_at(struct gparser *p, const char *at, const char *fmt, ...)
{
    if (p->rc) return;
    p->rc = MESH_EINVAL;
    if (!p->err || !p->err_cap) return;
    int line = 1, col = 1;
    for (const char *q = p->src; q < at && q < p->end; q++) {
        if (*q == '\n') line++, col = 1;
        else col++;
    }
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->err_cap, "grammar: line %d, column %d: %s", line, col, msg);
}

static void perr(struct gparser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void perr(struct gparser *p, const char *fmt, ...)
{
    if (p->rc) return;
    p->rc = MESH_EINVAL;
    if (!p->err || !p->err_cap) return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->err_cap, "grammar: %s", msg);
}

static void pnomem(struct gparser *p)
{
    if (p->rc) return;
    p->rc = MESH_ENOMEM;
    if (p->err && p->err_cap) snprintf(p->err, p->err_cap, "grammar: out of memory");
}

/* ---- element buffers and the symbol table ------------------------------------------------ */

static void ebuf_push(struct gparser *p, struct ebuf *b, uint32_t type, uint32_t value)
{
    if (p->rc) return;
    if (++p->n_elems > GRAMMAR_MAX_ELEMS) {
        perr(p, "grammar too large (more than %u elements after expanding repetitions)",
             GRAMMAR_MAX_ELEMS);
        return;
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        struct gram_elem *v = realloc(b->v, cap * sizeof *v);
        if (!v) {
            pnomem(p);
            return;
        }
        b->v = v, b->cap = cap;
    }
    b->v[b->n].type = type;
    b->v[b->n].value = value;
    b->n++;
}

static uint32_t name_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int htab_grow(struct gparser *p)
{
    uint32_t cap = p->hcap ? p->hcap * 2 : 256;
    int32_t *t = malloc(cap * sizeof *t);
    if (!t) return MESH_ENOMEM;
    for (uint32_t i = 0; i < cap; i++) t[i] = -1;
    for (uint32_t i = 0; i < p->hcap; i++) {
        int32_t id = p->htab[i];
        if (id < 0) continue;
        uint32_t h = name_hash(p->names[id], strlen(p->names[id])) & (cap - 1);
        while (t[h] >= 0) h = (h + 1) & (cap - 1);
        t[h] = id;
    }
    free(p->htab);
    p->htab = t, p->hcap = cap;
    return 0;
}

/* A new rule (named, or a helper when hashed is false). Returns its id or -1. */
static int rule_add(struct gparser *p, const char *name, size_t len, bool hashed)
{
    if (p->rc) return -1;
    if (p->n_rules == p->cap_rules) {
        int cap = p->cap_rules ? p->cap_rules * 2 : 64;
        struct ebuf *r = realloc(p->rules, (size_t)cap * sizeof *r);
        if (r) p->rules = r;
        char **nm = r ? realloc(p->names, (size_t)cap * sizeof *nm) : NULL;
        if (nm) p->names = nm;
        bool *d = nm ? realloc(p->defined, (size_t)cap * sizeof *d) : NULL;
        if (d) p->defined = d;
        uint32_t *rf = d ? realloc(p->ref_first, (size_t)cap * sizeof *rf) : NULL;
        if (rf) p->ref_first = rf;
        if (!rf) {
            pnomem(p);
            return -1;
        }
        p->cap_rules = cap;
    }
    int id = p->n_rules;
    char *nm = malloc(len + 1);
    if (!nm) {
        pnomem(p);
        return -1;
    }
    memcpy(nm, name, len);
    nm[len] = 0;
    memset(&p->rules[id], 0, sizeof p->rules[id]);
    p->names[id] = nm;
    p->defined[id] = false;
    p->ref_first[id] = 0;
    p->n_rules++;
    if (hashed) {
        if ((uint32_t)p->n_rules * 2 > p->hcap && htab_grow(p)) {
            pnomem(p);
            return -1;
        }
        uint32_t h = name_hash(name, len) & (p->hcap - 1);
        while (p->htab[h] >= 0) h = (h + 1) & (p->hcap - 1);
        p->htab[h] = id;
    }
    return id;
}

static int rule_find(struct gparser *p, const char *name, size_t len)
{
    if (!p->hcap) return -1;
    uint32_t h = name_hash(name, len) & (p->hcap - 1);
    for (int32_t id; (id = p->htab[h]) >= 0; h = (h + 1) & (p->hcap - 1))
        if (strlen(p->names[id]) == len && memcmp(p->names[id], name, len) == 0) return id;
    return -1;
}

static int rule_get(struct gparser *p, const char *name, size_t len, const char *at)
{
    int id = rule_find(p, name, len);
    if (id >= 0) return id;
    id = rule_add(p, name, len, true);
    if (id >= 0) p->ref_first[id] = (uint32_t)(at - p->src);
    return id;
}

/* A helper rule named after its parent: "value_3". */
static int rule_helper(struct gparser *p, int parent)
{
    char nm[96];
    int n = snprintf(nm, sizeof nm, "%.80s_%d", p->names[parent], p->n_rules);
    return rule_add(p, nm, (size_t)n, false);
}

/* ---- lexing ------------------------------------------------------------------------------ */

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* Skips blanks and comments; newlines too when newline_ok. */
static const char *skip_space(struct gparser *p, const char *s, bool newline_ok)
{
    while (s < p->end) {
        char c = *s;
        if (c == ' ' || c == '\t') s++;
        else if (c == '#')
            while (s < p->end && *s != '\n' && *s != '\r') s++;
        else if (newline_ok && (c == '\n' || c == '\r')) s++;
        else break;
    }
    return s;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One UTF-8 character of the source. */
static const char *decode_utf8(struct gparser *p, const char *s, uint32_t *cp)
{
    unsigned char b = (unsigned char)*s;
    int n = b < 0x80 ? 0 : (b & 0xE0) == 0xC0 ? 1 : (b & 0xF0) == 0xE0 ? 2 : (b & 0xF8) == 0xF0 ? 3 : -1;
    if (n < 0) {
        perr_at(p, s, "invalid UTF-8 byte 0x%02x", b);
        return s + 1;
    }
    uint32_t v = n == 0 ? b : (uint32_t)(b & (0x3F >> n));
    for (int i = 1; i <= n; i++) {
        if (s + i >= p->end || ((unsigned char)s[i] & 0xC0) != 0x80) {
            perr_at(p, s, "invalid UTF-8 sequence");
            return s + 1;
        }
        v = (v << 6) | ((unsigned char)s[i] & 0x3F);
    }
    *cp = v;
    return s + n + 1;
}

/* One character of a literal or class: an escape or a UTF-8 character. */
static const char *parse_char(struct gparser *p, const char *s, uint32_t *cp)
{
    *cp = 0;
    if (s >= p->end) {
        perr_at(p, s, "unexpected end of input");
        return s;
    }
    if (*s != '\\') return decode_utf8(p, s, cp);
    if (s + 1 >= p->end) {
        perr_at(p, s, "unexpected end of input after \\");
        return s + 1;
    }
    char e = s[1];
    int nhex = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
    if (nhex) {
        uint32_t v = 0;
        for (int i = 0; i < nhex; i++) {
            int h = s + 2 + i < p->end ? hexval(s[2 + i]) : -1;
            if (h < 0) {
                perr_at(p, s, "\\%c needs %d hex digits", e, nhex);
                return s + 2;
            }
            v = (v << 4) | (uint32_t)h;
        }
        if (v > 0x10FFFF) {
            perr_at(p, s, "code point U+%X is beyond U+10FFFF", v);
            return s + 2 + nhex;
        }
        *cp = v;
        return s + 2 + nhex;
    }
    switch (e) {
    case 'n': *cp = '\n'; break;
    case 'r': *cp = '\r'; break;
    case 't': *cp = '\t'; break;
    case '0': *cp = 0; break;
    case '\\': case '"': case '[': case ']': case '-': case '^': case '/': case '\'':
    case '.': case '(': case ')': case '|': case '*': case '+': case '?': case '{': case '}':
        *cp = (uint32_t)(unsigned char)e;
        break;
    default: perr_at(p, s, "unknown escape \\%c", e);
    }
    return s + 2;
}

/* ---- repetition ------------------------------------------------------------------------ */

/* Replaces the symbol at out->v[sym..] by min..max (max < 0: unbounded) repetitions of it. */
static void repeat(struct gparser *p, int rule, struct ebuf *out, size_t sym, int min, int max,
                   const char *at)
{
    if (p->rc) return;
    if (sym >= out->n) {
        perr_at(p, at, "repetition operator without a preceding item");
        return;
    }
    if (min > GRAMMAR_MAX_REPEAT || max > GRAMMAR_MAX_REPEAT) {
        perr_at(p, at, "repetition count above %d", GRAMMAR_MAX_REPEAT);
        return;
    }
    size_t n_sym = out->n - sym;
    struct gram_elem *prev = malloc(n_sym * sizeof *prev);
    if (!prev) {
        pnomem(p);
        return;
    }
    memcpy(prev, out->v + sym, n_sym * sizeof *prev);
    if (min == 0) out->n = sym, p->n_elems -= n_sym;
    for (int i = 1; i < min; i++)
        for (size_t k = 0; k < n_sym; k++) ebuf_push(p, out, prev[k].type, prev[k].value);
    if (max < 0) {
        /* r ::= prev r | */
        int r = rule_helper(p, rule);
        if (r >= 0) {
            struct ebuf *b = &p->rules[r];
            for (size_t k = 0; k < n_sym; k++) ebuf_push(p, b, prev[k].type, prev[k].value);
            ebuf_push(p, b, GRAM_REF, (uint32_t)r);
            ebuf_push(p, b, GRAM_ALT, 0);
            ebuf_push(p, b, GRAM_END, 0);
            p->defined[r] = true;
            ebuf_push(p, out, GRAM_REF, (uint32_t)r);
        }
    } else if (max > min) {
        /* r_1 ::= prev r_2 | ; ... ; r_k ::= prev | */
        int k_opt = max - min, first = -1, last = -1;
        for (int i = 0; i < k_opt && !p->rc; i++) {
            int r = rule_helper(p, rule);
            if (r < 0) break;
            if (first < 0) first = r;
            if (last >= 0) {
                struct ebuf *lb = &p->rules[last];
                ebuf_push(p, lb, GRAM_REF, (uint32_t)r);
                ebuf_push(p, lb, GRAM_ALT, 0);
                ebuf_push(p, lb, GRAM_END, 0);
            }
            struct ebuf *b = &p->rules[r];
            for (size_t k = 0; k < n_sym; k++) ebuf_push(p, b, prev[k].type, prev[k].value);
            p->defined[r] = true;
            last = r;
        }
        if (last >= 0) {
            ebuf_push(p, &p->rules[last], GRAM_ALT, 0);
            ebuf_push(p, &p->rules[last], GRAM_END, 0);
            ebuf_push(p, out, GRAM_REF, (uint32_t)first);
        }
    }
    free(prev);
}

static const char *parse_int(struct gparser *p, const char *s, int *v)
{
    const char *s0 = s;
    long x = 0;
    while (s < p->end && *s >= '0' && *s <= '9') {
        x = x * 10 + (*s - '0');
        if (x > GRAMMAR_MAX_REPEAT) x = GRAMMAR_MAX_REPEAT + 1;
        s++;
    }
    if (s == s0) perr_at(p, s, "expecting a number");
    *v = (int)x;
    return s;
}

/* ---- sequences and alternatives ----------------------------------------------------------- */

static const char *parse_alternates(struct gparser *p, const char *s, int rule, bool nested);

static const char *parse_literal(struct gparser *p, const char *s, struct ebuf *out, bool nested)
{
    s++;
    while (!p->rc && s < p->end && *s != '"') {
        uint32_t cp;
        s = parse_char(p, s, &cp);
        ebuf_push(p, out, GRAM_CHAR, cp);
    }
    if (s >= p->end) perr_at(p, s, "unterminated string literal");
    return p->rc ? s : skip_space(p, s + 1, nested);
}

static const char *parse_class(struct gparser *p, const char *s, struct ebuf *out, bool nested)
{
    const char *at = s;
    s++;
    uint32_t first_type = GRAM_CHAR;
    if (s < p->end && *s == '^') first_type = GRAM_CHAR_NOT, s++;
    size_t start = out->n;
    while (!p->rc && s < p->end && *s != ']') {
        uint32_t lo, hi;
        s = parse_char(p, s, &lo);
        ebuf_push(p, out, out->n > start ? GRAM_CHAR_ALT : first_type, lo);
        if (s + 1 < p->end && *s == '-' && s[1] != ']') {
            s = parse_char(p, s + 1, &hi);
            if (!p->rc && hi < lo) perr_at(p, s, "range U+%X-U+%X is reversed", lo, hi);
            ebuf_push(p, out, GRAM_RNG_UPPER, hi);
        }
    }
    if (p->rc) return s;
    if (s >= p->end) perr_at(p, at, "unterminated character class");
    else if (out->n == start) perr_at(p, at, "empty character class");
    return p->rc ? s : skip_space(p, s + 1, nested);
}

static const char *parse_sequence(struct gparser *p, const char *s, int rule, struct ebuf *out,
                                  bool nested)
{
    size_t sym = out->n;
    while (!p->rc && s < p->end) {
        char c = *s;
        if (c == '"') {
            sym = out->n;
            s = parse_literal(p, s, out, nested);
        } else if (c == '[') {
            sym = out->n;
            s = parse_class(p, s, out, nested);
        } else if (is_name_char(c)) {
            const char *n0 = s;
            while (s < p->end && is_name_char(*s)) s++;
            const char *q = skip_space(p, s, true);
            if (q + 2 < p->end && memcmp(q, "::=", 3) == 0) {
                perr_at(p, n0, "rule '%.*s' starts before the previous one ended (missing ')'?)",
                        (int)(s - n0), n0);
                break;
            }
            int id = rule_get(p, n0, (size_t)(s - n0), n0);
            sym = out->n;
            ebuf_push(p, out, GRAM_REF, (uint32_t)id);
            s = skip_space(p, s, nested);
        } else if (c == '(') {
            const char *at = s;
            int sub = rule_helper(p, rule);
            if (sub < 0) break;
            s = parse_alternates(p, skip_space(p, s + 1, true), sub, true);
            if (p->rc) break;
            if (s >= p->end || *s != ')') {
                perr_at(p, at, "'(' without a matching ')'");
                break;
            }
            sym = out->n;
            ebuf_push(p, out, GRAM_REF, (uint32_t)sub);
            s = skip_space(p, s + 1, nested);
        } else if (c == '.') {
            sym = out->n;
            ebuf_push(p, out, GRAM_CHAR_ANY, 0);
            s = skip_space(p, s + 1, nested);
        } else if (c == '*' || c == '+' || c == '?') {
            repeat(p, rule, out, sym, c == '+', c == '?' ? 1 : -1, s);
            s = skip_space(p, s + 1, nested);
        } else if (c == '{') {
            const char *at = s;
            int min = 0, max;
            s = parse_int(p, skip_space(p, s + 1, nested), &min);
            s = skip_space(p, s, nested);
            max = min;
            if (!p->rc && s < p->end && *s == ',') {
                s = skip_space(p, s + 1, nested);
                max = -1;
                if (s < p->end && *s >= '0' && *s <= '9') s = parse_int(p, s, &max);
                s = skip_space(p, s, nested);
            }
            if (p->rc) break;
            if (s >= p->end || *s != '}') {
                perr_at(p, at, "expecting '}' to close the repetition");
                break;
            }
            if (max >= 0 && max < min) {
                perr_at(p, at, "repetition {%d,%d}: the maximum is below the minimum", min, max);
                break;
            }
            repeat(p, rule, out, sym, min, max, at);
            s = skip_space(p, s + 1, nested);
        } else {
            break;
        }
    }
    return s;
}

static const char *parse_alternates(struct gparser *p, const char *s, int rule, bool nested)
{
    struct ebuf b = {0};
    s = parse_sequence(p, s, rule, &b, nested);
    for (;;) {
        if (p->rc) break;
        const char *q = nested ? s : skip_space(p, s, true);
        if (q >= p->end || *q != '|') break;
        ebuf_push(p, &b, GRAM_ALT, 0);
        s = parse_sequence(p, skip_space(p, q + 1, true), rule, &b, nested);
    }
    ebuf_push(p, &b, GRAM_END, 0);
    if (p->rc) {
        free(b.v);
        return s;
    }
    free(p->rules[rule].v);
    p->rules[rule] = b;
    p->defined[rule] = true;
    return s;
}

static const char *parse_rule(struct gparser *p, const char *s)
{
    const char *n0 = s;
    while (s < p->end && is_name_char(*s)) s++;
    if (s == n0) {
        perr_at(p, s, "expecting a rule name");
        return s;
    }
    int id = rule_get(p, n0, (size_t)(s - n0), n0);
    if (id < 0) return s;
    if (p->defined[id]) {
        perr_at(p, n0, "rule '%.*s' is defined twice", (int)(s - n0), n0);
        return s;
    }
    s = skip_space(p, s, false);
    if (s + 2 >= p->end || memcmp(s, "::=", 3) != 0) {
        perr_at(p, s, "expecting ::= after the rule name '%.*s'", (int)(s - n0 > 60 ? 60 : s - n0), n0);
        return s;
    }
    s = parse_alternates(p, skip_space(p, s + 3, true), id, false);
    if (p->rc) return s;
    if (s < p->end && *s == '\r') s++;
    if (s < p->end && *s != '\n') perr_at(p, s, "unexpected '%c' (expecting the end of the rule)", *s);
    return s;
}

/* ---- checks and the final table ---------------------------------------------------------- */

static bool rule_nullable_now(const struct grammar *g, int r, const bool *nullable)
{
    for (uint32_t a = g->alt_lo[r]; a < g->alt_lo[r + 1]; a++) {
        uint32_t i = g->alts[a];
        while (g->elems[i].type == GRAM_REF && nullable[g->elems[i].value]) i++;
        if (gram_is_end(g->elems[i].type)) return true;
    }
    return false;
}

/* Left recursion: a rule that reaches itself through left positions (skipping nullable
 * references) would make the matcher expand forever. Iterative DFS, colours 0/1/2. */
static int check_left_recursion(const struct grammar *g, char *err, size_t err_cap)
{
    int n = g->n_rules, rc = 0;
    bool *nullable = calloc((size_t)n, sizeof *nullable);
    uint8_t *colour = calloc((size_t)n, 1);
    uint32_t *st_rule = malloc((size_t)n * sizeof *st_rule), *st_alt = malloc((size_t)n * sizeof *st_alt);
    uint32_t *st_el = malloc((size_t)n * sizeof *st_el);
    if (!nullable || !colour || !st_rule || !st_alt || !st_el) {
        rc = MESH_ENOMEM;
        goto done;
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (int r = 0; r < n; r++)
            if (!nullable[r] && rule_nullable_now(g, r, nullable)) nullable[r] = changed = true;
    }
    for (int r0 = 0; r0 < n && !rc; r0++) {
        if (colour[r0]) continue;
        int sp = 0;
        st_rule[0] = (uint32_t)r0, st_alt[0] = g->alt_lo[r0], st_el[0] = g->alts[g->alt_lo[r0]];
        colour[r0] = 1;
        while (sp >= 0) {
            uint32_t r = st_rule[sp];
            if (st_alt[sp] >= g->alt_lo[r + 1]) {
                colour[r] = 2, sp--;
                continue;
            }
            const struct gram_elem *e = &g->elems[st_el[sp]];
            if (e->type != GRAM_REF) { /* this alternative's left positions are done */
                if (++st_alt[sp] < g->alt_lo[r + 1]) st_el[sp] = g->alts[st_alt[sp]];
                continue;
            }
            uint32_t s = e->value;
            /* next left position of this alternative, if the reference is nullable */
            if (nullable[s]) st_el[sp]++;
            else if (++st_alt[sp] < g->alt_lo[r + 1]) st_el[sp] = g->alts[st_alt[sp]];
            if (colour[s] == 1) {
                rc = err_set(err, err_cap, MESH_EINVAL,
                             "grammar: rule '%s' is left-recursive (it can reach itself before "
                             "reading any character); rewrite it with repetition, e.g. "
                             "expr ::= term (\"+\" term)*", g->names[s]);
                break;
            }
            if (colour[s] == 0) {
                colour[s] = 1, sp++;
                st_rule[sp] = s, st_alt[sp] = g->alt_lo[s], st_el[sp] = g->alts[g->alt_lo[s]];
            }
        }
    }
done:
    free(st_el);
    free(st_alt);
    free(st_rule);
    free(colour);
    free(nullable);
    return rc;
}

static int build_table(struct gparser *p, struct grammar *g)
{
    g->n_rules = p->n_rules;
    g->names = p->names;
    p->names = NULL;
    size_t n = 0, n_alts = 0;
    for (int r = 0; r < p->n_rules; r++) {
        n += p->rules[r].n;
        for (size_t i = 0; i < p->rules[r].n; i++) n_alts += gram_is_end(p->rules[r].v[i].type);
    }
    g->elems = malloc((n + 1) * sizeof *g->elems);
    g->rule_start = malloc((size_t)p->n_rules * sizeof *g->rule_start);
    g->alt_lo = malloc(((size_t)p->n_rules + 1) * sizeof *g->alt_lo);
    g->alts = malloc((n_alts + 1) * sizeof *g->alts);
    if (!g->elems || !g->rule_start || !g->alt_lo || !g->alts) return MESH_ENOMEM;
    uint32_t k = 0, a = 0;
    for (int r = 0; r < p->n_rules; r++) {
        g->rule_start[r] = k;
        g->alt_lo[r] = a;
        g->alts[a++] = k;
        for (size_t i = 0; i < p->rules[r].n; i++) {
            g->elems[k++] = p->rules[r].v[i];
            if (p->rules[r].v[i].type == GRAM_ALT) g->alts[a++] = k;
        }
    }
    g->alt_lo[p->n_rules] = a;
    g->n_elems = k;
    return 0;
}

int grammar_parse(const char *text, size_t len, struct grammar **out, char *err, size_t err_cap)
{
    *out = NULL;
    if (err && err_cap) err[0] = 0;
    if (!text) return err_set(err, err_cap, MESH_EINVAL, "grammar: no text");
    if (len > GRAMMAR_MAX_TEXT)
        return err_set(err, err_cap, MESH_EINVAL, "grammar: text longer than %u bytes",
                       GRAMMAR_MAX_TEXT);
    struct gparser p = {.src = text, .end = text + len, .err = err, .err_cap = err_cap};
    struct grammar *g = calloc(1, sizeof *g);
    if (!g) return MESH_ENOMEM;
    const char *s = skip_space(&p, text, true);
    while (!p.rc && s < p.end) {
        s = parse_rule(&p, s);
        s = skip_space(&p, s, true);
    }
    int rc = p.rc;
    for (int r = 0; !rc && r < p.n_rules; r++)
        if (!p.defined[r]) {
            const char *at = text + p.ref_first[r];
            perr_at(&p, at, "undefined rule '%s'", p.names[r]);
            rc = p.rc;
        }
    g->root = rc ? -1 : rule_find(&p, "root", 4);
    if (!rc && g->root < 0) rc = err_set(err, err_cap, MESH_EINVAL, "grammar: no rule named 'root'");
    if (!rc) rc = build_table(&p, g);
    if (!rc) rc = check_left_recursion(g, err, err_cap);
    if (rc == MESH_ENOMEM && err && err_cap) snprintf(err, err_cap, "grammar: out of memory");
    for (int r = 0; r < p.n_rules; r++) {
        free(p.rules[r].v);
        if (p.names) free(p.names[r]);
    }
    free(p.rules);
    free(p.names);
    free(p.defined);
    free(p.ref_first);
    free(p.htab);
    if (rc) {
        if (!g->names) g->n_rules = 0;
        grammar_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

void grammar_free(struct grammar *g)
{
    if (!g) return;
    if (g->names)
        for (int r = 0; r < g->n_rules; r++) free(g->names[r]);
    free(g->names);
    free(g->elems);
    free(g->rule_start);
    free(g->alt_lo);
    free(g->alts);
    free(g);
}

int grammar_n_rules(const struct grammar *g) { return g ? g->n_rules : 0; }
