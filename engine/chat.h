/* chat.h - chat templates: turn a list of messages into the prompt text a model expects.
 *
 * Two renderers: the model's own Jinja template (chat_setup_*, engine/jinja.h), and C code
 * per family, used when there is no template or it cannot run. The family is detected from
 * tokenizer.chat_template (substring heuristics as llama.cpp's llm_chat_detect_template). Families: chatml, llama2 (with and without <<SYS>>), llama3, mistral
 * (v1/v3/v7 variants), phi3, zephyr, gemma, plus a documented fallback (chatml) when the
 * model has no template or an unrecognised one.
 * Thread rule: pure functions.
 */
#ifndef MESH_ENGINE_CHAT_H
#define MESH_ENGINE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

enum chat_tmpl {
    CHAT_TMPL_UNKNOWN = 0,
    CHAT_TMPL_CHATML,
    CHAT_TMPL_LLAMA2,
    CHAT_TMPL_LLAMA2_SYS,
    CHAT_TMPL_LLAMA3,
    CHAT_TMPL_MISTRAL_V1,
    CHAT_TMPL_MISTRAL_V3,
    CHAT_TMPL_MISTRAL_V7,
    CHAT_TMPL_PHI3,
    CHAT_TMPL_ZEPHYR,
    CHAT_TMPL_GEMMA,
    CHAT_TMPL_MISTRAL_V3_TEKKEN, /* Mistral Nemo: v3 without the spaces */
    CHAT_TMPL_PHI4,              /* chatml with <|im_sep|> */
    CHAT_TMPL_LLAMA31,           /* llama3 + Llama 3.1-3.3's "Cutting Knowledge Date" header */
    CHAT_TMPL_COUNT_
};

struct chat_msg {
    const char *role;    /* "system", "user", "assistant"; "tool" for Jinja templates */
    const char *content; /* NUL-terminated UTF-8 */
};

/* The tool fields of one message, beside its chat_msg (chat_setup_render_tools). */
struct chat_msg_tools {
    const char *tool_calls_json; /* assistant: JSON array of OpenAI tool calls, or NULL */
    const char *tool_call_id;    /* tool: the call it answers, or NULL */
    const char *name;            /* tool: the function's name, or NULL */
};

/* Detects the family from a Jinja template text (may be NULL). Returns
 * CHAT_TMPL_UNKNOWN if nothing matches (callers then use chat_tmpl_fallback()). */
enum chat_tmpl chat_tmpl_detect(const char *jinja);
enum chat_tmpl chat_tmpl_fallback(void);
/* What `chat`/`serve` use: the family named by override (--chat-template) if not NULL,
 * else the detected one, else the fallback; logs which one and why (a warning when the
 * model's template is missing or not recognised). Returns MESH_EINVAL if override names
 * no family (then *out is the fallback). */
int chat_tmpl_select(const char *jinja, const char *override, enum chat_tmpl *out);
/* Name ("chatml") and lookup by name (for --chat-template); -1/UNKNOWN if unknown. */
const char *chat_tmpl_name(enum chat_tmpl t);
enum chat_tmpl chat_tmpl_from_name(const char *name);

/* Renders msgs into a malloc'd NUL-terminated string in *out (caller frees), as the
 * family's official Jinja template renders it with bos_token = "" (the rendered text
 * never starts with BOS: the tokenizer adds it; BOS/EOS pieces inside the history, such
 * as llama-2's "</s><s>[INST]", are written as text, so tokenize with parse_special).
 * add_generation_prompt: end with the assistant header so the model replies.
 * Roles: "system", "user", "assistant". Families without a system role (gemma, mistral
 * v1/v3, llama-2 without <<SYS>>) merge system text into a user turn.
 * Returns 0, MESH_EINVAL (NULL/unknown role, NULL content, CHAT_TMPL_UNKNOWN),
 * MESH_ENOMEM. */
int chat_tmpl_apply(enum chat_tmpl t, const struct chat_msg *msgs, size_t n_msgs,
                    bool add_generation_prompt, char **out);
/* Same with the model's EOS piece text (tok_piece of tok_eos, render_special) for the
 * families whose template writes eos_token between turns: llama2, mistral and zephyr
 * (TinyLlama/zephyr use "</s>", StableLM-zephyr "<|endoftext|>"). NULL = "</s>". */
int chat_tmpl_apply_eos(enum chat_tmpl t, const struct chat_msg *msgs, size_t n_msgs,
                        bool add_generation_prompt, const char *eos_text, char **out);

/* Everything a render can take. */
struct chat_opts {
    bool add_generation_prompt;
    const char *eos_text;       /* as chat_tmpl_apply_eos; NULL = "</s>" */
    const char *default_system; /* rendered as a first system message when msgs[0] is not
                                 * one (see chat_tmpl_default_system); NULL = none */
    const char *date_string;    /* llama3.1's "Today Date: ..."; NULL = "26 Jul 2024", the
                                 * template's own default (stable, so KV prefixes stay valid) */
};
int chat_tmpl_render(enum chat_tmpl t, const struct chat_msg *msgs, size_t n_msgs,
                     const struct chat_opts *o, char **out);

/* The system prompt a template inserts when the conversation has none, as the literal
 * text of '<|im_start|>system\n...<|im_end|>' in its Jinja source (Qwen2: "You are a
 * helpful assistant", Qwen2.5: "You are Qwen, created by Alibaba Cloud. ..."), with Jinja
 * string escapes decoded. Writes it NUL-terminated to buf[cap]. Returns its length, 0 if
 * the template has none (or jinja is NULL), MESH_ERANGE if cap is too small. */
int chat_tmpl_default_system(const char *jinja, char *buf, size_t cap);

/* Everything needed to render one model's conversations, chosen once per model. The model's
 * own tokenizer.chat_template runs in the Jinja interpreter (engine/jinja.h) when it parses
 * and renders a trial conversation; otherwise, or for a file without one, the C family
 * renderer above (detected, else the fallback) renders, after one warning that names the
 * construct the interpreter could not run. --chat-template (override) names a C family, a
 * built-in Jinja template (chat_builtin_names) or a .jinja file. Used by `chat`, `run` and
 * the API server, so all give a model exactly the same prompt. Caller owns the struct and
 * releases it with chat_setup_free; after init it is read-only (any thread may render). */
struct tok;
struct jinja_tmpl;
struct chat_setup {
    enum chat_tmpl tmpl;        /* the family: the renderer without Jinja, and the stop strings */
    char eos_text[64];          /* "" = the family's default ("</s>") */
    char bos_text[64];          /* the model's BOS piece, as the template's bos_token */
    char default_system[4096];  /* "" = none */
    struct jinja_tmpl *jinja;   /* the Jinja template that renders; NULL = the C renderer */
    char source[160];           /* where the Jinja template came from, for messages */
    bool strip_bos;             /* drop a leading bos_text: the tokenizer adds BOS itself */
    bool args_as_object;        /* tool-call arguments given as JSON text become objects */
    int tool_syntax;            /* enum toolcall_syntax the rendering template teaches (the C
                                 * renderers: HERMES, which local.c describes tools in) */
    _Atomic bool warned;        /* a render fell back (warned once) */
};
/* Fills s for a model with Jinja template jinja (may be NULL) and tokenizer t (may be NULL).
 * Returns 0, MESH_EINVAL if override names no family, built-in or readable file (logged;
 * s then renders with the fallback), MESH_ENOMEM. */
int chat_setup_init(struct chat_setup *s, const char *jinja, const struct tok *t,
                    const char *override);
void chat_setup_free(struct chat_setup *s);
/* Renders msgs with the setup (Jinja or the C family) into *out (malloc'd). When the Jinja
 * template refuses the conversation (its raise_exception, e.g. Gemma's "System role not
 * supported"), the render is retried with the system message merged into the first user
 * message (as llama.cpp does), then with the C family renderer when the conversation has
 * no tool parts; the first such fallback is logged with the template's message. */
int chat_setup_render(const struct chat_setup *s, const struct chat_msg *msgs, size_t n_msgs,
                      bool add_generation_prompt, char **out);
/* Same with tools: mt[i] (mt may be NULL) holds msgs[i]'s tool fields (an assistant
 * message with tool calls may have NULL content); tools_json is a JSON array of OpenAI tool
 * definitions ([{"type": "function", "function": {...}}]) given to the template as
 * `tools`, or NULL. The C renderers ignore tools and tool fields and refuse role "tool".
 * Returns 0, MESH_EINVAL (bad JSON, or the template refused the conversation: logged with
 * the template's message), MESH_ERANGE, MESH_ENOMEM. */
int chat_setup_render_tools(const struct chat_setup *s, const struct chat_msg *msgs,
                            const struct chat_msg_tools *mt, size_t n_msgs,
                            const char *tools_json, bool add_generation_prompt, char **out);
/* What renders, for logs and `chat`'s banner: "jinja (the model's template)" or "chatml". */
const char *chat_setup_describe(const struct chat_setup *s, char *buf, size_t cap);
/* Names of the built-in Jinja templates (NULL-terminated) and the source of one (NULL if
 * none has that name). */
extern const char *const chat_builtin_names[];
const char *chat_builtin_source(const char *name);

/* Text pieces that end an assistant turn for this family (e.g. "<|im_end|>"), for use as
 * extra stop strings; NULL-terminated static array. */
const char *const *chat_tmpl_stops(enum chat_tmpl t);

#endif
