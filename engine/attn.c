/* attn.c - scalar reference attention of one GQA group (attn.h) and the ISA dispatch.
 *
 * The reference runs head by head in position order, as the forward pass did before
 * the SIMD kernels: F16 query, float dot products, libm expf, the softmax sum in double,
 * F16 probabilities against F16 V rows, float V accumulation. It is the judge the
 * AVX2 / AVX-512 kernels are tested against and the path of MESHLLM_ISA=scalar.
 */
#include "engine/attn.h"

#include "engine/quant.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Scratch: scores [n_q][pad16(n_ctx)] floats, then the rounded query [n_q][pad16(hd)]
 * floats; the kernels lay their own data inside this budget. */
size_t attn_scratch_bytes(int head_dim, int n_q, int n_ctx)
{
    if (head_dim <= 0 || head_dim > (1 << 16) || n_q <= 0 || n_q > ATTN_MAX_GROUP ||
        n_ctx <= 0 || n_ctx > (1 << 26))
        return 0;
    size_t row = ((size_t)n_ctx + 15) / 16 * 16 + ((size_t)head_dim + 15) / 16 * 16;
    return (size_t)n_q * row * sizeof(float) + 64;
}

/* Position p's key or value element d of a cache of either type, as float. */
static inline float kv_at(const struct attn_group_args *a, const void *base, int p, int d)
{
    size_t i = (size_t)p * a->kv_stride + (size_t)d;
    return a->kv_f16 ? quant_f16_to_f32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

void attn_ref_group(const struct attn_group_args *a)
{
    const int hd = a->head_dim, n_kv = a->n_kv;
    float *scores = a->scratch;                             /* [n_kv] */
    float *qr = scores + ((size_t)n_kv + 15) / 16 * 16;     /* [hd] query as the dot sees it */
    for (int i = 0; i < a->n_q; i++) {
        const float *q = a->q + (size_t)i * hd;
        for (int d = 0; d < hd; d++)
            qr[d] = a->kv_f16 ? quant_f16_to_f32(quant_f32_to_f16(q[d])) : q[d];
        /* scores[p] = scale * (q . k_p), products summed in float */
        float max = -FLT_MAX;
        for (int p = 0; p < n_kv; p++) {
            float s = 0.0f;
            for (int d = 0; d < hd; d++) s += qr[d] * kv_at(a, a->k, p, d);
            scores[p] = s * a->scale;
            if (scores[p] > max) max = scores[p];
        }
        /* softmax, summed in double as ggml's soft_max */
        double sum = 0.0;
        for (int p = 0; p < n_kv; p++) {
            scores[p] = expf(scores[p] - max);
            sum += scores[p];
        }
        float inv = (float)(1.0 / sum);
        for (int p = 0; p < n_kv; p++) {
            scores[p] *= inv;
            /* ggml multiplies F16 V by the probabilities converted to F16 */
            if (a->kv_f16) scores[p] = quant_f16_to_f32(quant_f32_to_f16(scores[p]));
        }
        /* out = sum_p prob_p * v_p */
        float *o = a->out + (size_t)i * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int p = 0; p < n_kv; p++)
            for (int d = 0; d < hd; d++) o[d] += scores[p] * kv_at(a, a->v, p, d);
    }
}

void attn_group(const struct attn_group_args *a)
{
#if defined(__x86_64__)
    const char *isa = quant_isa_name();
    if (strcmp(isa, "avx512") == 0) {
        attn_avx512_group(a);
        return;
    }
    if (strcmp(isa, "avx2") == 0) {
        attn_avx2_group(a);
        return;
    }
#endif
    attn_ref_group(a);
}
