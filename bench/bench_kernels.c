/* bench_kernels.c - single-thread throughput of every vec_dot kernel on every kernel
 * path this CPU has: a rows x cols weight matrix (default 4096 x 4096) times one
 * activation row, as one decode step of one projection does. Prints GB/s of weight
 * bytes streamed and the time per full matrix. A benchmark, not a test: nothing is
 * asserted. Usage: bench_kernels [-r rows] [-c cols] [-t seconds_per_cell]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "engine/quant.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Uniform in [-1, 1) from core/rng (one generator, fixed seed: the same data every run). */
static struct rng g_rng = {{0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL, 0x94d049bb133111ebULL, 1}};
static float rand_uniform(void) { return (float)(2.0 * rng_uniform(&g_rng) - 1.0); }

int main(int argc, char **argv)
{
    int rows = 4096, cols = 4096;
    double cell_s = 0.5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-r")) rows = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-c")) cols = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) cell_s = atof(argv[i + 1]);
    }
    if (rows <= 0 || cols <= 0 || cols % 256 != 0) {
        fprintf(stderr, "bench_kernels: cols must be a positive multiple of 256\n");
        return 2;
    }
    quant_init();
    const int types[] = {QT_F32, QT_F16, QT_BF16, QT_Q8_0, QT_Q5_0, QT_Q4_0, QT_Q6_K, QT_Q5_K, QT_Q4_K};
    const char *isas[] = {"scalar", "avx2", "avx512", "neon"};
    enum { N_DISTINCT = 16 }; /* distinct quantized rows, tiled over the matrix */
    float *src = malloc((size_t)cols * N_DISTINCT * sizeof(float));
    float *act = malloc((size_t)cols * sizeof(float));
    float *out = malloc((size_t)rows * sizeof(float));
    if (!src || !act || !out) return 1;
    for (size_t i = 0; i < (size_t)cols * N_DISTINCT; i++) src[i] = 0.1f * rand_uniform();
    for (int i = 0; i < cols; i++) act[i] = rand_uniform();

    printf("vec_dot, %d x %d weights x 1 activation row, 1 thread; GB/s of weight bytes "
           "(ms per matrix),\nbest of repeated runs\n\n", rows, cols);
    printf("%-6s %8s", "type", "MB");
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++)
        if (quant_isa_supported(isas[k])) printf(" %15s %15s", isas[k], "+rows");
    printf("\n");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const int t = types[ti];
        const struct quant_traits *ref = quant_traits_ref(t);
        const size_t row_bytes = quant_row_bytes(t, cols);
        const size_t act_bytes = quant_row_bytes(ref->vec_dot_type, cols);
        unsigned char *w = malloc(row_bytes * (size_t)rows);
        unsigned char *qa = malloc(act_bytes);
        if (!w || !qa) return 1;
        for (int r = 0; r < N_DISTINCT && r < rows; r++)
            ref->from_float(src + (size_t)r * cols, w + (size_t)r * row_bytes, cols);
        for (int r = N_DISTINCT; r < rows; r++)
            memcpy(w + (size_t)r * row_bytes, w + (size_t)(r % N_DISTINCT) * row_bytes, row_bytes);
        quant_traits_ref(ref->vec_dot_type)->from_float(act, qa, cols);
        printf("%-6s %8.1f", ref->name, (double)(row_bytes * (size_t)rows) / 1e6);
        for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
            const struct quant_traits *tr = quant_traits_isa(isas[k], t);
            if (!tr) continue;
            /* per-row vec_dot, then quant_vec_dot_rows on blocks of 16 rows (what a
             * matmul hands it); warm up once, best of the repetitions: the machine is
             * shared, the minimum is the kernel's own speed */
            for (int mode = 0; mode < 2; mode++) {
                double per = 1e30, start = now_s(), t1;
                int warm = 1;
                do {
                    double t0 = now_s();
                    if (mode == 0)
                        for (int r = 0; r < rows; r++)
                            tr->vec_dot(cols, &out[r], w + (size_t)r * row_bytes, qa);
                    else
                        for (int r = 0; r < rows; r += 16)
                            quant_vec_dot_rows(tr, cols, &out[r], w + (size_t)r * row_bytes, row_bytes,
                                               qa, rows - r < 16 ? rows - r : 16);
                    t1 = now_s();
                    if (!warm && t1 - t0 < per) per = t1 - t0;
                    warm = 0;
                } while (t1 - start < cell_s || per == 1e30);
                char cell[32];
                snprintf(cell, sizeof cell, "%.1f (%.2f)",
                         (double)(row_bytes * (size_t)rows) / per / 1e9, per * 1e3);
                printf(" %15s", cell);
            }
        }
        printf("\n");
        fflush(stdout);
        free(w);
        free(qa);
    }

    /* Prompt batches: nc activation rows at once. vec_dot per (row, column) versus the
     * tile product quant_gemm; GMAC/s (multiply-adds per second). */
    enum { NC = 64 };
    const int grows = rows < 1024 ? rows : 1024;
    float *acts = malloc((size_t)cols * NC * sizeof(float));
    float *gout = malloc((size_t)grows * NC * sizeof(float));
    if (!acts || !gout) return 1;
    for (size_t i = 0; i < (size_t)cols * NC; i++) acts[i] = rand_uniform();
    printf("\ntile product, %d x %d weights x %d activation rows, 1 thread; GMAC/s "
           "(vec_dot per row and column / quant_gemm)\n\n", grows, cols, NC);
    printf("%-6s", "type");
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++)
        if (quant_isa_supported(isas[k])) printf(" %15s %15s", isas[k], "+gemm");
    printf("\n");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const int t = types[ti];
        const struct quant_traits *ref = quant_traits_ref(t);
        const size_t row_bytes = quant_row_bytes(t, cols);
        const size_t act_bytes = quant_row_bytes(ref->vec_dot_type, cols);
        unsigned char *w = malloc(row_bytes * (size_t)grows), *qa = malloc(act_bytes * NC);
        if (!w || !qa) return 1;
        for (int r = 0; r < grows; r++)
            ref->from_float(src + (size_t)(r % N_DISTINCT) * cols, w + (size_t)r * row_bytes, cols);
        for (int c = 0; c < NC; c++)
            quant_traits_ref(ref->vec_dot_type)->from_float(acts + (size_t)c * cols, qa + c * act_bytes, cols);
        printf("%-6s", ref->name);
        for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
            const struct quant_traits *tr = quant_traits_isa(isas[k], t);
            if (!tr) continue;
            for (int mode = 0; mode < 2; mode++) {
                double per = 1e30, start = now_s(), t1;
                int warm = 1;
                do {
                    double t0 = now_s();
                    if (mode == 0) {
                        for (int r = 0; r < grows; r++)
                            for (int c = 0; c < NC; c++)
                                tr->vec_dot(cols, &gout[(size_t)c * grows + r], w + (size_t)r * row_bytes,
                                            qa + c * act_bytes);
                    } else {
                        for (int r = 0; r < grows; r += 16)
                            quant_gemm(tr, cols, gout + r, (size_t)grows, w + (size_t)r * row_bytes,
                                       row_bytes, grows - r < 16 ? grows - r : 16, qa, act_bytes, NC);
                    }
                    t1 = now_s();
                    if (!warm && t1 - t0 < per) per = t1 - t0;
                    warm = 0;
                } while (t1 - start < cell_s || per == 1e30);
                char cell[32];
                snprintf(cell, sizeof cell, "%.2f", (double)grows * cols * NC / per / 1e9);
                printf(" %15s", cell);
            }
        }
        printf("\n");
        fflush(stdout);
        free(w);
        free(qa);
    }
    free(acts);
    free(gout);
    free(src);
    free(act);
    free(out);
    return 0;
}
