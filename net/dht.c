/* dht.c - libp2p Kademlia DHT protocol core (see dht.h; spec: libp2p/specs kad-dht/README.md).
 *
 * Routing table: one bucket per common-prefix length (CPL) with our own key, k entries each,
 * allocated on first use (equivalent to the spec's split-on-demand table). Lookups keep a
 * candidate list sorted by XOR distance to the target; they send to the closest unqueried
 * candidates while fewer than alpha requests are in flight and end when the k closest
 * candidates that have not failed have all answered (kad-dht "Peer routing"). Records and
 * provider records live in flat arrays searched linearly: a node stores thousands, not
 * millions. No I/O, no clock, no global state.
 */
#include "net/dht.h"
#include "net/dht_internal.h"

#include "core/err.h"
#include "core/rng.h"
#include "net/identity.h"
#include "net/varint.h"

#include "dht.pb-c.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_BUCKETS 256
#define REFRESH_CPL_MAX 15       /* like go-libp2p-kad-dht: refresh buckets up to CPL 15 */
#define QUERY_CANDS_MAX 200      /* candidates kept per lookup */
#define VALIDATORS_MAX 8
#define EXPIRY_SWEEP_MS 60000
#define RECORD_TIME_MAX 64       /* longest timeReceived string accepted */
#define PING_STALE_MS 60000      /* a full bucket pings its oldest entry if unseen this long */

enum { C_NEW = 0, C_WAIT, C_DONE, C_FAIL };
enum { Q_FIND_NODE = 0, Q_GET_VALUE, Q_GET_PROVIDERS, Q_PUT_VALUE, Q_PROVIDE };
enum { PHASE_LOOKUP = 0, PHASE_STORE };

struct dht_entry {
    struct peer_id id;
    uint8_t key[DHT_KEY_LEN];
    uint64_t last_seen_ms;
    size_t n_addrs;
    struct multiaddr *addrs; /* malloc'd, n_addrs */
};

struct dht_bucket {
    struct dht_entry *e; /* DHT_K slots, malloc'd on first use */
    size_t n;
    uint64_t refreshed_ms;
    struct dht_peer *repl; /* replacement cache, DHT_REPLACEMENTS slots, newest last */
    size_t n_repl;
};

struct dht_cand {
    struct dht_peer p;
    uint8_t dist[DHT_KEY_LEN];
    uint8_t state;
    uint8_t hop;
};

struct dht_query {
    uint64_t id;
    int kind, status, phase;
    bool is_internal; /* started by the core itself (refresh): released when done */
    uint8_t target[DHT_KEY_LEN];
    uint8_t *key;
    size_t key_len;
    uint8_t *val; /* PUT_VALUE record value */
    size_t val_len;
    struct dht_peer self_info; /* ADD_PROVIDER */
    struct dht_cand *c;        /* sorted by dist, QUERY_CANDS_MAX slots */
    size_t n_c;
    size_t n_inflight;
    size_t quorum;
    uint8_t *vals[DHT_QUERY_VALUES_MAX];
    size_t val_lens[DHT_QUERY_VALUES_MAX];
    size_t n_vals;
    struct dht_peer *prov; /* GET_PROVIDERS results, prov_max slots */
    size_t n_prov, prov_max;
    size_t n_stored; /* STORE phase acknowledgements */
    struct dht_query_stats st;
};

struct dht_pending {
    uint64_t req_id, qid;
    struct peer_id peer;
    uint64_t deadline_ms;
};

struct dht {
    struct dht_config cfg;
    char protocol[64];
    uint8_t self_key[DHT_KEY_LEN];
    struct rng rng;
    bool has_time;
    uint64_t next_sweep_ms;
    struct dht_bucket b[N_BUCKETS];
    size_t n_table, n_repl;
    uint64_t n_table_refused, n_table_replaced;
    struct dht_validator val[VALIDATORS_MAX];
    size_t n_val;
    struct dht_store st; /* records and provider records (dht_store.c) */
    struct dht_query **q;
    size_t n_q, cap_q;
    uint64_t next_qid, next_req_id;
    struct dht_pending *pend;
    size_t n_pend, cap_pend;
    struct dht_request *out; /* FIFO: out[out_head .. n_out) */
    size_t out_head, n_out, cap_out;
};

/* ---- small helpers ------------------------------------------------------------------- */


void dht_key_of(const uint8_t *b, size_t len, uint8_t key[DHT_KEY_LEN])
{
    crypto_hash_sha256(key, b, len);
}

static void xor_dist(const uint8_t *a, const uint8_t *b, uint8_t *out)
{
    for (int i = 0; i < DHT_KEY_LEN; i++) out[i] = a[i] ^ b[i];
}

static int cpl_of(const uint8_t *a, const uint8_t *b)
{
    for (int i = 0; i < DHT_KEY_LEN; i++) {
        uint8_t x = a[i] ^ b[i];
        if (x) return i * 8 + __builtin_clz(x) - 24;
    }
    return N_BUCKETS;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np) return MESH_ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

static uint8_t *dup_bytes(const uint8_t *b, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    if (p && len) memcpy(p, b, len);
    return p;
}

static bool bytes_eq(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

/* ---- routing table ------------------------------------------------------------------- */

static struct dht_entry *table_find(struct dht *d, const struct peer_id *id, const uint8_t *key)
{
    int cpl = cpl_of(key, d->self_key);
    if (cpl >= N_BUCKETS) return NULL;
    struct dht_bucket *b = &d->b[cpl];
    for (size_t i = 0; i < b->n; i++)
        if (peer_id_equal(&b->e[i].id, id)) return &b->e[i];
    return NULL;
}

static void entry_set_addrs(struct dht_entry *e, const struct dht_peer *p)
{
    if (p->n_addrs == 0) return; /* keep what we knew */
    struct multiaddr *a = malloc(p->n_addrs * sizeof *a);
    if (!a) return;
    memcpy(a, p->addrs, p->n_addrs * sizeof *a);
    free(e->addrs);
    e->addrs = a;
    e->n_addrs = p->n_addrs;
}

static void ping_queue(struct dht *d, uint64_t now_ms, const struct dht_entry *e);

/* Remembers a newcomer a full bucket turned away (Kademlia's replacement cache): newest
 * last, the oldest forgotten when the cache is full. */
static void repl_add(struct dht *d, struct dht_bucket *b, const struct dht_peer *p)
{
    if (!b->repl) {
        b->repl = malloc(DHT_REPLACEMENTS * sizeof *b->repl);
        if (!b->repl) return;
    }
    size_t i = 0;
    while (i < b->n_repl && !peer_id_equal(&b->repl[i].id, &p->id)) i++;
    if (i == b->n_repl && b->n_repl == DHT_REPLACEMENTS) i = 0; /* forget the oldest */
    else if (i == b->n_repl) {
        b->n_repl++;
        d->n_repl++;
    }
    memmove(&b->repl[i], &b->repl[i + 1], (b->n_repl - 1 - i) * sizeof *b->repl);
    b->repl[b->n_repl - 1] = *p;
}

static void entry_init(struct dht *d, struct dht_bucket *b, uint64_t now_ms,
                       const struct dht_peer *p, const uint8_t *key)
{
    struct dht_entry *e = &b->e[b->n++];
    memset(e, 0, sizeof *e);
    e->id = p->id;
    memcpy(e->key, key, DHT_KEY_LEN);
    e->last_seen_ms = now_ms;
    entry_set_addrs(e, p);
    d->n_table++;
}

/* Adds or refreshes a server-mode peer. A full bucket keeps its entries (Kademlia prefers
 * long-lived peers, so a flood of new identities cannot push live ones out): the newcomer
 * waits in the replacement cache and the entry seen longest ago is pinged if it has been
 * quiet for PING_STALE_MS; if that ping fails, dht_peer_remove promotes the newest
 * replacement. */
static void table_add(struct dht *d, uint64_t now_ms, const struct dht_peer *p)
{
    uint8_t key[DHT_KEY_LEN];
    if (p->id.len == 0) return;
    dht_key_of(p->id.bytes, p->id.len, key);
    int cpl = cpl_of(key, d->self_key);
    if (cpl >= N_BUCKETS) return; /* ourselves */
    struct dht_entry *e = table_find(d, &p->id, key);
    if (e) {
        e->last_seen_ms = now_ms;
        entry_set_addrs(e, p);
        return;
    }
    struct dht_bucket *b = &d->b[cpl];
    if (!b->e) {
        b->e = calloc(DHT_K, sizeof *b->e);
        if (!b->e) return;
    }
    if (b->n < DHT_K) {
        entry_init(d, b, now_ms, p, key);
        return;
    }
    d->n_table_refused++;
    repl_add(d, b, p);
    struct dht_entry *oldest = &b->e[0];
    for (size_t i = 1; i < b->n; i++)
        if (b->e[i].last_seen_ms < oldest->last_seen_ms) oldest = &b->e[i];
    if (oldest->last_seen_ms + PING_STALE_MS <= now_ms) ping_queue(d, now_ms, oldest);
}

/* A ping from the table itself (no query) was answered: the peer is alive. */
static void table_touch(struct dht *d, uint64_t now_ms, const struct peer_id *id)
{
    uint8_t key[DHT_KEY_LEN];
    dht_key_of(id->bytes, id->len, key);
    struct dht_entry *e = table_find(d, id, key);
    if (e) e->last_seen_ms = now_ms;
}

void dht_peer_remove(struct dht *d, const struct peer_id *id)
{
    uint8_t key[DHT_KEY_LEN];
    dht_key_of(id->bytes, id->len, key);
    int cpl = cpl_of(key, d->self_key);
    if (cpl >= N_BUCKETS) return;
    struct dht_bucket *b = &d->b[cpl];
    for (size_t i = 0; i < b->n_repl; i++) /* a failing peer is no replacement either */
        if (peer_id_equal(&b->repl[i].id, id)) {
            memmove(&b->repl[i], &b->repl[i + 1], (b->n_repl - 1 - i) * sizeof *b->repl);
            b->n_repl--;
            d->n_repl--;
            break;
        }
    for (size_t i = 0; i < b->n; i++) {
        if (!peer_id_equal(&b->e[i].id, id)) continue;
        free(b->e[i].addrs);
        b->e[i] = b->e[--b->n];
        d->n_table--;
        if (b->n_repl) { /* the newest replacement takes the free slot */
            struct dht_peer r = b->repl[--b->n_repl];
            uint8_t rk[DHT_KEY_LEN];
            d->n_repl--;
            dht_key_of(r.id.bytes, r.id.len, rk);
            entry_init(d, b, 0, &r, rk);
            b->e[b->n - 1].last_seen_ms = 0; /* not seen by us yet: the first to be pinged */
            d->n_table_replaced++;
        }
        return;
    }
}

static void entry_to_peer(const struct dht_entry *e, struct dht_peer *p)
{
    memset(p, 0, sizeof *p);
    p->id = e->id;
    p->n_addrs = e->n_addrs < DHT_PEER_ADDRS_MAX ? e->n_addrs : DHT_PEER_ADDRS_MAX;
    for (size_t i = 0; i < p->n_addrs; i++) p->addrs[i] = e->addrs[i];
}

size_t dht_table_size(const struct dht *d) { return d->n_table; }

/* The n_max entries closest to key, as pointers, by insertion into a sorted array. */
static size_t table_closest_ptrs(const struct dht *d, const uint8_t *key,
                                 const struct dht_entry **out, uint8_t (*dist)[DHT_KEY_LEN],
                                 size_t n_max)
{
    size_t n = 0;
    for (int bi = 0; bi < N_BUCKETS; bi++) {
        const struct dht_bucket *b = &d->b[bi];
        for (size_t i = 0; i < b->n; i++) {
            uint8_t dd[DHT_KEY_LEN];
            xor_dist(b->e[i].key, key, dd);
            if (n == n_max && memcmp(dd, dist[n - 1], DHT_KEY_LEN) >= 0) continue;
            size_t j = n < n_max ? n++ : n - 1;
            while (j > 0 && memcmp(dd, dist[j - 1], DHT_KEY_LEN) < 0) {
                out[j] = out[j - 1];
                memcpy(dist[j], dist[j - 1], DHT_KEY_LEN);
                j--;
            }
            out[j] = &b->e[i];
            memcpy(dist[j], dd, DHT_KEY_LEN);
        }
    }
    return n;
}

size_t dht_table_closest(const struct dht *d, const uint8_t key[DHT_KEY_LEN],
                         struct dht_peer *out, size_t n_max)
{
    const struct dht_entry *e[DHT_K * 2];
    uint8_t dist[DHT_K * 2][DHT_KEY_LEN];
    if (n_max > DHT_K * 2) n_max = DHT_K * 2;
    size_t n = table_closest_ptrs(d, key, e, dist, n_max);
    for (size_t i = 0; i < n; i++) entry_to_peer(e[i], &out[i]);
    return n;
}

void dht_peer_connected(struct dht *d, uint64_t now_ms, const struct dht_peer *p, bool is_server)
{
    if (is_server) table_add(d, now_ms, p);
}

void dht_peer_disconnected(struct dht *d, uint64_t now_ms, const struct peer_id *id)
{
    (void)d;
    (void)now_ms;
    (void)id;
}

/* ---- wire codec ---------------------------------------------------------------------- */

int dht_frame_split(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len,
                    size_t *used)
{
    uint64_t n;
    size_t vlen;
    *body = NULL;
    *body_len = 0;
    *used = 0;
    int rc = varint_decode(buf, len, &n, &vlen);
    if (rc < 0) return rc;
    if (n > DHT_MSG_MAX_LEN) return MESH_ERANGE;
    if (len - vlen < n) return MESH_EAGAIN;
    *body = buf + vlen;
    *body_len = (size_t)n;
    *used = vlen + (size_t)n;
    return 0;
}

/* Packs m with its uvarint length prefix into a malloc'd buffer. */
static int msg_pack(const Dht__Pb__Message *m, uint8_t **out, size_t *out_len)
{
    size_t n = dht__pb__message__get_packed_size(m);
    *out = NULL;
    *out_len = 0;
    if (n > DHT_MSG_MAX_LEN) return MESH_ERANGE;
    uint8_t *b = malloc(n + VARINT_MAX_LEN);
    if (!b) return MESH_ENOMEM;
    size_t v = varint_encode(n, b);
    dht__pb__message__pack(m, b + v);
    *out = b;
    *out_len = v + n;
    return 0;
}

/* Validates a decoded peer entry and converts it. Unsupported or oversized addresses (quic,
 * webtransport...) are skipped; a malformed one rejects the message. */
static int peer_from_pb(const Dht__Pb__Message__Peer *pp, struct dht_peer *out)
{
    memset(out, 0, sizeof *out);
    if (peer_id_from_bytes(pp->id.data, pp->id.len, &out->id) < 0) return MESH_EPROTO;
    if (pp->n_addrs > DHT_MSG_ADDRS_MAX) return MESH_EPROTO;
    for (size_t i = 0; i < pp->n_addrs; i++) {
        struct multiaddr ma;
        int rc = multiaddr_from_bytes(pp->addrs[i].data, pp->addrs[i].len, &ma);
        if (rc == MESH_EPROTO) return MESH_EPROTO;
        if (rc < 0 || out->n_addrs == DHT_PEER_ADDRS_MAX) continue;
        out->addrs[out->n_addrs++] = ma;
    }
    return 0;
}

static int peers_check(Dht__Pb__Message__Peer **pp, size_t n)
{
    struct dht_peer p;
    if (n > DHT_MSG_PEERS_MAX) return MESH_EPROTO;
    for (size_t i = 0; i < n; i++)
        if (peer_from_pb(pp[i], &p) < 0) return MESH_EPROTO;
    return 0;
}

/* Every field of a message from a peer, before anything uses it. */
static int msg_validate(const Dht__Pb__Message *m)
{
    if ((int)m->type < DHT_MSG_PUT_VALUE || (int)m->type > DHT_MSG_PING) return MESH_EPROTO;
    if (m->key.len > DHT_RECORD_KEY_MAX) return MESH_EPROTO;
    if (m->record) {
        const Dht__Pb__Record *r = m->record;
        if (r->key.len > DHT_RECORD_KEY_MAX || r->value.len > DHT_RECORD_VALUE_MAX)
            return MESH_EPROTO;
        if (r->timereceived && strlen(r->timereceived) > RECORD_TIME_MAX) return MESH_EPROTO;
    }
    if (peers_check(m->closerpeers, m->n_closerpeers) < 0) return MESH_EPROTO;
    if (peers_check(m->providerpeers, m->n_providerpeers) < 0) return MESH_EPROTO;
    return 0;
}

static int msg_decode(const uint8_t *msg, size_t msg_len, Dht__Pb__Message **out)
{
    *out = NULL;
    if (msg_len > DHT_MSG_MAX_LEN) return MESH_EPROTO;
    Dht__Pb__Message *m = dht__pb__message__unpack(NULL, msg_len, msg);
    if (!m) return MESH_EPROTO;
    if (msg_validate(m) < 0) {
        dht__pb__message__free_unpacked(m, NULL);
        return MESH_EPROTO;
    }
    *out = m;
    return 0;
}

int dht_msg_check(const uint8_t *msg, size_t msg_len)
{
    Dht__Pb__Message *m;
    int rc = msg_decode(msg, msg_len, &m);
    if (m) dht__pb__message__free_unpacked(m, NULL);
    return rc;
}

/* Storage for the protobuf view of up to n peers (closer + provider lists). */
struct pb_peers {
    struct dht_peer copy[DHT_K * 2]; /* the protobuf view points into these */
    Dht__Pb__Message__Peer pb[DHT_K * 2];
    Dht__Pb__Message__Peer *ptr[DHT_K * 2];
    ProtobufCBinaryData addrs[DHT_K * 2][DHT_PEER_ADDRS_MAX];
    size_t n;
};

static void pb_peers_add(struct pb_peers *pp, const struct dht_peer *p)
{
    if (pp->n == DHT_K * 2) return;
    pp->copy[pp->n] = *p;
    p = &pp->copy[pp->n];
    Dht__Pb__Message__Peer *q = &pp->pb[pp->n];
    dht__pb__message__peer__init(q);
    q->id.data = (uint8_t *)p->id.bytes;
    q->id.len = p->id.len;
    for (size_t i = 0; i < p->n_addrs; i++) {
        pp->addrs[pp->n][i].data = (uint8_t *)p->addrs[i].bytes;
        pp->addrs[pp->n][i].len = p->addrs[i].len;
    }
    q->n_addrs = p->n_addrs;
    q->addrs = pp->addrs[pp->n];
    pp->ptr[pp->n] = q;
    pp->n++;
}

/* ---- records and validators ---------------------------------------------------------- */

static const struct dht_validator *validator_for(const struct dht *d, const uint8_t *key,
                                                 size_t key_len)
{
    if (key_len < 2 || key[0] != '/') return NULL;
    const uint8_t *end = memchr(key + 1, '/', key_len - 1);
    if (!end) return NULL;
    size_t ns_len = (size_t)(end - key - 1);
    for (size_t i = 0; i < d->n_val; i++)
        if (strlen(d->val[i].ns) == ns_len && memcmp(d->val[i].ns, key + 1, ns_len) == 0)
            return &d->val[i];
    return NULL;
}

static int record_validate(const struct dht *d, const uint8_t *key, size_t key_len,
                           const uint8_t *val, size_t val_len)
{
    const struct dht_validator *v = validator_for(d, key, key_len);
    if (!v) return MESH_EPROTO; /* unknown namespaces are refused, as in go-libp2p-record */
    if (val_len > DHT_RECORD_VALUE_MAX) return MESH_EPROTO;
    return v->validate(v->ud, key, key_len, val, val_len);
}

/* Index of the better of existing values (select). */
static size_t record_select(const struct dht *d, const uint8_t *key, size_t key_len,
                            const uint8_t *const *vals, const size_t *lens, size_t n)
{
    const struct dht_validator *v = validator_for(d, key, key_len);
    if (!v || !v->select || n <= 1) return 0;
    size_t i = v->select(v->ud, key, key_len, vals, lens, n);
    return i < n ? i : 0;
}

static struct dht_record *record_find(const struct dht *d, const uint8_t *key, size_t key_len)
{
    return dht_store_record_find(&d->st, key, key_len);
}

/* Stores a validated record from `from`, keeping the better one if we already hold a value
 * (a worse or equal value only refreshes ours). */
static int record_store(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                        const uint8_t *val, size_t val_len, const struct peer_id *from)
{
    struct dht_record *r = record_find(d, key, key_len);
    if (r) {
        const uint8_t *vals[2] = {r->val, val};
        size_t lens[2] = {r->val_len, val_len};
        if (bytes_eq(r->val, r->val_len, val, val_len) ||
            record_select(d, key, key_len, vals, lens, 2) == 0) {
            r->expires_ms = now_ms + d->cfg.record_ttl_ms; /* keep ours, it is as good */
            return 0;
        }
    }
    return dht_store_record_put(&d->st, now_ms, key, key_len, val, val_len, from);
}

int dht_record_get(const struct dht *d, const uint8_t *key, size_t key_len, const uint8_t **val,
                   size_t *val_len)
{
    const struct dht_record *r = record_find(d, key, key_len);
    *val = NULL;
    *val_len = 0;
    if (!r) return MESH_ENOTFOUND;
    *val = r->val;
    *val_len = r->val_len;
    return 0;
}

/* /pk/<multihash>: value is the PublicKey protobuf whose peer ID is that multihash. */
int dht_validate_pk(void *ud, const uint8_t *key, size_t key_len, const uint8_t *val,
                    size_t val_len)
{
    struct peer_id want, got;
    (void)ud;
    if (key_len < 5 || memcmp(key, "/pk/", 4) != 0) return MESH_EPROTO;
    if (peer_id_from_bytes(key + 4, key_len - 4, &want) < 0) return MESH_EPROTO;
    if (val_len == 0 || peer_id_from_pubkey_proto(val, val_len, &got) < 0) return MESH_EPROTO;
    return peer_id_equal(&want, &got) ? 0 : MESH_ECRYPTO;
}

#define MESHLLM_NS "/meshllm/"
#define MESHLLM_SIG_CTX "meshllm-record:"
#define MESHLLM_HDR (1 + 8 + IDENTITY_SIG_LEN)

/* Splits "/meshllm/<b58 id>/<name>" and finds the owner's ID. */
static int meshllm_key_owner(const uint8_t *key, size_t key_len, struct peer_id *owner)
{
    size_t ns = sizeof MESHLLM_NS - 1;
    if (key_len <= ns || memcmp(key, MESHLLM_NS, ns) != 0) return MESH_EPROTO;
    const uint8_t *slash = memchr(key + ns, '/', key_len - ns);
    if (!slash || slash == key + ns || slash == key + key_len - 1) return MESH_EPROTO;
    return peer_id_from_text((const char *)key + ns, (size_t)(slash - key - ns), owner) < 0
               ? MESH_EPROTO
               : 0;
}

/* The bytes the owner signs: context || key || seq || data. */
static uint8_t *meshllm_signed_bytes(const uint8_t *key, size_t key_len, const uint8_t *seq8,
                                     const uint8_t *data, size_t data_len, size_t *len)
{
    size_t ctx = sizeof MESHLLM_SIG_CTX - 1;
    *len = ctx + key_len + 8 + data_len;
    uint8_t *b = malloc(*len);
    if (!b) return NULL;
    memcpy(b, MESHLLM_SIG_CTX, ctx);
    memcpy(b + ctx, key, key_len);
    memcpy(b + ctx + key_len, seq8, 8);
    if (data_len) memcpy(b + ctx + key_len + 8, data, data_len);
    return b;
}

int dht_validate_meshllm(void *ud, const uint8_t *key, size_t key_len, const uint8_t *val,
                         size_t val_len)
{
    struct peer_id owner;
    const uint8_t *pub;
    size_t pub_len, sb_len;
    (void)ud;
    if (meshllm_key_owner(key, key_len, &owner) < 0) return MESH_EPROTO;
    if (val_len < MESHLLM_HDR || val[0] != 1) return MESH_EPROTO;
    if (peer_id_pubkey_proto(&owner, &pub, &pub_len) < 0) return MESH_EPROTO;
    uint8_t *sb = meshllm_signed_bytes(key, key_len, val + 1, val + MESHLLM_HDR,
                                       val_len - MESHLLM_HDR, &sb_len);
    if (!sb) return MESH_ENOMEM;
    int rc = identity_verify(pub, pub_len, sb, sb_len, val + 9, IDENTITY_SIG_LEN);
    free(sb);
    return rc < 0 ? MESH_ECRYPTO : 0;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

static size_t select_meshllm(void *ud, const uint8_t *key, size_t key_len,
                             const uint8_t *const *vals, const size_t *lens, size_t n)
{
    size_t best = 0;
    (void)ud;
    (void)key;
    (void)key_len;
    for (size_t i = 1; i < n; i++)
        if (lens[i] >= MESHLLM_HDR && lens[best] >= MESHLLM_HDR &&
            be64(vals[i] + 1) > be64(vals[best] + 1))
            best = i;
    return best;
}

int dht_meshllm_record_make(const struct identity *id, const char *name, uint64_t seq,
                            const uint8_t *data, size_t data_len, uint8_t *key, size_t key_cap,
                            size_t *key_len, uint8_t *val, size_t val_cap, size_t *val_len)
{
    char idt[PEER_ID_TEXT_CAP];
    size_t sb_len;
    *key_len = 0;
    *val_len = 0;
    if (!name || !*name || strchr(name, '/')) return MESH_EINVAL;
    if (peer_id_to_text(&id->id, idt, sizeof idt) < 0) return MESH_EINVAL;
    size_t kl = strlen(MESHLLM_NS) + strlen(idt) + 1 + strlen(name);
    if (kl > key_cap || kl > DHT_RECORD_KEY_MAX) return MESH_ERANGE;
    if (data_len > DHT_RECORD_VALUE_MAX - MESHLLM_HDR || MESHLLM_HDR + data_len > val_cap)
        return MESH_ERANGE;
    memcpy(key, MESHLLM_NS, strlen(MESHLLM_NS));
    memcpy(key + strlen(MESHLLM_NS), idt, strlen(idt));
    key[strlen(MESHLLM_NS) + strlen(idt)] = '/';
    memcpy(key + strlen(MESHLLM_NS) + strlen(idt) + 1, name, strlen(name));
    val[0] = 1;
    for (int i = 0; i < 8; i++) val[1 + i] = (uint8_t)(seq >> (56 - 8 * i));
    if (data_len) memcpy(val + MESHLLM_HDR, data, data_len);
    uint8_t *sb = meshllm_signed_bytes(key, kl, val + 1, data, data_len, &sb_len);
    if (!sb) return MESH_ENOMEM;
    identity_sign(id, sb, sb_len, val + 9);
    free(sb);
    *key_len = kl;
    *val_len = MESHLLM_HDR + data_len;
    return 0;
}

int dht_validator_add(struct dht *d, const struct dht_validator *v)
{
    for (size_t i = 0; i < d->n_val; i++)
        if (strcmp(d->val[i].ns, v->ns) == 0) {
            d->val[i] = *v;
            return 0;
        }
    if (d->n_val == VALIDATORS_MAX) return MESH_EFULL;
    d->val[d->n_val++] = *v;
    return 0;
}

/* ---- provider records ---------------------------------------------------------------- */

static const struct dht_prov_key *prov_find(const struct dht *d, const uint8_t *key,
                                            size_t key_len)
{
    return dht_store_prov_find(&d->st, key, key_len);
}

size_t dht_providers_count(const struct dht *d, uint64_t now_ms, const uint8_t *key,
                           size_t key_len)
{
    const struct dht_prov_key *k = prov_find(d, key, key_len);
    size_t n = 0;
    if (!k) return 0;
    for (size_t i = 0; i < k->n; i++) n += k->v[i].expires_ms > now_ms;
    return n;
}

void dht_stats(const struct dht *d, struct dht_stats *st)
{
    memset(st, 0, sizeof *st);
    dht_store_stats(&d->st, st);
    st->n_table = d->n_table;
    st->n_replacements = d->n_repl;
    st->n_table_refused = d->n_table_refused;
    st->n_table_replaced = d->n_table_replaced;
}

/* ---- server side --------------------------------------------------------------------- */

/* Up to k table peers closest to SHA-256(key), without `skip` (the requester). */
static void closer_peers(const struct dht *d, const uint8_t *key, size_t key_len,
                         const struct peer_id *skip, struct pb_peers *pp, size_t *n_out)
{
    uint8_t target[DHT_KEY_LEN];
    const struct dht_entry *e[DHT_K + 1];
    uint8_t dist[DHT_K + 1][DHT_KEY_LEN];
    dht_key_of(key, key_len, target);
    size_t n = table_closest_ptrs(d, target, e, dist, DHT_K + 1), added = 0;
    for (size_t i = 0; i < n && added < DHT_K; i++) {
        if (skip && peer_id_equal(&e[i]->id, skip)) continue;
        struct dht_peer p;
        entry_to_peer(e[i], &p);
        pb_peers_add(pp, &p);
        added++;
    }
    *n_out = added;
}

/* PUT_VALUE: the record's key must be the message key; valid records are stored and the
 * request is echoed back (spec: "the response is the same as the request"). */
static int handle_put(struct dht *d, uint64_t now_ms, const struct dht_peer *from,
                      const Dht__Pb__Message *m,
                      const uint8_t *msg, size_t msg_len, uint8_t **resp, size_t *resp_len)
{
    const Dht__Pb__Record *r = m->record;
    if (!r || !bytes_eq(r->key.data, r->key.len, m->key.data, m->key.len)) return MESH_EPROTO;
    int rc = record_validate(d, r->key.data, r->key.len, r->value.data, r->value.len);
    if (rc < 0) return rc;
    rc = record_store(d, now_ms, r->key.data, r->key.len, r->value.data, r->value.len,
                      &from->id);
    if (rc < 0 && rc != MESH_EFULL) return rc;
    uint8_t *b = malloc(msg_len + VARINT_MAX_LEN);
    if (!b) return MESH_ENOMEM;
    size_t v = varint_encode(msg_len, b);
    memcpy(b + v, msg, msg_len);
    *resp = b;
    *resp_len = v + msg_len;
    return 0;
}

/* ADD_PROVIDER: only the sender may announce itself (spec: "MUST ... match the sender"). */
static int handle_add_provider(struct dht *d, uint64_t now_ms, const struct dht_peer *from,
                               const Dht__Pb__Message *m)
{
    if (m->key.len == 0) return MESH_EPROTO;
    for (size_t i = 0; i < m->n_providerpeers; i++) {
        struct dht_peer p;
        if (peer_from_pb(m->providerpeers[i], &p) < 0) return MESH_EPROTO;
        if (!peer_id_equal(&p.id, &from->id)) continue;
        if (p.n_addrs == 0) {
            p.n_addrs = from->n_addrs;
            memcpy(p.addrs, from->addrs, sizeof p.addrs);
        }
        int rc = dht_store_prov_add(&d->st, now_ms, m->key.data, m->key.len, &p);
        if (rc < 0 && rc != MESH_EFULL) return rc;
    }
    return 0;
}

int dht_handle_request(struct dht *d, uint64_t now_ms, const struct dht_peer *from,
                       const uint8_t *msg, size_t msg_len, uint8_t **resp, size_t *resp_len)
{
    Dht__Pb__Message *m = NULL, out = DHT__PB__MESSAGE__INIT;
    Dht__Pb__Record rec = DHT__PB__RECORD__INIT;
    struct pb_peers *pp = NULL;
    size_t n_closer = 0;
    int rc;

    *resp = NULL;
    *resp_len = 0;
    if (!d->cfg.is_server) return MESH_EUNSUPPORTED;
    rc = msg_decode(msg, msg_len, &m);
    if (rc < 0) goto done;
    out.type = m->type;
    out.key = m->key;
    if ((int)m->type == DHT_MSG_PUT_VALUE) {
        rc = handle_put(d, now_ms, from, m, msg, msg_len, resp, resp_len);
        goto done;
    }
    if ((int)m->type == DHT_MSG_ADD_PROVIDER) {
        rc = handle_add_provider(d, now_ms, from, m);
        goto done;
    }
    pp = calloc(1, sizeof *pp);
    if (!pp) {
        rc = MESH_ENOMEM;
        goto done;
    }
    if ((int)m->type == DHT_MSG_PING) {
        out.key.len = 0;
    } else {
        if (m->key.len == 0) {
            rc = MESH_EPROTO;
            goto done;
        }
        closer_peers(d, m->key.data, m->key.len, &from->id, pp, &n_closer);
    }
    if ((int)m->type == DHT_MSG_GET_VALUE) {
        const struct dht_record *r = record_find(d, m->key.data, m->key.len);
        if (r && r->expires_ms > now_ms) {
            rec.key = m->key;
            rec.value.data = r->val;
            rec.value.len = r->val_len;
            out.record = &rec;
        }
    }
    out.n_closerpeers = n_closer;
    out.closerpeers = pp->ptr;
    if ((int)m->type == DHT_MSG_GET_PROVIDERS) {
        const struct dht_prov_key *k = prov_find(d, m->key.data, m->key.len);
        size_t n = 0;
        for (size_t i = 0; k && i < k->n && n < DHT_K; i++) {
            if (k->v[i].expires_ms <= now_ms) continue;
            struct dht_peer prov;
            dht_store_prov_peer(&k->v[i], &prov);
            pb_peers_add(pp, &prov);
            n++;
        }
        out.n_providerpeers = n;
        out.providerpeers = pp->ptr + n_closer;
    }
    rc = msg_pack(&out, resp, resp_len);
done:
    free(pp);
    if (m) dht__pb__message__free_unpacked(m, NULL);
    return rc;
}

/* ---- queries: bookkeeping ------------------------------------------------------------ */

static struct dht_query *query_get(const struct dht *d, uint64_t qid)
{
    for (size_t i = 0; i < d->n_q; i++)
        if (d->q[i]->id == qid) return d->q[i];
    return NULL;
}

static void query_destroy(struct dht_query *q)
{
    if (!q) return;
    free(q->c);
    free(q->key);
    free(q->val);
    for (size_t i = 0; i < q->n_vals; i++) free(q->vals[i]);
    free(q->prov);
    free(q);
}

void dht_query_release(struct dht *d, uint64_t qid)
{
    for (size_t i = 0; i < d->n_q; i++) {
        if (d->q[i]->id != qid) continue;
        query_destroy(d->q[i]);
        d->q[i] = d->q[--d->n_q];
        return;
    }
}

/* Inserts a candidate in distance order unless known or ourselves; when the list is full the
 * farthest unqueried candidate makes room. */
static void cand_add(struct dht *d, struct dht_query *q, const struct dht_peer *p, unsigned hop)
{
    uint8_t key[DHT_KEY_LEN], dist[DHT_KEY_LEN];
    if (peer_id_equal(&p->id, &d->cfg.self)) return;
    dht_key_of(p->id.bytes, p->id.len, key);
    xor_dist(key, q->target, dist);
    size_t pos = q->n_c;
    for (size_t i = 0; i < q->n_c; i++) {
        int c = memcmp(dist, q->c[i].dist, DHT_KEY_LEN);
        if (c == 0 && peer_id_equal(&q->c[i].p.id, &p->id)) return;
        if (c < 0 && pos == q->n_c) pos = i;
    }
    if (q->n_c == QUERY_CANDS_MAX) {
        /* Full: the farthest unqueried candidate makes room, else the farthest failed one,
         * else the farthest answered one outside the k closest; never one in flight. */
        size_t victim = SIZE_MAX;
        static const uint8_t order[] = {C_NEW, C_FAIL, C_DONE};
        for (size_t o = 0; o < sizeof order && victim == SIZE_MAX; o++)
            for (size_t i = q->n_c; i-- > pos && i >= DHT_K;)
                if (q->c[i].state == order[o]) {
                    victim = i;
                    break;
                }
        if (victim == SIZE_MAX) return;
        memmove(&q->c[victim], &q->c[victim + 1], (q->n_c - victim - 1) * sizeof *q->c);
        q->n_c--;
    }
    memmove(&q->c[pos + 1], &q->c[pos], (q->n_c - pos) * sizeof *q->c);
    q->c[pos].p = *p;
    memcpy(q->c[pos].dist, dist, DHT_KEY_LEN);
    q->c[pos].state = C_NEW;
    q->c[pos].hop = (uint8_t)(hop > 255 ? 255 : hop);
    q->n_c++;
}

static struct dht_cand *cand_find(struct dht_query *q, const struct peer_id *id)
{
    for (size_t i = 0; i < q->n_c; i++)
        if (peer_id_equal(&q->c[i].p.id, id)) return &q->c[i];
    return NULL;
}

/* Builds the request a query sends (FIND_NODE, GET_VALUE, GET_PROVIDERS, PUT_VALUE,
 * ADD_PROVIDER) and queues it. */
static int request_queue(struct dht *d, uint64_t now_ms, struct dht_query *q, int type,
                         const struct dht_peer *to)
{
    Dht__Pb__Message m = DHT__PB__MESSAGE__INIT;
    Dht__Pb__Record rec = DHT__PB__RECORD__INIT;
    struct pb_peers *pp = NULL;
    struct dht_request r;
    int rc;

    memset(&r, 0, sizeof r);
    m.type = (Dht__Pb__Message__MessageType)type;
    m.key.data = q->key;
    m.key.len = q->key_len;
    if (type == DHT_MSG_PUT_VALUE) {
        rec.key = m.key;
        rec.value.data = q->val;
        rec.value.len = q->val_len;
        m.record = &rec;
    }
    if (type == DHT_MSG_ADD_PROVIDER) {
        pp = calloc(1, sizeof *pp);
        if (!pp) return MESH_ENOMEM;
        pb_peers_add(pp, &q->self_info);
        m.n_providerpeers = 1;
        m.providerpeers = pp->ptr;
    }
    rc = msg_pack(&m, &r.msg, &r.msg_len);
    free(pp);
    if (rc < 0) return rc;
    if (grow((void **)&d->out, &d->cap_out, d->n_out + 1, sizeof *d->out) < 0 ||
        (type != DHT_MSG_ADD_PROVIDER &&
         grow((void **)&d->pend, &d->cap_pend, d->n_pend + 1, sizeof *d->pend) < 0)) {
        free(r.msg);
        return MESH_ENOMEM;
    }
    r.req_id = ++d->next_req_id;
    r.peer = *to;
    r.type = type;
    r.expects_response = type != DHT_MSG_ADD_PROVIDER;
    d->out[d->n_out++] = r;
    q->st.n_requests++;
    if (r.expects_response) {
        d->pend[d->n_pend++] = (struct dht_pending){r.req_id, q->id, to->id,
                                                    now_ms + d->cfg.request_timeout_ms};
        q->n_inflight++;
    }
    return 0;
}

/* A PING to a table entry, outside any query (qid 0): its answer only refreshes the entry,
 * its failure removes it (dht_on_failure). One at a time per peer. */
static void ping_queue(struct dht *d, uint64_t now_ms, const struct dht_entry *e)
{
    Dht__Pb__Message m = DHT__PB__MESSAGE__INIT;
    struct dht_request r;
    for (size_t i = 0; i < d->n_pend; i++)
        if (d->pend[i].qid == 0 && peer_id_equal(&d->pend[i].peer, &e->id)) return;
    memset(&r, 0, sizeof r);
    m.type = (Dht__Pb__Message__MessageType)DHT_MSG_PING;
    if (msg_pack(&m, &r.msg, &r.msg_len) < 0) return;
    if (grow((void **)&d->out, &d->cap_out, d->n_out + 1, sizeof *d->out) < 0 ||
        grow((void **)&d->pend, &d->cap_pend, d->n_pend + 1, sizeof *d->pend) < 0) {
        free(r.msg);
        return;
    }
    r.req_id = ++d->next_req_id;
    entry_to_peer(e, &r.peer);
    r.type = DHT_MSG_PING;
    r.expects_response = true;
    d->out[d->n_out++] = r;
    d->pend[d->n_pend++] =
        (struct dht_pending){r.req_id, 0, e->id, now_ms + d->cfg.request_timeout_ms};
}

static int lookup_msg_type(const struct dht_query *q)
{
    if (q->kind == Q_GET_VALUE) return DHT_MSG_GET_VALUE;
    if (q->kind == Q_GET_PROVIDERS) return DHT_MSG_GET_PROVIDERS;
    return DHT_MSG_FIND_NODE;
}

/* Marks the query finished and tells the owner. Must be the caller's last use of q. */
static void query_finish(struct dht *d, uint64_t now_ms, struct dht_query *q, int status)
{
    q->status = status;
    q->st.finished_ms = now_ms;
    for (size_t i = 0; i < q->n_c; i++) {
        if (q->c[i].state != C_DONE) continue;
        q->st.hops = q->c[i].hop;
        break;
    }
    uint64_t qid = q->id;
    if (q->is_internal) {
        dht_query_release(d, qid);
        return;
    }
    if (d->cfg.on_query_done) d->cfg.on_query_done(d->cfg.ud, qid);
}

/* STORE phase of PUT_VALUE / ADD_PROVIDER: send to the k closest peers that answered. */
static void query_store(struct dht *d, uint64_t now_ms, struct dht_query *q)
{
    int type = q->kind == Q_PUT_VALUE ? DHT_MSG_PUT_VALUE : DHT_MSG_ADD_PROVIDER;
    size_t sent = 0;
    q->phase = PHASE_STORE;
    /* Forget lookup stragglers so that only STORE acknowledgements are counted. */
    for (size_t i = 0; i < d->n_pend;) {
        if (d->pend[i].qid == q->id) d->pend[i] = d->pend[--d->n_pend];
        else i++;
    }
    q->n_inflight = 0;
    for (size_t i = 0; i < q->n_c && sent < DHT_K; i++) {
        if (q->c[i].state != C_DONE) continue;
        if (request_queue(d, now_ms, q, type, &q->c[i].p) == 0) sent++;
    }
    q->n_stored = 0;
    if (sent == 0) query_finish(d, now_ms, q, DHT_QUERY_FAILED);
    else if (q->n_inflight == 0) query_finish(d, now_ms, q, DHT_QUERY_DONE);
}

/* One step of the lookup: finish if the k closest live candidates have all answered (or a
 * GET has what it wanted), else keep alpha requests in flight to the closest new ones. */
static void query_advance(struct dht *d, uint64_t now_ms, struct dht_query *q)
{
    if (q->status != DHT_QUERY_RUNNING) return;
    if (q->phase == PHASE_STORE) {
        if (q->n_inflight == 0)
            query_finish(d, now_ms, q, q->n_stored > 0 ? DHT_QUERY_DONE : DHT_QUERY_FAILED);
        return;
    }
    bool enough = (q->kind == Q_GET_VALUE && q->n_vals >= q->quorum) ||
                  (q->kind == Q_GET_PROVIDERS && q->n_prov >= q->prov_max);
    size_t seen = 0;
    bool all_done = true;
    for (size_t i = 0; i < q->n_c && seen < DHT_K && !enough; i++) {
        struct dht_cand *c = &q->c[i];
        if (c->state == C_FAIL) continue;
        seen++;
        if (c->state == C_DONE) continue;
        all_done = false;
        if (c->state == C_NEW && q->n_inflight < DHT_ALPHA) {
            if (request_queue(d, now_ms, q, lookup_msg_type(q), &c->p) == 0) c->state = C_WAIT;
            else c->state = C_FAIL;
        }
    }
    if (!enough && !all_done) return;
    /* Requests still in flight went to peers that are no longer among the k closest: their
     * answers only refresh the routing table. */
    if (q->kind == Q_PUT_VALUE || q->kind == Q_PROVIDE) {
        query_store(d, now_ms, q);
        return;
    }
    /* A GET that already holds what it asked for (a record or providers from the local
     * store counts) succeeded, even when no peer answered. */
    bool any = q->st.n_answers > 0 || (q->kind == Q_GET_VALUE && q->n_vals > 0) ||
               (q->kind == Q_GET_PROVIDERS && q->n_prov > 0);
    query_finish(d, now_ms, q, any ? DHT_QUERY_DONE : DHT_QUERY_FAILED);
}

static int query_new(struct dht *d, uint64_t now_ms, int kind, const uint8_t *key,
                     size_t key_len, struct dht_query **out)
{
    *out = NULL;
    if (!key || key_len == 0 || key_len > DHT_RECORD_KEY_MAX) return MESH_EINVAL;
    if (grow((void **)&d->q, &d->cap_q, d->n_q + 1, sizeof *d->q) < 0) return MESH_ENOMEM;
    struct dht_query *q = calloc(1, sizeof *q);
    if (!q) return MESH_ENOMEM;
    q->c = malloc(QUERY_CANDS_MAX * sizeof *q->c);
    q->key = dup_bytes(key, key_len);
    if (!q->c || !q->key) {
        query_destroy(q);
        return MESH_ENOMEM;
    }
    q->id = ++d->next_qid;
    q->kind = kind;
    q->key_len = key_len;
    q->quorum = 1;
    q->st.started_ms = now_ms;
    dht_key_of(key, key_len, q->target);
    int cpl = cpl_of(q->target, d->self_key);
    if (cpl < N_BUCKETS) d->b[cpl].refreshed_ms = now_ms; /* a lookup refreshes its bucket */
    struct dht_peer seeds[DHT_K];
    size_t n = dht_table_closest(d, q->target, seeds, DHT_K);
    for (size_t i = 0; i < n; i++) cand_add(d, q, &seeds[i], 1);
    d->q[d->n_q++] = q;
    *out = q;
    return 0;
}

/* Starts the first round; a query with no candidate at all fails at once. */
static void query_kick(struct dht *d, uint64_t now_ms, struct dht_query *q, uint64_t *qid)
{
    if (qid) *qid = q->id;
    if (q->n_c == 0) { /* nobody to ask: only what the local store had counts */
        bool have = (q->kind == Q_GET_VALUE && q->n_vals > 0) ||
                    (q->kind == Q_GET_PROVIDERS && q->n_prov > 0);
        query_finish(d, now_ms, q, have ? DHT_QUERY_DONE : DHT_QUERY_FAILED);
        return;
    }
    query_advance(d, now_ms, q);
}

int dht_find_node(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                  uint64_t *qid)
{
    struct dht_query *q;
    int rc = query_new(d, now_ms, Q_FIND_NODE, key, key_len, &q);
    if (rc < 0) return rc;
    query_kick(d, now_ms, q, qid);
    return 0;
}

int dht_bootstrap(struct dht *d, uint64_t now_ms, const struct dht_peer *peers, size_t n,
                  uint64_t *qid)
{
    struct dht_query *q;
    if (n == 0) return MESH_EINVAL;
    int rc = query_new(d, now_ms, Q_FIND_NODE, d->cfg.self.bytes, d->cfg.self.len, &q);
    if (rc < 0) return rc;
    for (size_t i = 0; i < n; i++) cand_add(d, q, &peers[i], 1);
    query_kick(d, now_ms, q, qid);
    return 0;
}

int dht_get_value(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                  size_t quorum, uint64_t *qid)
{
    struct dht_query *q;
    int rc = query_new(d, now_ms, Q_GET_VALUE, key, key_len, &q);
    if (rc < 0) return rc;
    q->quorum = quorum == 0 ? 1 : quorum > DHT_QUERY_VALUES_MAX ? DHT_QUERY_VALUES_MAX : quorum;
    const struct dht_record *r = record_find(d, key, key_len);
    if (r && r->expires_ms > now_ms) {
        q->vals[0] = dup_bytes(r->val, r->val_len);
        if (q->vals[0]) {
            q->val_lens[0] = r->val_len;
            q->n_vals = 1;
        }
    }
    query_kick(d, now_ms, q, qid);
    return 0;
}

int dht_put_value(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                  const uint8_t *val, size_t val_len, uint64_t *qid)
{
    struct dht_query *q;
    int rc = record_validate(d, key, key_len, val, val_len);
    if (rc < 0) return rc;
    if (d->cfg.is_server) {
        rc = record_store(d, now_ms, key, key_len, val, val_len, &d->cfg.self);
        if (rc < 0 && rc != MESH_EFULL) return rc;
    }
    rc = query_new(d, now_ms, Q_PUT_VALUE, key, key_len, &q);
    if (rc < 0) return rc;
    q->val = dup_bytes(val, val_len);
    if (!q->val) {
        dht_query_release(d, q->id);
        return MESH_ENOMEM;
    }
    q->val_len = val_len;
    query_kick(d, now_ms, q, qid);
    return 0;
}

int dht_provide(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                const struct dht_peer *self_info, uint64_t *qid)
{
    struct dht_query *q;
    if (!peer_id_equal(&self_info->id, &d->cfg.self)) return MESH_EINVAL;
    if (d->cfg.is_server) {
        int rc = dht_store_prov_add(&d->st, now_ms, key, key_len, self_info);
        if (rc < 0 && rc != MESH_EFULL && rc != MESH_EINVAL) return rc;
    }
    int rc = query_new(d, now_ms, Q_PROVIDE, key, key_len, &q);
    if (rc < 0) return rc;
    q->self_info = *self_info;
    query_kick(d, now_ms, q, qid);
    return 0;
}

int dht_get_providers(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                      size_t n_max, uint64_t *qid)
{
    struct dht_query *q;
    if (n_max == 0) return MESH_EINVAL;
    if (n_max > DHT_PROVIDERS_PER_KEY) n_max = DHT_PROVIDERS_PER_KEY;
    int rc = query_new(d, now_ms, Q_GET_PROVIDERS, key, key_len, &q);
    if (rc < 0) return rc;
    q->prov = calloc(n_max, sizeof *q->prov);
    if (!q->prov) {
        dht_query_release(d, q->id);
        return MESH_ENOMEM;
    }
    q->prov_max = n_max;
    /* Providers we store ourselves count too. */
    const struct dht_prov_key *k = prov_find(d, key, key_len);
    for (size_t i = 0; k && i < k->n && q->n_prov < n_max; i++)
        if (k->v[i].expires_ms > now_ms) dht_store_prov_peer(&k->v[i], &q->prov[q->n_prov++]);
    query_kick(d, now_ms, q, qid);
    return 0;
}

/* ---- queries: responses -------------------------------------------------------------- */

static bool pending_take(struct dht *d, uint64_t req_id, struct dht_pending *out)
{
    for (size_t i = 0; i < d->n_pend; i++) {
        if (d->pend[i].req_id != req_id) continue;
        *out = d->pend[i];
        d->pend[i] = d->pend[--d->n_pend];
        return true;
    }
    return false;
}

static void query_add_value(struct dht *d, struct dht_query *q, const Dht__Pb__Record *r)
{
    if (!bytes_eq(r->key.data, r->key.len, q->key, q->key_len)) return;
    if (record_validate(d, q->key, q->key_len, r->value.data, r->value.len) < 0) return;
    for (size_t i = 0; i < q->n_vals; i++)
        if (bytes_eq(q->vals[i], q->val_lens[i], r->value.data, r->value.len)) return;
    if (q->n_vals == DHT_QUERY_VALUES_MAX) return;
    uint8_t *v = dup_bytes(r->value.data, r->value.len);
    if (!v) return;
    q->vals[q->n_vals] = v;
    q->val_lens[q->n_vals++] = r->value.len;
}

static void query_add_providers(struct dht_query *q, const Dht__Pb__Message *m)
{
    for (size_t i = 0; i < m->n_providerpeers && q->n_prov < q->prov_max; i++) {
        struct dht_peer p;
        if (peer_from_pb(m->providerpeers[i], &p) < 0) continue;
        bool dup = false;
        for (size_t j = 0; j < q->n_prov && !dup; j++) dup = peer_id_equal(&q->prov[j].id, &p.id);
        if (!dup) q->prov[q->n_prov++] = p;
    }
}

void dht_on_failure(struct dht *d, uint64_t now_ms, uint64_t req_id)
{
    struct dht_pending pd;
    if (!pending_take(d, req_id, &pd)) return;
    dht_peer_remove(d, &pd.peer);
    struct dht_query *q = query_get(d, pd.qid);
    if (!q || q->status != DHT_QUERY_RUNNING) return;
    if (q->n_inflight) q->n_inflight--;
    q->st.n_failures++;
    struct dht_cand *c = cand_find(q, &pd.peer);
    if (c && q->phase == PHASE_LOOKUP) c->state = C_FAIL;
    query_advance(d, now_ms, q);
}

int dht_on_response(struct dht *d, uint64_t now_ms, uint64_t req_id, const uint8_t *msg,
                    size_t msg_len)
{
    struct dht_pending pd;
    Dht__Pb__Message *m;
    if (!pending_take(d, req_id, &pd)) return 0;
    struct dht_query *q = query_get(d, pd.qid);
    int rc = msg_decode(msg, msg_len, &m);
    if (rc < 0) {
        /* Put it back so dht_on_failure does the bookkeeping of a failed request. */
        d->pend[d->n_pend++] = pd;
        dht_on_failure(d, now_ms, req_id);
        return MESH_EPROTO;
    }
    struct dht_cand *c = q ? cand_find(q, &pd.peer) : NULL;
    if (c) table_add(d, now_ms, &c->p); /* it answered: a live server-mode peer */
    if (pd.qid == 0) table_touch(d, now_ms, &pd.peer);
    if (!q || q->status != DHT_QUERY_RUNNING) goto done;
    if (q->n_inflight) q->n_inflight--;
    q->st.n_answers++;
    if (q->phase == PHASE_STORE) {
        q->n_stored++;
        query_advance(d, now_ms, q);
        goto done;
    }
    if (c) c->state = C_DONE;
    unsigned hop = c ? c->hop + 1u : 2u;
    for (size_t i = 0; i < m->n_closerpeers; i++) {
        struct dht_peer p;
        if (peer_from_pb(m->closerpeers[i], &p) == 0) cand_add(d, q, &p, hop);
    }
    if (q->kind == Q_GET_VALUE && m->record) query_add_value(d, q, m->record);
    if (q->kind == Q_GET_PROVIDERS) query_add_providers(q, m);
    query_advance(d, now_ms, q);
done:
    dht__pb__message__free_unpacked(m, NULL);
    return 0;
}

int dht_next_request(struct dht *d, struct dht_request *req)
{
    memset(req, 0, sizeof *req);
    if (d->out_head == d->n_out) return MESH_ENOTFOUND;
    *req = d->out[d->out_head++];
    if (d->out_head == d->n_out) d->out_head = d->n_out = 0;
    return 0;
}

/* ---- timers -------------------------------------------------------------------------- */

/* A FIND_NODE key whose SHA-256 shares exactly cpl leading bits with our key: a random
 * sha2-256 multihash "peer ID", found by trial (2^(cpl+1) tries on average, cpl <= 15). */
static void refresh_key(struct dht *d, int cpl, uint8_t out[34])
{
    uint8_t k[DHT_KEY_LEN];
    out[0] = PEER_ID_MH_SHA256;
    out[1] = 32;
    for (;;) {
        for (int i = 0; i < 4; i++) {
            uint64_t r = rng_next(&d->rng);
            memcpy(out + 2 + 8 * i, &r, 8);
        }
        dht_key_of(out, 34, k);
        if (cpl_of(k, d->self_key) == cpl) return;
    }
}

static void refresh_buckets(struct dht *d, uint64_t now_ms)
{
    int max_cpl = -1;
    for (int i = 0; i < N_BUCKETS; i++)
        if (d->b[i].n) max_cpl = i;
    if (max_cpl < 0) return;
    int top = max_cpl + 1 < REFRESH_CPL_MAX ? max_cpl + 1 : REFRESH_CPL_MAX;
    for (int cpl = 0; cpl <= top; cpl++) {
        if (d->b[cpl].refreshed_ms + d->cfg.refresh_interval_ms > now_ms) continue;
        uint8_t key[34];
        struct dht_query *q;
        refresh_key(d, cpl, key);
        d->b[cpl].refreshed_ms = now_ms;
        if (query_new(d, now_ms, Q_FIND_NODE, key, sizeof key, &q) < 0) return;
        q->is_internal = true;
        query_kick(d, now_ms, q, NULL);
    }
}

uint64_t dht_periodic(struct dht *d, uint64_t now_ms)
{
    if (!d->has_time) {
        d->has_time = true;
        for (int i = 0; i < N_BUCKETS; i++)
            if (d->b[i].refreshed_ms == 0) d->b[i].refreshed_ms = now_ms;
        d->next_sweep_ms = now_ms + EXPIRY_SWEEP_MS;
    }
    /* Request timeouts (each failure may start new requests, so rescan from the start). */
    for (size_t i = 0; i < d->n_pend;) {
        if (d->pend[i].deadline_ms > now_ms) {
            i++;
            continue;
        }
        dht_on_failure(d, now_ms, d->pend[i].req_id);
        i = 0;
    }
    if (now_ms >= d->next_sweep_ms) {
        dht_store_expire(&d->st, now_ms);
        d->next_sweep_ms = now_ms + EXPIRY_SWEEP_MS;
    }
    refresh_buckets(d, now_ms);
    uint64_t next = d->next_sweep_ms;
    for (int i = 0; i <= REFRESH_CPL_MAX; i++) {
        uint64_t t = d->b[i].refreshed_ms + d->cfg.refresh_interval_ms;
        if (d->b[i].n && t < next) next = t;
    }
    for (size_t i = 0; i < d->n_pend; i++)
        if (d->pend[i].deadline_ms < next) next = d->pend[i].deadline_ms;
    return next > now_ms ? next : now_ms + 1;
}

/* ---- query results ------------------------------------------------------------------- */

int dht_query_status(const struct dht *d, uint64_t qid)
{
    const struct dht_query *q = query_get(d, qid);
    return q ? q->status : MESH_ENOTFOUND;
}

size_t dht_query_closest(const struct dht *d, uint64_t qid, struct dht_peer *out, size_t n_max)
{
    const struct dht_query *q = query_get(d, qid);
    size_t n = 0;
    for (size_t i = 0; q && i < q->n_c && n < n_max; i++)
        if (q->c[i].state == C_DONE) out[n++] = q->c[i].p;
    return n;
}

int dht_query_value(const struct dht *d, uint64_t qid, size_t i, const uint8_t **val,
                    size_t *val_len, size_t *n_values, size_t *best)
{
    const struct dht_query *q = query_get(d, qid);
    *val = NULL;
    *val_len = 0;
    if (n_values) *n_values = q ? q->n_vals : 0;
    if (best) *best = 0;
    if (!q || i >= q->n_vals) return MESH_ENOTFOUND;
    *val = q->vals[i];
    *val_len = q->val_lens[i];
    if (best)
        *best = record_select(d, q->key, q->key_len, (const uint8_t *const *)q->vals,
                              q->val_lens, q->n_vals);
    return 0;
}

size_t dht_query_providers(const struct dht *d, uint64_t qid, struct dht_peer *out,
                           size_t n_max)
{
    const struct dht_query *q = query_get(d, qid);
    size_t n = 0;
    for (; q && n < q->n_prov && n < n_max; n++) out[n] = q->prov[n];
    return n;
}

int dht_query_stats(const struct dht *d, uint64_t qid, struct dht_query_stats *st)
{
    const struct dht_query *q = query_get(d, qid);
    memset(st, 0, sizeof *st);
    if (!q) return MESH_ENOTFOUND;
    *st = q->st;
    return 0;
}

/* ---- life cycle ---------------------------------------------------------------------- */

int dht_new(const struct dht_config *cfg, struct dht **out)
{
    *out = NULL;
    if (!cfg || cfg->self.len == 0) return MESH_EINVAL;
    struct dht *d = calloc(1, sizeof *d);
    if (!d) return MESH_ENOMEM;
    d->cfg = *cfg;
    if (!d->cfg.request_timeout_ms) d->cfg.request_timeout_ms = 10000;
    if (!d->cfg.refresh_interval_ms) d->cfg.refresh_interval_ms = 10 * 60 * 1000;
    if (!d->cfg.provider_ttl_ms) d->cfg.provider_ttl_ms = 48ull * 3600 * 1000;
    if (!d->cfg.record_ttl_ms) d->cfg.record_ttl_ms = 48ull * 3600 * 1000;
    dht_store_init(&d->st, &d->cfg);
    snprintf(d->protocol, sizeof d->protocol, "%s",
             cfg->protocol_id ? cfg->protocol_id : DHT_PROTOCOL_MESHLLM);
    d->cfg.protocol_id = d->protocol;
    dht_key_of(cfg->self.bytes, cfg->self.len, d->self_key);
    /* Seed xoshiro from the config seed (never all zero). */
    uint8_t h[32];
    crypto_hash_sha256(h, cfg->seed, sizeof cfg->seed);
    rng_seed_bytes(&d->rng, h);
    struct dht_validator pk = {"pk", dht_validate_pk, NULL, NULL};
    struct dht_validator ml = {"meshllm", dht_validate_meshllm, select_meshllm, NULL};
    dht_validator_add(d, &pk);
    dht_validator_add(d, &ml);
    *out = d;
    return 0;
}

void dht_free(struct dht *d)
{
    if (!d) return;
    for (int i = 0; i < N_BUCKETS; i++) {
        for (size_t j = 0; j < d->b[i].n; j++) free(d->b[i].e[j].addrs);
        free(d->b[i].e);
        free(d->b[i].repl);
    }
    dht_store_free(&d->st);
    for (size_t i = 0; i < d->n_q; i++) query_destroy(d->q[i]);
    free(d->q);
    free(d->pend);
    for (size_t i = d->out_head; i < d->n_out; i++) free(d->out[i].msg);
    free(d->out);
    free(d);
}

const char *dht_protocol_id(const struct dht *d) { return d->protocol; }
bool dht_is_server(const struct dht *d) { return d->cfg.is_server; }
void dht_set_server(struct dht *d, bool is_server) { d->cfg.is_server = is_server; }
