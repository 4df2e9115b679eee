/* bandwidth.c - the machine's memory read bandwidth, as decode sees it.
 *
 * Usage: bandwidth [MiB] [reps]   (default 512 MiB buffer, 7 repetitions)
 *
 * Decode reads every weight once per token, so tokens/s <= read bandwidth / bytes per
 * token. This measures that bound: 1 and 2 threads each sum a buffer far larger than the
 * caches (split in equal halves for 2 threads), and the best and median GB/s (1e9 bytes/s)
 * of the repetitions are printed. The sum uses plain 64-bit loads the compiler vectorises;
 * it is a read-only stream like a weight pass, not a copy. Output lines are
 * "bandwidth threads=N best=X median=Y GB/s" (bench/compare.sh parses them).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bw_part {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
    pthread_barrier_t *start;
};

static double bw_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sums n words with 8 independent accumulators (so loads, not adds, limit it). */
static uint64_t bw_sum(const uint64_t *p, size_t n)
{
    uint64_t a[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += p[i + k];
    for (; i < n; i++) a[0] += p[i];
    uint64_t s = 0;
    for (int k = 0; k < 8; k++) s += a[k];
    return s;
}

static void *bw_thread(void *arg)
{
    struct bw_part *w = arg;
    pthread_barrier_wait(w->start);
    w->sum = bw_sum(w->p, w->n);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One timed pass over buf with nth threads; returns GB/s or < 0 on error. */
static double bw_pass(const uint64_t *buf, size_t n, int nth, uint64_t *sink)
{
    struct bw_part parts[2];
    pthread_t th[2];
    pthread_barrier_t start;
    if (pthread_barrier_init(&start, NULL, (unsigned)nth + 1) != 0) return -1;
    for (int i = 0; i < nth; i++) {
        size_t a = n * (size_t)i / (size_t)nth, b = n * (size_t)(i + 1) / (size_t)nth;
        parts[i] = (struct bw_part){.p = buf + a, .n = b - a, .start = &start};
        if (pthread_create(&th[i], NULL, bw_thread, &parts[i]) != 0) return -1;
    }
    pthread_barrier_wait(&start);
    double t0 = bw_now();
    for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
    double dt = bw_now() - t0;
    pthread_barrier_destroy(&start);
    for (int i = 0; i < nth; i++) *sink += parts[i].sum;
    return (double)(n * sizeof(uint64_t)) / dt / 1e9;
}

int main(int argc, char **argv)
{
    long mib = argc > 1 ? strtol(argv[1], NULL, 10) : 512;
    long reps = argc > 2 ? strtol(argv[2], NULL, 10) : 7;
    if (mib < 16 || mib > 16384 || reps < 1 || reps > 100) {
        fprintf(stderr, "usage: bandwidth [MiB 16..16384] [reps 1..100]\n");
        return 2;
    }
    size_t n = (size_t)mib * 1024 * 1024 / sizeof(uint64_t);
    uint64_t *buf = malloc(n * sizeof(uint64_t));
    double *gbs = malloc((size_t)reps * sizeof(double));
    if (!buf || !gbs) {
        fprintf(stderr, "bandwidth: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++) buf[i] = i * 0x9E3779B97F4A7C15ull; /* fault pages in */
    uint64_t sink = 0;
    for (int nth = 1; nth <= 2; nth++) {
        if (bw_pass(buf, n, nth, &sink) < 0) { /* warm-up */
            fprintf(stderr, "bandwidth: thread start failed\n");
            return 1;
        }
        for (long r = 0; r < reps; r++) gbs[r] = bw_pass(buf, n, nth, &sink);
        qsort(gbs, (size_t)reps, sizeof(double), cmp_double);
        printf("bandwidth threads=%d best=%.1f median=%.1f GB/s\n", nth, gbs[reps - 1],
               gbs[reps / 2]);
    }
    fprintf(stderr, "(checksum %llx)\n", (unsigned long long)sink);
    free(buf);
    free(gbs);
    return 0;
}
