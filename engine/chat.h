/* chat.h - chat templates: turn a list of messages into the prompt text a model expects.
 *
 * We do not run Jinja. The template family is detected from tokenizer.chat_template
 * (substring heuristics as llama.cpp's llm_chat_detect_template) and rendered by C code
 * per family. Families: chatml, llama2 (with and without <<SYS>>), llama3, mistral
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
};

struct chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content; /* NUL-terminated UTF-8 */
};

/* Detects the family from a Jinja template text (may be NULL). Returns
 * CHAT_TMPL_UNKNOWN if nothing matches (callers then use chat_tmpl_fallback()). */
enum chat_tmpl chat_tmpl_detect(const char *jinja);
enum chat_tmpl chat_tmpl_fallback(void);
/* Name ("chatml") and lookup by name (for --chat-template); -1/UNKNOWN if unknown. */
const char *chat_tmpl_name(enum chat_tmpl t);
enum chat_tmpl chat_tmpl_from_name(const char *name);

/* Renders msgs into a malloc'd NUL-terminated string in *out (caller frees).
 * add_generation_prompt: end with the assistant header so the model replies.
 * bos_text: the BOS piece some templates write literally (e.g. "<s>"), or NULL; the
 * rendered text never includes BOS itself: the tokenizer adds it. Returns 0,
 * MESH_EINVAL (unknown role for this family), MESH_ENOMEM. */
int chat_tmpl_apply(enum chat_tmpl t, const struct chat_msg *msgs, size_t n_msgs,
                    bool add_generation_prompt, char **out);

/* Text pieces that end an assistant turn for this family (e.g. "<|im_end|>"), for use as
 * extra stop strings; NULL-terminated static array. */
const char *const *chat_tmpl_stops(enum chat_tmpl t);

#endif
