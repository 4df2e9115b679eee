/* store.h - the node's persistent state in SQLite: DATA_DIR/node.db.
 *
 * WAL journal (readers never wait for the writer), a 5 s busy timeout (a CLI command and a
 * running node share the file), schema versioned with PRAGMA user_version (STORE_SCHEMA_VERSION;
 * a newer file is refused, never rewritten). Tables: this node's member certificate, used
 * invite ids, revocations (seq = a monotonically increasing local counter, never reused), this
 * node's listen addresses (written by the running node, read by `meshllm invite`) and the peer
 * table. Stores bytes; it validates nothing (node/member.c does). Every statement is prepared
 * once at open.
 * Thread rule: any thread; one mutex (store.mu) serialises every call, because a prepared
 * statement cannot be stepped by two threads at once. Lock order: member.mu before store.mu.
 */
#ifndef MESH_NODE_STORE_H
#define MESH_NODE_STORE_H

#include "net/multiaddr.h"
#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_FILE_NAME "node.db"
#define STORE_SCHEMA_VERSION 1
#define STORE_BUSY_TIMEOUT_MS 5000
/* Listen addresses kept; more than a node ever has on one machine. */
#define STORE_MAX_LISTEN_ADDRS 16

struct store;

/* Opens (creating if absent) DIR/node.db and its schema. Returns 0, MESH_EIO (cannot open
 * or write), MESH_EPROTO (not a database / corrupt), MESH_EUNSUPPORTED (schema newer than
 * this program), MESH_ENOMEM; message in err. */
int store_open(const char *dir, struct store **out, char *err, size_t err_cap);
/* Finalises the statements and closes the database. NULL is fine. */
void store_close(struct store *s);

/* This node's certificate (serialized MemberCert with its parents). get: *out malloc'd,
 * caller frees; MESH_ENOTFOUND when there is none. */
int store_cert_get(struct store *s, uint8_t **out, size_t *out_len, char *err, size_t err_cap);
int store_cert_put(struct store *s, const uint8_t *cert, size_t len, char *err, size_t err_cap);

/* Forgets the mesh: certificate, used invites and revocations (for `mesh create --force`).
 * Revocation seq values keep growing afterwards. */
int store_mesh_reset(struct store *s, char *err, size_t err_cap);

/* Records invite id (id_len bytes) as used by peer (text) at now (unix s). Atomic: of two
 * concurrent callers exactly one sees *already_used == false. */
int store_invite_use(struct store *s, const uint8_t *id, size_t id_len, const char *peer,
                     uint64_t now, bool *already_used, char *err, size_t err_cap);
int store_invite_is_used(struct store *s, const uint8_t *id, size_t id_len, bool *used,
                         char *err, size_t err_cap);

/* Adds a revocation of peer (multihash bytes) by owner (32-byte key); msg = its serialized
 * Revocation. Idempotent: a second one for the same (owner, peer) is ignored (*is_new false).
 * *seq (may be NULL) gets the row's seq. */
int store_revocation_put(struct store *s, const uint8_t owner[32], const uint8_t *peer,
                         size_t peer_len, uint64_t revoked_at, const uint8_t *msg,
                         size_t msg_len, bool *is_new, uint64_t *seq, char *err,
                         size_t err_cap);
int store_revocation_exists(struct store *s, const uint8_t owner[32], const uint8_t *peer,
                            size_t peer_len, bool *revoked, char *err, size_t err_cap);
int store_revocation_count(struct store *s, const uint8_t owner[32], size_t *n, char *err,
                           size_t err_cap);

/* One stored message and its seq. */
struct store_blob {
    uint64_t seq;
    size_t len;
    uint8_t *bytes;
};

/* Revocations by owner with seq > after_seq, oldest first, at most max. *out malloc'd (free
 * with store_blobs_free); *n may be 0 (then *out is NULL). */
int store_revocations_since(struct store *s, const uint8_t owner[32], uint64_t after_seq,
                            size_t max, struct store_blob **out, size_t *n, char *err,
                            size_t err_cap);
void store_blobs_free(struct store_blob *b, size_t n);

/* Replaces the recorded listen addresses of the running node (at most STORE_MAX_LISTEN_ADDRS
 * are kept) / reads them (up to cap). */
int store_listen_addrs_set(struct store *s, const struct multiaddr *addrs, size_t n, char *err,
                           size_t err_cap);
int store_listen_addrs_get(struct store *s, struct multiaddr *out, size_t cap, size_t *n,
                           char *err, size_t err_cap);

/* One row of the peer table (the lead's p2p peer table, persisted). addrs: text, e.g.
 * space-separated multiaddrs; record: opaque bytes (a signed peer record). */
struct store_peer {
    char peer_id[PEER_ID_TEXT_CAP];
    char *addrs;     /* NUL-terminated; NULL = "" on put; malloc'd on load */
    uint8_t *record; /* NULL when record_len == 0; malloc'd on load */
    size_t record_len;
    int64_t last_seen; /* unix s */
    int64_t rtt_us;
    int64_t n_ok, n_fail, n_lies;
};

/* Inserts or replaces the row of p->peer_id. */
int store_peer_put(struct store *s, const struct store_peer *p, char *err, size_t err_cap);
/* Every row, most recently seen first. *out malloc'd, free with store_peers_free. */
int store_peers_load(struct store *s, struct store_peer **out, size_t *n, char *err,
                     size_t err_cap);
void store_peers_free(struct store_peer *p, size_t n);

#endif
