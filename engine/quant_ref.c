/* quant_ref.c - scalar reference kernels of every tensor type: to float, from float
 * (quantize) and the dot product against the type's activation format.
 *
 * These are the judge for the SIMD kernels and the writers of our quantized files, so
 * they follow llama.cpp's reference functions step for step (ggml/src/ggml-quants.c:
 * quantize_row_*_ref, dequantize_row_*, make_qkx2_quants, make_qx_quants; and the
 * generic vec_dot of ggml-cpu/quants.c): the same float operations in the same order,
 * so a tensor we quantize has the bytes llama.cpp would write (without an importance
 * matrix). Dot products sum each block's integer products exactly, then accumulate the
 * scaled block sums in float (F32/F16/BF16 in double, as ggml's scalar path does).
 */
#include <stdbool.h>

#include "engine/quant_internal.h"

#define QMIN(a, b) ((a) < (b) ? (a) : (b))
#define QMAX(a, b) ((a) > (b) ? (a) : (b))
#define GROUP_MAX_EPS 1e-15f

/* ---- F32 / F16 / BF16 ------------------------------------------------------------ */

void quant_ref_f32_to_float(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void quant_ref_f32_from_float(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void quant_ref_f32_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const float *x = vx, *y = vy;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)(x[i] * y[i]);
    *s = (float)sum;
}

void quant_ref_f16_to_float(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = quant_h2f(h[i]);
}

void quant_ref_f16_from_float(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = quant_f32_to_f16(src[i]);
}

void quant_ref_f16_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const uint16_t *x = vx, *y = vy;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)(quant_h2f(x[i]) * quant_h2f(y[i]));
    *s = (float)sum;
}

void quant_ref_bf16_to_float(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = quant_bf2f(h[i]);
}

void quant_ref_bf16_from_float(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    for (int64_t i = 0; i < n; i++) h[i] = quant_f32_to_bf16(src[i]);
}

void quant_ref_bf16_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const uint16_t *x = vx, *y = vy;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)(quant_bf2f(x[i]) * quant_bf2f(y[i]));
    *s = (float)sum;
}

/* ---- 32-element block types ---------------------------------------------------------- */

/* Largest-magnitude value of x[0..n) with its sign (the "max" of ggml's quantizers). */
static float signed_absmax(const float *x, int n, float *amax_out)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    *amax_out = amax;
    return max;
}

void quant_ref_q4_0_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q4_0 *y = vy;
    for (int64_t i = 0; i < k / QK4_0; i++, x += QK4_0) {
        float amax;
        const float max = signed_absmax(x, QK4_0, &amax);
        const float d = max / -8;          /* the extreme value maps to q = 0 */
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const float x0 = x[j] * id, x1 = x[QK4_0 / 2 + j] * id;
            const int q0 = QMIN(15, (int)(int8_t)(x0 + 8.5f));
            const int q1 = QMIN(15, (int)(int8_t)(x1 + 8.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void quant_ref_q4_0_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q4_0 *x = vx;
    for (int64_t i = 0; i < k / QK4_0; i++, y += QK4_0) {
        const float d = quant_h2f(x[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = (float)((x[i].qs[j] & 0x0F) - 8) * d;
            y[j + QK4_0 / 2] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void quant_ref_q4_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q4_0 *x = vx;
    const struct block_q8_0 *y = vy;
    float sumf = 0;
    for (int ib = 0; ib < n / QK8_0; ib++) {
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < QK8_0 / 2; j++) {
            sumi0 += ((x[ib].qs[j] & 0x0F) - 8) * y[ib].qs[j];
            sumi1 += ((x[ib].qs[j] >> 4) - 8) * y[ib].qs[j + QK8_0 / 2];
        }
        sumf += (float)(sumi0 + sumi1) * quant_h2f(x[ib].d) * quant_h2f(y[ib].d);
    }
    *s = sumf;
}

/* min/max of a block (Q4_1, Q5_1). */
static void block_minmax(const float *x, int n, float *mn, float *mx)
{
    float lo = x[0], hi = x[0];
    for (int j = 1; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

void quant_ref_q4_1_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q4_1 *y = vy;
    for (int64_t i = 0; i < k / QK4_1; i++, x += QK4_1) {
        float min, max;
        block_minmax(x, QK4_1, &min, &max);
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        y[i].m = quant_f32_to_f16(min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const float x0 = (x[j] - min) * id, x1 = (x[QK4_1 / 2 + j] - min) * id;
            const int q0 = QMIN(15, (int)(int8_t)(x0 + 0.5f));
            const int q1 = QMIN(15, (int)(int8_t)(x1 + 0.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void quant_ref_q4_1_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q4_1 *x = vx;
    for (int64_t i = 0; i < k / QK4_1; i++, y += QK4_1) {
        const float d = quant_h2f(x[i].d), m = quant_h2f(x[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[j] = (float)(x[i].qs[j] & 0x0F) * d + m;
            y[j + QK4_1 / 2] = (float)(x[i].qs[j] >> 4) * d + m;
        }
    }
}

/* Packs 32 five-bit values: low nibbles like Q4_0, bit 4 of value j into bit j of qh. */
static void pack_q5(const int *q, uint8_t *qs, uint8_t *qh_out)
{
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
        qh |= (uint32_t)((q[j] & 0x10) >> 4) << j;
        qh |= (uint32_t)((q[j + 16] & 0x10) >> 4) << (j + 16);
    }
    memcpy(qh_out, &qh, 4); /* little-endian hosts only, as GGUF */
}

/* Unpacks the 32 five-bit values of a Q5_0/Q5_1 block. */
static void unpack_q5(const uint8_t *qs, const uint8_t *qh_in, int *q)
{
    uint32_t qh;
    memcpy(&qh, qh_in, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0x0F) | (int)(((qh >> j) << 4) & 0x10);
        q[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
    }
}

void quant_ref_q5_0_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q5_0 *y = vy;
    for (int64_t i = 0; i < k / QK5_0; i++, x += QK5_0) {
        float amax;
        const float max = signed_absmax(x, QK5_0, &amax);
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        int q[QK5_0];
        for (int j = 0; j < QK5_0; j++) q[j] = QMIN(31, (int)(int8_t)(x[j] * id + 16.5f));
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

void quant_ref_q5_0_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q5_0 *x = vx;
    for (int64_t i = 0; i < k / QK5_0; i++, y += QK5_0) {
        const float d = quant_h2f(x[i].d);
        int q[QK5_0];
        unpack_q5(x[i].qs, x[i].qh, q);
        for (int j = 0; j < QK5_0; j++) y[j] = (float)(q[j] - 16) * d;
    }
}

void quant_ref_q5_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q5_0 *x = vx;
    const struct block_q8_0 *y = vy;
    float sumf = 0;
    for (int ib = 0; ib < n / QK8_0; ib++) {
        int q[QK5_0], sumi = 0;
        unpack_q5(x[ib].qs, x[ib].qh, q);
        for (int j = 0; j < QK8_0; j++) sumi += (q[j] - 16) * y[ib].qs[j];
        sumf += (quant_h2f(x[ib].d) * quant_h2f(y[ib].d)) * (float)sumi;
    }
    *s = sumf;
}

void quant_ref_q5_1_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q5_1 *y = vy;
    for (int64_t i = 0; i < k / QK5_1; i++, x += QK5_1) {
        float min, max;
        block_minmax(x, QK5_1, &min, &max);
        const float d = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        y[i].m = quant_f32_to_f16(min);
        int q[QK5_1];
        for (int j = 0; j < QK5_1; j++) q[j] = (uint8_t)((x[j] - min) * id + 0.5f);
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

void quant_ref_q5_1_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q5_1 *x = vx;
    for (int64_t i = 0; i < k / QK5_1; i++, y += QK5_1) {
        const float d = quant_h2f(x[i].d), m = quant_h2f(x[i].m);
        int q[QK5_1];
        unpack_q5(x[i].qs, x[i].qh, q);
        for (int j = 0; j < QK5_1; j++) y[j] = (float)q[j] * d + m;
    }
}

void quant_ref_q8_0_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q8_0 *y = vy;
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = QMAX(amax, fabsf(x[j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void quant_ref_q8_0_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q8_0 *x = vx;
    for (int64_t i = 0; i < k / QK8_0; i++, y += QK8_0) {
        const float d = quant_h2f(x[i].d);
        for (int j = 0; j < QK8_0; j++) y[j] = (float)x[i].qs[j] * d;
    }
}

void quant_ref_q8_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q8_0 *x = vx, *y = vy;
    float sumf = 0;
    for (int ib = 0; ib < n / QK8_0; ib++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++) sumi += x[ib].qs[j] * y[ib].qs[j];
        sumf += (float)sumi * (quant_h2f(x[ib].d) * quant_h2f(y[ib].d));
    }
    *s = sumf;
}

/* Q8_1 (activations of Q4_1/Q5_1): as Q8_0 plus s = d * sum(qs), which carries the
 * weights' offset m through the dot product. */
void quant_ref_q8_1_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q8_1 *y = vy;
    for (int64_t i = 0; i < k / QK8_1; i++, x += QK8_1) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = QMAX(amax, fabsf(x[j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < QK8_1 / 2; j++) {
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
            y[i].qs[QK8_1 / 2 + j] = (int8_t)roundf(x[QK8_1 / 2 + j] * id);
            sum += y[i].qs[j] + y[i].qs[QK8_1 / 2 + j];
        }
        y[i].s = quant_f32_to_f16((float)sum * d);
    }
}

void quant_ref_q8_1_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q8_1 *x = vx;
    for (int64_t i = 0; i < k / QK8_1; i++, y += QK8_1) {
        const float d = quant_h2f(x[i].d);
        for (int j = 0; j < QK8_1; j++) y[j] = (float)x[i].qs[j] * d;
    }
}

/* x = d q + m against y = dy qy: d dy sum(q qy) + m (dy sum(qy)) = ... + m * s. */
void quant_ref_q4_1_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q4_1 *x = vx;
    const struct block_q8_1 *y = vy;
    float sumf = 0;
    for (int ib = 0; ib < n / QK8_1; ib++) {
        int sumi = 0;
        for (int j = 0; j < QK8_1 / 2; j++)
            sumi += (x[ib].qs[j] & 0x0F) * y[ib].qs[j] + (x[ib].qs[j] >> 4) * y[ib].qs[j + QK8_1 / 2];
        sumf += (quant_h2f(x[ib].d) * quant_h2f(y[ib].d)) * (float)sumi +
                quant_h2f(x[ib].m) * quant_h2f(y[ib].s);
    }
    *s = sumf;
}

void quant_ref_q5_1_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q5_1 *x = vx;
    const struct block_q8_1 *y = vy;
    float sumf = 0;
    for (int ib = 0; ib < n / QK8_1; ib++) {
        int q[QK5_1], sumi = 0;
        unpack_q5(x[ib].qs, x[ib].qh, q);
        for (int j = 0; j < QK8_1; j++) sumi += q[j] * y[ib].qs[j];
        sumf += (quant_h2f(x[ib].d) * quant_h2f(y[ib].d)) * (float)sumi +
                quant_h2f(x[ib].m) * quant_h2f(y[ib].s);
    }
    *s = sumf;
}

/* ---- K-quants: scale searches ------------------------------------------------------- */

/* ggml's make_qkx2_quants: asymmetric quantization of x[0..n) to L in 0..nmax with
 * x ~= scale * L - *the_min, minimising the weighted squared (or absolute) error over
 * nstep+1 candidate scales around nmax / (max - min). */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights,
                              uint8_t *L, float *the_min, uint8_t *Laux, float rmin,
                              float rdelta, int nstep, bool use_mad)
{
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        int l = quant_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)QMAX(0, QMIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = quant_nearest_int(iscale * (x[i] - min));
            l = QMAX(0, QMIN(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                mad += weights[i] * diff;
            }
            if (mad < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Weight of element x in make_qx_quants' error for rmse_type 1 (no importance matrix). */
static inline int qx_level(float iscale, float x, int nmax)
{
    int l = quant_nearest_int(iscale * x);
    return QMAX(-nmax, QMIN(nmax - 1, l));
}

/* ggml's make_qx_quants with rmse_type 1 and no importance weights: symmetric
 * quantization to L in 0..2*nmax-1 (stored + nmax), scale chosen among 19 candidates
 * around -nmax / max to maximise sum(x^2 * x * l)^2 / sum(x^2 * l^2). */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = qx_level(iscale, x[i], nmax);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = qx_level(iscale, x[i], nmax);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + qx_level(iscale, x[i], nmax));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ---- Q4_K / Q5_K ------------------------------------------------------------------------ */

/* Shared first half of quantize_row_q4_K_ref / q5_K_ref: per 32-element sub-block
 * scale and min by make_qkx2_quants, 6-bit packed against the block's largest ones;
 * then the final levels L (0..nmax) from the stored (rounded) scales. */
static void quantize_kx_block(const float *x, int nmax, float rmin, int nstep, uint16_t *d_out,
                              uint16_t *dmin_out, uint8_t *packed, uint8_t *L)
{
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                     rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(packed, 0, K_SCALE_SIZE);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)quant_nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)quant_nearest_int(inv_min * mins[j]);
        ls = QMIN(63, ls);
        lm = QMIN(63, lm);
        if (j < 4) {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            packed[j - 4] |= (uint8_t)((ls >> 4) << 6);
            packed[j - 0] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = quant_f32_to_f16(max_scale / 63.f);
    *dmin_out = quant_f32_to_f16(max_min / 63.f);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        quant_scale_min_k4(j, packed, &sc, &m);
        const float d = quant_h2f(*d_out) * sc;
        if (!d) continue;
        const float dm = quant_h2f(*dmin_out) * m;
        for (int ii = 0; ii < 32; ii++) {
            int l = quant_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)QMAX(0, QMIN(nmax, l));
        }
    }
}

void quant_ref_q4_K_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q4_K *y = vy;
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        uint8_t L[QK_K];
        quantize_kx_block(x, 15, -1.f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

void quant_ref_q4_K_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q4_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        const uint8_t *q = x[i].qs;
        const float d = quant_h2f(x[i].d), min = quant_h2f(x[i].dmin);
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
            uint8_t sc, m;
            quant_scale_min_k4(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            quant_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

/* Sum over a Q4_K/Q5_K block of the min correction: sum_j m[j] * (bsums[2j] +
 * bsums[2j+1]); and of the scaled integer dot products. */
static void kx_block_dot(const uint8_t *packed, const uint8_t *q, const struct block_q8_K *y,
                         int *sumi_out, int *summ_out)
{
    int sumi = 0, summ = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        quant_scale_min_k4(j, packed, &sc, &m);
        summ += m * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
        int dot = 0;
        for (int l = 0; l < 32; l++) dot += q[32 * j + l] * y->qs[32 * j + l];
        sumi += sc * dot;
    }
    *sumi_out = sumi;
    *summ_out = summ;
}

void quant_ref_q4_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q4_K *x = vx;
    const struct block_q8_K *y = vy;
    float sumf = 0;
    for (int i = 0; i < n / QK_K; i++) {
        uint8_t q[QK_K]; /* levels in element order */
        for (int j = 0; j < QK_K / 64; j++)
            for (int l = 0; l < 32; l++) {
                q[64 * j + l] = x[i].qs[32 * j + l] & 0xF;
                q[64 * j + 32 + l] = x[i].qs[32 * j + l] >> 4;
            }
        int sumi, summ;
        kx_block_dot(x[i].scales, q, &y[i], &sumi, &summ);
        sumf += quant_h2f(x[i].d) * y[i].d * (float)sumi;
        sumf -= quant_h2f(x[i].dmin) * y[i].d * (float)summ;
    }
    *s = sumf;
}

void quant_ref_q5_K_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q5_K *y = vy;
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        uint8_t L[QK_K];
        quantize_kx_block(x, 31, -0.5f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int n = 0; n < QK_K; n += 64, ql += 32) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[n + j], l2 = L[n + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

/* Levels 0..31 of a Q5_K block in element order. */
static void unpack_q5_K(const struct block_q5_K *b, uint8_t *q)
{
    for (int c = 0; c < QK_K / 64; c++)
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = (uint8_t)((b->qs[32 * c + l] & 0xF) | (((b->qh[l] >> (2 * c)) & 1) << 4));
            q[64 * c + 32 + l] =
                (uint8_t)((b->qs[32 * c + l] >> 4) | (((b->qh[l] >> (2 * c + 1)) & 1) << 4));
        }
}

void quant_ref_q5_K_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q5_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++) {
        uint8_t q[QK_K];
        unpack_q5_K(&x[i], q);
        const float d = quant_h2f(x[i].d), min = quant_h2f(x[i].dmin);
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            quant_scale_min_k4(j, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * q[32 * j + l] - m1;
        }
    }
}

void quant_ref_q5_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q5_K *x = vx;
    const struct block_q8_K *y = vy;
    float sumf = 0;
    for (int i = 0; i < n / QK_K; i++) {
        uint8_t q[QK_K];
        unpack_q5_K(&x[i], q);
        int sumi, summ;
        kx_block_dot(x[i].scales, q, &y[i], &sumi, &summ);
        sumf += quant_h2f(x[i].d) * y[i].d * (float)sumi;
        sumf -= quant_h2f(x[i].dmin) * y[i].d * (float)summ;
    }
    *s = sumf;
}

/* ---- Q6_K -------------------------------------------------------------------------------- */

void quant_ref_q6_K_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q6_K *y = vy;
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        int8_t L[QK_K];
        float scales[QK_K / 16];
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ib++) {
            const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            if (fabsf(scale) > max_abs_scale) {
                max_abs_scale = fabsf(scale);
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float iscale = -128.f / max_scale;
        y[i].d = quant_f32_to_f16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++)
            y[i].scales[ib] = (int8_t)QMIN(127, quant_nearest_int(iscale * scales[ib]));
        for (int j = 0; j < QK_K / 16; j++) {
            float d = quant_h2f(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++) {
                int l = quant_nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(QMAX(-32, QMIN(31, l)) + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

/* Levels -32..31 of a Q6_K block in element order. */
static void unpack_q6_K(const struct block_q6_K *b, int8_t *q)
{
    const uint8_t *ql = b->ql, *qh = b->qh;
    for (int n = 0; n < QK_K; n += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; l++) {
            q[n + l + 0] = (int8_t)(((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
            q[n + l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            q[n + l + 64] = (int8_t)(((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            q[n + l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
}

void quant_ref_q6_K_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q6_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++, y += QK_K) {
        int8_t q[QK_K];
        unpack_q6_K(&x[i], q);
        const float d = quant_h2f(x[i].d);
        for (int j = 0; j < QK_K; j++) y[j] = d * x[i].scales[j / 16] * q[j];
    }
}

void quant_ref_q6_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q6_K *x = vx;
    const struct block_q8_K *y = vy;
    float sumf = 0;
    for (int i = 0; i < n / QK_K; i++) {
        int8_t q[QK_K];
        unpack_q6_K(&x[i], q);
        int sumi = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            int dot = 0;
            for (int l = 0; l < 16; l++) dot += q[16 * j + l] * y[i].qs[16 * j + l];
            sumi += x[i].scales[j] * dot;
        }
        sumf += quant_h2f(x[i].d) * y[i].d * (float)sumi;
    }
    *s = sumf;
}

/* ---- Q8_K (activations) -------------------------------------------------------------------- */

void quant_ref_q8_K_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q8_K *y = vy;
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        float amax;
        const float max = signed_absmax(x, QK_K, &amax);
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        /* -127/max: the extreme value maps to -127 exactly, others stay in range */
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++)
            y[i].qs[j] = (int8_t)QMIN(127, quant_nearest_int(iscale * x[j]));
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int ii = 0; ii < 16; ii++) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

void quant_ref_q8_K_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q8_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++, y += QK_K)
        for (int j = 0; j < QK_K; j++) y[j] = x[i].d * x[i].qs[j];
}

/* ---- Q2_K / Q3_K ---------------------------------------------------------------------------------- */

/* Levels 0..3 of a Q2_K block in element order: for each 128-element half, shift s
 * (0, 2, 4, 6) takes 32 elements, bytes 0-15 then 16-31 of the half's 32 qs bytes. */
static void unpack_q2_K(const struct block_q2_K *b, uint8_t *q)
{
    const uint8_t *qs = b->qs;
    for (int n = 0; n < QK_K; n += 128, qs += 32)
        for (int s4 = 0; s4 < 4; s4++)
            for (int l = 0; l < 32; l++) q[n + 32 * s4 + l] = (uint8_t)((qs[l] >> (2 * s4)) & 3);
}

void quant_ref_q2_K_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q2_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++, y += QK_K) {
        const float d = quant_h2f(x[i].d), min = quant_h2f(x[i].dmin);
        uint8_t q[QK_K];
        unpack_q2_K(&x[i], q);
        for (int j = 0; j < QK_K / 16; j++) {
            const uint8_t sc = x[i].scales[j];
            const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
            for (int l = 0; l < 16; l++) y[16 * j + l] = dl * q[16 * j + l] - ml;
        }
    }
}

void quant_ref_q2_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q2_K *x = vx;
    const struct block_q8_K *y = vy;
    float sumf = 0;
    for (int i = 0; i < n / QK_K; i++) {
        uint8_t q[QK_K];
        unpack_q2_K(&x[i], q);
        int isum = 0, summs = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            int dot = 0;
            for (int l = 0; l < 16; l++) dot += q[16 * j + l] * y[i].qs[16 * j + l];
            isum += (x[i].scales[j] & 0xF) * dot;
            summs += (x[i].scales[j] >> 4) * y[i].bsums[j];
        }
        sumf += y[i].d * quant_h2f(x[i].d) * (float)isum - y[i].d * quant_h2f(x[i].dmin) * (float)summs;
    }
    *s = sumf;
}

/* Levels -4..3 of a Q3_K block in element order (low 2 bits as Q2_K; minus 4 where the
 * hmask bit is clear; hmask bit (n/128)*4 + s4 of byte l for element n + 32 s4 + l) and
 * its 16 signed 6-bit scales (low 4 bits in bytes 0-7, lo nibbles first; high 2 bits in
 * bytes 8-11). */
static void unpack_q3_K(const struct block_q3_K *b, int8_t *q, int8_t *scales)
{
    const uint8_t *sb = b->scales;
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (sb[j] & 0xF) : (sb[j - 8] >> 4);
        int hi = (sb[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        scales[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
    const uint8_t *qs = b->qs;
    for (int n = 0, h = 0; n < QK_K; n += 128, qs += 32, h++)
        for (int s4 = 0; s4 < 4; s4++) {
            const uint8_t m = (uint8_t)(1u << (4 * h + s4));
            for (int l = 0; l < 32; l++)
                q[n + 32 * s4 + l] = (int8_t)(((qs[l] >> (2 * s4)) & 3) - ((b->hmask[l] & m) ? 0 : 4));
        }
}

void quant_ref_q3_K_to_float(const void *vx, float *y, int64_t k)
{
    const struct block_q3_K *x = vx;
    for (int64_t i = 0; i < k / QK_K; i++, y += QK_K) {
        int8_t q[QK_K], scales[16];
        unpack_q3_K(&x[i], q, scales);
        const float d_all = quant_h2f(x[i].d);
        for (int j = 0; j < QK_K / 16; j++) {
            const float dl = d_all * scales[j];
            for (int l = 0; l < 16; l++) y[16 * j + l] = dl * q[16 * j + l];
        }
    }
}

void quant_ref_q3_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q3_K *x = vx;
    const struct block_q8_K *y = vy;
    float sumf = 0;
    for (int i = 0; i < n / QK_K; i++) {
        int8_t q[QK_K], scales[16];
        unpack_q3_K(&x[i], q, scales);
        int isum = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            int dot = 0;
            for (int l = 0; l < 16; l++) dot += q[16 * j + l] * y[i].qs[16 * j + l];
            isum += scales[j] * dot;
        }
        sumf += quant_h2f(x[i].d) * y[i].d * (float)isum;
    }
    *s = sumf;
}
