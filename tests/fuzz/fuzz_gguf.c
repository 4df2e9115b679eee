/* fuzz_gguf.c - libFuzzer target for the GGUF reader (engine/gguf.c).
 *
 * Parses the input as a whole GGUF file, then walks everything a loader would touch:
 * every key through every typed getter, every array element, every tensor's name lookup
 * and its first and last data byte, copies every key into a writer, and plans a
 * Q4_K_M quantization (llama.cpp's rules over hostile tensor names). Any crash,
 * sanitizer report or inconsistency (a tensor outside the buffer, a failed open with no
 * message) is a bug. Seeds: tests/fuzz/corpus/gguf/ (tiny files made by our writer).
 */
#include "core/err.h"
#include "engine/gguf.h"
#include "engine/quant.h"
#include "engine/quantize.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t g_sink;

static void walk_key(const struct gguf *g, int64_t i)
{
    struct gguf_str k = gguf_kv_key(g, i);
    char key[256];
    if (k.len >= sizeof key || memchr(k.ptr, 0, (size_t)k.len)) return;
    memcpy(key, k.ptr, (size_t)k.len);
    key[k.len] = 0;
    if (gguf_find_key(g, key) != i) abort(); /* keys are unique */
    uint32_t u;
    int64_t i64;
    float f;
    bool b;
    double d;
    struct gguf_str s;
    if (gguf_get_u32(g, key, &u) == 0) g_sink += u;
    if (gguf_get_i64(g, key, &i64) == 0) g_sink += (uint64_t)i64;
    if (gguf_get_f32(g, key, &f) == 0) g_sink += f != 0;
    if (gguf_get_bool(g, key, &b) == 0) g_sink += b;
    if (gguf_kv_scalar_f64(g, i, &d) == 0) g_sink += d != 0;
    if (gguf_get_str(g, key, &s) == 0 && s.len) g_sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
    char *dup = gguf_get_str_dup(g, key);
    free(dup);
    enum gguf_vtype et;
    uint64_t n;
    const void *arr;
    if (gguf_get_arr(g, key, &et, &n, &arr) == 0) {
        if (et == GGUF_VT_STRING) {
            for (uint64_t j = 0; j < n; j++)
                if (gguf_get_arr_str(g, key, j, &s) == 0 && s.len) g_sink += (uint8_t)s.ptr[s.len - 1];
        } else if (n > 0) {
            g_sink += ((const uint8_t *)arr)[0];
        }
        if (gguf_kv_arr_info(g, i, &et, &n) != 0) abort();
    }
}

static void walk_tensor(const struct gguf *g, const uint8_t *base, size_t size, int64_t i)
{
    const struct gguf_tensor *t = gguf_tensor_at(g, i);
    const uint8_t *p = t->data;
    if (t->size > 0 && (p < base || t->size > size || (size_t)(p - base) > size - t->size)) abort();
    if (t->size > 0) g_sink += p[0] + p[t->size - 1];
    char name[256];
    if (t->name.len < sizeof name && !memchr(t->name.ptr, 0, (size_t)t->name.len)) {
        memcpy(name, t->name.ptr, (size_t)t->name.len);
        name[t->name.len] = 0;
        if (gguf_find_tensor(g, name) != t) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        quant_init();
        inited = 1;
    }
    struct gguf *g = NULL;
    char err[256];
    err[0] = 0;
    int rc = gguf_open_mem(data, size, &g, err, sizeof err);
    if (rc) {
        if (g || !err[0]) abort();
        return 0;
    }
    for (int64_t i = 0; i < gguf_kv_count(g); i++) walk_key(g, i);
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) walk_tensor(g, data, size, i);
    struct quantize_plan_entry *plan = NULL;
    int64_t n_plan = 0;
    if (quantize_plan(g, QUANTIZE_FT_Q4_K_M, &plan, &n_plan, err, sizeof err) == 0) {
        if (n_plan != gguf_tensor_count(g)) abort();
        for (int64_t i = 0; i < n_plan; i++)
            if (!quant_traits(plan[i].type_out)) abort();
        quantize_plan_free(plan, n_plan);
    }
    struct gguf_writer *w;
    if (gguf_writer_new(&w) == 0) {
        for (int64_t i = 0; i < gguf_kv_count(g); i++) gguf_writer_copy_kv(w, g, i);
        gguf_writer_free(w);
    }
    gguf_close(g);
    return 0;
}
