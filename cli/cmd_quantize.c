/* cmd_quantize.c - `meshllm quantize IN.gguf OUT.gguf TYPE [-t N] [--dry-run]`.
 *
 * Converts a model file with engine/quantize (llama.cpp's per-tensor rules for the
 * type), showing a progress bar on stderr: tensor i/n, bytes written, percent.
 * --dry-run prints the plan (tensor, input type, output type) without writing.
 */
#include "cli/cli.h"

#include "core/err.h"
#include "engine/gguf.h"
#include "engine/quant.h"
#include "engine/quantize.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: meshllm quantize IN.gguf OUT.gguf TYPE [-t THREADS] [--dry-run]\n\n"
            "Writes IN converted to TYPE, choosing each tensor's type as llama.cpp's\n"
            "llama-quantize does (e.g. Q4_K_M keeps output.weight in Q6_K and gives some\n"
            "attn_v / ffn_down layers Q6_K; rows that are not whole blocks fall back).\n"
            "The input must hold F32, F16 or BF16 weights.\n\n"
            "TYPE: %s\n\n"
            "options:\n"
            "  -t, --threads N   worker threads (default: all cores)\n"
            "  --dry-run         print the type of each tensor and exit\n"
            "  -h, --help        this help\n",
            quantize_ftype_list());
}

struct bar {
    bool tty;
    int last_permille;
    int64_t last_tensor;
};

static void human(uint64_t b, char *out, size_t cap)
{
    if (b >= (1ull << 30)) snprintf(out, cap, "%.2f GiB", (double)b / (1ull << 30));
    else if (b >= (1ull << 20)) snprintf(out, cap, "%.1f MiB", (double)b / (1ull << 20));
    else snprintf(out, cap, "%.1f KiB", (double)b / 1024.0);
}

static void on_progress(void *user, const struct quantize_progress *p)
{
    struct bar *b = user;
    int permille = p->bytes_total ? (int)(p->bytes_done * 1000 / p->bytes_total) : 1000;
    if (permille == b->last_permille && p->i_tensor == b->last_tensor) return;
    if (!b->tty && p->i_tensor == b->last_tensor && p->bytes_done != p->bytes_total) return;
    b->last_permille = permille;
    b->last_tensor = p->i_tensor;
    char done[32], total[32];
    human(p->bytes_done, done, sizeof done);
    human(p->bytes_total, total, sizeof total);
    int width = 30, fill = permille * width / 1000;
    char barbuf[64];
    for (int i = 0; i < width; i++) barbuf[i] = i < fill ? '#' : '.';
    barbuf[width] = 0;
    fprintf(stderr, "%s[%s] %5.1f%% tensor %lld/%lld %s / %s  %-28.28s %s -> %s%s", b->tty ? "\r" : "", barbuf,
            permille / 10.0, (long long)p->i_tensor + 1, (long long)p->n_tensors, done, total, p->name,
            quant_traits(p->type_in)->name, quant_traits(p->type_out)->name, b->tty ? "" : "\n");
    fflush(stderr);
}

static int dry_run(const char *in, int ftype)
{
    char err[512];
    struct gguf *g = NULL;
    struct quantize_plan_entry *plan = NULL;
    int64_t n = 0;
    int rc = gguf_open(in, &g, err, sizeof err);
    if (!rc) rc = quantize_plan(g, ftype, &plan, &n, err, sizeof err);
    if (rc) {
        cli_fail("quantize: %s", err);
        gguf_close(g);
        return 1;
    }
    for (int64_t i = 0; i < n; i++)
        printf("%-40s %-6s -> %s\n", plan[i].name, quant_traits(plan[i].type_in)->name,
               quant_traits(plan[i].type_out)->name);
    quantize_plan_free(plan, n);
    gguf_close(g);
    return 0;
}

int cmd_quantize(int argc, char **argv)
{
    const char *pos[3];
    int n_pos = 0, n_threads = 0;
    bool is_dry = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            char *end;
            if (i + 1 >= argc || (n_threads = (int)strtol(argv[i + 1], &end, 10)) <= 0 || *end) {
                cli_fail("quantize: %s needs a positive number", a);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--dry-run")) {
            is_dry = true;
        } else if (a[0] == '-' && a[1]) {
            cli_fail("quantize: unknown option '%s' (try --help)", a);
            return 2;
        } else if (n_pos < 3) {
            pos[n_pos++] = a;
        } else {
            cli_fail("quantize: too many arguments (try --help)");
            return 2;
        }
    }
    if (n_pos != 3 && !(is_dry && n_pos == 2)) {
        usage(stderr);
        return 2;
    }
    const char *type_name = pos[n_pos - 1];
    int ftype = quantize_ftype_from_name(type_name);
    if (ftype < 0) {
        cli_fail("quantize: unknown type '%s' (known: %s)", type_name, quantize_ftype_list());
        return 2;
    }
    quant_init();
    if (is_dry) return dry_run(pos[0], ftype);
    struct bar b = {.tty = isatty(2), .last_permille = -1, .last_tensor = -1};
    char err[512] = "";
    int rc = quantize_model(pos[0], pos[1], ftype, n_threads, on_progress, &b, err, sizeof err);
    if (b.tty) fputc('\n', stderr);
    if (rc) {
        cli_fail("quantize: %s", err[0] ? err : err_str(rc));
        return 1;
    }
    fprintf(stderr, "wrote %s (%s)\n", pos[1], quantize_ftype_name(ftype));
    return 0;
}
