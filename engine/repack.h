/* repack.h - Q4_0 weights repacked into 8-row interleaved groups for decode.
 *
 * A decode step (one token) multiplies every weight row by one Q8_0 activation row.
 * Reading the mmapped rows in place streams 18-byte blocks row after row; here, at load
 * time, each group of 8 consecutive rows is rewritten block column by block column
 * (struct repack_q4_0x8: the 8 rows' scales, then the 8 rows' 16 nibble bytes, row
 * after row), so a kernel reads one contiguous 144-byte record per block for 8 rows and
 * shares one activation block load (and its offset sum) among them. The repacked copy
 * lives in anonymous memory, so resident memory grows by the Q4_0 weights' size; the
 * original rows stay mapped and serve prompt batches. The idea follows llama.cpp's
 * block_q4_0x8; the layout and kernels here are our own.
 *
 * repack_gemv_q4_0_q8_0 gives the same sums as quant's Q4_0 vec_dot up to float
 * summation order (per block the integer dot is exact); repack_ref_gemv_q4_0_q8_0 is
 * the scalar reference the AVX2 / AVX-512 kernels are tested against.
 */
#ifndef MESH_ENGINE_REPACK_H
#define MESH_ENGINE_REPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { REPACK_ROWS = 8 };

/* One block column (32 weights) of 8 rows: d[r] is row r's F16 scale, qs[r * 16 + j]
 * is row r's nibble byte j (low nibble = weight j, high nibble = weight j + 16). */
struct repack_q4_0x8 {
    uint16_t d[REPACK_ROWS];
    uint8_t qs[REPACK_ROWS * 16];
};
_Static_assert(sizeof(struct repack_q4_0x8) == 144, "repack_q4_0x8 is 144 bytes");

/* True when decode should use repacked Q4_0 weights: an x86-64 build whose selected
 * kernels (quant_isa_name) are avx2 or avx512, and MESHLLM_NO_REPACK unset or "0". */
bool repack_enabled(void);

/* Bytes of the repacked copy of nrows Q4_0 rows of n elements (n % 32 == 0, nrows %
 * 8 == 0); 0 if the shape does not qualify or the size overflows. */
size_t repack_q4_0_bytes(int64_t n, int64_t nrows);

/* dst (repack_q4_0_bytes(n, nrows) bytes) <- the nrows Q4_0 rows at src (row_bytes
 * apart) in 8-row groups: group g is nb = n / 32 records, record ib of group g holds
 * block ib of rows 8g..8g+7. Returns 0, or MESH_EINVAL if the shape does not qualify. */
int repack_q4_0(const void *src, size_t row_bytes, int64_t n, int64_t nrows, void *dst);

/* s[r] = dot(row r, y) for r < nr (nr % 8 == 0) where x is the repacked copy starting
 * at a group boundary and y one Q8_0 row of n elements. Dispatches on quant_isa_name. */
void repack_gemv_q4_0_q8_0(int n, float *s, const void *x, int nr, const void *y);
/* The scalar reference: per row, exact int32 block dots scaled and summed in order. */
void repack_ref_gemv_q4_0_q8_0(int n, float *s, const void *x, int nr, const void *y);

/* Internal: the SIMD kernels (repack_avx2.c, repack_avx512.c); same contract. */
void repack_avx2_gemv_q4_0_q8_0(int n, float *s, const void *x, int nr, const void *y);
void repack_avx512_gemv_q4_0_q8_0(int n, float *s, const void *x, int nr, const void *y);

/* ---- 16-row groups (work in progress: replaces the 8-row Q4_0 layout above) ----------
 * Every kind below rewrites a weight matrix whose row count is a multiple of
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
