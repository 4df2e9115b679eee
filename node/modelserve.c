/* modelserve.c - the store behind the serve API (see modelserve.h). /api/show reads only
 * the GGUF header (engine/gguf.h): its metadata as Ollama's model_info, the parameter count,
 * the file type's name and the chat template. */
#include "node/modelserve.h"

#include "node/modelstore.h"
#include "node/registry.h"

#include "core/log.h"
#include "engine/gguf.h"
#include "engine/model.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void modelserve_autoload(struct router *rt, const char *name)
{
    struct router_model m;
    struct registry *reg = router_registry(rt);
    if (!reg || !name || !*name || router_model_get(rt, name, &m) == 0) return;
    struct modelstore_manifest mf;
    if (modelstore_get(modelstore_dir(), name, &mf, NULL, 0, NULL, 0)) return;
    char err[512];
    if (registry_add_load(reg, name, mf.sha256, err, sizeof err)) log_info("load %s: %s", name, err);
}

/* One GGUF array as JSON: numbers, bools or strings (nested arrays: null). */
static cJSON *arr_json(const struct gguf *g, const char *key)
{
    enum gguf_vtype et;
    uint64_t n;
    const void *data;
    if (gguf_get_arr(g, key, &et, &n, &data)) return cJSON_CreateNull();
    cJSON *a = cJSON_CreateArray();
    static const size_t esz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    for (uint64_t j = 0; a && j < n; j++) {
        cJSON *v = NULL;
        if (et == GGUF_VT_STRING) {
            struct gguf_str s;
            if (gguf_get_arr_str(g, key, j, &s)) break;
            char *t = strndup(s.ptr, (size_t)s.len);
            v = t ? cJSON_CreateString(t) : NULL;
            free(t);
        } else if ((unsigned)et < sizeof esz / sizeof *esz && esz[et]) {
            const unsigned char *p = (const unsigned char *)data + j * esz[et];
            union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
                    float f32; uint64_t u64; int64_t i64; double f64; } u;
            memcpy(&u, p, esz[et]);
            double d = et == GGUF_VT_U8 ? u.u8 : et == GGUF_VT_I8 ? u.i8 : et == GGUF_VT_U16 ? u.u16
                     : et == GGUF_VT_I16 ? u.i16 : et == GGUF_VT_U32 ? u.u32 : et == GGUF_VT_I32 ? u.i32
                     : et == GGUF_VT_F32 ? u.f32 : et == GGUF_VT_U64 ? (double)u.u64
                     : et == GGUF_VT_I64 ? (double)u.i64 : et == GGUF_VT_F64 ? u.f64 : 0;
            v = et == GGUF_VT_BOOL ? cJSON_CreateBool(u.u8 != 0) : cJSON_CreateNumber(d);
        } else {
            v = cJSON_CreateNull();
        }
        if (!v) break;
        cJSON_AddItemToArray(a, v);
    }
    return a;
}

/* Ollama's model_info: every metadata key of the file but the chat template (which is
 * "template"), with general.parameter_count added. Arrays (the vocabulary, merges) are null
 * unless verbose, as Ollama shows them. */
static void add_model_info(cJSON *mi, const struct gguf *g, int64_t n_params, bool verbose)
{
    char key[256];
    for (int64_t i = 0; i < gguf_kv_count(g); i++) {
        struct gguf_str k = gguf_kv_key(g, i);
        if (k.len >= sizeof key) continue;
        memcpy(key, k.ptr, k.len);
        key[k.len] = 0;
        if (!strcmp(key, "tokenizer.chat_template")) continue;
        enum gguf_vtype t = gguf_kv_type(g, i);
        double d;
        struct gguf_str sv;
        if (t == GGUF_VT_STRING && gguf_kv_str(g, i, &sv) == 0) {
            char *v = strndup(sv.ptr, (size_t)sv.len);
            if (v) cJSON_AddStringToObject(mi, key, v);
            free(v);
        } else if (t == GGUF_VT_ARRAY) {
            cJSON_AddItemToObject(mi, key, verbose ? arr_json(g, key) : cJSON_CreateNull());
        } else if (t == GGUF_VT_BOOL && gguf_kv_scalar_f64(g, i, &d) == 0) {
            cJSON_AddBoolToObject(mi, key, d != 0);
        } else if (gguf_kv_scalar_f64(g, i, &d) == 0) {
            cJSON_AddNumberToObject(mi, key, d);
        }
    }
    if (!cJSON_GetObjectItemCaseSensitive(mi, "general.parameter_count"))
        cJSON_AddNumberToObject(mi, "general.parameter_count", (double)n_params);
}

char *modelserve_show_json(struct router *rt, const char *name, bool verbose, int *status)
{
    *status = 404;
    char path[4096] = "";
    struct modelstore_manifest mf;
    int64_t modified = 0;
    if (modelstore_get(modelstore_dir(), name, &mf, path, sizeof path, NULL, 0) == 0) {
        modified = mf.added;
    } else {
        struct registry *reg = router_registry(rt);
        enum registry_state st;
        struct registry_entry *e = reg ? registry_find(reg, name, &st) : NULL;
        if (!e) return NULL;
        snprintf(path, sizeof path, "%s", e->path);
        modified = e->created;
    }
    struct gguf *g = NULL;
    char err[256];
    if (gguf_open(path, &g, err, sizeof err)) {
        *status = 500;
        return NULL;
    }
    char *arch = gguf_get_str_dup(g, "general.architecture");
    char *tmpl = gguf_get_str_dup(g, "tokenizer.chat_template");
    int64_t n_params = 0;
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        n_params += t->n_elems;
    }
    uint32_t ftype = gguf_get_u32_or(g, "general.file_type", 0xffffffffu);
    cJSON *o = cJSON_CreateObject();
    char mf_text[4200];
    snprintf(mf_text, sizeof mf_text, "FROM %s\n", path);
    cJSON_AddStringToObject(o, "modelfile", mf_text);
    cJSON_AddStringToObject(o, "parameters", "");
    cJSON_AddStringToObject(o, "template", tmpl ? tmpl : "");
    cJSON *d = cJSON_AddObjectToObject(o, "details");
    cJSON_AddStringToObject(d, "parent_model", "");
    cJSON_AddStringToObject(d, "format", "gguf");
    cJSON_AddStringToObject(d, "family", arch ? arch : "");
    cJSON *fams = cJSON_AddArrayToObject(d, "families");
    if (fams) cJSON_AddItemToArray(fams, cJSON_CreateString(arch ? arch : ""));
    char ps[32];
    if (n_params >= 1000000000) snprintf(ps, sizeof ps, "%.1fB", (double)n_params / 1e9);
    else snprintf(ps, sizeof ps, "%.2fM", (double)n_params / 1e6);
    cJSON_AddStringToObject(d, "parameter_size", ps);
    cJSON_AddStringToObject(d, "quantization_level",
                            ftype == 0xffffffffu ? "" : model_ftype_name((int)ftype));
    add_model_info(cJSON_AddObjectToObject(o, "model_info"), g, n_params, verbose);
    cJSON *caps = cJSON_AddArrayToObject(o, "capabilities");
    if (caps) {
        cJSON_AddItemToArray(caps, cJSON_CreateString("completion"));
        cJSON_AddItemToArray(caps, cJSON_CreateString("embedding"));
    }
    char when[64];
    struct tm tm;
    time_t t = (time_t)modified;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(o, "modified_at", when);
    free(arch);
    free(tmpl);
    gguf_close(g);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    *status = s ? 200 : 500;
    return s;
}
