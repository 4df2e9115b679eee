/* quantize.h - convert a GGUF model file to another weight type or llama.cpp mix.
 *
 * quantize_model() reads a model (mmap), picks each tensor's output type exactly as
 * llama.cpp's llama-quantize does for the same file type (src/llama-quant.cpp,
 * llama_tensor_get_type, no importance matrix), and writes the result atomically with
 * engine/gguf's streaming writer: output.weight to Q6_K, attn_v / ffn_down to Q6_K on
 * the "use_more_bits" layers for Q4_K_M / Q5_K_M, row-length fallbacks (Q4_K -> Q5_0,
 * Q5_K -> Q5_1, Q6_K -> Q8_0, then F16 when a row is not a multiple of 32), 1-D tensors
 * and *_norm.weight kept, tensors sorted by layer then name, general.file_type and
 * general.quantization_version set. Where llama.cpp gives up (plain Q4_0/Q5_0/Q8_0 on
 * rows that are not a multiple of 32) we fall back to F16 instead.
 * Rows are converted on a thread pool with quant_traits(type)->from_float.
 * Thread rule: each call is independent; the progress callback runs on the calling thread.
 */
#ifndef MESH_ENGINE_QUANTIZE_H
#define MESH_ENGINE_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>

/* llama.cpp's `enum llama_ftype` numbers (the value of general.file_type). */
enum quantize_ftype {
    QUANTIZE_FT_F32 = 0,
    QUANTIZE_FT_F16 = 1,
    QUANTIZE_FT_Q4_0 = 2,
    QUANTIZE_FT_Q4_1 = 3,
    QUANTIZE_FT_Q8_0 = 7,
    QUANTIZE_FT_Q5_0 = 8,
    QUANTIZE_FT_Q5_1 = 9,
    QUANTIZE_FT_Q4_K_S = 14,
    QUANTIZE_FT_Q4_K_M = 15,
    QUANTIZE_FT_Q5_K_S = 16,
    QUANTIZE_FT_Q5_K_M = 17,
    QUANTIZE_FT_Q6_K = 18,
    QUANTIZE_FT_BF16 = 32,
};

/* File type from its name as llama-quantize spells it ("Q4_K_M", case-insensitive;
 * "Q4_K" and "Q5_K" mean the _M mixes, as there); -1 if unknown. */
int quantize_ftype_from_name(const char *name);
/* "Q4_K_M" etc.; "?" for a number we do not produce. */
const char *quantize_ftype_name(int ftype);
/* Names accepted by quantize_ftype_from_name, space-separated (for --help). */
const char *quantize_ftype_list(void);

struct quantize_progress {
    int64_t i_tensor;      /* tensor being written, 0-based, in output order */
    int64_t n_tensors;
    const char *name;      /* NUL-terminated tensor name */
    int type_in, type_out; /* enum qtype */
    uint64_t bytes_done;   /* output data bytes written so far (all tensors) */
    uint64_t bytes_total;  /* output data bytes of the whole file */
};
/* Called after each chunk of output; runs on the thread that called quantize_model. */
typedef void (*quantize_progress_fn)(void *user, const struct quantize_progress *p);

/* Writes in_path converted to ftype at out_path (atomically: temp file + rename).
 * n_threads <= 0 uses all cores. progress may be NULL. Returns 0, MESH_EINVAL (bad
 * ftype), MESH_EBADMODEL / MESH_EIO (input unreadable), MESH_EUNSUPPORTED (a tensor
 * is already quantized and would need re-quantizing, or a type we cannot convert),
 * MESH_ENOMEM; err gets a message naming the file and tensor. */
int quantize_model(const char *in_path, const char *out_path, int ftype, int n_threads,
                   quantize_progress_fn progress, void *user, char *err, size_t err_cap);

/* The type llama.cpp's rules give each tensor of an open model for ftype, in output
 * order (by layer, then name). *out is a malloc'd array of *n_out entries; free it with
 * quantize_plan_free. Exposed for tests and `meshllm quantize --dry-run`. */
struct quantize_plan_entry {
    char *name;     /* malloc'd */
    int64_t src;    /* index in the input file */
    int type_in, type_out;
};
struct gguf;
int quantize_plan(const struct gguf *g, int ftype, struct quantize_plan_entry **out, int64_t *n_out,
                  char *err, size_t err_cap);
void quantize_plan_free(struct quantize_plan_entry *plan, int64_t n);

#endif
