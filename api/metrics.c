/* metrics.c - /metrics (Prometheus text exposition format 0.0.4), /node/status (the
 * console's live view) and the /v1/models list. Numbers come from the schedulers' stats and
 * the server's counters; memory is the process's resident set from /proc/self/statm.
 */
#include "api/api_internal.h"
#include "node/blob.h"
#include "node/mesh.h"
#include "node/router.h"


#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, res = 0;
    int n = fscanf(f, "%llu %llu", &size, &res);
    fclose(f);
    if (n != 2) return 0;
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

struct mbuf {
    char *p;
    size_t len, cap;
};

static void mprintf(struct mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mprintf(struct mbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (int tries = 0; tries < 2; tries++) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) return;
        b->p = q;
        b->cap = cap;
    }
}

/* What the p2p side refused, trimmed and evicted (issue 11: an owner sees an attack), and
 * the bounded tables' sizes. Counters from the loop thread's last refresh (1 s). */
static void p2p_metrics(struct mbuf *b, struct mesh *mesh)
{
    struct mesh_stats ms;
    mesh_stats(mesh, &ms);
    const struct p2pnode_stats *p = &ms.p2p;
    const struct {
        const char *reason;
        uint64_t n;
    } refused[] = {
        {"pending_total", p->host.n_refused_pending_total},
        {"pending_per_ip", p->host.n_refused_pending_per_ip},
        {"handshake_timeout", p->host.n_handshake_timeouts},
        {"conns_total", p->host.n_refused_conns_total},
        {"conns_per_peer", p->host.n_refused_conns_per_peer},
        {"dials", p->host.n_refused_dials},
        {"not_admitted", ms.n_refused},
        {"peer_table_full", p->n_peer_table_refused},
        {"dht_table_full", p->dht.n_table_refused},
        {"provider_quota", p->dht.n_provider_quota_refused},
        {"provider_full", p->dht.n_provider_full_refused},
        {"value_quota", p->dht.n_value_quota_refused},
        {"value_full", p->dht.n_value_full_refused},
        {"gossip_topics", p->gossip.n_topics_refused},
        {"gossip_peer_topics", p->gossip.n_peer_topics_refused},
        {"gossip_peers", p->gossip.n_peers_refused},
        {"gossip_graylisted", p->gossip.n_graylisted},
    };
    mprintf(b, "# HELP meshllm_p2p_refused_total Peer-to-peer connections, peers and records "
               "refused by the resource limits (docs/PROTOCOL.md), by reason.\n"
               "# TYPE meshllm_p2p_refused_total counter\n");
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        mprintf(b, "meshllm_p2p_refused_total{reason=\"%s\"} %llu\n", refused[i].reason,
                (unsigned long long)refused[i].n);
    const struct {
        const char *what;
        uint64_t n;
    } evicted[] = {
        {"connection_trimmed", p->host.n_trimmed},
        {"peer_table", p->n_peer_table_evicted},
        {"dht_table_replaced", p->dht.n_table_replaced},
        {"dht_provider", p->dht.n_provider_evicted},
        {"dht_value", p->dht.n_value_evicted},
        {"gossip_seen", p->gossip.n_seen_evicted},
        {"gossip_mcache", p->gossip.n_mcache_evicted},
        {"gossip_backoff", p->gossip.n_backoff_evicted},
    };
    mprintf(b, "# HELP meshllm_p2p_evicted_total Entries given up to stay within the bounds "
               "(connections trimmed, table entries evicted), by table.\n"
               "# TYPE meshllm_p2p_evicted_total counter\n");
    for (size_t i = 0; i < sizeof evicted / sizeof *evicted; i++)
        mprintf(b, "meshllm_p2p_evicted_total{what=\"%s\"} %llu\n", evicted[i].what,
                (unsigned long long)evicted[i].n);
    mprintf(b, "# HELP meshllm_p2p_connections Peer-to-peer connections now.\n"
               "# TYPE meshllm_p2p_connections gauge\n"
               "meshllm_p2p_connections{state=\"pending\"} %u\n"
               "meshllm_p2p_connections{state=\"inbound\"} %u\n"
               "meshllm_p2p_connections{state=\"outbound\"} %u\n",
            p->host.n_pending, p->host.n_conns_inbound, p->host.n_conns_outbound);
    mprintf(b, "# HELP meshllm_p2p_table_entries Entries in the bounded peer-to-peer tables.\n"
               "# TYPE meshllm_p2p_table_entries gauge\n"
               "meshllm_p2p_table_entries{table=\"peers\"} %zu\n"
               "meshllm_p2p_table_entries{table=\"dht_routing\"} %zu\n"
               "meshllm_p2p_table_entries{table=\"dht_records\"} %zu\n"
               "meshllm_p2p_table_entries{table=\"dht_provider_records\"} %zu\n"
               "meshllm_p2p_table_entries{table=\"gossip_seen\"} %zu\n",
            p->n_peers, p->dht.n_table, p->dht.n_records, p->dht.n_provider_records,
            p->gossip.n_seen);
    struct blob_stats bs;
    blob_server_stats(mesh_blob(mesh), &bs);
    mprintf(b, "# HELP meshllm_blob_bytes_total Model store bytes moved on /meshllm/blob/1: "
               "served to members, fetched from them (verified).\n"
               "# TYPE meshllm_blob_bytes_total counter\n"
               "meshllm_blob_bytes_total{dir=\"served\"} %llu\n"
               "meshllm_blob_bytes_total{dir=\"fetched\"} %llu\n",
            (unsigned long long)bs.bytes_served, (unsigned long long)bs.bytes_fetched);
    mprintf(b, "# HELP meshllm_blob_pieces_total Pieces on /meshllm/blob/1 by outcome: served, "
               "fetched (verified and written), resumed (valid in a partial file), bad (did "
               "not verify: its provider was dropped).\n"
               "# TYPE meshllm_blob_pieces_total counter\n"
               "meshllm_blob_pieces_total{outcome=\"served\"} %llu\n"
               "meshllm_blob_pieces_total{outcome=\"fetched\"} %llu\n"
               "meshllm_blob_pieces_total{outcome=\"resumed\"} %llu\n"
               "meshllm_blob_pieces_total{outcome=\"bad\"} %llu\n",
            (unsigned long long)bs.n_pieces_served, (unsigned long long)bs.n_pieces_fetched,
            (unsigned long long)bs.n_pieces_resumed, (unsigned long long)bs.n_bad_pieces);
    mprintf(b, "# HELP meshllm_blob_events_total Provider and puller events on /meshllm/blob/1.\n"
               "# TYPE meshllm_blob_events_total counter\n"
               "meshllm_blob_events_total{event=\"stream\"} %llu\n"
               "meshllm_blob_events_total{event=\"stream_refused\"} %llu\n"
               "meshllm_blob_events_total{event=\"error_sent\"} %llu\n"
               "meshllm_blob_events_total{event=\"provider_dropped\"} %llu\n"
               "meshllm_blob_events_total{event=\"pull_ok\"} %llu\n"
               "meshllm_blob_events_total{event=\"pull_failed\"} %llu\n",
            (unsigned long long)bs.n_streams, (unsigned long long)bs.n_streams_refused,
            (unsigned long long)bs.n_errors_sent, (unsigned long long)bs.n_peers_dropped,
            (unsigned long long)bs.n_pulls_ok, (unsigned long long)bs.n_pulls_failed);
}

char *api_metrics_text(struct http_server *s)
{
    struct mbuf b = {0};
    mprintf(&b, "# HELP meshllm_http_responses_total HTTP responses by status class.\n"
                "# TYPE meshllm_http_responses_total counter\n");
    for (int k = 1; k <= 5; k++)
        mprintf(&b, "meshllm_http_responses_total{class=\"%dxx\"} %llu\n", k,
                (unsigned long long)atomic_load(&s->n_http[k]));
    mprintf(&b, "# HELP meshllm_requests_rejected_total Requests refused with 429 (queue full or --rate-limit).\n"
                "# TYPE meshllm_requests_rejected_total counter\n"
                "meshllm_requests_rejected_total %llu\n",
            (unsigned long long)atomic_load(&s->n_429));
    mprintf(&b, "# HELP meshllm_http_refused_total HTTP requests refused or connections cut "
                "by the security boundary and limits, by reason.\n"
                "# TYPE meshllm_http_refused_total counter\n");
    for (int r = 0; r < API_REFUSED_N; r++)
        mprintf(&b, "meshllm_http_refused_total{reason=\"%s\"} %llu\n",
                api_refusal_name((enum api_refusal)r),
                (unsigned long long)atomic_load(&s->n_refused[r]));
    struct mesh *mesh = router_mesh(s->rt);
    if (mesh) p2p_metrics(&b, mesh);
    mprintf(&b, "# HELP meshllm_process_resident_memory_bytes Resident memory.\n"
                "# TYPE meshllm_process_resident_memory_bytes gauge\n"
                "meshllm_process_resident_memory_bytes %llu\n",
            (unsigned long long)rss_bytes());
    static const char *const names[][3] = {
        {"meshllm_requests_total", "counter", "Generation requests admitted to a slot."},
        {"meshllm_requests_cancelled_total", "counter", "Requests ended because the client left."},
        {"meshllm_prompt_tokens_total", "counter", "Prompt tokens computed."},
        {"meshllm_prompt_tokens_cached_total", "counter", "Prompt tokens reused from KV slots."},
        {"meshllm_generated_tokens_total", "counter", "Tokens generated."},
        {"meshllm_tokens_per_second", "gauge", "Generated tokens per second (last window)."},
        {"meshllm_queue_depth", "gauge", "Requests waiting for a slot."},
        {"meshllm_slots_active", "gauge", "Slots generating."},
        {"meshllm_slots_total", "gauge", "KV slots."},
        {"meshllm_decode_seconds_total", "counter", "Time spent in decode steps."},
        {"meshllm_spec_drafted_tokens_total", "counter", "Speculative tokens proposed and verified."},
        {"meshllm_spec_accepted_tokens_total", "counter", "Speculative tokens accepted."},
    };
    /* the router reads the schedulers (not once they are stopped: has_stats false) */
    pthread_rwlock_rdlock(&s->stop_lock);
    bool live = !s->stopping;
    pthread_rwlock_unlock(&s->stop_lock);
    struct router_model *ms = live ? calloc(API_MAX_MODELS, sizeof *ms) : NULL;
    int n = ms ? router_models(s->rt, ms, API_MAX_MODELS) : 0;
    for (size_t m = 0; live && m < sizeof names / sizeof names[0]; m++) {
        mprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", names[m][0], names[m][2], names[m][0],
                names[m][1]);
        for (int i = 0; i < n; i++) {
            const struct router_model *e = &ms[i];
            if (!e->is_local || e->state != ROUTER_READY || !e->has_stats) continue;
            double v[] = {(double)e->n_requests, (double)e->n_cancelled, (double)e->n_prompt_tokens,
                          (double)e->n_cached_tokens, (double)e->n_gen_tokens, e->gen_tps,
                          e->n_queued, e->n_active, e->n_slots, e->busy_s,
                          (double)e->n_spec_drafted, (double)e->n_spec_accepted};
            mprintf(&b, "%s{model=\"%s\"} %.6g\n", names[m][0], e->name, v[m]);
        }
    }
    free(ms);
    /* split models' pipelines: a block of its own (api/route.c) */
    char *pipe = live ? api_route_metrics_text(s) : NULL;
    if (pipe) mprintf(&b, "%s", pipe);
    free(pipe);
    return b.p;
}

char *api_status_json(struct http_server *s)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "node", "local");
    cJSON_AddNumberToObject(root, "uptime_s", (double)((int64_t)time(NULL) - s->started_s));
    cJSON_AddNumberToObject(root, "rss_bytes", (double)rss_bytes());
    cJSON *arr = cJSON_AddArrayToObject(root, "models");
    double tps = 0;
    int queued = 0, active = 0;
    pthread_rwlock_rdlock(&s->stop_lock);
    bool live = !s->stopping;
    pthread_rwlock_unlock(&s->stop_lock);
    struct router_model *ms = calloc(API_MAX_MODELS, sizeof *ms);
    int n = ms ? router_models(s->rt, ms, API_MAX_MODELS) : 0;
    for (int i = 0; i < n; i++) {
        const struct router_model *e = &ms[i];
        if (!e->is_local) continue;
        int st = e->state;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, m);
        cJSON_AddStringToObject(m, "name", e->name);
        cJSON_AddStringToObject(m, "state", st == ROUTER_READY     ? "ready"
                                            : st == ROUTER_LOADING ? "loading"
                                                                   : "failed");
        cJSON_AddNumberToObject(m, "file_bytes", (double)e->file_bytes);
        if (st == ROUTER_FAILED) cJSON_AddStringToObject(m, "error", e->err);
        if (st != ROUTER_READY || !live || !e->has_stats) continue;
        cJSON_AddStringToObject(m, "arch", e->arch);
        cJSON_AddNumberToObject(m, "n_layer", e->n_layer);
        cJSON_AddNumberToObject(m, "n_embd", e->n_embd);
        cJSON_AddNumberToObject(m, "n_ctx", e->n_ctx);
        cJSON_AddNumberToObject(m, "slots", e->n_slots);
        cJSON_AddNumberToObject(m, "active", e->n_active);
        cJSON_AddNumberToObject(m, "queued", e->n_queued);
        cJSON_AddNumberToObject(m, "tokens_per_s", e->gen_tps);
        cJSON_AddNumberToObject(m, "generated_tokens", (double)e->n_gen_tokens);
        cJSON_AddNumberToObject(m, "requests", (double)e->n_requests);
        tps += e->gen_tps;
        queued += e->n_queued;
        active += e->n_active;
    }
    free(ms);
    cJSON_AddNumberToObject(root, "tokens_per_s", tps);
    cJSON_AddNumberToObject(root, "queued", queued);
    cJSON_AddNumberToObject(root, "active", active);
    cJSON_AddArrayToObject(root, "peers"); /* the mesh view fills this later */
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

char *api_peers_json(struct http_server *s)
{
    char *j = s->peers_json ? s->peers_json(s->peers_ctx) : strdup("{\"enabled\":false,\"peers\":[]}");
    cJSON *root = j ? cJSON_Parse(j) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return j; /* as the peer layer wrote it */
    }
    free(j);
    if (!cJSON_GetObjectItemCaseSensitive(root, "route"))
        cJSON_AddStringToObject(root, "route", node_route_name(router_default_route(s->rt)));
    /* the split models' routes, for the console's mesh map (api/route.c) */
    if (!cJSON_GetObjectItemCaseSensitive(root, "routes")) api_routes_add(s, root);
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

/* "meshllm":{"local":bool,"where":[peer IDs]}: whether the model is loaded here and which
 * peers serve it (official clients ignore the extra field). */
void api_model_add_meshllm(cJSON *obj, const struct router_model *e)
{
    cJSON *m = cJSON_AddObjectToObject(obj, "meshllm");
    if (!m) return;
    cJSON_AddBoolToObject(m, "local", e->is_local);
    cJSON *w = cJSON_AddArrayToObject(m, "where");
    int n = e->n_where < ROUTER_MAX_WHERE ? e->n_where : ROUTER_MAX_WHERE;
    for (int i = 0; w && i < n; i++) {
        char id[sizeof e->where[i] + 1];
        snprintf(id, sizeof id, "%.*s", (int)sizeof e->where[i], e->where[i]);
        cJSON_AddItemToArray(w, cJSON_CreateString(id));
    }
}

static cJSON *model_obj(const struct router_model *e)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", e->name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)e->created);
    cJSON_AddStringToObject(m, "owned_by", "meshllm");
    api_model_add_meshllm(m, e);
    return m;
}

static char *print_free(cJSON *root)
{
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

char *api_model_json(const struct router_model *e)
{
    return print_free(model_obj(e));
}

char *api_models_json(const struct router_model *ms, int n)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *arr = cJSON_AddArrayToObject(root, "data");
    for (int i = 0; arr && i < n; i++)
        if (!(ms[i].is_local && ms[i].state == ROUTER_FAILED))
            cJSON_AddItemToArray(arr, model_obj(&ms[i]));
    return print_free(root);
}
