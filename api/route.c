/* route.c - what the API says about split models' routes: GET /node/route?model=NAME (the
 * stages a generation would use, planned without running one), the "routes" of /node/peers
 * (the console's mesh map) and the meshllm_pipeline_* counters of /metrics. The node decides
 * (node/router.h router_route, router_splits); this file only writes JSON and text.
 * Docs: docs/API.md, docs/SPLIT.md.
 */
#include "api/api_internal.h"
#include "node/router.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *state_name(int st)
{
    return st == ROUTER_ROUTE_OK     ? "ok"
           : st == ROUTER_ROUTE_NONE ? "no_route"
           : st == ROUTER_ROUTE_WAIT ? "waiting"
                                     : "failed";
}

/* "A-B" of [begin, end), as --layers names a range. */
static void add_layers(cJSON *o, int begin, int end)
{
    char t[32];
    snprintf(t, sizeof t, "%d-%d", begin, end - 1);
    cJSON_AddStringToObject(o, "layers", t);
    cJSON_AddNumberToObject(o, "layer_begin", begin);
    cJSON_AddNumberToObject(o, "layer_end", end);
}

static cJSON *stage_obj(const struct router_stage *st)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (st->is_whole && st->layer_end == 0) cJSON_AddStringToObject(o, "layers", "all");
    else add_layers(o, st->layer_begin, st->layer_end);
    cJSON_AddBoolToObject(o, "local", st->is_local);
    cJSON_AddBoolToObject(o, "whole", st->is_whole);
    if (st->is_local) cJSON_AddNullToObject(o, "peer");
    else cJSON_AddStringToObject(o, "peer", st->peer);
    if (st->rtt_ms >= 0) cJSON_AddNumberToObject(o, "rtt_ms", st->rtt_ms);
    else cJSON_AddNullToObject(o, "rtt_ms");
    if (st->has_load) {
        cJSON_AddNumberToObject(o, "active", st->n_active);
        cJSON_AddNumberToObject(o, "slots", st->n_slots);
        cJSON_AddNumberToObject(o, "queued", st->n_queued);
    }
    return o;
}

static cJSON *route_obj(const struct router_route *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "model", r->model);
    cJSON_AddBoolToObject(o, "split", r->is_split);
    cJSON_AddStringToObject(o, "state", state_name(r->state));
    cJSON_AddBoolToObject(o, "covered", r->state == ROUTER_ROUTE_OK);
    if (r->n_layer > 0) cJSON_AddNumberToObject(o, "n_layer", r->n_layer);
    else cJSON_AddNullToObject(o, "n_layer");
    if (r->is_split) {
        cJSON *mine = cJSON_AddObjectToObject(o, "local_layers");
        if (mine && r->layer_begin < r->layer_end) add_layers(mine, r->layer_begin, r->layer_end);
        else if (mine) cJSON_AddStringToObject(mine, "layers", "none");
    }
    int covered = 0;
    cJSON *arr = cJSON_AddArrayToObject(o, "stages");
    for (int i = 0; arr && i < r->n_stages; i++) {
        cJSON_AddItemToArray(arr, stage_obj(&r->stages[i]));
        covered += r->stages[i].layer_end - r->stages[i].layer_begin;
    }
    cJSON_AddNumberToObject(o, "layers_covered", covered);
    cJSON *miss = cJSON_AddArrayToObject(o, "missing");
    for (int i = 0; miss && i < r->n_missing; i++) {
        cJSON *g = cJSON_CreateObject();
        if (g) add_layers(g, r->missing[i][0], r->missing[i][1]);
        cJSON_AddItemToArray(miss, g);
    }
    if (r->why[0]) cJSON_AddStringToObject(o, "message", r->why);
    else cJSON_AddNullToObject(o, "message");
    return o;
}

static char *print_free(cJSON *root)
{
    char *out = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return out;
}

static char *error_json(const char *code, const char *msg)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", "invalid_request_error");
    cJSON_AddStringToObject(e, "param", "model");
    cJSON_AddStringToObject(e, "code", code);
    return print_free(root);
}

char *api_route_json(struct http_server *s, const char *model, int *status)
{
    if (!model || !*model) {
        *status = 400;
        return error_json("missing_model", "Name the model: GET /node/route?model=NAME.");
    }
    struct router_route *r = malloc(sizeof *r);
    if (!r) {
        *status = 500;
        return NULL;
    }
    char *out;
    if (router_route(s->rt, model, r) != 0) {
        char msg[320];
        snprintf(msg, sizeof msg, "The model '%.200s' does not exist on this node or its mesh.",
                 model);
        *status = 404;
        out = error_json("model_not_found", msg);
    } else {
        *status = 200;
        out = print_free(route_obj(r));
    }
    free(r);
    return out;
}

#define API_ROUTE_MAX_SPLITS 32 /* a registry holds 32 models */

void api_routes_add(struct http_server *s, cJSON *root)
{
    cJSON *arr = cJSON_AddArrayToObject(root, "routes");
    struct router_split *sp = calloc(API_ROUTE_MAX_SPLITS, sizeof *sp);
    struct router_route *r = malloc(sizeof *r);
    int n = sp && r && arr ? router_splits(s->rt, sp, API_ROUTE_MAX_SPLITS) : 0;
    for (int i = 0; i < n; i++)
        if (router_route(s->rt, sp[i].model, r) == 0) cJSON_AddItemToArray(arr, route_obj(r));
    free(r);
    free(sp);
}

char *api_route_metrics_text(struct http_server *s)
{
    struct router_split *sp = calloc(API_ROUTE_MAX_SPLITS, sizeof *sp);
    int n = sp ? router_splits(s->rt, sp, API_ROUTE_MAX_SPLITS) : 0;
    static const char *const names[][2] = {
        {"meshllm_pipeline_passes_total", "Batches run through a split model's route."},
        {"meshllm_pipeline_tokens_total", "Tokens (batch rows) those passes carried."},
        {"meshllm_pipeline_routes_planned_total", "Routes planned (at start and after a failure)."},
        {"meshllm_pipeline_stage_failures_total", "Stage failures seen (recovered ones included)."},
        {"meshllm_pipeline_sent_bytes_total", "Bytes sent to the stages."},
        {"meshllm_pipeline_received_bytes_total", "Bytes received from the stages."},
        {"meshllm_pipeline_recoveries_total", "Failed stages replaced within their pass."},
        {"meshllm_pipeline_replayed_positions_total", "Positions replayed to rebuild a replacement's KV."},
    };
    size_t cap = 4096 + (size_t)n * 8 * 200, len = 0;
    char *t = n ? malloc(cap) : strdup("");
    for (size_t m = 0; t && n && m < sizeof names / sizeof names[0]; m++) {
        len += (size_t)snprintf(t + len, cap - len, "# HELP %s %s\n# TYPE %s counter\n",
                                names[m][0], names[m][1], names[m][0]);
        for (int i = 0; i < n; i++) {
            const struct router_split *e = &sp[i];
            uint64_t v[] = {e->n_passes,   e->n_tokens,   e->n_plans,
                            e->n_failures, e->bytes_sent, e->bytes_recv,
                            e->n_recoveries, e->n_replayed};
            len += (size_t)snprintf(t + len, cap - len, "%s{model=\"%.128s\"} %llu\n",
                                    names[m][0], e->model, (unsigned long long)v[m]);
        }
    }
    free(sp);
    return t;
}
