/* modelserve.c - the store behind the serve API (see modelserve.h). /api/show reads only
 * the GGUF header (engine/gguf.h): architecture, parameter count, file type, template. */
#include "node/modelserve.h"

#include "node/modelstore.h"
#include "node/registry.h"

#include "core/log.h"
#include "engine/gguf.h"

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
    if (registry_add_load(reg, name, err, sizeof err)) log_info("load %s: %s", name, err);
}

char *modelserve_show_json(struct router *rt, const char *name, int *status)
{
    *status = 404;
    char path[4096] = "", api_name[256];
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
    (void)api_name;
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
    char ps[32];
    if (n_params >= 1000000000) snprintf(ps, sizeof ps, "%.1fB", (double)n_params / 1e9);
    else snprintf(ps, sizeof ps, "%.2fM", (double)n_params / 1e6);
    cJSON_AddStringToObject(d, "parameter_size", ps);
    char q[16];
    snprintf(q, sizeof q, "%u", ftype);
    cJSON_AddStringToObject(d, "quantization_level", ftype == 0xffffffffu ? "" : q);
    cJSON *mi = cJSON_AddObjectToObject(o, "model_info");
    cJSON_AddStringToObject(mi, "general.architecture", arch ? arch : "");
    cJSON_AddNumberToObject(mi, "general.parameter_count", (double)n_params);
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
