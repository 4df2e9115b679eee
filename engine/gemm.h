/* gemm.h - prompt-batch tile products with activation sums prepared once per batch.
 *
 * quant_gemm (quant.h) multiplies weight rows by activation rows; its AVX-512 Q4_0 tile
 * makes (q - 8) signed and carries the sign into each activation column, per row group
 * and column. Here the activation side is prepared once per batch instead: for every
 * Q8_0 block of every column, -2 * sum(qs) (so four int32 lanes add up to -8 * sum, the
 * offset of Q4_0's q - 8), the block scale as a float, and the values + 128 as bytes. Then the VNNI tile multiplies
 * the raw nibbles q (0..15, unsigned) by the activations (signed) with vpdpbusd starting
 * from that offset: per column and block, three broadcasts, two dpbusd per 4-row group,
 * a conversion and two float ops, with one broadcast shared by 8 rows.
 *
 * gemm_q4_0_q8_0 gives the same sums as quant's Q4_0 vec_dot up to float summation
 * order; gemm_ref_q4_0_q8_0 is the scalar reference (tests compare against it). The
 * AVX-512 VNNI kernel runs when quant_isa_name() is "avx512" (MESHLLM_ISA is honoured);
 * other paths use quant_gemm.
 */
#ifndef MESH_ENGINE_GEMM_H
#define MESH_ENGINE_GEMM_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of the prepared sums of nc activation rows of n elements (n % 32 == 0). */
size_t gemm_q8_0_aux_bytes(int n, int nc);
/* aux (gemm_q8_0_aux_bytes(n, nc) bytes, 4-aligned) <- sums and scales of the nc Q8_0
 * rows of n elements at y (by bytes apart). */
void gemm_q8_0_prepare(int n, const void *y, size_t by, int nc, void *aux);

/* s[c * lds + r] = dot(Q4_0 row r, Q8_0 row c) for r < nr, c < nc; weight rows bx bytes
 * apart, activation rows by bytes apart, aux prepared from the same activations. */
void gemm_q4_0_q8_0(int n, float *s, size_t lds, const void *x, size_t bx, int nr, const void *y,
                    size_t by, int nc, const void *aux);
/* The scalar reference of the same product (aux unused by the arithmetic, checked only
 * for consistency by tests through gemm_q4_0_q8_0). */
void gemm_ref_q4_0_q8_0(int n, float *s, size_t lds, const void *x, size_t bx, int nr,
                        const void *y, size_t by, int nc);

/* The same for Q8_0 weights: s[c * lds + r] = dot(Q8_0 row r, Q8_0 row c). The VNNI
 * kernel multiplies the prepared activations + 128 (unsigned) by the weights (signed)
 * from an offset of -128 * sum(weights) per block, computed once per row group and
 * block and shared by every column, again exact in int32. */
void gemm_q8_0_q8_0(int n, float *s, size_t lds, const void *x, size_t bx, int nr, const void *y,
                    size_t by, int nc, const void *aux);
void gemm_ref_q8_0_q8_0(int n, float *s, size_t lds, const void *x, size_t bx, int nr,
                        const void *y, size_t by, int nc);

/* Internal: the AVX-512 VNNI kernels (gemm_avx512.c); same contracts as above. */
void gemm_avx512_q4_0_q8_0(int n, float *s, size_t lds, const void *x, size_t bx, int nr,
                           const void *y, size_t by, int nc, const void *aux);
void gemm_avx512_q8_0_q8_0(int n, float *s, size_t lds, const void *x, size_t bx, int nr,
                           const void *y, size_t by, int nc, const void *aux);

#endif
