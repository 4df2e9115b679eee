/* jinja.h - a Jinja2 interpreter for chat templates.
 *
 * Runs the subset of Jinja2 that Hugging Face chat templates use, with the environment
 * transformers renders them in: trim_blocks and lstrip_blocks on, autoescape off, the
 * loopcontrols extension ({% break %}, {% continue %}), {% generation %} as a plain block,
 * and the globals raise_exception, strftime_now, namespace, range, dict plus HF's tojson
 * (ensure_ascii=False, sort_keys=False). Undefined values behave as jinja2's default
 * Undefined: they print as "", are false, iterate as empty, and fail on attribute access.
 * Not implemented: template inheritance (extends, block, include, import), autoescape,
 * {% with %}, line statements; such a template fails to parse with an error naming it.
 * Thread rule: a parsed template is immutable; any number of threads may render it.
 */
#ifndef MESH_ENGINE_JINJA_H
#define MESH_ENGINE_JINJA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct jinja_tmpl;

/* Where and why a parse or a render failed: line and column (1-based) of the construct,
 * and a message that names it ("unknown filter 'foo'"). */
struct jinja_error {
    int line, col;
    char msg[256];
};

/* Parses src[len] (UTF-8 Jinja source) into *out (caller frees with jinja_free). Returns 0,
 * MESH_EINVAL (syntax error or an unsupported construct: err says where and what),
 * MESH_ENOMEM. err may be NULL. */
int jinja_parse(const char *src, size_t len, struct jinja_tmpl **out, struct jinja_error *err);
void jinja_free(struct jinja_tmpl *t);

struct jinja_render_opts {
    int64_t now;          /* seconds since the epoch for strftime_now; 0 = time(NULL) */
    size_t max_output;    /* bytes; 0 = 16 MiB */
    bool tool_args_objects; /* messages[*].tool_calls[*].function.arguments that are JSON
                             * text of an object become that object (OpenAI clients send
                             * text; most templates tojson an object) */
};

/* Renders t with the variables of ctx_json (a JSON object: {"messages": [...], ...}; JSON
 * numbers keep int vs float as Python's json does) into a malloc'd NUL-terminated string
 * *out of *out_len bytes (caller frees). o may be NULL. Returns 0, MESH_EINVAL (bad JSON,
 * a runtime error such as raise_exception or an unknown filter: err says which and where),
 * MESH_ERANGE (output, memory or step limit exceeded), MESH_ENOMEM. */
int jinja_render(const struct jinja_tmpl *t, const char *ctx_json, size_t ctx_len,
                 const struct jinja_render_opts *o, char **out, size_t *out_len,
                 struct jinja_error *err);

#endif
