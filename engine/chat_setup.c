/* chat_setup.c - which template renders a model's conversations, and rendering with it.
 *
 * The model's tokenizer.chat_template (or --chat-template's file or built-in) runs in the
 * Jinja interpreter with the variables transformers gives templates: messages (role,
 * content, tool_calls, tool_call_id, name), tools, add_generation_prompt, bos_token and
 * eos_token from the vocabulary. A template that fails to parse or to render a trial
 * conversation falls back to the C family renderer of chat.c with one warning that names
 * the construct. As llama.cpp does, a leading BOS text is dropped from the render when the
 * tokenizer adds BOS itself, and tool-call arguments sent as JSON text are handed to the
 * template as objects unless it concatenates them as strings (DeepSeek's).
 */
#include "engine/chat.h"
#include "engine/toolcall.h"

#include "engine/jinja.h"
#include "engine/tok.h"

#include "core/err.h"
#include "core/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- JSON context ---------------------------------------------------------------------- */

struct cbuf {
    char *p;
    size_t len, cap;
    int rc;
};

static void cb_add(struct cbuf *b, const char *s, size_t n)
{
    if (b->rc) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
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
    b->p[b->len] = 0;
}

static void cb_str(struct cbuf *b, const char *s)
{
    cb_add(b, s, strlen(s));
}

static void cb_json_str(struct cbuf *b, const char *s)
{
    cb_add(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            cb_add(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            cb_add(b, esc, 6);
        } else {
            cb_add(b, p, 1);
        }
    }
    cb_add(b, "\"", 1);
}

static void cb_field(struct cbuf *b, const char *key, const char *val)
{
    cb_str(b, ", ");
    cb_json_str(b, key);
    cb_str(b, ": ");
    if (val) cb_json_str(b, val);
    else cb_str(b, "null");
}

/* {"messages": [...], "tools": ..., "add_generation_prompt": ..., "bos_token", "eos_token"} */
static int build_context(const struct chat_setup *s, const struct chat_msg *msgs,
                         const struct chat_msg_tools *mt, size_t n, const char *tools_json,
                         bool add_gen, struct cbuf *b)
{
    static const struct chat_msg_tools none;
    cb_str(b, "{\"messages\": [");
    for (size_t i = 0; i < n; i++) {
        const struct chat_msg_tools *x = mt ? &mt[i] : &none;
        if (!msgs[i].role || (!msgs[i].content && !x->tool_calls_json)) return MESH_EINVAL;
        cb_str(b, i ? ", {\"role\": " : "{\"role\": ");
        cb_json_str(b, msgs[i].role);
        cb_field(b, "content", msgs[i].content);
        if (x->tool_calls_json) {
            cb_str(b, ", \"tool_calls\": ");
            cb_str(b, x->tool_calls_json);
        }
        if (x->tool_call_id) cb_field(b, "tool_call_id", x->tool_call_id);
        if (x->name) cb_field(b, "name", x->name);
        cb_str(b, "}");
    }
    cb_str(b, "]");
    if (tools_json) {
        cb_str(b, ", \"tools\": ");
        cb_str(b, tools_json);
    }
    cb_str(b, add_gen ? ", \"add_generation_prompt\": true" : ", \"add_generation_prompt\": false");
    cb_field(b, "bos_token", s->bos_text);
    cb_field(b, "eos_token", s->eos_text[0] ? s->eos_text : "</s>");
    cb_str(b, "}");
    return b->rc;
}

static int render_jinja(const struct chat_setup *s, const struct chat_msg *msgs,
                        const struct chat_msg_tools *mt, size_t n, const char *tools_json,
                        bool add_gen, char **out, struct jinja_error *je)
{
    struct cbuf ctx = {0};
    memset(je, 0, sizeof *je);
    int rc = build_context(s, msgs, mt, n, tools_json, add_gen, &ctx);
    if (rc == MESH_EINVAL) snprintf(je->msg, sizeof je->msg, "a message without a role or content");
    if (!rc) {
        struct jinja_render_opts o = {.now = 0, .tool_args_objects = s->args_as_object};
        size_t len = 0;
        rc = jinja_render(s->jinja, ctx.p, ctx.len, &o, out, &len, je);
        size_t bl = strlen(s->bos_text);
        if (!rc && s->strip_bos && bl && len >= bl && !memcmp(*out, s->bos_text, bl))
            memmove(*out, *out + bl, len - bl + 1);
    }
    free(ctx.p);
    return rc;
}

/* ---- choosing ------------------------------------------------------------------------- */

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *ns = cap > ((size_t)4 << 20) ? NULL : realloc(s, cap);
            if (!ns) {
                free(s);
                fclose(f);
                return NULL;
            }
            s = ns;
        }
        size_t r = fread(s + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(s);
        return NULL;
    }
    s[n] = 0;
    return s;
}

/* Tries src as the setup's Jinja template: parse, then a trial conversation. */
static int try_jinja(struct chat_setup *s, const char *src, const char *source, struct jinja_error *je)
{
    struct jinja_tmpl *t = NULL;
    int rc = jinja_parse(src, strlen(src), &t, je);
    if (rc) return rc;
    s->jinja = t;
    s->tool_syntax = (int)toolcall_syntax_detect(src);
    s->args_as_object = strstr(src, "tojson") && !strstr(src, "arguments'] +") &&
                        !strstr(src, "arguments\"] +") && !strstr(src, "arguments +");
    static const struct chat_msg trial[] = {{"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};
    char *out = NULL;
    rc = render_jinja(s, trial, NULL, 3, NULL, true, &out, je);
    free(out);
    if (rc) {
        jinja_free(t);
        s->jinja = NULL;
        s->tool_syntax = TOOLCALL_HERMES;
        return rc;
    }
    snprintf(s->source, sizeof s->source, "%s", source);
    return 0;
}

static void warn_fallback(const struct chat_setup *s, const char *source, int rc,
                          const struct jinja_error *je)
{
    if (je->line)
        log_warn("chat template: %s cannot run here (line %d:%d: %s); rendering with the "
                 "built-in %s format instead", source, je->line, je->col, je->msg, chat_tmpl_name(s->tmpl));
    else
        log_warn("chat template: %s cannot run here (%s); rendering with the built-in %s "
                 "format instead", source, je->msg[0] ? je->msg : err_str(rc), chat_tmpl_name(s->tmpl));
}

static void fill_tokens(struct chat_setup *s, const struct tok *t)
{
    int32_t eos = t ? tok_eos(t) : -1, bos = t ? tok_bos(t) : -1;
    if (eos >= 0) {
        int n = tok_piece(t, eos, true, s->eos_text, sizeof s->eos_text - 1);
        s->eos_text[n > 0 ? n : 0] = 0;
    }
    if (bos >= 0) {
        int n = tok_piece(t, bos, true, s->bos_text, sizeof s->bos_text - 1);
        s->bos_text[n > 0 ? n : 0] = 0;
    }
    s->strip_bos = t && tok_adds_bos(t);
}

/* --chat-template that is not a C family: a built-in Jinja template or a file. */
static int init_override(struct chat_setup *s, const char *override)
{
    const char *src = chat_builtin_source(override);
    char *owned = NULL;
    char source[160];
    if (src) {
        snprintf(source, sizeof source, "built-in template '%s'", override);
    } else {
        owned = read_file(override);
        if (!owned) {
            char names[512] = "";
            for (int i = 0; chat_builtin_names[i]; i++) {
                strncat(names, ", ", sizeof names - strlen(names) - 1);
                strncat(names, chat_builtin_names[i], sizeof names - strlen(names) - 1);
            }
            log_error("chat template '%s' is neither a readable .jinja file (%s) nor one of "
                      "chatml, llama2, llama2-sys, llama3, llama3.1, mistral-v1, mistral-v3, "
                      "mistral-v3-tekken, mistral-v7, phi3, phi4, zephyr, gemma%s",
                      override, strerror(errno), names);
            return MESH_EINVAL;
        }
        src = owned;
        snprintf(source, sizeof source, "template file %s", override);
    }
    enum chat_tmpl fam = chat_tmpl_detect(src);
    s->tmpl = fam != CHAT_TMPL_UNKNOWN ? fam : chat_tmpl_fallback();
    struct jinja_error je;
    int rc = try_jinja(s, src, source, &je);
    if (rc) {
        log_error("chat template: %s: line %d:%d: %s", source, je.line, je.col,
                  je.msg[0] ? je.msg : err_str(rc));
        rc = MESH_EINVAL;
    } else {
        log_info("chat template: %s (chosen by the user)", source);
    }
    free(owned);
    return rc;
}

int chat_setup_init(struct chat_setup *s, const char *jinja, const struct tok *t,
                    const char *override)
{
    memset(s, 0, sizeof *s);
    fill_tokens(s, t);
    if (chat_tmpl_default_system(jinja, s->default_system, sizeof s->default_system) <= 0)
        s->default_system[0] = 0;
    if (override && chat_tmpl_from_name(override) == CHAT_TMPL_UNKNOWN) {
        s->tmpl = chat_tmpl_fallback();
        return init_override(s, override);
    }
    if (override || !jinja || !*jinja) return chat_tmpl_select(jinja, override, &s->tmpl);
    /* the model's own template; the family still gives the stop strings and the fallback */
    enum chat_tmpl fam = chat_tmpl_detect(jinja);
    s->tmpl = fam != CHAT_TMPL_UNKNOWN ? fam : chat_tmpl_fallback();
    struct jinja_error je;
    int rc = try_jinja(s, jinja, "the model's tokenizer.chat_template", &je);
    if (rc == MESH_ENOMEM) return rc;
    if (rc) {
        warn_fallback(s, "the model's tokenizer.chat_template", rc, &je);
        return 0;
    }
    log_info("chat template: the model's own (Jinja; stop strings of %s)", chat_tmpl_name(s->tmpl));
    return 0;
}

void chat_setup_free(struct chat_setup *s)
{
    if (!s) return;
    jinja_free(s->jinja);
    s->jinja = NULL;
}

static bool has_tool_parts(const struct chat_msg *msgs, const struct chat_msg_tools *mt,
                           size_t n, const char *tools_json)
{
    if (tools_json) return true;
    for (size_t i = 0; i < n; i++)
        if ((mt && (mt[i].tool_calls_json || mt[i].tool_call_id)) ||
            (msgs[i].role && !strcmp(msgs[i].role, "tool")))
            return true;
    return false;
}

/* The Jinja template refused msgs (je says why): retry with the system message merged into
 * the first user message, then the C family when the conversation has no tool parts. */
static int render_fallback(const struct chat_setup *s, const struct chat_msg *msgs,
                           const struct chat_msg_tools *mt, size_t n, const char *tools_json,
                           bool add_gen, char **out, const struct jinja_error *je)
{
    int rc = MESH_EINVAL;
    const char *how = NULL;
    if (n >= 2 && msgs[0].role && !strcmp(msgs[0].role, "system") && msgs[0].content &&
        msgs[1].role && !strcmp(msgs[1].role, "user") && msgs[1].content) {
        size_t len = strlen(msgs[0].content) + strlen(msgs[1].content) + 3;
        char *merged = malloc(len);
        struct chat_msg *m2 = malloc(n * sizeof *m2);
        if (merged && m2) {
            snprintf(merged, len, "%s\n\n%s", msgs[0].content, msgs[1].content);
            memcpy(m2, msgs + 1, (n - 1) * sizeof *m2);
            m2[0].content = merged;
            struct jinja_error je2;
            rc = render_jinja(s, m2, mt ? mt + 1 : NULL, n - 1, tools_json, add_gen, out, &je2);
            how = "the system message merged into the first user message";
        }
        free(merged);
        free(m2);
    }
    if (rc && !has_tool_parts(msgs, mt, n, tools_json)) {
        struct chat_opts o = {
            .add_generation_prompt = add_gen,
            .eos_text = s->eos_text[0] ? s->eos_text : NULL,
            .default_system = s->default_system[0] ? s->default_system : NULL,
        };
        rc = chat_tmpl_render(s->tmpl, msgs, n, &o, out);
        how = chat_tmpl_name(s->tmpl);
    }
    struct chat_setup *ms = (struct chat_setup *)s; /* only the atomic flag changes */
    if (rc) {
        log_warn("chat template (%s): line %d:%d: %s", s->source, je->line, je->col, je->msg);
        return rc == MESH_ENOMEM ? rc : MESH_EINVAL;
    }
    if (!atomic_exchange(&ms->warned, true))
        log_warn("chat template (%s) refused a conversation (line %d:%d: %s); rendered it with %s "
                 "(said once)", s->source, je->line, je->col, je->msg, how);
    return 0;
}

int chat_setup_render_tools(const struct chat_setup *s, const struct chat_msg *msgs,
                            const struct chat_msg_tools *mt, size_t n_msgs,
                            const char *tools_json, bool add_generation_prompt, char **out)
{
    *out = NULL;
    if (s->jinja) {
        struct jinja_error je;
        int rc = render_jinja(s, msgs, mt, n_msgs, tools_json, add_generation_prompt, out, &je);
        if (rc == 0 || rc == MESH_ENOMEM || rc == MESH_ERANGE) return rc;
        return render_fallback(s, msgs, mt, n_msgs, tools_json, add_generation_prompt, out, &je);
    }
    struct chat_opts o = {
        .add_generation_prompt = add_generation_prompt,
        .eos_text = s->eos_text[0] ? s->eos_text : NULL,
        .default_system = s->default_system[0] ? s->default_system : NULL,
    };
    return chat_tmpl_render(s->tmpl, msgs, n_msgs, &o, out);
}

int chat_setup_render(const struct chat_setup *s, const struct chat_msg *msgs, size_t n_msgs,
                      bool add_generation_prompt, char **out)
{
    return chat_setup_render_tools(s, msgs, NULL, n_msgs, NULL, add_generation_prompt, out);
}

const char *chat_setup_describe(const struct chat_setup *s, char *buf, size_t cap)
{
    if (s->jinja) snprintf(buf, cap, "jinja (%s)", s->source);
    else snprintf(buf, cap, "%s", chat_tmpl_name(s->tmpl));
    return buf;
}
