/* cmd_bench.c - `meshllm bench MODEL.gguf`: llama-bench-style throughput table.
 *
 * pp<P>: one batch of P prompt tokens into an empty cache; tg<N>: N tokens decoded one at
 * a time; tg<N>x<B>: B sequences decoding N tokens each, one batch of B tokens per step.
 * Token ids are random (the speed does not depend on them). Each test runs once to warm
 * up, then -r times; the table shows mean ± sample standard deviation of tokens/s.
 */
#include <stdio.h>

#include "cli/cli.h"
#include "core/err.h"
#include "engine/model.h"
#include "engine/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BENCH_MAX_B = 64 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: meshllm bench MODEL.gguf [options]\n\n"
               "Measures prompt processing and generation speed (tokens/s).\n\n"
               "  -m PATH       the model (or give it as the first argument)\n"
               "  -p N          prompt tokens for the pp test (default 64; 0 = skip)\n"
               "  -n N          generated tokens for the tg tests (default 32; 0 = skip)\n"
               "  -t N          threads (default: all cores)\n"
               "  -r N          repetitions (default 5)\n"
               "  -b LIST       batched decode: sequences per step, e.g. 1,4,8 (default 1)\n"
               "  -ctk, -ctv T       K / V cache type: f16 (default), f32, q8_0, q4_0\n"
               "  --kv-type T        both at once\n"
               "  --profile     also print where the time goes, step by step (ms per token)\n");
}

static int parse_list(const char *s, int *out, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > BENCH_MAX_B) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

/* One timed run; returns seconds or < 0 on error. */
static double bench_once(struct model_ctx *c, int n_vocab, int n_prompt, int n_gen, int n_par,
                         float *logits, int32_t *toks, int32_t *pos, int32_t *seq, uint64_t *rng)
{
    for (int s = 0; s < n_par; s++) model_kv_seq_truncate(c, s, 0);
    for (int i = 0; i < (n_prompt > n_par ? n_prompt : n_par); i++) {
        *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = (int32_t)((*rng >> 33) % (uint64_t)n_vocab);
    }
    double t0 = now_s();
    if (n_prompt > 0) {
        for (int i = 0; i < n_prompt; i++) pos[i] = i, seq[i] = 0;
        struct model_batch b = {.n = n_prompt, .tokens = toks, .pos = pos, .seq = seq};
        if (model_decode(c, &b, logits) < 0) return -1;
    }
    bool want[BENCH_MAX_B];
    for (int s = 0; s < n_par; s++) want[s] = true;
    for (int step = 0; step < n_gen; step++) {
        for (int s = 0; s < n_par; s++) pos[s] = step, seq[s] = s;
        struct model_batch b = {.n = n_par, .tokens = toks, .pos = pos, .seq = seq, .want_logits = want};
        if (model_decode(c, &b, logits) < 0) return -1;
    }
    return now_s() - t0;
}

int cmd_bench(int argc, char **argv)
{
    const char *path = NULL;
    int n_prompt = 64, n_gen = 32, n_threads = 0, reps = 5, batches[16] = {1}, n_batches = 1;
    enum model_kv_type kt = MODEL_KV_F16, vt = MODEL_KV_F16;
    bool profile = false;
    double prof[8][MODEL_PROF_COUNT], prof_wall[8];
    char prof_name[8][32];
    int n_prof = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--profile")) {
            profile = true;
            continue;
        }
        if (a[0] != '-') {
            if (path) {
                cli_fail("bench: unexpected argument '%s'", a);
                return 2;
            }
            path = a;
            continue;
        }
        if (i + 1 >= argc) {
            cli_fail("bench: %s needs a value", a);
            return 2;
        }
        const char *v = argv[++i];
        char *end = NULL;
        long x = strtol(v, &end, 10);
        bool num_ok = end != v && !*end;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && !path) path = v;
        else if (!strcmp(a, "-p") && num_ok && x >= 0 && x <= 4096) n_prompt = (int)x;
        else if (!strcmp(a, "-n") && num_ok && x >= 0 && x <= 4096) n_gen = (int)x;
        else if (!strcmp(a, "-t") && num_ok && x >= 0 && x <= 1024) n_threads = (int)x;
        else if (!strcmp(a, "-r") && num_ok && x >= 1 && x <= 1000) reps = (int)x;
        else if (!strcmp(a, "-b") && (n_batches = parse_list(v, batches, 16)) > 0) {
        } else if ((!strcmp(a, "--kv-type") || !strcmp(a, "-ctk") || !strcmp(a, "--cache-type-k") ||
                    !strcmp(a, "-ctv") || !strcmp(a, "--cache-type-v")) && model_kv_type_parse(v) >= 0) {
            bool is_v = !strcmp(a, "-ctv") || !strcmp(a, "--cache-type-v");
            bool is_k = !strcmp(a, "-ctk") || !strcmp(a, "--cache-type-k");
            if (!is_v) kt = (enum model_kv_type)model_kv_type_parse(v);
            if (!is_k) vt = (enum model_kv_type)model_kv_type_parse(v);
        } else {
            cli_fail("bench: bad option '%s %s' (see 'meshllm bench --help')", a, v);
            return 2;
        }
    }
    if (!path) {
        bench_usage(stderr);
        return 2;
    }
    quant_init();
    char err[1024] = "";
    struct model *m = NULL;
    struct model_ctx *c = NULL;
    int status = 1;
    if (model_load(path, NULL, &m, err, sizeof err) < 0) {
        cli_fail("%s", err);
        return 1;
    }
    const struct model_hparams *hp = model_hparams(m);
    int max_b = 1;
    for (int i = 0; i < n_batches; i++) max_b = batches[i] > max_b ? batches[i] : max_b;
    struct model_ctx_params p;
    model_ctx_params_default(&p);
    p.n_ctx = (n_prompt > n_gen ? n_prompt : n_gen) + 8;
    p.n_batch = n_prompt > max_b ? n_prompt : max_b;
    p.n_seq = max_b;
    p.n_threads = n_threads;
    p.k_type = kt;
    p.v_type = vt;
    if (model_ctx_new(m, &p, &c, err, sizeof err) < 0) {
        cli_fail("bench: %s", err);
        goto done;
    }
    int nt = p.n_batch;
    float *logits = malloc((size_t)max_b * (size_t)hp->n_vocab * sizeof(float));
    int32_t *toks = malloc((size_t)nt * sizeof(int32_t)), *pos = malloc((size_t)nt * sizeof(int32_t)),
            *seq = malloc((size_t)nt * sizeof(int32_t));
    double *ts = malloc((size_t)reps * sizeof(double));
    if (!logits || !toks || !pos || !seq || !ts) {
        cli_fail("bench: out of memory");
        goto free_bufs;
    }
    const char *type_name = model_ftype_name(hp->file_type);
    double size_mib = (double)model_weight_bytes(m) / (1024.0 * 1024.0);
    char cpu[512];
    printf("cpu %s; kernels %s (MESHLLM_ISA=scalar|avx2|avx512|neon forces a path)\n\n",
           quant_cpu_describe(cpu, sizeof cpu), quant_isa_name());
    printf("| model | size | isa | threads | test | t/s |\n|---|---:|---|---:|---|---:|\n");
    uint64_t rng = 42;
    for (int test = 0; test < 1 + n_batches; test++) {
        int tp = test == 0 ? n_prompt : 0, tg = test == 0 ? 0 : n_gen, par = test == 0 ? 1 : batches[test - 1];
        if ((test == 0 && tp == 0) || (test > 0 && tg == 0)) continue;
        char name[32];
        if (test == 0) snprintf(name, sizeof name, "pp%d", tp);
        else if (par == 1) snprintf(name, sizeof name, "tg%d", tg);
        else snprintf(name, sizeof name, "tg%dx%d", tg, par);
        if (bench_once(c, hp->n_vocab, tp, tg, par, logits, toks, pos, seq, &rng) < 0) {
            cli_fail("bench: decode failed");
            goto free_bufs;
        }
        double mean = 0, var = 0, wall_s = 0;
        model_ctx_profile_enable(c, profile && n_prof < 8);
        model_ctx_profile_reset(c);
        for (int r = 0; r < reps; r++) {
            double s = bench_once(c, hp->n_vocab, tp, tg, par, logits, toks, pos, seq, &rng);
            wall_s += s;
            ts[r] = (double)(test == 0 ? tp : tg * par) / s;
            mean += ts[r];
        }
        mean /= reps;
        if (profile && n_prof < 8) {
            /* per token of the test: prompt tokens, or generated tokens x sequences */
            double per = (double)reps * (test == 0 ? tp : tg * par);
            model_ctx_profile_get(c, prof[n_prof]);
            for (int k = 0; k < MODEL_PROF_COUNT; k++) prof[n_prof][k] /= per;
            prof_wall[n_prof] = wall_s * 1e3 / per;
            snprintf(prof_name[n_prof++], sizeof prof_name[0], "%s", name);
            model_ctx_profile_enable(c, false);
        }
        for (int r = 0; r < reps; r++) var += (ts[r] - mean) * (ts[r] - mean);
        double sd = reps > 1 ? sqrt(var / (reps - 1)) : 0.0;
        printf("| %s %s | %.2f MiB | %s | %d | %s | %.2f ± %.2f |\n", hp->arch_name, type_name,
               size_mib, quant_isa_name(), model_ctx_n_threads(c), name, mean, sd);
        fflush(stdout);
    }
    if (n_prof > 0) {
        printf("\nms per token by step (wall time on the calling thread, between barriers; "
               "measured: the runs' whole time per token):\n\n| test |");
        for (int k = 0; k < MODEL_PROF_COUNT; k++) printf(" %s |", model_prof_step_name(k));
        printf(" total | measured |\n|---|");
        for (int k = 0; k <= MODEL_PROF_COUNT + 1; k++) printf("---:|");
        printf("\n");
        for (int i = 0; i < n_prof; i++) {
            double tot = 0;
            for (int k = 0; k < MODEL_PROF_COUNT; k++) tot += prof[i][k];
            printf("| %s |", prof_name[i]);
            for (int k = 0; k < MODEL_PROF_COUNT; k++)
                printf(" %.3f (%.0f%%) |", prof[i][k], tot > 0 ? 100.0 * prof[i][k] / tot : 0.0);
            printf(" %.4f | %.4f |\n", tot, prof_wall[i]);
        }
    }
    status = 0;
free_bufs:
    free(logits);
    free(toks);
    free(pos);
    free(seq);
    free(ts);
done:
    model_ctx_free(c);
    model_free(m);
    return status;
}
