/* ollama_store.c - Ollama's model management routes over the model store
 * (node/modelstore.h): /api/pull (NDJSON progress, or one object with "stream":false),
 * /api/delete, /api/copy, /api/create (from a GGUF on disk or a store model), /api/show,
 * and the store's models in /api/tags. Errors are Ollama's {"error":"message"}.
 * A pull or create runs on a thread of its own; its connection is suspended while it
 * waits and woken by each line (api_conn_wake). Thread rule: the job's mu guards refs and
 * gone; while the connection lives, its mu guards the output buffer and `finished`; lock
 * order job mu, then the connection's mu. A client that goes away cancels a pull (the
 * partial file stays for a resume).
 */
#include "api/api_internal.h"

#include "core/err.h"
#include "node/blobpull.h"
#include "node/modelpull.h"
#include "node/router.h"
#include "node/modelserve.h"
#include "node/modelstore.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct api_pull {
    pthread_mutex_t mu;
    int refs;
    bool gone;
    struct api_conn *c;
    /* guarded by c->mu while !gone */
    char *buf;
    size_t len, off, cap;
    bool finished;
    int status; /* non-stream: the final status */
    /* the job, fixed at start */
    bool stream, is_create;
    char url[4096], name[MODELSTORE_NAME_CAP + MODELSTORE_TAG_CAP + 2], sha256[80];
    char from[4096];
    struct mesh *mesh;          /* a pull from mesh members (node/blobpull.h), else NULL */
    struct multiaddr peers[8];  /* "meshllm_peers": providers to ask besides the announced */
    size_t n_peers;
    atomic_bool cancel;
    int64_t last_line_ms;
};

static enum MHD_Result ollama_err(struct api_conn *c, unsigned status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return api_reply_json(c, status, s);
}

static cJSON *body_obj(struct api_conn *c)
{
    cJSON *root = cJSON_ParseWithLength(c->body ? c->body : "", c->body_len);
    if (root && !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        root = NULL;
    }
    return root;
}

static const char *str_field(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* ---- the job's output ------------------------------------------------------------------ */

static void job_unref(struct api_pull *p)
{
    pthread_mutex_lock(&p->mu);
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (!last) return;
    pthread_mutex_destroy(&p->mu);
    free(p->buf);
    free(p);
}

/* Adds one NDJSON line (or, without streaming, replaces the final object); final ends it. */
static void job_emit(struct api_pull *p, cJSON *o, bool final, int status)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    pthread_mutex_lock(&p->mu);
    if (!p->gone && s) {
        struct api_conn *c = p->c;
        pthread_mutex_lock(&c->mu);
        size_t n = strlen(s);
        if (!p->stream) p->len = p->off = 0;
        if (p->stream || final) {
            if (p->len + n + 2 > p->cap) {
                size_t cap = (p->len + n + 2) * 2;
                char *b = realloc(p->buf, cap);
                if (b) {
                    p->buf = b;
                    p->cap = cap;
                }
            }
            if (p->len + n + 2 <= p->cap) {
                memcpy(p->buf + p->len, s, n);
                p->len += n;
                if (p->stream) p->buf[p->len++] = '\n';
                p->buf[p->len] = 0;
            }
        }
        if (final) {
            p->finished = true;
            p->status = status;
        }
        pthread_mutex_unlock(&c->mu);
        api_conn_wake(c);
    }
    pthread_mutex_unlock(&p->mu);
    free(s);
}

static cJSON *status_obj(const char *status)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", status);
    return o;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_progress(void *arg, const struct modelpull_progress *pr)
{
    struct api_pull *p = arg;
    switch (pr->phase) {
    case MODELPULL_CONNECTING:
        job_emit(p, status_obj("pulling manifest"), false, 0);
        break;
    case MODELPULL_DOWNLOADING: {
        int64_t now = mono_ms();
        if (now - p->last_line_ms < 100 && pr->done != pr->total) break;
        p->last_line_ms = now;
        char st[128], dg[80];
        if (pr->sha256) snprintf(dg, sizeof dg, "sha256:%s", pr->sha256);
        snprintf(st, sizeof st, "pulling %.12s",
                 pr->sha256 ? pr->sha256 : pr->content_id ? pr->content_id : "file");
        cJSON *o = status_obj(st);
        if (pr->sha256) cJSON_AddStringToObject(o, "digest", dg);
        cJSON_AddNumberToObject(o, "total", (double)pr->total);
        cJSON_AddNumberToObject(o, "completed", (double)pr->done);
        if (pr->content_id) { /* a mesh pull: its rate and providers */
            cJSON_AddStringToObject(o, "meshllm_content_id", pr->content_id);
            cJSON_AddNumberToObject(o, "meshllm_rate", pr->rate_bps);
            cJSON_AddNumberToObject(o, "meshllm_peers", pr->n_peers);
        }
        job_emit(p, o, false, 0);
        break;
    }
    case MODELPULL_VERIFYING:
        job_emit(p, status_obj("verifying sha256 digest"), false, 0);
        break;
    case MODELPULL_WRITING:
        job_emit(p, status_obj("writing manifest"), false, 0);
        break;
    case MODELPULL_DONE:
        break;
    }
}

static int err_status(int rc)
{
    return rc == MESH_EINVAL || rc == MESH_ECRYPTO || rc == MESH_EBADMODEL ? 400
           : rc == MESH_ENOTFOUND                                        ? 404
           : rc == MESH_EPROTO || rc == MESH_EIO                         ? 502
                                                                         : 500;
}

static void *job_main(void *arg)
{
    struct api_pull *p = arg;
    char err[1200] = "";
    struct modelstore_manifest m;
    int rc;
    if (p->is_create) {
        job_emit(p, status_obj("parsing GGUF"), false, 0);
        rc = modelstore_add_file(modelstore_dir(), p->from, false, p->name, p->from, NULL, &m,
                                 err, sizeof err);
        if (!rc) job_emit(p, status_obj("writing manifest"), false, 0);
    } else if (p->mesh) {
        struct blobpull_opts o = {.spec = p->url, .name = p->name[0] ? p->name : NULL,
                                  .peers = p->peers, .n_peers = p->n_peers,
                                  .cancel = &p->cancel, .progress = on_progress,
                                  .progress_arg = p};
        rc = blobpull_run(p->mesh, modelstore_dir(), &o, &m, err, sizeof err);
    } else {
        struct modelpull_opts o = {.url = p->url, .name = p->name[0] ? p->name : NULL,
                                   .sha256 = p->sha256[0] ? p->sha256 : NULL, .retries = -1,
                                   .cancel = &p->cancel, .progress = on_progress,
                                   .progress_arg = p};
        rc = modelpull_run(modelstore_dir(), &o, &m, err, sizeof err);
    }
    if (rc) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "error", err[0] ? err : err_str(rc));
        job_emit(p, o, true, err_status(rc));
    } else {
        cJSON *o = status_obj("success");
        char full[MODELSTORE_NAME_CAP + MODELSTORE_TAG_CAP + 2];
        modelstore_full_name(&m, full, sizeof full);
        cJSON_AddStringToObject(o, "meshllm_model", full); /* the name it is stored under */
        job_emit(p, o, true, 200);
    }
    job_unref(p);
    return NULL;
}

static ssize_t job_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct api_conn *c = cls;
    struct api_pull *p = c->pull;
    pthread_mutex_lock(&c->mu);
    if (p->off < p->len) {
        size_t n = p->len - p->off < max ? p->len - p->off : max;
        memcpy(buf, p->buf + p->off, n);
        p->off += n;
        pthread_mutex_unlock(&c->mu);
        return (ssize_t)n;
    }
    p->len = p->off = 0;
    if (p->finished) {
        pthread_mutex_unlock(&c->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    api_conn_suspend_locked(c);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* Starts p on its thread; the connection streams or waits. */
static enum MHD_Result job_start(struct api_conn *c, struct api_pull *p)
{
    pthread_mutex_init(&p->mu, NULL);
    p->c = c;
    p->refs = 2; /* the connection and the thread */
    c->pull = p;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t th;
    pthread_mutex_lock(&c->mu);
    int prc = pthread_create(&th, &at, job_main, p);
    pthread_attr_destroy(&at);
    if (prc) {
        pthread_mutex_unlock(&c->mu);
        c->pull = NULL;
        pthread_mutex_destroy(&p->mu);
        free(p);
        return ollama_err(c, 500, "cannot start a thread");
    }
    if (!p->stream) { /* wait for the final object: api_store_resume */
        api_conn_suspend_locked(c);
        pthread_mutex_unlock(&c->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&c->mu);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, job_reader, c, NULL);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    api_cors_headers(c, r);
    enum MHD_Result ret = MHD_queue_response(c->mc, 200, r);
    MHD_destroy_response(r);
    c->responded = true;
    atomic_fetch_add(&c->srv->n_http[2], 1);
    return ret;
}

enum MHD_Result api_store_resume(struct api_conn *c)
{
    struct api_pull *p = c->pull;
    pthread_mutex_lock(&c->mu);
    if (!p->finished) {
        api_conn_suspend_locked(c);
        pthread_mutex_unlock(&c->mu);
        return MHD_YES;
    }
    char *s = strndup(p->buf ? p->buf : "{}", p->len);
    int status = p->status;
    pthread_mutex_unlock(&c->mu);
    return api_reply_json(c, (unsigned)status, s);
}

void api_store_release(struct api_pull *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->gone = true;
    atomic_store(&p->cancel, true); /* a pull whose client left stops; a rerun resumes */
    pthread_mutex_unlock(&p->mu);
    job_unref(p);
}

static bool stream_flag(const cJSON *root)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "stream");
    return !cJSON_IsFalse(st);
}

/* ---- routes ----------------------------------------------------------------------------- */

/* Whether the store already holds a file of content ID spec. */
static bool store_has_cid(const char *spec)
{
    struct modelstore_manifest *all = NULL;
    int n = 0;
    bool has = false;
    if (strlen(spec) != 64 || modelstore_list(modelstore_dir(), &all, &n)) return false;
    for (int i = 0; i < n && !has; i++) has = !strcmp(all[i].content_id, spec);
    free(all);
    return has;
}

/* "meshllm_peers": multiaddrs (ending in /p2p/ID) of providers to ask. */
static int parse_peers(const cJSON *root, struct multiaddr *out, size_t *n, char *err,
                       size_t err_cap)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "meshllm_peers");
    *n = 0;
    if (!a) return 0;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > 8)
        return err_set(err, err_cap, MESH_EINVAL, "'meshllm_peers' must be an array of at most "
                       "8 multiaddrs");
    const cJSON *v;
    cJSON_ArrayForEach(v, a) {
        struct peer_id id;
        if (!cJSON_IsString(v) || multiaddr_from_text(v->valuestring, &out[*n]) ||
            multiaddr_peer_id(&out[*n], &id))
            return err_set(err, err_cap, MESH_EINVAL, "'meshllm_peers': each entry must be a "
                           "multiaddr ending in /p2p/PEER_ID");
        (*n)++;
    }
    return 0;
}

static enum MHD_Result route_pull(struct api_conn *c, cJSON *root)
{
    const char *model = str_field(root, "model");
    if (!model) model = str_field(root, "name");
    if (!model) return ollama_err(c, 400, "'model' is required: a URL (https://.../FILE.gguf) "
                                          "or hf:OWNER/REPO/FILE.gguf");
    char url[4096], err[512];
    struct modelstore_manifest m;
    struct multiaddr peers[8];
    size_t n_peers = 0;
    struct mesh *mesh = NULL;
    if (modelpull_url(model, url, sizeof url, err, sizeof err)) {
        /* a name already in the store is already pulled */
        if (modelstore_get(modelstore_dir(), model, &m, NULL, 0, NULL, 0) == 0 ||
            store_has_cid(model)) {
            if (!stream_flag(root)) return api_reply_json(c, 200, strdup("{\"status\":\"success\"}"));
            return api_reply_json(c, 200, strdup("{\"status\":\"success\"}\n"));
        }
        /* else from mesh members that provide it (docs/MODELS.md) */
        mesh = router_mesh(c->srv->rt);
        char perr[256] = "";
        if (parse_peers(root, peers, &n_peers, perr, sizeof perr)) return ollama_err(c, 400, perr);
        if (!mesh || (!n_peers && !blobpull_available(mesh, model))) {
            char msg[900];
            snprintf(msg, sizeof msg, "%s; '%s' is not in the store and %s", err, model,
                     mesh ? "no member of the mesh provides it (meshllm peers lists what "
                            "members announce)"
                          : "this node is not on a mesh (serve --p2p) to fetch it from peers");
            return ollama_err(c, mesh ? 404 : 400, msg);
        }
    }
    struct api_pull *p = calloc(1, sizeof *p);
    if (!p) return ollama_err(c, 500, "out of memory");
    p->mesh = mesh;
    memcpy(p->peers, peers, n_peers * sizeof peers[0]);
    p->n_peers = n_peers;
    p->stream = stream_flag(root);
    snprintf(p->url, sizeof p->url, "%s", model);
    const char *name = str_field(root, "meshllm_name");
    const char *sha = str_field(root, "sha256");
    if (name) snprintf(p->name, sizeof p->name, "%s", name);
    if (sha) snprintf(p->sha256, sizeof p->sha256, "%s", sha);
    return job_start(c, p);
}

static enum MHD_Result route_create(struct api_conn *c, cJSON *root)
{
    const char *model = str_field(root, "model");
    if (!model) model = str_field(root, "name");
    char nm[MODELSTORE_NAME_CAP], tg[MODELSTORE_TAG_CAP], err[1024];
    if (!model || modelstore_name_parse(model, nm, tg))
        return ollama_err(c, 400, "'model' must be a name: letters, digits, '.', '_', '-', "
                                  "then an optional :TAG");
    const char *from = str_field(root, "from");
    char from_buf[4096] = "";
    const char *mf = str_field(root, "modelfile");
    if (!from && mf && !strncasecmp(mf, "FROM ", 5)) { /* the old form: "FROM /path" */
        snprintf(from_buf, sizeof from_buf, "%s", mf + 5);
        from_buf[strcspn(from_buf, "\r\n")] = 0;
        from = from_buf;
    }
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    if (!from && cJSON_IsObject(files) && files->child && cJSON_IsString(files->child)) {
        /* files: {"x.gguf": "sha256:HEX"}: a blob the store already holds */
        const char *dg = files->child->valuestring;
        if (!strncmp(dg, "sha256:", 7)) dg += 7;
        struct modelstore_manifest *v;
        int n;
        if (modelstore_list(modelstore_dir(), &v, &n)) return ollama_err(c, 500, "store unreadable");
        const char *src = NULL;
        char full[200];
        for (int i = 0; i < n && !src; i++)
            if (!strcasecmp(v[i].sha256, dg)) {
                modelstore_full_name(&v[i], full, sizeof full);
                src = full;
            }
        free(v);
        if (!src)
            return ollama_err(c, 400, "no blob with that digest in the store (meshllm does not "
                                      "take uploads to /api/blobs: use 'from' with a local path)");
        from = src;
        snprintf(from_buf, sizeof from_buf, "%s", src);
        from = from_buf;
    }
    if (!from)
        return ollama_err(c, 400, "give 'from': a GGUF file on this node's disk (absolute "
                                  "path) or a model in the store");
    if (from[0] != '/') { /* another store name: a copy */
        if (modelstore_copy(modelstore_dir(), from, model, err, sizeof err))
            return ollama_err(c, 404, err);
        if (!stream_flag(root)) return api_reply_json(c, 200, strdup("{\"status\":\"success\"}"));
        return api_reply_json(c, 200, strdup("{\"status\":\"success\"}\n"));
    }
    struct api_pull *p = calloc(1, sizeof *p);
    if (!p) return ollama_err(c, 500, "out of memory");
    p->is_create = true;
    p->stream = stream_flag(root);
    snprintf(p->name, sizeof p->name, "%s", model);
    snprintf(p->from, sizeof p->from, "%s", from);
    return job_start(c, p);
}

enum MHD_Result api_store_route(struct api_conn *c, const char *method, const char *url,
                                bool *handled)
{
    *handled = true;
    bool post = !strcmp(method, "POST"), del = !strcmp(method, "DELETE");
    bool is_pull = !strcmp(url, "/api/pull"), is_create = !strcmp(url, "/api/create");
    bool is_copy = !strcmp(url, "/api/copy"), is_delete = !strcmp(url, "/api/delete");
    bool is_show = !strcmp(url, "/api/show");
    if (!is_pull && !is_create && !is_copy && !is_delete && !is_show) {
        *handled = false;
        return MHD_NO;
    }
    if ((is_delete && !del) || (!is_delete && !post))
        return ollama_err(c, 405, "method not allowed for this path");
    cJSON *root = body_obj(c);
    if (!root) return ollama_err(c, 400, "invalid JSON body: expected an object");
    enum MHD_Result ret;
    char err[1024];
    const char *model = str_field(root, "model");
    if (!model) model = str_field(root, "name");
    if (is_pull) {
        ret = route_pull(c, root);
    } else if (is_create) {
        ret = route_create(c, root);
    } else if (is_copy) {
        const char *src = str_field(root, "source"), *dst = str_field(root, "destination");
        if (!src || !dst) ret = ollama_err(c, 400, "'source' and 'destination' are required");
        else if (modelstore_copy(modelstore_dir(), src, dst, err, sizeof err))
            ret = ollama_err(c, strstr(err, "not in the store") ? 404 : 400, err);
        else ret = api_reply_json(c, 200, strdup(""));
    } else if (is_delete) {
        if (!model) ret = ollama_err(c, 400, "'model' is required");
        else if (modelstore_remove(modelstore_dir(), model, err, sizeof err))
            ret = ollama_err(c, 404, err);
        else ret = api_reply_json(c, 200, strdup(""));
    } else {
        int status;
        bool verbose = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "verbose"));
        char *j = model ? modelserve_show_json(c->srv->rt, model, verbose, &status) : NULL;
        if (!model) ret = ollama_err(c, 400, "'model' is required");
        else if (!j) ret = ollama_err(c, (unsigned)status, status == 404 ? "model not found"
                                                                         : "cannot read the model");
        else ret = api_reply_json(c, 200, j);
    }
    cJSON_Delete(root);
    return ret;
}

void api_store_tags_add(cJSON *arr, const struct router_model *ms, int n)
{
    struct modelstore_manifest *v;
    int nv;
    if (modelstore_list(modelstore_dir(), &v, &nv)) return;
    for (int i = 0; i < nv; i++) {
        char full[200];
        modelstore_full_name(&v[i], full, sizeof full);
        bool listed = false;
        for (int k = 0; k < n && !listed; k++) {
            char with[200];
            snprintf(with, sizeof with, "%s%s", ms[k].name, strchr(ms[k].name, ':') ? "" : ":latest");
            listed = !strcmp(with, full);
        }
        if (listed) continue;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "name", full);
        cJSON_AddStringToObject(m, "model", full);
        char when[64], dg[80];
        struct tm tm;
        time_t t = (time_t)v[i].added;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        cJSON_AddStringToObject(m, "modified_at", when);
        cJSON_AddNumberToObject(m, "size", (double)v[i].size);
        snprintf(dg, sizeof dg, "sha256:%s", v[i].sha256);
        cJSON_AddStringToObject(m, "digest", dg);
        cJSON *d = cJSON_AddObjectToObject(m, "details");
        cJSON_AddStringToObject(d, "format", "gguf");
        cJSON *x = cJSON_AddObjectToObject(m, "meshllm");
        cJSON_AddBoolToObject(x, "local", false);
        cJSON_AddBoolToObject(x, "stored", true);
        cJSON_AddStringToObject(x, "content_id", v[i].content_id);
        cJSON_AddItemToArray(arr, m);
    }
    free(v);
}
