/* bench_repack_k.c - Q4_K / Q6_K matrix kernels on 16-row repacked groups (repack.h)
 * against quant's kernels on the original GGUF rows: decode (nc = 1 activation row) and
 * a batch of nc = 8, with 1 and 2 threads, over a working set larger than the L3 (by
 * default 8 matrices of 5632 x 2048, streamed one after the other with a barrier after
 * each, as a forward pass does). Rows go to the kernels in chunks of 32, as the forward
 * pass hands them. Prints GB/s of weight bytes streamed (each layout's own bytes) and
 * weight rows per second (each row against all nc activation rows), the median of
 * several runs, and GB/s per thread-second of CPU time the threads actually got (on a
 * shared machine, the kernel's own speed). A benchmark, not a test: nothing is asserted.
 * Usage: bench_repack_k [-r rows] [-c cols] [-m matrices] [-t seconds_per_run] [-k runs]
 *                       [-n batch_columns (default 8)] [-H 1: huge pages]
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "core/rng.h"
#include "engine/quant.h"
#include "engine/repack.h"

enum { CHUNK = 32, MAX_THREADS = 2, N_DISTINCT = 16 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Uniform in [-1, 1) from core/rng (one generator, fixed seed: the same data every run). */
static struct rng g_rng = {{0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL, 0x94d049bb133111ebULL, 1}};
static float rand_uniform(void) { return (float)(2.0 * rng_uniform(&g_rng) - 1.0); }

/* One measurement: passes over all matrices by n_threads threads. */
struct run {
    int rows, cols, n_mat, nc, n_threads, passes;
    bool is_repacked;
    const struct quant_traits *tr;
    repack_gemm_fn kernel;
    unsigned char **w;      /* n_mat matrices, original rows or repacked groups */
    size_t row_bytes;       /* original layout */
    size_t group_bytes;     /* repacked layout: bytes of one 16-row group */
    const unsigned char *y; /* nc Q8_K rows */
    size_t by;
    float *out;             /* nc x rows */
    double cpu_s[MAX_THREADS]; /* each thread's CPU time in the last run_once */
    pthread_barrier_t bar;
};

struct worker {
    struct run *run;
    int ith;
    pthread_t tid;
};

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    struct run *r = wk->run;
    const double cpu0 = thread_cpu_s();
    /* static split on chunk boundaries */
    const int n_chunks = r->rows / CHUNK;
    const int c0 = n_chunks * wk->ith / r->n_threads, c1 = n_chunks * (wk->ith + 1) / r->n_threads;
    for (int p = 0; p < r->passes; p++)
        for (int m = 0; m < r->n_mat; m++) {
            for (int ch = c0; ch < c1; ch++) {
                const int r0 = ch * CHUNK;
                float *s = r->out + r0;
                if (r->is_repacked)
                    r->kernel(r->cols, s, (size_t)r->rows,
                              r->w[m] + (size_t)(r0 / REPACK_GROUP) * r->group_bytes, CHUNK, r->y,
                              r->by, NULL, r->nc);
                else if (r->nc == 1)
                    quant_vec_dot_rows(r->tr, r->cols, s, r->w[m] + (size_t)r0 * r->row_bytes,
                                       r->row_bytes, r->y, CHUNK);
                else
                    quant_gemm(r->tr, r->cols, s, (size_t)r->rows,
                               r->w[m] + (size_t)r0 * r->row_bytes,
                               r->row_bytes, CHUNK, r->y, r->by, r->nc);
            }
            pthread_barrier_wait(&r->bar);
        }
    r->cpu_s[wk->ith] = thread_cpu_s() - cpu0;
    return NULL;
}

/* Seconds for r->passes passes. */
static double run_once(struct run *r)
{
    struct worker wk[MAX_THREADS];
    pthread_barrier_init(&r->bar, NULL, (unsigned)r->n_threads);
    double t0 = now_s();
    for (int i = 1; i < r->n_threads; i++) {
        wk[i] = (struct worker){.run = r, .ith = i};
        pthread_create(&wk[i].tid, NULL, worker_main, &wk[i]);
    }
    wk[0] = (struct worker){.run = r, .ith = 0};
    worker_main(&wk[0]);
    for (int i = 1; i < r->n_threads; i++) pthread_join(wk[i].tid, NULL);
    double t = now_s() - t0;
    pthread_barrier_destroy(&r->bar);
    return t;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median wall seconds per pass over k runs of about run_s each; *cpu_per the median CPU
 * seconds per pass summed over the threads (time the kernels actually ran: on a shared
 * machine the wall time also counts time the threads waited for a core). */
static double measure(struct run *r, double run_s, int k, double *cpu_per)
{
    r->passes = 1;
    double t = run_once(r); /* warm-up and calibration */
    r->passes = (int)(run_s / t) + 1;
    double per[16], cpu[16];
    if (k > 16) k = 16;
    for (int i = 0; i < k; i++) {
        per[i] = run_once(r) / r->passes;
        cpu[i] = 0;
        for (int j = 0; j < r->n_threads; j++) cpu[i] += r->cpu_s[j] / r->passes;
    }
    qsort(per, (size_t)k, sizeof per[0], cmp_double);
    qsort(cpu, (size_t)k, sizeof cpu[0], cmp_double);
    *cpu_per = cpu[k / 2];
    return per[k / 2];
}

/* One weight type: its packing and the repacked kernel of the selected path. */
struct kind {
    int type;
    size_t (*bytes)(int64_t n, int64_t nrows);
    int (*pack)(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst);
    repack_gemm_fn kernel;
};

struct opts {
    int rows, cols, n_mat, runs, nc_big;
    bool huge; /* -H 1: transparent huge pages for the matrices */
    double run_s;
};

/* len bytes, 2 MiB aligned; with huge, advised to use transparent huge pages (as an
 * anonymous repacked copy can be; mmapped file rows cannot). */
static void *alloc_weights(size_t len, bool huge)
{
    const size_t align = (size_t)2 << 20;
    void *p = aligned_alloc(align, (len + align - 1) & ~(align - 1));
    if (p && huge) madvise(p, (len + align - 1) & ~(align - 1), MADV_HUGEPAGE);
    return p;
}

/* n_mat matrices of one kind, original and repacked (64-byte aligned, as the forward
 * pass's anonymous mappings are), filled by tiling N_DISTINCT quantized rows of src. */
static int make_matrices(const struct opts *o, const struct kind *k, const float *src,
                         unsigned char **orig, unsigned char **rep)
{
    const struct quant_traits *tr = quant_traits(k->type);
    const size_t row_bytes = quant_row_bytes(k->type, o->cols);
    const size_t rep_bytes = k->bytes(o->cols, o->rows);
    for (int m = 0; m < o->n_mat; m++) {
        orig[m] = alloc_weights(row_bytes * (size_t)o->rows, o->huge);
        rep[m] = alloc_weights(rep_bytes, o->huge);
        if (!orig[m] || !rep[m]) return -1;
        for (int r = 0; r < N_DISTINCT; r++)
            tr->from_float(src + (size_t)r * o->cols, orig[m] + (size_t)r * row_bytes, o->cols);
        for (int r = N_DISTINCT; r < o->rows; r++)
            memcpy(orig[m] + (size_t)r * row_bytes,
                   orig[m] + (size_t)(r % N_DISTINCT) * row_bytes, row_bytes);
    }
    double pack_s = now_s();
    for (int m = 0; m < o->n_mat; m++)
        if (k->pack(orig[m], row_bytes, o->cols, o->rows, rep[m]) != 0) return -1;
    pack_s = now_s() - pack_s;
    const double mb = (double)row_bytes * o->rows * o->n_mat / 1e6;
    printf("%-5s repack: %.1f ms for %.1f MB of rows (%.2f GB/s, 1 thread)\n", tr->name,
           pack_s * 1e3, mb, mb / 1e3 / pack_s);
    return 0;
}

/* The table rows of one kind: both layouts, nc = 1 and nc_big, 1 and 2 threads. */
static int bench_kind(const struct opts *o, const struct kind *k, const float *src,
                      const unsigned char *y, float *out)
{
    const struct quant_traits *tr = quant_traits(k->type);
    const size_t row_bytes = quant_row_bytes(k->type, o->cols);
    const size_t rep_bytes = k->bytes(o->cols, o->rows);
    unsigned char **orig = calloc((size_t)o->n_mat, sizeof *orig);
    unsigned char **rep = calloc((size_t)o->n_mat, sizeof *rep);
    int rc = -1;
    if (!orig || !rep || rep_bytes == 0 || make_matrices(o, k, src, orig, rep) < 0) goto out;
    double sec1[2][MAX_THREADS + 1] = {{0}}, cpu1[2][MAX_THREADS + 1] = {{0}};
    for (int layout = 0; layout < 2; layout++)
        for (int nc = 1; nc <= o->nc_big; nc += o->nc_big - 1)
            for (int nt = 1; nt <= MAX_THREADS; nt++) {
                struct run r = {.rows = o->rows, .cols = o->cols, .n_mat = o->n_mat, .nc = nc,
                                .n_threads = nt, .is_repacked = layout == 1, .tr = tr,
                                .kernel = k->kernel, .w = layout ? rep : orig,
                                .row_bytes = row_bytes,
                                .group_bytes = rep_bytes / (size_t)(o->rows / REPACK_GROUP),
                                .y = y, .by = quant_row_bytes(QT_Q8_K, o->cols), .out = out};
                double cpu;
                const double per = measure(&r, o->run_s, o->runs, &cpu);
                const double mb =
                    (double)(layout ? rep_bytes : row_bytes * (size_t)o->rows) * o->n_mat;
                const char *name = layout    ? "repack 16-row"
                                   : nc == 1 ? "quant_vec_dot_rows"
                                             : "quant_gemm";
                printf("%-5s %-22s %3d %3d %9.1f %9.2f %9.2f %11.2f", tr->name, name, nc, nt,
                       mb / 1e6, mb / per / 1e9, (double)o->rows * o->n_mat / per / 1e6,
                       mb / cpu / 1e9);
                if (nc == 1) {
                    sec1[layout][nt] = per;
                    cpu1[layout][nt] = cpu;
                } else
                    printf("  nc=1 x %.2f (cpu x %.2f)", per / sec1[layout][nt],
                           cpu / cpu1[layout][nt]);
                printf("\n");
                fflush(stdout);
            }
    rc = 0;
out:
    for (int m = 0; orig && rep && m < o->n_mat; m++) {
        free(orig[m]);
        free(rep[m]);
    }
    free(orig);
    free(rep);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o = {.rows = 5632, .cols = 2048, .n_mat = 8, .runs = 5, .nc_big = 8, .run_s = 0.3};
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-r")) o.rows = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-c")) o.cols = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-m")) o.n_mat = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) o.run_s = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-k")) o.runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) o.nc_big = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-H")) o.huge = atoi(argv[i + 1]) != 0;
    }
    if (o.rows <= 0 || o.rows % CHUNK || o.cols <= 0 || o.cols % 256 || o.n_mat <= 0 ||
        o.runs <= 0 || o.nc_big < 2) {
        fprintf(stderr, "bench_repack_k: rows must be a positive multiple of %d, cols of 256, "
                        "-n at least 2\n",
                CHUNK);
        return 2;
    }
    quant_init();
    /* the repacked kernels of the selected path (MESHLLM_ISA forces one) */
    const char *isa = quant_isa_name();
    struct kind kinds[] = {
        {QT_Q4_K, repack_q4_k_bytes, repack_q4_k, repack_ref_gemm_q4_k_q8_k},
        {QT_Q6_K, repack_q6_k_bytes, repack_q6_k, repack_ref_gemm_q6_k_q8_k},
    };
#if defined(__x86_64__)
    if (!strcmp(isa, "avx512")) {
        kinds[0].kernel = repack_avx512_gemm_q4_k_q8_k;
        kinds[1].kernel = repack_avx512_gemm_q6_k_q8_k;
    } else if (!strcmp(isa, "avx2")) {
        kinds[0].kernel = repack_avx2_gemm_q4_k_q8_k;
        kinds[1].kernel = repack_avx2_gemm_q6_k_q8_k;
    }
#endif
    const size_t by = quant_row_bytes(QT_Q8_K, o.cols);
    float *src = malloc((size_t)o.cols * N_DISTINCT * sizeof(float));
    float *act = malloc((size_t)o.cols * sizeof(float));
    float *out = malloc((size_t)o.rows * (size_t)o.nc_big * sizeof(float));
    unsigned char *y = malloc(by * (size_t)o.nc_big);
    if (!src || !act || !out || !y) return 1;
    for (size_t i = 0; i < (size_t)o.cols * N_DISTINCT; i++) src[i] = 0.1f * rand_uniform();
    for (int c = 0; c < o.nc_big; c++) {
        for (int i = 0; i < o.cols; i++) act[i] = rand_uniform();
        quant_traits(QT_Q8_K)->from_float(act, y + (size_t)c * by, o.cols);
    }

    printf("%d matrices of %d x %d (%s pages), kernel path %s; median of %d runs; GB/s of "
           "weight bytes streamed,\nMrow/s = weight rows per second (each against all nc activation rows),\n"
           "GB/s/thread = per second of CPU time the threads got\n\n",
           o.n_mat, o.rows, o.cols, o.huge ? "huge" : "4 KiB", isa, o.runs);
    printf("%-5s %-22s %3s %3s %9s %9s %9s %11s\n", "type", "kernel", "nc", "thr", "MB", "GB/s",
           "Mrow/s", "GB/s/thread");
    int rc = 0;
    for (size_t ki = 0; ki < sizeof kinds / sizeof kinds[0] && rc == 0; ki++)
        rc = bench_kind(&o, &kinds[ki], src, y, out);
    free(src);
    free(act);
    free(out);
    free(y);
    return rc == 0 ? 0 : 1;
}
