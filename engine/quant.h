/* quant.h - tensor element types, their block layouts, and the kernels on them.
 *
 * Type numbers are GGUF's (= ggml's `enum ggml_type`), so a type read from a file
 * indexes quant_traits() directly. Block layouts are exactly those GGUF files hold
 * (see quant_blocks.h). Each type has one traits entry: block geometry, reference
 * (scalar) conversion to and from float, and the dot product of a weight row with an
 * activation row quantized to the type's `vec_dot_type` (Q8_0 for Q4_0/Q5_0/Q8_0,
 * Q8_K for the K-quants, F16 for F16, BF16 for BF16, F32 for F32), exactly as
 * llama.cpp pairs them, so our outputs agree with its.
 *
 * ISA dispatch: quant_init() picks the best kernels the CPU supports (AVX-512 > AVX2 >
 * scalar on x86-64, NEON on aarch64). MESHLLM_ISA=scalar|avx2|avx512|neon forces a
 * path (tests use it); forcing a path the CPU lacks falls back to scalar with a warning.
 * The scalar reference kernels are always compiled and stay reachable through
 * quant_traits_ref() so tests can compare every SIMD kernel against them.
 * Thread rule: quant_init() once at start-up (idempotent, thread-safe); the rest are
 * pure functions, callable from any thread.
 */
#ifndef MESH_ENGINE_QUANT_H
#define MESH_ENGINE_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum qtype {
    QT_F32 = 0,
    QT_F16 = 1,
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q5_0 = 6,
    QT_Q5_1 = 7,
    QT_Q8_0 = 8,
    QT_Q8_1 = 9,
    QT_Q2_K = 10,
    QT_Q3_K = 11,
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14,
    QT_Q8_K = 15,
    QT_I8 = 24,
    QT_I16 = 25,
    QT_I32 = 26,
    QT_I64 = 27,
    QT_F64 = 28,
    QT_BF16 = 30,
    QT_COUNT = 40 /* upper bound of the table; not a type */
};

/* n weights of src (n % block_len == 0) -> n floats. */
typedef void (*quant_to_float_fn)(const void *src, float *dst, int64_t n);
/* n floats -> n weights in this type's blocks (n % block_len == 0). */
typedef void (*quant_from_float_fn)(const float *src, void *dst, int64_t n);
/* *s = dot(x, y) over n elements; x is one row of this type, y one row of vec_dot_type. */
typedef void (*quant_vec_dot_fn)(int n, float *s, const void *x, const void *y);
/* s[r] = dot(row r, y) for r < nr, row r at (const char *)x + r * bx: nr weight rows
 * against one activation row, sharing the activation's loads and unpacking across rows. */
typedef void (*quant_vec_dot_rows_fn)(int n, float *s, const void *x, size_t bx, const void *y,
                                      int nr);

/* s[c * lds + r] = dot(row r of x, row c of y) for r < nr, c < nc: nr weight rows (bx
 * bytes apart) against nc activation rows of vec_dot_type (by bytes apart), e.g. a
 * prompt batch. lds is in floats. Weight unpacking is shared across the columns and
 * activation work across the rows. */
typedef void (*quant_gemm_fn)(int n, float *s, size_t lds, const void *x, size_t bx, int nr,
                              const void *y, size_t by, int nc);

struct quant_traits {
    const char *name;          /* "Q4_K", as llama.cpp prints it */
    int block_len;             /* elements per block (1 for F32/F16/BF16) */
    size_t block_bytes;        /* bytes per block */
    bool is_quantized;
    enum qtype vec_dot_type;   /* type activations are converted to for vec_dot */
    quant_to_float_fn to_float;     /* NULL if the engine cannot read this type */
    quant_from_float_fn from_float; /* NULL if the engine cannot write this type */
    quant_vec_dot_fn vec_dot;       /* NULL if the type cannot be a weight */
    quant_vec_dot_rows_fn vec_dot_rows; /* NULL where the path has no multi-row kernel:
                                         * use quant_vec_dot_rows(), which falls back */
    quant_gemm_fn gemm;             /* NULL where the path has no tile kernel: use
                                     * quant_gemm(), which falls back */
};

/* Selects kernels for this CPU (and MESHLLM_ISA). Safe to call more than once. */
void quant_init(void);
/* Name of the selected kernel path: "scalar", "avx2", "avx512", "neon". */
const char *quant_isa_name(void);

/* The CPU's name and the instruction-set features the kernels look at, into buf ("AMD EPYC:
 * avx2 fma f16c bmi2 avx512f avx512dq avx512bw avx512vl avx512vnni avx512bf16" on x86-64;
 * "aarch64: asimd dotprod i8mm" on ARM), for benchmark tables. Returns buf. */
const char *quant_cpu_describe(char *buf, size_t cap);

/* Traits of type t with the selected (fastest) kernels; NULL for an unknown number.
 * Entries for types we cannot compute with have NULL function pointers. */
const struct quant_traits *quant_traits(int t);
/* Same with the scalar reference kernels (for tests and as the judge). */
const struct quant_traits *quant_traits_ref(int t);

/* Traits of type t with the kernels of one named path ("scalar", "avx2", "avx512",
 * "neon"), ignoring MESHLLM_ISA; NULL if t is unknown or this CPU or build lacks the
 * path. Lets tests and benchmarks run every path the machine has in one process. */
const struct quant_traits *quant_traits_isa(const char *isa, int t);
/* Whether this CPU and build can run the named path. */
bool quant_isa_supported(const char *isa);

/* s[r] = dot(row r of x, y) for r < nr (rows bx bytes apart) with tr's kernels: its
 * vec_dot_rows when it has one, else nr vec_dot calls. Results equal nr vec_dot calls
 * up to float summation order. tr->vec_dot must not be NULL. Matmuls should hand it
 * blocks of rows (4-16) rather than calling vec_dot per row: on AVX2/AVX-512 the Q4_0
 * multi-row kernels do about half the instructions per row. */
void quant_vec_dot_rows(const struct quant_traits *tr, int n, float *s, const void *x, size_t bx,
                        const void *y, int nr);

/* The tile product of quant_gemm_fn with tr's kernels: its gemm when it has one, else
 * quant_vec_dot_rows per column. Results equal vec_dot per (row, column) up to float
 * summation order. Use it for prompt batches (nc > 1): on AVX-512 the Q4_0/Q8_0 tile
 * kernels do a quarter of vec_dot's instructions per row and column. */
void quant_gemm(const struct quant_traits *tr, int n, float *s, size_t lds, const void *x,
                size_t bx, int nr, const void *y, size_t by, int nc);

/* Bytes of a row of n elements of type t; 0 if t is unknown or n % block_len != 0. */
size_t quant_row_bytes(int t, int64_t n);
/* Type from its name ("Q4_K", case-insensitive); -1 if unknown. */
int quant_type_from_name(const char *name);

/* IEEE half and bfloat16 conversions (round to nearest even, as ggml does). */
float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);
/* Bulk conversions (vectorised where the CPU allows). */
void quant_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n);
void quant_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n);

/* Quantization with an importance matrix is not supported; plain round-to-nearest
 * with llama.cpp's reference scale search (make_qkx2_quants etc.) is used. */

#endif
