/* jinja_internal.h - shared internals of the Jinja interpreter (jinja_*.c): the arena,
 * values, the syntax tree and the render state. Not part of the engine's API.
 *
 * Memory: everything a parse makes lives in the template's arena, everything a render
 * makes in the render's arena; both are freed whole. Values are small structs passed by
 * value; lists, dicts and strings point into an arena and are shared as Python shares
 * objects. Errors are sticky: the first one is kept in the state and later steps return
 * at once, so no evaluation function needs an error return of its own.
 */
#ifndef MESH_ENGINE_JINJA_INTERNAL_H
#define MESH_ENGINE_JINJA_INTERNAL_H

#include "engine/jinja.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- arena ---------------------------------------------------------------------------- */

struct jarena_chunk;
struct jarena {
    struct jarena_chunk *head;
    size_t used_total, limit; /* bytes handed out; MESH_ERANGE beyond limit */
    int rc;                   /* first failure (MESH_ENOMEM / MESH_ERANGE) */
};
void *jarena_alloc(struct jarena *a, size_t n); /* zeroed, 16-aligned; NULL on failure */
char *jarena_strdup(struct jarena *a, const char *s, size_t n);
void jarena_free(struct jarena *a);

/* ---- values --------------------------------------------------------------------------- */

enum jv_kind {
    JV_UNDEF = 0, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT,
    JV_MACRO,  /* u.macro: a {% macro %} or the caller of a {% call %} */
    JV_METHOD, /* u.method: a bound method such as "abc".upper */
    JV_LOOP,   /* u.loop: the `loop` variable of a for */
    JV_FUNC,   /* u.func: a global function (range, namespace, ...) */
};

struct jlist;
struct jdict;
struct jnode;
struct jmacro;
struct jmethod;
struct jloop;

struct jv {
    uint8_t kind;
    bool is_ns;    /* dict made by namespace(): attributes may be assigned */
    bool is_tuple; /* list that prints as a Python tuple: (1, 2) */
    bool is_gen;   /* list standing for a Python generator (map, select, ...): always true,
                    * no len(), prints as "<generator object>"; | list makes it a list */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p; /* also an undefined value's name, for messages */
            size_t len;
        } s;
        struct jlist *list;
        struct jdict *dict;
        struct jmacro *macro;
        struct jmethod *method;
        struct jloop *loop;
        int func;
    } u;
};

struct jlist {
    struct jv *v;
    size_t n, cap;
};

struct jdict { /* insertion-ordered; linear lookup (chat dicts are small) */
    struct jv *keys, *vals;
    size_t n, cap;
};

struct jframe;
struct jmacro {
    const struct jnode *node; /* JN_MACRO, or JN_CALL_BLOCK for a caller */
    struct jframe *closure;   /* the frame it was defined in */
};

struct jmethod {
    struct jv self;
    const char *name;
};

struct jloop {
    struct jlist *items;
    size_t index0;
    int depth0;
    const struct jnode *for_node; /* for loop(...) of a recursive for */
    struct jframe *frame;         /* where the for runs */
    struct jv last_changed;       /* loop.changed() */
    bool has_changed;
};

static inline struct jv jv_undef(const char *name) { struct jv v = {.kind = JV_UNDEF}; v.u.s.p = name; v.u.s.len = name ? __builtin_strlen(name) : 0; return v; }
static inline struct jv jv_none(void) { return (struct jv){.kind = JV_NONE}; }
static inline struct jv jv_bool(bool b) { struct jv v = {.kind = JV_BOOL}; v.u.b = b; return v; }
static inline struct jv jv_int(int64_t i) { struct jv v = {.kind = JV_INT}; v.u.i = i; return v; }
static inline struct jv jv_float(double f) { struct jv v = {.kind = JV_FLOAT}; v.u.f = f; return v; }
static inline struct jv jv_strn(const char *p, size_t n) { struct jv v = {.kind = JV_STR}; v.u.s.p = p; v.u.s.len = n; return v; }

struct jv jv_str_copy(struct jarena *a, const char *p, size_t n);
struct jv jv_list_new(struct jarena *a, size_t cap);
struct jv jv_dict_new(struct jarena *a);
int jv_list_push(struct jarena *a, struct jlist *l, struct jv x);
/* Sets d[k] = x (replaces an equal key). */
int jv_dict_set(struct jarena *a, struct jdict *d, struct jv k, struct jv x);
/* d[key] or NULL. */
struct jv *jv_dict_get(const struct jdict *d, const char *key, size_t len);
struct jv *jv_dict_find(const struct jdict *d, struct jv key);

bool jv_truthy(struct jv v);
bool jv_equal(struct jv a, struct jv b);
/* Python ordering of numbers with numbers and strings with strings; *ok false otherwise. */
int jv_compare(struct jv a, struct jv b, bool *ok);
const char *jv_type_name(struct jv v);
bool jv_is_number(struct jv v);
double jv_num(struct jv v);

/* ---- text output ---------------------------------------------------------------------- */

struct jbuf {
    char *p;
    size_t len, cap, max;
    int rc; /* sticky: MESH_ENOMEM or MESH_ERANGE (max exceeded) */
};
void jbuf_add(struct jbuf *b, const char *s, size_t n);
void jbuf_addc(struct jbuf *b, char c);
void jbuf_addf(struct jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Python's str(v) (print form) and repr(v) appended to b. */
void jv_write_str(struct jbuf *b, struct jv v);
void jv_write_repr(struct jbuf *b, struct jv v);
/* json.dumps's options: indent_str NULL = indent None; separators (item, key). */
struct jjson_opts {
    const char *indent_str;
    size_t indent_len;
    const char *item_sep, *key_sep;
    bool ensure_ascii, sort_keys;
};
void jjson_opts_init(struct jjson_opts *o); /* HF's tojson defaults: compact, no sorting */
/* json.dumps(v, **o). Returns 0 or MESH_EINVAL for a value JSON cannot hold (undefined,
 * macro, generator). */
int jv_write_json(struct jbuf *b, struct jv v, const struct jjson_opts *o, int depth);
/* Python float repr ("1.0", "1e-05", "inf"). */
void jv_write_float(struct jbuf *b, double f);
/* JSON text -> value (objects to ordered dicts, ints stay ints). 0 or MESH_EINVAL with a
 * message in err. */
int jv_parse_json(struct jarena *a, const char *s, size_t len, struct jv *out, char *err,
                  size_t err_cap);

/* ---- syntax tree ---------------------------------------------------------------------- */

enum jn_kind {
    /* statements */
    JN_TEXT, JN_OUTPUT, JN_IF, JN_FOR, JN_SET, JN_SET_BLOCK, JN_MACRO, JN_CALL_BLOCK,
    JN_FILTER_BLOCK, JN_BREAK, JN_CONTINUE, JN_BLOCK,
    /* expressions */
    JN_CONST, JN_NAME, JN_ATTR, JN_ITEM, JN_SLICE, JN_CALL, JN_FILTER, JN_TEST, JN_NOT,
    JN_NEG, JN_POS, JN_BIN, JN_AND, JN_OR, JN_COND, JN_LIST, JN_TUPLE, JN_DICT, JN_KWARG,
    JN_CMP,
};

enum jn_op {
    JOP_ADD = 1, JOP_SUB, JOP_MUL, JOP_DIV, JOP_FDIV, JOP_MOD, JOP_POW, JOP_CONCAT,
    JOP_EQ, JOP_NE, JOP_LT, JOP_LE, JOP_GT, JOP_GE, JOP_IN, JOP_NOTIN,
};

struct jnodes {
    struct jnode **v;
    int n, cap;
};

/* One node; the fields each kind uses:
 *   TEXT/CONST val | OUTPUT a | IF a=cond body orelse | FOR a=target b=iter c=filter body
 *   orelse flag=recursive | SET a=target b=value | SET_BLOCK a=target body
 *   MACRO name args=params (KWARG: name, a=default or NULL) body | CALL_BLOCK a=call
 *   args=caller params body | FILTER_BLOCK a=filter chain (innermost input NULL) body
 *   BLOCK body | NAME name | ATTR a name | ITEM a b | SLICE a b c d | CALL a args kwargs
 *   FILTER/TEST a name args kwargs (TEST flag=negated) | NOT/NEG/POS a | BIN op a b
 *   AND/OR a b | COND a=then b=cond c=else | LIST/TUPLE args | DICT args=k,v,k,v...
 *   KWARG name a | CMP a, args = operands, ops in ops[] */
struct jnode {
    uint8_t kind;
    uint8_t op;
    bool flag;
    int line, col;
    const char *name;
    struct jv val;
    struct jnode *a, *b, *c, *d;
    struct jnodes body, orelse, args, kwargs;
    uint8_t *ops;
};

struct jinja_tmpl {
    struct jarena arena;
    struct jnodes body;
};

/* ---- render state --------------------------------------------------------------------- */

struct jvar {
    const char *name;
    struct jv v;
};

struct jframe {
    struct jframe *parent;
    struct jvar *vars;
    int n, cap;
};

struct jrender {
    struct jarena arena;
    struct jbuf *out; /* where output goes now (macros and set blocks redirect it) */
    struct jframe *globals;
    int64_t now;
    uint64_t steps, max_steps;
    int depth;
    int rc;
    struct jinja_error *err;
    int loop_ctl; /* 1 break, 2 continue, pending */
    struct jframe *frame; /* innermost scope now */
    struct jv caller;     /* set while a {% call %} invokes its macro */
};

/* Runs a recursive for's body again over items (loop(...)); returns its output. */
struct jv jr_loop_again(struct jrender *R, const struct jnode *at, struct jloop *lp, struct jv items);
/* Sets name in frame f. */
int jr_set(struct jrender *R, struct jframe *f, const char *name, struct jv v);

/* Records the first error (rc, node position, message); returns rc. */
int jr_fail(struct jrender *R, const struct jnode *at, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
struct jv jr_eval(struct jrender *R, const struct jnode *n);
struct jv jr_call_value(struct jrender *R, const struct jnode *at, struct jv fn,
                        const struct jv *args, int n_args, const char *const *kw_names,
                        const struct jv *kw_vals, int n_kw);
struct jv jr_lookup(struct jrender *R, const char *name);

/* jinja_builtins.c */
struct jv jb_filter(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
                    const struct jv *args, int n_args, const char *const *kw_names,
                    const struct jv *kw_vals, int n_kw);
/* Test result: 1 true, 0 false, -1 error (recorded). */
int jb_test(struct jrender *R, const struct jnode *at, const char *name, struct jv in,
            const struct jv *args, int n_args);
struct jv jb_getattr(struct jrender *R, const struct jnode *at, struct jv obj, const char *name);
struct jv jb_call_method(struct jrender *R, const struct jnode *at, struct jmethod *m,
                         const struct jv *args, int n_args, const char *const *kw_names,
                         const struct jv *kw_vals, int n_kw);
struct jv jb_call_global(struct jrender *R, const struct jnode *at, int func,
                         const struct jv *args, int n_args, const char *const *kw_names,
                         const struct jv *kw_vals, int n_kw);
/* Global function id by name, or -1. */
int jb_global_find(const char *name);
/* Iterable -> list (strings by code point, dicts by key). NULL + error if not iterable. */
struct jlist *jb_to_list(struct jrender *R, const struct jnode *at, struct jv v);
struct jv jb_str(struct jrender *R, struct jv v);
bool jb_has_filter(const char *name);
bool jb_has_test(const char *name);

#endif
