/* test_json_schema.c - engine/json_schema: schemas compile to GBNF that parses, and the
 * grammar accepts instances that satisfy the schema and refuses those that do not (types,
 * enum/const, required and optional properties in order, additionalProperties, array bounds,
 * tuples, anyOf, $ref with recursion, string lengths and formats); refusals name the keyword. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct grammar *compile(const char *schema)
{
    char *gbnf = NULL;
    char err[256];
    if (json_schema_to_gbnf(schema, strlen(schema), &gbnf, err, sizeof err))
        fail_msg("schema %s: %s", schema, err);
    struct grammar *g = NULL;
    if (grammar_parse(gbnf, strlen(gbnf), &g, err, sizeof err))
        fail_msg("schema %s: GBNF does not parse: %s\n%s", schema, err, gbnf);
    free(gbnf);
    return g;
}

static bool matches(const struct grammar *g, const char *str)
{
    struct grammar_state *s;
    assert_int_equal(grammar_state_new(g, NULL, false, &s), 0);
    bool ok = grammar_state_accept_bytes(s, str, strlen(str)) == 0 && grammar_state_is_accepting(s);
    grammar_state_free(s);
    return ok;
}

struct jcase {
    const char *schema;
    const char *yes[6];
    const char *no[6];
};

static void run_cases(const struct jcase *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct grammar *g = compile(c[i].schema);
        for (int k = 0; k < 6 && c[i].yes[k]; k++)
            if (!matches(g, c[i].yes[k])) fail_msg("%s should accept %s", c[i].schema, c[i].yes[k]);
        for (int k = 0; k < 6 && c[i].no[k]; k++)
            if (matches(g, c[i].no[k])) fail_msg("%s should refuse %s", c[i].schema, c[i].no[k]);
        grammar_free(g);
    }
}

static void test_json_schema_primitives(void **st)
{
    (void)st;
    static const struct jcase c[] = {
        {"{\"type\":\"integer\"}", {"0", "-12", "345"}, {"01", "1.5", "\"1\"", "-"}},
        {"{\"type\":\"number\"}", {"0", "-1.25", "3e10", "2.5E-3"}, {".5", "1.", "abc"}},
        {"{\"type\":\"boolean\"}", {"true", "false"}, {"True", "1"}},
        {"{\"type\":\"null\"}", {"null"}, {"nil", ""}},
        {"{\"type\":\"string\"}", {"\"\"", "\"a b\"", "\"\\\"q\\u00e9\\n\"", "\"日本\""}, {"\"a", "abc", "\"\\x\""}},
        {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", {"\"ab\"", "\"abc\"", "\"éé\""}, {"\"a\"", "\"abcd\""}},
        {"{\"type\":[\"string\",\"null\"]}", {"\"x\"", "null"}, {"1"}},
        {"{\"enum\":[\"red\",\"green\",1,null,{\"a\":[1]}]}", {"\"red\"", "\"green\"", "1", "null", "{\"a\":[1]}"}, {"\"blue\"", "2", "\"Red\""}},
        {"{\"const\":\"fixed\"}", {"\"fixed\""}, {"\"other\""}},
        /* an enum whose members share prefixes (factored into a trie), also mid-character */
        {"{\"enum\":[\"a\",\"ab\",\"abc\",\"é\",\"éa\",\"日本\",\"日x\",\"a\"]}",
         {"\"a\"", "\"abc\"", "\"éa\"", "\"日本\"", "\"日x\"", "\"é\""}, {"\"ac\"", "\"日\"", "\"abcd\"", "\"\"", "\"è\""}},
        {"{\"type\":\"string\",\"format\":\"date\"}", {"\"2024-02-29\""}, {"\"2024-13-01\"", "\"24-01-01\""}},
        {"{\"type\":\"string\",\"format\":\"time\"}", {"\"23:59:01Z\"", "\"08:00:00.5+02:00\""}, {"\"24:00:00Z\""}},
        {"{\"type\":\"string\",\"format\":\"date-time\"}", {"\"2024-01-02T03:04:05Z\""}, {"\"2024-01-02 03:04:05Z\""}},
        {"{\"type\":\"string\",\"format\":\"uuid\"}", {"\"123e4567-e89b-12d3-a456-426614174000\""}, {"\"123e4567e89b12d3a456426614174000\""}},
        {"{}", {"1", "\"s\"", "[true,{}]", "{\"k\": null}"}, {"[1,]"}},
        {"{\"type\":\"integer\",\"nullable\":true}", {"1", "null"}, {"\"1\""}},
    };
    run_cases(c, sizeof c / sizeof *c);
}

static void test_json_schema_objects(void **st)
{
    (void)st;
    static const struct jcase c[] = {
        /* required in order, optional skipped or present, never extra keys by default */
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"},"
         "\"c\":{\"type\":\"boolean\"}},\"required\":[\"b\"]}",
         {"{\"b\":\"x\"}", "{\"a\":1,\"b\":\"x\"}", "{\"a\": 1, \"b\": \"x\", \"c\": true}", "{\"b\":\"x\",\"c\":false}"},
         {"{}", "{\"a\":1}", "{\"b\":\"x\",\"d\":1}", "{\"b\":\"x\",}", "{,\"b\":\"x\"}", "{\"c\":true,\"b\":\"x\"}"}},
        /* all optional: the empty object too */
        {"{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"},\"y\":{\"type\":\"integer\"}}}",
         {"{}", "{\"x\":1}", "{\"y\":2}", "{\"x\":1,\"y\":2}"}, {"{\"y\":2,\"x\":1}", "{\"x\":1,,\"y\":2}"}},
        /* additionalProperties: a schema */
        {"{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"}},\"required\":[\"id\"],"
         "\"additionalProperties\":{\"type\":\"string\"}}",
         {"{\"id\":1}", "{\"id\":1,\"k\":\"v\",\"k2\":\"w\"}"}, {"{\"id\":1,\"k\":2}", "{\"k\":\"v\"}"}},
        /* no properties: any object */
        {"{\"type\":\"object\"}", {"{}", "{\"a\":[1,2],\"b\":{\"c\":null}}"}, {"[]", "{\"a\"}"}},
        /* nested objects and arrays with bounds */
        {"{\"type\":\"object\",\"properties\":{\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},"
         "\"minItems\":1,\"maxItems\":2},\"pt\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"}},"
         "\"required\":[\"x\"],\"additionalProperties\":false}},\"required\":[\"tags\",\"pt\"]}",
         {"{\"tags\":[\"a\"],\"pt\":{\"x\":1.5}}", "{\"tags\": [\"a\", \"b\"], \"pt\": {\"x\": -1}}"},
         {"{\"tags\":[],\"pt\":{\"x\":1}}", "{\"tags\":[\"a\",\"b\",\"c\"],\"pt\":{\"x\":1}}", "{\"tags\":[\"a\"],\"pt\":{}}"}},
    };
    run_cases(c, sizeof c / sizeof *c);
}

static void test_json_schema_arrays_anyof_refs(void **st)
{
    (void)st;
    static const struct jcase c[] = {
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2}", {"[1,2]", "[1,2,3,4]"}, {"[]", "[1]", "[1,\"a\"]"}},
        {"{\"type\":\"array\",\"maxItems\":0}", {"[]"}, {"[1]"}},
        {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}", {"[\"a\",1]"}, {"[1,\"a\"]", "[\"a\"]"}},
        {"{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"object\",\"properties\":{\"k\":{\"const\":1}},\"required\":[\"k\"]}]}",
         {"5", "{\"k\":1}"}, {"{\"k\":2}", "\"5\""}},
        {"{\"oneOf\":[{\"type\":\"boolean\"},{\"type\":\"null\"}]}", {"true", "null"}, {"0"}},
        /* recursion through $defs */
        {"{\"$ref\":\"#/$defs/node\",\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
         "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\"]}}}",
         {"{\"v\":1}", "{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[]}]}"}, {"{\"v\":1,\"kids\":[{}]}"}},
        {"{\"definitions\":{\"c\":{\"enum\":[\"a\",\"b\"]}},\"type\":\"array\",\"items\":{\"$ref\":\"#/definitions/c\"}}",
         {"[\"a\",\"b\",\"a\"]"}, {"[\"c\"]"}},
        {"{\"allOf\":[{\"type\":\"integer\"}]}", {"3"}, {"\"3\""}},
    };
    run_cases(c, sizeof c / sizeof *c);
}

static void test_json_schema_refusals_name_the_problem(void **st)
{
    (void)st;
    struct {
        const char *schema, *words;
    } c[] = {
        {"{\"type\":", "not valid JSON"},
        {"{\"type\":\"string\",\"pattern\":\"^a+$\"}", "pattern"},
        {"{\"type\":\"widget\"}", "widget"},
        {"{\"$ref\":\"#/$defs/missing\"}", "missing"},
        {"{\"$ref\":\"http://example.com/s.json\"}", "$ref"},
        {"{\"type\":\"array\",\"minItems\":3,\"maxItems\":1}", "minItems"},
        {"{\"type\":\"string\",\"minLength\":-1}", "minLength"},
        {"{\"allOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}", "allOf"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "\"b\""},
        {"{\"enum\":[]}", "enum"},
        {"false", "nothing"},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        char *gbnf = NULL;
        char err[256] = "";
        int rc = json_schema_to_gbnf(c[i].schema, strlen(c[i].schema), &gbnf, err, sizeof err);
        if (rc != MESH_EINVAL || !strstr(err, c[i].words))
            fail_msg("%s: rc %d, message \"%s\" (want \"%s\")", c[i].schema, rc, err, c[i].words);
        assert_null(gbnf);
    }
}

static void test_json_schema_any_object(void **st)
{
    (void)st;
    const char *t = json_schema_any_object_gbnf();
    struct grammar *g = NULL;
    assert_int_equal(grammar_parse(t, strlen(t), &g, NULL, 0), 0);
    assert_true(matches(g, "{}"));
    assert_true(matches(g, "{\"a\": [1, {\"b\": \"c\"}], \"d\": -0.5}"));
    assert_false(matches(g, "[]"));
    assert_false(matches(g, "{\"a\": 1"));
    grammar_free(g);
}

/* A 500-value enum (the benchmark's case) compiles and matches its members only. */
static void test_json_schema_large_enum(void **st)
{
    (void)st;
    char *s = malloc(64 * 1024);
    size_t n = (size_t)sprintf(s, "{\"enum\":[");
    for (int i = 0; i < 500; i++) n += (size_t)sprintf(s + n, "%s\"value-%d\"", i ? "," : "", i * 7);
    sprintf(s + n, "]}");
    struct grammar *g = compile(s);
    assert_true(matches(g, "\"value-0\""));
    assert_true(matches(g, "\"value-3493\""));
    assert_false(matches(g, "\"value-1\""));
    grammar_free(g);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_schema_primitives),
        cmocka_unit_test(test_json_schema_objects),
        cmocka_unit_test(test_json_schema_arrays_anyof_refs),
        cmocka_unit_test(test_json_schema_refusals_name_the_problem),
        cmocka_unit_test(test_json_schema_any_object),
        cmocka_unit_test(test_json_schema_large_enum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
