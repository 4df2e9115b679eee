/* act.h - elementwise activations of the forward pass: SwiGLU's silu(gate) * up.
 *
 * act_swiglu_ref is the scalar reference (libm expf); the AVX2 and AVX-512 versions use
 * engine/simd_exp.h's e^x (about 1 ulp), as ggml's CPU backend also computes SiLU with a
 * vectorised exponential. act_swiglu_select() returns the function for the kernels
 * quant_init chose (MESHLLM_ISA is honoured), once per context. Pure functions, any
 * thread.
 */
#ifndef MESH_ENGINE_ACT_H
#define MESH_ENGINE_ACT_H

#include <stdint.h>

/* g[i] = g[i] / (1 + e^-g[i]) * u[i] for i < n. */
typedef void (*act_swiglu_fn)(float *g, const float *u, int64_t n);

act_swiglu_fn act_swiglu_select(void);
void act_swiglu_ref(float *g, const float *u, int64_t n);

/* Internal: the SIMD versions (act_avx2.c, act_avx512.c); x86-64 builds only. */
void act_avx2_swiglu(float *g, const float *u, int64_t n);
void act_avx512_swiglu(float *g, const float *u, int64_t n);

#endif
