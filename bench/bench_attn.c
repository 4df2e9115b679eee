/* bench_attn.c - single-thread time of one attention call (engine/attn.h) on every kernel
 * path this CPU has, for a few (head_dim, GQA group, positions) shapes with an F16 cache,
 * next to the loop the forward pass ran before attn.h ("per-position": quant's F16
 * vec_dot once per cached position and head, libm expf, a scalar V loop). The best of
 * several timed rounds is printed (robust to a noisy shared machine). A benchmark, not a
 * test: nothing is asserted. Usage: bench_attn [-t seconds_per_cell]
 */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "engine/attn.h"
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

/* The pre-attn.h loop of model_forward.c's attn_worker, head by head. */
static void per_position(const struct attn_group_args *a)
{
    const int hd = a->head_dim;
    quant_vec_dot_fn dot_f16 = quant_traits(QT_F16)->vec_dot;
    float *scores = a->scratch;
    uint16_t *q16 = (uint16_t *)(scores + a->n_kv);
    float *vrow = (float *)(q16 + hd + 8);
    const uint16_t *kc = a->k, *vc = a->v;
    for (int i = 0; i < a->n_q; i++) {
        float max = -FLT_MAX;
        quant_f32_to_f16_row(a->q + (size_t)i * hd, q16, hd);
        for (int p = 0; p < a->n_kv; p++) {
            float s;
            dot_f16(hd, &s, kc + (size_t)p * a->kv_stride, q16);
            scores[p] = s * a->scale;
            if (scores[p] > max) max = scores[p];
        }
        double sum = 0.0;
        for (int p = 0; p < a->n_kv; p++) {
            scores[p] = expf(scores[p] - max);
            sum += scores[p];
        }
        float inv = (float)(1.0 / sum);
        for (int p = 0; p < a->n_kv; p++) scores[p] *= inv;
        float *o = a->out + (size_t)i * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int p = 0; p < a->n_kv; p++) {
            float pr = quant_f16_to_f32(quant_f32_to_f16(scores[p]));
            quant_f16_to_f32_row(vc + (size_t)p * a->kv_stride, vrow, hd);
            for (int d = 0; d < hd; d++) o[d] += pr * vrow[d];
        }
    }
}

/* Best time of one call of fn over rounds of about cell_s / 5 seconds each. */
static double best_call_us(void (*fn)(const struct attn_group_args *), const struct attn_group_args *a,
                           double cell_s)
{
    double best = 1e30;
    for (int round = 0; round < 5; round++) {
        int iters = 0;
        double t0 = now_s(), t;
        do {
            fn(a);
            iters++;
            t = now_s() - t0;
        } while (t < cell_s / 5);
        if (t / iters < best) best = t / iters;
    }
    return best * 1e6;
}

int main(int argc, char **argv)
{
    double cell_s = 0.5;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "-t")) cell_s = atof(argv[i + 1]);
    static const int shapes[][4] = {/* head_dim, n_q, n_head_kv, n_kv */
                                    {64, 8, 4, 128},  {64, 8, 4, 2048}, {128, 4, 8, 1024},
                                    {128, 1, 32, 1024}, {8, 2, 4, 2048}};
    const char *paths[3] = {"scalar", "avx2", "avx512"};
    void (*fns[3])(const struct attn_group_args *) = {attn_ref_group, attn_avx2_group, attn_avx512_group};
    printf("| head_dim | group | positions | per-position | scalar | avx2 | avx512 | (us per call, best of 5)\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int hd = shapes[s][0], n_q = shapes[s][1], n_hkv = shapes[s][2], n_kv = shapes[s][3];
        size_t stride = (size_t)n_hkv * (size_t)hd;
        uint16_t *k = malloc((size_t)n_kv * stride * 2), *v = malloc((size_t)n_kv * stride * 2);
        float *q = malloc((size_t)n_q * (size_t)hd * sizeof(float));
        float *out = malloc((size_t)n_q * (size_t)hd * sizeof(float));
        size_t sb = (attn_scratch_bytes(hd, n_q, n_kv) + 63) / 64 * 64 + 64 * (size_t)hd;
        void *scratch = aligned_alloc(64, sb);
        if (!k || !v || !q || !out || !scratch) return 1;
        for (size_t i = 0; i < (size_t)n_kv * stride; i++) {
            k[i] = quant_f32_to_f16(rand_uniform());
            v[i] = quant_f32_to_f16(rand_uniform());
        }
        for (int i = 0; i < n_q * hd; i++) q[i] = rand_uniform();
        struct attn_group_args a = {.head_dim = hd, .n_q = n_q, .n_kv = n_kv, .k_type = ATTN_KV_F16, .v_type = ATTN_KV_F16,
                                    .q = q, .k = k, .v = v, .kv_stride = stride,
                                    .scale = 1.0f / sqrtf((float)hd), .out = out, .scratch = scratch};
        printf("| %d | %d | %d | %.1f", hd, n_q, n_kv, best_call_us(per_position, &a, cell_s));
        for (int p = 0; p < 3; p++) {
            if (p > 0 && !quant_isa_supported(paths[p])) printf(" | -");
            else printf(" | %.1f", best_call_us(fns[p], &a, cell_s));
        }
        printf(" |\n");
        free(k);
        free(v);
        free(q);
        free(out);
        free(scratch);
    }
    return 0;
}
