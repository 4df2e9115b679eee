/* api_internal.h - what the files of api/ share: the server, a request's connection state,
 * and the generation glue between a parsed request and the scheduler.
 * Thread rule: an api_conn is used by the MHD thread, except api_conn_wake() which the
 * scheduler's worker calls; conn->mu guards `suspended`.
 */
#ifndef MESH_API_INTERNAL_H
#define MESH_API_INTERNAL_H

#include "api/http.h"
#include "api/openai.h"
#include "node/router.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum api_proto { API_PROTO_OPENAI = 1, API_PROTO_OLLAMA = 2, API_PROTO_RESPONSES = 3 };

#define API_MAX_MODELS 64 /* models listed per response (the registry holds 32) */

struct api_ratelimit;
#define API_RATELIMIT_KEY_CAP 17 /* a client address as a key: family byte + an IPv6 address */

/* ---- the security boundary (api/guard.c; docs/API.md "Security boundary") ---------------- */

#define API_GUARD_MAX_NAMES 32 /* --allowed-host and --cors entries each */
#define API_GUARD_NAME_CAP 256 /* bytes of one name or origin, NUL included */

enum api_bind { API_BIND_LOOPBACK = 1, API_BIND_ADDRESS = 2, API_BIND_ANY = 3 };

/* What the server answers to; filled once by api_guard_init, then read-only (any thread). */
struct api_guard {
    enum api_bind bind;
    char bind_host[64];                               /* the --host literal */
    char hosts[API_GUARD_MAX_NAMES][API_GUARD_NAME_CAP]; /* --allowed-host names */
    int n_hosts;
    char origins[API_GUARD_MAX_NAMES][API_GUARD_NAME_CAP]; /* --cors origins */
    int n_origins;
};

/* Fills g for a server bound to bind_host (an IP literal or "localhost") with the extra
 * names (exact, "*.suffix" or "*") and cross-origin allowances ("scheme://host[:port]",
 * "scheme://host:*" or "*"). 0, or MESH_EINVAL when there are too many or one is too long. */
int api_guard_init(struct api_guard *g, const char *bind_host, const char *const *allowed_hosts,
                   int n_allowed_hosts, const char *const *cors_origins, int n_cors_origins);
/* Whether a request whose Host header is host_header (NULL: none) is addressed to this
 * server: always when bound to 0.0.0.0/::; else localhost, *.localhost, loopback literals,
 * the bound address and the allowed names, with any port. */
bool api_guard_host_ok(const struct api_guard *g, const char *host_header);

enum api_origin {
    API_ORIGIN_NONE = 0,    /* no Origin header: not a cross-origin browser request */
    API_ORIGIN_SAME = 1,    /* the page came from this very authority (the web console) */
    API_ORIGIN_CORS = 2,    /* another origin that --cors or an allowed host name admits */
    API_ORIGIN_REFUSED = 3, /* any other page: 403 */
};
/* Classifies a request's Origin header (NULL: none) against its Host header. */
enum api_origin api_guard_origin(const struct api_guard *g, const char *origin,
                                 const char *host_header);
/* Whether a Content-Type header value is application/json (parameters allowed). */
bool api_guard_json_type(const char *content_type);

/* Why the server refused a request or cut a connection (meshllm_http_refused_total). */
enum api_refusal {
    API_REFUSED_HOST = 0,         /* Host names another server (DNS rebinding) */
    API_REFUSED_ORIGIN,           /* cross-origin browser request not allowed by --cors */
    API_REFUSED_CONTENT_TYPE,     /* a JSON route without Content-Type: application/json */
    API_REFUSED_BAD_LENGTH,       /* repeated Content-Length, or with Transfer-Encoding */
    API_REFUSED_PER_ADDRESS,      /* HTTP_MAX_CONN_PER_ADDRESS connections already open */
    API_REFUSED_SLOW_REQUEST,     /* request not received within the request deadline */
    API_REFUSED_SLOW_READER,      /* stream client read nothing for HTTP_STREAM_STALL_MS */
    API_REFUSED_N
};
/* "host", "origin", "content_type", "bad_length", "per_address", "slow_request",
 * "slow_reader" (the metric's reason label). */
const char *api_refusal_name(enum api_refusal r);

/* One accepted TCP connection (MHD's socket context), from accept to close: what the
 * per-address limit counts and the request deadline watches. In http_server.socks, guarded
 * by socks_mu. */
struct api_sock {
    int fd;
    unsigned char key[API_RATELIMIT_KEY_CAP]; /* client address (client_key) */
    size_t key_len;
    int64_t deadline_ms; /* monotonic time by which the request must be in; 0 = none */
    struct api_sock *prev, *next;
};

struct http_server {
    struct router *rt;
    struct api_ratelimit *rl;   /* --rate-limit per client address, or NULL (off) */
    int rate_limit_per_min;
    char api_key[256];
    bool has_key;
    struct MHD_Daemon *d, *d_ollama;
    int port, ollama_port;
    int64_t started_s;
    char *(*peers_json)(void *ctx); /* http_opts.peers_json */
    struct api_sampling_defaults defaults; /* http_opts.defaults (all unset if NULL) */
    void *peers_ctx;
    pthread_rwlock_t stop_lock; /* read-held while submitting; write-held to set stopping */
    bool stopping;              /* guarded by stop_lock */
    atomic_int n_inflight;      /* requests between first call and completion */
    /* counters for /metrics */
    atomic_ullong n_http[6];    /* by status class 1xx..5xx (index 1..5) */
    atomic_ullong n_gen_req;    /* generation requests accepted */
    atomic_ullong n_429;
    atomic_ullong n_refused[API_REFUSED_N];
    /* the boundary and the limits (http_opts, defaults applied) */
    struct api_guard guard;
    int max_conn_per_address;
    int request_deadline_ms;
    int stream_stall_ms;
    int sndbuf_bytes;
    /* open connections, for the per-address limit and the request deadline */
    pthread_mutex_t socks_mu;   /* guards socks and every api_sock (lock after conns_mu) */
    struct api_sock *socks;
    /* requests in flight, for the disconnect watchdog */
    pthread_mutex_t conns_mu;   /* guards conns and every api_conn's prev/next */
    struct api_conn *conns;
    pthread_t watchdog;
    bool has_watchdog;
    bool wd_stop;               /* guarded by conns_mu */
    pthread_cond_t wd_cv;
};

struct api_gen;
struct api_pull;

struct api_conn {
    struct http_server *srv;
    struct MHD_Connection *mc;
    char *body;
    size_t body_len, body_cap;
    bool responded;             /* a response was queued */
    bool is_http11;             /* HTTP/1.1 request: may be sent an interim 100 */
    bool peer_eof;              /* the client half-closed (or closed) its side; mu */
    bool probed;                /* the "100 Continue" probe was sent; guarded by mu */
    pthread_mutex_t mu;
    bool suspended;             /* guarded by mu */
    struct api_gen *gen;        /* generation in flight, or NULL */
    struct api_pull *pull;      /* /api/pull or /api/create in flight, or NULL */
    bool is_cors;               /* the request's Origin is an allowed other origin */
    bool is_ollama;             /* an Ollama route (/api/...): errors are {"error":"message"} */
    bool deferred;              /* the complete request was returned to MHD once */
    bool must_close;            /* reply with Connection: close (ambiguous body length) */
    bool awaiting_load;         /* suspended until its model loads (guarded by mu) */
    int64_t load_wait_since_ms; /* when it began waiting (mono clock), 0 = not waiting */
    struct api_conn *prev, *next; /* server's list, guarded by srv->conns_mu */
};

/* Whether the Authorization ("Bearer KEY") or x-api-key header value (either may be NULL)
 * carries the key want. Compares in constant time over want's length. */
bool api_key_matches(const char *want, const char *authorization, const char *x_api_key);

/* Resumes c if it is suspended (any thread). */
void api_conn_wake(void *conn);
/* The scheduler's still_wanted check before a queued request runs: false when the
 * suspended connection's client has closed its socket. Same thread rule as api_conn_wake. */
bool api_conn_still_wanted(void *conn);
/* Suspends c (MHD thread, inside a callback). Caller holds c->mu. */
void api_conn_suspend_locked(struct api_conn *c);

/* Adds the CORS headers to r when c's request came from an origin --cors allows. */
void api_cors_headers(struct api_conn *c, struct MHD_Response *r);
/* Counts a refusal for /metrics. */
void api_refused(struct http_server *s, enum api_refusal why);

/* Queues a JSON response with status; takes ownership of json (malloc'd). */
enum MHD_Result api_reply_json(struct api_conn *c, unsigned status, char *json);
/* The error's JSON with its status; a 429 or 503 carries Retry-After (e->retry_after_s when
 * > 0, else 1 s for 429 and 2 s for 503), whichever protocol the route speaks. */
enum MHD_Result api_reply_error(struct api_conn *c, const struct api_error *e);
/* api_reply_json with an X-Meshllm-Ran-On: ran_on header (omitted when NULL or ""). */
enum MHD_Result api_reply_json_ran_on(struct api_conn *c, unsigned status, char *json,
                                      const char *ran_on);

/* Starts a generation (chat, completion or embedding) for req (ownership taken). On success
 * the response is queued or the connection suspended; on failure *err is set and the caller
 * replies with it. */
int api_gen_start(struct api_conn *c, enum api_proto proto, struct api_gen_req *req,
                  struct api_error *err);
/* Called when a suspended non-streaming request is resumed: queues the response once done,
 * or suspends again. */
enum MHD_Result api_gen_resume(struct api_conn *c);
/* Watchdog, for a streaming g whose connection is not suspended (c->mu held): MHD has not
 * asked for stream bytes for stall_ms, so the client does not read what the socket holds.
 * Cancels the generation and returns true (once); the caller closes the connection. The
 * bytes waiting meanwhile are bounded by the scheduler's pause (SCHED_PAUSE_TOKENS). */
bool api_gen_stream_stalled(struct api_gen *g, int stall_ms);
/* Cancels g's scheduler request (its client closed the connection). */
void api_gen_cancel(struct api_gen *g);
/* Releases the generation of c (client gone or response sent). */
void api_gen_free(struct api_gen *g);

/* Ollama routes (api/ollama.c). */
int api_ollama_parse(enum api_kind kind, const char *body, size_t len, struct api_gen_req *out,
                     struct api_error *err);
/* {"models":[...]} of ms[n] (router_models order): ready local models, and mesh models with
 * what is known of them (size, digest, quantization only when known), each with "meshllm". */
char *api_ollama_tags_json(const struct router_model *ms, int n);
/* api_ollama_parse for /api/embeddings (embed_legacy true: "prompt", one vector back). */
int api_ollama_parse_ex(enum api_kind kind, bool embed_legacy, const char *body, size_t len,
                        struct api_gen_req *out, struct api_error *err);
/* The /api/embed answer {"model","embeddings":[[...]],...} of vecs[n_vecs * n_embd], or with
 * legacy /api/embeddings' {"embedding":[...]} (the first vector). malloc'd JSON or NULL. */
char *api_ollama_embed_json(const char *model, bool legacy, const float *vecs, int n_vecs,
                            int n_embd, int n_prompt, double elapsed_s);
/* The answer to a request without prompt or messages (Ollama's preload idiom, once the
 * model is ready): {"model","created_at","response":"" | "message",...,"done_reason":"load"}. */
char *api_ollama_load_json(enum api_kind kind, const char *model);
/* GET /api/ps: the models loaded and ready here, as Ollama lists running models. */
char *api_ollama_ps_json(const struct router_model *ms, int n);
char *api_ollama_version_json(void);
/* api_ollama_chunk with the reply's tool calls in message.tool_calls (chat). */
char *api_ollama_chunk_calls(enum api_kind kind, const char *model, const char *text, size_t len,
                             const struct api_tool_call *calls, int n_calls, bool done,
                             const char *done_reason, int n_prompt, int n_gen, double elapsed_s);
/* A streamed chat line carrying only tool calls. */
char *api_ollama_calls_chunk(const char *model, const struct api_tool_call *calls, int n_calls);
/* One NDJSON line (with '\n') for a chat or generate stream; done adds the final fields. */
char *api_ollama_chunk(enum api_kind kind, const char *model, const char *text, size_t len,
                       bool done, const char *done_reason, int n_prompt, int n_gen,
                       double elapsed_s);

/* OpenAI's Responses API (api/responses.c): POST /v1/responses. */
/* Parses a body into a chat request (instructions + input -> messages; max_output_tokens,
 * temperature, top_p, stream, text.format). 0, or MESH_EINVAL / MESH_ENOMEM with *err. */
int api_responses_parse(const char *body, size_t len, struct api_gen_req *out,
                        struct api_error *err);
struct api_resp_out {
    const char *id;          /* "resp_..." */
    int64_t created;         /* unix seconds */
    const char *model;
    const char *text;        /* the delta, or the whole text at the end (len bytes) */
    size_t len;
    int n_prompt, n_completion, n_cached;
    bool is_incomplete;      /* ended by max_output_tokens */
    bool is_failed;
    const char *ran_on;      /* or NULL */
};
/* The whole "response" object (non-streaming), malloc'd JSON. */
char *api_responses_json(const struct api_resp_out *o);
enum api_resp_stage { API_RESP_BEGIN, API_RESP_DELTA, API_RESP_END };
/* The SSE events of one stage ("event: T\ndata: {...}\n\n" each; *seq numbers them):
 * BEGIN response.created, .in_progress, .output_item.added, .content_part.added; DELTA one
 * response.output_text.delta; END .output_text.done, .content_part.done, .output_item.done,
 * then response.completed (or .incomplete; .failed alone when is_failed). malloc'd. */
char *api_responses_events(const struct api_resp_out *o, enum api_resp_stage stage, int *seq);

/* Model store routes (api/ollama_store.c): /api/pull, /api/create, /api/copy, /api/delete,
 * /api/show. *handled false: not one of them. */
enum MHD_Result api_store_route(struct api_conn *c, const char *method, const char *url,
                                bool *handled);
/* A suspended pull or create without streaming was woken: its final object, or wait more. */
enum MHD_Result api_store_resume(struct api_conn *c);
/* The connection of a pull or create is done (the job is cancelled if still running). */
void api_store_release(struct api_pull *p);
/* Appends the store's models not already in ms[n] to an /api/tags array. */
void api_store_tags_add(struct cJSON *arr, const struct router_model *ms, int n);

/* Per-client rate limit (api/ratelimit.c): a token bucket per client key (its address) of
 * per_min tokens refilled at per_min a minute, in a table of n_clients keys (the key seen
 * longest ago is forgotten for a new one). Any thread (one mutex inside). */
#define API_RATELIMIT_CLIENTS 1024
int api_ratelimit_new(int per_min, int n_clients, struct api_ratelimit **out); /* 0, MESH_E* */
void api_ratelimit_free(struct api_ratelimit *rl); /* NULL is fine */
/* Takes a token for key (key_len bytes, at most API_RATELIMIT_KEY_CAP) at now_ms (a monotonic
 * clock, milliseconds). true: allowed. false: refused, *retry_after_s = whole seconds until
 * the client has a token again (at least 1). A NULL rl allows everything. */
bool api_ratelimit_take(struct api_ratelimit *rl, const void *key, size_t key_len,
                        int64_t now_ms, int *retry_after_s);

/* Metrics and status (api/metrics.c). */
char *api_metrics_text(struct http_server *s);
char *api_status_json(struct http_server *s);
/* GET /node/peers: the peer layer's JSON (http_opts.peers_json; without it
 * {"enabled":false,"peers":[]}) with "route", the node's default route, added when absent. */
char *api_peers_json(struct http_server *s);
/* OpenAI model objects (/v1/models): the list of ms[n] without models that failed to load,
 * or one; each with "meshllm":{"local","where"} (api_model_add_meshllm). malloc'd JSON. */
char *api_models_json(const struct router_model *ms, int n);
char *api_model_json(const struct router_model *m);
struct cJSON;
void api_model_add_meshllm(struct cJSON *obj, const struct router_model *m);

/* Routes of split models (api/route.c; docs/API.md "GET /node/route"). */
/* GET /node/route?model=NAME: the route's JSON (malloc'd) with *status 200, or an error
 * object with 400 (no model given) / 404 (no such model here or on the mesh). */
char *api_route_json(struct http_server *s, const char *model, int *status);
/* Adds "routes": [the route of each split model of this node] to a /node/peers object. */
void api_routes_add(struct http_server *s, struct cJSON *root);
/* The meshllm_pipeline_* block of /metrics (malloc'd text, "" without split models). */
char *api_route_metrics_text(struct http_server *s);

#endif
