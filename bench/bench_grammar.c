/* bench_grammar.c - constrained decoding against unconstrained on the same model and prompt.
 *
 * Usage: bench_grammar MODEL.gguf [N_TOKENS [REPEATS]]   (defaults 200 tokens, 5 repeats)
 * Rows: no grammar; a nested JSON schema (an array of objects holding an object, an array
 * and an enum); a 500-value enum (an array of them). Each row decodes the same prompt
 * with the same sampler settings (temperature 1, seed fixed per repeat) through the shared
 * per-token step (engine/gen.h gen_step), prints the median tokens/s over the repeats, the
 * ratio to the unconstrained row, the share of steps whose first draw the grammar refused
 * (those computed the full vocabulary mask) and the mean time of one full mask.
 * Not a test: nothing is asserted.
 */
#include "core/err.h"
#include "engine/gen.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/model.h"
#include "engine/quant.h"
#include "engine/sampler.h"
#include "engine/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One generation of up to n tokens after the prompt; returns tokens/s of the decode loop. */
static int run_once(struct model_ctx *c, const struct tok *t, const int32_t *prompt, int n_prompt,
                    const char *gbnf, const struct grammar_vocab *gv, int n, uint64_t seed,
                    double *tok_s, int *n_gen, int *n_masked)
{
    int32_t n_vocab = tok_n_vocab(t);
    struct sampler_params sp;
    sampler_params_default(&sp);
    sp.temp = 1.0f;
    sp.seed = seed;
    struct sampler *s = NULL;
    struct gen_seq g;
    memset(&g, 0, sizeof g);
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    int rc = logits ? sampler_new(&sp, n_vocab, &s) : MESH_ENOMEM;
    struct gen_seq_opts so = {.n_logprobs = -1, .grammar = gbnf, .gvocab = gv};
    if (!rc) rc = gen_seq_init(&g, t, s, &so);
    if (rc) goto done;
    model_kv_seq_truncate(c, 0, 0);
    int32_t pos_buf[512];
    for (int i = 0; i < n_prompt; i++) pos_buf[i] = i;
    struct model_batch b = {.n = n_prompt, .tokens = prompt, .pos = pos_buf};
    if ((rc = model_decode(c, &b, logits)) < 0) goto done;
    int pos = n_prompt, k = 0;
    double t0 = now_ms();
    for (; k < n && pos < model_ctx_n_ctx(c); k++) {
        struct gen_tok tk;
        if ((rc = gen_step(&g, logits, &tk)) < 0) goto done;
        if (tk.is_eog) break;
        int32_t id = tk.id;
        struct model_batch one = {.n = 1, .tokens = &id, .pos = &pos};
        if ((rc = model_decode(c, &one, logits)) < 0) goto done;
        pos++;
    }
    double ms = now_ms() - t0;
    *tok_s = ms > 0 ? k * 1000.0 / ms : 0;
    *n_gen = k;
    *n_masked = g.n_masked;
    rc = 0;
done:
    gen_seq_free(&g);
    sampler_free(s);
    free(logits);
    return rc;
}

/* The mean time of one full (uncached) mask inside the grammar's first string or value. */
static int mask_time(const char *gbnf, const struct grammar_vocab *gv, double *ms)
{
    struct grammar *g = NULL;
    struct grammar_state *st = NULL;
    int rc = grammar_parse(gbnf, strlen(gbnf), &g, NULL, 0);
    if (!rc) rc = grammar_state_new(g, gv, false, &st);
    const char *prefix = strstr(gbnf, "value-0") ? "[\"" : "[{\"name\":\"";
    double total = 0;
    int iters = 30;
    for (int i = 0; i < iters && !rc; i++) {
        grammar_state_reset(st); /* a new epoch: the mask cache cannot answer */
        grammar_state_accept_bytes(st, prefix, strlen(prefix));
        double t0 = now_ms();
        rc = grammar_state_mask(st, NULL, NULL);
        total += now_ms() - t0;
    }
    *ms = total / iters;
    grammar_state_free(st);
    grammar_free(g);
    return rc;
}

/* The two benchmark grammars, compiled from their schemas (schema: 64 KiB scratch). */
static int make_grammars(char *schema, char **nested, char **enum500, char *err, size_t err_cap)
{
    snprintf(schema, 1 << 16,
             "{\"type\":\"array\",\"minItems\":100,\"items\":{\"type\":\"object\",\"properties\":{"
             "\"name\":{\"type\":\"string\",\"maxLength\":24},\"age\":{\"type\":\"integer\"},"
             "\"pet\":{\"type\":\"object\",\"properties\":{\"kind\":{\"enum\":[\"cat\",\"dog\",\"fish\"]},"
             "\"legs\":{\"type\":\"integer\"}},\"required\":[\"kind\"]},"
             "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":8},\"maxItems\":4},"
             "\"ok\":{\"type\":\"boolean\"}},\"required\":[\"name\",\"age\",\"pet\"]}}");
    if (json_schema_to_gbnf(schema, strlen(schema), nested, err, err_cap)) return MESH_EINVAL;
    size_t k = (size_t)snprintf(schema, 1 << 16, "{\"type\":\"array\",\"minItems\":500,\"items\":{\"enum\":[");
    for (int i = 0; i < 500; i++) k += (size_t)snprintf(schema + k, (1 << 16) - k, "%s\"value-%d\"", i ? "," : "", i);
    snprintf(schema + k, (1 << 16) - k, "]}}");
    if (json_schema_to_gbnf(schema, strlen(schema), enum500, err, err_cap)) return MESH_EINVAL;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_grammar MODEL.gguf [N_TOKENS [REPEATS]]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 200, repeats = argc > 3 ? atoi(argv[3]) : 5;
    if (n <= 0 || repeats <= 0) return 2;
    quant_init();
    char err[512];
    struct model *m = NULL;
    struct model_ctx *c = NULL;
    struct grammar_vocab *gv = NULL;
    char *nested = NULL, *enum500 = NULL, *schema = malloc(1 << 16);
    int status = 1;
    if (!schema || model_load(argv[1], NULL, &m, err, sizeof err)) {
        fprintf(stderr, "bench_grammar: %s\n", schema ? err : "out of memory");
        goto done;
    }
    struct model_ctx_params cp;
    model_ctx_params_default(&cp);
    cp.n_ctx = n + 64;
    if (model_ctx_new(m, &cp, &c, err, sizeof err)) {
        fprintf(stderr, "bench_grammar: %s\n", err);
        goto done;
    }
    const struct tok *t = model_tok(m);
    double tv0 = now_ms();
    if (grammar_vocab_new(t, &gv)) goto done;
    double vocab_ms = now_ms() - tv0;
    if (make_grammars(schema, &nested, &enum500, err, sizeof err)) goto bad_schema;
    const char *text = "Here is the data as JSON:";
    int32_t prompt[256];
    int n_prompt = 0;
    if (tok_encode(t, text, strlen(text), true, false, prompt, 256, &n_prompt)) goto done;
    const struct model_hparams *hp = model_hparams(m);
    printf("model %s, vocab %d, %d threads, isa %s; %d tokens x %d repeats, temperature 1\n",
           argv[1], tok_n_vocab(t), model_ctx_n_threads(c), quant_isa_name(), n, repeats);
    printf("vocabulary trie built in %.1f ms (once per model)\n", vocab_ms);
    (void)hp;
    printf("%-22s %10s %7s %12s %10s\n", "grammar", "tok/s", "ratio", "masked steps", "mask ms");
    struct {
        const char *name, *gbnf;
    } rows[] = {{"none", NULL}, {"nested JSON schema", nested}, {"500-value enum", enum500}};
    /* repeats outside, rows inside: a machine whose load drifts slows every row alike */
    double v[3][64];
    int total[3] = {0}, masked[3] = {0};
    if (repeats > 64) repeats = 64;
    for (int r = 0; r < repeats; r++)
        for (int i = 0; i < 3; i++) {
            int ng = 0, nm = 0;
            if (run_once(c, t, prompt, n_prompt, rows[i].gbnf, gv, n, 1000 + (uint64_t)r, &v[i][r],
                         &ng, &nm)) {
                fprintf(stderr, "bench_grammar: row %s failed\n", rows[i].name);
                goto done;
            }
            total[i] += ng, masked[i] += nm;
        }
    double base = 0;
    for (int i = 0; i < 3; i++) {
        qsort(v[i], (size_t)repeats, sizeof v[i][0], cmp_double);
        double med = v[i][repeats / 2], mms = 0;
        if (rows[i].gbnf && mask_time(rows[i].gbnf, gv, &mms)) goto done;
        if (i == 0) base = med;
        printf("%-22s %10.1f %7.2f %11.1f%% %10.3f\n", rows[i].name, med, base > 0 ? med / base : 0,
               total[i] ? 100.0 * masked[i] / total[i] : 0.0, mms);
    }
    status = 0;
    goto done;
bad_schema:
    fprintf(stderr, "bench_grammar: %s\n", err);
done:
    free(schema);
    free(nested);
    free(enum500);
    grammar_vocab_free(gv);
    model_ctx_free(c);
    model_free(m);
    return status;
}
