/* kernels_neon.c - AArch64 Advanced SIMD kernels (NEON is mandatory on AArch64, so
 * quant.c installs these on every aarch64 build).
 *
 * Same signatures and results as the scalar reference in quant_ref.c up to float
 * summation order: each block's integer dot product is exact. With the dot-product
 * extension (-march=armv8.2-a+dotprod, __ARM_FEATURE_DOTPROD) 16 int8 products go into
 * four int32 lanes with one sdot; without it, vmull_s8 + pairwise widening adds (no
 * int16 overflow: every product is at most 128 * 128). The Q8_0 quantizer is
 * bit-exact with the reference (vcvta rounds ties away from zero, as roundf); Q8_K stays
 * the scalar one.
 * Tested against the scalar reference under qemu-user by tests/quant_neon.test.sh.
 */
#include <arm_neon.h>

#include "engine/quant_internal.h"

static inline float h2f(uint16_t h)
{
    return quant_f16_lut[h];
}

/* acc + four int32 sums of 4 consecutive products of a and b. */
static inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b)
{
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    int16x8_t p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    int16x8_t p1 = vmull_high_s8(a, b);
    return vpadalq_s16(vpadalq_s16(acc, p0), p1);
#endif
}

/* ---- F32 / F16 / BF16 ---------------------------------------------------------------------- */

static void f32_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const float *x = vx, *y = vy;
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = vfmaq_f32(a0, vld1q_f32(x + i), vld1q_f32(y + i));
        a1 = vfmaq_f32(a1, vld1q_f32(x + i + 4), vld1q_f32(y + i + 4));
        a2 = vfmaq_f32(a2, vld1q_f32(x + i + 8), vld1q_f32(y + i + 8));
        a3 = vfmaq_f32(a3, vld1q_f32(x + i + 12), vld1q_f32(y + i + 12));
    }
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; i++) sum += x[i] * y[i];
    *s = sum;
}

static inline float32x4_t ld_f16(const uint16_t *p)
{
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

static void f16_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const uint16_t *x = vx, *y = vy;
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = vfmaq_f32(a0, ld_f16(x + i), ld_f16(y + i));
        a1 = vfmaq_f32(a1, ld_f16(x + i + 4), ld_f16(y + i + 4));
        a2 = vfmaq_f32(a2, ld_f16(x + i + 8), ld_f16(y + i + 8));
        a3 = vfmaq_f32(a3, ld_f16(x + i + 12), ld_f16(y + i + 12));
    }
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; i++) sum += h2f(x[i]) * h2f(y[i]);
    *s = sum;
}

static inline float32x4_t ld_bf16(const uint16_t *p)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

static void bf16_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const uint16_t *x = vx, *y = vy;
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = vfmaq_f32(a0, ld_bf16(x + i), ld_bf16(y + i));
        a1 = vfmaq_f32(a1, ld_bf16(x + i + 4), ld_bf16(y + i + 4));
        a2 = vfmaq_f32(a2, ld_bf16(x + i + 8), ld_bf16(y + i + 8));
        a3 = vfmaq_f32(a3, ld_bf16(x + i + 12), ld_bf16(y + i + 12));
    }
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; i++) sum += quant_bf16_to_f32(x[i]) * quant_bf16_to_f32(y[i]);
    *s = sum;
}

static void f16_to_f32_row(const void *vsrc, float *dst, int64_t n)
{
    const uint16_t *src = vsrc;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, ld_f16(src + i));
    for (; i < n; i++) dst[i] = quant_f16_to_f32(src[i]);
}

static void f32_to_f16_row(const float *src, void *vdst, int64_t n)
{
    uint16_t *dst = vdst;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    for (; i < n; i++) dst[i] = quant_f32_to_f16(src[i]);
}

/* ---- Q8_0 activations ------------------------------------------------------------------------ */

static void q8_0_from_float(const float *x, void *vy, int64_t k)
{
    struct block_q8_0 *y = vy;
    for (int64_t i = 0; i < k / QK8_0; i++, x += QK8_0) {
        float32x4_t v[8], m = vdupq_n_f32(0);
        for (int j = 0; j < 8; j++) {
            v[j] = vld1q_f32(x + 4 * j);
            m = vmaxq_f32(m, vabsq_f32(v[j]));
        }
        const float amax = vmaxvq_f32(m);
        const float d = amax / 127.f;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = quant_f32_to_f16(d);
        for (int j = 0; j < 8; j += 2) {
            /* vcvta: to nearest, ties away from zero = roundf, as the reference */
            int32x4_t a = vcvtaq_s32_f32(vmulq_n_f32(v[j], id));
            int32x4_t b = vcvtaq_s32_f32(vmulq_n_f32(v[j + 1], id));
            int16x8_t h = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
            vst1_s8(y[i].qs + 4 * j, vqmovn_s16(h));
        }
    }
}

/* ---- 32-element block types ------------------------------------------------------------------- */

static void q4_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q4_0 *x = vx;
    const struct block_q8_0 *y = vy;
    const int nb = n / QK8_0;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    const int8x16_t eight = vdupq_n_s8(8);
    float32x4_t acc0 = vdupq_n_f32(0), acc1 = vdupq_n_f32(0);
#define Q4_0_BLOCK(acc, b)                                                                    \
    do {                                                                                      \
        const uint8x16_t v = vld1q_u8(x[b].qs);                                               \
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, m4)), eight);           \
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);          \
        int32x4_t p = dot16(vdupq_n_s32(0), lo, vld1q_s8(y[b].qs));                           \
        p = dot16(p, hi, vld1q_s8(y[b].qs + 16));                                             \
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(p), h2f(x[b].d) * h2f(y[b].d));                  \
    } while (0)
    int ib = 0;
    for (; ib + 1 < nb; ib += 2) {
        Q4_0_BLOCK(acc0, ib);
        Q4_0_BLOCK(acc1, ib + 1);
    }
    if (ib < nb) Q4_0_BLOCK(acc0, ib);
#undef Q4_0_BLOCK
    *s = vaddvq_f32(vaddq_f32(acc0, acc1));
}

static void q5_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q5_0 *x = vx;
    const struct block_q8_0 *y = vy;
    const int nb = n / QK8_0;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), b16 = vdupq_n_u8(0x10);
    const uint8x16_t bitsel = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const int8x16_t sixteen = vdupq_n_s8(16);
    float32x4_t acc = vdupq_n_f32(0);
    for (int ib = 0; ib < nb; ib++) {
        uint32_t qh;
        memcpy(&qh, x[ib].qh, 4);
        /* bit j of qh -> 0x10 in byte j: bytes 0-15 from qh bits 0-15, 16-31 from 16-31 */
        const uint8x16_t hb0 = vcombine_u8(vdup_n_u8((uint8_t)qh), vdup_n_u8((uint8_t)(qh >> 8)));
        const uint8x16_t hb1 = vcombine_u8(vdup_n_u8((uint8_t)(qh >> 16)), vdup_n_u8((uint8_t)(qh >> 24)));
        const uint8x16_t v = vld1q_u8(x[ib].qs);
        const uint8x16_t lo = vorrq_u8(vandq_u8(v, m4), vandq_u8(vtstq_u8(hb0, bitsel), b16));
        const uint8x16_t hi = vorrq_u8(vshrq_n_u8(v, 4), vandq_u8(vtstq_u8(hb1, bitsel), b16));
        int32x4_t p = dot16(vdupq_n_s32(0), vsubq_s8(vreinterpretq_s8_u8(lo), sixteen), vld1q_s8(y[ib].qs));
        p = dot16(p, vsubq_s8(vreinterpretq_s8_u8(hi), sixteen), vld1q_s8(y[ib].qs + 16));
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(p), h2f(x[ib].d) * h2f(y[ib].d));
    }
    *s = vaddvq_f32(acc);
}

static void q8_0_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q8_0 *x = vx, *y = vy;
    const int nb = n / QK8_0;
    float32x4_t acc0 = vdupq_n_f32(0), acc1 = vdupq_n_f32(0);
#define Q8_0_BLOCK(acc, b)                                                                    \
    do {                                                                                      \
        int32x4_t p = dot16(vdupq_n_s32(0), vld1q_s8(x[b].qs), vld1q_s8(y[b].qs));            \
        p = dot16(p, vld1q_s8(x[b].qs + 16), vld1q_s8(y[b].qs + 16));                         \
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(p), h2f(x[b].d) * h2f(y[b].d));                  \
    } while (0)
    int ib = 0;
    for (; ib + 1 < nb; ib += 2) {
        Q8_0_BLOCK(acc0, ib);
        Q8_0_BLOCK(acc1, ib + 1);
    }
    if (ib < nb) Q8_0_BLOCK(acc0, ib);
#undef Q8_0_BLOCK
    *s = vaddvq_f32(vaddq_f32(acc0, acc1));
}

/* ---- K-quants ------------------------------------------------------------------------------------ */

static void q4_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q4_K *x = vx;
    const struct block_q8_K *y = vy;
    const int nb = n / QK_K;
    const uint8x16_t m4 = vdupq_n_u8(0xF);
    float sumf = 0;
    for (int i = 0; i < nb; i++) {
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++) quant_scale_min_k4(j, x[i].scales, &sc[j], &m[j]);
        /* mins: sum_j m[j] * (bsums[2j] + bsums[2j+1]) */
        const int16x8_t bs = vpaddq_s16(vld1q_s16(y[i].bsums), vld1q_s16(y[i].bsums + 8));
        const int16x8_t mv = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m)));
        const int32x4_t mp = vmlal_high_s16(vmull_s16(vget_low_s16(mv), vget_low_s16(bs)), mv, bs);
        const int summ = vaddvq_s32(mp);
        const uint8_t *q4 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        int sumi = 0;
        for (int c = 0; c < 4; c++, q4 += 32, q8 += 64) {
            const uint8x16_t v0 = vld1q_u8(q4), v1 = vld1q_u8(q4 + 16);
            int32x4_t pl = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(v0, m4)), vld1q_s8(q8));
            pl = dot16(pl, vreinterpretq_s8_u8(vandq_u8(v1, m4)), vld1q_s8(q8 + 16));
            int32x4_t ph = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vshrq_n_u8(v0, 4)), vld1q_s8(q8 + 32));
            ph = dot16(ph, vreinterpretq_s8_u8(vshrq_n_u8(v1, 4)), vld1q_s8(q8 + 48));
            sumi += vaddvq_s32(pl) * sc[2 * c] + vaddvq_s32(ph) * sc[2 * c + 1];
        }
        sumf += quant_h2f(x[i].d) * y[i].d * (float)sumi - quant_h2f(x[i].dmin) * y[i].d * (float)summ;
    }
    *s = sumf;
}

static void q5_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q5_K *x = vx;
    const struct block_q8_K *y = vy;
    const int nb = n / QK_K;
    const uint8_t one = 1;
    const uint8x16_t m4 = vdupq_n_u8(0xF), b1 = vdupq_n_u8(one);
    float sumf = 0;
    for (int i = 0; i < nb; i++) {
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++) quant_scale_min_k4(j, x[i].scales, &sc[j], &m[j]);
        const int16x8_t bs = vpaddq_s16(vld1q_s16(y[i].bsums), vld1q_s16(y[i].bsums + 8));
        const int16x8_t mv = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m)));
        const int32x4_t mp = vmlal_high_s16(vmull_s16(vget_low_s16(mv), vget_low_s16(bs)), mv, bs);
        const int summ = vaddvq_s32(mp);
        const uint8x16_t h0 = vld1q_u8(x[i].qh), h1 = vld1q_u8(x[i].qh + 16);
        const uint8_t *q5 = x[i].qs;
        const int8_t *q8 = y[i].qs;
        int sumi = 0;
        for (int c = 0; c < 4; c++, q5 += 32, q8 += 64) {
            /* bit 2c of qh[l] is bit 4 of element 64c + l, bit 2c+1 that of 64c + 32 + l */
            const int8x16_t sl = vdupq_n_s8((int8_t)(-2 * c)), sh = vdupq_n_s8((int8_t)(-2 * c - 1));
            const uint8x16_t v0 = vld1q_u8(q5), v1 = vld1q_u8(q5 + 16);
            const uint8x16_t l0 = vorrq_u8(vandq_u8(v0, m4), vshlq_n_u8(vandq_u8(vshlq_u8(h0, sl), b1), 4));
            const uint8x16_t l1 = vorrq_u8(vandq_u8(v1, m4), vshlq_n_u8(vandq_u8(vshlq_u8(h1, sl), b1), 4));
            const uint8x16_t u0 = vorrq_u8(vshrq_n_u8(v0, 4), vshlq_n_u8(vandq_u8(vshlq_u8(h0, sh), b1), 4));
            const uint8x16_t u1 = vorrq_u8(vshrq_n_u8(v1, 4), vshlq_n_u8(vandq_u8(vshlq_u8(h1, sh), b1), 4));
            int32x4_t pl = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(l0), vld1q_s8(q8));
            pl = dot16(pl, vreinterpretq_s8_u8(l1), vld1q_s8(q8 + 16));
            int32x4_t ph = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(u0), vld1q_s8(q8 + 32));
            ph = dot16(ph, vreinterpretq_s8_u8(u1), vld1q_s8(q8 + 48));
            sumi += vaddvq_s32(pl) * sc[2 * c] + vaddvq_s32(ph) * sc[2 * c + 1];
        }
        sumf += quant_h2f(x[i].d) * y[i].d * (float)sumi - quant_h2f(x[i].dmin) * y[i].d * (float)summ;
    }
    *s = sumf;
}

static void q6_K_vec_dot(int n, float *s, const void *vx, const void *vy)
{
    const struct block_q6_K *x = vx;
    const struct block_q8_K *y = vy;
    const int nb = n / QK_K;
    const uint8x16_t m4 = vdupq_n_u8(0xF), m3 = vdupq_n_u8(3);
    const int8x16_t off = vdupq_n_s8(32);
    float sumf = 0;
    for (int i = 0; i < nb; i++) {
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *q8 = y[i].qs, *sc = x[i].scales;
        int sumi = 0;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, q8 += 128, sc += 8) {
            for (int part = 0; part < 2; part++) { /* l in [16 * part, 16 * part + 16) */
                const uint8x16_t a = vld1q_u8(ql + 16 * part), b = vld1q_u8(ql + 32 + 16 * part);
                const uint8x16_t hb = vld1q_u8(qh + 16 * part);
                uint8x16_t q[4];
                q[0] = vorrq_u8(vandq_u8(a, m4), vshlq_n_u8(vandq_u8(hb, m3), 4));
                q[1] = vorrq_u8(vandq_u8(b, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), m3), 4));
                q[2] = vorrq_u8(vshrq_n_u8(a, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), m3), 4));
                q[3] = vorrq_u8(vshrq_n_u8(b, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4));
                for (int k = 0; k < 4; k++) {
                    /* elements 128h + 32k + 16 part .. +16: scale index 8h + 2k + part */
                    const int8x16_t qs = vsubq_s8(vreinterpretq_s8_u8(q[k]), off);
                    const int32x4_t p = dot16(vdupq_n_s32(0), qs, vld1q_s8(q8 + 32 * k + 16 * part));
                    sumi += vaddvq_s32(p) * sc[2 * k + part];
                }
            }
        }
        sumf += quant_h2f(x[i].d) * y[i].d * (float)sumi;
    }
    *s = sumf;
}

void quant_neon_install(struct quant_traits *tab)
{
    tab[QT_F32].vec_dot = f32_vec_dot;
    tab[QT_F16].vec_dot = f16_vec_dot;
    tab[QT_F16].to_float = f16_to_f32_row;
    tab[QT_F16].from_float = f32_to_f16_row;
    tab[QT_BF16].vec_dot = bf16_vec_dot;
    tab[QT_Q8_0].from_float = q8_0_from_float;
    tab[QT_Q4_0].vec_dot = q4_0_vec_dot;
    tab[QT_Q5_0].vec_dot = q5_0_vec_dot;
    tab[QT_Q8_0].vec_dot = q8_0_vec_dot;
    tab[QT_Q4_K].vec_dot = q4_K_vec_dot;
    tab[QT_Q5_K].vec_dot = q5_K_vec_dot;
    tab[QT_Q6_K].vec_dot = q6_K_vec_dot;
}
