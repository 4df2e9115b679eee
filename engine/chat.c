/* chat.c - chat template families of chat.h: detection by substrings, C renderers.
 *
 * Detection follows the heuristics of llama.cpp's llm_chat_detect_template
 * (src/llama-chat.cpp): distinctive markers such as "<|im_start|>" or "[INST]" in the
 * Jinja text. Rendering reproduces what each family's official Hugging Face template
 * renders (trim_blocks, lstrip_blocks, bos_token = ""), for system/user/assistant
 * messages; it does not run Jinja, so template-specific extras (tools, a live date in
 * Llama 3.2's header) are not reproduced; a default system prompt (Qwen's) is found in the template
 * text by chat_tmpl_default_system and rendered when the caller passes it. "strip"/"trim" below are
 * Python's str.strip() on ASCII whitespace.
 */
#include "engine/chat.h"

#include "engine/tok.h"

#include "core/err.h"
#include "core/log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ------------------------------------------------------------------------- */

static const char *const g_names[CHAT_TMPL_COUNT_] = {
    [CHAT_TMPL_UNKNOWN] = "unknown",
    [CHAT_TMPL_CHATML] = "chatml",
    [CHAT_TMPL_LLAMA2] = "llama2",
    [CHAT_TMPL_LLAMA2_SYS] = "llama2-sys",
    [CHAT_TMPL_LLAMA3] = "llama3",
    [CHAT_TMPL_MISTRAL_V1] = "mistral-v1",
    [CHAT_TMPL_MISTRAL_V3] = "mistral-v3",
    [CHAT_TMPL_MISTRAL_V7] = "mistral-v7",
    [CHAT_TMPL_PHI3] = "phi3",
    [CHAT_TMPL_ZEPHYR] = "zephyr",
    [CHAT_TMPL_GEMMA] = "gemma",
    [CHAT_TMPL_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [CHAT_TMPL_PHI4] = "phi4",
    [CHAT_TMPL_LLAMA31] = "llama3.1",
};

const char *chat_tmpl_name(enum chat_tmpl t)
{
    if ((int)t < 0 || t >= CHAT_TMPL_COUNT_) return "unknown";
    return g_names[t];
}

enum chat_tmpl chat_tmpl_from_name(const char *name)
{
    if (!name) return CHAT_TMPL_UNKNOWN;
    for (int t = CHAT_TMPL_UNKNOWN + 1; t < CHAT_TMPL_COUNT_; t++)
        if (!strcmp(name, g_names[t])) return (enum chat_tmpl)t;
    /* llama.cpp's aliases: "mistral" is the pre-v1 [INST] format, "llama2-sys-*" variants. */
    if (!strcmp(name, "mistral")) return CHAT_TMPL_LLAMA2;
    if (!strcmp(name, "llama2-sys-bos") || !strcmp(name, "llama2-sys-strip"))
        return CHAT_TMPL_LLAMA2_SYS;
    return CHAT_TMPL_UNKNOWN;
}

enum chat_tmpl chat_tmpl_fallback(void)
{
    return CHAT_TMPL_CHATML;
}

/* ---- detection --------------------------------------------------------------------- */

static bool has(const char *s, const char *needle)
{
    return strstr(s, needle) != NULL;
}

/* The [INST] families: mistral's official templates by their markers, else llama-2. */
static enum chat_tmpl detect_inst(const char *j)
{
    if (has(j, "[SYSTEM_PROMPT]")) return CHAT_TMPL_MISTRAL_V7;
    if (has(j, "' [INST] ' + system_message") || has(j, "[AVAILABLE_TOOLS]")) {
        if (has(j, " [INST]")) return CHAT_TMPL_MISTRAL_V1;
        if (has(j, "\"[INST]\"")) return CHAT_TMPL_MISTRAL_V3_TEKKEN;
        return CHAT_TMPL_MISTRAL_V3;
    }
    return has(j, "<<SYS>>") ? CHAT_TMPL_LLAMA2_SYS : CHAT_TMPL_LLAMA2;
}

enum chat_tmpl chat_tmpl_detect(const char *j)
{
    if (!j || !*j) return CHAT_TMPL_UNKNOWN;
    enum chat_tmpl named = chat_tmpl_from_name(j);
    if (named != CHAT_TMPL_UNKNOWN) return named;
    if (has(j, "<|im_start|>")) return has(j, "<|im_sep|>") ? CHAT_TMPL_PHI4 : CHAT_TMPL_CHATML;
    if (!strncmp(j, "mistral", 7) || has(j, "[INST]")) return detect_inst(j);
    bool has_asst = has(j, "<|assistant|>"), has_user = has(j, "<|user|>");
    if (has_asst && has(j, "<|end|>")) return CHAT_TMPL_PHI3;
    /* zephyr, TinyLlama (eos_token) and StableLM-zephyr (<|endoftext|>) turns. */
    if ((has_asst || has_user) && (has(j, "eos_token") || has(j, "<|endoftext|>")))
        return CHAT_TMPL_ZEPHYR;
    if (has(j, "<start_of_turn>")) return CHAT_TMPL_GEMMA;
    if (has(j, "<|start_header_id|>") && has(j, "<|end_header_id|>"))
        return has(j, "Cutting Knowledge Date") ? CHAT_TMPL_LLAMA31 : CHAT_TMPL_LLAMA3;
    return CHAT_TMPL_UNKNOWN;
}

int chat_tmpl_select(const char *jinja, const char *override, enum chat_tmpl *out)
{
    *out = chat_tmpl_fallback();
    if (override) {
        enum chat_tmpl t = chat_tmpl_from_name(override);
        if (t == CHAT_TMPL_UNKNOWN) {
            log_error("chat template '%s' is not one of chatml, llama2, llama2-sys, llama3, "
                      "llama3.1, mistral-v1, mistral-v3, mistral-v3-tekken, mistral-v7, phi3, "
                      "phi4, zephyr, gemma", override);
            return MESH_EINVAL;
        }
        *out = t;
        log_info("chat template: %s (chosen by the user)", chat_tmpl_name(t));
        return 0;
    }
    enum chat_tmpl t = chat_tmpl_detect(jinja);
    if (t == CHAT_TMPL_UNKNOWN) {
        log_warn("chat template: %s; falling back to %s (choose one with --chat-template)",
                 jinja && *jinja ? "the model's tokenizer.chat_template is not recognised"
                                 : "the model has no tokenizer.chat_template",
                 chat_tmpl_name(*out));
        return 0;
    }
    *out = t;
    log_info("chat template: %s (detected from tokenizer.chat_template)", chat_tmpl_name(t));
    return 0;
}

/* ---- output buffer ------------------------------------------------------------------ */

struct chat_buf {
    char *p;
    size_t len, cap;
    int rc; /* first error; appends are no-ops after it */
};

static void buf_add(struct chat_buf *b, const char *s, size_t n)
{
    if (b->rc) return;
    if (n > SIZE_MAX - b->len - 1) {
        b->rc = MESH_ENOMEM;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->rc = MESH_ENOMEM;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct chat_buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Appends s[0..n) without leading and trailing whitespace. */
static void buf_strip_n(struct chat_buf *b, const char *s, size_t n)
{
    while (n > 0 && is_space(*s)) s++, n--;
    while (n > 0 && is_space(s[n - 1])) n--;
    buf_add(b, s, n);
}

static void buf_strip(struct chat_buf *b, const char *s)
{
    buf_strip_n(b, s, strlen(s));
}

/* ---- renderers ---------------------------------------------------------------------- */

enum chat_role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };

/* A render job: the messages with their roles parsed, and the family's pieces. */
struct chat_job {
    const struct chat_msg *msgs;
    const enum chat_role *roles;
    size_t n;
    bool add_gen;
    const char *eos;
};

/* <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n */
static void render_chatml(struct chat_buf *b, const struct chat_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        buf_str(b, "<|im_start|>");
        buf_str(b, j->msgs[i].role);
        buf_str(b, "\n");
        buf_str(b, j->msgs[i].content);
        buf_str(b, "<|im_end|>\n");
    }
    if (j->add_gen) buf_str(b, "<|im_start|>assistant\n");
}

/* phi-4: <|im_start|>role<|im_sep|>content<|im_end|> */
static void render_phi4(struct chat_buf *b, const struct chat_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        buf_str(b, "<|im_start|>");
        buf_str(b, j->msgs[i].role);
        buf_str(b, "<|im_sep|>");
        buf_str(b, j->msgs[i].content);
        buf_str(b, "<|im_end|>");
    }
    if (j->add_gen) buf_str(b, "<|im_start|>assistant<|im_sep|>");
}

/* <|start_header_id|>role<|end_header_id|>\n\n{content|trim}<|eot_id|> from message i0 */
static void render_llama3(struct chat_buf *b, const struct chat_job *j, size_t i0)
{
    for (size_t i = i0; i < j->n; i++) {
        buf_str(b, "<|start_header_id|>");
        buf_str(b, j->msgs[i].role);
        buf_str(b, "<|end_header_id|>\n\n");
        buf_strip(b, j->msgs[i].content);
        buf_str(b, "<|eot_id|>");
    }
    if (j->add_gen) buf_str(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Llama 3.1-3.3 (no tools): a system turn always opens with the knowledge-cutoff and date
 * lines, followed by the first message's text if it is a system message (trimmed). */
static void render_llama31(struct chat_buf *b, const struct chat_job *j, const char *date)
{
    buf_str(b, "<|start_header_id|>system<|end_header_id|>\n\n"
               "Cutting Knowledge Date: December 2023\nToday Date: ");
    buf_str(b, date);
    buf_str(b, "\n\n");
    size_t i0 = 0;
    if (j->n > 0 && j->roles[0] == ROLE_SYSTEM) {
        buf_strip(b, j->msgs[0].content);
        i0 = 1;
    }
    buf_str(b, "<|eot_id|>");
    render_llama3(b, j, i0);
}

/* phi3: <|role|>\ncontent<|end|>\n (empty system messages skipped, as Phi-3.5's
 * template does); zephyr: <|role|>\ncontent{eos}\n. */
static void render_pipe_roles(struct chat_buf *b, const struct chat_job *j, const char *end,
                              bool skip_empty_system)
{
    for (size_t i = 0; i < j->n; i++) {
        if (skip_empty_system && j->roles[i] == ROLE_SYSTEM && !j->msgs[i].content[0]) continue;
        buf_str(b, "<|");
        buf_str(b, j->msgs[i].role);
        buf_str(b, "|>\n");
        buf_str(b, j->msgs[i].content);
        buf_str(b, end);
        buf_str(b, "\n");
    }
    if (j->add_gen) buf_str(b, "<|assistant|>\n");
}

/* Gemma has no system role: system text (trimmed) + "\n\n" opens the next user turn;
 * "assistant" is "model"; contents are trimmed. */
static void render_gemma(struct chat_buf *b, const struct chat_job *j)
{
    const char *sys = NULL;
    for (size_t i = 0; i < j->n; i++) {
        if (j->roles[i] == ROLE_SYSTEM) {
            sys = j->msgs[i].content;
            continue;
        }
        bool is_user = j->roles[i] == ROLE_USER;
        buf_str(b, is_user ? "<start_of_turn>user\n" : "<start_of_turn>model\n");
        if (is_user && sys) {
            struct chat_buf t = {0};
            buf_strip(&t, sys);
            if (t.rc) b->rc = t.rc;
            if (t.len) {
                buf_add(b, t.p, t.len);
                buf_str(b, "\n\n");
            }
            free(t.p);
            sys = NULL;
        }
        buf_strip(b, j->msgs[i].content);
        buf_str(b, "<end_of_turn>\n");
    }
    if (j->add_gen) buf_str(b, "<start_of_turn>model\n");
}

/* llama-2 without <<SYS>> (Mistral-7B-Instruct v0.1/v0.2): "[INST] user [/INST]assistant</s>";
 * system text + "\n" goes at the start of the turn, as llama.cpp does (the official
 * template refuses system messages). */
static void render_llama2(struct chat_buf *b, const struct chat_job *j)
{
    bool in_turn = true;
    buf_str(b, "[INST] ");
    for (size_t i = 0; i < j->n; i++) {
        if (!in_turn) {
            buf_str(b, "[INST] ");
            in_turn = true;
        }
        const char *c = j->msgs[i].content;
        switch (j->roles[i]) {
        case ROLE_SYSTEM:
            buf_str(b, c);
            buf_str(b, "\n");
            break;
        case ROLE_USER:
            buf_str(b, c);
            buf_str(b, " [/INST]");
            break;
        case ROLE_ASSISTANT:
            buf_str(b, c);
            buf_str(b, j->eos);
            in_turn = false;
            break;
        }
    }
}

/* Meta's Llama-2-chat template: each user turn is bos + "[INST] " + strip(content) +
 * " [/INST]" (the first bos left to the tokenizer), the first one carrying
 * "<<SYS>>\n" + system + "\n<</SYS>>\n\n"; assistant turns are " " + strip + " " + eos. */
static void render_llama2_sys(struct chat_buf *b, const struct chat_job *j)
{
    const char *sys = NULL;
    for (size_t i = 0; i < j->n; i++) {
        const char *c = j->msgs[i].content;
        if (j->roles[i] == ROLE_SYSTEM) {
            sys = c;
        } else if (j->roles[i] == ROLE_USER) {
            if (b->len > 0) buf_str(b, "<s>");
            buf_str(b, "[INST] ");
            struct chat_buf t = {0};
            if (sys) {
                buf_str(&t, "<<SYS>>\n");
                buf_str(&t, sys);
                buf_str(&t, "\n<</SYS>>\n\n");
                sys = NULL;
            }
            buf_str(&t, c);
            if (t.rc) b->rc = t.rc;
            if (t.p) buf_strip_n(b, t.p, t.len);
            free(t.p);
            buf_str(b, " [/INST]");
        } else {
            buf_str(b, " ");
            buf_strip(b, c);
            buf_str(b, " ");
            buf_str(b, j->eos);
        }
    }
    if (sys) { /* a system message with no user turn after it */
        if (b->len > 0) buf_str(b, "<s>");
        buf_str(b, "[INST] <<SYS>>\n");
        buf_str(b, sys);
        buf_str(b, "\n<</SYS>>\n\n");
    }
}

/* Mistral's official v1, v3 and v3-tekken templates: v1 puts the system text in the
 * first user turn (" [INST] sys\n\nuser [/INST]"), v3 in the last one
 * ("[INST] sys\n\nuser[/INST]"); v3 trims assistant text, tekken drops the spaces. */
static void render_mistral(struct chat_buf *b, const struct chat_job *j, enum chat_tmpl t)
{
    bool v1 = t == CHAT_TMPL_MISTRAL_V1, tekken = t == CHAT_TMPL_MISTRAL_V3_TEKKEN;
    const char *sys = NULL;
    size_t last_user = SIZE_MAX, first_user = SIZE_MAX;
    for (size_t i = 0; i < j->n; i++) {
        if (j->roles[i] == ROLE_SYSTEM) sys = j->msgs[i].content;
        if (j->roles[i] == ROLE_USER) {
            last_user = i;
            if (first_user == SIZE_MAX) first_user = i;
        }
    }
    size_t sys_at = v1 ? first_user : last_user;
    for (size_t i = 0; i < j->n; i++) {
        const char *c = j->msgs[i].content;
        if (j->roles[i] == ROLE_USER) {
            buf_str(b, v1 ? " [INST] " : tekken ? "[INST]" : "[INST] ");
            if (i == sys_at && sys) {
                buf_str(b, sys);
                buf_str(b, "\n\n");
            }
            buf_str(b, c);
            buf_str(b, v1 ? " [/INST]" : "[/INST]");
        } else if (j->roles[i] == ROLE_ASSISTANT) {
            if (!tekken) buf_str(b, " ");
            if (t == CHAT_TMPL_MISTRAL_V3)
                buf_strip(b, c);
            else
                buf_str(b, c);
            buf_str(b, j->eos);
        }
    }
}

/* Mistral v7: [SYSTEM_PROMPT] sys[/SYSTEM_PROMPT][INST] user[/INST] assistant</s> */
static void render_mistral_v7(struct chat_buf *b, const struct chat_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        const char *c = j->msgs[i].content;
        switch (j->roles[i]) {
        case ROLE_SYSTEM:
            buf_str(b, "[SYSTEM_PROMPT] ");
            buf_str(b, c);
            buf_str(b, "[/SYSTEM_PROMPT]");
            break;
        case ROLE_USER:
            buf_str(b, "[INST] ");
            buf_str(b, c);
            buf_str(b, "[/INST]");
            break;
        case ROLE_ASSISTANT:
            buf_str(b, " ");
            buf_str(b, c);
            buf_str(b, j->eos);
            break;
        }
    }
}

static int parse_role(const char *role, enum chat_role *out)
{
    if (!role) return MESH_EINVAL;
    if (!strcmp(role, "system"))
        *out = ROLE_SYSTEM;
    else if (!strcmp(role, "user"))
        *out = ROLE_USER;
    else if (!strcmp(role, "assistant"))
        *out = ROLE_ASSISTANT;
    else
        return MESH_EINVAL;
    return 0;
}

int chat_tmpl_render(enum chat_tmpl t, const struct chat_msg *msgs, size_t n_msgs,
                     const struct chat_opts *o, char **out)
{
    int rc = 0;
    enum chat_role *roles = NULL;
    struct chat_msg *all = NULL;
    struct chat_buf b = {0};
    *out = NULL;
    if ((n_msgs > 0 && !msgs) || !o || t <= CHAT_TMPL_UNKNOWN || t >= CHAT_TMPL_COUNT_)
        return MESH_EINVAL;
    /* A default system prompt goes first unless the conversation opens with its own. */
    bool add_sys = o->default_system && o->default_system[0] &&
                   !(n_msgs > 0 && msgs[0].role && !strcmp(msgs[0].role, "system"));
    size_t n = n_msgs + (add_sys ? 1 : 0);
    if (n > 0) {
        roles = calloc(n, sizeof *roles);
        all = calloc(n, sizeof *all);
        if (!roles || !all) {
            rc = MESH_ENOMEM;
            goto done;
        }
    }
    if (add_sys) all[0] = (struct chat_msg){"system", o->default_system};
    if (n_msgs > 0) memcpy(all + (add_sys ? 1 : 0), msgs, n_msgs * sizeof *msgs);
    for (size_t i = 0; i < n; i++) {
        rc = parse_role(all[i].role, &roles[i]);
        if (!rc && !all[i].content) rc = MESH_EINVAL;
        if (rc) goto done;
    }
    struct chat_job j = {all, roles, n, o->add_generation_prompt,
                         o->eos_text ? o->eos_text : "</s>"};
    buf_add(&b, "", 0); /* an empty conversation still renders to "" */
    switch (t) {
    case CHAT_TMPL_CHATML: render_chatml(&b, &j); break;
    case CHAT_TMPL_PHI4: render_phi4(&b, &j); break;
    case CHAT_TMPL_LLAMA3: render_llama3(&b, &j, 0); break;
    case CHAT_TMPL_LLAMA31:
        render_llama31(&b, &j, o->date_string ? o->date_string : "26 Jul 2024");
        break;
    case CHAT_TMPL_PHI3: render_pipe_roles(&b, &j, "<|end|>", true); break;
    case CHAT_TMPL_ZEPHYR: render_pipe_roles(&b, &j, j.eos, false); break;
    case CHAT_TMPL_GEMMA: render_gemma(&b, &j); break;
    case CHAT_TMPL_LLAMA2: render_llama2(&b, &j); break;
    case CHAT_TMPL_LLAMA2_SYS: render_llama2_sys(&b, &j); break;
    case CHAT_TMPL_MISTRAL_V1:
    case CHAT_TMPL_MISTRAL_V3:
    case CHAT_TMPL_MISTRAL_V3_TEKKEN: render_mistral(&b, &j, t); break;
    case CHAT_TMPL_MISTRAL_V7: render_mistral_v7(&b, &j); break;
    default: rc = MESH_EINVAL; break;
    }
    if (!rc) rc = b.rc;
    if (!rc) {
        *out = b.p;
        b.p = NULL;
    }
done:
    free(b.p);
    free(all);
    free(roles);
    return rc;
}

int chat_tmpl_apply_eos(enum chat_tmpl t, const struct chat_msg *msgs, size_t n_msgs,
                        bool add_generation_prompt, const char *eos_text, char **out)
{
    struct chat_opts o = {add_generation_prompt, eos_text, NULL, NULL};
    return chat_tmpl_render(t, msgs, n_msgs, &o, out);
}

int chat_tmpl_apply(enum chat_tmpl t, const struct chat_msg *msgs, size_t n_msgs,
                    bool add_generation_prompt, char **out)
{
    return chat_tmpl_apply_eos(t, msgs, n_msgs, add_generation_prompt, NULL, out);
}

/* ---- default system prompt ------------------------------------------------------------ */

/* Decodes the Jinja string literal text at p up to "<|im_end|>" into b. Fails (returns
 * false) if the text is not a plain literal: an unescaped quote or a brace means an
 * expression such as ' + messages[0]['content'] + ' sits there. */
static bool literal_until_im_end(const char *p, struct chat_buf *b)
{
    static const char end[] = "<|im_end|>";
    while (*p && strncmp(p, end, sizeof end - 1) != 0) {
        char c = *p++;
        if (c == '\\') {
            char e = *p++;
            if (!e) return false;
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e;
        } else if (c == '\'' || c == '"' || c == '{' || c == '}') {
            return false;
        }
        buf_add(b, &c, 1);
    }
    return *p != '\0';
}

int chat_tmpl_default_system(const char *jinja, char *buf, size_t cap)
{
    static const char start[] = "<|im_start|>system";
    if (cap > 0) buf[0] = '\0';
    if (!jinja) return 0;
    for (const char *p = strstr(jinja, start); p; p = strstr(p + 1, start)) {
        const char *q = p + sizeof start - 1;
        if (!strncmp(q, "\\n", 2))
            q += 2;
        else if (*q == '\n')
            q++;
        else
            continue;
        struct chat_buf b = {0};
        bool ok = literal_until_im_end(q, &b);
        if (b.rc) {
            free(b.p);
            return b.rc;
        }
        if (!ok || b.len == 0 || b.len > INT32_MAX) {
            free(b.p);
            continue;
        }
        int n = (int)b.len;
        if (b.len + 1 > cap) n = MESH_ERANGE;
        else memcpy(buf, b.p, b.len + 1);
        free(b.p);
        return n;
    }
    return 0;
}

/* ---- stop strings ------------------------------------------------------------------- */

static const char *const g_stops_chatml[] = {"<|im_end|>", "<|im_start|>", NULL};
static const char *const g_stops_inst[] = {"</s>", "[INST]", NULL};
static const char *const g_stops_llama3[] = {"<|eot_id|>", "<|eom_id|>", "<|start_header_id|>",
                                             "<|end_of_text|>", NULL};
static const char *const g_stops_phi3[] = {"<|end|>", "<|endoftext|>", "<|user|>", NULL};
static const char *const g_stops_zephyr[] = {"</s>", "<|endoftext|>", "<|user|>", NULL};
static const char *const g_stops_gemma[] = {"<end_of_turn>", "<start_of_turn>", NULL};
static const char *const g_stops_none[] = {NULL};

const char *const *chat_tmpl_stops(enum chat_tmpl t)
{
    switch (t) {
    case CHAT_TMPL_CHATML:
    case CHAT_TMPL_PHI4: return g_stops_chatml;
    case CHAT_TMPL_LLAMA2:
    case CHAT_TMPL_LLAMA2_SYS:
    case CHAT_TMPL_MISTRAL_V1:
    case CHAT_TMPL_MISTRAL_V3:
    case CHAT_TMPL_MISTRAL_V3_TEKKEN:
    case CHAT_TMPL_MISTRAL_V7: return g_stops_inst;
    case CHAT_TMPL_LLAMA3:
    case CHAT_TMPL_LLAMA31: return g_stops_llama3;
    case CHAT_TMPL_PHI3: return g_stops_phi3;
    case CHAT_TMPL_ZEPHYR: return g_stops_zephyr;
    case CHAT_TMPL_GEMMA: return g_stops_gemma;
    default: return g_stops_none;
    }
}
