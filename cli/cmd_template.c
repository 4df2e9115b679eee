/* cmd_template.c - `meshllm template TEMPLATE [CONTEXT.json]`: render a chat template.
 *
 * TEMPLATE is a Jinja file (as Hugging Face publishes chat templates) or a GGUF model, whose
 * tokenizer.chat_template is used with its BOS/EOS texts as bos_token/eos_token. CONTEXT is a
 * JSON object of the template's variables ({"messages": [...], "tools": [...],
 * "add_generation_prompt": true, ...}; "-" or none reads stdin). The text is written to
 * stdout byte for byte, with no newline added, so it can be compared with Python's jinja2.
 */
#include "cli/cli.h"

#include "core/err.h"
#include "engine/gguf.h"
#include "engine/jinja.h"
#include "engine/tok.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: meshllm template TEMPLATE [CONTEXT.json] [--now EPOCH]\n"
               "       meshllm template --batch LIST [--now EPOCH]\n\n"
               "Renders a chat template with the variables of a JSON object and writes the text\n"
               "to stdout exactly (no newline added).\n\n"
               "  TEMPLATE      a .jinja file, or a .gguf model (its tokenizer.chat_template,\n"
               "                with bos_token/eos_token from its vocabulary)\n"
               "  CONTEXT.json  {\"messages\": [...], \"tools\": [...], \"add_generation_prompt\": true}\n"
               "                (default: stdin)\n"
               "options:\n"
               "  --now EPOCH   the time strftime_now formats (seconds; default: now)\n"
               "  --batch LIST  render many: each line of LIST is 'TEMPLATE CONTEXT OUT'; writes\n"
               "                OUT, or OUT.err with the error\n"
               "  -h, --help    this help\n");
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* The model's template and '"bos_token": ..., "eos_token": ...' (caller frees both). */
static int from_gguf(const char *path, char **tmpl, char **extra)
{
    char err[256];
    struct gguf *g = NULL;
    struct tok *t = NULL;
    int rc = gguf_open(path, &g, err, sizeof err);
    if (rc) {
        cli_fail("%s: %s", path, err);
        return rc;
    }
    *tmpl = gguf_get_str_dup(g, "tokenizer.chat_template");
    if (!*tmpl) {
        cli_fail("%s: the model has no tokenizer.chat_template", path);
        rc = MESH_ENOTFOUND;
        goto out;
    }
    char bos[128] = "", eos[128] = "";
    if (tok_load(g, &t, err, sizeof err) == 0) {
        int n;
        if (tok_bos(t) >= 0 && (n = tok_piece(t, tok_bos(t), true, bos, sizeof bos - 1)) > 0) bos[n] = 0;
        if (tok_eos(t) >= 0 && (n = tok_piece(t, tok_eos(t), true, eos, sizeof eos - 1)) > 0) eos[n] = 0;
    }
    size_t cap = 0;
    FILE *m = open_memstream(extra, &cap);
    if (!m) {
        rc = MESH_ENOMEM;
        goto out;
    }
    fputs("\"bos_token\": ", m);
    json_str(m, bos);
    fputs(", \"eos_token\": ", m);
    json_str(m, eos);
    fclose(m);
out:
    tok_free(t);
    gguf_close(g);
    return rc;
}

/* Renders one template file with one context file into out_path (or out_path.err with
 * the message). Returns 0 if rendered. */
static int render_to(const char *tpath, const char *cpath, const char *out_path, long long now)
{
    size_t sl = 0, cl = 0, ol = 0;
    char *src = cli_read_file("template", tpath, &sl), *out = NULL;
    char *ctx = src ? cli_read_file("template", cpath, &cl) : NULL;
    struct jinja_tmpl *t = NULL;
    struct jinja_error je = {0};
    int rc = src && ctx ? jinja_parse(src, sl, &t, &je) : MESH_EIO;
    struct jinja_render_opts o = {.now = now};
    if (!rc) rc = jinja_render(t, ctx, cl, &o, &out, &ol, &je);
    char path[4096];
    snprintf(path, sizeof path, "%s%s", out_path, rc ? ".err" : "");
    FILE *f = fopen(path, "wb");
    if (f) {
        if (rc) fprintf(f, "%d:%d: %s\n", je.line, je.col, je.msg[0] ? je.msg : err_str(rc));
        else fwrite(out, 1, ol, f);
        fclose(f);
    }
    jinja_free(t);
    free(src);
    free(ctx);
    free(out);
    return rc;
}

/* --batch LIST: lines "TEMPLATE CONTEXT OUT"; as tests/jinja_ref.py --batch. */
static int run_batch(const char *list, long long now)
{
    FILE *f = fopen(list, "r");
    if (!f) {
        cli_fail("%s: %s", list, strerror(errno));
        return 1;
    }
    char line[3 * 1400];
    int n = 0, n_err = 0;
    while (fgets(line, sizeof line, f)) {
        char a[1400], b[1400], c[1400];
        if (sscanf(line, "%1399s %1399s %1399s", a, b, c) != 3) continue;
        n++;
        if (render_to(a, b, c, now)) n_err++;
    }
    fclose(f);
    fprintf(stderr, "meshllm: template: %d rendered, %d failed (see their .err files)\n", n - n_err, n_err);
    return 0;
}

struct template_args {
    const char *tpath, *cpath, *batch;
    long long now;
};

/* 0 to run, 1 after --help (exit 0), 2 on misuse (printed). */
static int parse_args(int argc, char **argv, struct template_args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(o, "--now") && i + 1 < argc) {
            char *e;
            a->now = strtoll(argv[++i], &e, 10);
            if (*e || a->now <= 0) {
                cli_fail("--now: '%s' is not a positive number of seconds", argv[i]);
                return 2;
            }
        } else if (!strcmp(o, "--batch") && i + 1 < argc) {
            a->batch = argv[++i];
        } else if (o[0] == '-' && o[1]) {
            cli_fail("template: unknown option or missing value '%s' (try --help)", o);
            return 2;
        } else if (!a->tpath) {
            a->tpath = o;
        } else if (!a->cpath) {
            a->cpath = o;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (a->batch ? a->tpath != NULL : a->tpath == NULL) {
        usage(stderr);
        return 2;
    }
    return 0;
}

int cmd_template(int argc, char **argv)
{
    struct template_args ta;
    int pr = parse_args(argc, argv, &ta);
    if (pr) return pr == 1 ? 0 : 2;
    if (ta.batch) return run_batch(ta.batch, ta.now);
    const char *tpath = ta.tpath, *cpath = ta.cpath;
    long long now = ta.now;
    int status = 1;
    char *src = NULL, *extra = NULL, *ctx = NULL, *out = NULL, *merged = NULL;
    size_t src_len = 0, ctx_len = 0, out_len = 0;
    struct jinja_tmpl *t = NULL;
    struct jinja_error je;
    if (ends_with(tpath, ".gguf")) {
        if (from_gguf(tpath, &src, &extra)) goto out;
        src_len = strlen(src);
    } else if (!(src = cli_read_file("template", tpath, &src_len))) {
        goto out;
    }
    if (!(ctx = cli_read_file("template", cpath ? cpath : "-", &ctx_len))) goto out;
    if (extra) { /* the model's tokens first: the context's own keys win */
        const char *p = ctx;
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (*p != '{') {
            cli_fail("%s: the context must be a JSON object", cpath ? cpath : "stdin");
            goto out;
        }
        size_t cap = 0;
        FILE *m = open_memstream(&merged, &cap);
        if (!m) goto out;
        const char *rest = p + 1;
        while (*rest == ' ' || *rest == '\n' || *rest == '\t' || *rest == '\r') rest++;
        fprintf(m, "{%s%s%s", extra, *rest == '}' ? "" : ", ", rest);
        fclose(m);
        free(ctx);
        ctx = merged;
        merged = NULL;
        ctx_len = strlen(ctx);
    }
    int rc = jinja_parse(src, src_len, &t, &je);
    if (rc) {
        cli_fail("%s:%d:%d: %s", tpath, je.line, je.col, je.msg[0] ? je.msg : err_str(rc));
        goto out;
    }
    struct jinja_render_opts o = {.now = now};
    rc = jinja_render(t, ctx, ctx_len, &o, &out, &out_len, &je);
    if (rc) {
        if (je.line) cli_fail("%s:%d:%d: %s", tpath, je.line, je.col, je.msg);
        else cli_fail("%s: %s", tpath, je.msg[0] ? je.msg : err_str(rc));
        goto out;
    }
    if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout)) {
        cli_fail("stdout: %s", strerror(errno));
        goto out;
    }
    status = 0;
out:
    jinja_free(t);
    free(src);
    free(extra);
    free(ctx);
    free(merged);
    free(out);
    return status;
}
