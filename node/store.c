/* store.c - SQLite store of the node's state (see store.h). Implements schema version 1;
 * later versions add a step to store_migrate(). Does not validate what it stores: callers
 * (node/member.c) verify certificates and signatures before they reach the database.
 */
#include "node/store.h"

#include "core/err.h"

#include <sqlite3.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Every statement the store runs, prepared once at open. */
enum {
    ST_CERT_GET,
    ST_CERT_PUT,
    ST_INVITE_USE,
    ST_INVITE_GET,
    ST_REV_PUT,
    ST_REV_SEQ,
    ST_REV_COUNT,
    ST_REV_SINCE,
    ST_ADDR_CLEAR,
    ST_ADDR_ADD,
    ST_ADDR_GET,
    ST_PEER_PUT,
    ST_PEER_LOAD,
    ST_COUNT
};

static const char *const k_sql[ST_COUNT] = {
    [ST_CERT_GET] = "SELECT cert FROM my_cert WHERE id = 1",
    [ST_CERT_PUT] = "INSERT OR REPLACE INTO my_cert (id, cert) VALUES (1, ?1)",
    /* OR IGNORE + sqlite3_changes(): the insert itself is the atomic test-and-set. */
    [ST_INVITE_USE] = "INSERT OR IGNORE INTO used_invites (id, peer, used_at) VALUES (?1, ?2, ?3)",
    [ST_INVITE_GET] = "SELECT 1 FROM used_invites WHERE id = ?1",
    [ST_REV_PUT] = "INSERT OR IGNORE INTO revocations (owner, peer, revoked_at, msg) "
                   "VALUES (?1, ?2, ?3, ?4)",
    [ST_REV_SEQ] = "SELECT seq FROM revocations WHERE owner = ?1 AND peer = ?2",
    [ST_REV_COUNT] = "SELECT count(*) FROM revocations WHERE owner = ?1",
    [ST_REV_SINCE] = "SELECT seq, msg FROM revocations WHERE owner = ?1 AND seq > ?2 "
                     "ORDER BY seq LIMIT ?3",
    [ST_ADDR_CLEAR] = "DELETE FROM listen_addrs",
    [ST_ADDR_ADD] = "INSERT OR IGNORE INTO listen_addrs (pos, addr) VALUES (?1, ?2)",
    [ST_ADDR_GET] = "SELECT addr FROM listen_addrs ORDER BY pos",
    [ST_PEER_PUT] = "INSERT OR REPLACE INTO peers (peer_id, addrs, record, last_seen, rtt_us, "
                    "n_ok, n_fail, n_lies) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_PEER_LOAD] = "SELECT peer_id, addrs, record, last_seen, rtt_us, n_ok, n_fail, n_lies "
                     "FROM peers ORDER BY last_seen DESC",
};

/* Schema version 1. AUTOINCREMENT on revocations.seq: SQLite then never reuses a seq, even
 * after rows are deleted, so a gossiping node's "seen up to seq" cursor stays valid. */
static const char k_schema_v1[] =
    "CREATE TABLE my_cert (id INTEGER PRIMARY KEY CHECK (id = 1), cert BLOB NOT NULL);"
    "CREATE TABLE used_invites (id BLOB PRIMARY KEY, peer TEXT NOT NULL,"
    "  used_at INTEGER NOT NULL);"
    "CREATE TABLE revocations (seq INTEGER PRIMARY KEY AUTOINCREMENT, owner BLOB NOT NULL,"
    "  peer BLOB NOT NULL, revoked_at INTEGER NOT NULL, msg BLOB NOT NULL,"
    "  UNIQUE (owner, peer));"
    "CREATE TABLE listen_addrs (pos INTEGER PRIMARY KEY, addr BLOB NOT NULL);"
    "CREATE TABLE peers (peer_id TEXT PRIMARY KEY, addrs TEXT NOT NULL, record BLOB,"
    "  last_seen INTEGER NOT NULL, rtt_us INTEGER NOT NULL, n_ok INTEGER NOT NULL,"
    "  n_fail INTEGER NOT NULL, n_lies INTEGER NOT NULL);"
    "PRAGMA user_version = 1;";

struct store {
    pthread_mutex_t mu; /* guards db and every st[] (a statement is stepped by one caller) */
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
};

/* SQLite result code -> MESH_E*. */
static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_NOMEM:
        return MESH_ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return MESH_EAGAIN;
    case SQLITE_FULL:
        return MESH_EFULL;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return MESH_EPROTO;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG:
        return MESH_EINVAL;
    default:
        return MESH_EIO;
    }
}

/* Error from the last call on s->db, with what we were doing. */
static int db_fail(struct store *s, int rc, const char *what, char *err, size_t err_cap)
{
    return err_set(err, err_cap, map_rc(rc), "node.db: %s: %s", what, sqlite3_errmsg(s->db));
}

static int exec(struct store *s, const char *sql, const char *what, char *err, size_t err_cap)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_fail(s, rc, what, err, err_cap);
}

/* Creates or checks the schema inside one transaction, so two processes opening a new file
 * at once do not both create it (the second waits on the busy timeout, then sees version 1). */
static int store_migrate(struct store *s, char *err, size_t err_cap)
{
    sqlite3_stmt *q = NULL;
    int version = -1, rc = exec(s, "BEGIN IMMEDIATE", "begin schema", err, err_cap);
    if (rc) return rc;
    int src = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &q, NULL);
    if (src == SQLITE_OK && (src = sqlite3_step(q)) == SQLITE_ROW) version = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (version < 0) {
        rc = db_fail(s, src, "read schema version", err, err_cap);
    } else if (version == 0) {
        rc = exec(s, k_schema_v1, "create schema", err, err_cap);
    } else if (version > STORE_SCHEMA_VERSION) {
        rc = err_set(err, err_cap, MESH_EUNSUPPORTED,
                     "node.db: schema version %d is newer than this meshllm's (%d); "
                     "upgrade meshllm",
                     version, STORE_SCHEMA_VERSION);
    }
    if (rc) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    return exec(s, "COMMIT", "commit schema", err, err_cap);
}

int store_open(const char *dir, struct store **out, char *err, size_t err_cap)
{
    char path[4096];
    int rc = 0;
    struct store *s = NULL;

    *out = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return err_set(err, err_cap, err_from_errno(errno), "cannot create %s: %s", dir,
                       strerror(errno));
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, STORE_FILE_NAME) >= sizeof path)
        return err_set(err, err_cap, MESH_ERANGE, "data directory path too long");
    s = calloc(1, sizeof *s);
    if (!s) return err_set(err, err_cap, MESH_ENOMEM, "node.db: out of memory");
    pthread_mutex_init(&s->mu, NULL);
    int src = sqlite3_open_v2(path, &s->db,
                              SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                              NULL);
    if (src != SQLITE_OK) {
        rc = s->db ? db_fail(s, src, path, err, err_cap)
                   : err_set(err, err_cap, MESH_ENOMEM, "node.db: out of memory");
        goto out;
    }
    sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
    /* WAL: a CLI reading while the node writes does not block; NORMAL sync is durable across
     * process crashes, which is what the store needs (a lost used-invite row after a power cut
     * is the worst case). */
    if ((rc = exec(s, "PRAGMA journal_mode = WAL", "enable WAL", err, err_cap)) ||
        (rc = exec(s, "PRAGMA synchronous = NORMAL", "set synchronous", err, err_cap)) ||
        (rc = exec(s, "PRAGMA foreign_keys = ON", "enable foreign keys", err, err_cap)))
        goto out;
    if ((rc = store_migrate(s, err, err_cap))) goto out;
    for (int i = 0; i < ST_COUNT; i++) {
        src = sqlite3_prepare_v3(s->db, k_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (src != SQLITE_OK) {
            rc = db_fail(s, src, "prepare", err, err_cap);
            goto out;
        }
    }
    chmod(path, 0600); /* the file holds this node's membership; best effort */
    *out = s;
    s = NULL;
out:
    store_close(s);
    return rc;
}

void store_close(struct store *s)
{
    if (!s) return;
    for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Locks s and returns the statement, reset and unbound, ready for binding. */
static sqlite3_stmt *stmt_begin(struct store *s, int which)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *q = s->st[which];
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return q;
}

/* Resets the statement (releasing its read snapshot) and unlocks s. */
static void stmt_end(struct store *s, sqlite3_stmt *q)
{
    sqlite3_reset(q);
    pthread_mutex_unlock(&s->mu);
}

static int bind_blob(sqlite3_stmt *q, int i, const uint8_t *b, size_t len)
{
    /* A zero-length blob still binds as a blob (not NULL): "" is a valid key. */
    return sqlite3_bind_blob64(q, i, len ? (const void *)b : (const void *)"", len, SQLITE_TRANSIENT);
}

/* Copies column i as a malloc'd blob (at least 1 byte allocated). */
static int column_dup(sqlite3_stmt *q, int i, uint8_t **out, size_t *len)
{
    const void *p = sqlite3_column_blob(q, i);
    int n = sqlite3_column_bytes(q, i);
    *out = malloc(n > 0 ? (size_t)n : 1);
    if (!*out) return MESH_ENOMEM;
    if (n > 0) memcpy(*out, p, (size_t)n);
    *len = n > 0 ? (size_t)n : 0;
    return 0;
}

int store_cert_get(struct store *s, uint8_t **out, size_t *out_len, char *err, size_t err_cap)
{
    *out = NULL;
    *out_len = 0;
    sqlite3_stmt *q = stmt_begin(s, ST_CERT_GET);
    int rc, src = sqlite3_step(q);
    if (src == SQLITE_ROW)
        rc = column_dup(q, 0, out, out_len)
                 ? err_set(err, err_cap, MESH_ENOMEM, "node.db: out of memory")
                 : 0;
    else if (src == SQLITE_DONE)
        rc = err_set(err, err_cap, MESH_ENOTFOUND, "this node has no member certificate");
    else
        rc = db_fail(s, src, "read certificate", err, err_cap);
    stmt_end(s, q);
    return rc;
}

/* Runs a statement that returns no rows (bindings already made), then unlocks. */
static int step_done(struct store *s, sqlite3_stmt *q, int brc, const char *what, char *err,
                     size_t err_cap)
{
    int src = brc == SQLITE_OK ? sqlite3_step(q) : brc;
    int rc = src == SQLITE_DONE ? 0 : db_fail(s, src, what, err, err_cap);
    stmt_end(s, q);
    return rc;
}

int store_cert_put(struct store *s, const uint8_t *cert, size_t len, char *err, size_t err_cap)
{
    sqlite3_stmt *q = stmt_begin(s, ST_CERT_PUT);
    return step_done(s, q, bind_blob(q, 1, cert, len), "save certificate", err, err_cap);
}

int store_mesh_reset(struct store *s, char *err, size_t err_cap)
{
    pthread_mutex_lock(&s->mu);
    int rc = exec(s,
                  "BEGIN IMMEDIATE; DELETE FROM my_cert; DELETE FROM used_invites;"
                  " DELETE FROM revocations; COMMIT",
                  "forget the mesh", err, err_cap);
    if (rc) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_invite_use(struct store *s, const uint8_t *id, size_t id_len, const char *peer,
                     uint64_t now, bool *already_used, char *err, size_t err_cap)
{
    *already_used = false;
    if (now > INT64_MAX) return err_set(err, err_cap, MESH_ERANGE, "time out of range");
    sqlite3_stmt *q = stmt_begin(s, ST_INVITE_USE);
    int brc = bind_blob(q, 1, id, id_len);
    if (brc == SQLITE_OK) brc = sqlite3_bind_text(q, 2, peer, -1, SQLITE_TRANSIENT);
    if (brc == SQLITE_OK) brc = sqlite3_bind_int64(q, 3, (sqlite3_int64)now);
    int src = brc == SQLITE_OK ? sqlite3_step(q) : brc;
    int rc = 0;
    if (src == SQLITE_DONE)
        *already_used = sqlite3_changes(s->db) == 0;
    else
        rc = db_fail(s, src, "record used invite", err, err_cap);
    stmt_end(s, q);
    return rc;
}

/* Runs a query with bindings made that returns at most one row; *found tells whether it did
 * and *v gets column 0 as an integer. Unlocks. */
static int step_row(struct store *s, sqlite3_stmt *q, int brc, bool *found, int64_t *v,
                    const char *what, char *err, size_t err_cap)
{
    int src = brc == SQLITE_OK ? sqlite3_step(q) : brc, rc = 0;
    *found = src == SQLITE_ROW;
    if (src == SQLITE_ROW && v) *v = sqlite3_column_int64(q, 0);
    if (src != SQLITE_ROW && src != SQLITE_DONE) rc = db_fail(s, src, what, err, err_cap);
    stmt_end(s, q);
    return rc;
}

int store_invite_is_used(struct store *s, const uint8_t *id, size_t id_len, bool *used,
                         char *err, size_t err_cap)
{
    sqlite3_stmt *q = stmt_begin(s, ST_INVITE_GET);
    return step_row(s, q, bind_blob(q, 1, id, id_len), used, NULL, "read used invites", err,
                    err_cap);
}

int store_revocation_put(struct store *s, const uint8_t owner[32], const uint8_t *peer,
                         size_t peer_len, uint64_t revoked_at, const uint8_t *msg,
                         size_t msg_len, bool *is_new, uint64_t *seq, char *err,
                         size_t err_cap)
{
    *is_new = false;
    if (seq) *seq = 0;
    if (revoked_at > INT64_MAX) return err_set(err, err_cap, MESH_ERANGE, "time out of range");
    sqlite3_stmt *q = stmt_begin(s, ST_REV_PUT);
    int brc = bind_blob(q, 1, owner, 32);
    if (brc == SQLITE_OK) brc = bind_blob(q, 2, peer, peer_len);
    if (brc == SQLITE_OK) brc = sqlite3_bind_int64(q, 3, (sqlite3_int64)revoked_at);
    if (brc == SQLITE_OK) brc = bind_blob(q, 4, msg, msg_len);
    int src = brc == SQLITE_OK ? sqlite3_step(q) : brc;
    if (src != SQLITE_DONE) {
        int rc = db_fail(s, src, "save revocation", err, err_cap);
        stmt_end(s, q);
        return rc;
    }
    *is_new = sqlite3_changes(s->db) != 0;
    stmt_end(s, q);
    if (!seq) return 0;
    bool found;
    int64_t v = 0;
    q = stmt_begin(s, ST_REV_SEQ);
    brc = bind_blob(q, 1, owner, 32);
    if (brc == SQLITE_OK) brc = bind_blob(q, 2, peer, peer_len);
    int rc = step_row(s, q, brc, &found, &v, "read revocation", err, err_cap);
    if (!rc && found && v > 0) *seq = (uint64_t)v;
    return rc;
}

int store_revocation_exists(struct store *s, const uint8_t owner[32], const uint8_t *peer,
                            size_t peer_len, bool *revoked, char *err, size_t err_cap)
{
    sqlite3_stmt *q = stmt_begin(s, ST_REV_SEQ);
    int brc = bind_blob(q, 1, owner, 32);
    if (brc == SQLITE_OK) brc = bind_blob(q, 2, peer, peer_len);
    return step_row(s, q, brc, revoked, NULL, "read revocations", err, err_cap);
}

int store_revocation_count(struct store *s, const uint8_t owner[32], size_t *n, char *err,
                           size_t err_cap)
{
    bool found;
    int64_t v = 0;
    *n = 0;
    sqlite3_stmt *q = stmt_begin(s, ST_REV_COUNT);
    int rc = step_row(s, q, bind_blob(q, 1, owner, 32), &found, &v, "count revocations", err,
                      err_cap);
    if (!rc && found && v > 0) *n = (size_t)v;
    return rc;
}

void store_blobs_free(struct store_blob *b, size_t n)
{
    if (!b) return;
    for (size_t i = 0; i < n; i++) free(b[i].bytes);
    free(b);
}

int store_revocations_since(struct store *s, const uint8_t owner[32], uint64_t after_seq,
                            size_t max, struct store_blob **out, size_t *n, char *err,
                            size_t err_cap)
{
    struct store_blob *v = NULL;
    size_t count = 0;
    int rc = 0, src;

    *out = NULL;
    *n = 0;
    if (max == 0) return 0;
    if (after_seq > INT64_MAX) after_seq = INT64_MAX;
    if (max > (size_t)INT32_MAX) max = INT32_MAX;
    v = calloc(max < 64 ? max : 64, sizeof *v);
    size_t cap = max < 64 ? max : 64;
    if (!v) return err_set(err, err_cap, MESH_ENOMEM, "node.db: out of memory");
    sqlite3_stmt *q = stmt_begin(s, ST_REV_SINCE);
    int brc = bind_blob(q, 1, owner, 32);
    if (brc == SQLITE_OK) brc = sqlite3_bind_int64(q, 2, (sqlite3_int64)after_seq);
    if (brc == SQLITE_OK) brc = sqlite3_bind_int64(q, 3, (sqlite3_int64)max);
    while (brc == SQLITE_OK && (src = sqlite3_step(q)) == SQLITE_ROW) {
        if (count == cap) {
            struct store_blob *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv) {
                rc = err_set(err, err_cap, MESH_ENOMEM, "node.db: out of memory");
                goto out;
            }
            v = nv;
            cap *= 2;
        }
        v[count].seq = (uint64_t)sqlite3_column_int64(q, 0);
        if (column_dup(q, 1, &v[count].bytes, &v[count].len)) {
            rc = err_set(err, err_cap, MESH_ENOMEM, "node.db: out of memory");
            goto out;
        }
        count++;
    }
    if (brc != SQLITE_OK || src != SQLITE_DONE)
        rc = db_fail(s, brc != SQLITE_OK ? brc : src, "read revocations", err, err_cap);
out:
    stmt_end(s, q);
    if (rc) {
        store_blobs_free(v, count);
        return rc;
    }
    if (count == 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    *n = count;
    return 0;
}

int store_listen_addrs_set(struct store *s, const struct multiaddr *addrs, size_t n, char *err,
                           size_t err_cap)
{
    int rc;
    if (n > STORE_MAX_LISTEN_ADDRS) n = STORE_MAX_LISTEN_ADDRS;
    pthread_mutex_lock(&s->mu);
    /* One transaction: a reader sees the old list or the new one, never half. */
    if ((rc = exec(s, "BEGIN IMMEDIATE", "begin", err, err_cap))) goto unlock;
    sqlite3_stmt *q = s->st[ST_ADDR_CLEAR];
    sqlite3_reset(q);
    int src = sqlite3_step(q);
    sqlite3_reset(q);
    for (size_t i = 0; src == SQLITE_DONE && i < n; i++) {
        q = s->st[ST_ADDR_ADD];
        sqlite3_reset(q);
        src = sqlite3_bind_int64(q, 1, (sqlite3_int64)i);
        if (src == SQLITE_OK) src = bind_blob(q, 2, addrs[i].bytes, addrs[i].len);
        if (src == SQLITE_OK) src = sqlite3_step(q);
        sqlite3_reset(q);
    }
    if (src != SQLITE_DONE) {
        rc = db_fail(s, src, "save listen addresses", err, err_cap);
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        goto unlock;
    }
    rc = exec(s, "COMMIT", "save listen addresses", err, err_cap);
    if (rc) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
unlock:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_listen_addrs_get(struct store *s, struct multiaddr *out, size_t cap, size_t *n,
                           char *err, size_t err_cap)
{
    int src, rc = 0;
    *n = 0;
    sqlite3_stmt *q = stmt_begin(s, ST_ADDR_GET);
    while ((src = sqlite3_step(q)) == SQLITE_ROW && *n < cap) {
        /* Written by the node, but the file is on disk: re-validate before use. */
        const uint8_t *b = sqlite3_column_blob(q, 0);
        int len = sqlite3_column_bytes(q, 0);
        if (len > 0 && multiaddr_from_bytes(b, (size_t)len, &out[*n]) == 0) (*n)++;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = db_fail(s, src, "read listen addresses", err, err_cap);
    stmt_end(s, q);
    return rc;
}

int store_peer_put(struct store *s, const struct store_peer *p, char *err, size_t err_cap)
{
    sqlite3_stmt *q = stmt_begin(s, ST_PEER_PUT);
    int brc = sqlite3_bind_text(q, 1, p->peer_id, -1, SQLITE_TRANSIENT);
    if (brc == SQLITE_OK) brc = sqlite3_bind_text(q, 2, p->addrs ? p->addrs : "", -1, SQLITE_TRANSIENT);
    if (brc == SQLITE_OK)
        brc = p->record_len ? bind_blob(q, 3, p->record, p->record_len) : sqlite3_bind_null(q, 3);
    if (brc == SQLITE_OK) brc = sqlite3_bind_int64(q, 4, p->last_seen);
    if (brc == SQLITE_OK) brc = sqlite3_bind_int64(q, 5, p->rtt_us);
    if (brc == SQLITE_OK) brc = sqlite3_bind_int64(q, 6, p->n_ok);
    if (brc == SQLITE_OK) brc = sqlite3_bind_int64(q, 7, p->n_fail);
    if (brc == SQLITE_OK) brc = sqlite3_bind_int64(q, 8, p->n_lies);
    return step_done(s, q, brc, "save peer", err, err_cap);
}

void store_peers_free(struct store_peer *p, size_t n)
{
    if (!p) return;
    for (size_t i = 0; i < n; i++) {
        free(p[i].addrs);
        free(p[i].record);
    }
    free(p);
}

/* Fills one peer row from the current result row. */
static int peer_from_row(sqlite3_stmt *q, struct store_peer *p)
{
    const char *id = (const char *)sqlite3_column_text(q, 0);
    const char *addrs = (const char *)sqlite3_column_text(q, 1);
    snprintf(p->peer_id, sizeof p->peer_id, "%s", id ? id : "");
    p->addrs = strdup(addrs ? addrs : "");
    if (!p->addrs) return MESH_ENOMEM;
    if (sqlite3_column_type(q, 2) != SQLITE_NULL && sqlite3_column_bytes(q, 2) > 0 &&
        column_dup(q, 2, &p->record, &p->record_len))
        return MESH_ENOMEM;
    p->last_seen = sqlite3_column_int64(q, 3);
    p->rtt_us = sqlite3_column_int64(q, 4);
    p->n_ok = sqlite3_column_int64(q, 5);
    p->n_fail = sqlite3_column_int64(q, 6);
    p->n_lies = sqlite3_column_int64(q, 7);
    return 0;
}

int store_peers_load(struct store *s, struct store_peer **out, size_t *n, char *err,
                     size_t err_cap)
{
    struct store_peer *v = NULL;
    size_t count = 0, cap = 0;
    int rc = 0, src;

    *out = NULL;
    *n = 0;
    sqlite3_stmt *q = stmt_begin(s, ST_PEER_LOAD);
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
        if (count == cap) {
            size_t ncap = cap ? 2 * cap : 32;
            struct store_peer *nv = realloc(v, ncap * sizeof *v);
            if (!nv) {
                rc = err_set(err, err_cap, MESH_ENOMEM, "node.db: out of memory");
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        memset(&v[count], 0, sizeof v[count]);
        count++; /* counted first: a half-filled row is freed with the rest */
        if (peer_from_row(q, &v[count - 1])) {
            rc = err_set(err, err_cap, MESH_ENOMEM, "node.db: out of memory");
            goto out;
        }
    }
    if (src != SQLITE_DONE) rc = db_fail(s, src, "read peers", err, err_cap);
out:
    stmt_end(s, q);
    if (rc) {
        store_peers_free(v, count);
        return rc;
    }
    *out = v;
    *n = count;
    return 0;
}
