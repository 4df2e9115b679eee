/* fuzz_jinja.c - fuzz target: the Jinja interpreter (engine/jinja) on arbitrary bytes.
 *
 * Input: template source, optionally followed by a 0x00 byte and the JSON context; without
 * one the context is a fixed conversation with tools (so real templates in the corpus run
 * their loops). Parse errors and render errors are fine; crashes, hangs, leaks and a
 * result that is not NUL-terminated at its stated length are not. Output is capped at
 * 1 MiB so replays stay fast.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char g_ctx[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
    "\"content\": \"Hi \\u00e9\"}, {\"role\": \"assistant\", \"content\": null, \"tool_calls\": "
    "[{\"id\": \"abcDEF123\", \"type\": \"function\", \"function\": {\"name\": \"f\", "
    "\"arguments\": {\"a\": 1, \"b\": [1.5, \"x\"]}}}]}, {\"role\": \"tool\", \"content\": "
    "\"42\", \"tool_call_id\": \"abcDEF123\"}], \"tools\": [{\"type\": \"function\", "
    "\"function\": {\"name\": \"f\", \"description\": \"d\", \"parameters\": {\"type\": "
    "\"object\", \"properties\": {\"a\": {\"type\": \"integer\"}}}}}], "
    "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *src = (const char *)data;
    const uint8_t *nul = memchr(data, 0, size);
    size_t src_len = nul ? (size_t)(nul - data) : size;
    const char *ctx = nul ? (const char *)nul + 1 : g_ctx;
    size_t ctx_len = nul ? size - src_len - 1 : sizeof g_ctx - 1;
    struct jinja_tmpl *t = NULL;
    struct jinja_error je;
    if (jinja_parse(src, src_len, &t, &je) != 0) {
        if (t) abort(); /* a failed parse hands nothing back */
        return 0;
    }
    struct jinja_render_opts o = {.now = 1721990400, .max_output = (size_t)1 << 20,
                                  .tool_args_objects = size & 1};
    char *out = NULL;
    size_t len = 0;
    int rc = jinja_render(t, ctx, ctx_len, &o, &out, &len, &je);
    if (rc == 0 && (!out || out[len] != 0)) abort();
    if (rc != 0 && out) abort();
    free(out);
    jinja_free(t);
    return 0;
}
