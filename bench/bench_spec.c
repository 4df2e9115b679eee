/* bench_spec.c - speculative decoding's speed-up on one node: decode tokens/s of one greedy
 * request on a one-slot scheduler (node/sched.h) with speculation off, n-gram drafting and a
 * draft model, on stories260K and on a random-weight model of a real shape, for a story
 * prompt and a prompt that repeats itself. Median of several runs; prints a table with the
 * acceptance rates. Output is checked equal to plain decoding on every run.
 *
 *   build/bench/bench_spec [-r RUNS] [-n TOKENS] [-t THREADS] [--shape NAME] [--ftype q4_0|q8_0]
 */
#include "core/err.h"
#include "engine/model.h"
#include "engine/model_gen.h"
#include "engine/quant.h"
#include "engine/quantize.h"
#include "engine/tok.h"
#include "node/sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct run_out {
    double tps;
    int32_t ids[4096];
    int n_ids;
    double accept;
};

/* One greedy request of n_gen tokens; tokens/s from the first token to the end. */
static int run_once(const struct model *m, enum spec_mode spec, const char *draft, int n_threads,
                    const int32_t *prompt, int n_prompt, int n_gen, struct run_out *out)
{
    struct sched_params p;
    sched_params_default(&p);
    p.n_slots = 1;
    p.n_ctx = 2048;
    p.n_threads = n_threads;
    p.spec = spec;
    p.draft_path = draft;
    struct sched *s = NULL;
    char err[512] = "";
    if (sched_new(m, &p, &s, err, sizeof err)) {
        fprintf(stderr, "bench_spec: %s\n", err);
        return -1;
    }
    struct sched_gen_params gp;
    sched_gen_params_default(&gp);
    gp.sp.temp = 0;
    gp.max_tokens = n_gen;
    struct sched_req *r = NULL;
    if (sched_submit_gen(s, prompt, n_prompt, &gp, NULL, NULL, &r)) return -1;
    out->n_ids = 0;
    double t_first = 0, t_end = 0;
    for (;;) {
        struct sched_chunk ch;
        if (sched_req_take(r, &ch)) return -1;
        if (ch.n_ids && !t_first) t_first = now_s();
        for (int i = 0; i < ch.n_ids && out->n_ids < 4096; i++) out->ids[out->n_ids++] = ch.ids[i];
        bool done = ch.done;
        sched_chunk_free(&ch);
        if (done) break;
        usleep(50);
    }
    t_end = now_s();
    out->tps = out->n_ids > 1 && t_end > t_first ? (out->n_ids - 1) / (t_end - t_first) : 0;
    struct sched_stats st;
    sched_stats(s, &st);
    out->accept = st.n_spec_drafted ? (double)st.n_spec_accepted / (double)st.n_spec_drafted : 0;
    sched_req_release(r);
    sched_free(s);
    return 0;
}

static void bench_model(const char *name, const char *path, const char *draft, int runs,
                        int n_gen, int n_threads)
{
    char err[512] = "";
    struct model *m = NULL;
    if (model_load(path, NULL, &m, err, sizeof err)) {
        fprintf(stderr, "bench_spec: %s\n", err);
        exit(1);
    }
    static const char *const prompts[2][2] = {
        {"story", "Once upon a time, there was a little girl named Lily."},
        {"repeats", "The cat sat on the mat. The dog sat on the log. The cat sat on the mat. "
                    "The dog sat on the log. The cat sat on the mat. The dog sat on the log."},
    };
    const char *modes[3] = {"off", "ngram", "draft"};
    for (int pi = 0; pi < 2; pi++) {
        int32_t ids[512];
        int n = 0;
        const char *text = prompts[pi][1];
        tok_encode(model_tok(m), text, strlen(text), true, false, ids, 512, &n);
        double base = 0;
        struct run_out *plain = calloc(1, sizeof *plain), *o = calloc(1, sizeof *o);
        for (int mi = 0; mi < 3; mi++) {
            if (mi == 2 && !draft) continue;
            double tps[16], acc = 0;
            for (int k = 0; k < runs; k++) {
                if (run_once(m, (enum spec_mode)mi, mi == 2 ? draft : NULL, n_threads, ids, n,
                             n_gen, mi ? o : plain))
                    exit(1);
                struct run_out *cur = mi ? o : plain;
                if (mi && (o->n_ids != plain->n_ids ||
                           memcmp(o->ids, plain->ids, (size_t)o->n_ids * sizeof *o->ids))) {
                    fprintf(stderr, "bench_spec: %s output differs from plain decoding\n",
                            modes[mi]);
                    exit(1);
                }
                tps[k] = cur->tps;
                acc = cur->accept;
            }
            qsort(tps, (size_t)runs, sizeof *tps, cmp_double);
            double med = tps[runs / 2];
            if (mi == 0) base = med;
            char acc_text[16] = "-";
            if (mi) snprintf(acc_text, sizeof acc_text, "%.0f%%", 100 * acc);
            printf("| %-12s | %-7s | %-5s | %8.1f | %5.2fx | %9s |\n", name, prompts[pi][0],
                   modes[mi], med, base > 0 ? med / base : 0, acc_text);
            fflush(stdout);
        }
        free(plain);
        free(o);
    }
    model_free(m);
}

int main(int argc, char **argv)
{
    int runs = 5, n_gen = 256, n_threads = 0;
    const char *shape = "test-small", *ftype = "q4_0";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-r")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) n_gen = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) n_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shape")) shape = argv[i + 1];
        else if (!strcmp(argv[i], "--ftype")) ftype = argv[i + 1];
    }
    if (runs < 1) runs = 1;
    if (runs > 16) runs = 16;
    quant_init();
    const char *models = getenv("MESHLLM_TEST_MODELS");
    char stories[1024], rand_path[1024];
    snprintf(stories, sizeof stories, "%s/stories260K.gguf", models ? models : "../shared/models");
    snprintf(rand_path, sizeof rand_path, "/tmp/meshllm-bench-spec-%s-%s.gguf", shape, ftype);
    if (access(rand_path, R_OK) != 0) {
        struct model_gen_opts o;
        memset(&o, 0, sizeof o);
        if (model_gen_shape_get(shape, &o.shape)) {
            fprintf(stderr, "bench_spec: unknown shape %s (%s)\n", shape, model_gen_shape_names());
            return 1;
        }
        o.vocab_path = stories;
        o.ftype = !strcmp(ftype, "q8_0") ? QUANTIZE_FT_Q8_0 : QUANTIZE_FT_Q4_0;
        o.seed = 1;
        char err[512] = "";
        if (model_gen_write(&o, rand_path, err, sizeof err) < 0) {
            fprintf(stderr, "bench_spec: %s\n", err);
            return 1;
        }
    }
    printf("speculative decoding, one greedy request of %d tokens, median of %d runs\n\n", n_gen,
           runs);
    printf("| model        | prompt  | spec  | tok/s    | speed | accepted  |\n"
           "|--------------|---------|-------|----------|-------|-----------|\n");
    bench_model("stories260K", stories, stories, runs, n_gen, n_threads);
    char label[64];
    snprintf(label, sizeof label, "%s %s", shape, ftype);
    /* the random model drafts with stories260K: same vocabulary, other weights (rejections) */
    bench_model(label, rand_path, stories, runs, n_gen, n_threads);
    return 0;
}
