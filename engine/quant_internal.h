/* quant_internal.h - shared between quant.c, quant_ref.c and the kernels_<isa>.c files.
 *
 * The scalar reference kernels (quant_ref.c) are the judge: every ISA file installs
 * kernels with the same signatures over a copy of the reference table, replacing only
 * the entries it implements. The F16 entry's to_float/from_float are also the bulk
 * row conversions (quant_f16_to_f32_row). Not part of the engine's public API.
 */
#ifndef MESH_ENGINE_QUANT_INTERNAL_H
#define MESH_ENGINE_QUANT_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/quant.h"
#include "engine/quant_blocks.h"

/* Every half as a float (quant_f16_to_f32), filled by quant_init before any kernel is
 * installed; read-only afterwards. SIMD kernels broadcast block scales from it. */
extern float quant_f16_lut[1 << 16];

/* Round to nearest, ties to even, for |f| <= 2^22 (ggml's nearest_int: adding
 * 1.5 * 2^23 leaves the rounded integer in the low mantissa bits). */
static inline int quant_nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* Half to float through the table (valid once quant_init ran: every way to reach a
 * kernel - quant_traits, quant_traits_ref, quant_traits_isa - runs it first). */
static inline float quant_h2f(uint16_t h) { return quant_f16_lut[h]; }

static inline float quant_bf2f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Q4_K / Q5_K 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes. */
static inline void quant_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* ---- scalar reference kernels (quant_ref.c) ------------------------------------- */
void quant_ref_f32_to_float(const void *src, float *dst, int64_t n);
void quant_ref_f32_from_float(const float *src, void *dst, int64_t n);
void quant_ref_f32_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_f16_to_float(const void *src, float *dst, int64_t n);
void quant_ref_f16_from_float(const float *src, void *dst, int64_t n);
void quant_ref_f16_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_bf16_to_float(const void *src, float *dst, int64_t n);
void quant_ref_bf16_from_float(const float *src, void *dst, int64_t n);
void quant_ref_bf16_vec_dot(int n, float *s, const void *x, const void *y);

void quant_ref_q4_0_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q4_0_from_float(const float *src, void *dst, int64_t n);
void quant_ref_q4_0_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_q4_1_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q4_1_from_float(const float *src, void *dst, int64_t n);
void quant_ref_q4_1_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_q5_0_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q5_0_from_float(const float *src, void *dst, int64_t n);
void quant_ref_q5_0_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_q5_1_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q5_1_from_float(const float *src, void *dst, int64_t n);
void quant_ref_q5_1_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_q8_1_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q8_1_from_float(const float *src, void *dst, int64_t n);
void quant_ref_q8_0_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q8_0_from_float(const float *src, void *dst, int64_t n);
void quant_ref_q8_0_vec_dot(int n, float *s, const void *x, const void *y);

void quant_ref_q2_K_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q2_K_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_q3_K_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q3_K_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_q4_K_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q4_K_from_float(const float *src, void *dst, int64_t n);
void quant_ref_q4_K_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_q5_K_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q5_K_from_float(const float *src, void *dst, int64_t n);
void quant_ref_q5_K_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_q6_K_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q6_K_from_float(const float *src, void *dst, int64_t n);
void quant_ref_q6_K_vec_dot(int n, float *s, const void *x, const void *y);
void quant_ref_q8_K_to_float(const void *src, float *dst, int64_t n);
void quant_ref_q8_K_from_float(const float *src, void *dst, int64_t n);

/* ---- ISA kernel sets: each overrides the entries it implements -------------------- */
/* tab has QT_COUNT entries; called once per path by quant.c. */
#if defined(__x86_64__)
void quant_avx2_install(struct quant_traits *tab);
void quant_avx512_install(struct quant_traits *tab);
#endif
#if defined(__aarch64__)
void quant_neon_install(struct quant_traits *tab);
#endif

#endif
