/* modelpull.h - `meshllm pull URL` and /api/pull: a GGUF over HTTP(S) into the model store.
 *
 * libcurl with its defaults (proxies from http_proxy / https_proxy / ALL_PROXY / NO_PROXY,
 * the system's CA certificates, redirects followed). The body goes to DIR/partial/<key>.part
 * (<key>: the URL's SHA-256); a cut or a cancel leaves it there and the next pull of the
 * same URL resumes it with a Range request (a server that ignores Range starts over). A cut
 * is retried by itself (retries times, from where it stopped). When the server publishes
 * the file's SHA-256 (Hugging Face: the X-Linked-ETag header of an LFS file; the ETag of
 * an hf: URL when it is 64 hex digits) or the caller gives one, the whole file must match
 * it; then it must be a GGUF; then modelstore_add_file renames it into blobs/.
 * Thread rule: blocking; run it on its own thread (any). cancel may be set from any thread.
 */
#ifndef MESH_NODE_MODELPULL_H
#define MESH_NODE_MODELPULL_H

#include "node/modelstore.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum modelpull_phase {
    MODELPULL_CONNECTING = 0, /* "pulling manifest" in Ollama's words */
    MODELPULL_DOWNLOADING,    /* done/total bytes (total 0: unknown) */
    MODELPULL_VERIFYING,      /* hashing: SHA-256, content ID, GGUF header */
    MODELPULL_WRITING,        /* the manifest */
    MODELPULL_DONE,
};

struct modelpull_progress {
    enum modelpull_phase phase;
    uint64_t done, total;       /* bytes of the file (done includes what was resumed) */
    uint64_t resumed_from;      /* bytes already there when this attempt started */
    const char *sha256;         /* the expected digest (hex) when known, else NULL */
    double rate_bps;            /* a mesh pull (node/blobpull.h): bytes/s this run, else 0 */
    int n_peers;                /* ... providers still in use, else 0 */
    const char *content_id;     /* ... the file's content ID (hex), else NULL */
};

struct modelpull_opts {
    const char *url;            /* https://..., http://..., or hf:OWNER/REPO/FILE.gguf */
    const char *name;           /* NAME[:TAG] in the store; NULL: the file name without .gguf */
    const char *sha256;         /* hex digest the user expects, or NULL */
    int retries;                /* automatic resumes after a cut; < 0: 5 (MESHLLM_PULL_RETRIES) */
    atomic_bool *cancel;        /* set to stop (the partial file stays for a resume) */
    void (*progress)(void *arg, const struct modelpull_progress *p);
    void *progress_arg;
};

/* Expands hf:OWNER/REPO/FILE (-> https://huggingface.co/OWNER/REPO/resolve/main/FILE) or
 * checks an http(s) URL. 0 or MESH_EINVAL (err says what form is expected). */
int modelpull_url(const char *spec, char *url, size_t url_cap, char *err, size_t err_cap);
/* The store name a URL gets by default: its last path segment without ".gguf", with
 * characters a name may not hold replaced by '-'. */
void modelpull_default_name(const char *url, char *name, size_t cap);

/* Pulls o->url into the store at dir. 0 with *out the new manifest; MESH_ECANCELED
 * (partial kept), MESH_ECRYPTO (digest mismatch; partial deleted), MESH_EBADMODEL (not a
 * GGUF; deleted), MESH_EIO / MESH_EPROTO (network or HTTP error; partial kept), MESH_EINVAL.
 * err says what happened and what to do. */
int modelpull_run(const char *dir, const struct modelpull_opts *o,
                  struct modelstore_manifest *out, char *err, size_t err_cap);

#endif
