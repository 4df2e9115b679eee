/* jinja_parse.c - Jinja source to syntax tree: newline normalisation, the lexer with
 * jinja2's whitespace rules, and a recursive-descent parser with jinja2's precedence.
 *
 * Follows jinja2 3.x lexer.py and parser.py: newlines (\r\n, \r and the other
 * str.splitlines breaks) become \n and one trailing newline is dropped; "{%-"/"-%}" strip
 * all whitespace, trim_blocks drops the newline after a block or comment tag, lstrip_blocks
 * drops spaces and tabs before one that starts its line ("{%+" / "+%}" opt out); a tag
 * ends only outside brackets. Precedence, loosest first: if-else, or, and, not,
 * comparisons and in, + -, ~, * / // %, **, unary - +, postfix . [] (), filters and tests.
 * Not supported (parse error naming it): extends, block, include, import, from, with,
 * autoescape, do, line statements.
 */
#include "engine/jinja_internal.h"

#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum jt_kind { T_EOF, T_TEXT, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME,
               T_STRING, T_INT, T_FLOAT, T_OP };

struct jtok {
    uint8_t kind;
    int line, col;
    const char *s; /* text, name, decoded string or operator */
    size_t len;
    int64_t i;
    double f;
};

struct jparser {
    struct jarena *a;
    const char *src; /* normalised */
    size_t len, pos;
    int line, col;
    struct jtok *toks;
    size_t n_toks, cap_toks, at;
    struct jinja_error *err;
    int rc;
    int depth;
};

#define MAX_DEPTH 200

static int pfail(struct jparser *P, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int pfail(struct jparser *P, int line, int col, const char *fmt, ...)
{
    if (P->rc) return P->rc;
    P->rc = MESH_EINVAL;
    if (P->err) {
        P->err->line = line;
        P->err->col = col;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(P->err->msg, sizeof P->err->msg, fmt, ap);
        va_end(ap);
    }
    return P->rc;
}

/* ---- newline normalisation ------------------------------------------------------------ */

/* Python str.splitlines() breaks: \n \r \r\n \v \f \x1c \x1d \x1e U+0085 U+2028 U+2029. */
static char *normalise(struct jarena *a, const char *s, size_t n, size_t *out_len)
{
    char *d = jarena_alloc(a, n + 1);
    if (!d) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r') {
            if (i + 1 < n && s[i + 1] == '\n') i++;
            d[k++] = '\n';
        } else if (c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e)) {
            d[k++] = '\n';
        } else if (c == 0xC2 && i + 1 < n && (unsigned char)s[i + 1] == 0x85) {
            d[k++] = '\n';
            i++;
        } else if (c == 0xE2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
                   ((unsigned char)s[i + 2] == 0xA8 || (unsigned char)s[i + 2] == 0xA9)) {
            d[k++] = '\n';
            i += 2;
        } else {
            d[k++] = (char)c;
        }
    }
    if (k > 0 && d[k - 1] == '\n') k--; /* keep_trailing_newline = False */
    d[k] = 0;
    *out_len = k;
    return d;
}

/* ---- lexer ---------------------------------------------------------------------------- */

static struct jtok *push_tok(struct jparser *P, int kind, const char *s, size_t len, int line,
                             int col)
{
    if (P->rc) return NULL;
    if (P->n_toks == P->cap_toks) {
        size_t cap = P->cap_toks ? P->cap_toks * 2 : 256;
        struct jtok *nt = realloc(P->toks, cap * sizeof *nt);
        if (!nt) {
            P->rc = MESH_ENOMEM;
            return NULL;
        }
        P->toks = nt;
        P->cap_toks = cap;
    }
    struct jtok *t = &P->toks[P->n_toks++];
    memset(t, 0, sizeof *t);
    t->kind = (uint8_t)kind;
    t->s = s;
    t->len = len;
    t->line = line;
    t->col = col;
    return t;
}

static void advance(struct jparser *P, size_t n)
{
    for (size_t i = 0; i < n && P->pos < P->len; i++) {
        if (P->src[P->pos] == '\n') {
            P->line++;
            P->col = 1;
        } else if (((unsigned char)P->src[P->pos] & 0xC0) != 0x80) {
            P->col++;
        }
        P->pos++;
    }
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void add_utf8(struct jbuf *b, uint32_t cp)
{
    char u[4];
    int n = 0;
    if (cp < 0x80) u[n++] = (char)cp;
    else if (cp < 0x800) {
        u[n++] = (char)(0xC0 | cp >> 6);
        u[n++] = (char)(0x80 | (cp & 63));
    } else if (cp < 0x10000) {
        u[n++] = (char)(0xE0 | cp >> 12);
        u[n++] = (char)(0x80 | (cp >> 6 & 63));
        u[n++] = (char)(0x80 | (cp & 63));
    } else {
        u[n++] = (char)(0xF0 | cp >> 18);
        u[n++] = (char)(0x80 | (cp >> 12 & 63));
        u[n++] = (char)(0x80 | (cp >> 6 & 63));
        u[n++] = (char)(0x80 | (cp & 63));
    }
    jbuf_add(b, u, (size_t)n);
}

/* A string literal at P->pos: Python escapes (\n \t \r \\ \' \" \xHH \uHHHH \UHHHHHHHH
 * \0 \a \b \f \v; an unknown escape keeps its backslash, as Python does). */
static void lex_string(struct jparser *P, int line, int col)
{
    char q = P->src[P->pos];
    size_t i = P->pos + 1;
    struct jbuf b = {0};
    while (i < P->len && P->src[i] != q) {
        char c = P->src[i++];
        if (c != '\\' || i >= P->len) {
            jbuf_addc(&b, c);
            continue;
        }
        char e = P->src[i++];
        int nhex = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (nhex) {
            uint32_t cp = 0;
            int k = 0;
            for (; k < nhex && i + (size_t)k < P->len && hexval(P->src[i + (size_t)k]) >= 0; k++)
                cp = cp * 16 + (uint32_t)hexval(P->src[i + (size_t)k]);
            if (k < nhex || cp > 0x10FFFF) {
                jbuf_addc(&b, '\\');
                jbuf_addc(&b, e);
                continue;
            }
            i += (size_t)nhex;
            add_utf8(&b, cp);
            continue;
        }
        if (e == '\n') continue; /* line continuation */
        char m = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == '\\' ? '\\'
               : e == '\'' ? '\'' : e == '"' ? '"' : e == '0' ? '\0' : e == 'a' ? '\a'
               : e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'v' ? '\v' : 1;
        if (m != 1) {
            jbuf_addc(&b, m);
        } else {
            jbuf_addc(&b, '\\');
            jbuf_addc(&b, e);
        }
    }
    if (i >= P->len) {
        free(b.p);
        pfail(P, line, col, "unterminated string literal");
        return;
    }
    if (b.rc) P->rc = b.rc;
    struct jv s = jv_str_copy(P->a, b.p ? b.p : "", b.len);
    free(b.p);
    struct jtok *t = push_tok(P, T_STRING, s.u.s.p, s.u.s.len, line, col);
    (void)t;
    advance(P, i + 1 - P->pos);
}

static void lex_number(struct jparser *P, int line, int col)
{
    size_t i = P->pos;
    char tmp[80];
    size_t k = 0;
    bool is_float = false;
    while (i < P->len && (is_digit(P->src[i]) || P->src[i] == '_') && k < sizeof tmp - 1) {
        if (P->src[i] != '_') tmp[k++] = P->src[i];
        i++;
    }
    if (i + 1 < P->len && P->src[i] == '.' && is_digit(P->src[i + 1])) {
        is_float = true;
        tmp[k++] = P->src[i++];
        while (i < P->len && (is_digit(P->src[i]) || P->src[i] == '_') && k < sizeof tmp - 1) {
            if (P->src[i] != '_') tmp[k++] = P->src[i];
            i++;
        }
    }
    if (i < P->len && (P->src[i] == 'e' || P->src[i] == 'E')) {
        size_t j = i + 1;
        if (j < P->len && (P->src[j] == '+' || P->src[j] == '-')) j++;
        if (j < P->len && is_digit(P->src[j])) {
            is_float = true;
            while (i < j && k < sizeof tmp - 1) tmp[k++] = P->src[i++];
            while (i < P->len && is_digit(P->src[i]) && k < sizeof tmp - 1) tmp[k++] = P->src[i++];
        }
    }
    tmp[k] = 0;
    struct jtok *t = push_tok(P, is_float ? T_FLOAT : T_INT, NULL, 0, line, col);
    if (t) {
        if (is_float) t->f = strtod(tmp, NULL);
        else {
            char *e;
            unsigned long long v = strtoull(tmp, &e, 10);
            if (v > INT64_MAX) pfail(P, line, col, "integer literal too large");
            t->i = (int64_t)v;
        }
    }
    advance(P, i - P->pos);
}

static const char *const g_ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/",
                                    "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}",
                                    ",", ".", ":", "|", ";", NULL};

/* Tokens inside a tag up to its end ("}}" or "%}" with an optional '-' or '+'). Returns the
 * strip sign of the end ('-', '+' or 0), or -1 when the source ends first. */
static int lex_tag(struct jparser *P, bool is_var, int tag_line, int tag_col)
{
    int depth = 0;
    while (!P->rc) {
        while (P->pos < P->len && is_ws(P->src[P->pos])) advance(P, 1);
        if (P->pos >= P->len) {
            pfail(P, tag_line, tag_col, "unclosed %s (missing '%s')", is_var ? "'{{'" : "'{%'",
                  is_var ? "}}" : "%}");
            return -1;
        }
        const char *s = P->src + P->pos;
        size_t left = P->len - P->pos;
        char close = is_var ? '}' : '%';
        if (depth == 0) {
            int sign = 0;
            size_t k = 0;
            if ((s[0] == '-' || (s[0] == '+' && !is_var)) && left >= 3) {
                sign = s[0];
                k = 1;
            }
            if (left >= k + 2 && s[k] == close && s[k + 1] == '}') {
                push_tok(P, is_var ? T_VAR_END : T_BLOCK_END, NULL, 0, P->line, P->col);
                advance(P, k + 2);
                return sign;
            }
        }
        int line = P->line, col = P->col;
        if (s[0] == '\'' || s[0] == '"') {
            lex_string(P, line, col);
        } else if (is_digit(s[0])) {
            lex_number(P, line, col);
        } else if (is_name_start(s[0])) {
            size_t n = 1;
            while (n < left && (is_name_start(s[n]) || is_digit(s[n]))) n++;
            push_tok(P, T_NAME, s, n, line, col);
            advance(P, n);
        } else {
            const char *op = NULL;
            for (int i = 0; g_ops[i]; i++) {
                size_t n = strlen(g_ops[i]);
                if (left >= n && !memcmp(s, g_ops[i], n)) {
                    op = g_ops[i];
                    break;
                }
            }
            if (!op) {
                pfail(P, line, col, "unexpected character '%c' in a tag", s[0]);
                return -1;
            }
            if (*op == '(' || *op == '[' || *op == '{') depth++;
            if ((*op == ')' || *op == ']' || *op == '}') && depth > 0) depth--;
            push_tok(P, T_OP, op, strlen(op), line, col);
            advance(P, strlen(op));
        }
    }
    return -1;
}

/* After a tag: "-" eats all whitespace; trim_blocks eats one newline (block and comment
 * tags, unless "+"). Returns whether what was eaten ended with a newline (line_starting). */
static bool after_tag(struct jparser *P, int sign, bool is_block)
{
    if (sign == '-') {
        bool nl = false;
        while (P->pos < P->len && is_ws(P->src[P->pos])) {
            nl = P->src[P->pos] == '\n';
            advance(P, 1);
        }
        return nl;
    }
    if (is_block && sign != '+' && P->pos < P->len && P->src[P->pos] == '\n') {
        advance(P, 1);
        return true;
    }
    return false;
}

/* {% raw %}...{% endraw %} as text: the tag just read is 'raw'. */
static bool lex_raw(struct jparser *P, bool *line_starting)
{
    size_t n = P->n_toks;
    if (n < 3 || P->toks[n - 3].kind != T_BLOCK_BEGIN || P->toks[n - 2].kind != T_NAME ||
        P->toks[n - 2].len != 3 || memcmp(P->toks[n - 2].s, "raw", 3))
        return false;
    int line = P->toks[n - 3].line, col = P->toks[n - 3].col;
    P->n_toks -= 3;
    size_t start = P->pos;
    for (size_t i = P->pos; i + 1 < P->len; i++) {
        if (P->src[i] != '{' || P->src[i + 1] != '%') continue;
        size_t j = i + 2, k;
        bool strip = j < P->len && P->src[j] == '-';
        if (j < P->len && (P->src[j] == '-' || P->src[j] == '+')) j++;
        while (j < P->len && is_ws(P->src[j])) j++;
        if (P->len - j < 6 || memcmp(P->src + j, "endraw", 6)) continue;
        j += 6;
        while (j < P->len && is_ws(P->src[j])) j++;
        k = j;
        int sign = 0;
        if (k < P->len && (P->src[k] == '-' || P->src[k] == '+')) sign = P->src[k++];
        if (P->len - k < 2 || P->src[k] != '%' || P->src[k + 1] != '}') continue;
        size_t end = i;
        if (strip)
            while (end > start && is_ws(P->src[end - 1])) end--;
        push_tok(P, T_TEXT, P->src + start, end - start, line, col);
        advance(P, k + 2 - P->pos);
        *line_starting = after_tag(P, sign, true);
        return true;
    }
    pfail(P, line, col, "unclosed {%% raw %%} (missing {%% endraw %%})");
    return true;
}

static void lex(struct jparser *P)
{
    bool line_starting = true, strip_next = false;
    (void)strip_next;
    while (!P->rc && P->pos < P->len) {
        /* next tag start */
        size_t i = P->pos;
        const char *found = NULL;
        for (; i + 1 < P->len; i++) {
            if (P->src[i] == '{' && (P->src[i + 1] == '{' || P->src[i + 1] == '%' || P->src[i + 1] == '#')) {
                found = P->src + i;
                break;
            }
        }
        size_t text_end = found ? i : P->len;
        size_t text_start = P->pos;
        char kind = found ? found[1] : 0;
        char sign = found && i + 2 < P->len && (found[2] == '-' || found[2] == '+') ? found[2] : 0;
        if (kind == '{' && sign == '+') sign = 0;
        size_t keep = text_end;
        if (found && sign == '-') {
            while (keep > text_start && is_ws(P->src[keep - 1])) keep--;
        } else if (found && sign != '+' && kind != '{') {
            /* lstrip_blocks: only whitespace between the line start and the tag */
            size_t l = keep;
            while (l > text_start && P->src[l - 1] != '\n') l--;
            bool at_line_start = l > text_start || line_starting;
            bool only_ws = l < keep;
            for (size_t k = l; k < keep; k++)
                if (!is_ws(P->src[k])) only_ws = false;
            if (at_line_start && only_ws) keep = l;
        }
        if (keep > text_start) push_tok(P, T_TEXT, P->src + text_start, keep - text_start, P->line, P->col);
        advance(P, text_end - P->pos);
        if (!found) break;
        int tag_line = P->line, tag_col = P->col;
        advance(P, 2 + (sign ? 1 : 0));
        if (kind == '#') {
            size_t j = P->pos;
            for (; j + 1 < P->len; j++)
                if (P->src[j] == '#' && P->src[j + 1] == '}') break;
            if (j + 1 >= P->len) {
                pfail(P, tag_line, tag_col, "unclosed comment (missing '#}')");
                break;
            }
            int esign = j > P->pos && (P->src[j - 1] == '-' || P->src[j - 1] == '+') ? P->src[j - 1] : 0;
            advance(P, j + 2 - P->pos);
            line_starting = after_tag(P, esign, true);
            continue;
        }
        bool is_var = kind == '{';
        push_tok(P, is_var ? T_VAR_BEGIN : T_BLOCK_BEGIN, NULL, 0, tag_line, tag_col);
        int esign = lex_tag(P, is_var, tag_line, tag_col);
        if (esign < 0) break;
        line_starting = after_tag(P, esign, !is_var);
        if (!is_var) lex_raw(P, &line_starting);
    }
    push_tok(P, T_EOF, NULL, 0, P->line, P->col);
}

/* ---- parser helpers ------------------------------------------------------------------- */

static struct jtok *cur(struct jparser *P)
{
    return &P->toks[P->at];
}

static struct jtok *next_tok(struct jparser *P)
{
    struct jtok *t = &P->toks[P->at];
    if (t->kind != T_EOF) P->at++;
    return t;
}

static bool is_op(const struct jtok *t, const char *op)
{
    return t->kind == T_OP && t->len == strlen(op) && !memcmp(t->s, op, t->len);
}

static bool is_name(const struct jtok *t, const char *name)
{
    return t->kind == T_NAME && t->len == strlen(name) && !memcmp(t->s, name, t->len);
}

static const char *tok_desc(const struct jtok *t, char *buf, size_t cap)
{
    switch (t->kind) {
    case T_EOF: return "end of template";
    case T_TEXT: return "template text";
    case T_VAR_END: return "'}}'";
    case T_BLOCK_END: return "'%}'";
    case T_VAR_BEGIN: return "'{{'";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_STRING: return "string literal";
    case T_INT:
    case T_FLOAT: return "number";
    default: snprintf(buf, cap, "'%.*s'", (int)(t->len > 40 ? 40 : t->len), t->s); return buf;
    }
}

static bool expect_op(struct jparser *P, const char *op)
{
    if (P->rc) return false;
    struct jtok *t = cur(P);
    if (is_op(t, op)) {
        next_tok(P);
        return true;
    }
    char b[64];
    pfail(P, t->line, t->col, "expected '%s', found %s", op, tok_desc(t, b, sizeof b));
    return false;
}

static const char *expect_name(struct jparser *P)
{
    if (P->rc) return NULL;
    struct jtok *t = cur(P);
    if (t->kind != T_NAME) {
        char b[64];
        pfail(P, t->line, t->col, "expected a name, found %s", tok_desc(t, b, sizeof b));
        return NULL;
    }
    next_tok(P);
    return jarena_strdup(P->a, t->s, t->len);
}

static struct jnode *node(struct jparser *P, int kind, const struct jtok *at)
{
    struct jnode *n = jarena_alloc(P->a, sizeof *n);
    if (!n) {
        if (!P->rc) P->rc = P->a->rc ? P->a->rc : MESH_ENOMEM;
        return NULL;
    }
    n->kind = (uint8_t)kind;
    n->line = at->line;
    n->col = at->col;
    return n;
}

static void add(struct jparser *P, struct jnodes *l, struct jnode *n)
{
    if (P->rc || !n) return;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 4;
        struct jnode **nv = jarena_alloc(P->a, (size_t)cap * sizeof *nv);
        if (!nv) {
            P->rc = P->a->rc;
            return;
        }
        if (l->n) memcpy(nv, l->v, (size_t)l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = n;
}

/* ---- expressions ---------------------------------------------------------------------- */

static struct jnode *parse_expr(struct jparser *P);
static struct jnode *parse_or(struct jparser *P);
static struct jnode *parse_unary(struct jparser *P, bool with_filter);
static struct jnode *parse_primary(struct jparser *P);
static struct jnode *parse_postfix(struct jparser *P, struct jnode *n);

/* "(" args ")" already at "(": positional and name=value arguments into n. */
static void parse_call_args(struct jparser *P, struct jnode *n)
{
    expect_op(P, "(");
    while (!P->rc && !is_op(cur(P), ")")) {
        if (n->args.n + n->kwargs.n > 0 && !expect_op(P, ",")) return;
        if (is_op(cur(P), ")")) break;
        struct jtok *t = cur(P);
        if (t->kind == T_NAME && is_op(&P->toks[P->at + 1], "=")) {
            struct jnode *kw = node(P, JN_KWARG, t);
            if (!kw) return;
            kw->name = expect_name(P);
            next_tok(P);
            kw->a = parse_expr(P);
            add(P, &n->kwargs, kw);
        } else {
            if (n->kwargs.n) {
                pfail(P, t->line, t->col, "positional argument after a keyword argument");
                return;
            }
            add(P, &n->args, parse_expr(P));
        }
    }
    expect_op(P, ")");
}

static struct jnode *parse_filter(struct jparser *P, struct jnode *in, const struct jtok *at)
{
    (void)at;
    struct jnode *f = node(P, JN_FILTER, cur(P)); /* errors point at the filter's name */
    if (!f) return NULL;
    f->a = in;
    f->name = expect_name(P);
    while (!P->rc && is_op(cur(P), ".")) { /* dotted filter names */
        next_tok(P);
        const char *more = expect_name(P);
        if (!more) break;
        size_t n = strlen(f->name) + strlen(more) + 2;
        char *d = jarena_alloc(P->a, n);
        if (d) snprintf(d, n, "%s.%s", f->name, more);
        f->name = d;
    }
    if (!P->rc && is_op(cur(P), "(")) parse_call_args(P, f);
    return f;
}

static struct jnode *parse_test(struct jparser *P, struct jnode *in, const struct jtok *at)
{
    struct jnode *t = node(P, JN_TEST, at);
    if (!t) return NULL;
    t->a = in;
    if (is_name(cur(P), "not")) {
        next_tok(P);
        t->flag = true;
    }
    t->name = expect_name(P);
    if (P->rc) return t;
    struct jtok *c = cur(P);
    if (is_op(c, "(")) {
        parse_call_args(P, t);
    } else if ((c->kind == T_NAME || c->kind == T_STRING || c->kind == T_INT ||
                c->kind == T_FLOAT || is_op(c, "[") || is_op(c, "{")) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) {
            pfail(P, c->line, c->col, "cannot chain tests with 'is'");
            return t;
        }
        add(P, &t->args, parse_postfix(P, parse_primary(P)));
    }
    return t;
}

static struct jnode *parse_filter_expr(struct jparser *P, struct jnode *n)
{
    while (!P->rc && n) {
        struct jtok *t = cur(P);
        if (is_op(t, "|")) {
            next_tok(P);
            n = parse_filter(P, n, t);
        } else if (is_name(t, "is")) {
            next_tok(P);
            n = parse_test(P, n, t);
        } else if (is_op(t, "(")) {
            struct jnode *c = node(P, JN_CALL, t);
            if (!c) return NULL;
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else {
            break;
        }
    }
    return n;
}

/* [a:b:c] or [x] after the object. */
static struct jnode *parse_subscript(struct jparser *P, struct jnode *obj, const struct jtok *at)
{
    struct jnode *parts[3] = {NULL, NULL, NULL};
    int k = 0;
    bool is_slice = false;
    while (!P->rc && !is_op(cur(P), "]")) {
        if (is_op(cur(P), ":")) {
            next_tok(P);
            if (++k > 2) {
                pfail(P, at->line, at->col, "too many ':' in a slice");
                return NULL;
            }
            is_slice = true;
            continue;
        }
        if (parts[k]) {
            char b[64];
            pfail(P, cur(P)->line, cur(P)->col, "expected ']', found %s", tok_desc(cur(P), b, sizeof b));
            return NULL;
        }
        parts[k] = parse_expr(P);
    }
    expect_op(P, "]");
    struct jnode *n = node(P, is_slice ? JN_SLICE : JN_ITEM, at);
    if (!n) return NULL;
    n->a = obj;
    if (!is_slice && !parts[0]) {
        pfail(P, at->line, at->col, "empty subscript '[]'");
        return n;
    }
    n->b = parts[0];
    n->c = parts[1];
    n->d = parts[2];
    return n;
}

static struct jnode *parse_postfix(struct jparser *P, struct jnode *n)
{
    while (!P->rc && n) {
        struct jtok *t = cur(P);
        if (is_op(t, ".")) {
            next_tok(P);
            struct jtok *nt = cur(P);
            if (nt->kind == T_INT) { /* x.0 is x[0] */
                next_tok(P);
                struct jnode *it = node(P, JN_ITEM, t);
                struct jnode *k = node(P, JN_CONST, nt);
                if (!it || !k) return NULL;
                k->val = jv_int(nt->i);
                it->a = n;
                it->b = k;
                n = it;
                continue;
            }
            struct jnode *a = node(P, JN_ATTR, t);
            if (!a) return NULL;
            a->a = n;
            a->name = expect_name(P);
            n = a;
        } else if (is_op(t, "[")) {
            next_tok(P);
            n = parse_subscript(P, n, t);
        } else if (is_op(t, "(")) {
            struct jnode *c = node(P, JN_CALL, t);
            if (!c) return NULL;
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else {
            break;
        }
    }
    return n;
}

/* Items up to close, separated by commas (trailing comma allowed). */
static void parse_seq(struct jparser *P, struct jnode *n, const char *close, bool is_dict)
{
    while (!P->rc && !is_op(cur(P), close)) {
        if (n->args.n && !expect_op(P, ",")) return;
        if (is_op(cur(P), close)) break;
        add(P, &n->args, parse_expr(P));
        if (is_dict) {
            expect_op(P, ":");
            add(P, &n->args, parse_expr(P));
        }
    }
    expect_op(P, close);
}

static struct jnode *parse_primary(struct jparser *P)
{
    if (P->rc) return NULL;
    if (++P->depth > MAX_DEPTH) {
        pfail(P, cur(P)->line, cur(P)->col, "expression nested too deeply");
        return NULL;
    }
    struct jtok *t = next_tok(P);
    struct jnode *n = NULL;
    if (t->kind == T_NAME) {
        static const char *const consts[] = {"true", "True", "false", "False", "none", "None"};
        for (int i = 0; i < 6; i++) {
            if (!is_name(t, consts[i])) continue;
            n = node(P, JN_CONST, t);
            if (n) n->val = i < 2 ? jv_bool(true) : i < 4 ? jv_bool(false) : jv_none();
            goto out;
        }
        n = node(P, JN_NAME, t);
        if (n) n->name = jarena_strdup(P->a, t->s, t->len);
    } else if (t->kind == T_STRING) {
        n = node(P, JN_CONST, t);
        if (!n) goto out;
        n->val = jv_strn(t->s, t->len);
        if (cur(P)->kind == T_STRING) { /* adjacent literals concatenate */
            struct jbuf b = {0};
            jbuf_add(&b, t->s, t->len);
            while (cur(P)->kind == T_STRING) {
                struct jtok *s = next_tok(P);
                jbuf_add(&b, s->s, s->len);
            }
            n->val = jv_str_copy(P->a, b.p ? b.p : "", b.len);
            free(b.p);
        }
    } else if (t->kind == T_INT || t->kind == T_FLOAT) {
        n = node(P, JN_CONST, t);
        if (n) n->val = t->kind == T_INT ? jv_int(t->i) : jv_float(t->f);
    } else if (is_op(t, "(")) {
        if (is_op(cur(P), ")")) { /* empty tuple */
            next_tok(P);
            n = node(P, JN_TUPLE, t);
            goto out;
        }
        n = parse_expr(P);
        if (is_op(cur(P), ",")) {
            struct jnode *tu = node(P, JN_TUPLE, t);
            if (!tu) goto out;
            add(P, &tu->args, n);
            while (!P->rc && is_op(cur(P), ",")) {
                next_tok(P);
                if (is_op(cur(P), ")")) break;
                add(P, &tu->args, parse_expr(P));
            }
            n = tu;
        }
        expect_op(P, ")");
    } else if (is_op(t, "[")) {
        n = node(P, JN_LIST, t);
        if (n) parse_seq(P, n, "]", false);
    } else if (is_op(t, "{")) {
        n = node(P, JN_DICT, t);
        if (n) parse_seq(P, n, "}", true);
    } else {
        char b[64];
        pfail(P, t->line, t->col, "unexpected %s in an expression", tok_desc(t, b, sizeof b));
    }
out:
    P->depth--;
    return n;
}

static struct jnode *parse_unary(struct jparser *P, bool with_filter)
{
    if (P->rc) return NULL;
    struct jtok *t = cur(P);
    struct jnode *n;
    if (is_op(t, "-") || is_op(t, "+")) {
        next_tok(P);
        if (++P->depth > MAX_DEPTH) {
            pfail(P, t->line, t->col, "expression nested too deeply");
            return NULL;
        }
        n = node(P, is_op(t, "-") ? JN_NEG : JN_POS, t);
        if (n) n->a = parse_unary(P, false);
        P->depth--;
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    return n;
}

static struct jnode *binary(struct jparser *P, int op, struct jnode *a, struct jnode *b,
                            const struct jtok *at)
{
    struct jnode *n = node(P, JN_BIN, at);
    if (!n) return NULL;
    n->op = (uint8_t)op;
    n->a = a;
    n->b = b;
    return n;
}

static struct jnode *parse_pow(struct jparser *P)
{
    struct jnode *n = parse_unary(P, true);
    while (!P->rc && is_op(cur(P), "**")) {
        struct jtok *t = next_tok(P);
        n = binary(P, JOP_POW, n, parse_unary(P, true), t);
    }
    return n;
}

static struct jnode *parse_math2(struct jparser *P)
{
    struct jnode *n = parse_pow(P);
    for (;;) {
        struct jtok *t = cur(P);
        int op = is_op(t, "*") ? JOP_MUL : is_op(t, "/") ? JOP_DIV : is_op(t, "//") ? JOP_FDIV
               : is_op(t, "%") ? JOP_MOD : 0;
        if (!op || P->rc) return n;
        next_tok(P);
        n = binary(P, op, n, parse_pow(P), t);
    }
}

static struct jnode *parse_concat(struct jparser *P)
{
    struct jnode *n = parse_math2(P);
    while (!P->rc && is_op(cur(P), "~")) {
        struct jtok *t = next_tok(P);
        n = binary(P, JOP_CONCAT, n, parse_math2(P), t);
    }
    return n;
}

static struct jnode *parse_math1(struct jparser *P)
{
    struct jnode *n = parse_concat(P);
    for (;;) {
        struct jtok *t = cur(P);
        int op = is_op(t, "+") ? JOP_ADD : is_op(t, "-") ? JOP_SUB : 0;
        if (!op || P->rc) return n;
        next_tok(P);
        n = binary(P, op, n, parse_concat(P), t);
    }
}

static int cmp_op(struct jparser *P)
{
    struct jtok *t = cur(P);
    if (is_op(t, "==")) return JOP_EQ;
    if (is_op(t, "!=")) return JOP_NE;
    if (is_op(t, "<")) return JOP_LT;
    if (is_op(t, "<=")) return JOP_LE;
    if (is_op(t, ">")) return JOP_GT;
    if (is_op(t, ">=")) return JOP_GE;
    if (is_name(t, "in")) return JOP_IN;
    if (is_name(t, "not") && is_name(&P->toks[P->at + 1], "in")) return JOP_NOTIN;
    return 0;
}

static struct jnode *parse_compare(struct jparser *P)
{
    struct jnode *first = parse_math1(P);
    int op = cmp_op(P);
    if (!op || P->rc) return first;
    struct jnode *n = node(P, JN_CMP, cur(P));
    if (!n) return NULL;
    n->a = first;
    int cap = 0;
    while (op && !P->rc) {
        next_tok(P);
        if (op == JOP_NOTIN) next_tok(P);
        if (n->args.n == cap) {
            cap = cap ? cap * 2 : 4;
            uint8_t *no = jarena_alloc(P->a, (size_t)cap);
            if (!no) {
                P->rc = P->a->rc;
                return n;
            }
            if (n->args.n) memcpy(no, n->ops, (size_t)n->args.n);
            n->ops = no;
        }
        n->ops[n->args.n] = (uint8_t)op;
        add(P, &n->args, parse_math1(P));
        op = cmp_op(P);
    }
    return n;
}

static struct jnode *parse_not(struct jparser *P)
{
    struct jtok *t = cur(P);
    if (is_name(t, "not")) {
        next_tok(P);
        if (++P->depth > MAX_DEPTH) {
            pfail(P, t->line, t->col, "expression nested too deeply");
            return NULL;
        }
        struct jnode *n = node(P, JN_NOT, t);
        if (n) n->a = parse_not(P);
        P->depth--;
        return n;
    }
    return parse_compare(P);
}

static struct jnode *parse_and(struct jparser *P)
{
    struct jnode *n = parse_not(P);
    while (!P->rc && is_name(cur(P), "and")) {
        struct jtok *t = next_tok(P);
        struct jnode *a = node(P, JN_AND, t);
        if (!a) return NULL;
        a->a = n;
        a->b = parse_not(P);
        n = a;
    }
    return n;
}

static struct jnode *parse_or(struct jparser *P)
{
    struct jnode *n = parse_and(P);
    while (!P->rc && is_name(cur(P), "or")) {
        struct jtok *t = next_tok(P);
        struct jnode *o = node(P, JN_OR, t);
        if (!o) return NULL;
        o->a = n;
        o->b = parse_and(P);
        n = o;
    }
    return n;
}

static struct jnode *parse_expr(struct jparser *P)
{
    if (++P->depth > MAX_DEPTH) {
        pfail(P, cur(P)->line, cur(P)->col, "expression nested too deeply");
        return NULL;
    }
    struct jnode *n = parse_or(P);
    while (!P->rc && is_name(cur(P), "if")) {
        struct jtok *t = next_tok(P);
        struct jnode *c = node(P, JN_COND, t);
        if (!c) break;
        c->a = n;
        c->b = parse_or(P);
        if (is_name(cur(P), "else")) {
            next_tok(P);
            c->c = parse_expr(P);
        }
        n = c;
    }
    P->depth--;
    return n;
}

/* "a" or "a, b" (for and set targets); allow_attr for {% set ns.x = %}. */
static struct jnode *parse_target(struct jparser *P, bool allow_attr)
{
    struct jtok *t = cur(P);
    bool paren = is_op(t, "(");
    if (paren) next_tok(P);
    struct jnode *first = node(P, JN_NAME, t);
    if (!first) return NULL;
    first->name = expect_name(P);
    if (allow_attr && is_op(cur(P), ".")) {
        struct jtok *d = next_tok(P);
        struct jnode *a = node(P, JN_ATTR, d);
        if (!a) return NULL;
        a->a = first;
        a->name = expect_name(P);
        return a;
    }
    if (!is_op(cur(P), ",")) {
        if (paren) expect_op(P, ")");
        return first;
    }
    struct jnode *tu = node(P, JN_TUPLE, t);
    if (!tu) return NULL;
    add(P, &tu->args, first);
    while (!P->rc && is_op(cur(P), ",")) {
        next_tok(P);
        struct jnode *nm = node(P, JN_NAME, cur(P));
        if (!nm) return NULL;
        nm->name = expect_name(P);
        add(P, &tu->args, nm);
    }
    if (paren) expect_op(P, ")");
    return tu;
}

/* ---- statements ----------------------------------------------------------------------- */

static void parse_body(struct jparser *P, struct jnodes *body, const char *const *ends,
                       const char **which);

static bool end_block(struct jparser *P)
{
    if (P->rc) return false;
    struct jtok *t = cur(P);
    if (t->kind == T_BLOCK_END) {
        next_tok(P);
        return true;
    }
    char b[64];
    pfail(P, t->line, t->col, "expected '%%}', found %s", tok_desc(t, b, sizeof b));
    return false;
}

static struct jnode *parse_if(struct jparser *P, const struct jtok *at)
{
    struct jnode *n = node(P, JN_IF, at);
    if (!n) return NULL;
    n->a = parse_expr(P);
    end_block(P);
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    const char *which = NULL;
    parse_body(P, &n->body, ends, &which);
    struct jnode *tail = n;
    while (!P->rc && which && !strcmp(which, "elif")) {
        struct jnode *e = node(P, JN_IF, cur(P));
        if (!e) return n;
        e->a = parse_expr(P);
        end_block(P);
        parse_body(P, &e->body, ends, &which);
        add(P, &tail->orelse, e);
        tail = e;
    }
    if (!P->rc && which && !strcmp(which, "else")) {
        end_block(P);
        static const char *const ends2[] = {"endif", NULL};
        parse_body(P, &tail->orelse, ends2, &which);
    }
    end_block(P);
    return n;
}

static struct jnode *parse_for(struct jparser *P, const struct jtok *at)
{
    struct jnode *n = node(P, JN_FOR, at);
    if (!n) return NULL;
    n->a = parse_target(P, false);
    if (!P->rc && !is_name(cur(P), "in")) {
        char b[64];
        pfail(P, cur(P)->line, cur(P)->col, "expected 'in' in a for, found %s",
              tok_desc(cur(P), b, sizeof b));
        return n;
    }
    next_tok(P);
    n->b = parse_or(P); /* no conditional expression: 'if' filters the loop */
    if (!P->rc && is_name(cur(P), "if")) {
        next_tok(P);
        n->c = parse_expr(P);
    }
    if (!P->rc && is_name(cur(P), "recursive")) {
        next_tok(P);
        n->flag = true;
    }
    end_block(P);
    static const char *const ends[] = {"else", "endfor", NULL};
    const char *which = NULL;
    parse_body(P, &n->body, ends, &which);
    if (!P->rc && which && !strcmp(which, "else")) {
        end_block(P);
        static const char *const ends2[] = {"endfor", NULL};
        parse_body(P, &n->orelse, ends2, &which);
    }
    end_block(P);
    return n;
}

static struct jnode *parse_set(struct jparser *P, const struct jtok *at)
{
    struct jnode *target = parse_target(P, true);
    if (P->rc) return NULL;
    if (is_op(cur(P), "=")) {
        next_tok(P);
        struct jnode *n = node(P, JN_SET, at);
        if (!n) return NULL;
        n->a = target;
        n->b = parse_expr(P);
        if (!P->rc && is_op(cur(P), ",")) { /* set a = 1, 2 makes a tuple */
            struct jnode *tu = node(P, JN_TUPLE, cur(P));
            if (!tu) return n;
            add(P, &tu->args, n->b);
            while (!P->rc && is_op(cur(P), ",")) {
                next_tok(P);
                add(P, &tu->args, parse_expr(P));
            }
            n->b = tu;
        }
        end_block(P);
        return n;
    }
    struct jnode *n = node(P, JN_SET_BLOCK, at);
    if (!n) return NULL;
    n->a = target;
    struct jnode *chain = NULL;
    while (!P->rc && is_op(cur(P), "|")) {
        struct jtok *t = next_tok(P);
        chain = parse_filter(P, chain, t);
    }
    n->b = chain;
    end_block(P);
    static const char *const ends[] = {"endset", NULL};
    const char *which = NULL;
    parse_body(P, &n->body, ends, &which);
    end_block(P);
    return n;
}

/* (a, b=1, ...) of a macro or a call block's caller. */
static void parse_params(struct jparser *P, struct jnode *n)
{
    if (!is_op(cur(P), "(")) return;
    next_tok(P);
    while (!P->rc && !is_op(cur(P), ")")) {
        if (n->args.n && !expect_op(P, ",")) return;
        if (is_op(cur(P), ")")) break;
        struct jnode *p = node(P, JN_KWARG, cur(P));
        if (!p) return;
        p->name = expect_name(P);
        if (!P->rc && is_op(cur(P), "=")) {
            next_tok(P);
            p->a = parse_expr(P);
        } else if (n->args.n && n->args.v[n->args.n - 1]->a) {
            pfail(P, p->line, p->col, "parameter '%s' without a default follows one with a default",
                  p->name ? p->name : "?");
        }
        add(P, &n->args, p);
    }
    expect_op(P, ")");
}

static struct jnode *parse_macro(struct jparser *P, const struct jtok *at)
{
    struct jnode *n = node(P, JN_MACRO, at);
    if (!n) return NULL;
    n->name = expect_name(P);
    if (!P->rc && !is_op(cur(P), "(")) {
        pfail(P, cur(P)->line, cur(P)->col, "expected '(' after the macro name");
        return n;
    }
    parse_params(P, n);
    end_block(P);
    static const char *const ends[] = {"endmacro", NULL};
    const char *which = NULL;
    parse_body(P, &n->body, ends, &which);
    if (!P->rc && cur(P)->kind == T_NAME) next_tok(P); /* {% endmacro name %} */
    end_block(P);
    return n;
}

static struct jnode *parse_call_block(struct jparser *P, const struct jtok *at)
{
    struct jnode *n = node(P, JN_CALL_BLOCK, at);
    if (!n) return NULL;
    parse_params(P, n);
    n->a = parse_expr(P);
    if (!P->rc && (!n->a || n->a->kind != JN_CALL)) {
        pfail(P, at->line, at->col, "{%% call %%} needs a macro call");
        return n;
    }
    end_block(P);
    static const char *const ends[] = {"endcall", NULL};
    const char *which = NULL;
    parse_body(P, &n->body, ends, &which);
    end_block(P);
    return n;
}

static struct jnode *parse_filter_block(struct jparser *P, const struct jtok *at)
{
    struct jnode *n = node(P, JN_FILTER_BLOCK, at);
    if (!n) return NULL;
    struct jnode *chain = NULL;
    do {
        struct jtok *t = cur(P);
        chain = parse_filter(P, chain, t);
        if (!P->rc && is_op(cur(P), "|")) next_tok(P);
        else break;
    } while (!P->rc);
    n->a = chain;
    end_block(P);
    static const char *const ends[] = {"endfilter", NULL};
    const char *which = NULL;
    parse_body(P, &n->body, ends, &which);
    end_block(P);
    return n;
}

static struct jnode *parse_statement(struct jparser *P)
{
    struct jtok *t = cur(P);
    if (t->kind != T_NAME) {
        char b[64];
        pfail(P, t->line, t->col, "expected a tag name after '{%%', found %s", tok_desc(t, b, sizeof b));
        return NULL;
    }
    next_tok(P);
    if (is_name(t, "if")) return parse_if(P, t);
    if (is_name(t, "for")) return parse_for(P, t);
    if (is_name(t, "set")) return parse_set(P, t);
    if (is_name(t, "macro")) return parse_macro(P, t);
    if (is_name(t, "call")) return parse_call_block(P, t);
    if (is_name(t, "filter")) return parse_filter_block(P, t);
    if (is_name(t, "break") || is_name(t, "continue")) {
        struct jnode *n = node(P, is_name(t, "break") ? JN_BREAK : JN_CONTINUE, t);
        end_block(P);
        return n;
    }
    if (is_name(t, "generation")) { /* transformers' AssistantTracker: a plain block */
        struct jnode *n = node(P, JN_BLOCK, t);
        if (!n) return NULL;
        end_block(P);
        static const char *const ends[] = {"endgeneration", NULL};
        const char *which = NULL;
        parse_body(P, &n->body, ends, &which);
        end_block(P);
        return n;
    }
    pfail(P, t->line, t->col, "unsupported tag '{%% %.*s %%}'", (int)(t->len > 40 ? 40 : t->len), t->s);
    return NULL;
}

/* Statements until a {% NAME %} with NAME in ends (NULL: until the end of the template);
 * *which is the name found, its tag's remainder not yet consumed. */
static void parse_body(struct jparser *P, struct jnodes *body, const char *const *ends,
                       const char **which)
{
    if (++P->depth > MAX_DEPTH) {
        pfail(P, cur(P)->line, cur(P)->col, "blocks nested too deeply");
        return;
    }
    int open_line = P->at > 0 ? P->toks[P->at - 1].line : 1;
    *which = NULL;
    while (!P->rc) {
        struct jtok *t = cur(P);
        if (t->kind == T_EOF) {
            if (ends) {
                int last = 0;
                while (ends[last + 1]) last++;
                pfail(P, t->line, t->col, "unexpected end of template: missing {%% %s %%} for the "
                      "block opened near line %d", ends[last], open_line);
            }
            break;
        }
        if (t->kind == T_TEXT) {
            next_tok(P);
            struct jnode *n = node(P, JN_TEXT, t);
            if (n) n->val = jv_strn(t->s, t->len);
            add(P, body, n);
        } else if (t->kind == T_VAR_BEGIN) {
            next_tok(P);
            struct jnode *n = node(P, JN_OUTPUT, t);
            if (!n) break;
            n->a = parse_expr(P);
            if (!P->rc && cur(P)->kind != T_VAR_END) {
                char b[64];
                pfail(P, cur(P)->line, cur(P)->col, "expected '}}', found %s", tok_desc(cur(P), b, sizeof b));
            }
            next_tok(P);
            add(P, body, n);
        } else if (t->kind == T_BLOCK_BEGIN) {
            struct jtok *name = &P->toks[P->at + 1];
            if (ends && name->kind == T_NAME) {
                for (int i = 0; ends[i]; i++) {
                    if (is_name(name, ends[i])) {
                        P->at += 2;
                        *which = ends[i];
                        P->depth--;
                        return;
                    }
                }
            }
            next_tok(P);
            if (name->kind == T_NAME && (is_name(name, "endif") || is_name(name, "endfor") ||
                                         is_name(name, "else") || is_name(name, "elif") ||
                                         is_name(name, "endmacro") || is_name(name, "endset") ||
                                         is_name(name, "endcall") || is_name(name, "endfilter"))) {
                pfail(P, name->line, name->col, "unexpected {%% %.*s %%}", (int)name->len, name->s);
                break;
            }
            add(P, body, parse_statement(P));
        } else {
            char b[64];
            pfail(P, t->line, t->col, "unexpected %s", tok_desc(t, b, sizeof b));
        }
    }
    P->depth--;
}

int jinja_parse(const char *src, size_t len, struct jinja_tmpl **out, struct jinja_error *err)
{
    *out = NULL;
    if (err) memset(err, 0, sizeof *err);
    struct jinja_tmpl *t = calloc(1, sizeof *t);
    if (!t) return MESH_ENOMEM;
    t->arena.limit = (size_t)256 << 20;
    struct jparser P = {.a = &t->arena, .line = 1, .col = 1, .err = err};
    P.src = normalise(&t->arena, src ? src : "", src ? len : 0, &P.len);
    if (!P.src) P.rc = MESH_ENOMEM;
    if (!P.rc) lex(&P);
    if (!P.rc) {
        const char *which = NULL;
        parse_body(&P, &t->body, NULL, &which);
    }
    int rc = P.rc ? P.rc : t->arena.rc;
    free(P.toks);
    if (rc) {
        if (rc == MESH_ENOMEM && err && !err->msg[0]) snprintf(err->msg, sizeof err->msg, "out of memory");
        jinja_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void jinja_free(struct jinja_tmpl *t)
{
    if (!t) return;
    jarena_free(&t->arena);
    free(t);
}
