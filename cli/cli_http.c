/* cli_http.c - a small HTTP GET for commands that talk to a running node (peers, id). */
#include "cli/cli.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLI_HTTP_MAX_BODY (4u << 20)

struct body {
    char *buf;
    size_t len;
    bool too_big;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > CLI_HTTP_MAX_BODY) {
        b->too_big = true;
        return 0;
    }
    char *nb = realloc(b->buf, b->len + n + 1);
    if (!nb) return 0;
    memcpy(nb + b->len, data, n);
    b->buf = nb;
    b->len += n;
    nb[b->len] = 0;
    return n;
}

/* The transfer (cli_http_fetch's contract, plus quiet). */
static int http_get(const char *what, const char *url, const char *key, bool quiet, long *status,
                    char **out);

int cli_http_get(const char *what, const char *url, const char *key, bool quiet, char **out)
{
    long status = 0;
    *out = NULL;
    char *body = NULL;
    if (http_get(what, url, key, quiet, &status, &body)) return 1;
    if (status != 200) {
        if (!quiet)
            cli_fail("%s: %s answered HTTP %ld%s", what, url, status,
                 status == 401 ? " (pass --api-key)" : status == 404 ? " (an older node?)" : "");
        free(body);
        return 1;
    }
    *out = body;
    return 0;
}

int cli_http_fetch(const char *what, const char *url, const char *key, long *status, char **out)
{
    return http_get(what, url, key, false, status, out);
}

static int http_get(const char *what, const char *url, const char *key, bool quiet, long *status,
                    char **out)
{
    struct body b = {0};
    char auth[512];
    struct curl_slist *hdrs = NULL;
    int rc = 1;
    *out = NULL;
    CURL *c = curl_easy_init();
    if (!c) {
        if (!quiet) cli_fail("%s: cannot start libcurl", what);
        return 1;
    }
    if (key && *key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        hdrs = curl_slist_append(hdrs, auth);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    CURLcode cr = curl_easy_perform(c);
    *status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    if (cr != CURLE_OK) {
        if (!quiet)
            cli_fail("%s: %s: %s%s", what, url, b.too_big ? "reply too large" : curl_easy_strerror(cr),
                 cr == CURLE_COULDNT_CONNECT ? " (is 'meshllm serve' running there?)" : "");
        goto out;
    }
    if (!b.buf && !(b.buf = strdup(""))) goto out;
    *out = b.buf;
    b.buf = NULL;
    rc = 0;
out:
    free(b.buf);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return rc;
}

