/* bench_sampler.c - speed sanity of the sampling chain on a large vocabulary.
 *
 * Usage: bench_sampler [N_VOCAB [N_ITERS]]   (defaults: 151936 = Qwen2's vocab, 200)
 * Prints the mean time per sampled token for a few parameter sets. Logits are a fixed
 * pseudo-random spread resembling a model's (a few strong candidates over a wide tail).
 * Not a test: nothing is asserted.
 */
#include "engine/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t next_u64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void run(const char *name, const struct sampler_params *p, const float *logits,
                int32_t n_vocab, int iters)
{
    struct sampler *s;
    if (sampler_new(p, n_vocab, &s) != 0) {
        fprintf(stderr, "bench_sampler: sampler_new failed\n");
        exit(1);
    }
    for (int i = 0; i < 64; i++) sampler_accept(s, (int32_t)(i * 997 % n_vocab));
    int32_t sink = 0;
    double t0 = now_ms();
    for (int i = 0; i < iters; i++) sink ^= sampler_sample(s, logits);
    double dt = now_ms() - t0;
    printf("%-34s %8.3f ms/token  (last id %d)\n", name, dt / iters, (int)sink);
    sampler_free(s);
}

int main(int argc, char **argv)
{
    int32_t n_vocab = argc > 1 ? (int32_t)atol(argv[1]) : 151936;
    int iters = argc > 2 ? atoi(argv[2]) : 200;
    if (n_vocab <= 0 || iters <= 0) {
        fprintf(stderr, "usage: bench_sampler [N_VOCAB [N_ITERS]]\n");
        return 2;
    }
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    if (!logits) return 1;
    uint64_t rs = 1;
    for (int32_t i = 0; i < n_vocab; i++) {
        double u = (double)(next_u64(&rs) >> 11) * 0x1.0p-53;
        logits[i] = (float)(-8.0 + 6.0 * u);
    }
    for (int i = 0; i < 20; i++) logits[next_u64(&rs) % (uint64_t)n_vocab] = 8.0f - (float)i;

    printf("vocab %d, %d iterations\n", (int)n_vocab, iters);
    struct sampler_params p;
    sampler_params_default(&p);
    p.seed = 1;
    run("defaults (k40 p.95 minp.05 t.8)", &p, logits, n_vocab, iters);
    p.repeat_penalty = 1.1f;
    p.presence_penalty = 0.5f;
    run("defaults + penalties", &p, logits, n_vocab, iters);
    sampler_params_default(&p);
    p.seed = 1;
    p.temp = 0.0f;
    run("greedy", &p, logits, n_vocab, iters);
    p.temp = 1.0f;
    p.top_k = 0;
    run("top-p 0.95 only (no top-k)", &p, logits, n_vocab, iters);
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    run("plain softmax (no filters)", &p, logits, n_vocab, iters);
    p.top_p = 0.999f;
    run("top-p 0.999 (wide nucleus)", &p, logits, n_vocab, iters);
    free(logits);
    return 0;
}
