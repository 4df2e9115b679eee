/* gguf.h - GGUF v2/v3 reader (mmap, zero copy) and writer.
 *
 * Spec: ggml/docs/gguf.md (llama.cpp). Little-endian files only. The reader validates
 * every count, length, offset, type and size before use, so a truncated or hostile
 * file yields MESH_EBADMODEL and a message naming what is wrong, never a crash.
 * Tensor data is not copied: gguf_tensor.data points into the mapping, which lives
 * until gguf_close(). Strings are NOT NUL-terminated in the file: use the lengths.
 * Thread rule: a struct gguf is read-only after open; any thread may read it.
 */
#ifndef MESH_ENGINE_GGUF_H
#define MESH_ENGINE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gguf_vtype {
    GGUF_VT_U8 = 0,
    GGUF_VT_I8 = 1,
    GGUF_VT_U16 = 2,
    GGUF_VT_I16 = 3,
    GGUF_VT_U32 = 4,
    GGUF_VT_I32 = 5,
    GGUF_VT_F32 = 6,
    GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8,
    GGUF_VT_ARRAY = 9,
    GGUF_VT_U64 = 10,
    GGUF_VT_I64 = 11,
    GGUF_VT_F64 = 12,
};

enum { GGUF_MAX_DIMS = 4 };

struct gguf_str {
    const char *ptr; /* into the mapping; not NUL-terminated */
    uint64_t len;
};

struct gguf_tensor {
    struct gguf_str name;
    int type;                   /* enum qtype (GGUF type number) */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];  /* ne[0] is the row length (contiguous); unused dims 1 */
    int64_t n_elems;
    uint64_t offset;            /* from the start of the data section */
    size_t size;                /* bytes */
    const void *data;           /* into the mapping */
};

struct gguf;

/* Maps and parses path. On failure returns MESH_ENOTFOUND (no such file) / MESH_EIO /
 * MESH_EBADMODEL / MESH_EUNSUPPORTED (GGUF v1, big-endian, nested arrays) / MESH_ENOMEM
 * with a message in err ("model.gguf: tensor 'x': data [a, b) extends past end of file
 * (n bytes)"); *out is NULL then. */
int gguf_open(const char *path, struct gguf **out, char *err, size_t err_cap);
/* Parses a buffer the caller keeps alive (fuzzing, tests); nothing is copied. */
int gguf_open_mem(const void *buf, size_t len, struct gguf **out, char *err, size_t err_cap);
void gguf_close(struct gguf *g);

uint32_t gguf_version(const struct gguf *g);
size_t gguf_alignment(const struct gguf *g);
size_t gguf_file_size(const struct gguf *g);
size_t gguf_data_offset(const struct gguf *g);

/* Key/value metadata. Index i in [0, gguf_kv_count). */
int64_t gguf_kv_count(const struct gguf *g);
int64_t gguf_find_key(const struct gguf *g, const char *key); /* -1 if absent */
struct gguf_str gguf_kv_key(const struct gguf *g, int64_t i);
enum gguf_vtype gguf_kv_type(const struct gguf *g, int64_t i);
/* Scalar values; the value is converted from any integer/float/bool type that holds it
 * exactly (u32 from u8/u16/u32/u64/i* when in range...). MESH_ENOTFOUND if the key is
 * absent, MESH_EBADMODEL if the type cannot convert. *out untouched on error. */
int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out);
int gguf_get_i64(const struct gguf *g, const char *key, int64_t *out);
int gguf_get_f32(const struct gguf *g, const char *key, float *out);
int gguf_get_bool(const struct gguf *g, const char *key, bool *out);
int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out);
/* Convenience: value or def when absent or of the wrong type. */
uint32_t gguf_get_u32_or(const struct gguf *g, const char *key, uint32_t def);
float gguf_get_f32_or(const struct gguf *g, const char *key, float def);
/* Copies a string value NUL-terminated into a malloc'd buffer; NULL if absent. */
char *gguf_get_str_dup(const struct gguf *g, const char *key);

/* Arrays. gguf_get_arr: element type, count and a pointer to the raw elements of a
 * numeric array (little-endian, unaligned: memcpy from it). For string arrays use
 * gguf_get_arr_str (index j). */
int gguf_get_arr(const struct gguf *g, const char *key, enum gguf_vtype *elem_type,
                 uint64_t *n, const void **data);
int gguf_get_arr_str(const struct gguf *g, const char *key, uint64_t j, struct gguf_str *out);
/* Values by index (for printing all metadata). */
int gguf_kv_scalar_f64(const struct gguf *g, int64_t i, double *out); /* numeric/bool */
int gguf_kv_str(const struct gguf *g, int64_t i, struct gguf_str *out);
int gguf_kv_arr_info(const struct gguf *g, int64_t i, enum gguf_vtype *elem_type, uint64_t *n);

/* Tensors. */
int64_t gguf_tensor_count(const struct gguf *g);
const struct gguf_tensor *gguf_tensor_at(const struct gguf *g, int64_t i);
const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name);

const char *gguf_vtype_name(enum gguf_vtype t);

/* ---- writer ----
 * Build metadata and a tensor list, then write. Tensor data is supplied either as a
 * pointer the caller keeps alive until gguf_writer_write returns, or produced on demand
 * by a callback (used by the quantizer to stream with a progress bar). Keys are
 * written in insertion order; setting an existing key replaces its value in place. */
struct gguf_writer;

/* Fills dst (size bytes) with tensor i's data; returns 0 or a MESH_E* code. */
typedef int (*gguf_tensor_fill_fn)(void *user, int64_t i, void *dst, size_t size);

int gguf_writer_new(struct gguf_writer **out);
void gguf_writer_free(struct gguf_writer *w);
int gguf_writer_set_alignment(struct gguf_writer *w, size_t alignment); /* power of 2 */
int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v);
int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v);
int gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_vtype elem_type,
                        const void *data, uint64_t n); /* numeric elements, packed LE */
int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *v,
                            uint64_t n);
/* Same from length-delimited strings (may hold any bytes, NUL included). */
int gguf_writer_set_arr_gstr(struct gguf_writer *w, const char *key, const struct gguf_str *v,
                             uint64_t n);
/* Copies key i of an open file (any type, arrays included). */
int gguf_writer_copy_kv(struct gguf_writer *w, const struct gguf *g, int64_t i);
/* Adds a tensor; data may be NULL if fill is given to gguf_writer_write. Returns index. */
int64_t gguf_writer_add_tensor(struct gguf_writer *w, const char *name, int type, int n_dims,
                               const int64_t *ne, const void *data);
/* Writes the file atomically (temp file + rename). fill may be NULL. */
int gguf_writer_write(struct gguf_writer *w, const char *path, gguf_tensor_fill_fn fill,
                      void *user, char *err, size_t err_cap);

/* Streaming variant: fill is called for tensors without a data pointer, in file order,
 * with consecutive row ranges [row0, row0 + n_rows) of about 16 MiB each (a row is ne[0]
 * elements; size = n_rows * row bytes), so multi-GB files never sit in memory. */
typedef int (*gguf_tensor_fill_rows_fn)(void *user, int64_t i, int64_t row0, int64_t n_rows,
                                        void *dst, size_t size);
int gguf_writer_write_rows(struct gguf_writer *w, const char *path, gguf_tensor_fill_rows_fn fill,
                           void *user, char *err, size_t err_cap);
/* Number of tensors added so far, and the data size (bytes) of tensor i. */
int64_t gguf_writer_tensor_count(const struct gguf_writer *w);
size_t gguf_writer_tensor_size(const struct gguf_writer *w, int64_t i);

#endif
