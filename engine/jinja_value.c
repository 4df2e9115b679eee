/* jinja_value.c - the Jinja interpreter's arena, values and their text forms.
 *
 * Text forms follow Python, since jinja2 prints values with str(): None, True, 1.0,
 * ['a', 'b'], {'k': 1}; repr() quotes strings as Python does (single quotes unless the
 * text holds ' and no "). JSON output is json.dumps(ensure_ascii=False, sort_keys=False)
 * as Hugging Face's tojson calls it; JSON input keeps ints and floats apart as json.loads.
 * Not done: Python's repr escapes of non-printable non-ASCII code points (kept as is).
 */
#include "engine/jinja_internal.h"

#include "core/err.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---------------------------------------------------------------------------- */

struct jarena_chunk {
    struct jarena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *jarena_alloc(struct jarena *a, size_t n)
{
    if (a->rc) return NULL;
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (a->limit && (n > a->limit || a->used_total > a->limit - n)) {
        a->rc = MESH_ERANGE;
        return NULL;
    }
    struct jarena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 60000 ? n : 65536 - sizeof *c;
        c = malloc(sizeof *c + cap);
        if (!c) {
            a->rc = MESH_ENOMEM;
            return NULL;
        }
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used_total += n;
    memset(p, 0, n);
    return p;
}

char *jarena_strdup(struct jarena *a, const char *s, size_t n)
{
    char *p = jarena_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void jarena_free(struct jarena *a)
{
    struct jarena_chunk *c = a->head;
    while (c) {
        struct jarena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used_total = 0;
}

/* ---- values --------------------------------------------------------------------------- */

struct jv jv_str_copy(struct jarena *a, const char *p, size_t n)
{
    char *d = jarena_strdup(a, p, n);
    return d ? jv_strn(d, n) : jv_strn("", 0);
}

struct jv jv_list_new(struct jarena *a, size_t cap)
{
    struct jv v = {.kind = JV_LIST};
    v.u.list = jarena_alloc(a, sizeof *v.u.list);
    if (!v.u.list) return jv_none();
    if (cap) {
        v.u.list->v = jarena_alloc(a, cap * sizeof(struct jv));
        v.u.list->cap = v.u.list->v ? cap : 0;
    }
    return v;
}

struct jv jv_dict_new(struct jarena *a)
{
    struct jv v = {.kind = JV_DICT};
    v.u.dict = jarena_alloc(a, sizeof *v.u.dict);
    return v.u.dict ? v : jv_none();
}

int jv_list_push(struct jarena *a, struct jlist *l, struct jv x)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct jv *nv = jarena_alloc(a, cap * sizeof *nv);
        if (!nv) return a->rc;
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return 0;
}

struct jv *jv_dict_find(const struct jdict *d, struct jv key)
{
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->keys[i], key)) return &d->vals[i];
    return NULL;
}

struct jv *jv_dict_get(const struct jdict *d, const char *key, size_t len)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct jv *k = &d->keys[i];
        if (k->kind == JV_STR && k->u.s.len == len && !memcmp(k->u.s.p, key, len))
            return &d->vals[i];
    }
    return NULL;
}

int jv_dict_set(struct jarena *a, struct jdict *d, struct jv k, struct jv x)
{
    struct jv *have = jv_dict_find(d, k);
    if (have) {
        *have = x;
        return 0;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        struct jv *nk = jarena_alloc(a, cap * sizeof *nk), *nv = jarena_alloc(a, cap * sizeof *nv);
        if (!nk || !nv) return a->rc;
        if (d->n) {
            memcpy(nk, d->keys, d->n * sizeof *nk);
            memcpy(nv, d->vals, d->n * sizeof *nv);
        }
        d->keys = nk;
        d->vals = nv;
        d->cap = cap;
    }
    d->keys[d->n] = k;
    d->vals[d->n++] = x;
    return 0;
}

bool jv_is_number(struct jv v)
{
    return v.kind == JV_INT || v.kind == JV_FLOAT || v.kind == JV_BOOL;
}

double jv_num(struct jv v)
{
    return v.kind == JV_FLOAT ? v.u.f : v.kind == JV_INT ? (double)v.u.i : v.kind == JV_BOOL ? v.u.b : 0;
}

bool jv_truthy(struct jv v)
{
    switch (v.kind) {
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return v.u.s.len > 0;
    case JV_LIST: return v.is_gen || v.u.list->n > 0;
    case JV_DICT: return v.is_ns || v.u.dict->n > 0;
    case JV_UNDEF:
    case JV_NONE: return false;
    default: return true;
    }
}

bool jv_equal(struct jv a, struct jv b)
{
    if (jv_is_number(a) && jv_is_number(b)) {
        if (a.kind != JV_FLOAT && b.kind != JV_FLOAT)
            return (a.kind == JV_INT ? a.u.i : a.u.b) == (b.kind == JV_INT ? b.u.i : b.u.b);
        return jv_num(a) == jv_num(b);
    }
    if (a.kind != b.kind) return false;
    switch (a.kind) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a.u.s.len == b.u.s.len && !memcmp(a.u.s.p, b.u.s.p, a.u.s.len);
    case JV_LIST:
        if (a.u.list->n != b.u.list->n) return false;
        for (size_t i = 0; i < a.u.list->n; i++)
            if (!jv_equal(a.u.list->v[i], b.u.list->v[i])) return false;
        return true;
    case JV_DICT:
        if (a.u.dict->n != b.u.dict->n) return false;
        for (size_t i = 0; i < a.u.dict->n; i++) {
            struct jv *o = jv_dict_find(b.u.dict, a.u.dict->keys[i]);
            if (!o || !jv_equal(a.u.dict->vals[i], *o)) return false;
        }
        return true;
    case JV_MACRO: return a.u.macro == b.u.macro;
    case JV_FUNC: return a.u.func == b.u.func;
    default: return false;
    }
}

int jv_compare(struct jv a, struct jv b, bool *ok)
{
    *ok = true;
    if (jv_is_number(a) && jv_is_number(b)) {
        if (a.kind == JV_INT && b.kind == JV_INT) return (a.u.i > b.u.i) - (a.u.i < b.u.i);
        double x = jv_num(a), y = jv_num(b);
        return (x > y) - (x < y);
    }
    if (a.kind == JV_STR && b.kind == JV_STR) {
        size_t n = a.u.s.len < b.u.s.len ? a.u.s.len : b.u.s.len;
        int c = n ? memcmp(a.u.s.p, b.u.s.p, n) : 0; /* UTF-8 bytes order as code points */
        if (c) return c < 0 ? -1 : 1;
        return (a.u.s.len > b.u.s.len) - (a.u.s.len < b.u.s.len);
    }
    if (a.kind == JV_LIST && b.kind == JV_LIST) {
        size_t n = a.u.list->n < b.u.list->n ? a.u.list->n : b.u.list->n;
        for (size_t i = 0; i < n; i++) {
            if (jv_equal(a.u.list->v[i], b.u.list->v[i])) continue;
            return jv_compare(a.u.list->v[i], b.u.list->v[i], ok);
        }
        return (a.u.list->n > b.u.list->n) - (a.u.list->n < b.u.list->n);
    }
    *ok = false;
    return 0;
}

const char *jv_type_name(struct jv v)
{
    static const char *const names[] = {"undefined", "NoneType", "bool", "int", "float", "str",
                                        "list", "dict", "macro", "method", "LoopContext", "function"};
    if (v.kind == JV_DICT && v.is_ns) return "Namespace";
    return v.kind < sizeof names / sizeof names[0] ? names[v.kind] : "?";
}

/* ---- output buffer -------------------------------------------------------------------- */

void jbuf_add(struct jbuf *b, const char *s, size_t n)
{
    if (b->rc || n == 0) return;
    size_t max = b->max ? b->max : (size_t)16 << 20;
    if (n > max || b->len > max - n) {
        b->rc = MESH_ERANGE;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->rc = MESH_ENOMEM;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void jbuf_addc(struct jbuf *b, char c)
{
    jbuf_add(b, &c, 1);
}

void jbuf_addf(struct jbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) jbuf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- Python text forms ---------------------------------------------------------------- */

void jv_write_float(struct jbuf *b, double f)
{
    if (isnan(f)) {
        jbuf_add(b, "nan", 3);
        return;
    }
    if (isinf(f)) {
        jbuf_add(b, f < 0 ? "-inf" : "inf", f < 0 ? 4 : 3);
        return;
    }
    /* shortest digits that read back as f, then Python's repr layout */
    char e[40];
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    char digits[24];
    int nd = 0;
    const char *p = e;
    bool neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (neg) jbuf_addc(b, '-');
    if (exp10 >= -5 + 1 && exp10 < 16) {
        if (exp10 < 0) {
            jbuf_add(b, "0.", 2);
            for (int i = 0; i < -exp10 - 1; i++) jbuf_addc(b, '0');
            jbuf_add(b, digits, (size_t)nd);
        } else {
            for (int i = 0; i <= exp10; i++) jbuf_addc(b, i < nd ? digits[i] : '0');
            jbuf_addc(b, '.');
            if (nd > exp10 + 1) jbuf_add(b, digits + exp10 + 1, (size_t)(nd - exp10 - 1));
            else jbuf_addc(b, '0');
        }
        return;
    }
    jbuf_addc(b, digits[0]);
    if (nd > 1) {
        jbuf_addc(b, '.');
        jbuf_add(b, digits + 1, (size_t)(nd - 1));
    }
    jbuf_addf(b, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
}

static void write_repr_str(struct jbuf *b, const char *s, size_t n)
{
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jbuf_addc(b, q);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == (unsigned char)q || c == '\\') {
            jbuf_addc(b, '\\');
            jbuf_addc(b, (char)c);
        } else if (c == '\n') jbuf_add(b, "\\n", 2);
        else if (c == '\r') jbuf_add(b, "\\r", 2);
        else if (c == '\t') jbuf_add(b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f) jbuf_addf(b, "\\x%02x", c);
        else jbuf_addc(b, (char)c);
    }
    jbuf_addc(b, q);
}

void jv_write_repr(struct jbuf *b, struct jv v)
{
    switch (v.kind) {
    case JV_STR: write_repr_str(b, v.u.s.p, v.u.s.len); return;
    case JV_LIST:
        if (v.is_gen) {
            jbuf_add(b, "<generator object>", 18);
            return;
        }
        jbuf_addc(b, v.is_tuple ? '(' : '[');
        for (size_t i = 0; i < v.u.list->n; i++) {
            if (i) jbuf_add(b, ", ", 2);
            jv_write_repr(b, v.u.list->v[i]);
        }
        if (v.is_tuple && v.u.list->n == 1) jbuf_addc(b, ',');
        jbuf_addc(b, v.is_tuple ? ')' : ']');
        return;
    case JV_DICT:
        if (v.is_ns) {
            jbuf_add(b, "<Namespace ", 11);
        }
        jbuf_addc(b, '{');
        for (size_t i = 0; i < v.u.dict->n; i++) {
            if (i) jbuf_add(b, ", ", 2);
            jv_write_repr(b, v.u.dict->keys[i]);
            jbuf_add(b, ": ", 2);
            jv_write_repr(b, v.u.dict->vals[i]);
        }
        jbuf_addc(b, '}');
        if (v.is_ns) jbuf_addc(b, '>');
        return;
    default: jv_write_str(b, v);
    }
}

void jv_write_str(struct jbuf *b, struct jv v)
{
    switch (v.kind) {
    case JV_UNDEF: return;
    case JV_NONE: jbuf_add(b, "None", 4); return;
    case JV_BOOL: jbuf_add(b, v.u.b ? "True" : "False", v.u.b ? 4 : 5); return;
    case JV_INT: jbuf_addf(b, "%lld", (long long)v.u.i); return;
    case JV_FLOAT: jv_write_float(b, v.u.f); return;
    case JV_STR: jbuf_add(b, v.u.s.p, v.u.s.len); return;
    case JV_LIST:
    case JV_DICT: jv_write_repr(b, v); return;
    case JV_MACRO:
        jbuf_addf(b, "<Macro '%s'>", v.u.macro->node->name ? v.u.macro->node->name : "caller");
        return;
    case JV_METHOD: jbuf_addf(b, "<built-in method %s>", v.u.method->name); return;
    case JV_LOOP: jbuf_add(b, "<LoopContext>", 13); return;
    default: jbuf_add(b, "<function>", 10); return;
    }
}

/* ---- JSON ----------------------------------------------------------------------------- */

/* Next code point of UTF-8 s[*i..n) (a bad byte stands for itself). */
static uint32_t utf8_next(const char *s, size_t n, size_t *i)
{
    unsigned char c = (unsigned char)s[*i];
    int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    if (*i + (size_t)len > n) len = 1;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; k < len; k++) {
        unsigned char cc = (unsigned char)s[*i + (size_t)k];
        if ((cc & 0xC0) != 0x80) {
            len = 1;
            cp = c;
            break;
        }
        cp = cp << 6 | (cc & 0x3F);
    }
    *i += (size_t)len;
    return cp;
}

static void write_json_str(struct jbuf *b, const char *s, size_t n, bool ascii)
{
    jbuf_addc(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && (c < 0x80 || !ascii)) {
            i++;
            continue;
        }
        jbuf_add(b, s + run, i - run);
        if (c >= 0x80) { /* ensure_ascii: \uXXXX, surrogate pairs above the BMP */
            uint32_t cp = utf8_next(s, n, &i);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                jbuf_addf(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
            } else {
                jbuf_addf(b, "\\u%04x", cp);
            }
            run = i;
            continue;
        }
        i++;
        run = i;
        switch (c) {
        case '"': jbuf_add(b, "\\\"", 2); break;
        case '\\': jbuf_add(b, "\\\\", 2); break;
        case '\n': jbuf_add(b, "\\n", 2); break;
        case '\r': jbuf_add(b, "\\r", 2); break;
        case '\t': jbuf_add(b, "\\t", 2); break;
        case '\b': jbuf_add(b, "\\b", 2); break;
        case '\f': jbuf_add(b, "\\f", 2); break;
        default: jbuf_addf(b, "\\u%04x", c);
        }
    }
    jbuf_add(b, s + run, n - run);
    jbuf_addc(b, '"');
}

static void json_newline(struct jbuf *b, const struct jjson_opts *o, int depth)
{
    jbuf_addc(b, '\n');
    for (int i = 0; i < depth; i++) jbuf_add(b, o->indent_str, o->indent_len);
}

void jjson_opts_init(struct jjson_opts *o)
{
    memset(o, 0, sizeof *o);
    o->item_sep = ", ";
    o->key_sep = ": ";
}

/* Key order for sort_keys: string keys by code point (UTF-8 bytes). */
static int key_cmp(struct jv a, struct jv b)
{
    bool ok;
    int c = jv_compare(a, b, &ok);
    return ok ? c : (int)a.kind - (int)b.kind;
}

int jv_write_json(struct jbuf *b, struct jv v, const struct jjson_opts *o, int depth)
{
    if (depth > 200) return MESH_EINVAL;
    bool ind = o->indent_str != NULL;
    switch (v.kind) {
    case JV_NONE: jbuf_add(b, "null", 4); return 0;
    case JV_BOOL: jbuf_add(b, v.u.b ? "true" : "false", v.u.b ? 4 : 5); return 0;
    case JV_INT: jbuf_addf(b, "%lld", (long long)v.u.i); return 0;
    case JV_FLOAT:
        if (isnan(v.u.f)) jbuf_add(b, "NaN", 3);
        else if (isinf(v.u.f)) jbuf_add(b, v.u.f < 0 ? "-Infinity" : "Infinity", v.u.f < 0 ? 9 : 8);
        else jv_write_float(b, v.u.f);
        return 0;
    case JV_STR: write_json_str(b, v.u.s.p, v.u.s.len, o->ensure_ascii); return 0;
    case JV_LIST: {
        if (v.is_gen) return MESH_EINVAL; /* json.dumps cannot take a generator */
        if (v.u.list->n == 0) {
            jbuf_add(b, "[]", 2);
            return 0;
        }
        jbuf_addc(b, '[');
        for (size_t i = 0; i < v.u.list->n; i++) {
            if (i) jbuf_add(b, o->item_sep, strlen(o->item_sep));
            if (ind) json_newline(b, o, depth + 1);
            int rc = jv_write_json(b, v.u.list->v[i], o, depth + 1);
            if (rc) return rc;
        }
        if (ind) json_newline(b, o, depth);
        jbuf_addc(b, ']');
        return 0;
    }
    case JV_DICT: {
        size_t n = v.u.dict->n;
        if (n == 0) {
            jbuf_add(b, "{}", 2);
            return 0;
        }
        size_t order_small[64], *order = n <= 64 ? order_small : malloc(n * sizeof *order);
        if (!order) return MESH_ENOMEM;
        for (size_t i = 0; i < n; i++) order[i] = i;
        for (size_t i = 1; o->sort_keys && i < n; i++) { /* stable insertion sort */
            size_t x = order[i], j = i;
            while (j > 0 && key_cmp(v.u.dict->keys[order[j - 1]], v.u.dict->keys[x]) > 0) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = x;
        }
        int rc = 0;
        jbuf_addc(b, '{');
        for (size_t i = 0; i < n && !rc; i++) {
            if (i) jbuf_add(b, o->item_sep, strlen(o->item_sep));
            if (ind) json_newline(b, o, depth + 1);
            struct jv k = v.u.dict->keys[order[i]];
            if (k.kind == JV_STR) {
                write_json_str(b, k.u.s.p, k.u.s.len, o->ensure_ascii);
            } else { /* json.dumps turns int/float/bool/None keys into strings */
                struct jbuf kb = {0};
                if (k.kind == JV_BOOL || k.kind == JV_NONE) jv_write_json(&kb, k, o, 0);
                else jv_write_str(&kb, k);
                write_json_str(b, kb.p ? kb.p : "", kb.len, o->ensure_ascii);
                free(kb.p);
            }
            jbuf_add(b, o->key_sep, strlen(o->key_sep));
            rc = jv_write_json(b, v.u.dict->vals[order[i]], o, depth + 1);
        }
        if (order != order_small) free(order);
        if (rc) return rc;
        if (ind) json_newline(b, o, depth);
        jbuf_addc(b, '}');
        return 0;
    }
    default: return MESH_EINVAL;
    }
}

struct jparse {
    struct jarena *a;
    const char *s, *end;
    char *err;
    size_t err_cap;
    int rc;
};

static void jp_ws(struct jparse *P)
{
    while (P->s < P->end && (*P->s == ' ' || *P->s == '\t' || *P->s == '\n' || *P->s == '\r')) P->s++;
}

static int jp_fail(struct jparse *P, const char *what)
{
    if (!P->rc) P->rc = err_set(P->err, P->err_cap, MESH_EINVAL, "JSON: %s", what);
    return P->rc;
}

static void put_utf8(struct jbuf *b, uint32_t cp)
{
    char u[4];
    if (cp < 0x80) jbuf_addc(b, (char)cp);
    else if (cp < 0x800) {
        u[0] = (char)(0xC0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 63));
        jbuf_add(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12);
        u[1] = (char)(0x80 | (cp >> 6 & 63));
        u[2] = (char)(0x80 | (cp & 63));
        jbuf_add(b, u, 3);
    } else {
        u[0] = (char)(0xF0 | cp >> 18);
        u[1] = (char)(0x80 | (cp >> 12 & 63));
        u[2] = (char)(0x80 | (cp >> 6 & 63));
        u[3] = (char)(0x80 | (cp & 63));
        jbuf_add(b, u, 4);
    }
}

static int hex4(const char *p, const char *end, uint32_t *out)
{
    if (end - p < 4) return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + (uint32_t)d;
    }
    *out = v;
    return 0;
}

static struct jv jp_string(struct jparse *P)
{
    struct jbuf b = {0};
    P->s++; /* opening quote */
    while (P->s < P->end && *P->s != '"') {
        unsigned char c = (unsigned char)*P->s++;
        if (c < 0x20) {
            jp_fail(P, "control character in a string");
            break;
        }
        if (c != '\\') {
            jbuf_addc(&b, (char)c);
            continue;
        }
        if (P->s >= P->end) break;
        char e = *P->s++;
        uint32_t cp = 0;
        switch (e) {
        case 'n': jbuf_addc(&b, '\n'); break;
        case 't': jbuf_addc(&b, '\t'); break;
        case 'r': jbuf_addc(&b, '\r'); break;
        case 'b': jbuf_addc(&b, '\b'); break;
        case 'f': jbuf_addc(&b, '\f'); break;
        case '/': case '\\': case '"': jbuf_addc(&b, e); break;
        case 'u':
            if (hex4(P->s, P->end, &cp)) {
                jp_fail(P, "bad \\u escape");
                break;
            }
            P->s += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                uint32_t lo;
                if (P->end - P->s >= 6 && P->s[0] == '\\' && P->s[1] == 'u' &&
                    !hex4(P->s + 2, P->end, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    P->s += 6;
                } else {
                    cp = 0xFFFD;
                }
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                cp = 0xFFFD;
            }
            put_utf8(&b, cp);
            break;
        default: jp_fail(P, "bad escape in a string");
        }
        if (P->rc) break;
    }
    struct jv v = jv_strn("", 0);
    if (!P->rc && P->s >= P->end) jp_fail(P, "unterminated string");
    else if (!P->rc) P->s++;
    if (b.rc && !P->rc) P->rc = b.rc;
    if (!P->rc) v = jv_str_copy(P->a, b.p ? b.p : "", b.len);
    free(b.p);
    return v;
}

static struct jv jp_value(struct jparse *P, int depth);

static struct jv jp_number(struct jparse *P)
{
    const char *st = P->s;
    bool is_float = false;
    if (P->s < P->end && *P->s == '-') P->s++;
    while (P->s < P->end && ((*P->s >= '0' && *P->s <= '9') || *P->s == '.' || *P->s == 'e' ||
                             *P->s == 'E' || *P->s == '+' || *P->s == '-')) {
        if (*P->s == '.' || *P->s == 'e' || *P->s == 'E') is_float = true;
        P->s++;
    }
    char tmp[64];
    size_t n = (size_t)(P->s - st);
    if (n == 0 || n >= sizeof tmp) {
        jp_fail(P, "bad number");
        return jv_none();
    }
    memcpy(tmp, st, n);
    tmp[n] = 0;
    char *e;
    if (!is_float) {
        long long i = strtoll(tmp, &e, 10);
        if (*e == 0 && !(i == LLONG_MAX || i == LLONG_MIN)) return jv_int(i);
    }
    double f = strtod(tmp, &e);
    if (*e) jp_fail(P, "bad number");
    return jv_float(f);
}

static struct jv jp_container(struct jparse *P, int depth)
{
    bool is_obj = *P->s == '{';
    char close = is_obj ? '}' : ']';
    P->s++;
    struct jv v = is_obj ? jv_dict_new(P->a) : jv_list_new(P->a, 0);
    if (v.kind == JV_NONE) {
        P->rc = P->a->rc;
        return v;
    }
    jp_ws(P);
    if (P->s < P->end && *P->s == close) {
        P->s++;
        return v;
    }
    while (!P->rc) {
        jp_ws(P);
        struct jv key = jv_none();
        if (is_obj) {
            if (P->s >= P->end || *P->s != '"') {
                jp_fail(P, "expected a string key");
                break;
            }
            key = jp_string(P);
            jp_ws(P);
            if (P->s >= P->end || *P->s != ':') {
                jp_fail(P, "expected ':'");
                break;
            }
            P->s++;
        }
        struct jv x = jp_value(P, depth + 1);
        if (P->rc) break;
        int rc = is_obj ? jv_dict_set(P->a, v.u.dict, key, x) : jv_list_push(P->a, v.u.list, x);
        if (rc) {
            P->rc = rc;
            break;
        }
        jp_ws(P);
        if (P->s < P->end && *P->s == ',') {
            P->s++;
            continue;
        }
        if (P->s < P->end && *P->s == close) {
            P->s++;
            break;
        }
        jp_fail(P, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    return v;
}

static struct jv jp_value(struct jparse *P, int depth)
{
    jp_ws(P);
    if (depth > 200) {
        jp_fail(P, "nested too deeply");
        return jv_none();
    }
    if (P->s >= P->end) {
        jp_fail(P, "unexpected end");
        return jv_none();
    }
    char c = *P->s;
    if (c == '{' || c == '[') return jp_container(P, depth);
    if (c == '"') return jp_string(P);
    if (c == '-' || (c >= '0' && c <= '9')) return jp_number(P);
    static const struct { const char *w; int kind; bool b; } words[] = {
        {"true", JV_BOOL, true}, {"false", JV_BOOL, false}, {"null", JV_NONE, false}};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(words[i].w);
        if ((size_t)(P->end - P->s) >= n && !memcmp(P->s, words[i].w, n)) {
            P->s += n;
            return words[i].kind == JV_BOOL ? jv_bool(words[i].b) : jv_none();
        }
    }
    jp_fail(P, "unexpected character");
    return jv_none();
}

int jv_parse_json(struct jarena *a, const char *s, size_t len, struct jv *out, char *err,
                  size_t err_cap)
{
    struct jparse P = {.a = a, .s = s, .end = s + len, .err = err, .err_cap = err_cap};
    *out = jp_value(&P, 0);
    if (!P.rc) {
        jp_ws(&P);
        if (P.s != P.end) jp_fail(&P, "trailing characters after the value");
    }
    if (!P.rc && a->rc) P.rc = a->rc;
    if (P.rc) *out = jv_none();
    return P.rc;
}
