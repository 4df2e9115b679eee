/* bench_repack.c - single-thread throughput of the packed Q4_0 / Q8_0 kernels
 * (engine/repack.h) against the row-layout kernels on the same weights
 * (quant_vec_dot_rows for one activation row, quant_gemm for several), for a working set
 * that fits in L2 (the kernel's compute rate) and one far larger than L3 (the memory
 * stream a decode step sees). Prints GB/s of weight bytes per activation pass and the
 * ratio. Times are thread CPU time, so a busy machine's time slicing does not count
 * (its memory contention still does). A benchmark, not a test: nothing is asserted.
 * Usage: bench_repack [-t seconds_per_cell] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "engine/quant.h"
#include "engine/repack.h"

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Uniform in [-1, 1) from core/rng (one generator, fixed seed: the same data every run). */
static struct rng g_rng = {{0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL, 0x94d049bb133111ebULL, 1}};
static float rand_uniform(void) { return (float)(2.0 * rng_uniform(&g_rng) - 1.0); }

enum { COLS = 2048, MAX_NC = 64 };

struct setup {
    enum qtype type;
    int rows, n_mat;          /* n_mat matrices of rows x COLS, visited in turn */
    size_t bx, by;
    uint8_t *x, *xp, *y;
    int32_t *ysum;
    float *s;
    const struct repack_kind *kind;
};

static double run(const struct setup *st, int nc, int packed, double cell_s)
{
    size_t mat_bytes = st->bx * (size_t)st->rows;
    size_t pack_bytes = st->kind->bytes(COLS, st->rows);
    const struct quant_traits *tr = quant_traits(st->type);
    int passes = 0;
    double t0 = cpu_s(), t;
    do {
        for (int m = 0; m < st->n_mat; m++) {
            if (packed)
                st->kind->gemm(COLS, st->s, (size_t)st->rows, st->xp + (size_t)m * pack_bytes, st->rows,
                               st->y, st->by, st->ysum, nc);
            else if (nc == 1)
                quant_vec_dot_rows(tr, COLS, st->s, st->x + (size_t)m * mat_bytes, st->bx, st->y, st->rows);
            else
                quant_gemm(tr, COLS, st->s, (size_t)st->rows, st->x + (size_t)m * mat_bytes, st->bx,
                           st->rows, st->y, st->by, nc);
        }
        passes += st->n_mat;
        t = cpu_s() - t0;
    } while (t < cell_s);
    return (double)mat_bytes * passes / t / 1e9;
}

int main(int argc, char **argv)
{
    double cell_s = 0.4;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "-t")) cell_s = atof(argv[i + 1]);
    quant_init();
    printf("kernel path: %s; %d columns; GB/s of weights per pass over nc activation rows "
           "(thread CPU time)\n\n", quant_isa_name(), COLS);
    printf("| type | working set | nc | rows kernel GB/s | packed GB/s | packed / rows |\n");
    printf("|---|---|---:|---:|---:|---:|\n");
    const enum qtype types[] = {QT_Q4_0, QT_Q8_0};
    for (size_t ti = 0; ti < 2; ti++) {
        struct setup st = {.type = types[ti]};
        st.kind = repack_kind_get(st.type);
        if (!st.kind) {
            printf("| %s | - | - | no packed kernel on this path | | |\n", quant_traits(st.type)->name);
            continue;
        }
        st.bx = quant_row_bytes(st.type, COLS);
        st.by = quant_row_bytes(QT_Q8_0, COLS);
        int big_rows = 2048, big_mat = (int)((256u << 20) / (st.bx * 2048)) + 1;
        st.x = malloc(st.bx * (size_t)big_rows * (size_t)big_mat);
        st.xp = malloc(st.kind->bytes(COLS, big_rows) * (size_t)big_mat);
        st.y = malloc(st.by * MAX_NC);
        st.ysum = malloc(sizeof(int32_t) * (COLS / 32) * MAX_NC);
        st.s = malloc(sizeof(float) * (size_t)big_rows * MAX_NC);
        float *f = malloc(sizeof(float) * COLS);
        if (!st.x || !st.xp || !st.y || !st.ysum || !st.s || !f) return 1;
        for (int r = 0; r < big_rows * big_mat; r++) {
            for (int i = 0; i < COLS; i++) f[i] = rand_uniform();
            quant_traits(st.type)->from_float(f, st.x + (size_t)r * st.bx, COLS);
        }
        for (int c = 0; c < MAX_NC; c++) {
            for (int i = 0; i < COLS; i++) f[i] = rand_uniform();
            quant_traits(QT_Q8_0)->from_float(f, st.y + (size_t)c * st.by, COLS);
            repack_q8_0_sums(COLS, st.y + (size_t)c * st.by, st.ysum + (size_t)c * (COLS / 32));
        }
        for (int m = 0; m < big_mat; m++)
            st.kind->pack(st.x + (size_t)m * st.bx * big_rows, st.bx, COLS, big_rows,
                          st.xp + (size_t)m * st.kind->bytes(COLS, big_rows));
        const struct { const char *name; int rows, n_mat; } sets[] = {
            {"L2 (256 rows)", 256, 1}, {"L3 (8 matrices, 9-18 MiB)", big_rows, 8},
            {"> L3 (256 MiB)", big_rows, big_mat}};
        const int ncs[] = {1, 8, 64};
        for (int si = 0; si < 3; si++) {
            st.rows = sets[si].rows;
            st.n_mat = sets[si].n_mat;
            for (int k = 0; k < 3; k++) {
                double a = run(&st, ncs[k], 0, cell_s), b = run(&st, ncs[k], 1, cell_s);
                printf("| %s | %s | %d | %.1f | %.1f | %.2f |\n", quant_traits(st.type)->name,
                       sets[si].name, ncs[k], a, b, b / a);
                fflush(stdout);
            }
        }
        free(st.x);
        free(st.xp);
        free(st.y);
        free(st.ysum);
        free(st.s);
        free(f);
    }
    return 0;
}
