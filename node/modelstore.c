/* modelstore.c - the model store's files (see modelstore.h, docs/MODELS.md). Manifests are
 * small JSON objects parsed with cJSON and checked field by field (fuzzed:
 * tests/fuzz/fuzz_manifest.c); blobs are only ever renamed into place whole and verified. */
#include "node/modelstore.h"

#include "node/merkle.h"

#include "core/err.h"
#include "engine/gguf.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MANIFEST_MAX (64u << 10)

const char *modelstore_dir(void)
{
    static char buf[4096];
    const char *d = getenv("MESHLLM_MODELS");
    if (d && *d) return d;
    const char *home = getenv("HOME");
    snprintf(buf, sizeof buf, "%s/.meshllm/models", home && *home ? home : ".");
    return buf;
}

/* ---- names and manifests ------------------------------------------------------------------ */

static bool part_ok(const char *s, size_t len, size_t cap)
{
    if (len == 0 || len >= cap) return false;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
          (s[0] >= '0' && s[0] <= '9')))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

int modelstore_name_parse(const char *spec, char name[MODELSTORE_NAME_CAP],
                          char tag[MODELSTORE_TAG_CAP])
{
    name[0] = tag[0] = 0;
    if (!spec) return MESH_EINVAL;
    const char *colon = strchr(spec, ':');
    size_t nl = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *t = colon ? colon + 1 : "latest";
    if (!part_ok(spec, nl, MODELSTORE_NAME_CAP) || !part_ok(t, strlen(t), MODELSTORE_TAG_CAP))
        return MESH_EINVAL;
    memcpy(name, spec, nl);
    name[nl] = 0;
    snprintf(tag, MODELSTORE_TAG_CAP, "%s", t);
    return 0;
}

void modelstore_full_name(const struct modelstore_manifest *m, char *out, size_t cap)
{
    snprintf(out, cap, "%s:%s", m->name, m->tag);
}

static bool is_hex64(const char *s)
{
    if (strlen(s) != 64) return false;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static int get_str(const cJSON *o, const char *k, char *out, size_t cap, bool required)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v) return required ? MESH_EINVAL : 0;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap) return MESH_EINVAL;
    snprintf(out, cap, "%s", v->valuestring);
    return 0;
}

static int get_num(const cJSON *o, const char *k, double lo, double hi, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi)) return MESH_EINVAL;
    *out = v->valuedouble;
    return 0;
}

int modelstore_manifest_parse(const char *json, size_t len, struct modelstore_manifest *out)
{
    memset(out, 0, sizeof *out);
    if (!json || len > MANIFEST_MAX) return MESH_EINVAL;
    cJSON *root = cJSON_ParseWithLength(json, len);
    int rc = MESH_EINVAL;
    double size, piece, added;
    if (!cJSON_IsObject(root)) goto out;
    if (get_str(root, "name", out->name, sizeof out->name, true) ||
        get_str(root, "tag", out->tag, sizeof out->tag, true) ||
        get_str(root, "source", out->source, sizeof out->source, false) ||
        get_str(root, "content_id", out->content_id, sizeof out->content_id, true) ||
        get_str(root, "sha256", out->sha256, sizeof out->sha256, true))
        goto out;
    if (get_num(root, "size", 1, 9007199254740992.0, &size) ||
        get_num(root, "piece_len", MERKLE_BLOCK, (double)MERKLE_BLOCK * MERKLE_MAX_BLOCKS_PER_PIECE,
                &piece) ||
        get_num(root, "added", 0, 1e12, &added))
        goto out;
    out->size = (uint64_t)size;
    out->piece_len = (uint32_t)piece;
    out->added = (int64_t)added;
    if ((double)out->size != size || (double)out->piece_len != piece ||
        (out->piece_len & (out->piece_len - 1)))
        goto out;
    if (!part_ok(out->name, strlen(out->name), sizeof out->name) ||
        !part_ok(out->tag, strlen(out->tag), sizeof out->tag) || !is_hex64(out->content_id) ||
        !is_hex64(out->sha256))
        goto out;
    rc = 0;
out:
    cJSON_Delete(root);
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

char *modelstore_manifest_json(const struct modelstore_manifest *m)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "name", m->name);
    cJSON_AddStringToObject(o, "tag", m->tag);
    cJSON_AddStringToObject(o, "source", m->source);
    cJSON_AddNumberToObject(o, "size", (double)m->size);
    cJSON_AddStringToObject(o, "content_id", m->content_id);
    cJSON_AddStringToObject(o, "sha256", m->sha256);
    cJSON_AddNumberToObject(o, "piece_len", m->piece_len);
    cJSON_AddNumberToObject(o, "added", (double)m->added);
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

/* ---- files -------------------------------------------------------------------------------- */

static int mkdir_p(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return MESH_ERANGE;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return err_from_errno(errno);
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST) return err_from_errno(errno);
    return 0;
}

int modelstore_prepare(const char *dir, char *err, size_t err_cap)
{
    static const char *sub[] = {"blobs", "manifests", "partial"};
    char p[4096];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, sub[i]);
        int rc = mkdir_p(p);
        if (rc)
            return err_set(err, err_cap, rc, "cannot create %s: %s (set MESHLLM_MODELS to a "
                                             "writable folder)", p, strerror(errno));
    }
    return 0;
}

static void fsync_dir_of(const char *path)
{
    char d[4096];
    snprintf(d, sizeof d, "%s", path);
    char *slash = strrchr(d, '/');
    if (!slash) return;
    *slash = 0;
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    fsync(fd);
    close(fd);
}

static int write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return MESH_EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int modelstore_write_atomic(const char *path, const void *data, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return err_from_errno(errno);
    int rc = write_all(fd, data, len);
    if (!rc && fsync(fd)) rc = MESH_EIO;
    if (close(fd) && !rc) rc = MESH_EIO;
    if (!rc && rename(tmp, path)) rc = err_from_errno(errno);
    if (rc) unlink(tmp);
    else fsync_dir_of(path);
    return rc;
}

static int manifest_path(const char *dir, const char *name, const char *tag, char *out,
                         size_t cap)
{
    int n = snprintf(out, cap, "%s/manifests/%s:%s.json", dir, name, tag);
    return n < 0 || (size_t)n >= cap ? MESH_ERANGE : 0;
}

static int read_manifest(const char *path, struct modelstore_manifest *m)
{
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? MESH_ENOTFOUND : MESH_EIO;
    char *buf = malloc(MANIFEST_MAX + 1);
    size_t n = buf ? fread(buf, 1, MANIFEST_MAX + 1, f) : 0;
    fclose(f);
    int rc = buf ? modelstore_manifest_parse(buf, n, m) : MESH_ENOMEM;
    free(buf);
    return rc;
}

int modelstore_get(const char *dir, const char *spec, struct modelstore_manifest *out,
                   char *blob_path, size_t blob_cap, char *err, size_t err_cap)
{
    memset(out, 0, sizeof *out);
    char name[MODELSTORE_NAME_CAP], tag[MODELSTORE_TAG_CAP], path[4096];
    if (modelstore_name_parse(spec, name, tag))
        return err_set(err, err_cap, MESH_EINVAL,
                       "'%s' is not a model name (letters, digits, '.', '_', '-', then "
                       "an optional :TAG)", spec);
    if (manifest_path(dir, name, tag, path, sizeof path))
        return err_set(err, err_cap, MESH_ERANGE, "path too long");
    int rc = read_manifest(path, out);
    if (rc == MESH_ENOTFOUND)
        return err_set(err, err_cap, rc, "model '%s:%s' is not in the store %s (meshllm list "
                                         "shows what is; meshllm pull URL adds one)",
                       name, tag, dir);
    if (rc) return err_set(err, err_cap, rc, "%s: not a valid manifest", path);
    if (blob_path && snprintf(blob_path, blob_cap, "%s/blobs/%s", dir, out->content_id) >=
                         (int)blob_cap)
        return err_set(err, err_cap, MESH_ERANGE, "path too long");
    return 0;
}

static int cmp_manifest(const void *a, const void *b)
{
    const struct modelstore_manifest *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->tag, y->tag);
}

int modelstore_list(const char *dir, struct modelstore_manifest **out, int *n)
{
    *out = NULL;
    *n = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/manifests", dir);
    DIR *d = opendir(path);
    if (!d) return errno == ENOENT ? 0 : MESH_EIO;
    struct modelstore_manifest *v = NULL;
    int cnt = 0, cap = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json")) continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            struct modelstore_manifest *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) {
                rc = MESH_ENOMEM;
                break;
            }
            v = nv;
        }
        snprintf(path, sizeof path, "%s/manifests/%s", dir, de->d_name);
        if (read_manifest(path, &v[cnt]) == 0) cnt++;
    }
    closedir(d);
    if (rc) {
        free(v);
        return rc;
    }
    if (cnt) qsort(v, (size_t)cnt, sizeof *v, cmp_manifest);
    *out = v;
    *n = cnt;
    return 0;
}

int modelstore_remove(const char *dir, const char *spec, char *err, size_t err_cap)
{
    struct modelstore_manifest m;
    int rc = modelstore_get(dir, spec, &m, NULL, 0, err, err_cap);
    if (rc) return rc;
    char path[4096];
    manifest_path(dir, m.name, m.tag, path, sizeof path);
    if (unlink(path))
        return err_set(err, err_cap, err_from_errno(errno), "cannot remove %s: %s", path,
                       strerror(errno));
    fsync_dir_of(path);
    struct modelstore_manifest *all;
    int n;
    if (modelstore_list(dir, &all, &n)) return 0; /* keep the blob when unsure */
    bool used = false;
    for (int i = 0; i < n; i++) used |= !strcmp(all[i].content_id, m.content_id);
    free(all);
    if (used) return 0;
    snprintf(path, sizeof path, "%s/blobs/%s", dir, m.content_id);
    unlink(path);
    snprintf(path, sizeof path, "%s/blobs/%s.pieces", dir, m.content_id);
    unlink(path);
    return 0;
}

static int manifest_write(const char *dir, const struct modelstore_manifest *m)
{
    char path[4096];
    if (manifest_path(dir, m->name, m->tag, path, sizeof path)) return MESH_ERANGE;
    char *j = modelstore_manifest_json(m);
    if (!j) return MESH_ENOMEM;
    int rc = modelstore_write_atomic(path, j, strlen(j));
    free(j);
    return rc;
}

int modelstore_copy(const char *dir, const char *src, const char *dst, char *err,
                    size_t err_cap)
{
    struct modelstore_manifest m;
    int rc = modelstore_get(dir, src, &m, NULL, 0, err, err_cap);
    if (rc) return rc;
    if (modelstore_name_parse(dst, m.name, m.tag))
        return err_set(err, err_cap, MESH_EINVAL, "'%s' is not a model name", dst);
    m.added = (int64_t)time(NULL);
    rc = manifest_write(dir, &m);
    if (rc) return err_set(err, err_cap, rc, "cannot write the manifest: %s", err_str(rc));
    return 0;
}

/* Reads path (copying it to copy_fd when >= 0) through the Merkle builder. */
static int hash_file(const char *path, int copy_fd, struct merkle *mk, char *err, size_t err_cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, err_cap, err_from_errno(errno), "cannot open %s: %s", path,
                       strerror(errno));
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    int rc = buf ? 0 : MESH_ENOMEM;
    while (!rc) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rc = err_set(err, err_cap, MESH_EIO, "cannot read %s: %s", path, strerror(errno));
        if (n <= 0) break;
        rc = merkle_update(mk, buf, (size_t)n);
        if (!rc && copy_fd >= 0 && write_all(copy_fd, buf, (size_t)n))
            rc = err_set(err, err_cap, MESH_EIO, "cannot write into the store: %s",
                         strerror(errno));
    }
    free(buf);
    close(fd);
    return rc;
}

int modelstore_add_file(const char *dir, const char *path, bool move, const char *spec,
                        const char *source, const char *want_sha256,
                        struct modelstore_manifest *out, char *err, size_t err_cap)
{
    static atomic_uint counter;
    memset(out, 0, sizeof *out);
    struct modelstore_manifest m = {0};
    if (modelstore_name_parse(spec, m.name, m.tag))
        return err_set(err, err_cap, MESH_EINVAL,
                       "'%s' is not a model name (letters, digits, '.', '_', '-', then "
                       "an optional :TAG)", spec);
    int rc = modelstore_prepare(dir, err, err_cap);
    if (rc) return rc;
    char work[4096], blob[4096], pieces_path[4200];
    struct merkle mk;
    uint8_t root[32], sha[32], *pieces = NULL;
    size_t n_pieces = 0;
    if ((rc = merkle_init(&mk, MERKLE_PIECE_DEFAULT))) return err_set(err, err_cap, rc, "hash");
    if (move) {
        snprintf(work, sizeof work, "%s", path);
        rc = hash_file(work, -1, &mk, err, err_cap);
    } else { /* one pass: copy and hash, so what is hashed is what is stored */
        snprintf(work, sizeof work, "%s/partial/add-%d-%u.part", dir, (int)getpid(),
                 atomic_fetch_add(&counter, 1));
        int fd = open(work, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            merkle_clear(&mk);
            return err_set(err, err_cap, MESH_EIO, "cannot create %s: %s", work, strerror(errno));
        }
        rc = hash_file(path, fd, &mk, err, err_cap);
        if (!rc && fsync(fd)) rc = err_set(err, err_cap, MESH_EIO, "fsync: %s", strerror(errno));
        close(fd);
    }
    if (rc) {
        merkle_clear(&mk);
        goto fail;
    }
    m.size = mk.n_bytes;
    if ((rc = merkle_final(&mk, root, sha, &pieces, &n_pieces))) goto fail;
    merkle_hex(root, m.content_id);
    merkle_hex(sha, m.sha256);
    m.piece_len = MERKLE_PIECE_DEFAULT;
    if (want_sha256 && *want_sha256 && strcasecmp(want_sha256, m.sha256)) {
        rc = err_set(err, err_cap, MESH_ECRYPTO,
                     "sha256 mismatch: the file has %s but %s was expected; nothing was "
                     "added (check the URL and the digest)", m.sha256, want_sha256);
        goto fail;
    }
    struct gguf *g = NULL;
    char gerr[256] = "";
    if (m.size == 0 || gguf_open(work, &g, gerr, sizeof gerr)) {
        rc = err_set(err, err_cap, MESH_EBADMODEL,
                     "%s is not a GGUF model file (%s); nothing was added",
                     source && *source ? source : path, gerr[0] ? gerr : "empty");
        goto fail;
    }
    gguf_close(g);
    snprintf(blob, sizeof blob, "%s/blobs/%s", dir, m.content_id);
    snprintf(pieces_path, sizeof pieces_path, "%s.pieces", blob);
    if (n_pieces && (rc = modelstore_write_atomic(pieces_path, pieces, n_pieces * 32))) {
        err_set(err, err_cap, rc, "cannot write %s: %s", pieces_path, err_str(rc));
        goto fail;
    }
    if (rename(work, blob)) {
        rc = err_set(err, err_cap, MESH_EIO, "cannot move the file into %s: %s", blob,
                     strerror(errno));
        goto fail;
    }
    fsync_dir_of(blob);
    snprintf(m.source, sizeof m.source, "%s", source ? source : "");
    m.added = (int64_t)time(NULL);
    if ((rc = manifest_write(dir, &m))) {
        err_set(err, err_cap, rc, "cannot write the manifest: %s", err_str(rc));
        goto out;
    }
    *out = m;
    goto out;
fail:
    if (move || strstr(work, "/partial/add-")) unlink(work);
out:
    free(pieces);
    return rc;
}

int modelstore_install(const char *dir, const char *path, const struct modelstore_manifest *m,
                       const uint8_t *pieces, size_t n_pieces, char *err, size_t err_cap)
{
    struct modelstore_manifest mm = *m;
    char nm[MODELSTORE_NAME_CAP], tg[MODELSTORE_TAG_CAP];
    if (modelstore_name_parse(m->name, nm, tg) || strcmp(nm, m->name) ||
        !part_ok(m->tag, strlen(m->tag), MODELSTORE_TAG_CAP) || !is_hex64(m->content_id) ||
        !is_hex64(m->sha256))
        return err_set(err, err_cap, MESH_EINVAL, "bad manifest for %s", path);
    int rc = modelstore_prepare(dir, err, err_cap);
    if (rc) return rc;
    struct gguf *g = NULL;
    char gerr[256] = "";
    if (gguf_open(path, &g, gerr, sizeof gerr)) {
        unlink(path);
        return err_set(err, err_cap, MESH_EBADMODEL, "%s:%s is not a GGUF model file (%s); "
                       "nothing was added", m->name, m->tag, gerr);
    }
    gguf_close(g);
    char blob[4096], pieces_path[4200];
    snprintf(blob, sizeof blob, "%s/blobs/%s", dir, m->content_id);
    snprintf(pieces_path, sizeof pieces_path, "%s.pieces", blob);
    if (n_pieces && (rc = modelstore_write_atomic(pieces_path, pieces, n_pieces * MERKLE_HASH)))
        return err_set(err, err_cap, rc, "cannot write %s: %s", pieces_path, err_str(rc));
    if (rename(path, blob))
        return err_set(err, err_cap, MESH_EIO, "cannot move the file into %s: %s", blob,
                       strerror(errno));
    fsync_dir_of(blob);
    mm.added = (int64_t)time(NULL);
    if ((rc = manifest_write(dir, &mm)))
        return err_set(err, err_cap, rc, "cannot write the manifest: %s", err_str(rc));
    return 0;
}
