/* modelpull.c - a GGUF over HTTP(S) into the model store, resumable (see modelpull.h).
 * HTTP semantics used: Range / 206 Partial Content / Content-Range (RFC 9110 section 14);
 * a 200 to a Range request means the server sends the whole file again; 416 means the
 * partial file is already whole (verification decides). */
#include "node/modelpull.h"

#include "node/modelstore.h"

#include "core/err.h"
#include "core/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int modelpull_url(const char *spec, char *url, size_t url_cap, char *err, size_t err_cap)
{
    if (!spec || !*spec) return err_set(err, err_cap, MESH_EINVAL, "no URL given");
    if (!strncmp(spec, "hf:", 3)) {
        const char *p = spec + 3;
        const char *s1 = strchr(p, '/');
        const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
        if (!s1 || !s2 || s1 == p || s2 == s1 + 1 || !s2[1] || strstr(p, "..") ||
            strpbrk(p, " ?#"))
            return err_set(err, err_cap, MESH_EINVAL,
                           "'%s': write hf:OWNER/REPO/FILE.gguf (for example "
                           "hf:ggml-org/models/tinyllamas/stories260K.gguf)", spec);
        int n = snprintf(url, url_cap, "https://huggingface.co/%.*s/resolve/main/%s",
                         (int)(s2 - p), p, s2 + 1);
        if (n < 0 || (size_t)n >= url_cap) return err_set(err, err_cap, MESH_ERANGE, "URL too long");
        return 0;
    }
    if (strncasecmp(spec, "https://", 8) && strncasecmp(spec, "http://", 7))
        return err_set(err, err_cap, MESH_EINVAL,
                       "'%s' is not a URL: give https://HOST/PATH/FILE.gguf or "
                       "hf:OWNER/REPO/FILE.gguf", spec);
    if (strlen(spec) >= url_cap) return err_set(err, err_cap, MESH_ERANGE, "URL too long");
    snprintf(url, url_cap, "%s", spec);
    return 0;
}

void modelpull_default_name(const char *url, char *name, size_t cap)
{
    const char *end = url + strcspn(url, "?#");
    const char *b = end;
    while (b > url && b[-1] != '/') b--;
    size_t n = (size_t)(end - b);
    if (n > 5 && !strncasecmp(end - 5, ".gguf", 5)) n -= 5;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap && o < MODELSTORE_NAME_CAP - 1; i++) {
        char c = b[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (o > 0 && (c == '.' || c == '_' || c == '-'));
        if (!ok && o == 0) continue;
        name[o++] = ok ? c : '-';
    }
    if (o == 0 && cap > 5) o = (size_t)snprintf(name, cap, "model");
    name[o] = 0;
}

/* ---- one transfer ---------------------------------------------------------------------- */

struct xfer {
    int fd;
    uint64_t offset;        /* bytes in the file when this attempt started */
    uint64_t written;       /* bytes written by this attempt */
    uint64_t total;         /* the whole file, 0 unknown */
    uint64_t hop_length;    /* Content-Length of the current response, 0 unknown */
    uint64_t range_start, range_total; /* Content-Range of the current response */
    bool has_range;
    bool body_started;
    bool is_hf;
    int hop;
    char linked_etag[65];   /* X-Linked-ETag (any hop), 64 hex or "" */
    char first_etag[65];    /* ETag of the first response, 64 hex or "" */
    int rc;
    char err[512];
    const struct modelpull_opts *o;
    int64_t last_report_ms;
};

static void report(struct xfer *x, enum modelpull_phase ph, bool force)
{
    if (!x->o->progress) return;
    int64_t now = mono_ms();
    if (!force && now - x->last_report_ms < 200) return;
    x->last_report_ms = now;
    const char *dg = x->o->sha256 && *x->o->sha256 ? x->o->sha256
                     : x->linked_etag[0]                ? x->linked_etag
                     : x->first_etag[0]                 ? x->first_etag
                                                        : NULL;
    struct modelpull_progress p = {.phase = ph, .done = x->offset + x->written,
                                   .total = x->total, .resumed_from = x->offset, .sha256 = dg};
    x->o->progress(x->o->progress_arg, &p);
}

/* A header value's 64 hex digits ("\"abc...\"", W/ prefix allowed), lower-cased, or "". */
static void etag_hex(const char *v, char out[65])
{
    out[0] = 0;
    if (!strncmp(v, "W/", 2)) v += 2;
    if (*v == '"') v++;
    for (int i = 0; i < 64; i++) {
        char c = v[i];
        if (c >= 'A' && c <= 'F') c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            out[0] = 0;
            return;
        }
        out[i] = c;
    }
    char t = v[64];
    if (t && t != '"' && t != '\r' && t != '\n' && t != ' ') {
        out[0] = 0;
        return;
    }
    out[64] = 0;
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t len = size * n;
    char line[1024];
    size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, buf, l);
    line[l] = 0;
    line[strcspn(line, "\r\n")] = 0;
    if (!strncmp(line, "HTTP/", 5)) { /* a new response (redirect hop, 100 Continue) */
        x->hop++;
        x->hop_length = 0;
        x->has_range = false;
        return len;
    }
    char *colon = strchr(line, ':');
    if (!colon) return len;
    *colon = 0;
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    if (!strcasecmp(line, "content-length")) {
        x->hop_length = strtoull(v, NULL, 10);
    } else if (!strcasecmp(line, "x-linked-etag")) {
        etag_hex(v, x->linked_etag);
    } else if (!strcasecmp(line, "etag") && x->hop == 1) {
        etag_hex(v, x->first_etag);
    } else if (!strcasecmp(line, "content-range")) {
        uint64_t a, b, t;
        if (sscanf(v, "bytes %" SCNu64 "-%" SCNu64 "/%" SCNu64, &a, &b, &t) == 3) {
            x->has_range = true;
            x->range_start = a;
            x->range_total = t;
        }
    }
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *arg)
{
    struct xfer *x = arg;
    size_t len = size * n;
    uint8_t *p = (uint8_t *)buf;
    size_t left = len;
    while (left) {
        ssize_t w = write(x->fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            x->rc = err_set(x->err, sizeof x->err, MESH_EIO, "cannot write the download: %s",
                            strerror(errno));
            return 0;
        }
        p += w;
        left -= (size_t)w;
    }
    x->written += len;
    return len;
}

static int on_xferinfo(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    struct xfer *x = arg;
    if (x->o->cancel && atomic_load(x->o->cancel)) return 1;
    if (x->body_started) report(x, MODELPULL_DOWNLOADING, false);
    return 0;
}

struct body_ctx {
    struct xfer *x;
    CURL *c;
};

/* The first bytes of a response body: decide what the status means for the file. */
static size_t on_body_checked(char *buf, size_t size, size_t n, void *arg)
{
    struct body_ctx *b = arg;
    struct xfer *x = b->x;
    if (!x->body_started) {
        long code = 0;
        curl_easy_getinfo(b->c, CURLINFO_RESPONSE_CODE, &code);
        if (code == 206) {
            if (!x->has_range || x->range_start != x->offset) {
                x->rc = err_set(x->err, sizeof x->err, MESH_EPROTO,
                                "the server sent a range that does not start at byte %" PRIu64,
                                x->offset);
                return 0;
            }
            x->total = x->range_total;
        } else if (code == 200) {
            if (x->offset) { /* Range ignored: the whole file again */
                log_info("pull: the server ignored the Range request; starting over");
                if (ftruncate(x->fd, 0) || lseek(x->fd, 0, SEEK_SET) < 0) {
                    x->rc = err_set(x->err, sizeof x->err, MESH_EIO, "cannot truncate: %s",
                                    strerror(errno));
                    return 0;
                }
                x->offset = 0;
            }
            x->total = x->hop_length;
        } else {
            return 0; /* an error page: the status is reported after perform */
        }
        x->body_started = true;
        report(x, MODELPULL_DOWNLOADING, true);
    }
    x->body_started = true;
    return on_body(buf, size, n, x);
}

static bool retryable(CURLcode cc)
{
    return cc == CURLE_PARTIAL_FILE || cc == CURLE_RECV_ERROR || cc == CURLE_SEND_ERROR ||
           cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_GOT_NOTHING ||
           cc == CURLE_COULDNT_CONNECT || cc == CURLE_HTTP2_STREAM || cc == CURLE_HTTP2;
}

/* One attempt from the partial file's end. 0 when the response ended well. */
static int attempt(const char *url, struct xfer *x, bool *retry)
{
    *retry = false;
    CURL *c = curl_easy_init();
    if (!c) return err_set(x->err, sizeof x->err, MESH_ENOMEM, "curl_easy_init failed");
    struct body_ctx b = {.x = x, .c = c};
    char range[64];
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "meshllm/0.1");
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body_checked);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);   /* a stall of 60 s is a cut */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    /* proxies: libcurl reads http_proxy, https_proxy, ALL_PROXY and NO_PROXY itself */
    if (x->offset) {
        snprintf(range, sizeof range, "%" PRIu64 "-", x->offset);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    x->written = 0;
    x->body_started = false;
    x->hop = 0;
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (x->rc) return x->rc;
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return err_set(x->err, sizeof x->err, MESH_ECANCELED, "interrupted");
    if (code == 416 && x->offset) { /* nothing left to send: the partial file is whole */
        x->total = x->offset;
        return 0;
    }
    if (code && (code < 200 || code >= 300))
        return err_set(x->err, sizeof x->err, MESH_EPROTO,
                       "the server answered HTTP %ld for %s (check the URL; a Hugging Face "
                       "repository may be gated or the file named differently)",
                       code, url);
    if (cc != CURLE_OK) {
        *retry = retryable(cc);
        return err_set(x->err, sizeof x->err, MESH_EIO, "%s (%s)", curl_easy_strerror(cc), url);
    }
    return 0;
}

int modelpull_run(const char *dir, const struct modelpull_opts *o,
                  struct modelstore_manifest *out, char *err, size_t err_cap)
{
    memset(out, 0, sizeof *out);
    pthread_once(&g_curl_once, curl_init_once);
    char url[4096], name_buf[MODELSTORE_NAME_CAP + MODELSTORE_TAG_CAP + 2];
    int rc = modelpull_url(o->url, url, sizeof url, err, err_cap);
    if (rc) return rc;
    const char *name = o->name;
    if (!name || !*name) {
        modelpull_default_name(url, name_buf, sizeof name_buf);
        name = name_buf;
    }
    char nm[MODELSTORE_NAME_CAP], tg[MODELSTORE_TAG_CAP];
    if (modelstore_name_parse(name, nm, tg))
        return err_set(err, err_cap, MESH_EINVAL,
                       "'%s' is not a model name (letters, digits, '.', '_', '-', then an "
                       "optional :TAG); choose one with --name", name);
    char want[65] = "";
    if (o->sha256 && *o->sha256) {
        etag_hex(o->sha256, want);
        if (!want[0])
            return err_set(err, err_cap, MESH_EINVAL,
                           "--sha256 wants 64 hex digits, not '%s'", o->sha256);
    }
    if ((rc = modelstore_prepare(dir, err, err_cap))) return rc;
    uint8_t key[32];
    crypto_hash_sha256(key, (const uint8_t *)url, strlen(url));
    char keyhex[65], part[4200];
    sodium_bin2hex(keyhex, sizeof keyhex, key, 16);
    snprintf(part, sizeof part, "%s/partial/%s.part", dir, keyhex);
    int fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(err, err_cap, MESH_EIO, "cannot create %s: %s", part, strerror(errno));

    struct xfer x = {.fd = fd, .o = o, .is_hf = !strncmp(o->url, "hf:", 3)};
    struct modelpull_opts oo = *o;
    oo.sha256 = want[0] ? want : NULL;
    x.o = &oo;
    int retries = o->retries;
    if (retries < 0) {
        const char *e = getenv("MESHLLM_PULL_RETRIES");
        retries = e && *e ? atoi(e) : 5;
    }
    report(&x, MODELPULL_CONNECTING, true);
    for (int a = 0;; a++) {
        off_t end = lseek(fd, 0, SEEK_END);
        x.offset = end > 0 ? (uint64_t)end : 0;
        if (x.offset) log_info("pull: resuming %s at byte %" PRIu64, url, x.offset);
        bool retry;
        x.rc = 0;
        rc = attempt(url, &x, &retry);
        if (!rc || !retry || a >= retries || (o->cancel && atomic_load(o->cancel))) break;
        log_info("pull: %s; resuming (%d of %d)", x.err, a + 1, retries);
        usleep((useconds_t)(a < 4 ? 250000 * (a + 1) : 1000000));
    }
    uint64_t have = x.offset + x.written;
    if (!rc && x.total && have != x.total)
        rc = err_set(x.err, sizeof x.err, MESH_EIO,
                     "the download stopped at %" PRIu64 " of %" PRIu64 " bytes", have, x.total);
    if (!rc && fsync(fd))
        rc = err_set(x.err, sizeof x.err, MESH_EIO, "fsync: %s", strerror(errno));
    close(fd);
    if (rc == MESH_ECANCELED)
        return err_set(err, err_cap, rc, "pull %s: interrupted at %" PRIu64
                       " bytes; run the same pull again to resume", o->url, have);
    if (rc && have == 0) {
        unlink(part);
        return err_set(err, err_cap, rc, "pull %s: %s", o->url, x.err);
    }
    if (rc)
        return err_set(err, err_cap, rc, "pull %s: %s; run the same pull again to resume "
                       "(%" PRIu64 " bytes kept)", o->url, x.err, have);

    /* the expected digest: the user's, else the server's */
    const char *server = x.linked_etag[0] ? x.linked_etag
                         : x.is_hf && x.first_etag[0] ? x.first_etag : NULL;
    const char *exp = want[0] ? want : server;
    if (want[0] && server && strcmp(want, server)) {
        unlink(part);
        return err_set(err, err_cap, MESH_ECRYPTO,
                       "pull %s: sha256 mismatch: the server publishes %s but --sha256 says "
                       "%s; nothing was added", o->url, server, want);
    }
    x.total = have;
    report(&x, MODELPULL_VERIFYING, true);
    char aerr[768];
    rc = modelstore_add_file(dir, part, true, name, o->url, exp, out, aerr, sizeof aerr);
    if (rc == MESH_ECRYPTO)
        return err_set(err, err_cap, rc, "pull %s: %s (expected digest %s)", o->url, aerr,
                       want[0] ? "given with --sha256" : "published by the server");
    if (rc) return err_set(err, err_cap, rc, "pull %s: %s", o->url, aerr);
    report(&x, MODELPULL_WRITING, true);
    report(&x, MODELPULL_DONE, true);
    return 0;
}
