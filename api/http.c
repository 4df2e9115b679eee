/* http.c - libmicrohttpd glue: listeners, routing, authentication, body limits, static
 * console assets, suspend/resume (see http.h). Request bodies are parsed by openai.c and
 * ollama.c; generations are driven by generate.c.
 */
#include "api/api_internal.h"
#include "api/web.h"

#include "core/err.h"
#include "core/log.h"
#include "node/modelserve.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- replies ---------------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void api_refused(struct http_server *s, enum api_refusal why)
{
    if ((unsigned)why < API_REFUSED_N) atomic_fetch_add(&s->n_refused[why], 1);
}

void api_cors_headers(struct api_conn *c, struct MHD_Response *r)
{
    if (!c->is_cors) return;
    const char *origin = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Origin");
    if (!origin) return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(r, "Vary", "Origin");
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            "Authorization, Content-Type, X-Api-Key, X-Meshllm-Route");
    MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Meshllm-Ran-On, Retry-After");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
}

static void count_status(struct http_server *s, unsigned status)
{
    unsigned k = status / 100;
    if (k >= 1 && k <= 5) atomic_fetch_add(&s->n_http[k], 1);
    if (status == 429) atomic_fetch_add(&s->n_429, 1);
}

/* Queues data as the response; ran_on (or NULL) becomes the X-Meshllm-Ran-On header.
 * retry_after_s > 0 sets Retry-After on a 429 or 503; 0 takes the defaults (1 s, 2 s). */
static enum MHD_Result reply_full(struct api_conn *c, unsigned status, const void *data,
                                  size_t len, enum MHD_ResponseMemoryMode mode,
                                  const char *ctype, const char *ran_on, int retry_after_s)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free((void *)data);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (status == 429 || status == 503) {
        char secs[16];
        int s = retry_after_s > 0 ? retry_after_s : status == 429 ? 1 : 2;
        snprintf(secs, sizeof secs, "%d", s);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, secs);
    }
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (ran_on && *ran_on) MHD_add_response_header(r, "X-Meshllm-Ran-On", ran_on);
    api_cors_headers(c, r);
    /* after an ambiguous body length nothing more may be read from this connection */
    if (c->must_close) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c->mc, status, r);
    MHD_destroy_response(r);
    c->responded = true;
    count_status(c->srv, status);
    return ret;
}

static enum MHD_Result reply(struct api_conn *c, unsigned status, const void *data, size_t len,
                             enum MHD_ResponseMemoryMode mode, const char *ctype)
{
    return reply_full(c, status, data, len, mode, ctype, NULL, 0);
}

static enum MHD_Result reply_json_full(struct api_conn *c, unsigned status, char *json,
                                       const char *ran_on, int retry_after_s)
{
    if (!json) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                                  "\"param\":null,\"code\":null}}";
        return reply(c, 500, oom, sizeof oom - 1, MHD_RESPMEM_PERSISTENT, "application/json");
    }
    return reply_full(c, status, json, strlen(json), MHD_RESPMEM_MUST_FREE, "application/json",
                      ran_on, retry_after_s);
}

enum MHD_Result api_reply_json_ran_on(struct api_conn *c, unsigned status, char *json,
                                      const char *ran_on)
{
    return reply_json_full(c, status, json, ran_on, 0);
}

enum MHD_Result api_reply_json(struct api_conn *c, unsigned status, char *json)
{
    return reply_json_full(c, status, json, NULL, 0);
}

/* The Ollama routes answer errors as Ollama does, {"error":"message"} (its clients show
 * that string); the others as OpenAI does, {"error":{"message","type","param","code"}}. */
enum MHD_Result api_reply_error(struct api_conn *c, const struct api_error *e)
{
    char *body = NULL;
    if (c->is_ollama) {
        cJSON *o = cJSON_CreateObject();
        if (o && cJSON_AddStringToObject(o, "error", e->message)) body = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
    } else {
        body = api_error_json(e);
    }
    return reply_json_full(c, (unsigned)(e->status ? e->status : 400), body, NULL,
                           e->retry_after_s);
}

static enum MHD_Result reply_err(struct api_conn *c, int status, const char *type,
                                 const char *code, const char *msg)
{
    struct api_error e;
    api_error_set(&e, status, type, code, NULL, "%s", msg);
    return api_reply_error(c, &e);
}

/* ---- suspend / resume ------------------------------------------------------------------- */

void api_conn_suspend_locked(struct api_conn *c)
{
    if (c->suspended) return;
    c->suspended = true;
    MHD_suspend_connection(c->mc);
}

void api_conn_wake(void *conn)
{
    struct api_conn *c = conn;
    pthread_mutex_lock(&c->mu);
    if (c->suspended) {
        c->suspended = false;
        MHD_resume_connection(c->mc);
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- routing ---------------------------------------------------------------------------- */

bool api_key_matches(const char *want, const char *authorization, const char *x_api_key)
{
    const char *given = NULL;
    if (authorization && !strncasecmp(authorization, "Bearer ", 7)) given = authorization + 7;
    if (!given) given = x_api_key;
    if (!given) return false;
    /* constant time over the key's length */
    size_t n = strlen(want), g = strlen(given);
    unsigned char diff = (unsigned char)(n != g);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(want[i] ^ (i < g ? given[i] : 0));
    return diff == 0;
}

static bool key_ok(struct http_server *s, struct MHD_Connection *mc)
{
    if (!s->has_key) return true;
    return api_key_matches(
        s->api_key, MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "x-api-key"));
}

static enum MHD_Result serve_static(struct api_conn *c, const char *url)
{
    if (!strcmp(url, "/")) url = "/index.html";
    for (size_t i = 0; i < web_assets_count; i++) {
        const struct web_asset *a = &web_assets[i];
        if (!strcmp(a->path, url + 1)) {
            struct MHD_Response *r = MHD_create_response_from_buffer(a->len, (void *)a->bytes,
                                                                     MHD_RESPMEM_PERSISTENT);
            if (!r) return MHD_NO;
            MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->mime);
            MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
            api_cors_headers(c, r);
            enum MHD_Result ret = MHD_queue_response(c->mc, 200, r);
            MHD_destroy_response(r);
            c->responded = true;
            count_status(c->srv, 200);
            return ret;
        }
    }
    return reply_err(c, 404, "invalid_request_error", "not_found", "no such page");
}

/* The client's address as a rate-limit key: family byte + address (IPv4-mapped IPv6 is
 * IPv4, so a dual-stack listener counts a client once). Returns the key's length, 0 if
 * unknown (such clients share one bucket). */
static size_t addr_key(const struct sockaddr *sa, unsigned char key[API_RATELIMIT_KEY_CAP])
{
    if (!sa) return 0;
    if (sa->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 5;
    }
    if (sa->sa_family != AF_INET6) return 0;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {
        key[0] = 4;
        memcpy(key + 1, a6->s6_addr + 12, 4);
        return 5;
    }
    key[0] = 6;
    memcpy(key + 1, a6->s6_addr, 16);
    return 17;
}

static size_t client_key(struct MHD_Connection *mc, unsigned char key[API_RATELIMIT_KEY_CAP])
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    return addr_key(ci ? ci->client_addr : NULL, key);
}

/* --rate-limit: true when the client may send this request; else *e is the 429. */
static bool rate_ok(struct api_conn *c, struct api_error *e)
{
    struct http_server *s = c->srv;
    if (!s->rl) return true;
    unsigned char key[API_RATELIMIT_KEY_CAP];
    size_t n = client_key(c->mc, key);
    int64_t now_ms = mono_ms();
    int wait_s;
    if (api_ratelimit_take(s->rl, key, n, now_ms, &wait_s)) return true;
    api_error_set(e, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                  "Rate limit reached: this server allows %d requests a minute from your "
                  "address. Retry in %d s.",
                  s->rate_limit_per_min, wait_s);
    e->retry_after_s = wait_s;
    return false;
}

static enum MHD_Result ollama_not_found(struct api_conn *c, const char *model)
{
    struct api_error e;
    api_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                  "model '%.200s' not found", model);
    return api_reply_error(c, &e);
}

/* A model loading here: suspends c (true) until the watchdog's next look, which resumes it to
 * be dispatched again; after HTTP_LOAD_WAIT_MS, or when the model is ready, failed or not
 * local, false (the request goes on and the router answers). */
static bool await_load(struct api_conn *c, const char *model)
{
    struct router_model m;
    bool loading = !router_model_get(c->srv->rt, model, &m) && m.is_local &&
                   m.state == ROUTER_LOADING;
    int64_t now = mono_ms();
    if (loading && !c->load_wait_since_ms) c->load_wait_since_ms = now;
    bool wait = loading && now - c->load_wait_since_ms < HTTP_LOAD_WAIT_MS;
    pthread_mutex_lock(&c->mu);
    c->awaiting_load = wait;
    if (wait) api_conn_suspend_locked(c);
    pthread_mutex_unlock(&c->mu);
    return wait;
}

/* embed_legacy: Ollama's older /api/embeddings. */
static enum MHD_Result route_gen_ex(struct api_conn *c, enum api_proto proto, enum api_kind kind,
                                    bool embed_legacy)
{
    struct api_gen_req req;
    struct api_error e;
    if (!rate_ok(c, &e)) return api_reply_error(c, &e);
    const char *body = c->body ? c->body : "";
    int rc = proto == API_PROTO_OPENAI      ? api_openai_parse(kind, body, c->body_len, &req, &e)
             : proto == API_PROTO_RESPONSES ? api_responses_parse(body, c->body_len, &req, &e)
                                            : api_ollama_parse_ex(kind, embed_legacy, body,
                                                                  c->body_len, &req, &e);
    if (rc) return api_reply_error(c, &e);
    if (proto != API_PROTO_OLLAMA) {
        api_sampling_defaults_apply(&c->srv->defaults, &req);
        if (!req.model[0]) { /* no "model": the first model this node lists (llama-server) */
            struct router_model m;
            if (router_models(c->srv->rt, &m, 1) < 1) {
                api_gen_req_free(&req);
                api_error_set(&e, 400, "invalid_request_error", NULL, "model",
                              "you must provide a model parameter (this node serves none)");
                return api_reply_error(c, &e);
            }
            snprintf(req.model, sizeof req.model, "%s", m.name);
        }
    }
    modelserve_autoload(c->srv->rt, req.model); /* a store model: load on first request */
    if (await_load(c, req.model)) {
        api_gen_req_free(&req);
        return MHD_YES;
    }
    if (req.load_only) { /* Ollama's preload: the model is ready (or known to the mesh) */
        struct router_model m;
        enum api_kind k = req.kind;
        char name[sizeof req.model];
        snprintf(name, sizeof name, "%s", req.model);
        bool known = router_model_get(c->srv->rt, name, &m) == 0;
        api_gen_req_free(&req);
        if (!known) return ollama_not_found(c, name);
        if (m.is_local && m.state == ROUTER_FAILED) {
            api_error_set(&e, 503, "server_error", "model_unavailable", "model",
                          "The model '%.200s' failed to load: %.200s", m.name, m.err);
            return api_reply_error(c, &e);
        }
        return api_reply_json(c, 200, api_ollama_load_json(k, m.name));
    }
    const char *route = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "X-Meshllm-Route");
    if (api_route_header(route, &req, &e)) {
        api_gen_req_free(&req);
        return api_reply_error(c, &e);
    }
    rc = api_gen_start(c, proto, &req, &e); /* takes req */
    if (rc) return api_reply_error(c, &e);
    return MHD_YES;
}

static enum MHD_Result route_gen(struct api_conn *c, enum api_proto proto, enum api_kind kind)
{
    return route_gen_ex(c, proto, kind, false);
}

/* ---- the boundary: checks on a request's headers, before its body is read ------------------ */

struct header_count {
    int n_length, n_encoding;
    bool encoding_chunked;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    struct header_count *hc = cls;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) hc->n_length++;
    if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        hc->n_encoding++;
        hc->encoding_chunked = value && !strcasecmp(value, "chunked");
    }
    return MHD_YES;
}

static enum MHD_Result refuse(struct api_conn *c, enum api_refusal why, int status,
                              const char *code, const char *msg)
{
    api_refused(c->srv, why);
    log_info("http: refused (%s): %s", api_refusal_name(why), msg);
    return reply_err(c, status, "invalid_request_error", code, msg);
}

/* Refuses a request that the boundary does not let in (docs/API.md "Security boundary"):
 * an ambiguous body length, a Host naming another server, a page of another origin, a JSON
 * route without a JSON body. Answers an allowed CORS preflight. Returns true when it
 * replied (*ret is the result). */
static bool guard_request(struct api_conn *c, const char *method, const char *url,
                          enum MHD_Result *ret)
{
    struct http_server *s = c->srv;
    struct MHD_Connection *mc = c->mc;
    /* Request smuggling: MHD 0.9.75 takes the first of two Content-Length headers and a
     * Content-Length beside Transfer-Encoding; a proxy in front may frame by the other. */
    struct header_count hc = {0};
    MHD_get_connection_values(mc, MHD_HEADER_KIND, count_header, &hc);
    if (hc.n_length > 1 || (hc.n_length && hc.n_encoding) || hc.n_encoding > 1 ||
        (hc.n_encoding && !hc.encoding_chunked)) {
        c->must_close = true;
        *ret = refuse(c, API_REFUSED_BAD_LENGTH, 400, "bad_request_framing",
                      "The request's length is ambiguous: send one Content-Length, or "
                      "Transfer-Encoding: chunked alone.");
        return true;
    }
    const char *host = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (!api_guard_host_ok(&s->guard, host)) {
        *ret = refuse(c, API_REFUSED_HOST, 403, "host_not_allowed",
                      "This server does not answer to that Host name (a page may be trying "
                      "DNS rebinding). If you reach it by that name on purpose, start it with "
                      "--allowed-host NAME (or MESHLLM_ALLOWED_HOSTS).");
        return true;
    }
    const char *origin = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Origin");
    enum api_origin ok = api_guard_origin(&s->guard, origin, host);
    if (ok == API_ORIGIN_REFUSED) {
        *ret = refuse(c, API_REFUSED_ORIGIN, 403, "origin_not_allowed",
                      "Cross-origin requests from this web page are not allowed. To let a "
                      "page call this node, start it with --cors ORIGIN (or MESHLLM_CORS).");
        return true;
    }
    c->is_cors = ok == API_ORIGIN_CORS;
    if (!strcmp(method, "OPTIONS")) { /* a CORS preflight, or a plain OPTIONS */
        struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!r) {
            *ret = MHD_NO;
            return true;
        }
        MHD_add_response_header(r, "Allow", "GET, HEAD, POST, OPTIONS");
        api_cors_headers(c, r);
        *ret = MHD_queue_response(mc, 204, r);
        MHD_destroy_response(r);
        c->responded = true;
        count_status(s, 204);
        return true;
    }
    /* A form or a text/plain fetch needs no preflight: only a JSON body proves a script
     * that the CORS rules above already vetted, or a client that is not a browser. */
    if ((!strcmp(method, "POST") || !strcmp(method, "DELETE")) && (!strncmp(url, "/v1/", 4) || !strncmp(url, "/api/", 5)) &&
        !api_guard_json_type(MHD_lookup_connection_value(mc, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_TYPE))) {
        *ret = refuse(c, API_REFUSED_CONTENT_TYPE, 415, "unsupported_media_type",
                      "Send the body as JSON with the header 'Content-Type: application/json' "
                      "(curl: -H 'Content-Type: application/json').");
        return true;
    }
    return false;
}

/* Dispatches a complete request (body read). */
static enum MHD_Result dispatch(struct api_conn *c, const char *method, const char *url)
{
    struct http_server *s = c->srv;
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    if (get && (!strcmp(url, "/") || !strncmp(url, "/index.html", 11) || !strcmp(url, "/app.js") ||
                !strcmp(url, "/style.css") || !strcmp(url, "/favicon.ico")))
        return serve_static(c, url);
    if (get && !strcmp(url, "/health")) {
        /* llama-server's shapes: 503 while loading, 503 with the reason when no local
         * model could load; a lite node (no local model) is healthy */
        bool loading = false, ready = false;
        const struct router_model *failed = NULL;
        struct router_model *ms = calloc(API_MAX_MODELS, sizeof *ms);
        int n = ms ? router_models(s->rt, ms, API_MAX_MODELS) : 0;
        for (int i = 0; i < n; i++) {
            if (!ms[i].is_local) continue;
            if (ms[i].state == ROUTER_LOADING) loading = true;
            if (ms[i].state == ROUTER_READY) ready = true;
            if (ms[i].state == ROUTER_FAILED && !failed) failed = &ms[i];
        }
        cJSON *o = cJSON_CreateObject();
        unsigned code = 200;
        if (loading) {
            cJSON_AddStringToObject(o, "status", "loading model");
            code = 503;
        } else if (failed && !ready) {
            char why[sizeof failed->err + sizeof failed->name + 4];
            snprintf(why, sizeof why, "%s: %s", failed->name, failed->err);
            cJSON_AddStringToObject(o, "status", "error");
            cJSON_AddStringToObject(o, "error", why);
            code = 503;
        } else {
            cJSON_AddStringToObject(o, "status", "ok");
        }
        free(ms);
        char *j = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        return api_reply_json(c, code, j);
    }
    if (!key_ok(s, c->mc))
        return reply_err(c, 401, "invalid_request_error", "invalid_api_key",
                         "Incorrect API key provided. Pass it as 'Authorization: Bearer KEY'.");
    if (get && !strcmp(url, "/metrics")) {
        char *t = api_metrics_text(s);
        if (!t) return MHD_NO;
        return reply(c, 200, t, strlen(t), MHD_RESPMEM_MUST_FREE,
                     "text/plain; version=0.0.4; charset=utf-8");
    }
    if (get && (!strcmp(url, "/v1/models") || !strcmp(url, "/api/tags"))) {
        struct router_model *ms = calloc(API_MAX_MODELS, sizeof *ms);
        int n = ms ? router_models(s->rt, ms, API_MAX_MODELS) : 0;
        bool openai = !strcmp(url, "/v1/models");
        char *j = openai ? api_models_json(ms, n) : api_ollama_tags_json(ms, n);
        free(ms);
        return api_reply_json(c, 200, j);
    }
    if (get && !strncmp(url, "/v1/models/", 11)) {
        struct router_model m;
        if (router_model_get(s->rt, url + 11, &m))
            return reply_err(c, 404, "invalid_request_error", "model_not_found",
                             "The model does not exist on this node or its mesh.");
        return api_reply_json(c, 200, api_model_json(&m));
    }
    if (get && !strcmp(url, "/node/status")) return api_reply_json(c, 200, api_status_json(s));
    if (get && !strcmp(url, "/node/peers")) return api_reply_json(c, 200, api_peers_json(s));
    if (get && !strcmp(url, "/node/route")) {
        int status = 200;
        const char *model = MHD_lookup_connection_value(c->mc, MHD_GET_ARGUMENT_KIND, "model");
        char *j = api_route_json(s, model, &status);
        return api_reply_json(c, (unsigned)status, j);
    }
    if (get && !strcmp(url, "/api/version")) return api_reply_json(c, 200, api_ollama_version_json());
    if (get && !strcmp(url, "/api/ps")) {
        struct router_model *ms = calloc(API_MAX_MODELS, sizeof *ms);
        int n = ms ? router_models(s->rt, ms, API_MAX_MODELS) : 0;
        char *j = api_ollama_ps_json(ms, n);
        free(ms);
        return api_reply_json(c, 200, j);
    }
    if (post && !strcmp(url, "/v1/chat/completions"))
        return route_gen(c, API_PROTO_OPENAI, API_KIND_CHAT);
    if (post && !strcmp(url, "/v1/completions"))
        return route_gen(c, API_PROTO_OPENAI, API_KIND_COMPLETION);
    if (post && !strcmp(url, "/v1/responses"))
        return route_gen(c, API_PROTO_RESPONSES, API_KIND_CHAT);
    if (post && !strcmp(url, "/v1/embeddings"))
        return route_gen(c, API_PROTO_OPENAI, API_KIND_EMBEDDING);
    if (post && !strcmp(url, "/api/chat")) return route_gen(c, API_PROTO_OLLAMA, API_KIND_CHAT);
    if (post && !strcmp(url, "/api/embed"))
        return route_gen(c, API_PROTO_OLLAMA, API_KIND_EMBEDDING);
    if (post && !strcmp(url, "/api/embeddings"))
        return route_gen_ex(c, API_PROTO_OLLAMA, API_KIND_EMBEDDING, true);
    if (post && !strcmp(url, "/api/generate"))
        return route_gen(c, API_PROTO_OLLAMA, API_KIND_COMPLETION);
    bool handled;
    enum MHD_Result sr = api_store_route(c, method, url, &handled);
    if (handled) return sr;
    bool known = !strcmp(url, "/v1/chat/completions") || !strcmp(url, "/v1/completions") ||
                 !strcmp(url, "/v1/responses") ||
                 !strcmp(url, "/v1/embeddings") || !strcmp(url, "/v1/models") ||
                 !strcmp(url, "/metrics") || !strcmp(url, "/api/chat") ||
                 !strcmp(url, "/api/generate") || !strcmp(url, "/api/tags") ||
                 !strcmp(url, "/api/embed") || !strcmp(url, "/api/embeddings") ||
                 !strcmp(url, "/api/ps") ||
                 !strcmp(url, "/node/peers") || !strcmp(url, "/node/route");
    if (known)
        return reply_err(c, 405, "invalid_request_error", "method_not_allowed",
                         "method not allowed for this path");
    return reply_err(c, 404, "invalid_request_error", "not_found", "unknown path");
}

/* The connection's api_sock (MHD's socket context), or NULL. */
static struct api_sock *conn_sock(struct MHD_Connection *mc)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Starts (deadline_ms > 0 from now) or stops (0) the request deadline of mc. */
static void sock_deadline(struct http_server *s, struct MHD_Connection *mc, int64_t deadline_ms)
{
    struct api_sock *k = conn_sock(mc);
    if (!k) return;
    pthread_mutex_lock(&s->socks_mu);
    k->deadline_ms = deadline_ms > 0 ? mono_ms() + deadline_ms : 0;
    pthread_mutex_unlock(&s->socks_mu);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct http_server *s = cls;
    struct api_conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return MHD_NO;
        c->srv = s;
        c->mc = mc;
        c->is_http11 = version && !strcmp(version, MHD_HTTP_VERSION_1_1);
        c->is_ollama = url && !strncmp(url, "/api/", 5);
        pthread_mutex_init(&c->mu, NULL);
        *con_cls = c;
        pthread_mutex_lock(&s->conns_mu);
        c->next = s->conns;
        if (s->conns) s->conns->prev = c;
        s->conns = c;
        pthread_mutex_unlock(&s->conns_mu);
        atomic_fetch_add(&s->n_inflight, 1);
        enum MHD_Result ret;
        if (guard_request(c, method, url, &ret)) return ret;
        /* Refuse an announced oversized body before reading it. */
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > HTTP_MAX_BODY)
            return reply_err(c, 413, "invalid_request_error", "request_too_large",
                             "request body too large");
        return MHD_YES;
    }
    if (c->responded) { /* e.g. body still arriving after an early error */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (c->body_len + n > HTTP_MAX_BODY)
            return reply_err(c, 413, "invalid_request_error", "request_too_large",
                             "request body too large");
        if (c->body_len + n + 1 > c->body_cap) {
            size_t cap = (c->body_len + n + 1) * 2;
            if (cap > HTTP_MAX_BODY + 1) cap = HTTP_MAX_BODY + 1;
            char *b = realloc(c->body, cap);
            if (!b) return MHD_NO;
            c->body = b;
            c->body_cap = cap;
        }
        memcpy(c->body + c->body_len, upload_data, n);
        c->body_len += n;
        c->body[c->body_len] = 0;
        return MHD_YES;
    }
    if (c->gen) return api_gen_resume(c); /* resumed after waiting for the scheduler */
    if (c->pull) return api_store_resume(c); /* a pull or create without streaming */
    sock_deadline(s, mc, 0); /* the whole request is in */
    /* MHD 0.9.75 keeps the event state of the last read while a connection is suspended
     * and reads once on resume: a client that half-closed (nc -N, socat) then reads as
     * gone and gets no answer. Returning once without a response lets MHD mark the
     * connection as not reading; it calls again right away, and a generation suspends
     * from there. */
    if ((!strcmp(method, "POST") || !strcmp(method, "DELETE")) && !c->deferred) {
        c->deferred = true;
        return MHD_YES;
    }
    return dispatch(c, method, url);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)mc;
    (void)toe;
    struct http_server *s = cls;
    struct api_conn *c = *con_cls;
    if (!c) return;
    *con_cls = NULL;
    pthread_mutex_lock(&s->conns_mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&s->conns_mu);
    api_gen_free(c->gen); /* cancels a generation whose client went away */
    api_store_release(c->pull);
    sock_deadline(s, mc, s->request_deadline_ms); /* a kept-alive connection's next request */
    pthread_mutex_destroy(&c->mu);
    free(c->body);
    free(c);
    atomic_fetch_sub(&s->n_inflight, 1);
}

static void on_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (log_get_level() < LOG_DEBUG) return;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    log_debug("http: %s", buf);
}

/* ---- connections: per-address limit, request deadline ------------------------------------ */

/* MHD's accept policy: refuses a client address that holds max_conn_per_address sockets. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addrlen;
    struct http_server *s = cls;
    unsigned char key[API_RATELIMIT_KEY_CAP];
    size_t n = addr_key(addr, key);
    int held = 0;
    pthread_mutex_lock(&s->socks_mu);
    for (struct api_sock *k = s->socks; k; k = k->next)
        if (k->key_len == n && !memcmp(k->key, key, n)) held++;
    pthread_mutex_unlock(&s->socks_mu);
    if (held < s->max_conn_per_address) return MHD_YES;
    api_refused(s, API_REFUSED_PER_ADDRESS);
    log_debug("http: refused a connection: its address holds %d already", held);
    return MHD_NO;
}

/* MHD's connection notify: keeps the list of open sockets. MHD calls CLOSED before it
 * closes the descriptor, so the watchdog's shutdown() under socks_mu never hits a reused
 * one. */
static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    struct api_sock *k = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        k = calloc(1, sizeof *k);
        if (!k) return; /* not counted nor watched; MHD's idle timeout still applies */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? ci->connect_fd : -1;
        if (k->fd >= 0 && s->sndbuf_bytes > 0)
            setsockopt(k->fd, SOL_SOCKET, SO_SNDBUF, &s->sndbuf_bytes, sizeof s->sndbuf_bytes);
        k->key_len = client_key(mc, k->key);
        k->deadline_ms = mono_ms() + s->request_deadline_ms;
        pthread_mutex_lock(&s->socks_mu);
        k->next = s->socks;
        if (s->socks) s->socks->prev = k;
        s->socks = k;
        pthread_mutex_unlock(&s->socks_mu);
        *socket_context = k;
        return;
    }
    if (!k) return;
    pthread_mutex_lock(&s->socks_mu);
    if (k->prev)
        k->prev->next = k->next;
    else
        s->socks = k->next;
    if (k->next) k->next->prev = k->prev;
    pthread_mutex_unlock(&s->socks_mu);
    free(k);
    *socket_context = NULL;
}

/* Cuts connections whose request is not in by its deadline (a trickle of bytes restarts
 * MHD's idle timer, not this one): shutdown() makes MHD read end-of-file and close. */
static void cut_slow_requests(struct http_server *s)
{
    int64_t now = mono_ms();
    pthread_mutex_lock(&s->socks_mu);
    for (struct api_sock *k = s->socks; k; k = k->next) {
        if (!k->deadline_ms || now < k->deadline_ms || k->fd < 0) continue;
        k->deadline_ms = 0;
        api_refused(s, API_REFUSED_SLOW_REQUEST); /* counted before the client can see it */
        shutdown(k->fd, SHUT_RDWR);
        log_info("http: closed a connection whose request was not received within %d ms",
                 s->request_deadline_ms);
    }
    pthread_mutex_unlock(&s->socks_mu);
}

/* ---- disconnect watchdog ----------------------------------------------------------------- */

/* True when the suspended connection's client is gone (c->mu held).
 * End of file alone does not say so: a client that half-closes after its request (nc -N,
 * socat) waits for the answer, and a client that closed looks the same until something is
 * written to it: its kernel answers a write with a reset. So on end of file an HTTP/1.1
 * request that has no response yet is sent one interim "100 Continue" (every HTTP/1.1
 * client skips it, RFC 9110 section 15.2); a reset (POLLHUP/POLLERR) means gone. A stream
 * writes anyway: its next chunk meets the reset and MHD ends it. wait_ms: how long to wait
 * for the reset after a fresh probe. */
static bool conn_gone_locked(struct api_conn *c, int wait_ms)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    int fd = ci->connect_fd;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) < 0) return false;
    if (p.revents & (POLLHUP | POLLERR)) return true; /* reset, or both directions shut */
    if (!(p.revents & POLLRDHUP)) return false;       /* no end of file: still there */
    c->peer_eof = true;
    if (c->responded || !c->is_http11 || c->probed) return false;
    static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n";
    c->probed = true;
    if (send(fd, probe, sizeof probe - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        return errno == EPIPE || errno == ECONNRESET;
    p.events = 0; /* only a reset or a full shutdown (always reported) ends the wait */
    p.revents = 0;
    if (poll(&p, 1, wait_ms) < 0) return false;
    return (p.revents & (POLLHUP | POLLERR)) != 0;
}

bool api_conn_still_wanted(void *conn)
{
    struct api_conn *c = conn;
    pthread_mutex_lock(&c->mu);
    /* asked once, right before the request would take a slot: worth a few ms to know */
    bool gone = c->suspended && conn_gone_locked(c, 20);
    pthread_mutex_unlock(&c->mu);
    return !gone;
}

/* MHD does not watch a suspended connection's socket, so a client that gives up while its
 * request waits in the queue or runs without streaming would hold a slot until the end.
 * Every 250 ms this thread looks at the sockets of suspended generations: a reset means the
 * client is gone (conn_gone_locked), and its request is cancelled. It also bounds what a
 * stream holds for a client that does not read, and cuts requests past their deadline. A queued request is
 * also asked once more when its slot comes (api_conn_still_wanted, the scheduler's
 * still_wanted), so a client that left never gets a slot, however short the wait. The socket stays open while we look: MHD closes it only
 * after on_completed, which waits for conns_mu. */
static void *watchdog_main(void *arg)
{
    struct http_server *s = arg;
    pthread_mutex_lock(&s->conns_mu);
    while (!s->wd_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 250 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->wd_cv, &s->conns_mu, &until);
        for (struct api_conn *c = s->conns; c && !s->wd_stop; c = c->next) {
            pthread_mutex_lock(&c->mu);
            if (c->suspended && c->gen && conn_gone_locked(c, 0)) api_gen_cancel(c->gen);
            if (c->suspended && c->awaiting_load) { /* dispatched again: loaded yet? */
                c->awaiting_load = false;
                c->suspended = false;
                MHD_resume_connection(c->mc);
            }
            /* a stream MHD cannot write (the client does not read): count what waits */
            if (!c->suspended && c->gen && api_gen_stream_stalled(c->gen, s->stream_stall_ms)) {
                api_refused(s, API_REFUSED_SLOW_READER);
                log_warn("http: a streaming client read nothing for %d ms; its generation was "
                         "cancelled and the connection closed",
                         s->stream_stall_ms);
                const union MHD_ConnectionInfo *ci =
                    MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
                if (ci) shutdown(ci->connect_fd, SHUT_RDWR); /* MHD's next write fails */
            }
            pthread_mutex_unlock(&c->mu);
        }
        cut_slow_requests(s);
    }
    pthread_mutex_unlock(&s->conns_mu);
    return NULL;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (!host || !*host || !strcmp(host, "localhost")) host = "127.0.0.1";
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        return AF_INET;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        return AF_INET6;
    }
    return -1;
}

static struct MHD_Daemon *listen_on(struct http_server *s, const struct http_opts *o, int port,
                                    int *bound, char *err, size_t err_cap)
{
    struct sockaddr_storage ss;
    int fam = parse_addr(o->host, port, &ss);
    if (fam < 0) {
        err_set(err, err_cap, MESH_EINVAL, "bad --host '%s' (use an IP address)", o->host);
        return NULL;
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (fam == AF_INET6) flags |= MHD_USE_IPv6;
    unsigned timeout = (unsigned)(o->idle_timeout_s > 0 ? o->idle_timeout_s : 15);
    /* The per-address limit is on_accept's rather than MHD_OPTION_PER_IP_CONNECTION_LIMIT,
     * which refuses before any callback and so could not be counted for /metrics. */
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, on_accept, s, on_request, s, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, s, MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)HTTP_MAX_CONN, MHD_OPTION_EXTERNAL_LOGGER, on_log, NULL, MHD_OPTION_END);
    if (!d) {
        err_set(err, err_cap, MESH_EIO, "cannot listen on %s:%d (port in use?)",
                o->host ? o->host : "127.0.0.1", port);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound = di ? di->port : port;
    return d;
}

int http_server_start(struct router *rt, const struct http_opts *o, struct http_server **out,
                      char *err, size_t err_cap)
{
    *out = NULL;
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    s->rt = rt;
    pthread_rwlock_init(&s->stop_lock, NULL);
    pthread_mutex_init(&s->conns_mu, NULL);
    pthread_mutex_init(&s->socks_mu, NULL);
    pthread_cond_init(&s->wd_cv, NULL);
    atomic_init(&s->n_inflight, 0);
    s->max_conn_per_address =
        o->max_conn_per_address > 0 ? o->max_conn_per_address : HTTP_MAX_CONN_PER_ADDRESS;
    s->request_deadline_ms =
        o->request_deadline_ms > 0 ? o->request_deadline_ms : HTTP_REQUEST_DEADLINE_MS;
    s->sndbuf_bytes = o->sndbuf_bytes;
    s->stream_stall_ms = o->stream_stall_ms > 0 ? o->stream_stall_ms : HTTP_STREAM_STALL_MS;
    if (api_guard_init(&s->guard, o->host, o->allowed_hosts, o->n_allowed_hosts,
                       o->cors_origins, o->n_cors_origins)) {
        err_set(err, err_cap, MESH_EINVAL,
                "too many or too long --allowed-host or --cors values (at most %d, each under "
                "%d bytes)",
                API_GUARD_MAX_NAMES, API_GUARD_NAME_CAP);
        goto fail;
    }
    s->started_s = (int64_t)time(NULL);
    if (o->api_key && *o->api_key) {
        if (strlen(o->api_key) >= sizeof s->api_key) {
            err_set(err, err_cap, MESH_EINVAL, "--api-key is too long");
            goto fail;
        }
        snprintf(s->api_key, sizeof s->api_key, "%s", o->api_key);
        s->has_key = true;
    }
    s->ollama_port = -1;
    if (o->rate_limit_per_min > 0) {
        s->rate_limit_per_min = o->rate_limit_per_min;
        if (api_ratelimit_new(o->rate_limit_per_min, API_RATELIMIT_CLIENTS, &s->rl)) {
            err_set(err, err_cap, MESH_ENOMEM, "out of memory");
            goto fail;
        }
    }
    s->peers_json = o->peers_json;
    api_sampling_defaults_init(&s->defaults);
    if (o->defaults) s->defaults = *o->defaults;
    s->peers_ctx = o->peers_ctx;
    s->d = listen_on(s, o, o->port, &s->port, err, err_cap);
    if (!s->d) goto fail;
    if (o->ollama_port >= 0) {
        s->d_ollama = listen_on(s, o, o->ollama_port, &s->ollama_port, err, err_cap);
        if (!s->d_ollama) goto fail;
    }
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) == 0) s->has_watchdog = true;
    if (s->guard.bind != API_BIND_LOOPBACK && !s->has_key)
        log_warn("http: listening on %s without --api-key: anyone who can reach this address "
                 "can use the node's models%s. Set --api-key KEY (or MESHLLM_API_KEY), or "
                 "bind to 127.0.0.1.",
                 s->guard.bind_host,
                 s->guard.bind == API_BIND_ANY ? " (and any Host name is accepted)" : "");
    *out = s;
    return 0;
fail:
    if (s->d) MHD_stop_daemon(s->d);
    api_ratelimit_free(s->rl);
    pthread_rwlock_destroy(&s->stop_lock);
    pthread_mutex_destroy(&s->conns_mu);
    pthread_mutex_destroy(&s->socks_mu);
    pthread_cond_destroy(&s->wd_cv);
    free(s);
    return MESH_EIO;
}

int http_server_port(const struct http_server *s) { return s->port; }
int http_server_ollama_port(const struct http_server *s) { return s->ollama_port; }

void http_server_stop(struct http_server *s)
{
    if (!s) return;
    pthread_rwlock_wrlock(&s->stop_lock);
    s->stopping = true;
    pthread_rwlock_unlock(&s->stop_lock);
    if (s->d) MHD_quiesce_daemon(s->d);
    if (s->d_ollama) MHD_quiesce_daemon(s->d_ollama);
    /* Ends every generation: streams get their final events, waiting requests their reply. */
    router_stop(s->rt);
    for (int i = 0; i < 500 && atomic_load(&s->n_inflight) > 0; i++) usleep(10000);
    if (s->has_watchdog) {
        pthread_mutex_lock(&s->conns_mu);
        s->wd_stop = true;
        pthread_cond_signal(&s->wd_cv);
        pthread_mutex_unlock(&s->conns_mu);
        pthread_join(s->watchdog, NULL);
    }
    if (s->d) MHD_stop_daemon(s->d);
    if (s->d_ollama) MHD_stop_daemon(s->d_ollama);
    pthread_rwlock_destroy(&s->stop_lock);
    pthread_mutex_destroy(&s->conns_mu);
    pthread_mutex_destroy(&s->socks_mu);
    pthread_cond_destroy(&s->wd_cv);
    api_ratelimit_free(s->rl);
    free(s);
}
