/* guard.c - who may talk to the local API: the Host, Origin and Content-Type checks that keep
 * a web page the user visits from driving the node (CSRF) or reading its answers through DNS
 * rebinding (the class of Ollama's CVE-2024-28224). Modelled on Ollama's allowedHosts
 * middleware and OLLAMA_ORIGINS; the rules are in docs/API.md, "Security boundary".
 * Pure functions over strings: no MHD, no sockets, so tests call them directly. It does not
 * authenticate (that is --api-key) nor limit rates (ratelimit.c).
 */
#include "api/api_internal.h"

#include "core/err.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_loopback_literal(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

static bool is_any_literal(const char *host)
{
    return !strcmp(host, "0.0.0.0") || !strcmp(host, "::") || !strcmp(host, "[::]");
}

int api_guard_init(struct api_guard *g, const char *bind_host, const char *const *allowed_hosts,
                   int n_allowed_hosts, const char *const *cors_origins, int n_cors_origins)
{
    memset(g, 0, sizeof *g);
    if (!bind_host || !*bind_host || !strcmp(bind_host, "localhost")) bind_host = "127.0.0.1";
    g->bind = is_any_literal(bind_host)       ? API_BIND_ANY
              : is_loopback_literal(bind_host) ? API_BIND_LOOPBACK
                                              : API_BIND_ADDRESS;
    snprintf(g->bind_host, sizeof g->bind_host, "%s", bind_host);
    if (n_allowed_hosts > API_GUARD_MAX_NAMES || n_cors_origins > API_GUARD_MAX_NAMES)
        return MESH_EINVAL;
    for (int i = 0; i < n_allowed_hosts; i++) {
        if (strlen(allowed_hosts[i]) >= API_GUARD_NAME_CAP) return MESH_EINVAL;
        snprintf(g->hosts[g->n_hosts++], API_GUARD_NAME_CAP, "%s", allowed_hosts[i]);
    }
    for (int i = 0; i < n_cors_origins; i++) {
        size_t n = strlen(cors_origins[i]);
        if (n >= API_GUARD_NAME_CAP) return MESH_EINVAL;
        char *o = g->origins[g->n_origins++];
        snprintf(o, API_GUARD_NAME_CAP, "%s", cors_origins[i]);
        if (n > 1 && o[n - 1] == '/') o[n - 1] = 0; /* "http://a:1/" names "http://a:1" */
    }
    return 0;
}

/* The host of a Host header or an origin's authority ("name", "name:port", "[v6]:port"),
 * lower case, without port or brackets, into out. false if it does not fit or is malformed. */
static bool authority_host(const char *auth, size_t len, char *out, size_t cap)
{
    const char *end = auth + len;
    const char *h = auth, *he;
    if (len && *auth == '[') {
        h = auth + 1;
        he = memchr(h, ']', (size_t)(end - h));
        if (!he || (he + 1 != end && he[1] != ':')) return false;
    } else {
        he = memchr(auth, ':', len);
        if (!he) he = end;
    }
    size_t n = (size_t)(he - h);
    if (n >= cap) return false;
    for (size_t i = 0; i < n; i++) out[i] = (char)tolower((unsigned char)h[i]);
    out[n] = 0;
    if (n && out[n - 1] == '.') out[n - 1] = 0; /* "localhost." is localhost */
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcasecmp(s + n - k, suffix);
}

/* Whether host (lower case, no port) names this server: its loopback names, its address,
 * or a --allowed-host name. */
static bool host_named(const struct api_guard *g, const char *host)
{
    for (int i = 0; i < g->n_hosts; i++) {
        const char *a = g->hosts[i];
        if (!strcmp(a, "*") || !strcasecmp(a, host)) return true;
        if (a[0] == '*' && a[1] == '.' && ends_with(host, a + 1)) return true; /* *.example */
    }
    if (!strcmp(host, "localhost") || ends_with(host, ".localhost")) return true;
    if (is_loopback_literal(host)) return true;
    return g->bind == API_BIND_ADDRESS && !strcasecmp(host, g->bind_host);
}

bool api_guard_host_ok(const struct api_guard *g, const char *host_header)
{
    if (g->bind == API_BIND_ANY) return true;
    /* HTTP/1.0 without Host: not a browser (browsers always send it) */
    if (!host_header || !*host_header) return true;
    char host[API_GUARD_NAME_CAP];
    if (!authority_host(host_header, strlen(host_header), host, sizeof host)) return false;
    return host_named(g, host);
}

enum api_origin api_guard_origin(const struct api_guard *g, const char *origin,
                                 const char *host_header)
{
    if (!origin) return API_ORIGIN_NONE;
    size_t olen = strlen(origin);
    while (olen > 1 && origin[olen - 1] == '/') olen--;
    for (int i = 0; i < g->n_origins; i++) {
        const char *a = g->origins[i];
        if (!strcmp(a, "*") || (strlen(a) == olen && !strncasecmp(a, origin, olen)))
            return API_ORIGIN_CORS;
        /* "http://localhost:*": any port of that scheme and host, as OLLAMA_ORIGINS writes */
        size_t al = strlen(a);
        if (al > 2 && !strcmp(a + al - 2, ":*") && olen > al - 1 &&
            !strncasecmp(a, origin, al - 1) && strspn(origin + al - 1, "0123456789") == olen - (al - 1))
            return API_ORIGIN_CORS;
    }
    const char *auth = strstr(origin, "://");
    if (!auth || (strncasecmp(origin, "http://", 7) && strncasecmp(origin, "https://", 8)))
        return API_ORIGIN_REFUSED; /* "null" (sandboxed frames, file:), other schemes */
    auth += 3;
    size_t alen = (size_t)(origin + olen - auth);
    /* Same origin: the page was loaded from the authority this request is addressed to. */
    if (host_header && strlen(host_header) == alen && !strncasecmp(auth, host_header, alen))
        return API_ORIGIN_SAME;
    /* A page of a name this server answers to (any port), unless every name is accepted
     * (bound to 0.0.0.0/::), where only the exact same origin counts. */
    char host[API_GUARD_NAME_CAP];
    if (g->bind != API_BIND_ANY && authority_host(auth, alen, host, sizeof host) &&
        host_named(g, host))
        return API_ORIGIN_CORS;
    return API_ORIGIN_REFUSED;
}

bool api_guard_json_type(const char *content_type)
{
    if (!content_type) return false;
    const char *p = content_type;
    while (*p == ' ' || *p == '\t') p++;
    static const char want[] = "application/json";
    if (strncasecmp(p, want, sizeof want - 1)) return false;
    p += sizeof want - 1;
    while (*p == ' ' || *p == '\t') p++;
    return *p == 0 || *p == ';'; /* parameters such as charset=utf-8 */
}

const char *api_refusal_name(enum api_refusal r)
{
    static const char *const names[API_REFUSED_N] = {
        [API_REFUSED_HOST] = "host",
        [API_REFUSED_ORIGIN] = "origin",
        [API_REFUSED_CONTENT_TYPE] = "content_type",
        [API_REFUSED_BAD_LENGTH] = "bad_length",
        [API_REFUSED_PER_ADDRESS] = "per_address",
        [API_REFUSED_SLOW_REQUEST] = "slow_request",
        [API_REFUSED_SLOW_READER] = "slow_reader",
    };
    return (unsigned)r < API_REFUSED_N ? names[r] : "unknown";
}
