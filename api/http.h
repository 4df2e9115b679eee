/* http.h - the node's HTTP server: OpenAI and Ollama APIs, metrics and the web console.
 *
 * libmicrohttpd runs one internal polling thread (epoll where available) with suspend/resume:
 * a request waiting for tokens is suspended and resumed by the scheduler's notify callback,
 * so no thread blocks per client and a slow or vanished client costs nothing but its socket.
 * Limits (each named below with its reason): request bodies of at most HTTP_MAX_BODY bytes
 * (413 beyond), idle connections closed after 15 s, a whole request within
 * HTTP_REQUEST_DEADLINE_MS however slowly it trickles, HTTP_MAX_CONN_PER_ADDRESS connections
 * per client address out of HTTP_MAX_CONN, a stream cut after HTTP_STREAM_STALL_MS unread.
 * The security boundary (Host, Origin/CORS, Content-Type) is api/guard.c; docs/API.md
 * "Security boundary" gives the rules and their reasons.
 * Routes and their JSON are described in docs/API.md.
 * Thread rule: start/stop from one thread (the CLI's main thread).
 */
#ifndef MESH_API_HTTP_H
#define MESH_API_HTTP_H

#include <stddef.h>

#define HTTP_MAX_BODY (8u << 20)
/* A generation request for a model that is still loading (a store model's first request,
 * or serve still starting) waits up to this long for it, as Ollama's clients expect, then
 * is answered 503 with Retry-After. */
#define HTTP_LOAD_WAIT_MS (10 * 60 * 1000)
/* All connections of a listener: MHD keeps one pool each, and 512 sockets stay well under
 * the usual 1024 file descriptors with the model files and the p2p host beside them. */
#define HTTP_MAX_CONN 512
/* Connections one client address may hold open: a browser opens at most 6 per host, an
 * SDK a pool of ~10-20, a benchmark a few dozen; one address must never take all 512. */
#define HTTP_MAX_CONN_PER_ADDRESS 32
/* From a connection's accept (or the end of its previous request) to the last byte of the
 * request's body. MHD's idle timeout restarts on every byte, so a trickle of one byte a
 * second would hold a connection forever; 30 s fits an 8 MiB body on a slow link. */
#define HTTP_REQUEST_DEADLINE_MS 30000
/* A stream whose client reads nothing for this long (MHD waits on a full socket) is cut:
 * its generation is cancelled and the connection closed. Meanwhile the scheduler has
 * paused it after SCHED_PAUSE_TOKENS unread tokens, so what waits stays bounded. 10 s is
 * under MHD's 15 s idle timeout (which would close it uncounted) and far above any pause
 * of a client that reads. */
#define HTTP_STREAM_STALL_MS 10000

struct router;

struct api_sampling_defaults; /* api/openai.h */

struct http_opts {
    const char *host;    /* bind address (IPv4/IPv6 literal or "localhost"); default 127.0.0.1 */
    int port;            /* 0 = any free port (see http_server_port) */
    int ollama_port;     /* second listener with the same routes; -1 = none */
    const char *api_key; /* NULL/"" = no authentication */
    int idle_timeout_s;  /* 0 = 15 */
    int rate_limit_per_min; /* generation requests a minute per client address; 0 = no limit */
    /* Host names besides the loopback ones and the bound address (--allowed-host; exact,
     * "*.suffix" or "*"), and origins allowed to call cross-origin (--cors; "*" = any). */
    const char *const *allowed_hosts;
    int n_allowed_hosts;
    const char *const *cors_origins;
    int n_cors_origins;
    /* limits; 0 = the HTTP_* default above (tests shorten them) */
    int max_conn_per_address;
    int request_deadline_ms;
    int stream_stall_ms;
    int sndbuf_bytes;  /* SO_SNDBUF of each connection; 0 = the kernel's (tests shrink it) */
    /* GET /node/peers: a malloc'd JSON object from any thread (net/p2pnode.h), or NULL fn:
     * {"enabled":false,"peers":[]} (no peer-to-peer host). */
    char *(*peers_json)(void *ctx);
    void *peers_ctx;
    /* serve --temp, --top-p, ...: defaults for the OpenAI routes (NULL = the API's own) */
    const struct api_sampling_defaults *defaults;
};

struct http_server;
/* Starts listening; every request goes to rt (node/router.h), which must outlive the server. */
int http_server_start(struct router *rt, const struct http_opts *o, struct http_server **out,
                      char *err, size_t err_cap);
int http_server_port(const struct http_server *s);
int http_server_ollama_port(const struct http_server *s);
/* Graceful stop: refuses new work, stops the router's schedulers (router_stop: running
 * streams end with their final events), waits up to 5 s for responses to drain, closes every
 * connection. The caller frees the router and its registry afterwards. */
void http_server_stop(struct http_server *s);

#endif
