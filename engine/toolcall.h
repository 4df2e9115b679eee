/* toolcall.h - the tool calls in a model's output, in the syntax its chat template teaches:
 *   HERMES  (Qwen 2.5, Hermes, most ChatML tool templates):
 *           <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>, text around allowed
 *   LLAMA3  (Llama 3.1-3.3): the whole turn is {"name": "f", "parameters": {...}} (or
 *           "arguments"), after an optional <|python_tag|>; several joined by ';'
 *   MISTRAL (Mistral v3 and later): [TOOL_CALLS][{"name": "f", "arguments": {...}}, ...] or
 *           the v11 form [TOOL_CALLS]f[ARGS]{...}
 * A model whose template names no syntax gets HERMES (what a forced call's grammar writes).
 * Text that only looks like a call (bad JSON, no name) stays content. Pure functions; no
 * I/O; any thread.
 */
#ifndef MESH_ENGINE_TOOLCALL_H
#define MESH_ENGINE_TOOLCALL_H

#include <stdbool.h>
#include <stddef.h>

enum toolcall_syntax { TOOLCALL_HERMES = 0, TOOLCALL_LLAMA3 = 1, TOOLCALL_MISTRAL = 2 };

/* The syntax a Jinja chat template teaches (NULL or unknown: HERMES). */
enum toolcall_syntax toolcall_syntax_detect(const char *jinja);
const char *toolcall_syntax_name(enum toolcall_syntax s);

struct toolcall {
    char *name;      /* the function's name */
    char *arguments; /* a JSON object as compact text ("{}" when the model gave none) */
};

struct toolcall_result {
    char *content; /* the text outside the calls, trimmed ("" when only calls) */
    struct toolcall *calls;
    int n_calls;
};

/* Splits text[len] into content and calls. *out is zeroed first; free it with
 * toolcall_result_free. Returns 0 (n_calls 0 when there is no call) or MESH_ENOMEM. */
int toolcall_parse(enum toolcall_syntax s, const char *text, size_t len,
                   struct toolcall_result *out);
void toolcall_result_free(struct toolcall_result *r);

/* Streaming: how many leading bytes of the text generated so far are surely content, so
 * may be sent now. Text from the start of a call (or of what could still become one: a
 * partial marker at the end, LLAMA3 output opening with '{') is held back. from: what an
 * earlier call on a prefix of the same text returned (0 the first time); only the text
 * after it is looked at, so a turn costs O(len) however it is chunked. */
size_t toolcall_stream_safe(enum toolcall_syntax s, const char *text, size_t len, size_t from);

#endif
