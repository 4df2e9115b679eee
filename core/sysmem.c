/* sysmem.c - free memory and memory read speed (sysmem.h). Linux reads /proc/meminfo;
 * elsewhere sysconf's available pages. The speed is the best of three sums over a buffer
 * larger than the caches.
 */
#include "core/sysmem.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* "123", "64K", "512M", "8G" (powers of 1024) -> bytes; false when it is not one. */
static bool parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s) return false;
    uint64_t mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1ull << 10;
    else if (*end == 'M' || *end == 'm') mul = 1ull << 20;
    else if (*end == 'G' || *end == 'g') mul = 1ull << 30;
    if (mul > 1) end++;
    if (*end) return false;
    *out = (uint64_t)v * mul;
    return true;
}

uint64_t sysmem_free_bytes(void)
{
    const char *env = getenv("MESHLLM_MEM_FREE_BYTES");
    uint64_t v;
    if (env && *env && parse_bytes(env, &v)) return v;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                fclose(f);
                return (uint64_t)kb * 1024;
            }
        fclose(f);
    }
    long pages = sysconf(_SC_AVPHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pthread_once_t speed_once = PTHREAD_ONCE_INIT;
static double speed_gbps;

static void speed_measure(void)
{
    const char *env = getenv("MESHLLM_SPEED");
    if (env && *env) {
        char *end;
        double v = strtod(env, &end);
        if (end != env && !*end && v > 0) {
            speed_gbps = v;
            return;
        }
    }
    enum { N = (32u << 20) / sizeof(uint64_t) };
    uint64_t *buf = malloc(N * sizeof *buf);
    if (!buf) {
        speed_gbps = 1;
        return;
    }
    for (size_t i = 0; i < N; i++) buf[i] = i; /* touch every page first */
    double best = 1e9;
    volatile uint64_t sink = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i < N; i += 4) {
            s0 += buf[i];
            s1 += buf[i + 1];
            s2 += buf[i + 2];
            s3 += buf[i + 3];
        }
        sink += s0 + s1 + s2 + s3;
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    (void)sink;
    free(buf);
    speed_gbps = best > 0 ? (double)(N * sizeof(uint64_t)) / best / 1e9 : 1;
}

double sysmem_speed_gbps(void)
{
    pthread_once(&speed_once, speed_measure);
    return speed_gbps;
}
