/* json_schema.c - JSON Schema -> GBNF (json_schema.h).
 *
 * One rule per schema node, named after where it sits ("root", "root-items", "Person-name");
 * $ref targets get one rule each, reserved before their body is written, so recursive
 * definitions work. Objects keep the declared property order; optional properties use two
 * rule chains per object: first_i ("nothing written yet, start at property i") and after_i
 * ("something written, each further property starts with a comma"), which is O(n) rules for
 * n properties and never produces a stray comma. Values are compact JSON with bounded
 * optional spaces; numbers have bounded digits (a random-weight model terminates).
 * Follows JSON Schema 2020-12 for the keywords listed in the header; OpenAI's strict mode is
 * the same subset.
 */
#include "engine/json_schema.h"

#include "core/err.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JS_MAX_DEPTH 64
#define JS_MAX_ITEMS 1000

struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
};

struct js {
    struct sbuf out;
    const cJSON *doc;
    /* $ref targets already given a rule: ref text -> rule name */
    char **ref_keys, **ref_names;
    int n_refs, cap_refs;
    int n_names;        /* counter for unique rule names */
    char *err;
    size_t err_cap;
    int rc;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_puts(struct sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}

/* s[n] as the body of a GBNF "literal". */
static void sb_gbnf_lit(struct sbuf *b, const char *s, size_t n)
{
    sb_puts(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"') sb_puts(b, "\\\"");
        else if (c == '\\') sb_puts(b, "\\\\");
        else if (c == '\n') sb_puts(b, "\\n");
        else if (c == '\r') sb_puts(b, "\\r");
        else if (c == '\t') sb_puts(b, "\\t");
        else if (c < 0x20 || c == 0x7F) {
            snprintf(esc, sizeof esc, "\\x%02X", c);
            sb_puts(b, esc);
        } else sb_put(b, (const char *)&c, 1);
    }
    sb_puts(b, "\"");
}

static int js_fail(struct js *j, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int js_fail(struct js *j, int code, const char *fmt, ...)
{
    if (j->rc) return j->rc;
    j->rc = code;
    if (j->err && j->err_cap) {
        char msg[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(j->err, j->err_cap, "json schema: %s", msg);
    }
    return code;
}

/* ---- fixed rules -------------------------------------------------------------------------- */

#define JS_PRIMITIVES                                                                           \
    "ws ::= ( \" \" | \"\\n\" [ \\t]{0,20} )?\n"                                                                      \
    "jchar ::= [^\"\\\\\\x00-\\x1F\\x7F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4} )\n" \
    "jstring ::= \"\\\"\" jchar* \"\\\"\"\n"                                                    \
    "jint ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,15} )\n"                                           \
    "jnumber ::= jint ( \".\" [0-9]{1,15} )? ( [eE] [-+]? [0-9]{1,3} )?\n"                      \
    "jbool ::= \"true\" | \"false\"\n"                                                          \
    "jnull ::= \"null\"\n"                                                                      \
    "jvalue ::= jobject | jarray | jstring | jnumber | jbool | jnull\n"                         \
    "jobject ::= \"{\" ws ( jstring ws \":\" ws jvalue ws ( \",\" ws jstring ws \":\" ws jvalue ws )* )? \"}\"\n" \
    "jarray ::= \"[\" ws ( jvalue ws ( \",\" ws jvalue ws )* )? \"]\"\n"                        \
    "jdate ::= [0-9]{4} \"-\" ( \"0\" [1-9] | \"1\" [0-2] ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"3\" [01] )\n" \
    "jtime ::= ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,6} )? " \
    "( \"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )\n"                          \
    "jhex ::= [0-9a-f]\n"                                                                       \
    "juuid ::= jhex{8} \"-\" jhex{4} \"-\" jhex{4} \"-\" jhex{4} \"-\" jhex{12}\n"

const char *json_schema_any_object_gbnf(void)
{
    return "root ::= jobject\n" JS_PRIMITIVES;
}

/* ---- schema nodes ----------------------------------------------------------------------- */

static void gen_rule(struct js *j, const cJSON *sch, const char *name, int depth);

/* A fresh rule name derived from base ("Person-name-3"). */
static void new_name(struct js *j, const char *base, const char *suffix, char *out, size_t cap)
{
    char clean[64];
    size_t k = 0;
    for (const char *p = base; *p && k + 1 < sizeof clean; p++)
        clean[k++] = ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '-') ? *p : '-';
    clean[k] = 0;
    snprintf(out, cap, "%s-%s%d", clean, suffix, ++j->n_names);
}

/* Writes a literal JSON value (enum member, const) as a GBNF literal. */
static void put_json_literal(struct js *j, const cJSON *v)
{
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        j->out.oom = true;
        return;
    }
    sb_gbnf_lit(&j->out, s, strlen(s));
    free(s);
}

static void gen_ref(struct js *j, const char *ref, char *rule, size_t cap, int depth)
{
    for (int i = 0; i < j->n_refs; i++)
        if (strcmp(j->ref_keys[i], ref) == 0) {
            snprintf(rule, cap, "%s", j->ref_names[i]);
            return;
        }
    const char *path = NULL;
    if (strncmp(ref, "#/$defs/", 8) == 0) path = "$defs";
    else if (strncmp(ref, "#/definitions/", 14) == 0) path = "definitions";
    else if (strcmp(ref, "#") == 0) path = "";
    if (!path) {
        js_fail(j, MESH_EINVAL, "$ref \"%.100s\": only #, #/$defs/NAME and #/definitions/NAME are supported", ref);
        return;
    }
    const cJSON *target = j->doc;
    if (*path) {
        const char *nm = ref + strlen(path) + 3;
        const cJSON *defs = cJSON_GetObjectItemCaseSensitive(j->doc, path);
        target = defs ? cJSON_GetObjectItemCaseSensitive(defs, nm) : NULL;
        if (!target) {
            js_fail(j, MESH_EINVAL, "$ref \"%.100s\" names no definition", ref);
            return;
        }
        new_name(j, nm, "", rule, cap);
    } else {
        snprintf(rule, cap, "root");
    }
    if (j->n_refs == j->cap_refs) {
        int c = j->cap_refs ? j->cap_refs * 2 : 8;
        char **k = realloc(j->ref_keys, (size_t)c * sizeof *k);
        if (k) j->ref_keys = k;
        char **n = k ? realloc(j->ref_names, (size_t)c * sizeof *n) : NULL;
        if (!n) {
            j->out.oom = true;
            return;
        }
        j->ref_names = n, j->cap_refs = c;
    }
    j->ref_keys[j->n_refs] = strdup(ref);
    j->ref_names[j->n_refs] = strdup(rule);
    if (!j->ref_keys[j->n_refs] || !j->ref_names[j->n_refs]) {
        free(j->ref_keys[j->n_refs]);
        free(j->ref_names[j->n_refs]);
        j->out.oom = true;
        return;
    }
    j->n_refs++;
    if (*path) gen_rule(j, target, rule, depth + 1);
}

/* The rule name for a sub-schema: a primitive's own rule, a $ref's rule, or a new rule. */
static void sub_rule(struct js *j, const cJSON *sch, const char *base, const char *suffix,
                     char *rule, size_t cap, int depth)
{
    new_name(j, base, suffix, rule, cap);
    gen_rule(j, sch, rule, depth + 1);
}

static int get_int(struct js *j, const cJSON *sch, const char *key, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(sch, key);
    if (!v) return dflt;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > JS_MAX_ITEMS ||
        v->valuedouble != (double)(int)v->valuedouble) {
        js_fail(j, MESH_EINVAL, "%s must be an integer from 0 to %d", key, JS_MAX_ITEMS);
        return dflt;
    }
    return (int)v->valuedouble;
}

static void gen_string(struct js *j, const cJSON *sch, const char *name)
{
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(sch, "format");
    if (cJSON_GetObjectItemCaseSensitive(sch, "pattern")) {
        js_fail(j, MESH_EINVAL, "\"pattern\" is not supported (rule %s); use enum or a format", name);
        return;
    }
    const char *f = cJSON_IsString(fmt) ? fmt->valuestring : "";
    const char *body = strcmp(f, "date") == 0 ? "jdate"
                       : strcmp(f, "time") == 0 ? "jtime"
                       : strcmp(f, "date-time") == 0 ? "jdate \"T\" jtime"
                       : strcmp(f, "uuid") == 0 ? "juuid" : NULL;
    if (body) {
        sb_printf(&j->out, "%s ::= \"\\\"\" %s \"\\\"\"\n", name, body);
        return;
    }
    int lo = get_int(j, sch, "minLength", 0), hi = get_int(j, sch, "maxLength", -1);
    if (hi >= 0 && hi < lo) {
        js_fail(j, MESH_EINVAL, "minLength %d is above maxLength %d", lo, hi);
        return;
    }
    if (lo == 0 && hi < 0) sb_printf(&j->out, "%s ::= jstring\n", name);
    else if (hi < 0) sb_printf(&j->out, "%s ::= \"\\\"\" jchar{%d,} \"\\\"\"\n", name, lo);
    else sb_printf(&j->out, "%s ::= \"\\\"\" jchar{%d,%d} \"\\\"\"\n", name, lo, hi);
}

static void gen_array(struct js *j, const cJSON *sch, const char *name, int depth)
{
    const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(sch, "prefixItems");
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(sch, "items");
    int lo = get_int(j, sch, "minItems", 0), hi = get_int(j, sch, "maxItems", -1);
    if (hi >= 0 && hi < lo) {
        js_fail(j, MESH_EINVAL, "minItems %d is above maxItems %d", lo, hi);
        return;
    }
    char item[128];
    if (cJSON_IsArray(prefix) || cJSON_IsArray(items)) { /* tuple: exactly these items */
        const cJSON *tuple = cJSON_IsArray(prefix) ? prefix : items;
        struct sbuf body = {0};
        int k = 0;
        for (const cJSON *it = tuple->child; it && !j->rc; it = it->next, k++) {
            sub_rule(j, it, name, "tuple-", item, sizeof item, depth);
            sb_printf(&body, "%s%s ws", k ? " \",\" ws " : "", item);
        }
        sb_printf(&j->out, "%s ::= \"[\" ws %s \"]\"\n", name, body.p ? body.p : "");
        if (body.oom) j->out.oom = true;
        free(body.p);
        return;
    }
    if (items && !(cJSON_IsBool(items) && cJSON_IsTrue(items))) sub_rule(j, items, name, "item-", item, sizeof item, depth);
    else snprintf(item, sizeof item, "jvalue");
    if (hi == 0) {
        sb_printf(&j->out, "%s ::= \"[\" ws \"]\"\n", name);
    } else if (lo == 0) {
        if (hi < 0) sb_printf(&j->out, "%s ::= \"[\" ws ( %s ws ( \",\" ws %s ws )* )? \"]\"\n", name, item, item);
        else sb_printf(&j->out, "%s ::= \"[\" ws ( %s ws ( \",\" ws %s ws ){0,%d} )? \"]\"\n", name, item, item, hi - 1);
    } else {
        if (hi < 0) sb_printf(&j->out, "%s ::= \"[\" ws %s ws ( \",\" ws %s ws ){%d,} \"]\"\n", name, item, item, lo - 1);
        else sb_printf(&j->out, "%s ::= \"[\" ws %s ws ( \",\" ws %s ws ){%d,%d} \"]\"\n", name, item, item, lo - 1, hi - 1);
    }
}

static bool is_required(const cJSON *req, const char *key)
{
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
        if (cJSON_IsString(r) && strcmp(r->valuestring, key) == 0) return true;
    return false;
}

static void gen_object(struct js *j, const cJSON *sch, const char *name, int depth)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(sch, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(sch, "required");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(sch, "additionalProperties");
    if (req && !cJSON_IsArray(req)) {
        js_fail(j, MESH_EINVAL, "\"required\" must be an array of property names");
        return;
    }
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
        if (!cJSON_IsString(r) || !cJSON_GetObjectItemCaseSensitive(props, r->valuestring)) {
            js_fail(j, MESH_EINVAL, "required property \"%.60s\" is not among the properties",
                    cJSON_IsString(r) ? r->valuestring : "?");
            return;
        }
    /* extra key/value pairs: only when additionalProperties allows them */
    char extra[128] = "";
    bool has_props = props && props->child;
    if (addl && !cJSON_IsFalse(addl)) {
        char val[128] = "jvalue";
        if (!cJSON_IsTrue(addl)) sub_rule(j, addl, name, "extra-value-", val, sizeof val, depth);
        new_name(j, name, "extra-kv-", extra, sizeof extra);
        sb_printf(&j->out, "%s ::= jstring ws \":\" ws %s ws\n", extra, val);
    } else if (!has_props && !addl) {
        sb_printf(&j->out, "%s ::= jobject\n", name);
        return;
    }
    int n = 0;
    for (const cJSON *p = has_props ? props->child : NULL; p; p = p->next) n++;
    if (n > JS_MAX_ITEMS) {
        js_fail(j, MESH_EINVAL, "more than %d properties", JS_MAX_ITEMS);
        return;
    }
    /* kv_i, then the chains from the last property back to the first */
    char (*kv)[128] = calloc((size_t)n + 1, sizeof *kv);
    bool *reqd = calloc((size_t)n + 1, sizeof *reqd);
    if (!kv || !reqd) {
        j->out.oom = true;
        goto done;
    }
    int i = 0;
    for (const cJSON *p = has_props ? props->child : NULL; p && !j->rc; p = p->next, i++) {
        char val[128];
        sub_rule(j, p, p->string, "", val, sizeof val, depth);
        new_name(j, name, "kv-", kv[i], sizeof kv[i]);
        sb_printf(&j->out, "%s ::= ", kv[i]);
        cJSON *ks = cJSON_CreateString(p->string);
        char *kj = ks ? cJSON_PrintUnformatted(ks) : NULL;
        if (!kj) j->out.oom = true;
        else sb_gbnf_lit(&j->out, kj, strlen(kj));
        free(kj);
        cJSON_Delete(ks);
        sb_printf(&j->out, " ws \":\" ws %s ws\n", val);
        reqd[i] = is_required(req, p->string);
    }
    if (j->rc) goto done;
    char base[100];
    new_name(j, name, "", base, sizeof base);
    const char *tail = extra[0] ? extra : NULL;
    /* after_n: further extras, each after a comma */
    if (tail) sb_printf(&j->out, "%s-after%d ::= ( \",\" ws %s )*\n", base, n, tail);
    else sb_printf(&j->out, "%s-after%d ::= \"\"\n", base, n);
    if (tail) sb_printf(&j->out, "%s-first%d ::= ( %s %s-after%d )?\n", base, n, tail, base, n);
    else sb_printf(&j->out, "%s-first%d ::= \"\"\n", base, n);
    for (i = n - 1; i >= 0; i--) {
        if (reqd[i]) {
            sb_printf(&j->out, "%s-after%d ::= \",\" ws %s %s-after%d\n", base, i, kv[i], base, i + 1);
            sb_printf(&j->out, "%s-first%d ::= %s %s-after%d\n", base, i, kv[i], base, i + 1);
        } else {
            sb_printf(&j->out, "%s-after%d ::= ( \",\" ws %s )? %s-after%d\n", base, i, kv[i], base, i + 1);
            sb_printf(&j->out, "%s-first%d ::= %s %s-after%d | %s-first%d\n", base, i, kv[i], base,
                      i + 1, base, i + 1);
        }
    }
    sb_printf(&j->out, "%s ::= \"{\" ws %s-first0 \"}\"\n", name, base);
done:
    free(kv);
    free(reqd);
}

/* Bytes of the UTF-8 character starting with byte c (1 for anything malformed). */
static size_t utf8_len(unsigned char c)
{
    return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

struct lit {
    char *s;
    size_t len;
};

static int cmp_lit(const void *a, const void *b)
{
    const struct lit *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* lits[lo, hi) (sorted, distinct, sharing their first depth bytes) as one GBNF expression with
 * common prefixes factored out: "value-" ( "1" ( "0" | "" ) | "2" ). A 500-value enum then
 * keeps a handful of stacks alive instead of 500. Splits only between whole characters. */
static void put_lit_trie(struct sbuf *b, const struct lit *l, int lo, int hi, size_t depth)
{
    size_t d = depth;
    for (;;) { /* the longest common run of whole characters */
        if (l[lo].len <= d) break;
        size_t k = utf8_len((unsigned char)l[lo].s[d]);
        bool same = d + k <= l[lo].len;
        for (int i = lo + 1; same && i < hi; i++)
            same = l[i].len >= d + k && memcmp(l[i].s + d, l[lo].s + d, k) == 0;
        if (!same) break;
        d += k;
    }
    if (d > depth) sb_gbnf_lit(b, l[lo].s + depth, d - depth);
    if (hi - lo == 1 && l[lo].len == d) return;
    sb_puts(b, d > depth ? " ( " : "( ");
    int i = lo, n_alt = 0;
    if (l[i].len == d) i++; /* a literal ends here: the empty alternative, last */
    while (i < hi) {
        size_t k = utf8_len((unsigned char)l[i].s[d]);
        int j = i + 1;
        while (j < hi && l[j].len >= d + k && memcmp(l[j].s + d, l[i].s + d, k) == 0) j++;
        if (n_alt++) sb_puts(b, " | ");
        put_lit_trie(b, l, i, j, d);
        i = j;
    }
    if (l[lo].len == d) sb_puts(b, " | \"\"");
    sb_puts(b, " )");
}

/* enum: the members' JSON texts, deduplicated, as one factored expression. */
static void put_enum(struct js *j, const cJSON *list)
{
    int n = cJSON_GetArraySize(list), k = 0;
    struct lit *l = calloc((size_t)n, sizeof *l);
    if (!l) {
        j->out.oom = true;
        return;
    }
    for (const cJSON *v = list->child; v; v = v->next) {
        char *t = cJSON_PrintUnformatted(v);
        if (!t) {
            j->out.oom = true;
            break;
        }
        l[k].s = t, l[k].len = strlen(t), k++;
    }
    if (!j->out.oom) {
        qsort(l, (size_t)k, sizeof *l, cmp_lit);
        int m = 0;
        for (int i = 0; i < k; i++)
            if (m == 0 || cmp_lit(&l[m - 1], &l[i])) l[m++] = l[i];
            else free(l[i].s);
        k = m;
        put_lit_trie(&j->out, l, 0, k, 0);
    }
    for (int i = 0; i < k; i++) free(l[i].s);
    free(l);
}

/* The alternatives of a list (enum, anyOf, type list) as one rule. */
static void gen_alts(struct js *j, const cJSON *list, const char *name, int depth, bool literal)
{
    if (!cJSON_IsArray(list) || !list->child) {
        js_fail(j, MESH_EINVAL, "%s: expecting a non-empty array", literal ? "enum" : "anyOf/oneOf");
        return;
    }
    struct sbuf saved = j->out;
    struct sbuf body = {0};
    int k = 0;
    if (literal) {
        j->out = body;
        put_enum(j, list);
        body = j->out;
        j->out = saved;
    } else {
        for (const cJSON *v = list->child; v && !j->rc; v = v->next, k++) {
            char alt[128];
            sub_rule(j, v, name, "alt-", alt, sizeof alt, depth);
            sb_printf(&body, "%s%s", k ? " | " : "", alt);
        }
    }
    sb_printf(&j->out, "%s ::= %s\n", name, body.p ? body.p : "\"\"");
    if (body.oom) j->out.oom = true;
    free(body.p);
}

static void gen_type(struct js *j, const cJSON *sch, const char *type, const char *name, int depth)
{
    if (strcmp(type, "string") == 0) gen_string(j, sch, name);
    else if (strcmp(type, "integer") == 0) sb_printf(&j->out, "%s ::= jint\n", name);
    else if (strcmp(type, "number") == 0) sb_printf(&j->out, "%s ::= jnumber\n", name);
    else if (strcmp(type, "boolean") == 0) sb_printf(&j->out, "%s ::= jbool\n", name);
    else if (strcmp(type, "null") == 0) sb_printf(&j->out, "%s ::= jnull\n", name);
    else if (strcmp(type, "object") == 0) gen_object(j, sch, name, depth);
    else if (strcmp(type, "array") == 0) gen_array(j, sch, name, depth);
    else js_fail(j, MESH_EINVAL, "unknown type \"%.40s\"", type);
}

/* "type": ["string", "null"]: one rule per type, as alternatives. */
static void gen_type_list(struct js *j, const cJSON *sch, const cJSON *type, const char *name, int depth)
{
    struct sbuf body = {0};
    char r[128];
    int k = 0;
    for (const cJSON *t = type->child; t && !j->rc; t = t->next, k++) {
        if (!cJSON_IsString(t)) {
            js_fail(j, MESH_EINVAL, "type list must hold strings");
            break;
        }
        new_name(j, name, t->valuestring, r, sizeof r);
        gen_type(j, sch, t->valuestring, r, depth);
        sb_printf(&body, "%s%s", k ? " | " : "", r);
    }
    if (!j->rc && k == 0) js_fail(j, MESH_EINVAL, "empty type list");
    if (!j->rc) sb_printf(&j->out, "%s ::= %s\n", name, body.p ? body.p : "\"\"");
    if (body.oom) j->out.oom = true;
    free(body.p);
}

/* Writes rule `name` for schema sch. */
static void gen_rule(struct js *j, const cJSON *sch, const char *name, int depth)
{
    if (j->rc || j->out.oom) return;
    if (depth > JS_MAX_DEPTH) {
        js_fail(j, MESH_EINVAL, "schema nested deeper than %d levels", JS_MAX_DEPTH);
        return;
    }
    if (cJSON_IsBool(sch)) { /* true: anything; false: nothing can match */
        if (cJSON_IsFalse(sch)) js_fail(j, MESH_EINVAL, "schema false matches nothing (%s)", name);
        else sb_printf(&j->out, "%s ::= jvalue\n", name);
        return;
    }
    if (!cJSON_IsObject(sch)) {
        js_fail(j, MESH_EINVAL, "expecting a schema object at %s", name);
        return;
    }
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(sch, "$ref");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(sch, "enum");
    const cJSON *cst = cJSON_GetObjectItemCaseSensitive(sch, "const");
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(sch, "anyOf");
    if (!any) any = cJSON_GetObjectItemCaseSensitive(sch, "oneOf");
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(sch, "allOf");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(sch, "type");
    const cJSON *nullable = cJSON_GetObjectItemCaseSensitive(sch, "nullable");
    if (cJSON_IsTrue(nullable)) { /* OpenAPI's nullable: the schema without it, or null */
        cJSON *copy = cJSON_Duplicate(sch, 1);
        if (!copy) {
            j->out.oom = true;
            return;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "nullable");
        char inner[128];
        sub_rule(j, copy, name, "nonnull-", inner, sizeof inner, depth);
        cJSON_Delete(copy);
        sb_printf(&j->out, "%s ::= %s | jnull\n", name, inner);
        return;
    }
    char r[128];
    if (ref) {
        if (!cJSON_IsString(ref)) {
            js_fail(j, MESH_EINVAL, "$ref must be a string");
            return;
        }
        gen_ref(j, ref->valuestring, r, sizeof r, depth);
        sb_printf(&j->out, "%s ::= %s\n", name, r);
    } else if (cst) {
        sb_printf(&j->out, "%s ::= ", name);
        put_json_literal(j, cst);
        sb_puts(&j->out, "\n");
    } else if (en) {
        gen_alts(j, en, name, depth, true);
    } else if (any) {
        gen_alts(j, any, name, depth, false);
    } else if (all) {
        if (!cJSON_IsArray(all) || cJSON_GetArraySize(all) != 1)
            js_fail(j, MESH_EINVAL, "allOf with more than one schema is not supported");
        else gen_rule(j, all->child, name, depth + 1);
    } else if (cJSON_IsString(type)) {
        gen_type(j, sch, type->valuestring, name, depth);
    } else if (cJSON_IsArray(type)) {
        gen_type_list(j, sch, type, name, depth);
    } else if (type) {
        js_fail(j, MESH_EINVAL, "\"type\" must be a string or an array of strings");
    } else if (cJSON_GetObjectItemCaseSensitive(sch, "properties") ||
               cJSON_GetObjectItemCaseSensitive(sch, "additionalProperties")) {
        gen_object(j, sch, name, depth);
    } else if (cJSON_GetObjectItemCaseSensitive(sch, "items") ||
               cJSON_GetObjectItemCaseSensitive(sch, "prefixItems")) {
        gen_array(j, sch, name, depth);
    } else {
        sb_printf(&j->out, "%s ::= jvalue\n", name); /* {}: any value */
    }
}

int json_schema_to_gbnf(const char *json, size_t len, char **out, char *err, size_t err_cap)
{
    *out = NULL;
    if (err && err_cap) err[0] = 0;
    cJSON *doc = json ? cJSON_ParseWithLength(json, len) : NULL;
    if (!doc) return err_set(err, err_cap, MESH_EINVAL, "json schema: not valid JSON");
    struct js j = {.doc = doc, .err = err, .err_cap = err_cap};
    gen_rule(&j, doc, "root", 0);
    if (!j.rc && !j.out.oom) sb_puts(&j.out, JS_PRIMITIVES);
    int rc = j.rc ? j.rc : j.out.oom ? MESH_ENOMEM : 0;
    if (rc == MESH_ENOMEM) err_set(err, err_cap, rc, "json schema: out of memory");
    for (int i = 0; i < j.n_refs; i++) {
        free(j.ref_keys[i]);
        free(j.ref_names[i]);
    }
    free(j.ref_keys);
    free(j.ref_names);
    cJSON_Delete(doc);
    if (rc) {
        free(j.out.p);
        return rc;
    }
    *out = j.out.p;
    return 0;
}
