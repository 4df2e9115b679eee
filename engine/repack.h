/* repack.h - weight matrices rewritten at load time into 16-row interleaved groups.
 *
 * A matrix product reads every weight once per pass; the GGUF row layout makes a kernel
 * stream one row's blocks and re-broadcast the activations for every row. Here, at load
 * time, each group of REPACK_GROUP consecutive rows is rewritten block column by block
 * column so that one 512-bit register holds the same 4-byte slice of all 16 rows: the
 * activation operand of a vpdpbusd is then one 32-bit broadcast from memory, each lane
 * of the integer accumulator is one row's whole block dot (no cross-lane sums), and the
 * 16 row scales convert with one vcvtph2ps. The copy replaces the original rows: the
 * model drops the mapped originals from memory once packed (RSS stays the file's size).
 * The idea of row interleaving follows llama.cpp's block_q4_0x8; this layout, the
 * kernels and the activation sums are our own.
 *
 * Layouts (one record per block column ib of a 16-row group; groups are nb = n / 32
 * records, contiguous):
 *   Q4_0: struct repack_q4_0x16: d[r] row r's F16 scale; qs[k][r][0..3] row r's nibble
 *         bytes 4k..4k+3 (low nibbles: weights 4k..4k+3, high: 16+4k..16+4k+3).
 *   Q8_0: struct repack_q8_0x16: d[r]; qs[k][r][0..3] = row r's weights 4k..4k+3 + 128
 *         (as unsigned bytes, so vpdpbusd can take them as its unsigned operand).
 * Both subtract the offset (8 resp. 128) times the activation block's sum, which the
 * caller computes once per activation row with repack_q8_0_sums.
 */
#ifndef MESH_ENGINE_REPACK_H
#define MESH_ENGINE_REPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/quant.h"

/* Every kind rewrites a weight matrix whose row count is a multiple of
 * REPACK_GROUP into groups of REPACK_GROUP consecutive rows, laid out so one SIMD
 * register holds the same 4-byte column slice of all the rows of a group and the
 * activation side is a plain 32-bit broadcast. All kernels share one contract,
 * repack_gemm_fn:
 *   s[c * lds + r] = dot(weight row r, activation row c) for r < nr, c < nc, where x is
 *   the repacked copy starting at a group boundary, nr % REPACK_GROUP == 0, y holds nc
 *   activation rows of the weight type's vec_dot_type (Q8_0 or Q8_K) by bytes apart and
 *   ysum, when the kind asks for it, nc rows of n / 32 int32 sums of y's Q8_0 blocks
 *   (repack_q8_0_sums), n / 32 apart. nc == 1 is decode. The results equal the
 *   type's quant vec_dot up to float summation order. */
enum { REPACK_GROUP = 16 };

typedef void (*repack_gemm_fn)(int n, float *s, size_t lds, const void *x, int nr,
                               const void *y, size_t by, const int32_t *ysum, int nc);

struct repack_q4_0x16 {
    uint16_t d[REPACK_GROUP];
    uint8_t qs[4][REPACK_GROUP][4];
};
_Static_assert(sizeof(struct repack_q4_0x16) == 16 * 18, "repack_q4_0x16 is 16 Q4_0 blocks");

struct repack_q8_0x16 {
    uint16_t d[REPACK_GROUP];
    uint8_t qs[8][REPACK_GROUP][4];
};
_Static_assert(sizeof(struct repack_q8_0x16) == 16 * 34, "repack_q8_0x16 is 16 Q8_0 blocks");

/* One weight type's repacking and the kernel the selected ISA runs on it. */
struct repack_kind {
    enum qtype type;
    /* Bytes of the packed copy of nrows rows of n elements; 0 if the shape does not
     * qualify (nrows % REPACK_GROUP, n not whole blocks) or the size overflows. */
    size_t (*bytes)(int64_t n, int64_t nrows);
    /* dst <- the nrows rows at src (row_bytes apart); 0 or MESH_EINVAL on a bad shape. */
    int (*pack)(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst);
    repack_gemm_fn gemm;
    bool needs_ysum; /* gemm reads ysum (repack_q8_0_sums of each activation row) */
};

/* The kind for weights of `type` on the kernels quant_init selected (MESHLLM_ISA is
 * honoured), or NULL: no packed kernel for the type or ISA (scalar and NEON paths
 * multiply the GGUF rows in place), or MESHLLM_NO_REPACK set to anything but "0". */
const struct repack_kind *repack_kind_get(enum qtype type);

/* sums[b] = sum of the 32 quants of Q8_0 block b of the row y of n elements. */
void repack_q8_0_sums(int n, const void *y, int32_t *sums);

/* Q4_0 and Q8_0 weights against Q8_0 activations (ysum required). */
size_t repack_q4_0_bytes(int64_t n, int64_t nrows);
int repack_q4_0(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst);
void repack_ref_gemm_q4_0_q8_0(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                               size_t by, const int32_t *ysum, int nc);
void repack_avx2_gemm_q4_0_q8_0(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                                size_t by, const int32_t *ysum, int nc);
void repack_avx512_gemm_q4_0_q8_0(int n, float *s, size_t lds, const void *x, int nr,
                                  const void *y, size_t by, const int32_t *ysum, int nc);
size_t repack_q8_0_bytes(int64_t n, int64_t nrows);
int repack_q8_0(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst);
void repack_ref_gemm_q8_0_q8_0(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                               size_t by, const int32_t *ysum, int nc);
void repack_avx2_gemm_q8_0_q8_0(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                                size_t by, const int32_t *ysum, int nc);
void repack_avx512_gemm_q8_0_q8_0(int n, float *s, size_t lds, const void *x, int nr,
                                  const void *y, size_t by, const int32_t *ysum, int nc);

/* Q4_K (n % 256 == 0) and Q6_K weights against Q8_K activations (ysum unused). */
size_t repack_q4_k_bytes(int64_t n, int64_t nrows);
int repack_q4_k(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst);
void repack_ref_gemm_q4_k_q8_k(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                               size_t by, const int32_t *ysum, int nc);
void repack_avx2_gemm_q4_k_q8_k(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                                size_t by, const int32_t *ysum, int nc);
void repack_avx512_gemm_q4_k_q8_k(int n, float *s, size_t lds, const void *x, int nr,
                                  const void *y, size_t by, const int32_t *ysum, int nc);
size_t repack_q6_k_bytes(int64_t n, int64_t nrows);
int repack_q6_k(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst);
void repack_ref_gemm_q6_k_q8_k(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                               size_t by, const int32_t *ysum, int nc);
void repack_avx2_gemm_q6_k_q8_k(int n, float *s, size_t lds, const void *x, int nr, const void *y,
                                size_t by, const int32_t *ysum, int nc);
void repack_avx512_gemm_q6_k_q8_k(int n, float *s, size_t lds, const void *x, int nr,
                                  const void *y, size_t by, const int32_t *ysum, int nc);

#endif
