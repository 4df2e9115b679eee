/* attn.c - scalar reference attention of one GQA group (attn.h) and the ISA dispatch.
 *
 * The reference runs head by head in position order, as the forward pass did before
 * the SIMD kernels: F16 query, float dot products (8 partial sums, which compilers may
 * vectorise without reassociating), libm expf, the softmax sum in double, F16
 * probabilities against F16 V rows, float V accumulation; Q8_0 / Q4_0 rows dequantized
 * element by element (d * q), with a float query and float probabilities. Cache rows are converted with
 * quant's bulk F16 conversion, so the path other CPUs take (NEON) stays reasonable. It is the judge the
 * AVX2 / AVX-512 kernels are tested against and the path of MESHLLM_ISA=scalar.
 */
#include "engine/attn.h"

#include "engine/quant.h"
#include "engine/quant_blocks.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Scratch: scores [n_q][pad16(n_ctx)] floats, the rounded query [n_q][pad16(hd)] floats
 * and one converted cache row [pad16(hd)]; the kernels lay their data inside this budget. */
size_t attn_scratch_bytes(int head_dim, int n_q, int n_ctx)
{
    if (head_dim <= 0 || head_dim > (1 << 16) || n_q <= 0 || n_q > ATTN_MAX_GROUP ||
        n_ctx <= 0 || n_ctx > (1 << 26))
        return 0;
    size_t hd16 = ((size_t)head_dim + 15) / 16 * 16;
    size_t row = ((size_t)n_ctx + 15) / 16 * 16 + hd16;
    return ((size_t)n_q * row + hd16) * sizeof(float) + 64;
}

/* n elements of a cache, starting at element index i, as floats into buf (exact: F16 and
 * d * q are representable in float); an F32 cache is returned in place. */
static const float *elems_at(enum attn_kv_type t, const void *base, size_t i, int n, float *buf)
{
    switch (t) {
    case ATTN_KV_F32: return (const float *)base + i;
    case ATTN_KV_F16: quant_f16_to_f32_row((const uint16_t *)base + i, buf, n); return buf;
    case ATTN_KV_Q8_0:
        for (int e = 0; e < n; e++) {
            const struct block_q8_0 *b = (const struct block_q8_0 *)base + (i + (size_t)e) / QK8_0;
            buf[e] = quant_f16_to_f32(b->d) * (float)b->qs[(i + (size_t)e) % QK8_0];
        }
        return buf;
    case ATTN_KV_Q4_0:
        for (int e = 0; e < n; e++) {
            const struct block_q4_0 *b = (const struct block_q4_0 *)base + (i + (size_t)e) / QK4_0;
            size_t j = (i + (size_t)e) % QK4_0; /* elements 0..15: low nibbles, 16..31: high */
            int q = j < QK4_0 / 2 ? (b->qs[j] & 15) : (b->qs[j - QK4_0 / 2] >> 4);
            buf[e] = quant_f16_to_f32(b->d) * (float)(q - 8);
        }
        return buf;
    }
    return buf;
}

static inline const float *row_at(const struct attn_group_args *a, enum attn_kv_type t,
                                  const void *base, int p, float *buf)
{
    return elems_at(t, base, (size_t)p * a->kv_stride + a->kv_off, a->head_dim, buf);
}

/* x . y in float, 8 partial sums (lane j takes the elements d = j mod 8), then in order. */
static float dot_f32(const float *x, const float *y, int n)
{
    float lane[8] = {0};
    int d = 0;
    for (; d + 8 <= n; d += 8)
        for (int j = 0; j < 8; j++) lane[j] += x[d + j] * y[d + j];
    float s = 0.0f;
    for (int j = 0; j < 8; j++) s += lane[j];
    for (; d < n; d++) s += x[d] * y[d];
    return s;
}

void attn_ref_group(const struct attn_group_args *a)
{
    const int hd = a->head_dim, n_kv = a->n_kv;
    float *scores = a->scratch;                         /* [n_kv] */
    float *qr = scores + ((size_t)n_kv + 15) / 16 * 16; /* [hd] query as the dot sees it */
    float *buf = qr + ((size_t)hd + 15) / 16 * 16;      /* [hd] one converted cache row */
    for (int i = 0; i < a->n_q; i++) {
        const float *q = a->q + (size_t)i * hd;
        for (int d = 0; d < hd; d++)
            qr[d] = a->k_type == ATTN_KV_F16 ? quant_f16_to_f32(quant_f32_to_f16(q[d])) : q[d];
        /* scores[p] = scale * (q . k_p), products summed in float */
        float max = -FLT_MAX;
        for (int p = 0; p < n_kv; p++) {
            scores[p] = dot_f32(qr, row_at(a, a->k_type, a->k, p, buf), hd) * a->scale;
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
            if (a->v_type == ATTN_KV_F16) scores[p] = quant_f16_to_f32(quant_f32_to_f16(scores[p]));
        }
        /* out = sum_p prob_p * v_p */
        float *o = a->out + (size_t)i * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int p = 0; p < n_kv; p++) {
            const float *v = row_at(a, a->v_type, a->v, p, buf);
            for (int d = 0; d < hd; d++) o[d] += scores[p] * v[d];
        }
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
