/* service.c - the registry and the mesh of one node, shared by serve, run and chat
 * (service.h). The order matters: models are added before the mesh starts (its setup hook
 * registers the stage server over the registry), the mesh stops before the registry is
 * freed (mesh_stop detaches the pipelines while the node still runs).
 */
#include "node/service.h"

#include "core/err.h"
#include "core/log.h"
#include "engine/model.h"
#include "node/autosplit.h"
#include "node/pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct service {
    struct registry *reg;
    struct mesh *mesh;
    struct autosplit *as; /* auto_split: asks members to load missing layers */
};

int service_open(const struct service_config *cfg, struct service **out, char *err,
                 size_t err_cap)
{
    *out = NULL;
    struct service *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    int rc = registry_new(cfg->sp, &s->reg);
    if (rc) {
        err_set(err, err_cap, rc, "out of memory");
        goto fail;
    }
    registry_set_chat_template(s->reg, cfg->chat_template); /* before the models are added */
    for (int i = 0; i < cfg->n_models; i++) {
        rc = cfg->has_layers ? registry_add_split(s->reg, cfg->models[i], cfg->layer_begin,
                                                  cfg->layer_end, err, err_cap)
                             : registry_add(s->reg, cfg->models[i], err, err_cap);
        if (!rc && cfg->aliases && cfg->aliases[i])
            rc = registry_rename(s->reg, registry_count(s->reg) - 1, cfg->aliases[i], err,
                                 err_cap);
        if (rc) goto fail;
        enum registry_state st;
        registry_at(s->reg, i, &st)->auto_split = cfg->has_layers && cfg->auto_split;
    }
    if (cfg->p2p) {
        struct mesh_config mc = cfg->mesh;
        mc.reg = s->reg;
        mc.accept_stages = cfg->accept_stages;
        rc = mesh_start(&mc, &s->mesh, err, err_cap);
        if (rc) goto fail;
        if (cfg->auto_split) {
            struct autosplit_config ac = {.reg = s->reg, .mesh = s->mesh};
            rc = autosplit_start(&ac, &s->as);
            if (rc) {
                err_set(err, err_cap, rc, "cannot start the auto-split thread");
                goto fail;
            }
            registry_set_autosplit(s->reg, s->as); /* passes may ask it to recover */
        }
    }
    *out = s;
    return 0;
fail:
    service_close(s);
    return rc;
}

struct registry *service_registry(struct service *s) { return s->reg; }
struct mesh *service_mesh(struct service *s) { return s->mesh; }

int service_load_start(struct service *s) { return registry_load_start(s->reg); }

int service_load_wait(struct service *s, char *err, size_t err_cap)
{
    int rc = registry_load_wait(s->reg);
    for (int i = 0; rc && i < registry_count(s->reg); i++) {
        enum registry_state st;
        struct registry_entry *e = registry_at(s->reg, i, &st);
        if (st == REGISTRY_FAILED) return err_set(err, err_cap, rc, "%s", e->err);
    }
    if (rc) return err_set(err, err_cap, rc, "%s", err_str(rc));
    registry_hash_wait(s->reg); /* stages are matched by the file's content hash */
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* "layers 3-4 and 7" into buf. */
static void gaps_text(const struct pipeline_view *v, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = 0;
    for (int g = 0; g < v->n_gaps && off < cap; g++) {
        int a = v->gaps[g].layer_begin, b = v->gaps[g].layer_end - 1;
        const char *sep = g == 0 ? "" : g + 1 == v->n_gaps ? " and " : ", ";
        int w = a == b ? snprintf(buf + off, cap - off, "%s%d", sep, a)
                       : snprintf(buf + off, cap - off, "%s%d-%d", sep, a, b);
        if (w < 0) break;
        off += (size_t)w;
    }
}

int service_route_wait(struct service *s, int i, int timeout_ms, const char *cmd, char *err,
                       size_t err_cap)
{
    enum registry_state st;
    struct registry_entry *e = registry_at(s->reg, i, &st);
    if (!e || st != REGISTRY_READY || !e->is_split || !e->pipe)
        return err_set(err, err_cap, MESH_EINVAL, "not a loaded split model");
    struct pipeline_view *v = malloc(sizeof *v);
    if (!v) return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    uint64_t deadline = mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    bool said = false;
    int rc;
    char gaps[256] = "";
    for (;;) {
        rc = pipeline_view(e->pipe, v);
        if (rc == 0) break;
        if (v->n_gaps) gaps_text(v, gaps, sizeof gaps);
        if (!said) {
            fprintf(stderr, "meshllm: %s: waiting for the mesh's stages of %s%s%s%s\n", cmd,
                    e->name, gaps[0] ? " (layers " : "", gaps, gaps[0] ? ")" : "");
            said = true;
        }
        if (mono_ms() >= deadline) break;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (rc == 0) {
        if (said) log_info("%s: a route covers every layer of %s", cmd, e->name);
        free(v);
        return 0;
    }
    if (gaps[0]) {
        const struct pipeline_gap *g = &v->gaps[0];
        err_set(err, err_cap, MESH_ETIMEOUT,
                "no route for %s after %d s: no mesh member announces layers %s (start a node "
                "with 'meshllm serve --model %s --layers %d-%d', or pass --auto-split to ask "
                "members started with --accept-stages)", e->name, timeout_ms / 1000, gaps,
                e->path, g->layer_begin, g->layer_end - 1);
    } else {
        err_set(err, err_cap, MESH_ETIMEOUT,
                "no route for %s after %d s: %s", e->name, timeout_ms / 1000,
                rc == MESH_EAGAIN ? "its content hash is not computed yet"
                                  : "no chain of live stages covers its layers");
    }
    free(v);
    return MESH_ETIMEOUT;
}

void service_close(struct service *s)
{
    if (!s) return;
    autosplit_stop(s->as); /* before the mesh: it calls members through it */
    mesh_stop(s->mesh);    /* interrupts passes (a recovery gives up: the driver stopped) */
    if (s->as) registry_set_autosplit(s->reg, NULL); /* no pass can reach it any more */
    autosplit_free(s->as);
    registry_free(s->reg);
    free(s);
}
