/* http.h - the node's HTTP server: OpenAI and Ollama APIs, metrics and the web console.
 *
 * libmicrohttpd runs one internal polling thread (epoll where available) with suspend/resume:
 * a request waiting for tokens is suspended and resumed by the scheduler's notify callback,
 * so no thread blocks per client and a slow or vanished client costs nothing but its socket.
 * Limits: request bodies of at most HTTP_MAX_BODY bytes (413 beyond), idle connections are
 * closed after 15 s (slow-loris), at most 512 connections.
 * Routes and their JSON are described in docs/API.md.
 * Thread rule: start/stop from one thread (the CLI's main thread).
 */
#ifndef MESH_API_HTTP_H
#define MESH_API_HTTP_H

#include <stddef.h>

#define HTTP_MAX_BODY (8u << 20)

struct router;

struct http_opts {
    const char *host;    /* bind address (IPv4/IPv6 literal or "localhost"); default 127.0.0.1 */
    int port;            /* 0 = any free port (see http_server_port) */
    int ollama_port;     /* second listener with the same routes; -1 = none */
    const char *api_key; /* NULL/"" = no authentication */
    int idle_timeout_s;  /* 0 = 15 */
    int rate_limit_per_min; /* generation requests a minute per client address; 0 = no limit */
    /* GET /node/peers: a malloc'd JSON object from any thread (net/p2pnode.h), or NULL fn:
     * {"enabled":false,"peers":[]} (no peer-to-peer host). */
    char *(*peers_json)(void *ctx);
    void *peers_ctx;
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
