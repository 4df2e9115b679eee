/* jinja_eval.c - runs a parsed Jinja template: scopes, statements and expressions.
 *
 * Scoping as jinja2: a for body and a macro get their own scope (so {% set %} inside a
 * loop does not leak out; namespace() objects are how templates carry state out), if
 * blocks do not. Operators have Python's semantics (floor division and modulo, str * int,
 * list + list, chained comparisons); undefined values print as "" and fail on arithmetic,
 * attribute access and calls, as jinja2's default Undefined does. Every statement and loop
 * iteration counts a step; a render stops with MESH_ERANGE past the step, memory or output
 * limit, so a hostile template cannot hang or exhaust the process.
 */
#include "engine/jinja_internal.h"

#include "core/err.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CALL_DEPTH 100

int jr_fail(struct jrender *R, const struct jnode *at, int rc, const char *fmt, ...)
{
    if (R->rc) return R->rc;
    R->rc = rc;
    if (R->err) {
        R->err->line = at ? at->line : 0;
        R->err->col = at ? at->col : 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(R->err->msg, sizeof R->err->msg, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static bool step(struct jrender *R, const struct jnode *at)
{
    if (R->rc) return false;
    if (R->arena.rc) {
        jr_fail(R, at, R->arena.rc, R->arena.rc == MESH_ERANGE ? "render uses too much memory"
                                                               : "out of memory");
        return false;
    }
    if (R->out->rc) {
        jr_fail(R, at, R->out->rc, R->out->rc == MESH_ERANGE ? "output too large" : "out of memory");
        return false;
    }
    if (++R->steps > R->max_steps) {
        jr_fail(R, at, MESH_ERANGE, "template runs too long (more than %llu steps)",
                (unsigned long long)R->max_steps);
        return false;
    }
    return true;
}

/* ---- scopes --------------------------------------------------------------------------- */

static struct jframe *frame_new(struct jrender *R, struct jframe *parent)
{
    struct jframe *f = jarena_alloc(&R->arena, sizeof *f);
    if (f) f->parent = parent;
    return f;
}

int jr_set(struct jrender *R, struct jframe *f, const char *name, struct jv v)
{
    for (int i = 0; i < f->n; i++) {
        if (!strcmp(f->vars[i].name, name)) {
            f->vars[i].v = v;
            return 0;
        }
    }
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        struct jvar *nv = jarena_alloc(&R->arena, (size_t)cap * sizeof *nv);
        if (!nv) return R->arena.rc;
        if (f->n) memcpy(nv, f->vars, (size_t)f->n * sizeof *nv);
        f->vars = nv;
        f->cap = cap;
    }
    f->vars[f->n].name = name;
    f->vars[f->n++].v = v;
    return 0;
}

static struct jv *frame_find(struct jframe *f, const char *name)
{
    for (; f; f = f->parent)
        for (int i = f->n - 1; i >= 0; i--)
            if (!strcmp(f->vars[i].name, name)) return &f->vars[i].v;
    return NULL;
}

struct jv jr_lookup(struct jrender *R, const char *name)
{
    struct jv *v = frame_find(R->frame, name);
    if (v) return *v;
    int fn = jb_global_find(name);
    if (fn >= 0) {
        struct jv g = {.kind = JV_FUNC};
        g.u.func = fn;
        return g;
    }
    return jv_undef(name);
}

/* ---- expressions ---------------------------------------------------------------------- */

static struct jv undefined_error(struct jrender *R, const struct jnode *at, struct jv v, const char *what)
{
    if (v.u.s.p && v.u.s.len) jr_fail(R, at, MESH_EINVAL, "'%.*s' is undefined (%s)", (int)v.u.s.len, v.u.s.p, what);
    else jr_fail(R, at, MESH_EINVAL, "undefined value (%s)", what);
    return jv_none();
}

/* Index into a string by code points: byte offset of code point k. */
static size_t utf8_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) c++;
    return c;
}

static size_t utf8_offset(const char *s, size_t n, size_t k)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (c == k) return i;
            c++;
        }
    }
    return n;
}

static struct jv get_item(struct jrender *R, const struct jnode *at, struct jv obj, struct jv key)
{
    switch (obj.kind) {
    case JV_UNDEF: return undefined_error(R, at, obj, "subscript");
    case JV_DICT: {
        struct jv *v = jv_dict_find(obj.u.dict, key);
        if (v) return *v;
        if (key.kind == JV_STR) return jb_getattr(R, at, obj, jarena_strdup(&R->arena, key.u.s.p, key.u.s.len));
        return jv_undef(NULL);
    }
    case JV_LIST:
    case JV_STR: {
        if (obj.kind == JV_LIST && obj.is_gen) return jv_undef(NULL); /* not subscriptable */
        if (key.kind == JV_STR && obj.kind == JV_LIST)
            return jb_getattr(R, at, obj, jarena_strdup(&R->arena, key.u.s.p, key.u.s.len));
        if (key.kind != JV_INT && key.kind != JV_BOOL) return jv_undef(NULL);
        int64_t i = key.kind == JV_INT ? key.u.i : key.u.b;
        size_t n = obj.kind == JV_LIST ? obj.u.list->n : utf8_count(obj.u.s.p, obj.u.s.len);
        if (i < 0) i += (int64_t)n;
        if (i < 0 || (uint64_t)i >= n) return jv_undef(NULL);
        if (obj.kind == JV_LIST) return obj.u.list->v[i];
        size_t b0 = utf8_offset(obj.u.s.p, obj.u.s.len, (size_t)i);
        size_t b1 = utf8_offset(obj.u.s.p, obj.u.s.len, (size_t)i + 1);
        return jv_strn(obj.u.s.p + b0, b1 - b0);
    }
    case JV_LOOP:
    case JV_METHOD:
    case JV_FUNC:
    case JV_MACRO:
        if (key.kind == JV_STR) return jb_getattr(R, at, obj, jarena_strdup(&R->arena, key.u.s.p, key.u.s.len));
        return jv_undef(NULL);
    default: return jv_undef(NULL);
    }
}

/* Python slice indices for length n. */
static void slice_indices(int64_t n, bool has_a, int64_t a, bool has_b, int64_t b, int64_t st,
                          int64_t *start, int64_t *stop)
{
    if (st > 0) {
        *start = !has_a ? 0 : a < 0 ? (a + n < 0 ? 0 : a + n) : (a > n ? n : a);
        *stop = !has_b ? n : b < 0 ? (b + n < 0 ? 0 : b + n) : (b > n ? n : b);
    } else {
        *start = !has_a ? n - 1 : a < 0 ? (a + n < 0 ? -1 : a + n) : (a >= n ? n - 1 : a);
        *stop = !has_b ? -1 : b < 0 ? (b + n < 0 ? -1 : b + n) : (b >= n ? n - 1 : b);
    }
}

static bool slice_arg(struct jrender *R, const struct jnode *e, int64_t *out, bool *has)
{
    *has = false;
    if (!e) return true;
    struct jv v = jr_eval(R, e);
    if (v.kind == JV_NONE) return true;
    if (v.kind != JV_INT) {
        jr_fail(R, e, MESH_EINVAL, "slice indices must be integers, not %s", jv_type_name(v));
        return false;
    }
    *out = v.u.i;
    *has = true;
    return true;
}

static struct jv eval_slice(struct jrender *R, const struct jnode *n)
{
    struct jv obj = jr_eval(R, n->a);
    int64_t a = 0, b = 0, st = 1;
    bool ha, hb, hs;
    if (!slice_arg(R, n->b, &a, &ha) || !slice_arg(R, n->c, &b, &hb) || !slice_arg(R, n->d, &st, &hs))
        return jv_none();
    if (!hs) st = 1;
    if (st == 0) {
        jr_fail(R, n, MESH_EINVAL, "slice step cannot be zero");
        return jv_none();
    }
    if (obj.kind == JV_UNDEF) return undefined_error(R, n, obj, "slice");
    if (obj.kind != JV_LIST && obj.kind != JV_STR) {
        jr_fail(R, n, MESH_EINVAL, "cannot slice a %s", jv_type_name(obj));
        return jv_none();
    }
    bool is_str = obj.kind == JV_STR;
    /* strings: slice code points through a list of offsets */
    size_t len = is_str ? utf8_count(obj.u.s.p, obj.u.s.len) : obj.u.list->n;
    size_t *offs = NULL;
    if (is_str) {
        offs = jarena_alloc(&R->arena, (len + 1) * sizeof *offs);
        if (!offs) return jv_none();
        size_t k = 0;
        for (size_t i = 0; i < obj.u.s.len; i++)
            if (((unsigned char)obj.u.s.p[i] & 0xC0) != 0x80) offs[k++] = i;
        offs[len] = obj.u.s.len;
    }
    int64_t start, stop;
    slice_indices((int64_t)len, ha, a, hb, b, st, &start, &stop);
    struct jbuf sb = {0};
    struct jv out = is_str ? jv_strn("", 0) : jv_list_new(&R->arena, 0);
    for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st) {
        if (is_str) jbuf_add(&sb, obj.u.s.p + offs[i], offs[i + 1] - offs[i]);
        else if (out.kind == JV_LIST) jv_list_push(&R->arena, out.u.list, obj.u.list->v[i]);
    }
    if (is_str) {
        out = jv_str_copy(&R->arena, sb.p ? sb.p : "", sb.len);
        free(sb.p);
    }
    return out;
}

static struct jv type_error(struct jrender *R, const struct jnode *at, const char *op, struct jv a, struct jv b)
{
    if (a.kind == JV_UNDEF) return undefined_error(R, at, a, op);
    if (b.kind == JV_UNDEF) return undefined_error(R, at, b, op);
    jr_fail(R, at, MESH_EINVAL, "unsupported operand types for %s: '%s' and '%s'", op,
            jv_type_name(a), jv_type_name(b));
    return jv_none();
}

static struct jv repeat(struct jrender *R, const struct jnode *at, struct jv seq, int64_t times)
{
    if (times < 0) times = 0;
    size_t unit = seq.kind == JV_STR ? seq.u.s.len : seq.u.list->n;
    if (unit && (uint64_t)times > ((size_t)16 << 20) / unit) {
        jr_fail(R, at, MESH_ERANGE, "repetition too large");
        return jv_none();
    }
    if (seq.kind == JV_STR) {
        char *p = jarena_alloc(&R->arena, unit * (size_t)times + 1);
        if (!p) return jv_none();
        for (int64_t i = 0; i < times; i++) memcpy(p + unit * (size_t)i, seq.u.s.p, unit);
        return jv_strn(p, unit * (size_t)times);
    }
    struct jv l = jv_list_new(&R->arena, unit * (size_t)times);
    for (int64_t i = 0; i < times && l.kind == JV_LIST; i++)
        for (size_t k = 0; k < unit; k++) jv_list_push(&R->arena, l.u.list, seq.u.list->v[k]);
    return l;
}

static struct jv arith(struct jrender *R, const struct jnode *at, int op, struct jv a, struct jv b)
{
    static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    const char *name = op < 8 ? names[op] : "?";
    if (op == JOP_ADD && a.kind == JV_STR && b.kind == JV_STR) {
        char *p = jarena_alloc(&R->arena, a.u.s.len + b.u.s.len + 1);
        if (!p) return jv_none();
        memcpy(p, a.u.s.p, a.u.s.len);
        memcpy(p + a.u.s.len, b.u.s.p, b.u.s.len);
        return jv_strn(p, a.u.s.len + b.u.s.len);
    }
    if (op == JOP_ADD && a.kind == JV_LIST && b.kind == JV_LIST) {
        struct jv l = jv_list_new(&R->arena, a.u.list->n + b.u.list->n);
        for (size_t i = 0; l.kind == JV_LIST && i < a.u.list->n; i++) jv_list_push(&R->arena, l.u.list, a.u.list->v[i]);
        for (size_t i = 0; l.kind == JV_LIST && i < b.u.list->n; i++) jv_list_push(&R->arena, l.u.list, b.u.list->v[i]);
        return l;
    }
    if (a.kind == JV_BOOL && op == JOP_MUL && (b.kind == JV_STR || b.kind == JV_LIST)) a = jv_int(a.u.b);
    if (b.kind == JV_BOOL && op == JOP_MUL && (a.kind == JV_STR || a.kind == JV_LIST)) b = jv_int(b.u.b);
    if (op == JOP_MUL && (a.kind == JV_STR || a.kind == JV_LIST) && b.kind == JV_INT) return repeat(R, at, a, b.u.i);
    if (op == JOP_MUL && (b.kind == JV_STR || b.kind == JV_LIST) && a.kind == JV_INT) return repeat(R, at, b, a.u.i);
    if (!jv_is_number(a) || !jv_is_number(b)) return type_error(R, at, name, a, b);
    bool ints = a.kind != JV_FLOAT && b.kind != JV_FLOAT;
    int64_t x = a.kind == JV_INT ? a.u.i : a.kind == JV_BOOL ? a.u.b : 0;
    int64_t y = b.kind == JV_INT ? b.u.i : b.kind == JV_BOOL ? b.u.b : 0;
    double fx = jv_num(a), fy = jv_num(b);
    int64_t r;
    switch (op) {
    case JOP_ADD:
        if (ints && !__builtin_add_overflow(x, y, &r)) return jv_int(r);
        return jv_float(fx + fy);
    case JOP_SUB:
        if (ints && !__builtin_sub_overflow(x, y, &r)) return jv_int(r);
        return jv_float(fx - fy);
    case JOP_MUL:
        if (ints && !__builtin_mul_overflow(x, y, &r)) return jv_int(r);
        return jv_float(fx * fy);
    case JOP_DIV:
        if (fy == 0) break;
        return jv_float(fx / fy);
    case JOP_FDIV:
    case JOP_MOD:
        if (ints) {
            if (y == 0) break;
            if (x == INT64_MIN && y == -1) return op == JOP_MOD ? jv_int(0) : jv_float(-(double)INT64_MIN);
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            return jv_int(op == JOP_FDIV ? q : m);
        }
        if (fy == 0) break;
        if (op == JOP_FDIV) return jv_float(floor(fx / fy));
        {
            double m = fmod(fx, fy);
            if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
            return jv_float(m);
        }
    case JOP_POW:
        if (ints && y >= 0) {
            int64_t acc = 1;
            bool ovf = false;
            for (int64_t i = 0; i < y && !ovf; i++) {
                ovf = __builtin_mul_overflow(acc, x, &acc);
                if (acc == 0 || acc == 1) break;
                if (i > 64 && (x == 1 || x == -1)) break;
            }
            if (!ovf && !(x == -1 && (y & 1) == 0 && acc != 1)) return jv_int(x == -1 ? ((y & 1) ? -1 : 1) : acc);
        }
        return jv_float(pow(fx, fy));
    default: break;
    }
    jr_fail(R, at, MESH_EINVAL, "division by zero");
    return jv_none();
}

static bool contains(struct jrender *R, const struct jnode *at, struct jv item, struct jv seq)
{
    switch (seq.kind) {
    case JV_STR:
        if (item.kind != JV_STR) {
            jr_fail(R, at, MESH_EINVAL, "'in <string>' requires a string, not %s", jv_type_name(item));
            return false;
        }
        if (item.u.s.len == 0) return true;
        return memmem(seq.u.s.p, seq.u.s.len, item.u.s.p, item.u.s.len) != NULL;
    case JV_LIST:
        for (size_t i = 0; i < seq.u.list->n; i++)
            if (jv_equal(seq.u.list->v[i], item)) return true;
        return false;
    case JV_DICT: return jv_dict_find(seq.u.dict, item) != NULL;
    case JV_UNDEF: return false; /* jinja2's Undefined iterates as empty */
    default:
        jr_fail(R, at, MESH_EINVAL, "argument of type '%s' is not iterable", jv_type_name(seq));
        return false;
    }
}

static bool compare(struct jrender *R, const struct jnode *at, int op, struct jv a, struct jv b)
{
    switch (op) {
    case JOP_EQ: return jv_equal(a, b);
    case JOP_NE: return !jv_equal(a, b);
    case JOP_IN: return contains(R, at, a, b);
    case JOP_NOTIN: return !contains(R, at, a, b);
    default: break;
    }
    bool ok;
    int c = jv_compare(a, b, &ok);
    if (!ok) {
        static const char *const names[] = {"<", "<=", ">", ">="};
        type_error(R, at, names[op - JOP_LT], a, b);
        return false;
    }
    return op == JOP_LT ? c < 0 : op == JOP_LE ? c <= 0 : op == JOP_GT ? c > 0 : c >= 0;
}

/* Evaluates a call's arguments; kwargs names point into the tree. */
struct call_args {
    struct jv *args, *kw_vals;
    const char **kw_names;
    int n_args, n_kw;
};

static bool eval_args(struct jrender *R, const struct jnode *n, struct call_args *ca)
{
    memset(ca, 0, sizeof *ca);
    ca->args = jarena_alloc(&R->arena, ((size_t)n->args.n + 1) * sizeof *ca->args);
    ca->kw_vals = jarena_alloc(&R->arena, ((size_t)n->kwargs.n + 1) * sizeof *ca->kw_vals);
    ca->kw_names = jarena_alloc(&R->arena, ((size_t)n->kwargs.n + 1) * sizeof *ca->kw_names);
    if (!ca->args || !ca->kw_vals || !ca->kw_names) return false;
    for (int i = 0; i < n->args.n && !R->rc; i++) ca->args[ca->n_args++] = jr_eval(R, n->args.v[i]);
    for (int i = 0; i < n->kwargs.n && !R->rc; i++) {
        ca->kw_names[ca->n_kw] = n->kwargs.v[i]->name;
        ca->kw_vals[ca->n_kw++] = jr_eval(R, n->kwargs.v[i]->a);
    }
    return !R->rc;
}

static struct jv eval_filter(struct jrender *R, const struct jnode *n, struct jv in)
{
    struct call_args ca;
    if (!eval_args(R, n, &ca)) return jv_none();
    return jb_filter(R, n, n->name, in, ca.args, ca.n_args, ca.kw_names, ca.kw_vals, ca.n_kw);
}

static struct jv eval_cmp(struct jrender *R, const struct jnode *n)
{
    struct jv left = jr_eval(R, n->a);
    for (int i = 0; i < n->args.n && !R->rc; i++) {
        struct jv right = jr_eval(R, n->args.v[i]);
        if (!compare(R, n, n->ops[i], left, right)) return jv_bool(false);
        left = right;
    }
    return jv_bool(!R->rc);
}

static struct jv eval_literal(struct jrender *R, const struct jnode *n)
{
    if (n->kind == JN_DICT) {
        struct jv d = jv_dict_new(&R->arena);
        for (int i = 0; i + 1 < n->args.n && !R->rc && d.kind == JV_DICT; i += 2) {
            struct jv k = jr_eval(R, n->args.v[i]);
            struct jv v = jr_eval(R, n->args.v[i + 1]);
            jv_dict_set(&R->arena, d.u.dict, k, v);
        }
        return d;
    }
    struct jv l = jv_list_new(&R->arena, (size_t)n->args.n);
    l.is_tuple = n->kind == JN_TUPLE;
    for (int i = 0; i < n->args.n && !R->rc && l.kind == JV_LIST; i++)
        jv_list_push(&R->arena, l.u.list, jr_eval(R, n->args.v[i]));
    return l;
}

struct jv jr_eval(struct jrender *R, const struct jnode *n)
{
    if (R->rc || !n) return jv_none();
    switch (n->kind) {
    case JN_CONST: return n->val;
    case JN_NAME: return jr_lookup(R, n->name);
    case JN_ATTR: {
        struct jv obj = jr_eval(R, n->a);
        if (R->rc) return jv_none();
        if (obj.kind == JV_UNDEF) return undefined_error(R, n, obj, "attribute access");
        return jb_getattr(R, n, obj, n->name);
    }
    case JN_ITEM: {
        struct jv obj = jr_eval(R, n->a);
        struct jv key = jr_eval(R, n->b);
        if (R->rc) return jv_none();
        return get_item(R, n, obj, key);
    }
    case JN_SLICE: return eval_slice(R, n);
    case JN_CALL: {
        struct jv fn = jr_eval(R, n->a);
        struct call_args ca;
        if (R->rc || !eval_args(R, n, &ca)) return jv_none();
        return jr_call_value(R, n, fn, ca.args, ca.n_args, ca.kw_names, ca.kw_vals, ca.n_kw);
    }
    case JN_FILTER: return eval_filter(R, n, jr_eval(R, n->a));
    case JN_TEST: {
        struct jv in = jr_eval(R, n->a);
        struct call_args ca;
        if (R->rc || !eval_args(R, n, &ca)) return jv_none();
        int r = jb_test(R, n, n->name, in, ca.args, ca.n_args);
        return jv_bool(r > 0 ? !n->flag : r == 0 ? n->flag : false);
    }
    case JN_NOT: return jv_bool(!jv_truthy(jr_eval(R, n->a)));
    case JN_NEG:
    case JN_POS: {
        struct jv v = jr_eval(R, n->a);
        if (R->rc) return jv_none();
        if (v.kind == JV_INT) return n->kind == JN_POS ? v : v.u.i == INT64_MIN ? jv_float(-(double)v.u.i) : jv_int(-v.u.i);
        if (v.kind == JV_FLOAT) return n->kind == JN_POS ? v : jv_float(-v.u.f);
        if (v.kind == JV_BOOL) return jv_int(n->kind == JN_POS ? v.u.b : -(int64_t)v.u.b);
        if (v.kind == JV_UNDEF) return undefined_error(R, n, v, "unary operator");
        jr_fail(R, n, MESH_EINVAL, "bad operand type for unary %c: '%s'", n->kind == JN_NEG ? '-' : '+', jv_type_name(v));
        return jv_none();
    }
    case JN_BIN: {
        struct jv a = jr_eval(R, n->a);
        struct jv b = jr_eval(R, n->b);
        if (R->rc) return jv_none();
        if (n->op == JOP_CONCAT) {
            struct jbuf sb = {0};
            jv_write_str(&sb, a);
            jv_write_str(&sb, b);
            struct jv s = jv_str_copy(&R->arena, sb.p ? sb.p : "", sb.len);
            free(sb.p);
            return s;
        }
        return arith(R, n, n->op, a, b);
    }
    case JN_AND: {
        struct jv a = jr_eval(R, n->a);
        return jv_truthy(a) ? jr_eval(R, n->b) : a;
    }
    case JN_OR: {
        struct jv a = jr_eval(R, n->a);
        return jv_truthy(a) ? a : jr_eval(R, n->b);
    }
    case JN_COND:
        if (jv_truthy(jr_eval(R, n->b))) return jr_eval(R, n->a);
        return n->c ? jr_eval(R, n->c) : jv_undef(NULL);
    case JN_LIST:
    case JN_TUPLE:
    case JN_DICT: return eval_literal(R, n);
    case JN_CMP: return eval_cmp(R, n);
    default: jr_fail(R, n, MESH_EINVAL, "not an expression"); return jv_none();
    }
}

/* ---- statements ----------------------------------------------------------------------- */

static void run_body(struct jrender *R, const struct jnodes *body);

static void assign(struct jrender *R, const struct jnode *target, struct jv v)
{
    if (target->kind == JN_NAME) {
        jr_set(R, R->frame, target->name, v);
        return;
    }
    if (target->kind == JN_ATTR) {
        struct jv ns = jr_lookup(R, target->a->name);
        if (ns.kind != JV_DICT || !ns.is_ns) {
            jr_fail(R, target, MESH_EINVAL, "cannot assign attribute '%s' on a %s (only on a namespace())",
                    target->name, ns.kind == JV_UNDEF ? "undefined value" : jv_type_name(ns));
            return;
        }
        jv_dict_set(&R->arena, ns.u.dict, jv_strn(target->name, strlen(target->name)), v);
        return;
    }
    /* tuple unpacking */
    struct jlist *l = jb_to_list(R, target, v);
    if (!l) return;
    if ((int)l->n != target->args.n) {
        jr_fail(R, target, MESH_EINVAL, "cannot unpack %zu values into %d names", l->n, target->args.n);
        return;
    }
    for (int i = 0; i < target->args.n; i++) jr_set(R, R->frame, target->args.v[i]->name, l->v[i]);
}

/* Output of body rendered into a fresh buffer, as a string value. */
static struct jv capture(struct jrender *R, const struct jnodes *body)
{
    struct jbuf *saved = R->out;
    struct jbuf b = {.max = saved->max};
    R->out = &b;
    run_body(R, body);
    R->out = saved;
    if (b.rc && !R->rc) jr_fail(R, NULL, b.rc, b.rc == MESH_ERANGE ? "output too large" : "out of memory");
    struct jv s = jv_str_copy(&R->arena, b.p ? b.p : "", b.len);
    free(b.p);
    return s;
}

static void run_for_items(struct jrender *R, const struct jnode *n, struct jlist *items)
{
    struct jframe *saved = R->frame;
    struct jframe *f = frame_new(R, saved);
    struct jloop *lp = jarena_alloc(&R->arena, sizeof *lp);
    if (!f || !lp) return;
    lp->items = items;
    lp->for_node = n;
    lp->frame = saved;
    struct jloop *outer = NULL;
    struct jv *ol = frame_find(saved, "loop");
    if (ol && ol->kind == JV_LOOP) outer = ol->u.loop;
    lp->depth0 = outer && n->flag && outer->for_node == n ? outer->depth0 + 1 : 0;
    R->frame = f;
    struct jv lv = {.kind = JV_LOOP};
    lv.u.loop = lp;
    for (size_t i = 0; i < items->n && step(R, n); i++) {
        lp->index0 = i;
        f->n = 0; /* each iteration starts a fresh scope, as jinja2's compiled loops do */
        jr_set(R, f, "loop", lv);
        assign(R, n->a, items->v[i]);
        run_body(R, &n->body);
        if (R->loop_ctl == 1) {
            R->loop_ctl = 0;
            break;
        }
        R->loop_ctl = 0;
    }
    R->frame = saved;
    if (items->n == 0 && !R->rc) run_body(R, &n->orelse);
}

/* The items a for runs over: the iterable, filtered by the loop's if. */
static struct jlist *for_items(struct jrender *R, const struct jnode *n, struct jv iter)
{
    struct jlist *all = jb_to_list(R, n->b ? n->b : n, iter);
    if (!all || !n->c) return all;
    struct jlist *keep = jarena_alloc(&R->arena, sizeof *keep);
    if (!keep) return NULL;
    struct jframe *saved = R->frame;
    struct jframe *f = frame_new(R, saved);
    if (!f) return NULL;
    R->frame = f;
    for (size_t i = 0; i < all->n && step(R, n); i++) {
        assign(R, n->a, all->v[i]);
        if (jv_truthy(jr_eval(R, n->c))) jv_list_push(&R->arena, keep, all->v[i]);
    }
    R->frame = saved;
    return R->rc ? NULL : keep;
}

struct jv jr_loop_again(struct jrender *R, const struct jnode *at, struct jloop *lp, struct jv items)
{
    if (!lp->for_node->flag) {
        jr_fail(R, at, MESH_EINVAL, "loop() needs a 'for ... recursive' loop");
        return jv_none();
    }
    if (++R->depth > MAX_CALL_DEPTH) {
        jr_fail(R, at, MESH_ERANGE, "recursion too deep");
        return jv_none();
    }
    struct jframe *saved = R->frame;
    R->frame = lp->frame;
    struct jbuf *saved_out = R->out;
    struct jbuf b = {.max = saved_out->max};
    R->out = &b;
    struct jlist *l = for_items(R, lp->for_node, items);
    if (l) run_for_items(R, lp->for_node, l);
    R->out = saved_out;
    R->frame = saved;
    R->depth--;
    struct jv s = jv_str_copy(&R->arena, b.p ? b.p : "", b.len);
    free(b.p);
    return s;
}

static void run_macro_def(struct jrender *R, const struct jnode *n)
{
    struct jmacro *m = jarena_alloc(&R->arena, sizeof *m);
    if (!m) return;
    m->node = n;
    m->closure = R->frame;
    struct jv v = {.kind = JV_MACRO};
    v.u.macro = m;
    jr_set(R, R->frame, n->name, v);
}

static void run_call_block(struct jrender *R, const struct jnode *n)
{
    struct jmacro *m = jarena_alloc(&R->arena, sizeof *m);
    if (!m) return;
    m->node = n;
    m->closure = R->frame;
    struct jv caller = {.kind = JV_MACRO};
    caller.u.macro = m;
    const struct jnode *call = n->a;
    struct jv fn = jr_eval(R, call->a);
    struct call_args ca;
    if (R->rc || !eval_args(R, call, &ca)) return;
    struct jv saved = R->caller;
    R->caller = caller;
    struct jv out = jr_call_value(R, call, fn, ca.args, ca.n_args, ca.kw_names, ca.kw_vals, ca.n_kw);
    R->caller = saved;
    jv_write_str(R->out, out);
}

static void run_stmt(struct jrender *R, const struct jnode *n)
{
    if (!step(R, n)) return;
    switch (n->kind) {
    case JN_TEXT: jbuf_add(R->out, n->val.u.s.p, n->val.u.s.len); break;
    case JN_OUTPUT: {
        struct jv v = jr_eval(R, n->a);
        if (!R->rc) jv_write_str(R->out, v);
        break;
    }
    case JN_IF:
        if (jv_truthy(jr_eval(R, n->a))) run_body(R, &n->body);
        else if (!R->rc) run_body(R, &n->orelse);
        break;
    case JN_FOR: {
        struct jv iter = jr_eval(R, n->b);
        if (R->rc) break;
        struct jlist *items = for_items(R, n, iter);
        if (items) run_for_items(R, n, items);
        break;
    }
    case JN_SET: {
        struct jv v = jr_eval(R, n->b);
        if (!R->rc) assign(R, n->a, v);
        break;
    }
    case JN_SET_BLOCK: {
        struct jv v = capture(R, &n->body);
        for (const struct jnode *f = n->b; f && !R->rc;) { /* filters apply innermost first */
            const struct jnode *chain[64];
            int k = 0;
            for (const struct jnode *g = f; g && k < 64; g = g->a) chain[k++] = g;
            for (int i = k - 1; i >= 0 && !R->rc; i--) v = eval_filter(R, chain[i], v);
            break;
        }
        if (!R->rc) assign(R, n->a, v);
        break;
    }
    case JN_MACRO: run_macro_def(R, n); break;
    case JN_CALL_BLOCK: run_call_block(R, n); break;
    case JN_FILTER_BLOCK: {
        struct jv v = capture(R, &n->body);
        const struct jnode *chain[64];
        int k = 0;
        for (const struct jnode *g = n->a; g && k < 64; g = g->a) chain[k++] = g;
        for (int i = k - 1; i >= 0 && !R->rc; i--) v = eval_filter(R, chain[i], v);
        if (!R->rc) jv_write_str(R->out, v);
        break;
    }
    case JN_BREAK: R->loop_ctl = 1; break;
    case JN_CONTINUE: R->loop_ctl = 2; break;
    case JN_BLOCK: run_body(R, &n->body); break;
    default: jr_fail(R, n, MESH_EINVAL, "not a statement");
    }
}

static void run_body(struct jrender *R, const struct jnodes *body)
{
    for (int i = 0; i < body->n && !R->rc && !R->loop_ctl; i++) run_stmt(R, body->v[i]);
}

/* ---- calls ---------------------------------------------------------------------------- */

static struct jv call_macro(struct jrender *R, const struct jnode *at, struct jmacro *m,
                            const struct jv *args, int n_args, const char *const *kw_names,
                            const struct jv *kw_vals, int n_kw)
{
    const struct jnode *def = m->node;
    if (++R->depth > MAX_CALL_DEPTH) {
        jr_fail(R, at, MESH_ERANGE, "macro recursion too deep");
        return jv_none();
    }
    struct jframe *saved = R->frame;
    struct jframe *f = frame_new(R, m->closure);
    if (!f) return jv_none();
    R->frame = f;
    struct jv caller = R->caller;
    R->caller = jv_undef(NULL);
    const char *mname = def->name ? def->name : "caller";
    struct jv varargs = jv_list_new(&R->arena, 0), kwargs = jv_dict_new(&R->arena);
    int np = def->args.n;
    for (int i = 0; i < n_args; i++) {
        if (i < np) jr_set(R, f, def->args.v[i]->name, args[i]);
        else if (varargs.kind == JV_LIST) jv_list_push(&R->arena, varargs.u.list, args[i]);
    }
    for (int k = 0; k < n_kw; k++) {
        int i = 0;
        while (i < np && strcmp(def->args.v[i]->name, kw_names[k])) i++;
        if (i < np && i < n_args) {
            jr_fail(R, at, MESH_EINVAL, "macro '%s' got multiple values for argument '%s'", mname, kw_names[k]);
            break;
        }
        if (i < np) jr_set(R, f, kw_names[k], kw_vals[k]);
        else if (kwargs.kind == JV_DICT)
            jv_dict_set(&R->arena, kwargs.u.dict, jv_strn(kw_names[k], strlen(kw_names[k])), kw_vals[k]);
    }
    for (int i = n_args; i < np && !R->rc; i++) {
        bool given = false;
        for (int k = 0; k < f->n; k++)
            if (!strcmp(f->vars[k].name, def->args.v[i]->name)) given = true;
        if (given) continue;
        jr_set(R, f, def->args.v[i]->name,
               def->args.v[i]->a ? jr_eval(R, def->args.v[i]->a) : jv_undef(def->args.v[i]->name));
    }
    varargs.is_tuple = true;
    jr_set(R, f, "varargs", varargs);
    jr_set(R, f, "kwargs", kwargs);
    if (caller.kind == JV_MACRO) jr_set(R, f, "caller", caller);
    struct jv out = R->rc ? jv_none() : capture(R, &def->body);
    R->frame = saved;
    R->depth--;
    return out;
}

struct jv jr_call_value(struct jrender *R, const struct jnode *at, struct jv fn,
                        const struct jv *args, int n_args, const char *const *kw_names,
                        const struct jv *kw_vals, int n_kw)
{
    if (R->rc) return jv_none();
    switch (fn.kind) {
    case JV_MACRO: return call_macro(R, at, fn.u.macro, args, n_args, kw_names, kw_vals, n_kw);
    case JV_METHOD: return jb_call_method(R, at, fn.u.method, args, n_args, kw_names, kw_vals, n_kw);
    case JV_FUNC: return jb_call_global(R, at, fn.u.func, args, n_args, kw_names, kw_vals, n_kw);
    case JV_LOOP:
        if (n_args != 1) {
            jr_fail(R, at, MESH_EINVAL, "loop() takes one iterable");
            return jv_none();
        }
        return jr_loop_again(R, at, fn.u.loop, args[0]);
    case JV_UNDEF: return undefined_error(R, at, fn, "call");
    default:
        jr_fail(R, at, MESH_EINVAL, "'%s' object is not callable", jv_type_name(fn));
        return jv_none();
    }
}

/* ---- entry ---------------------------------------------------------------------------- */

/* messages[*].tool_calls[*].function.arguments: JSON text of an object -> the object. */
static void tool_args_to_objects(struct jrender *R, struct jv ctx)
{
    struct jv *msgs = jv_dict_get(ctx.u.dict, "messages", 8);
    if (!msgs || msgs->kind != JV_LIST) return;
    for (size_t i = 0; i < msgs->u.list->n; i++) {
        struct jv m = msgs->u.list->v[i];
        struct jv *calls = m.kind == JV_DICT ? jv_dict_get(m.u.dict, "tool_calls", 10) : NULL;
        if (!calls || calls->kind != JV_LIST) continue;
        for (size_t k = 0; k < calls->u.list->n; k++) {
            struct jv c = calls->u.list->v[k];
            struct jv *fn = c.kind == JV_DICT ? jv_dict_get(c.u.dict, "function", 8) : NULL;
            struct jv *args = fn && fn->kind == JV_DICT ? jv_dict_get(fn->u.dict, "arguments", 9) : NULL;
            if (!args || args->kind != JV_STR) continue;
            struct jv obj;
            char e[8];
            if (jv_parse_json(&R->arena, args->u.s.p, args->u.s.len, &obj, e, sizeof e) == 0 &&
                obj.kind == JV_DICT)
                *args = obj;
        }
    }
}

int jinja_render(const struct jinja_tmpl *t, const char *ctx_json, size_t ctx_len,
                 const struct jinja_render_opts *o, char **out, size_t *out_len,
                 struct jinja_error *err)
{
    *out = NULL;
    if (out_len) *out_len = 0;
    if (err) memset(err, 0, sizeof *err);
    struct jbuf b = {.max = o && o->max_output ? o->max_output : (size_t)16 << 20};
    struct jrender R = {.out = &b, .err = err, .max_steps = 5000000};
    R.arena.limit = (size_t)128 << 20;
    R.now = o && o->now ? o->now : (int64_t)time(NULL);
    R.globals = frame_new(&R, NULL);
    R.frame = R.globals;
    int rc = R.globals ? 0 : MESH_ENOMEM;
    struct jv ctx = jv_none();
    char msg[200] = "";
    if (!rc && ctx_json && ctx_len)
        rc = jv_parse_json(&R.arena, ctx_json, ctx_len, &ctx, msg, sizeof msg);
    if (rc) {
        if (err) snprintf(err->msg, sizeof err->msg, "context: %s", msg[0] ? msg : err_str(rc));
        goto out;
    }
    if (ctx.kind == JV_DICT) {
        if (o && o->tool_args_objects) tool_args_to_objects(&R, ctx);
        for (size_t i = 0; i < ctx.u.dict->n; i++) {
            struct jv k = ctx.u.dict->keys[i];
            if (k.kind == JV_STR) jr_set(&R, R.globals, k.u.s.p, ctx.u.dict->vals[i]);
        }
    } else if (ctx.kind != JV_NONE) {
        rc = MESH_EINVAL;
        if (err) snprintf(err->msg, sizeof err->msg, "context: the JSON must be an object");
        goto out;
    }
    run_body(&R, &t->body);
    rc = R.rc ? R.rc : b.rc;
    if (!rc && R.arena.rc) rc = R.arena.rc;
    if (rc && err && !err->msg[0])
        snprintf(err->msg, sizeof err->msg, "%s", rc == MESH_ERANGE ? "output too large" : err_str(rc));
out:
    jarena_free(&R.arena);
    if (rc) {
        free(b.p);
        return rc;
    }
    if (!b.p) {
        b.p = calloc(1, 1);
        if (!b.p) return MESH_ENOMEM;
    }
    *out = b.p;
    if (out_len) *out_len = b.len;
    return 0;
}
