/* jinja_builtins.c - the filters, tests, methods and globals of the Jinja interpreter.
 *
 * Semantics are jinja2 3.x's (filters.py, tests.py) and Python's (str and dict methods),
 * with Hugging Face's globals: raise_exception(msg) fails the render with msg,
 * strftime_now(fmt) formats the render's clock (local time), tojson is json.dumps with
 * ensure_ascii=False. list.append and other mutators are refused, as transformers'
 * ImmutableSandboxedEnvironment refuses them. Case conversion is ASCII only (Python maps
 * all of Unicode); sorting compares UTF-8 bytes, which orders as code points.
 */
#include "engine/jinja_internal.h"

#include "core/err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers -------------------------------------------------------------------------- */

static struct jv fail_v(struct jrender *R, const struct jnode *at, const char *msg, const char *name)
{
    jr_fail(R, at, MESH_EINVAL, msg, name);
    return jv_none();
}

struct jv jb_str(struct jrender *R, struct jv v)
{
    if (v.kind == JV_STR) return v;
    struct jbuf b = {0};
    jv_write_str(&b, v);
    struct jv s = jv_str_copy(&R->arena, b.p ? b.p : "", b.len);
    free(b.p);
    return s;
}

static struct jv buf_to_str(struct jrender *R, struct jbuf *b)
{
    struct jv s = jv_str_copy(&R->arena, b->p ? b->p : "", b->len);
    free(b->p);
    memset(b, 0, sizeof *b);
    return s;
}

static size_t cp_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
    return c;
}

struct jlist *jb_to_list(struct jrender *R, const struct jnode *at, struct jv v)
{
    struct jlist *l;
    switch (v.kind) {
    case JV_LIST: return v.u.list;
    case JV_UNDEF: return jarena_alloc(&R->arena, sizeof(struct jlist));
    case JV_DICT:
        l = jarena_alloc(&R->arena, sizeof *l);
        for (size_t i = 0; l && i < v.u.dict->n; i++) jv_list_push(&R->arena, l, v.u.dict->keys[i]);
        return l;
    case JV_STR:
        l = jarena_alloc(&R->arena, sizeof *l);
        for (size_t i = 0; l && i < v.u.s.len;) {
            size_t k = i + 1;
            while (k < v.u.s.len && ((unsigned char)v.u.s.p[k] & 0xC0) == 0x80) k++;
            jv_list_push(&R->arena, l, jv_strn(v.u.s.p + i, k - i));
            i = k;
        }
        return l;
    default:
        jr_fail(R, at, MESH_EINVAL, "'%s' object is not iterable", jv_type_name(v));
        return NULL;
    }
}

static const struct jv *kwarg(const char *const *names, const struct jv *vals, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name)) return &vals[i];
    return NULL;
}

/* Argument i (positional) or the keyword name, else NULL. */
#define ARG(i, name) (n_args > (i) ? &args[i] : kwarg(kw_names, kw_vals, n_kw, name))

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static char lower_c(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

static char upper_c(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

/* mode: 'l' lower, 'u' upper, 'c' capitalize, 't' Python str.title, 'j' jinja's title */
static struct jv case_map(struct jrender *R, struct jv s, char mode)
{
    s = jb_str(R, s);
    char *d = jarena_strdup(&R->arena, s.u.s.p, s.u.s.len);
    if (!d) return jv_strn("", 0);
    bool start = true;
    for (size_t i = 0; i < s.u.s.len; i++) {
        char c = d[i];
        switch (mode) {
        case 'l': d[i] = lower_c(c); break;
        case 'u': d[i] = upper_c(c); break;
        case 'c': d[i] = i == 0 ? upper_c(c) : lower_c(c); break;
        case 't':
            d[i] = start ? upper_c(c) : lower_c(c);
            if (((unsigned char)c & 0xC0) != 0x80) start = !is_alpha((unsigned char)c);
            break;
        default: { /* jinja: words begin after runs of - whitespace ( { [ < */
            bool sep = c == '-' || is_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
            d[i] = sep ? c : start ? upper_c(c) : lower_c(c);
            if (((unsigned char)c & 0xC0) != 0x80) start = sep;
        }
        }
    }
    return jv_strn(d, s.u.s.len);
}

static bool in_chars(char c, struct jv chars)
{
    if (chars.kind != JV_STR) return is_space(c);
    return memchr(chars.u.s.p, c, chars.u.s.len) != NULL;
}

static struct jv strip(struct jrender *R, struct jv s, const struct jv *chars, bool left, bool right)
{
    s = jb_str(R, s);
    struct jv cs = chars && chars->kind == JV_STR ? *chars : jv_none();
    size_t a = 0, b = s.u.s.len;
    if (left)
        while (a < b && in_chars(s.u.s.p[a], cs)) a++;
    if (right)
        while (b > a && in_chars(s.u.s.p[b - 1], cs)) b--;
    return jv_strn(s.u.s.p + a, b - a);
}

static struct jv replace(struct jrender *R, struct jv s, struct jv old, struct jv new_, int64_t count)
{
    s = jb_str(R, s);
    old = jb_str(R, old);
    new_ = jb_str(R, new_);
    struct jbuf b = {0};
    size_t i = 0;
    int64_t done = 0;
    if (old.u.s.len == 0) { /* Python inserts new between every code point */
        for (size_t k = 0; k <= s.u.s.len; k++) {
            bool boundary = k == s.u.s.len || ((unsigned char)s.u.s.p[k] & 0xC0) != 0x80;
            if (boundary && (count < 0 || done < count)) {
                jbuf_add(&b, new_.u.s.p, new_.u.s.len);
                done++;
            }
            if (k < s.u.s.len) jbuf_addc(&b, s.u.s.p[k]);
        }
        return buf_to_str(R, &b);
    }
    while (i < s.u.s.len) {
        const char *hit = count >= 0 && done >= count ? NULL
                        : memmem(s.u.s.p + i, s.u.s.len - i, old.u.s.p, old.u.s.len);
        if (!hit) break;
        size_t at = (size_t)(hit - s.u.s.p);
        jbuf_add(&b, s.u.s.p + i, at - i);
        jbuf_add(&b, new_.u.s.p, new_.u.s.len);
        i = at + old.u.s.len;
        done++;
    }
    jbuf_add(&b, s.u.s.p + i, s.u.s.len - i);
    return buf_to_str(R, &b);
}

static struct jv split(struct jrender *R, struct jv s, const struct jv *sep, int64_t maxsplit)
{
    struct jv l = jv_list_new(&R->arena, 0);
    if (l.kind != JV_LIST) return l;
    const char *p = s.u.s.p;
    size_t n = s.u.s.len, i = 0;
    int64_t done = 0;
    if (!sep || sep->kind == JV_NONE) { /* runs of whitespace, no empty strings */
        while (i < n) {
            while (i < n && is_space(p[i])) i++;
            if (i >= n) break;
            size_t st = i;
            if (maxsplit >= 0 && done >= maxsplit) {
                size_t e = n;
                while (e > st && is_space(p[e - 1])) e--;
                jv_list_push(&R->arena, l.u.list, jv_strn(p + st, e - st));
                break;
            }
            while (i < n && !is_space(p[i])) i++;
            jv_list_push(&R->arena, l.u.list, jv_strn(p + st, i - st));
            done++;
        }
        return l;
    }
    if (sep->kind != JV_STR || sep->u.s.len == 0) {
        jr_fail(R, NULL, MESH_EINVAL, "split: empty or non-string separator");
        return l;
    }
    for (;;) {
        const char *hit = maxsplit >= 0 && done >= maxsplit ? NULL
                        : memmem(p + i, n - i, sep->u.s.p, sep->u.s.len);
        if (!hit) break;
        jv_list_push(&R->arena, l.u.list, jv_strn(p + i, (size_t)(hit - p) - i));
        i = (size_t)(hit - p) + sep->u.s.len;
        done++;
    }
    jv_list_push(&R->arena, l.u.list, jv_strn(p + i, n - i));
    return l;
}

static bool affix(struct jv s, struct jv a, bool end)
{
    if (a.kind == JV_LIST) {
        for (size_t i = 0; i < a.u.list->n; i++)
            if (affix(s, a.u.list->v[i], end)) return true;
        return false;
    }
    if (a.kind != JV_STR || s.kind != JV_STR || a.u.s.len > s.u.s.len) return false;
    const char *p = end ? s.u.s.p + s.u.s.len - a.u.s.len : s.u.s.p;
    return !memcmp(p, a.u.s.p, a.u.s.len);
}

/* ---- attributes ----------------------------------------------------------------------- */

static struct jv method(struct jrender *R, struct jv self, const char *name)
{
    struct jmethod *m = jarena_alloc(&R->arena, sizeof *m);
    if (!m) return jv_none();
    m->self = self;
    m->name = name;
    struct jv v = {.kind = JV_METHOD};
    v.u.method = m;
    return v;
}

static bool name_in(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(name, *list)) return true;
    return false;
}

static const char *const g_str_methods[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower",
    "title", "capitalize", "replace", "format", "find", "rfind", "count", "join", "splitlines",
    "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "removeprefix",
    "removesuffix", "index", NULL};
static const char *const g_dict_methods[] = {"items", "keys", "values", "get", NULL};
static const char *const g_list_methods[] = {"index", "count", NULL};
static const char *const g_mutators[] = {"append", "extend", "insert", "pop", "remove", "clear",
                                         "update", "setdefault", "popitem", "sort", "reverse", NULL};

static struct jv loop_attr(struct jrender *R, const struct jnode *at, struct jv lv, const char *name)
{
    struct jloop *lp = lv.u.loop;
    int64_t i = (int64_t)lp->index0, n = (int64_t)lp->items->n;
    if (!strcmp(name, "index")) return jv_int(i + 1);
    if (!strcmp(name, "index0")) return jv_int(i);
    if (!strcmp(name, "revindex")) return jv_int(n - i);
    if (!strcmp(name, "revindex0")) return jv_int(n - i - 1);
    if (!strcmp(name, "first")) return jv_bool(i == 0);
    if (!strcmp(name, "last")) return jv_bool(i == n - 1);
    if (!strcmp(name, "length")) return jv_int(n);
    if (!strcmp(name, "depth")) return jv_int(lp->depth0 + 1);
    if (!strcmp(name, "depth0")) return jv_int(lp->depth0);
    if (!strcmp(name, "previtem")) return i > 0 ? lp->items->v[i - 1] : jv_undef("previtem");
    if (!strcmp(name, "nextitem")) return i + 1 < n ? lp->items->v[i + 1] : jv_undef("nextitem");
    if (!strcmp(name, "cycle") || !strcmp(name, "changed")) return method(R, lv, name);
    (void)at;
    return jv_undef(name);
}

struct jv jb_getattr(struct jrender *R, const struct jnode *at, struct jv obj, const char *name)
{
    if (!name) return jv_undef(NULL);
    if (g_mutators[0] && name_in(name, g_mutators) && (obj.kind == JV_LIST || (obj.kind == JV_DICT && !obj.is_ns)))
        return fail_v(R, at, "access to attribute '%s' is unsafe (templates may not modify values)", name);
    switch (obj.kind) {
    case JV_DICT: {
        if (!obj.is_ns && name_in(name, g_dict_methods)) return method(R, obj, name);
        struct jv *v = jv_dict_get(obj.u.dict, name, strlen(name));
        return v ? *v : jv_undef(name);
    }
    case JV_STR:
        if (name_in(name, g_str_methods)) return method(R, obj, name);
        return jv_undef(name);
    case JV_LIST:
        if (name_in(name, g_list_methods)) return method(R, obj, name);
        return jv_undef(name);
    case JV_LOOP: return loop_attr(R, at, obj, name);
    default: return jv_undef(name);
    }
}

/* ---- str.format ----------------------------------------------------------------------- */

static struct jv str_format(struct jrender *R, const struct jnode *at, struct jv fmt,
                            const struct jv *args, int n_args, const char *const *kw_names,
                            const struct jv *kw_vals, int n_kw)
{
    struct jbuf b = {0};
    const char *p = fmt.u.s.p, *e = p + fmt.u.s.len;
    int auto_i = 0;
    while (p < e && !R->rc) {
        if (*p == '{' && p + 1 < e && p[1] == '{') {
            jbuf_addc(&b, '{');
            p += 2;
            continue;
        }
        if (*p == '}' && p + 1 < e && p[1] == '}') {
            jbuf_addc(&b, '}');
            p += 2;
            continue;
        }
        if (*p != '{') {
            jbuf_addc(&b, *p++);
            continue;
        }
        const char *q = memchr(p, '}', (size_t)(e - p));
        if (!q) {
            jr_fail(R, at, MESH_EINVAL, "format: single '{' in the format string");
            break;
        }
        char field[64];
        size_t fl = (size_t)(q - p - 1);
        if (fl >= sizeof field) fl = sizeof field - 1;
        memcpy(field, p + 1, fl);
        field[fl] = 0;
        char *colon = strchr(field, ':');
        if (colon) *colon = 0; /* format specs are ignored */
        const struct jv *v = NULL;
        if (!field[0]) v = auto_i < n_args ? &args[auto_i++] : NULL;
        else if (field[0] >= '0' && field[0] <= '9') {
            int k = atoi(field);
            v = k < n_args ? &args[k] : NULL;
        } else {
            v = kwarg(kw_names, kw_vals, n_kw, field);
        }
        if (!v) {
            jr_fail(R, at, MESH_EINVAL, "format: no argument for '{%s}'", field);
            break;
        }
        jv_write_str(&b, *v);
        p = q + 1;
    }
    return buf_to_str(R, &b);
}

/* ---- methods -------------------------------------------------------------------------- */

static struct jv str_method(struct jrender *R, const struct jnode *at, struct jv s, const char *name,
                            const struct jv *args, int n_args, const char *const *kw_names,
                            const struct jv *kw_vals, int n_kw)
{
    const struct jv *a0 = ARG(0, "chars"), *a1 = n_args > 1 ? &args[1] : NULL;
    if (!strcmp(name, "strip")) return strip(R, s, a0, true, true);
    if (!strcmp(name, "lstrip")) return strip(R, s, a0, true, false);
    if (!strcmp(name, "rstrip")) return strip(R, s, a0, false, true);
    if (!strcmp(name, "upper")) return case_map(R, s, 'u');
    if (!strcmp(name, "lower")) return case_map(R, s, 'l');
    if (!strcmp(name, "title")) return case_map(R, s, 't');
    if (!strcmp(name, "capitalize")) return case_map(R, s, 'c');
    if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
        const struct jv *sep = ARG(0, "sep"), *mx = ARG(1, "maxsplit");
        int64_t m = mx && mx->kind == JV_INT ? mx->u.i : -1;
        if (!strcmp(name, "rsplit") && m >= 0) {
            /* rsplit with a limit: split fully, then rejoin the leading pieces */
            struct jv all = split(R, s, sep, -1);
            if (all.kind != JV_LIST || (int64_t)all.u.list->n <= m + 1) return all;
            size_t keep_from = all.u.list->n - (size_t)m;
            const char *end = all.u.list->v[keep_from - 1].u.s.p + all.u.list->v[keep_from - 1].u.s.len;
            struct jv out = jv_list_new(&R->arena, 0);
            jv_list_push(&R->arena, out.u.list, jv_strn(s.u.s.p, (size_t)(end - s.u.s.p)));
            for (size_t i = keep_from; i < all.u.list->n; i++) jv_list_push(&R->arena, out.u.list, all.u.list->v[i]);
            return out;
        }
        return split(R, s, sep, m);
    }
    if (!strcmp(name, "splitlines")) {
        struct jv l = jv_list_new(&R->arena, 0);
        size_t i = 0;
        while (i < s.u.s.len && l.kind == JV_LIST) {
            const char *nl = memchr(s.u.s.p + i, '\n', s.u.s.len - i);
            size_t e = nl ? (size_t)(nl - s.u.s.p) : s.u.s.len;
            size_t e2 = e > i && s.u.s.p[e - 1] == '\r' ? e - 1 : e;
            jv_list_push(&R->arena, l.u.list, jv_strn(s.u.s.p + i, e2 - i));
            i = e + 1;
        }
        return l;
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        if (!a0) return fail_v(R, at, "%s() takes one argument", name);
        return jv_bool(affix(s, *a0, name[0] == 'e'));
    }
    if (!strcmp(name, "removeprefix") || !strcmp(name, "removesuffix")) {
        if (!a0 || a0->kind != JV_STR) return fail_v(R, at, "%s() takes a string", name);
        bool end = name[6] == 's';
        if (!affix(s, *a0, end)) return s;
        return jv_strn(s.u.s.p + (end ? 0 : a0->u.s.len), s.u.s.len - a0->u.s.len);
    }
    if (!strcmp(name, "replace")) {
        if (!a0 || !a1) return fail_v(R, at, "%s() takes two arguments", name);
        const struct jv *c = n_args > 2 ? &args[2] : NULL;
        return replace(R, s, *a0, *a1, c && c->kind == JV_INT ? c->u.i : -1);
    }
    if (!strcmp(name, "format")) return str_format(R, at, s, args, n_args, kw_names, kw_vals, n_kw);
    if (!strcmp(name, "find") || !strcmp(name, "rfind") || !strcmp(name, "count") || !strcmp(name, "index")) {
        if (!a0 || a0->kind != JV_STR) return fail_v(R, at, "%s() takes a string", name);
        int64_t found = -1, count = 0;
        size_t step = a0->u.s.len ? a0->u.s.len : 1;
        for (size_t i = 0; i + a0->u.s.len <= s.u.s.len;) {
            if (!memcmp(s.u.s.p + i, a0->u.s.p, a0->u.s.len)) {
                if (found < 0 || name[0] == 'r') found = (int64_t)cp_count(s.u.s.p, i);
                count++;
                i += step;
            } else {
                i++;
            }
            if (name[0] == 'f' && found >= 0) break;
        }
        if (name[0] == 'c') return jv_int(count);
        if (name[0] == 'i' && found < 0) return fail_v(R, at, "%s(): substring not found", name);
        return jv_int(found);
    }
    if (!strcmp(name, "join")) {
        if (!a0) return fail_v(R, at, "%s() takes one argument", name);
        struct jlist *l = jb_to_list(R, at, *a0);
        if (!l) return jv_none();
        struct jbuf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i) jbuf_add(&b, s.u.s.p, s.u.s.len);
            jv_write_str(&b, l->v[i]);
        }
        return buf_to_str(R, &b);
    }
    /* is* predicates: ASCII classes, false on the empty string */
    bool any = false, all = s.u.s.len > 0;
    for (size_t i = 0; i < s.u.s.len; i++) {
        unsigned char c = (unsigned char)s.u.s.p[i];
        bool ok = !strcmp(name, "isdigit") ? (c >= '0' && c <= '9')
                : !strcmp(name, "isalpha") ? is_alpha(c)
                : !strcmp(name, "isalnum") ? (is_alpha(c) || (c >= '0' && c <= '9'))
                : !strcmp(name, "isspace") ? is_space((char)c)
                : !strcmp(name, "islower") ? !(c >= 'A' && c <= 'Z')
                : !(c >= 'a' && c <= 'z');
        if (!strcmp(name, "islower") && c >= 'a' && c <= 'z') any = true;
        if (!strcmp(name, "isupper") && c >= 'A' && c <= 'Z') any = true;
        if (!ok) all = false;
    }
    if (!strcmp(name, "islower") || !strcmp(name, "isupper")) return jv_bool(all && any);
    return jv_bool(all);
}

struct jv jb_call_method(struct jrender *R, const struct jnode *at, struct jmethod *m,
                         const struct jv *args, int n_args, const char *const *kw_names,
                         const struct jv *kw_vals, int n_kw)
{
    struct jv s = m->self;
    const char *name = m->name;
    if (s.kind == JV_STR) return str_method(R, at, s, name, args, n_args, kw_names, kw_vals, n_kw);
    if (s.kind == JV_DICT) {
        struct jdict *d = s.u.dict;
        if (!strcmp(name, "get")) {
            if (n_args < 1) return fail_v(R, at, "%s() takes a key", name);
            struct jv *v = jv_dict_find(d, args[0]);
            return v ? *v : n_args > 1 ? args[1] : jv_none();
        }
        struct jv l = jv_list_new(&R->arena, d->n);
        for (size_t i = 0; i < d->n && l.kind == JV_LIST; i++) {
            struct jv x = d->keys[i];
            if (name[0] == 'v') x = d->vals[i];
            else if (name[0] == 'i') {
                x = jv_list_new(&R->arena, 2);
                if (x.kind != JV_LIST) break;
                x.is_tuple = true;
                jv_list_push(&R->arena, x.u.list, d->keys[i]);
                jv_list_push(&R->arena, x.u.list, d->vals[i]);
            }
            jv_list_push(&R->arena, l.u.list, x);
        }
        return l;
    }
    if (s.kind == JV_LIST) {
        if (n_args < 1) return fail_v(R, at, "%s() takes one argument", name);
        int64_t count = 0;
        for (size_t i = 0; i < s.u.list->n; i++) {
            if (!jv_equal(s.u.list->v[i], args[0])) continue;
            if (name[0] == 'i') return jv_int((int64_t)i);
            count++;
        }
        if (name[0] == 'i') return fail_v(R, at, "%s(): value not in list", name);
        return jv_int(count);
    }
    if (s.kind == JV_LOOP) {
        struct jloop *lp = s.u.loop;
        if (!strcmp(name, "cycle")) {
            if (n_args == 0) return fail_v(R, at, "loop.%s() needs at least one value", name);
            return args[lp->index0 % (size_t)n_args];
        }
        struct jv now = jv_list_new(&R->arena, (size_t)n_args); /* changed(*values) */
        for (int i = 0; i < n_args && now.kind == JV_LIST; i++) jv_list_push(&R->arena, now.u.list, args[i]);
        bool changed = !lp->has_changed || !jv_equal(now, lp->last_changed);
        lp->last_changed = now;
        lp->has_changed = true;
        return jv_bool(changed);
    }
    return fail_v(R, at, "'%s' is not callable here", name);
}

/* ---- globals -------------------------------------------------------------------------- */

enum { G_RANGE, G_NAMESPACE, G_DICT, G_RAISE, G_STRFTIME, G_COUNT };
static const char *const g_globals[G_COUNT] = {"range", "namespace", "dict", "raise_exception",
                                               "strftime_now"};

int jb_global_find(const char *name)
{
    for (int i = 0; i < G_COUNT; i++)
        if (!strcmp(name, g_globals[i])) return i;
    return -1;
}

struct jv jb_call_global(struct jrender *R, const struct jnode *at, int func,
                         const struct jv *args, int n_args, const char *const *kw_names,
                         const struct jv *kw_vals, int n_kw)
{
    switch (func) {
    case G_RANGE: {
        int64_t a = 0, b = 0, st = 1;
        for (int i = 0; i < n_args; i++)
            if (args[i].kind != JV_INT) return fail_v(R, at, "%s() takes integers", "range");
        if (n_args == 1) b = args[0].u.i;
        else if (n_args >= 2) {
            a = args[0].u.i;
            b = args[1].u.i;
            if (n_args > 2) st = args[2].u.i;
        } else {
            return fail_v(R, at, "%s() takes 1 to 3 integers", "range");
        }
        if (st == 0) return fail_v(R, at, "%s() step must not be zero", "range");
        double n = ceil(((double)b - (double)a) / (double)st);
        if (n > 1000000) {
            jr_fail(R, at, MESH_ERANGE, "range() of %.0f items is too long", n);
            return jv_none();
        }
        struct jv l = jv_list_new(&R->arena, n > 0 ? (size_t)n : 0);
        for (int64_t i = a; l.kind == JV_LIST && (st > 0 ? i < b : i > b); i += st)
            jv_list_push(&R->arena, l.u.list, jv_int(i));
        return l;
    }
    case G_NAMESPACE:
    case G_DICT: {
        struct jv d = jv_dict_new(&R->arena);
        if (d.kind != JV_DICT) return d;
        d.is_ns = func == G_NAMESPACE;
        for (int i = 0; i < n_args; i++) {
            if (args[i].kind != JV_DICT) return fail_v(R, at, "%s() takes a mapping or keywords", g_globals[func]);
            for (size_t k = 0; k < args[i].u.dict->n; k++)
                jv_dict_set(&R->arena, d.u.dict, args[i].u.dict->keys[k], args[i].u.dict->vals[k]);
        }
        for (int i = 0; i < n_kw; i++)
            jv_dict_set(&R->arena, d.u.dict, jv_strn(kw_names[i], strlen(kw_names[i])), kw_vals[i]);
        return d;
    }
    case G_RAISE: {
        struct jbuf b = {0};
        if (n_args > 0) jv_write_str(&b, args[0]);
        jr_fail(R, at, MESH_EINVAL, "raise_exception: %s", b.p ? b.p : "");
        free(b.p);
        return jv_none();
    }
    case G_STRFTIME: {
        if (n_args < 1 || args[0].kind != JV_STR) return fail_v(R, at, "%s() takes a format string", "strftime_now");
        time_t t = (time_t)R->now;
        struct tm tm;
        localtime_r(&t, &tm);
        char fmt[256], out[512];
        size_t n = args[0].u.s.len < sizeof fmt - 1 ? args[0].u.s.len : sizeof fmt - 1;
        memcpy(fmt, args[0].u.s.p, n);
        fmt[n] = 0;
        size_t w = n ? strftime(out, sizeof out, fmt, &tm) : 0;
        return jv_str_copy(&R->arena, out, w);
    }
    default: return fail_v(R, at, "unknown function%s", "");
    }
}

/* ---- tests ---------------------------------------------------------------------------- */

static const char *const g_tests[] = {
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number",
    "string", "mapping", "iterable", "sequence", "callable", "sameas", "escaped", "in", "eq",
    "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">",
    "ge", ">=", "odd", "even", "divisibleby", "lower", "upper", NULL};

bool jb_has_test(const char *name)
{
    return name_in(name, g_tests);
}

int jb_test(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
            const struct jv *args, int n_args)
{
    int k = in.kind;
    if (!strcmp(name, "defined")) return k != JV_UNDEF;
    if (!strcmp(name, "undefined")) return k == JV_UNDEF;
    if (!strcmp(name, "none")) return k == JV_NONE;
    if (!strcmp(name, "boolean")) return k == JV_BOOL;
    if (!strcmp(name, "false")) return k == JV_BOOL && !in.u.b;
    if (!strcmp(name, "true")) return k == JV_BOOL && in.u.b;
    if (!strcmp(name, "integer")) return k == JV_INT;
    if (!strcmp(name, "float")) return k == JV_FLOAT;
    if (!strcmp(name, "number")) return k == JV_INT || k == JV_FLOAT || k == JV_BOOL;
    if (!strcmp(name, "string")) return k == JV_STR;
    if (!strcmp(name, "mapping")) return k == JV_DICT && !in.is_ns;
    if (!strcmp(name, "iterable")) return k == JV_LIST || k == JV_DICT || k == JV_STR || k == JV_UNDEF;
    if (!strcmp(name, "sequence")) return (k == JV_LIST && !in.is_gen) || k == JV_DICT || k == JV_STR;
    if (!strcmp(name, "callable")) return k == JV_MACRO || k == JV_METHOD || k == JV_FUNC;
    if (!strcmp(name, "escaped")) return 0;
    if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        if (k != JV_STR) return 0;
        struct jmethod m = {.self = in, .name = name[0] == 'l' ? "islower" : "isupper"};
        struct jv r = jb_call_method(R, at, &m, NULL, 0, NULL, NULL, 0);
        return r.kind == JV_BOOL && r.u.b;
    }
    if (!strcmp(name, "odd") || !strcmp(name, "even")) {
        if (k == JV_BOOL) in = jv_int(in.u.b); /* a Python bool is an int */
        if (in.kind == JV_FLOAT) return fmod(in.u.f, 2) == (name[0] == 'o' ? 1 : 0);
        if (in.kind != JV_INT) {
            jr_fail(R, at, MESH_EINVAL, "test '%s' needs a number, not %s", name, jv_type_name(in));
            return -1;
        }
        return (int)((in.u.i & 1) == (name[0] == 'o'));
    }
    if (!jb_has_test(name)) {
        jr_fail(R, at, MESH_EINVAL, "unknown test '%s'", name);
        return -1;
    }
    if (n_args < 1) {
        jr_fail(R, at, MESH_EINVAL, "test '%s' needs an argument", name);
        return -1;
    }
    struct jv b = args[0];
    if (!strcmp(name, "sameas")) return k == b.kind && (k == JV_NONE || k == JV_UNDEF || (k == JV_BOOL && in.u.b == b.u.b) || jv_equal(in, b));
    if (!strcmp(name, "divisibleby")) {
        if (!jv_is_number(in) || !jv_is_number(b) || jv_num(b) == 0) {
            jr_fail(R, at, MESH_EINVAL, "test 'divisibleby' needs numbers and a nonzero divisor");
            return -1;
        }
        if (k != JV_FLOAT && b.kind != JV_FLOAT) {
            int64_t x = k == JV_INT ? in.u.i : in.u.b, y = b.kind == JV_INT ? b.u.i : b.u.b;
            return y == -1 || x % y == 0;
        }
        return fmod(jv_num(in), jv_num(b)) == 0;
    }
    if (!strcmp(name, "in")) {
        if (b.kind == JV_STR) return in.kind == JV_STR && (in.u.s.len == 0 || memmem(b.u.s.p, b.u.s.len, in.u.s.p, in.u.s.len));
        if (b.kind == JV_LIST) {
            for (size_t i = 0; i < b.u.list->n; i++)
                if (jv_equal(b.u.list->v[i], in)) return 1;
            return 0;
        }
        if (b.kind == JV_DICT) return jv_dict_find(b.u.dict, in) != NULL;
        jr_fail(R, at, MESH_EINVAL, "test 'in' needs a container");
        return -1;
    }
    if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==")) return jv_equal(in, b);
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) return !jv_equal(in, b);
    bool ok;
    int c = jv_compare(in, b, &ok);
    if (!ok) {
        jr_fail(R, at, MESH_EINVAL, "test '%s': cannot compare %s with %s", name, jv_type_name(in), jv_type_name(b));
        return -1;
    }
    if (name[0] == 'l' || name[0] == '<') return name[1] == 'e' || name[1] == '=' ? c <= 0 : c < 0;
    return name[1] == 'e' || name[1] == '=' ? c >= 0 : c > 0;
}

/* ---- filters -------------------------------------------------------------------------- */

static const char *const g_filters[] = {
    "abs", "attr", "capitalize", "count", "length", "default", "d", "dictsort", "escape", "e",
    "first", "last", "float", "int", "indent", "items", "join", "list", "lower", "upper",
    "title", "map", "max", "min", "reject", "rejectattr", "select", "selectattr", "replace",
    "reverse", "round", "safe", "sort", "string", "sum", "trim", "unique", "wordcount",
    "tojson", "format", "center", "truncate", "batch", "forceescape", NULL};

bool jb_has_filter(const char *name)
{
    return name_in(name, g_filters);
}

/* obj.a.b for attribute="a.b" (dict keys, list indices). */
static struct jv attr_path(struct jrender *R, const struct jnode *at, struct jv obj, struct jv path)
{
    if (path.kind == JV_INT) {
        if (obj.kind == JV_LIST && path.u.i >= 0 && (uint64_t)path.u.i < obj.u.list->n) return obj.u.list->v[path.u.i];
        return jv_undef(NULL);
    }
    path = jb_str(R, path);
    const char *p = path.u.s.p, *e = p + path.u.s.len;
    while (p <= e && !R->rc) {
        const char *dot = memchr(p, '.', (size_t)(e - p));
        if (!dot) dot = e;
        size_t n = (size_t)(dot - p);
        char *name = jarena_strdup(&R->arena, p, n);
        if (!name) return jv_none();
        bool digits = n > 0;
        for (size_t i = 0; i < n; i++)
            if (name[i] < '0' || name[i] > '9') digits = false;
        if (obj.kind == JV_UNDEF) return obj;
        if (digits && obj.kind == JV_LIST) {
            long long idx = atoll(name);
            obj = idx >= 0 && (size_t)idx < obj.u.list->n ? obj.u.list->v[idx] : jv_undef(name);
        } else if (obj.kind == JV_DICT) {
            struct jv *v = jv_dict_get(obj.u.dict, name, n);
            obj = v ? *v : jv_undef(name);
        } else {
            obj = jb_getattr(R, at, obj, name);
        }
        p = dot + 1;
    }
    return obj;
}

/* select/reject (attr = false) and selectattr/rejectattr (attr = true). */
static struct jv select_filter(struct jrender *R, const struct jnode *at, struct jv in, bool attr,
                               bool keep_true, const struct jv *args, int n_args)
{
    struct jlist *l = jb_to_list(R, at, in);
    if (!l) return jv_none();
    int base = attr ? 1 : 0;
    if (attr && n_args < 1) return fail_v(R, at, "%s needs an attribute name", keep_true ? "selectattr" : "rejectattr");
    const char *test = NULL;
    if (n_args > base) {
        struct jv t = jb_str(R, args[base]);
        test = jarena_strdup(&R->arena, t.u.s.p, t.u.s.len);
        if (!jb_has_test(test)) return fail_v(R, at, "unknown test '%s'", test);
    }
    struct jv out = jv_list_new(&R->arena, 0);
    for (size_t i = 0; i < l->n && !R->rc && out.kind == JV_LIST; i++) {
        struct jv x = attr ? attr_path(R, at, l->v[i], args[0]) : l->v[i];
        int r = test ? jb_test(R, at, test, x, args + base + 1, n_args - base - 1) : jv_truthy(x);
        if (r < 0) break;
        if ((r == 1) == keep_true) jv_list_push(&R->arena, out.u.list, l->v[i]);
    }
    return out;
}

static struct jv map_filter(struct jrender *R, const struct jnode *at, struct jv in,
                            const struct jv *args, int n_args, const char *const *kw_names,
                            const struct jv *kw_vals, int n_kw)
{
    struct jlist *l = jb_to_list(R, at, in);
    if (!l) return jv_none();
    const struct jv *attr = kwarg(kw_names, kw_vals, n_kw, "attribute");
    const struct jv *dflt = kwarg(kw_names, kw_vals, n_kw, "default");
    const char *filter = NULL;
    if (!attr) {
        if (n_args < 1) return fail_v(R, at, "map needs a filter name or attribute=%s", "");
        struct jv f = jb_str(R, args[0]);
        filter = jarena_strdup(&R->arena, f.u.s.p, f.u.s.len);
    }
    struct jv out = jv_list_new(&R->arena, l->n);
    for (size_t i = 0; i < l->n && !R->rc && out.kind == JV_LIST; i++) {
        struct jv x;
        if (attr) {
            x = attr_path(R, at, l->v[i], *attr);
            if (x.kind == JV_UNDEF && dflt) x = *dflt;
        } else {
            x = jb_filter(R, at, filter, l->v[i], args + 1, n_args - 1, kw_names, kw_vals, n_kw);
        }
        jv_list_push(&R->arena, out.u.list, x);
    }
    return out;
}

/* Sort key comparison: case-insensitive on strings unless case_sensitive. */
struct sort_ctx {
    struct jrender *R;
    bool case_sensitive;
    int by; /* -1 element, 0 key, 1 value (dictsort) */
};

static int cmp_ci(struct jv a, struct jv b, bool cs, bool *ok)
{
    *ok = true;
    if (!cs && a.kind == JV_STR && b.kind == JV_STR) {
        size_t n = a.u.s.len < b.u.s.len ? a.u.s.len : b.u.s.len;
        for (size_t i = 0; i < n; i++) {
            char x = lower_c(a.u.s.p[i]), y = lower_c(b.u.s.p[i]);
            if (x != y) return (unsigned char)x < (unsigned char)y ? -1 : 1;
        }
        *ok = true;
        return (a.u.s.len > b.u.s.len) - (a.u.s.len < b.u.s.len);
    }
    return jv_compare(a, b, ok);
}

/* Stable insertion/merge sort of keys with payload indices (lists here are short). */
static bool sort_by(struct jrender *R, const struct jnode *at, struct jv *keys, struct jv *vals, size_t n,
                    bool cs, bool reverse)
{
    for (size_t i = 1; i < n; i++) {
        struct jv k = keys[i], v = vals[i];
        size_t j = i;
        while (j > 0) {
            bool ok;
            int c = cmp_ci(keys[j - 1], k, cs, &ok);
            if (!ok) {
                jr_fail(R, at, MESH_EINVAL, "sort: cannot compare %s with %s", jv_type_name(keys[j - 1]), jv_type_name(k));
                return false;
            }
            if (reverse ? c >= 0 : c <= 0) break;
            keys[j] = keys[j - 1];
            vals[j] = vals[j - 1];
            j--;
        }
        keys[j] = k;
        vals[j] = v;
    }
    return true;
}

static struct jv sort_filter(struct jrender *R, const struct jnode *at, struct jv in, bool dictsort,
                             const struct jv *args, int n_args, const char *const *kw_names,
                             const struct jv *kw_vals, int n_kw)
{
    const struct jv *rev = dictsort ? ARG(2, "reverse") : ARG(0, "reverse");
    const struct jv *cs = dictsort ? ARG(0, "case_sensitive") : ARG(1, "case_sensitive");
    const struct jv *attr = dictsort ? NULL : ARG(2, "attribute");
    const struct jv *by = dictsort ? ARG(1, "by") : NULL;
    struct jlist *l;
    struct jv items = jv_none();
    if (dictsort) {
        if (in.kind != JV_DICT) return fail_v(R, at, "dictsort needs a mapping%s", "");
        struct jmethod m = {.self = in, .name = "items"};
        items = jb_call_method(R, at, &m, NULL, 0, NULL, NULL, 0);
        l = items.kind == JV_LIST ? items.u.list : NULL;
    } else {
        l = jb_to_list(R, at, in);
    }
    if (!l) return jv_none();
    size_t n = l->n;
    struct jv *keys = jarena_alloc(&R->arena, (n + 1) * sizeof *keys);
    struct jv out = jv_list_new(&R->arena, n);
    if (!keys || out.kind != JV_LIST) return jv_none();
    bool by_value = by && by->kind == JV_STR && by->u.s.len == 5 && !memcmp(by->u.s.p, "value", 5);
    for (size_t i = 0; i < n; i++) {
        struct jv x = l->v[i];
        keys[i] = dictsort ? x.u.list->v[by_value ? 1 : 0] : attr ? attr_path(R, at, x, *attr) : x;
        out.u.list->v[i] = x;
    }
    out.u.list->n = n;
    if (!sort_by(R, at, keys, out.u.list->v, n, cs && jv_truthy(*cs), rev && jv_truthy(*rev))) return jv_none();
    return out;
}

static struct jv indent_filter(struct jrender *R, struct jv s, const struct jv *w, const struct jv *first,
                               const struct jv *blank)
{
    s = jb_str(R, s);
    struct jbuf ind = {0};
    if (w && w->kind == JV_STR) jbuf_add(&ind, w->u.s.p, w->u.s.len);
    else
        for (int64_t i = 0; i < (w && w->kind == JV_INT ? w->u.i : 4) && i < 256; i++) jbuf_addc(&ind, ' ');
    struct jbuf b = {0};
    bool do_blank = blank && jv_truthy(*blank);
    if (first && jv_truthy(*first)) jbuf_add(&b, ind.p, ind.len);
    /* s + "\n" split into lines: every line after the first gets the indent (blank lines
     * only with blank=True); the added newline vanishes */
    size_t i = 0, line = 0;
    while (i <= s.u.s.len) {
        const char *nl = memchr(s.u.s.p + i, '\n', s.u.s.len - i);
        size_t e = nl ? (size_t)(nl - s.u.s.p) : s.u.s.len;
        if (!nl && e == i && line > 0) break; /* the piece after the final newline */
        if (line > 0) {
            jbuf_addc(&b, '\n');
            if (e > i || do_blank) jbuf_add(&b, ind.p, ind.len);
        }
        jbuf_add(&b, s.u.s.p + i, e - i);
        line++;
        if (!nl) break;
        i = e + 1;
    }
    free(ind.p);
    return buf_to_str(R, &b);
}

static struct jv escape_filter(struct jrender *R, struct jv s)
{
    s = jb_str(R, s);
    struct jbuf b = {0};
    for (size_t i = 0; i < s.u.s.len; i++) {
        char c = s.u.s.p[i];
        switch (c) {
        case '&': jbuf_add(&b, "&amp;", 5); break;
        case '<': jbuf_add(&b, "&lt;", 4); break;
        case '>': jbuf_add(&b, "&gt;", 4); break;
        case '"': jbuf_add(&b, "&#34;", 5); break;
        case '\'': jbuf_add(&b, "&#39;", 5); break;
        default: jbuf_addc(&b, c);
        }
    }
    return buf_to_str(R, &b);
}

/* Python %-formatting with %s %d %i %r %f %%: "x=%s" | format(v). */
static struct jv percent_format(struct jrender *R, const struct jnode *at, struct jv fmt,
                                const struct jv *args, int n_args)
{
    fmt = jb_str(R, fmt);
    struct jbuf b = {0};
    int k = 0;
    for (size_t i = 0; i < fmt.u.s.len && !R->rc; i++) {
        char c = fmt.u.s.p[i];
        if (c != '%' || i + 1 >= fmt.u.s.len) {
            jbuf_addc(&b, c);
            continue;
        }
        char f = fmt.u.s.p[++i];
        if (f == '%') {
            jbuf_addc(&b, '%');
            continue;
        }
        if (k >= n_args) {
            jr_fail(R, at, MESH_EINVAL, "format: not enough arguments for the format string");
            break;
        }
        struct jv v = args[k++];
        if (f == 'r') jv_write_repr(&b, v);
        else if ((f == 'd' || f == 'i') && jv_is_number(v)) jbuf_addf(&b, "%lld", (long long)jv_num(v));
        else if (f == 'f' && jv_is_number(v)) jbuf_addf(&b, "%f", jv_num(v));
        else jv_write_str(&b, v);
    }
    return buf_to_str(R, &b);
}

static struct jv minmax(struct jrender *R, const struct jnode *at, struct jv in, bool is_max,
                        const struct jv *cs, const struct jv *attr)
{
    struct jlist *l = jb_to_list(R, at, in);
    if (!l) return jv_none();
    if (l->n == 0) return jv_undef(NULL);
    struct jv best = l->v[0], bk = attr ? attr_path(R, at, best, *attr) : best;
    for (size_t i = 1; i < l->n; i++) {
        struct jv k = attr ? attr_path(R, at, l->v[i], *attr) : l->v[i];
        bool ok;
        int c = cmp_ci(k, bk, cs && jv_truthy(*cs), &ok);
        if (!ok) return fail_v(R, at, "%s: values are not comparable", is_max ? "max" : "min");
        if (is_max ? c > 0 : c < 0) {
            best = l->v[i];
            bk = k;
        }
    }
    return best;
}

static struct jv num_filter(struct jrender *R, struct jv in, bool to_int, const struct jv *dflt, const struct jv *base)
{
    struct jv d = dflt ? *dflt : to_int ? jv_int(0) : jv_float(0);
    switch (in.kind) {
    case JV_INT: return to_int ? in : jv_float((double)in.u.i);
    case JV_BOOL: return to_int ? jv_int(in.u.b) : jv_float(in.u.b);
    case JV_FLOAT:
        if (!to_int) return in;
        if (!isfinite(in.u.f) || fabs(in.u.f) > 9.2e18) return d;
        return jv_int((int64_t)in.u.f);
    case JV_STR: {
        char tmp[80];
        struct jv t = strip(R, in, NULL, true, true);
        if (t.u.s.len == 0 || t.u.s.len >= sizeof tmp) return d;
        size_t k = 0;
        for (size_t i = 0; i < t.u.s.len; i++)
            if (t.u.s.p[i] != '_') tmp[k++] = t.u.s.p[i];
        tmp[k] = 0;
        char *e;
        if (to_int) {
            int b = base && base->kind == JV_INT ? (int)base->u.i : 10;
            if (b < 0 || b == 1 || b > 36) b = 10;
            long long v = strtoll(tmp, &e, b);
            if (!*e) return jv_int(v);
            double f = strtod(tmp, &e); /* jinja: int("3.5") goes through float */
            if (!*e && isfinite(f) && fabs(f) < 9.2e18) return jv_int((int64_t)f);
            return d;
        }
        double f = strtod(tmp, &e);
        return *e ? d : jv_float(f);
    }
    default: return d;
    }
}

static struct jv filter_value(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
                              const struct jv *args, int n_args, const char *const *kw_names,
                              const struct jv *kw_vals, int n_kw);

/* jinja2's filters that return generators (filters.py: map, select, reject, selectattr,
 * rejectattr, unique, items, batch) */
static const char *const g_gen_filters[] = {"map", "select", "reject", "selectattr",
                                            "rejectattr", "unique", "items", "batch", NULL};

struct jv jb_filter(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
                    const struct jv *args, int n_args, const char *const *kw_names,
                    const struct jv *kw_vals, int n_kw)
{
    struct jv v = filter_value(R, at, name, in, args, n_args, kw_names, kw_vals, n_kw);
    if (v.kind == JV_LIST && name_in(name, g_gen_filters)) v.is_gen = true;
    return v;
}

/* The helpers below each handle some filters and return not_mine() for the others. */
static struct jv not_mine(void)
{
    struct jv v = {.kind = JV_FUNC};
    v.u.func = -1;
    return v;
}

static bool is_mine(struct jv v)
{
    return !(v.kind == JV_FUNC && v.u.func == -1);
}

/* tojson, as HF defines it */
static struct jv tojson_filter(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
                              const struct jv *args, int n_args, const char *const *kw_names,
                              const struct jv *kw_vals, int n_kw)
{
    if (!strcmp(name, "tojson")) {
        /* HF: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
        const struct jv *ind = ARG(1, "indent"), *asc = ARG(0, "ensure_ascii");
        const struct jv *sep = ARG(2, "separators"), *sk = ARG(3, "sort_keys");
        if (n_args == 1 && args[0].kind == JV_INT) { /* tojson(4): the positional indent */
            ind = &args[0];
            asc = NULL;
        }
        struct jjson_opts jo;
        jjson_opts_init(&jo);
        char spaces[65];
        if (ind && ind->kind == JV_INT) {
            int w = ind->u.i < 0 ? 0 : ind->u.i > 64 ? 64 : (int)ind->u.i;
            memset(spaces, ' ', (size_t)w);
            spaces[w] = 0;
            jo.indent_str = spaces;
            jo.indent_len = (size_t)w;
            jo.item_sep = ",";
        } else if (ind && ind->kind == JV_STR) {
            jo.indent_str = ind->u.s.p;
            jo.indent_len = ind->u.s.len;
            jo.item_sep = ",";
        }
        if (sep && sep->kind == JV_LIST && sep->u.list->n == 2 && sep->u.list->v[0].kind == JV_STR &&
            sep->u.list->v[1].kind == JV_STR) {
            jo.item_sep = jarena_strdup(&R->arena, sep->u.list->v[0].u.s.p, sep->u.list->v[0].u.s.len);
            jo.key_sep = jarena_strdup(&R->arena, sep->u.list->v[1].u.s.p, sep->u.list->v[1].u.s.len);
            if (!jo.item_sep || !jo.key_sep) return jv_none();
        }
        jo.ensure_ascii = asc && jv_truthy(*asc);
        jo.sort_keys = sk && jv_truthy(*sk);
        struct jbuf b = {0};
        int rc = jv_write_json(&b, in, &jo, 0);
        if (rc) {
            free(b.p);
            return fail_v(R, at, "tojson: a %s value cannot be JSON", jv_type_name(in));
        }
        return buf_to_str(R, &b);
    }
    return not_mine();
}

/* items list join first last reverse replace */
static struct jv collection_filters(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
                              const struct jv *args, int n_args, const char *const *kw_names,
                              const struct jv *kw_vals, int n_kw)
{
    if (!strcmp(name, "items")) {
        if (in.kind != JV_DICT) return fail_v(R, at, "filter 'items' needs a mapping%s", "");
        struct jmethod m = {.self = in, .name = "items"};
        return jb_call_method(R, at, &m, NULL, 0, NULL, NULL, 0);
    }
    if (!strcmp(name, "list")) {
        struct jlist *l = jb_to_list(R, at, in);
        if (!l) return jv_none();
        struct jv out = jv_list_new(&R->arena, l->n);
        for (size_t i = 0; i < l->n && out.kind == JV_LIST; i++) jv_list_push(&R->arena, out.u.list, l->v[i]);
        return out;
    }
    if (!strcmp(name, "join")) {
        const struct jv *sep = ARG(0, "d"), *attr = ARG(1, "attribute");
        struct jlist *l = jb_to_list(R, at, in);
        if (!l) return jv_none();
        struct jv s = sep ? jb_str(R, *sep) : jv_strn("", 0);
        struct jbuf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i) jbuf_add(&b, s.u.s.p, s.u.s.len);
            jv_write_str(&b, attr ? attr_path(R, at, l->v[i], *attr) : l->v[i]);
        }
        return buf_to_str(R, &b);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        struct jlist *l = jb_to_list(R, at, in);
        if (!l) return jv_none();
        if (l->n == 0) return jv_undef(NULL);
        return name[0] == 'f' ? l->v[0] : l->v[l->n - 1];
    }
    if (!strcmp(name, "reverse")) {
        if (in.kind == JV_STR) {
            struct jlist *l = jb_to_list(R, at, in);
            struct jbuf b = {0};
            for (size_t i = l ? l->n : 0; i > 0; i--) jbuf_add(&b, l->v[i - 1].u.s.p, l->v[i - 1].u.s.len);
            return buf_to_str(R, &b);
        }
        struct jlist *l = jb_to_list(R, at, in);
        if (!l) return jv_none();
        struct jv out = jv_list_new(&R->arena, l->n);
        for (size_t i = l->n; i > 0 && out.kind == JV_LIST; i--) jv_list_push(&R->arena, out.u.list, l->v[i - 1]);
        return out;
    }
    if (!strcmp(name, "replace")) {
        if (n_args < 2) return fail_v(R, at, "filter '%s' takes two arguments", name);
        const struct jv *c = ARG(2, "count");
        return replace(R, in, args[0], args[1], c && c->kind == JV_INT ? c->u.i : -1);
    }
    return not_mine();
}

/* int float abs round */
static struct jv number_filters(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
                              const struct jv *args, int n_args, const char *const *kw_names,
                              const struct jv *kw_vals, int n_kw)
{
    if ((!strcmp(name, "int") || !strcmp(name, "float")) && in.kind == JV_UNDEF)
        return fail_v(R, at, "filter '%s' got an undefined value", name);
    if (!strcmp(name, "int")) return num_filter(R, in, true, ARG(0, "default"), ARG(1, "base"));
    if (!strcmp(name, "float")) return num_filter(R, in, false, ARG(0, "default"), NULL);
    if (!strcmp(name, "abs")) {
        if (in.kind == JV_BOOL) return jv_int(in.u.b);
        if (in.kind == JV_INT) return in.u.i == INT64_MIN ? jv_float(-(double)in.u.i) : jv_int(in.u.i < 0 ? -in.u.i : in.u.i);
        if (in.kind == JV_FLOAT) return jv_float(fabs(in.u.f));
        return fail_v(R, at, "bad operand type for abs(): '%s'", jv_type_name(in));
    }
    if (!strcmp(name, "round")) {
        const struct jv *pr = ARG(0, "precision"), *me = ARG(1, "method");
        if (!jv_is_number(in)) return fail_v(R, at, "round needs a number, not %s", jv_type_name(in));
        double m = pow(10, pr && pr->kind == JV_INT ? (double)pr->u.i : 0), x = jv_num(in) * m;
        char mode = me && me->kind == JV_STR && me->u.s.len ? me->u.s.p[0] : 'c';
        bool is_ceil = me && me->u.s.len > 1 && me->u.s.p[0] == 'c' && me->u.s.p[1] == 'e';
        if (mode == 'c' && !is_ceil && in.kind != JV_FLOAT) /* Python's round(int) is an int */
            return in.kind == JV_BOOL ? jv_int(in.u.b) : in;
        x = mode == 'f' ? floor(x) : is_ceil ? ceil(x) : nearbyint(x); /* half to even */
        return jv_float(x / m);
    }
    return not_mine();
}

/* attr map select reject selectattr rejectattr sort dictsort */
static struct jv select_filters(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
                              const struct jv *args, int n_args, const char *const *kw_names,
                              const struct jv *kw_vals, int n_kw)
{
    const struct jv *a0 = n_args > 0 ? &args[0] : NULL;
    if (!strcmp(name, "attr")) { /* getattr only: a dict's keys are not attributes */
        if (!a0 || a0->kind != JV_STR) return fail_v(R, at, "attr needs a name%s", "");
        char *an = jarena_strdup(&R->arena, a0->u.s.p, a0->u.s.len);
        if (in.kind == JV_DICT && !in.is_ns && !(an && name_in(an, g_dict_methods))) return jv_undef(an);
        return jb_getattr(R, at, in, an);
    }
    if (!strcmp(name, "map")) return map_filter(R, at, in, args, n_args, kw_names, kw_vals, n_kw);
    if (!strcmp(name, "select") || !strcmp(name, "reject"))
        return select_filter(R, at, in, false, name[0] == 's', args, n_args);
    if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr"))
        return select_filter(R, at, in, true, name[0] == 's', args, n_args);
    if (!strcmp(name, "sort")) return sort_filter(R, at, in, false, args, n_args, kw_names, kw_vals, n_kw);
    if (!strcmp(name, "dictsort")) return sort_filter(R, at, in, true, args, n_args, kw_names, kw_vals, n_kw);
    return not_mine();
}

/* unique max min sum wordcount indent format center truncate batch */
static struct jv misc_filters(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
                              const struct jv *args, int n_args, const char *const *kw_names,
                              const struct jv *kw_vals, int n_kw)
{
    const struct jv *a0 = n_args > 0 ? &args[0] : NULL;
    if (!strcmp(name, "unique")) {
        struct jlist *l = jb_to_list(R, at, in);
        if (!l) return jv_none();
        const struct jv *cs = ARG(0, "case_sensitive"), *attr = ARG(1, "attribute");
        struct jv out = jv_list_new(&R->arena, 0), seen = jv_list_new(&R->arena, 0);
        for (size_t i = 0; i < l->n && out.kind == JV_LIST && seen.kind == JV_LIST; i++) {
            struct jv k = attr ? attr_path(R, at, l->v[i], *attr) : l->v[i];
            if (!(cs && jv_truthy(*cs)) && k.kind == JV_STR) k = case_map(R, k, 'l');
            bool dup = false;
            for (size_t j = 0; j < seen.u.list->n && !dup; j++) dup = jv_equal(seen.u.list->v[j], k);
            if (dup) continue;
            jv_list_push(&R->arena, seen.u.list, k);
            jv_list_push(&R->arena, out.u.list, l->v[i]);
        }
        return out;
    }
    if (!strcmp(name, "max") || !strcmp(name, "min"))
        return minmax(R, at, in, name[1] == 'a', ARG(0, "case_sensitive"), ARG(1, "attribute"));
    if (!strcmp(name, "sum")) {
        struct jlist *l = jb_to_list(R, at, in);
        if (!l) return jv_none();
        const struct jv *attr = ARG(0, "attribute"), *start = ARG(1, "start");
        struct jv acc = start ? *start : jv_int(0);
        for (size_t i = 0; i < l->n && !R->rc; i++) {
            struct jv x = attr ? attr_path(R, at, l->v[i], *attr) : l->v[i];
            if (!jv_is_number(x) || !jv_is_number(acc)) return fail_v(R, at, "sum needs numbers%s", "");
            acc = acc.kind == JV_INT && x.kind == JV_INT ? jv_int(acc.u.i + x.u.i) : jv_float(jv_num(acc) + jv_num(x));
        }
        return acc;
    }
    if (!strcmp(name, "wordcount")) { /* runs of \w (letters, digits, _; non-ASCII counts) */
        struct jv t = jb_str(R, in);
        int64_t words = 0;
        bool inword = false;
        for (size_t i = 0; i < t.u.s.len; i++) {
            unsigned char c = (unsigned char)t.u.s.p[i];
            bool w = is_alpha(c) || (c >= '0' && c <= '9') || c == '_';
            if (w && !inword) words++;
            inword = w;
        }
        return jv_int(words);
    }
    if (!strcmp(name, "indent") && in.kind != JV_STR && in.kind != JV_UNDEF)
        return fail_v(R, at, "filter 'indent' needs a string, not %s", jv_type_name(in));
    if (!strcmp(name, "indent"))
        return indent_filter(R, in, ARG(0, "width"), ARG(1, "first"), ARG(2, "blank"));
    if (!strcmp(name, "format")) return percent_format(R, at, in, args, n_args);
    if (!strcmp(name, "center")) {
        struct jv s = jb_str(R, in);
        const struct jv *w = ARG(0, "width");
        int64_t width = w && w->kind == JV_INT ? w->u.i : 80, len = (int64_t)cp_count(s.u.s.p, s.u.s.len);
        if (width > 4096) width = 4096;
        if (width <= len) return s;
        int64_t left = (width - len) / 2 + ((width - len) & width & 1);
        struct jbuf b = {0};
        for (int64_t i = 0; i < left; i++) jbuf_addc(&b, ' ');
        jbuf_add(&b, s.u.s.p, s.u.s.len);
        for (int64_t i = 0; i < width - len - left; i++) jbuf_addc(&b, ' ');
        return buf_to_str(R, &b);
    }
    if (!strcmp(name, "truncate")) {
        struct jv s = jb_str(R, in);
        const struct jv *ln = ARG(0, "length"), *end = ARG(2, "end"), *lee = ARG(3, "leeway");
        int64_t length = ln && ln->kind == JV_INT ? ln->u.i : 255, leeway = lee && lee->kind == JV_INT ? lee->u.i : 5;
        struct jv e = end ? jb_str(R, *end) : jv_strn("...", 3);
        int64_t n = (int64_t)cp_count(s.u.s.p, s.u.s.len);
        if (n <= length + leeway) return s;
        int64_t keep = length - (int64_t)cp_count(e.u.s.p, e.u.s.len);
        if (keep < 0) keep = 0;
        struct jlist *l = jb_to_list(R, at, s);
        struct jbuf b = {0};
        for (int64_t i = 0; l && i < keep; i++) jbuf_add(&b, l->v[i].u.s.p, l->v[i].u.s.len);
        const struct jv *kill = ARG(1, "killwords");
        if (!(kill && jv_truthy(*kill))) { /* cut back to the last space */
            while (b.len > 0 && b.p[b.len - 1] != ' ') b.len--;
            while (b.len > 0 && b.p[b.len - 1] == ' ') b.len--;
        }
        jbuf_add(&b, e.u.s.p, e.u.s.len);
        return buf_to_str(R, &b);
    }
    if (!strcmp(name, "batch")) {
        struct jlist *l = jb_to_list(R, at, in);
        if (!l || !a0 || a0->kind != JV_INT || a0->u.i <= 0) return fail_v(R, at, "batch needs a positive size%s", "");
        struct jv out = jv_list_new(&R->arena, 0), cur = jv_none();
        for (size_t i = 0; i < l->n && out.kind == JV_LIST; i++) {
            if (i % (size_t)a0->u.i == 0) {
                cur = jv_list_new(&R->arena, (size_t)a0->u.i);
                jv_list_push(&R->arena, out.u.list, cur);
            }
            if (cur.kind == JV_LIST) jv_list_push(&R->arena, cur.u.list, l->v[i]);
        }
        return out;
    }
    return not_mine();
}

static struct jv filter_value(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
                              const struct jv *args, int n_args, const char *const *kw_names,
                              const struct jv *kw_vals, int n_kw)
{
    if (R->rc) return jv_none();
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        const struct jv *dv = ARG(0, "default_value"), *bo = ARG(1, "boolean");
        bool use = in.kind == JV_UNDEF || (bo && jv_truthy(*bo) && !jv_truthy(in));
        return use ? (dv ? *dv : jv_strn("", 0)) : in;
    }
    if (in.kind == JV_UNDEF && (!strcmp(name, "tojson") || !strcmp(name, "items") ||
                                !strcmp(name, "dictsort")))
        return fail_v(R, at, "filter '%s' got an undefined value", name);
    if (!strcmp(name, "safe") || !strcmp(name, "string")) return in.kind == JV_UNDEF ? jv_strn("", 0) : jb_str(R, in);
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        switch (in.kind) {
        case JV_STR: return jv_int((int64_t)cp_count(in.u.s.p, in.u.s.len));
        case JV_LIST:
            if (in.is_gen) return fail_v(R, at, "object of type 'generator' has no len()%s", "");
            return jv_int((int64_t)in.u.list->n);
        case JV_DICT: return jv_int((int64_t)in.u.dict->n);
        case JV_UNDEF: return jv_int(0);
        default: return fail_v(R, at, "object of type '%s' has no len()", jv_type_name(in));
        }
    }
    if (!strcmp(name, "trim")) return strip(R, in.kind == JV_UNDEF ? jv_strn("", 0) : in, ARG(0, "chars"), true, true);
    if (!strcmp(name, "upper")) return case_map(R, in, 'u');
    if (!strcmp(name, "lower")) return case_map(R, in, 'l');
    if (!strcmp(name, "capitalize")) return case_map(R, in, 'c');
    if (!strcmp(name, "title")) return case_map(R, in, 'j');
    if (!strcmp(name, "escape") || !strcmp(name, "e") || !strcmp(name, "forceescape")) return escape_filter(R, in);
    typedef struct jv (*filter_group)(struct jrender *, const struct jnode *, const char *,
                                      struct jv, const struct jv *, int, const char *const *,
                                      const struct jv *, int);
    static const filter_group groups[] = {tojson_filter, collection_filters, number_filters,
                                          select_filters, misc_filters};
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        struct jv v = groups[g](R, at, name, in, args, n_args, kw_names, kw_vals, n_kw);
        if (is_mine(v) || R->rc) return v;
    }
    return fail_v(R, at, "unknown filter '%s'", name);
}
