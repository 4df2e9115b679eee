/* mkmodel.c - writes a random-weight GGUF model of a realistic shape (engine/model_gen).
 *
 *   mkmodel --shape tinyllama-1.1b --vocab V.gguf --type Q4_0 -o out.gguf [--seed N] [-t N]
 *   mkmodel --arch qwen2 --dim 1024 --layers 4 --heads 16 --kv-heads 4 --ff 2816
 *           --vocab V.gguf -o out.gguf          (a custom shape; --vocab-size pads the vocab)
 *
 * For benchmarks when the real weights are not at hand: speed depends on shapes and
 * types, not on the values. Progress goes to stderr.
 */
#include "core/err.h"
#include "engine/model_gen.h"
#include "engine/quantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mkmodel (--shape NAME | --arch llama|qwen2 --dim N --layers N --heads N\n"
            "                --kv-heads N --ff N [--tied]) --vocab VOCAB.gguf -o OUT.gguf\n"
            "               [--type TYPE] [--vocab-size N] [--ctx N] [--seed N] [-t THREADS]\n\n"
            "shapes: %s\ntypes:  %s (default F16)\n",
            model_gen_shape_names(), quantize_ftype_list());
}

static int parse_int(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > (1l << 30)) return -1;
    *out = (int)v;
    return 0;
}

static void on_progress(void *user, const char *stage, int64_t i, int64_t n, uint64_t done, uint64_t total)
{
    (void)user;
    fprintf(stderr, "\r%-8s tensor %lld/%lld  %6.1f%%  %.1f / %.1f MiB", stage, (long long)i + 1, (long long)n,
            total ? 100.0 * (double)done / (double)total : 100.0, (double)done / 1048576.0,
            (double)total / 1048576.0);
    if (done == total && i + 1 == n) fputc('\n', stderr);
}

int main(int argc, char **argv)
{
    struct model_gen_opts o;
    memset(&o, 0, sizeof o);
    o.ftype = QUANTIZE_FT_F16;
    o.seed = 1;
    struct model_gen_shape *s = &o.shape;
    snprintf(s->name, sizeof s->name, "custom");
    snprintf(s->arch, sizeof s->arch, "llama");
    s->n_ctx = 4096;
    s->rope_theta = 10000.0f;
    s->rms_eps = 1e-5f;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--tied")) {
            s->tied_output = true;
            continue;
        } else if (!v) {
            bad = 1;
        } else if (!strcmp(a, "--shape")) {
            if (model_gen_shape_get(v, s) != 0) {
                fprintf(stderr, "mkmodel: unknown shape '%s' (known: %s)\n", v, model_gen_shape_names());
                return 2;
            }
        } else if (!strcmp(a, "--arch")) {
            snprintf(s->arch, sizeof s->arch, "%s", v);
            if (!strcmp(v, "qwen2")) s->rope_theta = 1000000.0f, s->rms_eps = 1e-6f;
        } else if (!strcmp(a, "--vocab")) {
            o.vocab_path = v;
        } else if (!strcmp(a, "-o")) {
            out = v;
        } else if (!strcmp(a, "--type")) {
            if ((o.ftype = quantize_ftype_from_name(v)) < 0) bad = 1;
        } else if (!strcmp(a, "--seed")) {
            o.seed = strtoull(v, NULL, 0);
        } else if (!strcmp(a, "-t")) {
            bad = parse_int(v, &o.n_threads);
        } else if (!strcmp(a, "--dim")) {
            bad = parse_int(v, &s->n_embd);
        } else if (!strcmp(a, "--layers")) {
            bad = parse_int(v, &s->n_layer);
        } else if (!strcmp(a, "--heads")) {
            bad = parse_int(v, &s->n_head);
        } else if (!strcmp(a, "--kv-heads")) {
            bad = parse_int(v, &s->n_head_kv);
        } else if (!strcmp(a, "--ff")) {
            bad = parse_int(v, &s->n_ff);
        } else if (!strcmp(a, "--vocab-size")) {
            bad = parse_int(v, &s->n_vocab);
        } else if (!strcmp(a, "--ctx")) {
            bad = parse_int(v, &s->n_ctx);
        } else {
            fprintf(stderr, "mkmodel: unknown option '%s' (try --help)\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "mkmodel: bad or missing value for %s\n", a);
            return 2;
        }
        i++;
    }
    if (!out || !o.vocab_path) {
        usage(stderr);
        return 2;
    }
    if (isatty(2)) {
        o.progress = on_progress;
    }
    char err[512] = "";
    int rc = model_gen_write(&o, out, err, sizeof err);
    if (rc) {
        fprintf(stderr, "\nmkmodel: %s\n", err[0] ? err : err_str(rc));
        return 1;
    }
    if (o.n_vocab_padded > o.n_vocab_file)
        fprintf(stderr, "mkmodel: vocab %s has %d tokens; padded to %d with unused [PAD<i>] tokens\n", o.vocab_path,
                o.n_vocab_file, o.n_vocab_padded);
    fprintf(stderr, "mkmodel: wrote %s (%s, %s, %.1f M parameters)\n", out, s->name, quantize_ftype_name(o.ftype),
            (double)model_gen_param_count(s, o.n_vocab_padded) / 1e6);
    return 0;
}
