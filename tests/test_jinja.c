/* test_jinja.c - engine/jinja: the language against Python's jinja2 (expected texts below
 * were rendered by jinja2 3.1 in transformers' environment, tests/jinja_ref.py), errors with
 * their position and construct, limits against hostile templates, and engine/chat_setup:
 * a GGUF whose tokenizer.chat_template is rendered with it, the fallback with a broken
 * template, --chat-template files and built-ins, tool-call arguments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/jinja.h"
#include "engine/model.h"
#include "engine/tok.h"
#include "tests/util/test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jcase {
    const char *tmpl, *want;
};

static const struct jcase g_whitespace[] = {
    {"a\n  {% if true %}\n  b\n  {% endif %}\nc",
     "a\n  b\nc"},
    {"a  {%- if true -%}  b  {%- endif -%}  c",
     "abc"},
    {"x\n  {%+ if true %}y{% endif %}",
     "x\n  y"},
    {"{% for i in l %}\n{{ i }}\n{% endfor %}",
     "3\n1\n2\n"},
    {"  {# c #}\nz",
     "z"},
    {"t\n",
     "t"},
    {"{{ 'a' }}\n{{ 'b' }}",
     "a\nb"},
    {"{% raw %}{{ x }}{% endraw %}",
     "{{ x }}"},
};
static const struct jcase g_loops[] = {
    {"{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
     "1032TrueFalse3;2121FalseFalse3;3210FalseTrue3;"},
    {"{% for x in l if x > 1 %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}",
     "3222"},
    {"{% for x in [] %}{{ x }}{% else %}empty{% endfor %}",
     "empty"},
    {"{% for k, v in d | dictsort %}{{ k }}{{ v }}{% endfor %}",
     "a2b1"},
    {"{% for x in l %}{% if x == 1 %}{% break %}{% endif %}{{ x }}{% endfor %}|{% for x in l %}{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}",
     "3|32"},
    {"{% for x in l %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.cycle('a', 'b') }} {% endfor %}",
     "-1-a 3-2-b 1--a "},
    {"{% for a in [[1, [2]], [3]] recursive %}[{% if a is iterable %}{{ loop(a) }}{% else %}{{ a }}{% endif %}]{% endfor %}",
     "[[1][[2]]][[3]]"},
};
static const struct jcase g_scopes[] = {
    {"{% set x = 1 %}{% for i in l %}{% set x = i %}{% endfor %}{{ x }}",
     "1"},
    {"{% set ns = namespace(x=1, y='a') %}{% for i in l %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}{{ ns.y }}",
     "7a"},
    {"{% set b %}inner {{ n }}{% endset %}[{{ b }}]",
     "[inner 7]"},
    {"{% set b | upper %}shout{% endset %}{{ b }}",
     "SHOUT"},
    {"{% if true %}{% set y = 5 %}{% endif %}{{ y }}",
     "5"},
    {"{% set a, b = 1, 2 %}{{ a }}{{ b }}",
     "12"},
};
static const struct jcase g_macros[] = {
    {"{% macro f(a, b='B', c=n) %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ f(1) }} {{ f(1, 2) }} {{ f(1, c=3) }} {{ f(a=0) }}",
     "1B7 127 1B3 0B7"},
    {"{% macro f() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ f(1, 2, k=3) }}",
     "(1, 2){'k': 3}"},
    {"{% macro w() %}<{{ caller() }}>{% endmacro %}{% call w() %}body{% endcall %}",
     "<body>"},
    {"{% macro w(x) %}<{{ caller(x + 1) }}>{% endmacro %}{% call(v) w(1) %}v{{ v }}{% endcall %}",
     "<v2>"},
    {"{% macro fact(k) %}{% if k <= 1 %}1{% else %}{{ k }}*{{ fact(k - 1) }}{% endif %}{% endmacro %}{{ fact(4) }}",
     "4*3*2*1"},
    {"{% filter upper %}abc {{ n }}{% endfilter %}",
     "ABC 7"},
};
static const struct jcase g_filters[] = {
    {"{{ s | trim }}|{{ s | length }}|{{ s | upper }}|{{ s | lower }}|{{ 'hello wORLD' | title }}|{{ 'hello wORLD' | capitalize }}",
     "Hello World|15|  HELLO WORLD  |  hello world  |Hello World|Hello world"},
    {"{{ undefined_x | default('d') }}|{{ '' | d('e', true) }}|{{ none | default('z') }}|{{ 0 | default(5, boolean=true) }}",
     "d|e|None|5"},
    {"{{ l | join(',') }}|{{ l | first }}|{{ l | last }}|{{ l | sort }}|{{ l | sort(reverse=true) }}|{{ l | reverse | list }}|{{ l | unique | list }}|{{ l | sum }}|{{ l | min }}|{{ l | max }}",
     "3,1,2|3|2|[1, 2, 3]|[3, 2, 1]|[2, 1, 3]|[3, 1, 2]|6|1|3"},
    {"{{ messages | map(attribute='role') | join(' ') }}|{{ messages | selectattr('role', 'eq', 'user') | list | length }}|{{ messages | rejectattr('content') | map(attribute='role') | list }}",
     "system user assistant|1|['assistant']"},
    {"{{ d | items | list }}|{{ d | dictsort }}|{{ d | length }}|{{ 'a-b' | replace('-', '+') }}|{{ 'aaa' | replace('a', 'b', 2) }}",
     "[('b', 1), ('a', 2)]|[('a', 2), ('b', 1)]|2|a+b|bba"},
    {"{{ '42' | int + 1 }}|{{ 'x' | int }}|{{ 'x' | int(7) }}|{{ '2.5' | float }}|{{ 3 | float }}|{{ 3.9 | int }}|{{ 5 | string }}|{{ [1, 2] | string }}",
     "43|0|7|2.5|3.0|3|5|[1, 2]"},
    {"{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}",
     "a\n  b\n\n  c|  a\n  b|a\n  \n  b"},
    {"{{ '<a href=\"x\">&\\'</a>' | escape }}|{{ 'x' | safe }}|{{ [1,2,3,4,5] | batch(2) | list }}|{{ 2.5 | round }}|{{ 3.14159 | round(2) }}|{{ -4 | abs }}|{{ 'one two  three' | wordcount }}",
     "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt;|x|[[1, 2], [3, 4], [5]]|2.0|3.14|4|3"},
    {"{{ ['B', 'a', 'c'] | sort }}|{{ ['B', 'a', 'c'] | sort(case_sensitive=true) }}|{{ messages | sort(attribute='role') | map(attribute='role') | join }}|{{ [1, 2, 3] | select('odd') | list }}|{{ [1, 2, 3] | reject('odd') | list }}|{{ l | map('string') | join('') }}",
     "['a', 'B', 'c']|['B', 'a', 'c']|assistantsystemuser|[1, 3]|[2]|312"},
    {"{{ '%s=%d' | format('a', 3) }}|{{ 'ab' | center(6) }}|{{ 'a b c d e f g h' | truncate(9) }}|{{ l | count }}",
     "a=3|  ab  |a b c...|3"},
};
static const struct jcase g_tojson[] = {
    {"{{ messages | tojson }}",
     "[{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"Hi é\"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1, \"b\": [1.5, \"x\"]}}}]}]"},
    {"{{ d | tojson(indent=2) }}",
     "{\n  \"b\": 1,\n  \"a\": 2\n}"},
    {"{{ {'u': 'é\"\\\\\\n\\t', 'f': 1.0, 'e': 1e-7, 'big': 1e22, 'n': none, 't': true, 'l': []} | tojson }}",
     "{\"u\": \"é\\\"\\\\\\n\\t\", \"f\": 1.0, \"e\": 1e-07, \"big\": 1e+22, \"n\": null, \"t\": true, \"l\": []}"},
    {"{{ 'x' | tojson }}{{ 3 | tojson }}{{ [] | tojson(indent=4) }}{{ {} | tojson }}",
     "\"x\"3[]{}"},
};
static const struct jcase g_tests[] = {
    {"{{ x is defined }}{{ x is undefined }}{{ none is none }}{{ 'a' is string }}{{ d is mapping }}{{ l is iterable }}{{ l is sequence }}{{ 3 is number }}{{ 3 is integer }}{{ 3.0 is float }}{{ true is boolean }}",
     "FalseTrueTrueTrueTrueTrueTrueTrueTrueTrueTrue"},
    {"{{ 1 is equalto 1 }}{{ 1 is eq 2 }}{{ 2 is in l }}{{ 3 is odd }}{{ 3 is even }}{{ 9 is divisibleby 3 }}{{ true is true }}{{ 0 is false }}{{ 'ab' is lower }}{{ 5 is gt 3 }}{{ 5 is not lt 3 }}",
     "TrueFalseTrueTrueFalseTrueTrueFalseTrueTrueTrue"},
};
static const struct jcase g_operators[] = {
    {"{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 6 / 2 }} {{ 2 ** 8 }} {{ 2 ** -1 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }}",
     "3 -4 1 2 3.5 3.0 256 0.5 7 9 4"},
    {"{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ 'x' + 'y' }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 5 }} {{ 'b' > 'a' }} {{ [1, 2] < [1, 3] }}",
     "a1NoneTrue ababab [1, 2] xy True False True True"},
    {"{{ 'b' in 'abc' }} {{ 'z' not in 'abc' }} {{ 'a' in d }} {{ 2 in l }} {{ not 1 }} {{ 1 and 0 }} {{ 0 or 'x' }} {{ none or [] }} {{ 'y' if n > 3 else 'n' }} {{ 'q' if false }}|",
     "True True True True False 0 x [] y |"},
    {"{{ l[0] }} {{ l[-1] }} {{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ 'héllo'[1] }} {{ 'héllo'[1:3] }} {{ 'abc'[::-1] }} {{ l[10] }}|{{ d['a'] }} {{ d.a }} {{ messages[1].content }} {{ messages.0.role }}",
     "3 2 [1, 2] [3, 1] [2, 1, 3] [3, 2] é él cba |2 2 Hi é system"},
    {"{{ [1, 'two', none, true, 1.5, {'k': [1]}] }} {{ (1, 2) }} {{ (1,) }} {{ {'a': 'it\\'s'} }} {{ \"it's\" }} {{ none }} {{ true }} {{ 1.0 }} {{ 1e16 }} {{ 1.5e-5 }} {{ 0.1 + 0.2 }}",
     "[1, 'two', None, True, 1.5, {'k': [1]}] (1, 2) (1,) {'a': \"it's\"} it's None True 1.0 1e+16 1.5e-05 0.30000000000000004"},
};
static const struct jcase g_methods[] = {
    {"{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ s.split() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}",
     "Hello World|Hello World  |  Hello World|hi|['Hello', 'World']|['a', 'b', '', 'c']|['a', 'b c']|['a,b', 'c']"},
    {"{{ s.upper() }}|{{ s.lower() }}|{{ 'hi there'.title() }}|{{ 'hi'.capitalize() }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'aXa'.replace('a', 'b') }}|{{ 'a{}b{x}'.format(1, x=2) }}",
     "  HELLO WORLD  |  hello world  |Hi There|Hi|True|True|bXb|a1b2"},
    {"{{ 'hello'.find('l') }}|{{ 'hello'.rfind('l') }}|{{ 'hello'.count('l') }}|{{ '-'.join(['a', 'b']) }}|{{ '12'.isdigit() }}|{{ 'a\\nb'.splitlines() }}|{{ 'pre_x'.removeprefix('pre_') }}",
     "2|3|2|a-b|True|['a', 'b']|x"},
    {"{{ d.items() | list }}|{{ d.keys() | list }}|{{ d.values() | list }}|{{ d.get('a') }}|{{ d.get('z') }}|{{ d.get('z', 0) }}|{{ l.index(1) }}|{{ l.count(3) }}",
     "[('b', 1), ('a', 2)]|['b', 'a']|[1, 2]|2|None|0|1|1"},
};
static const struct jcase g_undefined[] = {
    {"[{{ nope }}][{{ nope | length }}][{{ nope | default('x') }}][{% for x in nope %}{{ x }}{% endfor %}][{{ nope is defined }}][{{ messages[0].nope }}][{{ messages[9] }}][{{ d.zz is defined }}][{{ nope ~ 'a' }}][{% if nope %}T{% else %}F{% endif %}]",
     "[][0][x][][False][][][False][a][F]"},
    {"{{ nope == none }}{{ nope | trim }}{{ nope | upper }}{{ nope | list }}",
     "False[]"},
};
static const struct jcase g_globals[] = {
    {"{{ range(3) | list }}{{ range(1, 7, 2) | list }}{{ range(3, 0, -1) | list }}|{{ dict(a=1, b='x') }}|{{ namespace(a=1).a }}|{{ strftime_now('%Y-%m-%d %H:%M %A %b') }}",
     "[0, 1, 2][1, 3, 5][3, 2, 1]|{'a': 1, 'b': 'x'}|1|2024-07-26 10:40 Friday Jul"},
};
static const char g_ctx[] = "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"Hi é\"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1, \"b\": [1.5, \"x\"]}}}]}], \"n\": 7, \"s\": \"  Hello World  \", \"l\": [3, 1, 2], \"d\": {\"b\": 1, \"a\": 2}}";

/* Renders src with ctx (NULL: g_ctx); returns the text (caller frees) or NULL with *rc. */
static char *render(const char *src, const char *ctx, int *rc, struct jinja_error *je)
{
    struct jinja_tmpl *t = NULL;
    struct jinja_error e0;
    if (!je) je = &e0;
    if (!ctx) ctx = g_ctx;
    *rc = jinja_parse(src, strlen(src), &t, je);
    if (*rc) return NULL;
    char *out = NULL;
    size_t len = 0;
    struct jinja_render_opts o = {.now = 1721990400};
    *rc = jinja_render(t, ctx, strlen(ctx), &o, &out, &len, je);
    jinja_free(t);
    if (!*rc) assert_int_equal(strlen(out), len);
    return *rc ? NULL : out;
}

static void run_cases(const struct jcase *cs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc;
        struct jinja_error je;
        char *got = render(cs[i].tmpl, NULL, &rc, &je);
        if (!got || strcmp(got, cs[i].want)) {
            fprintf(stderr, "template: %s\n  want: %s\n  got:  %s\n", cs[i].tmpl, cs[i].want,
                    got ? got : je.msg);
        }
        assert_non_null(got);
        assert_string_equal(got, cs[i].want);
        free(got);
    }
}

#define CASES(name, table)                                                                  \
    static void name(void **state)                                                           \
    {                                                                                        \
        (void)state;                                                                         \
        setenv("TZ", "UTC", 1);                                                              \
        run_cases(table, sizeof table / sizeof table[0]);                                    \
    }

CASES(test_jinja_whitespace_control, g_whitespace)
CASES(test_jinja_for_loops, g_loops)
CASES(test_jinja_scopes_and_namespace, g_scopes)
CASES(test_jinja_macros_and_call, g_macros)
CASES(test_jinja_filters, g_filters)
CASES(test_jinja_tojson_as_hf, g_tojson)
CASES(test_jinja_tests, g_tests)
CASES(test_jinja_operators_and_literals, g_operators)
CASES(test_jinja_string_and_dict_methods, g_methods)
CASES(test_jinja_undefined_semantics, g_undefined)
CASES(test_jinja_globals, g_globals)

/* Errors carry line:col and name the construct; runtime errors name theirs. */
static void test_jinja_errors_name_the_construct(void **state)
{
    (void)state;
    static const struct {
        const char *tmpl;
        int line, col;
        const char *msg_part;
    } bad[] = {
        {"a\n{% extends 'base' %}", 2, 4, "unsupported tag '{% extends %}'"},
        {"{% if x %}never closed", 1, 23, "missing {% endif %}"},
        {"{{ 1 + }}", 1, 8, "unexpected '}}'"},
        {"x\n\n  {{ messages | frobnicate }}", 3, 17, "unknown filter 'frobnicate'"},
        {"{{ x is frob }}", 1, 6, "unknown test 'frob'"},
        {"{{ raise_exception('No tools here') }}", 1, 19, "No tools here"},
        {"{{ nope.attr }}", 1, 8, "'nope' is undefined"},
        {"{{ 1 / 0 }}", 1, 6, "division by zero"},
        {"{{ 'a' + 1 }}", 1, 8, "unsupported operand types for +: 'str' and 'int'"},
        {"{% endfor %}", 1, 4, "unexpected {% endfor %}"},
        {"{{ 'unterminated }}", 1, 4, "unterminated string"},
        {"{{ l.append(4) }}", 1, 5, "unsafe"},
        {"{% set l.x = 1 %}", 1, 9, "only on a namespace()"},
        {"{% for a, b in [1] %}{% endfor %}", 1, 8, "not iterable"},
        {"{% for a, b in [[1]] %}{% endfor %}", 1, 8, "cannot unpack 1 values into 2 names"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc;
        struct jinja_error je;
        char *got = render(bad[i].tmpl, NULL, &rc, &je);
        if (got || !strstr(je.msg, bad[i].msg_part) || je.line != bad[i].line || je.col != bad[i].col)
            fprintf(stderr, "template: %s -> %d:%d %s\n", bad[i].tmpl, je.line, je.col, je.msg);
        assert_null(got);
        assert_int_equal(rc, MESH_EINVAL);
        assert_non_null(strstr(je.msg, bad[i].msg_part));
        assert_int_equal(je.line, bad[i].line);
        assert_int_equal(je.col, bad[i].col);
    }
    /* bad context JSON */
    int rc;
    struct jinja_error je;
    assert_null(render("x", "{\"messages\": [", &rc, &je));
    assert_int_equal(rc, MESH_EINVAL);
    assert_non_null(strstr(je.msg, "context"));
    assert_null(render("x", "[1]", &rc, &je));
    assert_int_equal(rc, MESH_EINVAL);
}

/* A hostile template stops with MESH_ERANGE instead of hanging or exhausting memory. */
static void test_jinja_limits(void **state)
{
    (void)state;
    static const char *const slow[] = {
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
        "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}",
        "{{ 'x' * 1000000000 }}",
        "{{ range(100000000) | list }}",
    };
    for (size_t i = 0; i < sizeof slow / sizeof slow[0]; i++) {
        int rc;
        struct jinja_error je;
        char *got = render(slow[i], NULL, &rc, &je);
        assert_null(got);
        assert_int_equal(rc, MESH_ERANGE);
        assert_true(je.msg[0] != 0);
    }
    /* deep nesting is refused by the parser, not by the stack */
    char deep[4096];
    size_t k = 0;
    k += (size_t)snprintf(deep + k, sizeof deep - k, "{{ ");
    for (int i = 0; i < 1000; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (int i = 0; i < 1000; i++) deep[k++] = ')';
    snprintf(deep + k, sizeof deep - k, " }}");
    int rc;
    assert_null(render(deep, NULL, &rc, NULL));
    assert_int_equal(rc, MESH_EINVAL);
}

/* A conversation large enough to matter renders, and the output is exactly as long as said. */
static void test_jinja_render_is_repeatable(void **state)
{
    (void)state;
    const char *src = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}";
    struct jinja_tmpl *t = NULL;
    assert_int_equal(jinja_parse(src, strlen(src), &t, NULL), 0);
    for (int i = 0; i < 3; i++) { /* a parsed template is immutable: render it again */
        char *out = NULL;
        size_t len = 0;
        assert_int_equal(jinja_render(t, g_ctx, strlen(g_ctx), NULL, &out, &len, NULL), 0);
        assert_string_equal(out, "<system>S<user>Hi é<assistant>None");
        free(out);
    }
    jinja_free(t);
    jinja_free(NULL);
}

/* ---- chat_setup --------------------------------------------------------------------- */

static const char T_MARKED[] =
    "{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}:{{ m.content }}]{% endfor %}"
    "{% if tools %}{{ tools | length }} tools{% endif %}{% if add_generation_prompt %}"
    "[ASSISTANT:{% endif %}";

/* Writes stories260K with a tokenizer.chat_template to path. */
static void write_model_with_template(const char *path, const char *tmpl)
{
    struct gguf *g = NULL;
    char err[256];
    assert_int_equal(gguf_open(test_model_path("stories260K.gguf"), &g, err, sizeof err), 0);
    struct gguf_writer *w = NULL;
    assert_int_equal(gguf_writer_new(&w), 0);
    for (int64_t i = 0; i < gguf_kv_count(g); i++) assert_int_equal(gguf_writer_copy_kv(w, g, i), 0);
    assert_int_equal(gguf_writer_set_str(w, "tokenizer.chat_template", tmpl), 0);
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
        const struct gguf_tensor *tt = gguf_tensor_at(g, i);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)tt->name.len, tt->name.ptr);
        assert_true(gguf_writer_add_tensor(w, name, tt->type, tt->n_dims, tt->ne, tt->data) >= 0);
    }
    assert_int_equal(gguf_writer_write(w, path, NULL, NULL, err, sizeof err), 0);
    gguf_writer_free(w);
    gguf_close(g);
}

static void test_jinja_gguf_template_renders(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/jinja_model.gguf", test_tmp_dir());
    write_model_with_template(path, T_MARKED);
    struct model *m = NULL;
    char err[256];
    assert_int_equal(model_load(path, NULL, &m, err, sizeof err), 0);
    struct chat_setup s;
    assert_int_equal(chat_setup_init(&s, model_chat_template(m), model_tok(m), NULL), 0);
    assert_non_null(s.jinja); /* the model's own template, not a C family */
    const struct chat_msg msgs[] = {{"system", "Be brief."}, {"user", "Hi"}};
    char *out = NULL;
    assert_int_equal(chat_setup_render(&s, msgs, 2, true, &out), 0);
    /* stories260K adds BOS itself, so the template's leading bos_token is dropped */
    assert_string_equal(out, "[SYSTEM:Be brief.][USER:Hi][ASSISTANT:");
    free(out);
    const char *tools = "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]";
    assert_int_equal(chat_setup_render_tools(&s, msgs, NULL, 2, tools, false, &out), 0);
    assert_string_equal(out, "[SYSTEM:Be brief.][USER:Hi]1 tools");
    free(out);
    char desc[200];
    assert_non_null(strstr(chat_setup_describe(&s, desc, sizeof desc), "jinja"));
    chat_setup_free(&s);
    model_free(m);
    remove(path);
}

/* A template the interpreter cannot run falls back to the detected C family. */
static void test_jinja_broken_template_falls_back(void **state)
{
    (void)state;
    static const char broken[] =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] | frobnicate + '<|im_end|>' + '\\n'}}{% endfor %}";
    struct chat_setup s;
    assert_int_equal(chat_setup_init(&s, broken, NULL, NULL), 0);
    assert_null(s.jinja);
    assert_int_equal(s.tmpl, CHAT_TMPL_CHATML);
    const struct chat_msg msgs[] = {{"user", "Hi"}};
    char *out = NULL;
    assert_int_equal(chat_setup_render(&s, msgs, 1, true, &out), 0);
    assert_string_equal(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    chat_setup_free(&s);
}

/* --chat-template: a family, a built-in Jinja template, a file; a bad name fails. */
static void test_jinja_override_file_builtin_family(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/jinja_override.jinja", test_tmp_dir());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{% for m in messages %}<<{{ m.content }}>>{% endfor %}", f);
    fclose(f);
    const struct chat_msg msgs[] = {{"user", "Hi"}};
    struct chat_setup s;
    char *out = NULL;
    assert_int_equal(chat_setup_init(&s, T_MARKED, NULL, path), 0);
    assert_non_null(s.jinja);
    assert_int_equal(chat_setup_render(&s, msgs, 1, true, &out), 0);
    assert_string_equal(out, "<<Hi>>");
    free(out);
    chat_setup_free(&s);
    remove(path);

    assert_int_equal(chat_setup_init(&s, T_MARKED, NULL, "gemma"), 0);
    assert_null(s.jinja);
    assert_int_equal(chat_setup_render(&s, msgs, 1, true, &out), 0);
    assert_string_equal(out, "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
    free(out);
    chat_setup_free(&s);

    assert_non_null(chat_builtin_source("qwen2.5-tools"));
    assert_null(chat_builtin_source("nope"));
    assert_int_equal(chat_setup_init(&s, NULL, NULL, "qwen2.5-tools"), 0);
    assert_non_null(s.jinja);
    assert_int_equal(s.tmpl, CHAT_TMPL_CHATML); /* stop strings of its family */
    /* an OpenAI tool call: arguments arrive as JSON text and reach the template as an object */
    const struct chat_msg conv[] = {{"user", "Weather?"}, {"assistant", NULL}, {"tool", "sunny"}};
    const struct chat_msg_tools mt[] = {
        {0},
        {.tool_calls_json = "[{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": "
                            "\"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}}]"},
        {.tool_call_id = "c1"}};
    const char *tools = "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}]";
    assert_int_equal(chat_setup_render_tools(&s, conv, mt, 3, tools, true, &out), 0);
    assert_non_null(strstr(out, "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}\n</tools>"));
    assert_non_null(strstr(out, "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", "
                                "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n"));
    assert_non_null(strstr(out, "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
                                "<|im_start|>assistant\n"));
    free(out);
    /* a template that refuses a conversation fails the render (logged), no crash */
    const struct chat_msg nul[] = {{"user", NULL}};
    assert_int_equal(chat_setup_render(&s, nul, 1, true, &out), MESH_EINVAL);
    chat_setup_free(&s);

    assert_int_equal(chat_setup_init(&s, NULL, NULL, "/nonexistent/x.jinja"), MESH_EINVAL);
    chat_setup_free(&s);
}

/* A template that refuses a system message (Gemma's) gets it merged into the first user
 * message; one that refuses the roles entirely falls back to the C family; with tools, the
 * refusal stands. */
static void test_jinja_refused_conversation_falls_back(void **state)
{
    (void)state;
    static const char no_system[] =
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for m in messages %}<start_of_turn>{{ m.role }}\n{{ m.content }}<end_of_turn>\n"
        "{% endfor %}{% if tools %}{{ raise_exception('no tools') }}{% endif %}";
    struct chat_setup s;
    assert_int_equal(chat_setup_init(&s, no_system, NULL, NULL), 0);
    assert_non_null(s.jinja);
    const struct chat_msg msgs[] = {{"system", "Be brief."}, {"user", "Hi"}};
    char *out = NULL;
    assert_int_equal(chat_setup_render(&s, msgs, 2, false, &out), 0);
    assert_string_equal(out, "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n");
    free(out);
    assert_int_equal(chat_setup_render_tools(&s, msgs, NULL, 2, "[{\"type\": \"function\"}]", false, &out), MESH_EINVAL);
    assert_null(out);
    chat_setup_free(&s);

    static const char only_user[] =
        "{% for m in messages %}{% if m.role != 'user' %}{{ raise_exception('users only') }}{% endif %}"
        "[{{ m.content }}]{% endfor %}<|im_start|>";
    assert_int_equal(chat_setup_init(&s, only_user, NULL, NULL), 0);
    assert_null(s.jinja); /* the trial conversation has an assistant turn: refused at init */
    chat_setup_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jinja_whitespace_control),
        cmocka_unit_test(test_jinja_for_loops),
        cmocka_unit_test(test_jinja_scopes_and_namespace),
        cmocka_unit_test(test_jinja_macros_and_call),
        cmocka_unit_test(test_jinja_filters),
        cmocka_unit_test(test_jinja_tojson_as_hf),
        cmocka_unit_test(test_jinja_tests),
        cmocka_unit_test(test_jinja_operators_and_literals),
        cmocka_unit_test(test_jinja_string_and_dict_methods),
        cmocka_unit_test(test_jinja_undefined_semantics),
        cmocka_unit_test(test_jinja_globals),
        cmocka_unit_test(test_jinja_errors_name_the_construct),
        cmocka_unit_test(test_jinja_limits),
        cmocka_unit_test(test_jinja_render_is_repeatable),
        cmocka_unit_test(test_jinja_gguf_template_renders),
        cmocka_unit_test(test_jinja_broken_template_falls_back),
        cmocka_unit_test(test_jinja_override_file_builtin_family),
        cmocka_unit_test(test_jinja_refused_conversation_falls_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
