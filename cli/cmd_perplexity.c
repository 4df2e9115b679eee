/* cmd_perplexity.c - `meshllm perplexity MODEL FILE.txt [--ctx N] [--kl-base BASE.gguf] ...`
 *
 * Perplexity of a model over a text file as llama-perplexity computes it (engine/ppl.h: whole
 * file tokenized with BOS, chunks of n_ctx tokens each evaluated fresh with BOS first, the
 * second half scored), printing its running "[i]x.xxxx," figures and "Final estimate: PPL =
 * X +/- Y". With --kl-base the base model runs on the same chunks (its logits are computed on
 * the fly, never stored) and the KL divergence, its percentiles and the top-1 agreement are
 * printed in llama-perplexity's --kl-divergence layout. Chunks run one after another (not
 * several sequences per batch as llama.cpp does when n_batch > n_ctx; same figures).
 */
#include "cli/cli.h"

#include "cli/cli_opts.h"
#include "core/err.h"
#include "engine/model.h"
#include "engine/ppl.h"
#include "engine/tok.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct ppl_args {
    const char *model, *file, *kl_base;
    int n_ctx, n_batch, n_chunks, n_threads;
    enum model_kv_type k_type, v_type;
    bool mlock;
};

static void ppl_usage(FILE *f)
{
    fprintf(f,
            "usage: meshllm perplexity MODEL FILE.txt [options]\n\n"
            "Perplexity of MODEL over the text of FILE.txt, computed as llama-perplexity does:\n"
            "chunks of N tokens, each evaluated from an empty cache with BOS first, the second\n"
            "half of each scored. Prints [chunk]running-PPL and the final estimate.\n\n"
            "options:\n"
            "  -m, --model MODEL       the model (instead of the first argument)\n"
            "  -f, --file FILE         the text (instead of the second argument)\n"
            "  -c, --ctx, --ctx-size N tokens per chunk (default 512)\n"
            "  -b, --batch, --batch-size N  tokens per forward pass (default 2048, at most N)\n"
            "      --chunks N          evaluate only the first N chunks (default all)\n"
            "  -t, --threads N         threads (default all cores)\n"
            "  -ctk, --cache-type-k T  K cache type: f16 (default), f32, q8_0, q4_0\n"
            "  -ctv, --cache-type-v T  V cache type: f16 (default), f32, q8_0, q4_0\n"
            "      --kv-type T         both at once\n"
            "      --kl-base BASE      also run BASE (f16 cache) on the same chunks and report\n"
            "                          the KL divergence of MODEL from it, its percentiles and\n"
            "                          the top-1 agreement (BASE needs the same vocabulary)\n"
            "      --mlock             keep the models in RAM\n"
            "  -h, --help              this help\n");
}

static int parse_int(const char *opt, const char *v, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        cli_fail("perplexity: %s: '%s' is not an integer in [%ld, %ld]", opt, v, lo, hi);
        return 2;
    }
    *out = (int)x;
    return 0;
}

static bool is(const char *a, const char *s1, const char *s2)
{
    return !strcmp(a, s1) || (s2 && !strcmp(a, s2));
}

/* One option with a value at argv[*i]; 0 consumed, 2 misuse. */
static int ppl_parse_opt(struct ppl_args *a, const char *o, const char *v)
{
    if (is(o, "-m", "--model")) a->model = v;
    else if (is(o, "-f", "--file")) a->file = v;
    else if (is(o, "--kl-base", "--kl-divergence-base")) a->kl_base = v;
    else if (is(o, "-c", "--ctx") || is(o, "--ctx-size", NULL))
        return parse_int(o, v, 4, 1 << 20, &a->n_ctx);
    else if (is(o, "-b", "--batch") || is(o, "--batch-size", NULL))
        return parse_int(o, v, 1, 1 << 20, &a->n_batch);
    else if (is(o, "--chunks", NULL)) return parse_int(o, v, 1, 1 << 30, &a->n_chunks);
    else if (is(o, "-t", "--threads")) return parse_int(o, v, 1, 1024, &a->n_threads);
    else {
        int t = model_kv_type_parse(v);
        if (t < 0) {
            cli_fail("perplexity: %s: '%s' is not f16, f32, q8_0 or q4_0", o, v);
            return 2;
        }
        if (!is(o, "-ctv", "--cache-type-v")) a->k_type = (enum model_kv_type)t;
        if (!is(o, "-ctk", "--cache-type-k")) a->v_type = (enum model_kv_type)t;
    }
    return 0;
}

/* 0 parsed, 1 help printed, 2 misuse (printed). */
static int ppl_parse_args(int argc, char **argv, struct ppl_args *a)
{
    static const char *const with_value[] = {
        "-m", "--model", "-f", "--file", "--kl-base", "--kl-divergence-base", "-c", "--ctx",
        "--ctx-size", "-b", "--batch", "--batch-size", "--chunks", "-t", "--threads", "-ctk",
        "--cache-type-k", "-ctv", "--cache-type-v", "--kv-type"};
    memset(a, 0, sizeof *a);
    a->n_ctx = 512;
    a->n_batch = 2048;
    a->k_type = a->v_type = MODEL_KV_F16;
    const char *bare[2] = {NULL, NULL};
    int n_bare = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (is(o, "-h", "--help")) {
            ppl_usage(stdout);
            return 1;
        }
        if (is(o, "--mlock", NULL)) {
            a->mlock = true;
            continue;
        }
        bool known = false;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= !strcmp(o, with_value[k]);
        if (known) {
            if (i + 1 >= argc) {
                cli_fail("perplexity: %s needs a value", o);
                return 2;
            }
            if (ppl_parse_opt(a, o, argv[++i])) return 2;
        } else if (o[0] == '-' && o[1]) {
            cli_fail("perplexity: unknown option '%s' (see 'meshllm perplexity --help')", o);
            return 2;
        } else if (n_bare < 2) {
            bare[n_bare++] = o;
        } else {
            cli_fail("perplexity: unexpected argument '%s'", o);
            return 2;
        }
    }
    int b = 0;
    if (!a->model && b < n_bare) a->model = bare[b++];
    if (!a->file && b < n_bare) a->file = bare[b++];
    if (b < n_bare || !a->model || !a->file) {
        cli_fail("perplexity: %s (see 'meshllm perplexity --help')",
                 b < n_bare ? "too many arguments" : "give a MODEL and a FILE.txt");
        return 2;
    }
    if (a->n_batch > a->n_ctx) a->n_batch = a->n_ctx;
    return 0;
}


/* Tokenizes text as llama-perplexity (BOS as the model says, special texts not parsed). */
static int ppl_tokenize(const struct tok *t, const char *text, size_t len, int32_t **ids, int *n)
{
    *ids = NULL;
    *n = 0;
    if (len > (size_t)1 << 30) {
        cli_fail("perplexity: the text is larger than 1 GiB");
        return 1;
    }
    int cap = (int)len + 16, need = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *buf = malloc((size_t)cap * sizeof *buf);
        if (!buf) break;
        int rc = tok_encode(t, text, len, true, false, buf, cap, &need);
        if (rc == 0) {
            *ids = buf;
            *n = need;
            return 0;
        }
        free(buf);
        if (rc != MESH_ERANGE) {
            cli_fail("perplexity: tokenizing failed: %s", err_str(rc));
            return 1;
        }
        cap = need;
    }
    cli_fail("perplexity: out of memory tokenizing the text");
    return 1;
}

static double ppl_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* What one run evaluates, and where its results go. */
struct ppl_job {
    const struct ppl_args *a;
    struct model_ctx *c, *cb;   /* model, base (NULL without --kl-base) */
    const int32_t *tokens;
    int n_chunk, n_vocab;
    int32_t bos;
    float *logits, *base_logits; /* [n_scored][n_vocab] */
    struct ppl_stats st;
    struct ppl_kld kld;
};

static void ppl_print_kld_row(int chunk, struct ppl_kld *k)
{
    struct ppl_kld_summary s;
    ppl_kld_running(k, &s);
    printf("%4d    %9.4f ± %9.4f    %10.5f ± %10.5f    %10.5f ± %10.5f    %6.3f ± %6.3f %%    "
           "%6.3f ± %6.3f %%\n",
           chunk, s.ppl.val, s.ppl.unc, s.ln_ratio.val, s.ln_ratio.unc, s.kld.val, s.kld.unc,
           100.0 * s.dp_rms.val, 100.0 * s.dp_rms.unc, 100.0 * s.same_top.val,
           100.0 * s.same_top.unc);
}

static void ppl_print_kld_summary(struct ppl_kld *k)
{
    struct ppl_kld_summary s;
    if (ppl_kld_summarize(k, &s)) return;
    if (s.count < 100) printf("(only %zu tokens scored: the statistics below are rough)\n", s.count);
    printf("====== Perplexity statistics ======\n");
    printf("Mean PPL(Q)                   : %10.6f ± %10.6f\n", s.ppl.val, s.ppl.unc);
    printf("Mean PPL(base)                : %10.6f ± %10.6f\n", s.ppl_base.val, s.ppl_base.unc);
    printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * s.cor);
    printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", s.ln_ratio.val, s.ln_ratio.unc);
    printf("Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", s.ratio.val, s.ratio.unc);
    printf("Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n\n", s.diff.val, s.diff.unc);
    printf("====== KL divergence statistics ======\n");
    printf("Mean    KLD: %10.6f ± %10.6f\n", s.kld.val, s.kld.unc);
    printf("Maximum KLD: %10.6f\n99.9%%   KLD: %10.6f\n99.0%%   KLD: %10.6f\n", s.kld_max,
           s.kld_p999, s.kld_p99);
    printf("Median  KLD: %10.6f\n10.0%%   KLD: %10.6f\n 5.0%%   KLD: %10.6f\n", s.kld_median,
           s.kld_p10, s.kld_p5);
    printf(" 1.0%%   KLD: %10.6f\nMinimum KLD: %10.6f\n\n", s.kld_p1, s.kld_min);
    printf("====== Token probability statistics ======\n");
    printf("Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * s.p_diff.val, 100.0 * s.p_diff.unc);
    const double dp[] = {s.dp_max, s.dp_p999, s.dp_p99, s.dp_p95, s.dp_p90, s.dp_p75, s.dp_median,
                         s.dp_p25, s.dp_p10, s.dp_p5, s.dp_p1, s.dp_p01, s.dp_min};
    static const char *const dp_name[] = {"Maximum", "99.9%  ", "99.0%  ", "95.0%  ", "90.0%  ",
                                          "75.0%  ", "Median ", "25.0%  ", "10.0%  ", " 5.0%  ",
                                          " 1.0%  ", " 0.1%  ", "Minimum"};
    for (int i = 0; i < 13; i++) printf("%s Δp: %6.3f%%\n", dp_name[i], 100.0 * dp[i]);
    printf("RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * s.dp_rms.val, 100.0 * s.dp_rms.unc);
    printf("Same top p: %6.3f ± %5.3f %%\n", 100.0 * s.same_top.val, 100.0 * s.same_top.unc);
}

/* Evaluates chunk i of the job and folds its scored tokens into the statistics. */
static int ppl_eval_chunk(struct ppl_job *j, int i)
{
    int n_ctx = j->a->n_ctx, first = n_ctx / 2, n_scored = ppl_n_scored(n_ctx);
    const int32_t *chunk = j->tokens + (size_t)i * (size_t)n_ctx;
    int rc = ppl_chunk_logits(j->c, chunk, n_ctx, j->bos, j->logits);
    if (!rc && j->cb) rc = ppl_chunk_logits(j->cb, chunk, n_ctx, j->bos, j->base_logits);
    if (rc) {
        cli_fail("perplexity: chunk %d: evaluation failed: %s", i + 1, err_str(rc));
        return 1;
    }
    for (int k = 0; k < n_scored; k++) {
        const float *l = j->logits + (size_t)k * (size_t)j->n_vocab;
        int32_t next = chunk[first + k + 1];
        ppl_stats_add(&j->st, ppl_token_nll(l, j->n_vocab, next));
        if (j->cb) ppl_kld_add(&j->kld, l, j->base_logits + (size_t)k * (size_t)j->n_vocab, j->n_vocab, next);
    }
    return 0;
}

static int ppl_loop(struct ppl_job *j)
{
    bool tty = isatty(STDERR_FILENO);
    double t0 = ppl_now_s();
    if (j->cb)
        printf("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence   "
               "           Δp RMS            Same top p\n");
    for (int i = 0; i < j->n_chunk; i++) {
        if (ppl_eval_chunk(j, i)) return 1;
        double dt = ppl_now_s() - t0;
        if (i == 0)
            fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", dt,
                    dt * j->n_chunk / 60.0);
        if (tty)
            fprintf(stderr, "\rperplexity: chunk %d/%d, %.1f s left   ", i + 1, j->n_chunk,
                    dt / (i + 1) * (j->n_chunk - i - 1));
        if (j->cb) ppl_print_kld_row(i + 1, &j->kld);
        else printf("[%d]%.4f,", i + 1, ppl_stats_ppl(&j->st));
        fflush(stdout);
    }
    if (tty) fprintf(stderr, "\n");
    printf("\n");
    if (j->cb) {
        printf("\n");
        ppl_print_kld_summary(&j->kld);
    }
    double ppl, err;
    if (ppl_stats_final(&j->st, &ppl, &err)) {
        cli_fail("perplexity: unexpected non-positive variance of log(prob) (PPL = %.4f)", ppl);
        return 1;
    }
    printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, err);
    return 0;
}

static int ppl_load(const char *path, const struct ppl_args *a, enum model_kv_type kt,
                    enum model_kv_type vt, struct model **m, struct model_ctx **c)
{
    struct cli_gen_opts o;
    cli_gen_opts_default(&o);
    o.n_ctx = a->n_ctx;
    o.n_batch = a->n_batch;
    o.n_threads = a->n_threads;
    o.k_type = kt;
    o.v_type = vt;
    o.mlock = a->mlock;
    if (cli_load_model(path, &o, 1, m, c) < 0) return 1;
    if (model_ctx_n_ctx(*c) < a->n_ctx) {
        cli_fail("perplexity: %s: a context of %d tokens could not be made (got %d)", path,
                 a->n_ctx, model_ctx_n_ctx(*c));
        return 1;
    }
    return 0;
}

static int ppl_run(const struct ppl_args *a)
{
    int status = 1;
    struct model *m = NULL, *mb = NULL;
    struct ppl_job j = {.a = a};
    size_t len = 0;
    int32_t *tokens = NULL;
    char *text = cli_read_file("perplexity", a->file, &len);
    if (!text) goto out;
    if (ppl_load(a->model, a, a->k_type, a->v_type, &m, &j.c)) goto out;
    if (a->kl_base && ppl_load(a->kl_base, a, MODEL_KV_F16, MODEL_KV_F16, &mb, &j.cb)) goto out;
    if (a->n_ctx > model_hparams(m)->n_ctx_train)
        fprintf(stderr, "meshllm: perplexity: warning: %s was trained on only %d context tokens (%d asked)\n",
                a->model, model_hparams(m)->n_ctx_train, a->n_ctx);
    const struct tok *t = model_tok(m);
    j.n_vocab = model_hparams(m)->n_vocab;
    int32_t diff_id;
    if (mb && (model_hparams(mb)->n_vocab != j.n_vocab ||
               tok_vocab_compare(t, model_tok(mb), &diff_id))) {
        if (diff_id >= 0)
            cli_fail("perplexity: %s and %s have different vocabularies (token %d differs)",
                     a->model, a->kl_base, (int)diff_id);
        else
            cli_fail("perplexity: %s and %s have different vocabularies (%d and %d tokens, or "
                     "other BOS/EOS)", a->model, a->kl_base, j.n_vocab, model_hparams(mb)->n_vocab);
        goto out;
    }
    int n_tokens = 0;
    if (ppl_tokenize(t, text, len, &tokens, &n_tokens)) goto out;
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= j.n_vocab) { /* a vocabulary larger than the head */
            cli_fail("perplexity: token %d of the text is outside the model's %d logits",
                     (int)tokens[i], j.n_vocab);
            goto out;
        }
    j.tokens = tokens;
    j.bos = tok_adds_bos(t) ? tok_bos(t) : -1;
    j.n_chunk = ppl_n_chunks(n_tokens, a->n_ctx, a->n_chunks);
    if (j.n_chunk == 0) {
        cli_fail("perplexity: %s tokenizes to only %d tokens; a context of %d needs at least %d",
                 a->file, n_tokens, a->n_ctx, 2 * a->n_ctx);
        goto out;
    }
    size_t n_sc = (size_t)ppl_n_scored(a->n_ctx);
    j.logits = malloc(n_sc * (size_t)j.n_vocab * sizeof(float));
    if (mb) j.base_logits = malloc(n_sc * (size_t)j.n_vocab * sizeof(float));
    if (!j.logits || (mb && (!j.base_logits || ppl_kld_init(&j.kld, n_sc * (size_t)j.n_chunk)))) {
        cli_fail("perplexity: out of memory");
        goto out;
    }
    fprintf(stderr,
            "perplexity: %d tokens, calculating perplexity over %d chunks, n_ctx=%d, "
            "batch_size=%d%s%s\n",
            n_tokens, j.n_chunk, a->n_ctx, model_ctx_n_batch(j.c), mb ? ", KL base " : "",
            mb ? a->kl_base : "");
    status = ppl_loop(&j);
out:
    if (mb) ppl_kld_free(&j.kld);
    free(j.base_logits);
    free(j.logits);
    free(tokens);
    model_ctx_free(j.cb);
    model_free(mb);
    model_ctx_free(j.c);
    model_free(m);
    free(text);
    return status;
}

int cmd_perplexity(int argc, char **argv)
{
    struct ppl_args a;
    int rc = ppl_parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : 2;
    return ppl_run(&a);
}
