/* cmd_info.c - `meshllm info MODEL.gguf [--json] [--no-tensors] [--kv]`.
 *
 * Reads only the GGUF header and metadata (engine/gguf; the weights are mapped, not
 * read) and prints what a user asks first: architecture, parameter count, file type,
 * hyper-parameters, tokenizer, chat template, then a table of tensors. --json prints
 * the same as one JSON object (cJSON); --kv lists every metadata key.
 */
#include "cli/cli.h"

#include "core/err.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/quant.h"
#include "engine/quantize.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: meshllm info MODEL.gguf [--json] [--no-tensors] [--kv]\n\n"
               "Prints a model file's architecture, size, quantization, hyper-parameters,\n"
               "tokenizer and chat template, then its tensors (name, type, shape, bytes).\n\n"
               "options:\n"
               "  --json         one JSON object on stdout\n"
               "  --no-tensors   skip the tensor table\n"
               "  --kv           also list every metadata key and value\n"
               "  -h, --help     this help\n");
}

/* The facts shown, gathered once for both output forms. */
struct info {
    char *arch, *name, *tok_model, *tok_pre, *tmpl;
    int64_t n_params;
    uint64_t data_bytes;
    int file_type; /* -1 if absent */
    uint32_t ctx, embd, layers, heads, heads_kv, ff, rope_dim, bos, eos, vocab;
    bool has_bos, has_eos;
    float rope_base, rms_eps;
    char *rope_scaling;
    int type_counts[QT_COUNT];
};

static uint32_t arch_u32(const struct gguf *g, const char *arch, const char *suffix, uint32_t def)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_u32_or(g, key, def);
}

static float arch_f32(const struct gguf *g, const char *arch, const char *suffix, float def)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_f32_or(g, key, def);
}

/* The template family `chat` and `serve` render for this template (engine/chat.c's
 * detection), or its first line marked as not recognised (malloc'd). */
static char *template_label(const char *t)
{
    enum chat_tmpl k = chat_tmpl_detect(t);
    if (k != CHAT_TMPL_UNKNOWN) return strdup(chat_tmpl_name(k));
    size_t n = strcspn(t, "\n");
    if (n > 60) n = 60;
    size_t cap = n + 80;
    char *r = malloc(cap);
    if (!r) return NULL;
    snprintf(r, cap, "not recognised, chat uses %s (\"%.*s%s\")",
             chat_tmpl_name(chat_tmpl_fallback()), (int)n, t, t[n] ? "..." : "");
    return r;
}

static void info_gather(const struct gguf *g, struct info *in)
{
    memset(in, 0, sizeof *in);
    in->arch = gguf_get_str_dup(g, "general.architecture");
    const char *a = in->arch ? in->arch : "llama";
    in->name = gguf_get_str_dup(g, "general.name");
    in->file_type = (int)gguf_get_u32_or(g, "general.file_type", UINT32_MAX);
    in->ctx = arch_u32(g, a, "context_length", 0);
    in->embd = arch_u32(g, a, "embedding_length", 0);
    in->layers = arch_u32(g, a, "block_count", 0);
    in->heads = arch_u32(g, a, "attention.head_count", 0);
    in->heads_kv = arch_u32(g, a, "attention.head_count_kv", in->heads);
    in->ff = arch_u32(g, a, "feed_forward_length", 0);
    in->rope_dim = arch_u32(g, a, "rope.dimension_count", in->heads ? in->embd / in->heads : 0);
    in->rope_base = arch_f32(g, a, "rope.freq_base", 10000.0f);
    in->rms_eps = arch_f32(g, a, "attention.layer_norm_rms_epsilon", 0.0f);
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    in->rope_scaling = gguf_get_str_dup(g, key);
    if (!in->rope_scaling && gguf_find_tensor(g, "rope_freqs.weight")) in->rope_scaling = strdup("rope_freqs tensor");
    in->tok_model = gguf_get_str_dup(g, "tokenizer.ggml.model");
    in->tok_pre = gguf_get_str_dup(g, "tokenizer.ggml.pre");
    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data) == 0) in->vocab = (uint32_t)n;
    in->has_bos = gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &in->bos) == 0;
    in->has_eos = gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &in->eos) == 0;
    char *t = gguf_get_str_dup(g, "tokenizer.chat_template");
    if (t) in->tmpl = template_label(t);
    free(t);
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
        const struct gguf_tensor *x = gguf_tensor_at(g, i);
        in->n_params += x->n_elems;
        in->data_bytes += x->size;
        if (x->type >= 0 && x->type < QT_COUNT) in->type_counts[x->type]++;
    }
}

static void info_free(struct info *in)
{
    free(in->arch);
    free(in->name);
    free(in->tok_model);
    free(in->tok_pre);
    free(in->tmpl);
    free(in->rope_scaling);
}

static const char *type_name(int t)
{
    const struct quant_traits *q = quant_traits(t);
    return q ? q->name : "?";
}

static void shape_str(const struct gguf_tensor *t, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = 0;
    for (int d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(out + n, cap - n, d ? " x %" PRId64 : "%" PRId64, t->ne[d]);
}

/* Value of key i as text for --kv (arrays shown by type and length). */
static void kv_value_str(const struct gguf *g, int64_t i, char *out, size_t cap)
{
    enum gguf_vtype t = gguf_kv_type(g, i), et;
    struct gguf_str s;
    double d;
    uint64_t n;
    if (t == GGUF_VT_STRING && gguf_kv_str(g, i, &s) == 0) {
        size_t len = (size_t)(s.len < 60 ? s.len : 60);
        size_t nl = strcspn(s.ptr, "\n");
        if (nl < len) len = nl;
        snprintf(out, cap, "\"%.*s\"%s", (int)len, s.ptr, len < s.len ? "..." : "");
    } else if (t == GGUF_VT_ARRAY && gguf_kv_arr_info(g, i, &et, &n) == 0) {
        snprintf(out, cap, "[%s x %" PRIu64 "]", gguf_vtype_name(et), n);
    } else if (gguf_kv_scalar_f64(g, i, &d) == 0) {
        snprintf(out, cap, "%.10g", d);
    } else {
        snprintf(out, cap, "?");
    }
}

static void print_text(const char *path, const struct gguf *g, const struct info *in, bool tensors, bool kv)
{
    printf("file:            %s (GGUF v%u, %zu bytes)\n", path, gguf_version(g), gguf_file_size(g));
    printf("architecture:    %s\n", in->arch ? in->arch : "(none)");
    if (in->name) printf("name:            %s\n", in->name);
    if (in->n_params >= 1000000000)
        printf("parameters:      %" PRId64 " (%.2f B)\n", in->n_params, (double)in->n_params / 1e9);
    else
        printf("parameters:      %" PRId64 " (%.2f M)\n", in->n_params, (double)in->n_params / 1e6);
    printf("file type:       %s", in->file_type >= 0 ? quantize_ftype_name(in->file_type) : "(not set)");
    if (in->n_params > 0) printf(", %.2f bits per weight", (double)in->data_bytes * 8.0 / (double)in->n_params);
    printf("\ntensor types:   ");
    for (int t = 0; t < QT_COUNT; t++)
        if (in->type_counts[t]) printf(" %s:%d", type_name(t), in->type_counts[t]);
    printf("\ncontext length:  %u\n", in->ctx);
    printf("embedding:       %u\nlayers:          %u\nheads:           %u\nkv heads:        %u\n", in->embd,
           in->layers, in->heads, in->heads_kv);
    printf("feed forward:    %u\n", in->ff);
    printf("rope:            dim %u, base %g%s%s\n", in->rope_dim, in->rope_base, in->rope_scaling ? ", scaling " : "",
           in->rope_scaling ? in->rope_scaling : "");
    if (in->rms_eps > 0) printf("rms norm eps:    %g\n", in->rms_eps);
    printf("tokenizer:       %s, pre %s, %u tokens", in->tok_model ? in->tok_model : "(none)",
           in->tok_pre ? in->tok_pre : "(default)", in->vocab);
    if (in->has_bos) printf(", bos %u", in->bos);
    if (in->has_eos) printf(", eos %u", in->eos);
    printf("\nchat template:   %s\n", in->tmpl ? in->tmpl : "(none)");
    if (kv) {
        printf("\nmetadata (%" PRId64 " keys):\n", gguf_kv_count(g));
        for (int64_t i = 0; i < gguf_kv_count(g); i++) {
            struct gguf_str k = gguf_kv_key(g, i);
            char v[128];
            kv_value_str(g, i, v, sizeof v);
            printf("  %-48.*s %-6s %s\n", (int)k.len, k.ptr, gguf_vtype_name(gguf_kv_type(g, i)), v);
        }
    }
    if (!tensors) return;
    printf("\n%-4s %-40s %-6s %-22s %12s\n", "#", "tensor", "type", "shape", "bytes");
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        char shape[96];
        shape_str(t, shape, sizeof shape);
        printf("%-4" PRId64 " %-40.*s %-6s %-22s %12zu\n", i, (int)t->name.len, t->name.ptr, type_name(t->type),
               shape, t->size);
    }
}

static cJSON *add_str(cJSON *o, const char *k, const char *v)
{
    return v ? cJSON_AddStringToObject(o, k, v) : cJSON_AddNullToObject(o, k);
}

static int print_json(const char *path, const struct gguf *g, const struct info *in, bool tensors)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return MESH_ENOMEM;
    add_str(o, "file", path);
    cJSON_AddNumberToObject(o, "gguf_version", gguf_version(g));
    cJSON_AddNumberToObject(o, "file_size", (double)gguf_file_size(g));
    add_str(o, "architecture", in->arch);
    add_str(o, "name", in->name);
    cJSON_AddNumberToObject(o, "parameters", (double)in->n_params);
    cJSON_AddNumberToObject(o, "file_type", in->file_type);
    add_str(o, "file_type_name", in->file_type >= 0 ? quantize_ftype_name(in->file_type) : NULL);
    cJSON_AddNumberToObject(o, "context_length", in->ctx);
    cJSON_AddNumberToObject(o, "embedding_length", in->embd);
    cJSON_AddNumberToObject(o, "block_count", in->layers);
    cJSON_AddNumberToObject(o, "head_count", in->heads);
    cJSON_AddNumberToObject(o, "head_count_kv", in->heads_kv);
    cJSON_AddNumberToObject(o, "feed_forward_length", in->ff);
    cJSON_AddNumberToObject(o, "rope_dimension_count", in->rope_dim);
    cJSON_AddNumberToObject(o, "rope_freq_base", in->rope_base);
    add_str(o, "rope_scaling", in->rope_scaling);
    cJSON_AddNumberToObject(o, "rms_eps", in->rms_eps);
    add_str(o, "tokenizer_model", in->tok_model);
    add_str(o, "tokenizer_pre", in->tok_pre);
    cJSON_AddNumberToObject(o, "vocab_size", in->vocab);
    if (in->has_bos) cJSON_AddNumberToObject(o, "bos_token_id", in->bos);
    if (in->has_eos) cJSON_AddNumberToObject(o, "eos_token_id", in->eos);
    add_str(o, "chat_template", in->tmpl);
    if (tensors) {
        cJSON *arr = cJSON_AddArrayToObject(o, "tensors");
        for (int64_t i = 0; arr && i < gguf_tensor_count(g); i++) {
            const struct gguf_tensor *t = gguf_tensor_at(g, i);
            cJSON *e = cJSON_CreateObject();
            if (!e) break;
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)(t->name.len < 255 ? t->name.len : 255), t->name.ptr);
            cJSON_AddStringToObject(e, "name", name);
            cJSON_AddStringToObject(e, "type", type_name(t->type));
            cJSON *shape = cJSON_AddArrayToObject(e, "shape");
            for (int d = 0; shape && d < t->n_dims; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->ne[d]));
            cJSON_AddNumberToObject(e, "bytes", (double)t->size);
            cJSON_AddItemToArray(arr, e);
        }
    }
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    if (!s) return MESH_ENOMEM;
    puts(s);
    free(s);
    return 0;
}

int cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    bool json = false, tensors = true, kv = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--no-tensors")) {
            tensors = false;
        } else if (!strcmp(argv[i], "--kv")) {
            kv = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            cli_fail("info: unknown option '%s' (try --help)", argv[i]);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            cli_fail("info: only one model file, please (try --help)");
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    quant_init();
    char err[512];
    struct gguf *g = NULL;
    int rc = gguf_open(path, &g, err, sizeof err);
    if (rc) {
        cli_fail("info: %s", err);
        return 1;
    }
    struct info in;
    info_gather(g, &in);
    if (json) rc = print_json(path, g, &in, tensors);
    else print_text(path, g, &in, tensors, kv);
    info_free(&in);
    gguf_close(g);
    if (rc) {
        cli_fail("info: %s", err_str(rc));
        return 1;
    }
    return 0;
}
