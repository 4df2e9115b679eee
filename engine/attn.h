/* attn.h - causal attention of one GQA group of query heads over a KV cache.
 *
 * One call computes, for each of the n_q query heads that share one K/V head,
 *   out_i = sum_p softmax_p(scale * q_i . k_p) v_p   over the positions p < n_kv,
 * with the numerics of llama.cpp's CPU backend (ggml_mul_mat + ggml_soft_max): with an F16
 * cache the query is rounded to F16 and each score is the dot of F16 values with products
 * summed in float; the softmax sum is taken in double; the probabilities are rounded to F16
 * before they multiply the F16 V rows; V is accumulated in float. With an F32 cache
 * nothing is rounded to F16. A Q8_0 or Q4_0 cache (rows of whole 32-element blocks, as
 * GGUF lays them out) is read in place: each 8 or 16 elements are dequantized in registers
 * as they are used (d * q, exact in float), the query stays float against a quantized K
 * and the probabilities stay float against a quantized V. K and V may have different
 * types. Doing a whole group per call lets the SIMD kernels load each K and V row once
 * for all its query heads.
 * Not here: masks other than "the first n_kv positions", ALiBi, soft-capping, flash
 * attention's running softmax (the scores of all n_kv positions are kept in scratch).
 */
#ifndef MESH_ENGINE_ATTN_H
#define MESH_ENGINE_ATTN_H

#include <stdbool.h>
#include <stddef.h>

enum { ATTN_MAX_GROUP = 64 }; /* largest n_q per call */

/* Element type of a cache row. Quantized rows are whole blocks of 32 elements. */
enum attn_kv_type { ATTN_KV_F32 = 0, ATTN_KV_F16 = 1, ATTN_KV_Q8_0 = 2, ATTN_KV_Q4_0 = 3 };

/* One call's operands; nothing is owned. */
struct attn_group_args {
    int head_dim;      /* elements per head, >= 1 */
    int n_q;           /* query heads sharing the K/V head, 1..ATTN_MAX_GROUP */
    int n_kv;          /* cached positions attended (0..n_kv-1), >= 1 */
    enum attn_kv_type k_type, v_type; /* element types of the K and V rows */
    const float *q;    /* [n_q][head_dim] query rows, contiguous */
    const void *k;     /* element e of position p's key: element p * kv_stride + kv_off + e */
    const void *v;     /* of the cache at k (v), counted in elements of k_type (v_type) */
    size_t kv_stride;  /* elements between consecutive positions, >= head_dim; a multiple
                        * of 32 for a quantized type */
    size_t kv_off;     /* element offset of this head in a row; a multiple of 8 (16 for
                        * the AVX-512 path) for quantized types, else any */
    float scale;       /* multiplies q . k (1 / sqrt(head_dim) for Llama) */
    float *out;        /* [n_q][head_dim] results; must not overlap q */
    void *scratch;     /* attn_scratch_bytes(head_dim, n_q, >= n_kv) bytes, 64-byte aligned */
};

/* Bytes of scratch one call with these sizes needs (n_ctx = the largest n_kv the caller
 * will pass); 0 if a size is out of range or the product overflows. The caller keeps one
 * such buffer per thread: a call allocates nothing. */
size_t attn_scratch_bytes(int head_dim, int n_q, int n_ctx);

/* Attention of one GQA group (the contract at the top of the file). Dispatches on
 * quant_isa_name(), so MESHLLM_ISA=scalar|avx2|avx512 forces a path; thread-safe when
 * each thread has its own scratch and out. */
void attn_group(const struct attn_group_args *a);

/* The scalar reference: scores, softmax and V sums one head at a time, in position order,
 * with libm's expf. The SIMD paths agree with it within float rounding (tests/test_attn.c
 * states the bound). */
void attn_ref_group(const struct attn_group_args *a);

/* Internal: the SIMD kernels (attn_avx2.c, attn_avx512.c); same contract. They hand
 * shapes they do not cover (head_dim % 8 != 0) to the next path down. */
void attn_avx2_group(const struct attn_group_args *a);
void attn_avx512_group(const struct attn_group_args *a);

#endif
