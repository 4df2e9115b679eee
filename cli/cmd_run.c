/* cmd_run.c - `meshllm run MODEL.gguf "PROMPT"`: stream a continuation to stdout.
 *
 * stdout gets only the generated text (no prompt echo, no logs), flushed per token so it
 * streams; diagnostics go to stderr. BOS is added when the model's metadata says so,
 * as llama.cpp does, so greedy output equals llama-cli's on the same file. With speculative
 * decoding (--spec, --draft) the generation runs on a one-slot scheduler (node/sched.h),
 * where the verification lives, instead of gen_run; the output is the same.
 */
#include <stdio.h>

#include "cli/cli.h"
#include "cli/cli_opts.h"
#include "cli/cli_split.h"
#include "core/err.h"
#include "engine/chat.h"
#include "engine/gen.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/model.h"
#include "engine/quant.h"
#include "engine/sampler.h"
#include "engine/tok.h"
#include "node/sched.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void run_usage(FILE *f)
{
    fprintf(f, "usage: meshllm run MODEL.gguf [PROMPT] [options]\n\n"
               "Generates a continuation of PROMPT and streams it to stdout.\n\n"
               "  -m, --model PATH       the model (or give it as the first argument)\n"
               "  -p, --prompt TEXT      the prompt (or give it as the second argument)\n"
               "  -f, --file PATH        read the prompt from a file ('-' = stdin)\n"
               "      --ids              print generated token ids instead of text\n"
               "      --grammar GBNF     constrain the output to a GBNF grammar (llama.cpp's format)\n"
               "      --grammar-file F   the same, read from file F\n"
               "  -j, --json-schema JSON constrain the output to JSON matching a JSON Schema\n"
               "      --json-schema-file F  the same, the schema read from file F\n"
               "      --chat-template T  send PROMPT as one user message rendered with T: 'auto'\n"
               "                         (the model's own template), a .jinja file, a built-in\n"
               "                         Jinja template or a family (see 'meshllm chat --help')\n");
    cli_gen_opts_help(f);
    cli_spec_opts_help(f);
    cli_mesh_opts_help(f);
    fprintf(f, "\nexample: meshllm run model.gguf \"Once upon a time\" -n 128 --temp 0\n"
               "         meshllm run big.gguf \"Hi\" --layers none --join TOKEN   (stages on the mesh)\n");
}



/* The grammar of --grammar, --grammar-file, --json-schema or --json-schema-file, checked
 * (*out malloc'd, NULL when none was given). 0, or the exit status on failure. */
static int run_grammar(const char *gbnf, const char *gbnf_file, const char *schema,
                       const char *schema_file, char **out)
{
    *out = NULL;
    if ((gbnf || gbnf_file) && (schema || schema_file)) {
        cli_fail("run: give either a grammar or a JSON schema, not both");
        return 2;
    }
    size_t len = 0;
    char *text = NULL, err[512] = "";
    if (gbnf_file || schema_file) {
        text = cli_read_file("run", gbnf_file ? gbnf_file : schema_file, &len);
        if (!text) return 1;
    } else if (gbnf || schema) {
        text = strdup(gbnf ? gbnf : schema);
        if (!text) return 1;
        len = strlen(text);
    } else {
        return 0;
    }
    if (schema || schema_file) {
        char *g = NULL;
        int rc = json_schema_to_gbnf(text, len, &g, err, sizeof err);
        free(text);
        if (rc) {
            cli_fail("run: %s", err);
            return 2;
        }
        text = g;
        len = strlen(g);
    }
    struct grammar *g = NULL;
    if (grammar_parse(text, len, &g, err, sizeof err)) {
        cli_fail("run: %s", err);
        free(text);
        return 2;
    }
    grammar_free(g);
    *out = text;
    return 0;
}

static int emit_stdout(void *user, const char *text, int len)
{
    (void)user;
    fwrite(text, 1, (size_t)len, stdout);
    fflush(stdout);
    return 0;
}

/* cli_sched_generate's emit: the text to stdout, or the ids counted for --ids. */
struct run_out {
    bool print_ids;
    int n_printed;
};

static int run_emit(void *user, const char *text, size_t len, const int32_t *ids, int n_ids)
{
    struct run_out *ro = user;
    if (!ro->print_ids && len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    for (int i = 0; ro->print_ids && i < n_ids; i++)
        printf(ro->n_printed++ ? " %d" : "%d", ids[i]);
    return 0;
}

/* Generation on a scheduler: a one-slot scheduler of its own (speculative decoding, where
 * the verification lives), or a split model's (its route). Streams the text (or the ids)
 * as chunks come. Returns the exit status. */
static int run_sched(const struct model *m, struct sched *s, struct cli_gen_opts *o,
                     const struct sched_params *sp, const int32_t *ids, int n_ids, bool strip,
                     bool print_ids, bool is_split, const char *grammar)
{
    struct sched_gen_params gp;
    sched_gen_params_default(&gp);
    gp.sp = o->sp;
    gp.max_tokens = o->n_predict;
    for (int i = 0; i < o->n_stops && i < SCHED_MAX_STOP; i++) gp.stop[gp.n_stop++] = o->stops[i];
    gp.strip_leading_space = strip;
    gp.grammar = grammar;
    struct run_out ro = {.print_ids = print_ids};
    struct cli_sched_result res;
    int rc = cli_sched_generate(s, ids, n_ids, &gp, run_emit, &ro, &res);
    if (rc) {
        cli_fail("run: %s", rc == MESH_ERANGE ? "the prompt does not fit the context"
                                              : err_str(rc));
        return 1;
    }
    if (!strcmp(res.finish, "error")) {
        cli_fail("run: generation failed%s",
                 is_split ? ": a stage of the route failed and no member replaces it" : "");
        return 1;
    }
    if (print_ids) printf("\n");
    else if (isatty(STDOUT_FILENO)) printf("\n");
    if (o->verbose) {
        double gen_ms = res.t_first_ms ? res.t_end_ms - res.t_first_ms : 0;
        struct sched_stats st;
        sched_stats(s, &st);
        fprintf(stderr,
                "meshllm: %s, isa %s, speculative decoding: %s, up to %d tokens per step\n"
                "meshllm: prompt and first token: %d tokens in %.1f ms\n"
                "meshllm: generation: %d tokens in %.1f ms (%.1f tok/s after the first)\n"
                "meshllm: speculative: %llu drafted, %llu accepted (%.1f%%)\n",
                model_hparams(m)->name[0] ? model_hparams(m)->name : model_hparams(m)->arch_name,
                quant_isa_name(), spec_mode_name(sp->spec), sp->n_draft_max, n_ids,
                res.t_first_ms ? res.t_first_ms - res.t_submit_ms : 0.0, res.n_gen, gen_ms,
                gen_ms > 0 && res.n_gen > 1 ? (res.n_gen - 1) * 1000.0 / gen_ms : 0.0,
                (unsigned long long)st.n_spec_drafted, (unsigned long long)st.n_spec_accepted,
                st.n_spec_drafted ? 100.0 * (double)st.n_spec_accepted / (double)st.n_spec_drafted
                                  : 0.0);
    }
    return 0;
}

/* --chat-template: the prompt as one user turn of the chosen template ('auto': the model's
 * own), rendered into *chat_text (malloc'd), which *prompt then points to. 0, or 1 (printed). */
static int run_chat_prompt(const struct model *m, const char *chat_tmpl, const char **prompt,
                           size_t *prompt_len, char **chat_text)
{
    struct chat_setup cs;
    int crc = chat_setup_init(&cs, model_chat_template(m), model_tok(m),
                              strcmp(chat_tmpl, "auto") ? chat_tmpl : NULL);
    const struct chat_msg user = {"user", *prompt};
    if (crc == 0) crc = chat_setup_render(&cs, &user, 1, true, chat_text);
    chat_setup_free(&cs);
    if (crc) {
        cli_fail("run: --chat-template %s: %s (see the log above)", chat_tmpl, err_str(crc));
        return 1;
    }
    *prompt = *chat_text;
    *prompt_len = strlen(*chat_text);
    return 0;
}

/* The prompt's tokens into *ids (malloc'd, n_ctx entries). 0, or the exit status. */
static int run_tokenize(const struct tok *t, const char *prompt, size_t prompt_len, int n_ctx,
                        int32_t **ids, int *n_ids)
{
    *ids = malloc((size_t)n_ctx * sizeof **ids);
    if (!*ids) {
        cli_fail("run: out of memory");
        return 1;
    }
    int rc = tok_encode(t, prompt, prompt_len, true, true, *ids, n_ctx, n_ids);
    if (rc == MESH_ERANGE || *n_ids >= n_ctx) {
        cli_fail("run: the prompt is %d tokens, which does not fit the context of %d "
                 "(use a larger --ctx or a shorter prompt)", *n_ids, n_ctx);
        return 1;
    }
    if (rc < 0) {
        cli_fail("run: cannot tokenize the prompt: %s", err_str(rc));
        return 1;
    }
    if (*n_ids == 0) { /* a model that adds no BOS, with an empty prompt: nothing to continue */
        cli_fail("run: the prompt is empty and the model adds no BOS token; give a prompt");
        return 2;
    }
    return 0;
}

/* run on a split model: the route's scheduler (cli_split.h). Returns the exit status. */
static int run_split(struct cli_split *cs, struct cli_gen_opts *o, const struct sched_params *sp,
                     const char *prompt, size_t prompt_len, bool print_ids, const char *chat_tmpl,
                     const char *grammar)
{
    const struct model *m = cs->e->model;
    const struct tok *t = model_tok(m);
    struct sched_stats st;
    sched_stats(cs->e->sched, &st);
    int32_t *ids = NULL;
    int n_ids = 0;
    char *chat_text = NULL;
    int status = chat_tmpl ? run_chat_prompt(m, chat_tmpl, &prompt, &prompt_len, &chat_text) : 0;
    if (status == 0) status = run_tokenize(t, prompt, prompt_len, st.n_ctx, &ids, &n_ids);
    if (status == 0 && o->n_predict != 0)
        status = run_sched(m, cs->e->sched, o, sp, ids, n_ids, n_ids == 1 && ids[0] == tok_bos(t),
                           print_ids, true, grammar);
    free(ids);
    free(chat_text);
    return status;
}

int cmd_run(int argc, char **argv)
{
    struct cli_gen_opts o;
    cli_gen_opts_default(&o);
    const char *model_path = NULL, *model_opt = NULL, *prompt = NULL, *prompt_file = NULL;
    const char *bare[3] = {NULL, NULL, NULL};
    int n_bare = 0;
    bool print_ids = false;
    struct cli_mesh_opts mo;
    cli_mesh_opts_default(&mo);
    const char *gbnf = NULL, *gbnf_file = NULL, *schema = NULL, *schema_file = NULL;
    const char *chat_tmpl = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = cli_gen_opts_parse(&o, argc, argv, &i);
        if (r == 0) r = cli_mesh_opts_parse(&mo, "run", argc, argv, &i);
        if (r == 2) return 2;
        if (r == 1) continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            run_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt") || !strcmp(a, "-f") ||
                   !strcmp(a, "--file")) {
            if (i + 1 >= argc) {
                cli_fail("%s needs a value", a);
                return 2;
            }
            if (a[1] == 'p' || a[2] == 'p') prompt = argv[++i];
            else prompt_file = argv[++i];
        } else if (!strcmp(a, "--ids")) {
            print_ids = true;
        } else if (!strcmp(a, "--grammar") || !strcmp(a, "--grammar-file") || !strcmp(a, "-j") ||
                   !strcmp(a, "--json-schema") || !strcmp(a, "--json-schema-file")) {
            if (i + 1 >= argc) {
                cli_fail("run: %s needs a value", a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--grammar")) gbnf = v;
            else if (!strcmp(a, "--grammar-file")) gbnf_file = v;
            else if (!strcmp(a, "--json-schema-file")) schema_file = v;
            else schema = v;
        } else if (!strcmp(a, "--chat-template")) {
            if (i + 1 >= argc) {
                cli_fail("%s needs a value", a);
                return 2;
            }
            chat_tmpl = argv[++i];
            if (strcmp(chat_tmpl, "auto") && !chat_template_name_ok(chat_tmpl)) return 2;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (i + 1 >= argc || model_opt) {
                cli_fail("run: %s", model_opt ? "give one model" : "-m needs a value");
                return 2;
            }
            model_opt = argv[++i]; /* llama.cpp's spelling */
        } else if (a[0] == '-' && a[1]) {
            cli_fail("run: unknown option '%s' (see 'meshllm run --help')", a);
            return 2;
        } else if (n_bare < 3) {
            bare[n_bare++] = a;
        }
    }
    /* bare arguments: MODEL [PROMPT], or only PROMPT when -m gave the model */
    int need = model_opt ? 1 : 2, b = 0;
    model_path = model_opt ? model_opt : bare[b++];
    if (b < n_bare && !prompt) prompt = bare[b++];
    if (n_bare > need || b < n_bare) {
        cli_fail("run: unexpected argument '%s' (quote the prompt)", bare[n_bare - 1]);
        return 2;
    }
    if (!model_path) {
        run_usage(stderr);
        return 2;
    }
    struct sched_params spp;
    sched_params_default(&spp);
    if (cli_spec_opts_apply(&o.spec, "run", &spp)) return 2;
    if (mo.accept_stages) {
        cli_fail("run: --accept-stages is for serve (a node that stays up for others)");
        return 2;
    }
    if (mo.auto_split && !mo.has_layers && !mo.mesh_fit) {
        cli_fail("run: --auto-split needs --layers or --mesh (which layers stay here)");
        return 2;
    }
    char *grammar = NULL;
    int grc = run_grammar(gbnf, gbnf_file, schema, schema_file, &grammar);
    if (grc) return grc;
    char *prompt_buf = NULL;
    size_t prompt_len = 0;
    if (prompt_file) {
        prompt_buf = cli_read_file("run", prompt_file, &prompt_len);
        if (!prompt_buf) {
            free(grammar);
            return 1;
        }
        prompt = prompt_buf;
    } else {
        if (!prompt) prompt = "";
        prompt_len = strlen(prompt);
    }

    int status = 1;
    struct model *m = NULL;
    struct model_ctx *c = NULL;
    struct sampler *s = NULL;
    int32_t *ids = NULL, *out_ids = NULL;
    char *chat_text = NULL; /* --chat-template: the rendered prompt */
    quant_init();
    spp.n_slots = 1;
    spp.queue_cap = 1;
    spp.n_ctx = o.n_ctx;
    spp.n_threads = o.n_threads;
    spp.k_type = o.k_type;
    spp.v_type = o.v_type;
    if (o.n_batch) spp.n_batch = o.n_batch;
    struct cli_split cs;
    bool is_split = false;
    status = cli_split_open(&cs, "run", model_path, &mo, &spp, o.verbose, &is_split);
    if (status || is_split) {
        if (status == 0) status = run_split(&cs, &o, &spp, prompt, prompt_len, print_ids, chat_tmpl,
                                           grammar);
        cli_split_close(&cs);
        goto done;
    }
    status = 1;
    if (cli_load_model(model_path, &o, 1, &m, &c) < 0) goto done;
    const struct tok *t = model_tok(m);
    const struct model_hparams *hp = model_hparams(m);
    int n_ctx = model_ctx_n_ctx(c);
    int n_ids = 0;
    if (chat_tmpl && run_chat_prompt(m, chat_tmpl, &prompt, &prompt_len, &chat_text)) goto done;
    int rc = run_tokenize(t, prompt, prompt_len, n_ctx, &ids, &n_ids);
    if (rc) {
        status = rc;
        goto done;
    }
    if (sampler_new(&o.sp, hp->n_vocab, &s) < 0) {
        cli_fail("run: invalid sampling parameters (see 'meshllm run --help')");
        status = 2;
        goto done;
    }
    if (spp.spec != SPEC_OFF) {
        spp.n_ctx = n_ctx;
        model_ctx_free(c); /* the scheduler makes its own context */
        c = NULL;
        if (o.n_predict == 0) {
            status = 0;
            goto done;
        }
        char err[1024] = "";
        struct sched *sc = NULL;
        if (sched_new(m, &spp, &sc, err, sizeof err)) {
            cli_fail("run: %s", err);
            goto done;
        }
        status = run_sched(m, sc, &o, &spp, ids, n_ids, n_ids == 1 && ids[0] == tok_bos(t),
                           print_ids, false, grammar);
        sched_free(sc);
        goto done;
    }
    for (int i = 0; i < n_ids; i++) sampler_accept(s, ids[i]);
    int out_cap = n_ctx;
    out_ids = malloc((size_t)out_cap * sizeof *out_ids);
    if (!out_ids) goto oom;
    struct gen_opts go = {.n_predict = o.n_predict, .stops = o.stops, .n_stops = o.n_stops,
                          .strip_leading_space = n_ids == 1 && ids[0] == tok_bos(t),
                          .grammar = grammar};
    struct gen_result res;
    rc = gen_run(c, s, t, ids, n_ids, &go, print_ids ? NULL : emit_stdout, NULL, out_ids,
                 out_cap, &res);
    if (rc < 0) {
        cli_fail("run: generation failed: %s", err_str(rc));
        goto done;
    }
    if (print_ids) {
        int n = res.n_gen < out_cap ? res.n_gen : out_cap;
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", out_ids[i]);
        printf("\n");
    } else if (isatty(STDOUT_FILENO)) {
        printf("\n"); /* end the line for a terminal; pipes get the exact text */
    }
    if (o.verbose) {
        fprintf(stderr,
                "meshllm: %s, %d threads, isa %s\n"
                "meshllm: prompt: %d tokens in %.1f ms (%.1f tok/s)\n"
                "meshllm: generation: %d tokens in %.1f ms (%.1f tok/s)\n",
                hp->name[0] ? hp->name : hp->arch_name, model_ctx_n_threads(c), quant_isa_name(),
                res.n_prompt, res.prompt_ms,
                res.prompt_ms > 0 ? res.n_prompt * 1000.0 / res.prompt_ms : 0.0, res.n_gen,
                res.gen_ms, res.gen_ms > 0 ? res.n_gen * 1000.0 / res.gen_ms : 0.0);
        if (res.stop == GEN_STOP_CTX) fprintf(stderr, "meshllm: stopped: context full\n");
    }
    status = 0;
    goto done;
oom:
    cli_fail("run: out of memory");
done:
    free(out_ids);
    free(ids);
    sampler_free(s);
    model_ctx_free(c);
    model_free(m);
    free(prompt_buf);
    free(grammar);
    free(chat_text);
    return status;
}
