/* modelstore.h - the model store: GGUF blobs named by content ID, one manifest per name.
 *
 * Layout under DIR ($MESHLLM_MODELS, else ~/.meshllm/models; docs/MODELS.md):
 *   blobs/<cid>          the GGUF file, <cid> the hex BEP 52 root (node/merkle.h)
 *   blobs/<cid>.pieces   its piece layer (32-byte hashes, piece_len from the manifest)
 *   manifests/<name>:<tag>.json   {"name","tag","source","size","content_id","sha256",
 *                        "piece_len","added"}
 *   partial/             downloads in progress (node/modelpull.h)
 * A plain NAME.gguf placed in DIR still resolves by name (node/registry.c) but is not a
 * store entry. Names: [A-Za-z0-9][A-Za-z0-9._-]{0,99}, tags likewise up to 64; "NAME"
 * means NAME:latest. Files are written to a temporary name, fsynced and renamed.
 * No engine types here (api/ includes it). Any thread; concurrent writers of the same
 * name: the last rename wins.
 */
#ifndef MESH_NODE_MODELSTORE_H
#define MESH_NODE_MODELSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MODELSTORE_NAME_CAP 101
#define MODELSTORE_TAG_CAP 65

struct modelstore_manifest {
    char name[MODELSTORE_NAME_CAP];
    char tag[MODELSTORE_TAG_CAP];
    char source[2048];        /* URL or path it came from ("" unknown) */
    uint64_t size;            /* bytes */
    char content_id[65];      /* hex BEP 52 root */
    char sha256[65];          /* hex SHA-256 of the file */
    uint32_t piece_len;
    int64_t added;            /* unix seconds */
};

/* Parses a manifest (untrusted bytes: every field checked). 0 or MESH_EINVAL. */
int modelstore_manifest_parse(const char *json, size_t len, struct modelstore_manifest *out);
/* The manifest as JSON (malloc'd), NULL when out of memory. */
char *modelstore_manifest_json(const struct modelstore_manifest *m);

/* Splits "NAME[:TAG]" (TAG defaults to "latest") and checks both. 0 or MESH_EINVAL. */
int modelstore_name_parse(const char *spec, char name[MODELSTORE_NAME_CAP],
                          char tag[MODELSTORE_TAG_CAP]);
/* "NAME:TAG" of a manifest into out. */
void modelstore_full_name(const struct modelstore_manifest *m, char *out, size_t cap);

/* The store folder (static buffer; same as registry_models_dir). */
const char *modelstore_dir(void);

/* The manifest of spec ("NAME[:TAG]") and its blob's path. MESH_ENOTFOUND, MESH_EINVAL
 * (bad name, or a manifest that does not parse, with err saying which file). */
int modelstore_get(const char *dir, const char *spec, struct modelstore_manifest *out,
                   char *blob_path, size_t blob_cap, char *err, size_t err_cap);
/* Every readable manifest, sorted by name then tag (malloc'd array, *n entries; free()).
 * A store that does not exist yet is empty. 0 or MESH_ENOMEM / MESH_EIO. */
int modelstore_list(const char *dir, struct modelstore_manifest **out, int *n);
/* Removes spec's manifest, and its blob when no other manifest names it. */
int modelstore_remove(const char *dir, const char *spec, char *err, size_t err_cap);
/* A second name for the same blob. MESH_ENOTFOUND (src), MESH_EINVAL (bad names). */
int modelstore_copy(const char *dir, const char *src, const char *dst, char *err,
                    size_t err_cap);

/* Adds the file at path under spec: hashes it (content ID, SHA-256, piece layer), checks
 * the SHA-256 against want_sha256 (hex, or NULL/"": none), checks that it is a GGUF, then
 * moves it (move: path is in DIR/partial, renamed) or copies it into blobs/ and writes the
 * manifest. On a digest mismatch or a bad GGUF nothing is added (and a moved file is
 * deleted). source goes into the manifest. progress (may be NULL) sees bytes hashed.
 * 0, MESH_ECRYPTO (digest mismatch), MESH_EBADMODEL, MESH_EIO, MESH_EINVAL. */
int modelstore_add_file(const char *dir, const char *path, bool move, const char *spec,
                        const char *source, const char *want_sha256,
                        struct modelstore_manifest *out, char *err, size_t err_cap);

/* Installs a file whose content ID, size, SHA-256 and piece layer the caller has already
 * verified (node/blobpull.c: every piece against the root): checks that it is a GGUF,
 * writes blobs/<cid>.pieces (pieces[n_pieces], none for a file of one piece), renames
 * path into blobs/<cid> and writes m's manifest (m->added is set to now). On a bad GGUF
 * the file is deleted. 0, MESH_EBADMODEL, MESH_EIO, MESH_EINVAL. */
int modelstore_install(const char *dir, const char *path, const struct modelstore_manifest *m,
                       const uint8_t *pieces, size_t n_pieces, char *err, size_t err_cap);

/* mkdir -p of DIR and its subfolders. */
int modelstore_prepare(const char *dir, char *err, size_t err_cap);
/* Writes len bytes to path through path.tmp, fsync and rename (and fsync of the folder). */
int modelstore_write_atomic(const char *path, const void *data, size_t len);

#endif
