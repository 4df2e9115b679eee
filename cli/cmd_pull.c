/* cmd_pull.c - `meshllm pull URL [--name NAME[:TAG]] [--sha256 HEX]`: a GGUF over HTTP(S)
 * into the model store (node/modelpull.h), with a progress bar on a terminal (one final
 * line otherwise). Ctrl-C stops it; the same command resumes. */
#include "cli/cli.h"

#include "core/err.h"
#include "node/modelpull.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_bool g_cancel;

static void on_sigint(int sig)
{
    (void)sig;
    atomic_store(&g_cancel, true);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: meshllm pull URL [--name NAME[:TAG]] [--sha256 HEX] [--quiet]\n\n"
               "Downloads a GGUF model into the model store ($MESHLLM_MODELS, else\n"
               "~/.meshllm/models). URL is https://HOST/PATH/FILE.gguf or the Hugging Face\n"
               "shorthand hf:OWNER/REPO/FILE.gguf. An interrupted pull (Ctrl-C, a cut)\n"
               "resumes when run again. The file's SHA-256 must match the digest the server\n"
               "publishes (Hugging Face does) or --sha256; then it must be a GGUF.\n"
               "Proxies come from http_proxy, https_proxy, ALL_PROXY and NO_PROXY.\n\n"
               "options:\n"
               "  --name NAME[:TAG]  the name in the store (default: the file name without .gguf)\n"
               "  --sha256 HEX       the file's expected SHA-256\n"
               "  -q, --quiet        no progress, only errors\n"
               "  -h, --help         this help\n\n"
               "example: meshllm pull hf:ggml-org/models/tinyllamas/stories260K.gguf\n");
}

struct pull_args {
    const char *url, *name, *sha256;
    bool quiet;
};

static int parse_args(int argc, char **argv, struct pull_args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(s, "--name") || !strcmp(s, "--sha256")) {
            if (i + 1 >= argc) {
                cli_fail("pull: %s needs a value (try --help)", s);
                return 2;
            }
            *(!strcmp(s, "--name") ? &a->name : &a->sha256) = argv[++i];
        } else if (!strcmp(s, "-q") || !strcmp(s, "--quiet")) {
            a->quiet = true;
        } else if (s[0] == '-') {
            cli_fail("pull: unknown option '%s' (try --help)", s);
            return 2;
        } else if (!a->url) {
            a->url = s;
        } else {
            cli_fail("pull: one URL at a time, please (try --help)");
            return 2;
        }
    }
    if (!a->url) {
        usage(stderr);
        return 2;
    }
    return 0;
}

static void human(double b, char *out, size_t cap)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int k = 0;
    while (b >= 1024 && k < 4) {
        b /= 1024;
        k++;
    }
    snprintf(out, cap, k ? "%.1f %s" : "%.0f %s", b, u[k]);
}

struct bar {
    bool tty, quiet, drawn, has_start;
    struct timespec t0;
    uint64_t start_bytes, last_done, total;
};

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void on_progress(void *arg, const struct modelpull_progress *p)
{
    struct bar *b = arg;
    if (p->phase == MODELPULL_CONNECTING) {
        clock_gettime(CLOCK_MONOTONIC, &b->t0);
        b->start_bytes = 0;
        return;
    }
    if (p->done > b->last_done) b->last_done = p->done;
    if (p->phase != MODELPULL_DOWNLOADING) {
        if (p->phase == MODELPULL_VERIFYING && b->tty && !b->quiet) {
            fprintf(stderr, "\r\033[Kverifying sha256 digest and content ID...");
            b->drawn = true;
        }
        return;
    }
    if (!b->has_start) b->start_bytes = p->resumed_from;
    b->has_start = true;
    b->total = p->total;
    if (!b->tty || b->quiet) return;
    double dt = since(&b->t0);
    double rate = dt > 0 ? (double)(p->done - b->start_bytes) / dt : 0;
    char d[32], t[32], r[32], eta[32] = "";
    human((double)p->done, d, sizeof d);
    human((double)p->total, t, sizeof t);
    human(rate, r, sizeof r);
    int pct = p->total ? (int)(100.0 * (double)p->done / (double)p->total) : 0;
    if (p->total && rate > 0)
        snprintf(eta, sizeof eta, " ETA %.0fs", (double)(p->total - p->done) / rate);
    char bar[31];
    int fill = p->total ? pct * 30 / 100 : 0;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    if (p->total)
        fprintf(stderr, "\r\033[K[%s] %3d%% %s/%s %s/s%s", bar, pct, d, t, r, eta);
    else
        fprintf(stderr, "\r\033[K%s %s/s", d, r);
    b->drawn = true;
}

int cmd_pull(int argc, char **argv)
{
    struct pull_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    struct bar b = {.tty = isatty(2) == 1, .quiet = a.quiet};
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct modelpull_opts o = {.url = a.url, .name = a.name, .sha256 = a.sha256, .retries = -1,
                               .cancel = &g_cancel, .progress = on_progress, .progress_arg = &b};
    struct modelstore_manifest m;
    char err[1200];
    const char *dir = modelstore_dir();
    rc = modelpull_run(dir, &o, &m, err, sizeof err);
    if (b.drawn) fputs("\r\033[K", stderr);
    if (rc) {
        cli_fail("%s", err);
        return 1;
    }
    if (!a.quiet) {
        double dt = since(&b.t0);
        char sz[32], r[32];
        human((double)m.size, sz, sizeof sz);
        human(dt > 0 ? (double)(b.last_done - b.start_bytes) / dt : 0, r, sizeof r);
        fprintf(stderr, "pulled %s:%s: %s in %.1f s (%s/s), sha256 %s, content ID %.16s...\n",
                m.name, m.tag, sz, dt, r, m.sha256, m.content_id);
    }
    printf("%s:%s\n", m.name, m.tag);
    return 0;
}
