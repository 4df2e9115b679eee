/* test_toolcall.c - tool calls parsed out of model output in each template's syntax, text
 * that only looks like a call kept as content, and the streaming hold-back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine/toolcall.h"

#include <string.h>

static struct toolcall_result parse(enum toolcall_syntax s, const char *text)
{
    struct toolcall_result r;
    assert_int_equal(toolcall_parse(s, text, strlen(text), &r), 0);
    return r;
}

static void test_toolcall_detect(void **state)
{
    (void)state;
    assert_int_equal(toolcall_syntax_detect(NULL), TOOLCALL_HERMES);
    assert_int_equal(toolcall_syntax_detect("{% for t in tools %}<tool_call>{% endfor %}"), TOOLCALL_HERMES);
    assert_int_equal(toolcall_syntax_detect("{{- '[TOOL_CALLS]' }}"), TOOLCALL_MISTRAL);
    assert_int_equal(toolcall_syntax_detect("<|start_header_id|>ipython<|end_header_id|>"), TOOLCALL_LLAMA3);
    assert_string_equal(toolcall_syntax_name(TOOLCALL_LLAMA3), "llama3");
}

static void test_toolcall_hermes(void **state)
{
    (void)state;
    struct toolcall_result r = parse(TOOLCALL_HERMES,
        "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": 2}}\n</tool_call>\n"
        "<tool_call>{\"name\":\"time\",\"arguments\":\"{\\\"tz\\\":\\\"UTC\\\"}\"}</tool_call>");
    assert_int_equal(r.n_calls, 2);
    assert_string_equal(r.content, "Let me look.");
    assert_string_equal(r.calls[0].name, "get_weather");
    assert_string_equal(r.calls[0].arguments, "{\"city\":\"Paris\",\"n\":2}");
    assert_string_equal(r.calls[1].name, "time");
    assert_string_equal(r.calls[1].arguments, "{\"tz\":\"UTC\"}"); /* JSON text -> object */
    toolcall_result_free(&r);
    /* the turn ended before the close tag */
    r = parse(TOOLCALL_HERMES, "<tool_call>\n{\"name\": \"f\"}");
    assert_int_equal(r.n_calls, 1);
    assert_string_equal(r.content, "");
    assert_string_equal(r.calls[0].arguments, "{}");
    toolcall_result_free(&r);
    /* not calls: bad JSON, no name, arguments not an object */
    const char *junk[] = {"<tool_call>{\"name\": </tool_call>", "<tool_call>{\"x\":1}</tool_call>",
                          "<tool_call>{\"name\":\"f\",\"arguments\":[1]}</tool_call>"};
    for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
        r = parse(TOOLCALL_HERMES, junk[i]);
        assert_int_equal(r.n_calls, 0);
        assert_string_equal(r.content, junk[i]);
        toolcall_result_free(&r);
    }
    r = parse(TOOLCALL_HERMES, "  plain answer  ");
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.content, "plain answer");
    toolcall_result_free(&r);
}

static void test_toolcall_llama3(void **state)
{
    (void)state;
    struct toolcall_result r = parse(TOOLCALL_LLAMA3,
        "<|python_tag|>{\"name\": \"search\", \"parameters\": {\"q\": \"cats\"}}; {\"name\": \"x\", \"parameters\": {}}");
    assert_int_equal(r.n_calls, 2);
    assert_string_equal(r.content, "");
    assert_string_equal(r.calls[0].name, "search");
    assert_string_equal(r.calls[0].arguments, "{\"q\":\"cats\"}");
    assert_string_equal(r.calls[1].name, "x");
    toolcall_result_free(&r);
    r = parse(TOOLCALL_LLAMA3, "{\"name\": \"f\", \"arguments\": {\"a\": 1}}");
    assert_int_equal(r.n_calls, 1);
    toolcall_result_free(&r);
    /* JSON that is not a call, and a call followed by prose: content */
    r = parse(TOOLCALL_LLAMA3, "{\"answer\": 42}");
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.content, "{\"answer\": 42}");
    toolcall_result_free(&r);
    r = parse(TOOLCALL_LLAMA3, "{\"name\": \"f\", \"parameters\": {}} and more");
    assert_int_equal(r.n_calls, 0);
    toolcall_result_free(&r);
}

static void test_toolcall_mistral(void **state)
{
    (void)state;
    struct toolcall_result r = parse(TOOLCALL_MISTRAL,
        "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": {}}]");
    assert_int_equal(r.n_calls, 2);
    assert_string_equal(r.calls[1].name, "b");
    toolcall_result_free(&r);
    r = parse(TOOLCALL_MISTRAL, "Sure. [TOOL_CALLS]get[ARGS]{\"id\": 7}[TOOL_CALLS]put[ARGS]{}");
    assert_int_equal(r.n_calls, 2);
    assert_string_equal(r.content, "Sure.");
    assert_string_equal(r.calls[0].name, "get");
    assert_string_equal(r.calls[0].arguments, "{\"id\":7}");
    assert_string_equal(r.calls[1].name, "put");
    toolcall_result_free(&r);
    r = parse(TOOLCALL_MISTRAL, "[TOOL_CALLS]nonsense");
    assert_int_equal(r.n_calls, 0);
    assert_string_equal(r.content, "nonsense");
    toolcall_result_free(&r);
}

static void test_toolcall_stream_safe(void **state)
{
    (void)state;
    const char *t = "Hello <tool_call>{\"name\"";
    assert_int_equal(toolcall_stream_safe(TOOLCALL_HERMES, t, strlen(t), 0), 6);
    t = "Hello <tool_c";
    assert_int_equal(toolcall_stream_safe(TOOLCALL_HERMES, t, strlen(t), 0), 6);
    t = "Hello <b>";
    assert_int_equal(toolcall_stream_safe(TOOLCALL_HERMES, t, strlen(t), 0), strlen(t));
    t = "Hi [TOOL_";
    assert_int_equal(toolcall_stream_safe(TOOLCALL_MISTRAL, t, strlen(t), 0), 3);
    assert_int_equal(toolcall_stream_safe(TOOLCALL_LLAMA3, "  {\"na", 6, 0), 0);
    assert_int_equal(toolcall_stream_safe(TOOLCALL_LLAMA3, "<|pyth", 6, 0), 0);
    assert_int_equal(toolcall_stream_safe(TOOLCALL_LLAMA3, "  ", 2, 0), 0);
    assert_int_equal(toolcall_stream_safe(TOOLCALL_LLAMA3, "Hello", 5, 0), 5);
    /* incremental: the same answers when only the text after an earlier result is read */
    t = "Hello <tool_call>{\"name\"";
    size_t from = toolcall_stream_safe(TOOLCALL_HERMES, t, 9, 0); /* "Hello <to" */
    assert_int_equal(from, 6);
    assert_int_equal(toolcall_stream_safe(TOOLCALL_HERMES, t, strlen(t), from), 6);
    assert_int_equal(toolcall_stream_safe(TOOLCALL_HERMES, "Hello world", 11, 6), 11);
    assert_int_equal(toolcall_stream_safe(TOOLCALL_LLAMA3, "Hi {\"name", 9, 2), 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_toolcall_detect),
        cmocka_unit_test(test_toolcall_hermes),
        cmocka_unit_test(test_toolcall_llama3),
        cmocka_unit_test(test_toolcall_mistral),
        cmocka_unit_test(test_toolcall_stream_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
