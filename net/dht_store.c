/* dht_store.c - the DHT's local store of records and provider records, with limits counted
 * in entries and bytes, per-peer quotas and eviction (see dht_internal.h).
 *
 * Flat arrays searched linearly, as in dht.c: a node stores thousands of entries, not
 * millions. Every allocation is counted in the table's bytes; per-key provider arrays grow
 * on demand (a key with one provider costs one slot, not DHT_PROVIDERS_PER_KEY). Eviction
 * follows the "largest holder pays" rule of go-libp2p's resource manager spirit: the peer
 * holding the most loses its oldest entry, so no peer below the largest holder is ever
 * refused while someone else holds more. No I/O, no clock.
 */
#include "net/dht_internal.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

static bool bytes_eq(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

static uint8_t *dup_bytes(const uint8_t *b, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    if (p && len) memcpy(p, b, len);
    return p;
}

/* ---- owners: how much each peer holds ------------------------------------------------ */

static struct dht_owner *owner_find(const struct dht_owners *t, const struct peer_id *id)
{
    for (size_t i = 0; i < t->n; i++)
        if (peer_id_equal(&t->o[i].id, id)) return &t->o[i];
    return NULL;
}

/* Adds dn entries and dbytes bytes to id's account (negative to release); an account that
 * reaches zero entries is dropped, so the table never holds more owners than entries. */
static int owner_charge(struct dht_owners *t, const struct peer_id *id, long dn, long dbytes)
{
    struct dht_owner *o = owner_find(t, id);
    if (!o) {
        if (dn <= 0) return 0;
        if (t->n == t->cap) {
            size_t nc = t->cap ? t->cap * 2 : 16;
            struct dht_owner *no = realloc(t->o, nc * sizeof *no);
            if (!no) return MESH_ENOMEM;
            t->o = no;
            t->cap = nc;
        }
        o = &t->o[t->n++];
        memset(o, 0, sizeof *o);
        o->id = *id;
    }
    o->n = (size_t)((long)o->n + dn);
    o->bytes = (size_t)((long)o->bytes + dbytes);
    if (o->n == 0) *o = t->o[--t->n];
    return 0;
}

/* The peer other than us holding the most (entries, or bytes if by_bytes); NULL if none. */
static const struct dht_owner *owner_max(const struct dht_owners *t, const struct peer_id *self,
                                         bool by_bytes)
{
    const struct dht_owner *m = NULL;
    for (size_t i = 0; i < t->n; i++) {
        const struct dht_owner *o = &t->o[i];
        if (peer_id_equal(&o->id, self)) continue;
        if (!m || (by_bytes ? o->bytes > m->bytes : o->n > m->n)) m = o;
    }
    return m;
}

/* ---- life cycle ---------------------------------------------------------------------- */

void dht_store_init(struct dht_store *s, const struct dht_config *cfg)
{
    memset(s, 0, sizeof *s);
    s->self = cfg->self;
    s->record_ttl_ms = cfg->record_ttl_ms;
    s->provider_ttl_ms = cfg->provider_ttl_ms;
    s->records_max = cfg->records_max ? cfg->records_max : DHT_RECORDS_MAX;
    s->record_bytes_max = cfg->record_bytes_max ? cfg->record_bytes_max : DHT_RECORD_BYTES_MAX;
    s->records_per_peer = cfg->records_per_peer ? cfg->records_per_peer : DHT_RECORDS_PER_PEER;
    s->provider_keys_max = cfg->provider_keys_max ? cfg->provider_keys_max : 4096;
    s->provider_records_max =
        cfg->provider_records_max ? cfg->provider_records_max : DHT_PROVIDER_RECORDS_MAX;
    s->provider_keys_per_peer =
        cfg->provider_keys_per_peer ? cfg->provider_keys_per_peer : DHT_PROVIDER_KEYS_PER_PEER;
}

static void prov_key_free(struct dht_prov_key *k)
{
    for (size_t j = 0; j < k->n; j++) free(k->v[j].addrs);
    free(k->v);
    free(k->key);
}

void dht_store_free(struct dht_store *s)
{
    for (size_t i = 0; i < s->n_rec; i++) {
        free(s->rec[i].key);
        free(s->rec[i].val);
    }
    free(s->rec);
    for (size_t i = 0; i < s->n_pk; i++) prov_key_free(&s->pk[i]);
    free(s->pk);
    free(s->rec_owners.o);
    free(s->prov_owners.o);
    memset(s, 0, sizeof *s);
}

/* ---- records ------------------------------------------------------------------------- */

static size_t record_cost(size_t key_len, size_t val_len)
{
    return sizeof(struct dht_record) + key_len + val_len;
}

struct dht_record *dht_store_record_find(const struct dht_store *s, const uint8_t *key,
                                         size_t key_len)
{
    for (size_t i = 0; i < s->n_rec; i++)
        if (bytes_eq(s->rec[i].key, s->rec[i].key_len, key, key_len)) return &s->rec[i];
    return NULL;
}

static void record_drop(struct dht_store *s, size_t i)
{
    struct dht_record *r = &s->rec[i];
    size_t cost = record_cost(r->key_len, r->val_len);
    owner_charge(&s->rec_owners, &r->from, -1, -(long)cost);
    s->rec_bytes -= cost;
    free(r->key);
    free(r->val);
    *r = s->rec[--s->n_rec];
}

/* Makes room for `add` more bytes (and one more record if new_slot) for `from`, evicting the
 * oldest record of the largest holder (by bytes) but never `keep` (the record being
 * replaced). 0 or MESH_EFULL. */
static int record_room(struct dht_store *s, const struct peer_id *from, size_t add,
                       bool new_slot, const uint8_t *keep, size_t keep_len)
{
    bool is_self = peer_id_equal(from, &s->self);
    while ((new_slot && s->n_rec >= s->records_max) || s->rec_bytes + add > s->record_bytes_max) {
        const struct dht_owner *m = owner_max(&s->rec_owners, &s->self, true);
        const struct dht_owner *me = owner_find(&s->rec_owners, from);
        size_t mine = me ? me->bytes : 0;
        if (!m || (!is_self && (peer_id_equal(&m->id, from) || m->bytes <= mine))) {
            s->n_value_full_refused++;
            return MESH_EFULL;
        }
        size_t victim = SIZE_MAX;
        for (size_t i = 0; i < s->n_rec; i++) {
            const struct dht_record *r = &s->rec[i];
            if (!peer_id_equal(&r->from, &m->id) || bytes_eq(r->key, r->key_len, keep, keep_len))
                continue;
            if (victim == SIZE_MAX || r->stored_ms < s->rec[victim].stored_ms) victim = i;
        }
        if (victim == SIZE_MAX) {
            s->n_value_full_refused++;
            return MESH_EFULL;
        }
        record_drop(s, victim);
        s->n_value_evicted++;
    }
    return 0;
}

int dht_store_record_put(struct dht_store *s, uint64_t now_ms, const uint8_t *key,
                         size_t key_len, const uint8_t *val, size_t val_len,
                         const struct peer_id *from)
{
    bool is_self = peer_id_equal(from, &s->self);
    struct dht_record *r = dht_store_record_find(s, key, key_len);
    size_t cost = record_cost(key_len, val_len);
    if (r) { /* a better value replaces ours: the new sender is charged for it */
        size_t old = record_cost(r->key_len, r->val_len);
        size_t add = cost > old ? cost - old : 0;
        if (add && record_room(s, from, add, false, key, key_len) < 0) return MESH_EFULL;
        r = dht_store_record_find(s, key, key_len); /* eviction moves entries */
        uint8_t *nv = dup_bytes(val, val_len);
        if (!nv) return MESH_ENOMEM;
        if (owner_charge(&s->rec_owners, from, 1, (long)cost) < 0) {
            free(nv);
            return MESH_ENOMEM;
        }
        owner_charge(&s->rec_owners, &r->from, -1, -(long)old);
        free(r->val);
        r->val = nv;
        r->val_len = val_len;
        r->from = *from;
        r->stored_ms = now_ms;
        r->expires_ms = now_ms + s->record_ttl_ms;
        s->rec_bytes = s->rec_bytes - old + cost;
        return 0;
    }
    const struct dht_owner *me = owner_find(&s->rec_owners, from);
    if (!is_self && me && me->n >= s->records_per_peer) {
        s->n_value_quota_refused++;
        return MESH_EFULL;
    }
    if (record_room(s, from, cost, true, NULL, 0) < 0) return MESH_EFULL;
    if (s->n_rec == s->cap_rec) {
        size_t nc = s->cap_rec ? s->cap_rec * 2 : 16;
        if (nc > s->records_max) nc = s->records_max;
        struct dht_record *nr = realloc(s->rec, nc * sizeof *nr);
        if (!nr) return MESH_ENOMEM;
        s->rec = nr;
        s->cap_rec = nc;
    }
    uint8_t *k = dup_bytes(key, key_len), *v = dup_bytes(val, val_len);
    if (!k || !v || owner_charge(&s->rec_owners, from, 1, (long)cost) < 0) {
        free(k);
        free(v);
        return MESH_ENOMEM;
    }
    s->rec[s->n_rec++] = (struct dht_record){k, key_len, v, val_len, now_ms + s->record_ttl_ms,
                                             now_ms, *from};
    s->rec_bytes += cost;
    return 0;
}

/* ---- provider records ---------------------------------------------------------------- */

const struct dht_prov_key *dht_store_prov_find(const struct dht_store *s, const uint8_t *key,
                                               size_t key_len)
{
    for (size_t i = 0; i < s->n_pk; i++)
        if (bytes_eq(s->pk[i].key, s->pk[i].key_len, key, key_len)) return &s->pk[i];
    return NULL;
}

static struct dht_prov_key *prov_key_find(struct dht_store *s, const uint8_t *key,
                                          size_t key_len)
{
    return (struct dht_prov_key *)dht_store_prov_find(s, key, key_len);
}

void dht_store_prov_peer(const struct dht_provider *e, struct dht_peer *out)
{
    memset(out, 0, sizeof *out);
    out->id = e->id;
    size_t off = 0;
    for (size_t i = 0; i < e->n_addrs && off + 2 <= e->addrs_len; i++) {
        size_t len = (size_t)e->addrs[off] << 8 | e->addrs[off + 1];
        off += 2;
        if (len > MULTIADDR_MAX_LEN || off + len > e->addrs_len) break;
        out->addrs[out->n_addrs].len = len;
        memcpy(out->addrs[out->n_addrs].bytes, e->addrs + off, len);
        out->n_addrs++;
        off += len;
    }
}

/* Packs p's addresses into e (replacing any). Counts the change in s->prov_bytes. */
static int prov_set_addrs(struct dht_store *s, struct dht_provider *e, const struct dht_peer *p)
{
    size_t len = 0;
    for (size_t i = 0; i < p->n_addrs; i++) len += 2 + p->addrs[i].len;
    uint8_t *b = len ? malloc(len) : NULL;
    if (len && !b) return MESH_ENOMEM;
    size_t off = 0;
    for (size_t i = 0; i < p->n_addrs; i++) {
        b[off] = (uint8_t)(p->addrs[i].len >> 8);
        b[off + 1] = (uint8_t)p->addrs[i].len;
        memcpy(b + off + 2, p->addrs[i].bytes, p->addrs[i].len);
        off += 2 + p->addrs[i].len;
    }
    s->prov_bytes = s->prov_bytes - e->addrs_len + len;
    free(e->addrs);
    e->addrs = b;
    e->addrs_len = (uint16_t)len;
    e->n_addrs = (uint8_t)p->n_addrs;
    return 0;
}

/* Removes provider j of key i; a key left without providers goes too. */
static void prov_drop(struct dht_store *s, size_t i, size_t j)
{
    struct dht_prov_key *k = &s->pk[i];
    struct dht_provider *e = &k->v[j];
    owner_charge(&s->prov_owners, &e->id, -1, -(long)e->addrs_len);
    s->prov_bytes -= e->addrs_len;
    free(e->addrs);
    k->v[j] = k->v[--k->n];
    s->n_prov--;
    if (k->n) return;
    s->prov_bytes -= k->key_len + k->cap * sizeof *k->v;
    free(k->key);
    free(k->v);
    s->pk[i] = s->pk[--s->n_pk];
}

/* Makes room for one more provider entry by `from` (and a new key if !has_key): the oldest
 * entry of the peer providing the most keys goes, as long as it holds more than from does;
 * when a key slot is needed, only an entry that is its key's last one frees it. */
static int prov_room(struct dht_store *s, const struct peer_id *from, bool has_key)
{
    bool is_self = peer_id_equal(from, &s->self);
    for (;;) {
        bool need_key = !has_key && s->n_pk >= s->provider_keys_max;
        if (s->n_prov < s->provider_records_max && !need_key) return 0;
        const struct dht_owner *m = owner_max(&s->prov_owners, &s->self, false);
        const struct dht_owner *me = owner_find(&s->prov_owners, from);
        size_t mine = me ? me->n : 0;
        if (!m || (!is_self && (peer_id_equal(&m->id, from) || m->n <= mine))) break;
        size_t vi = SIZE_MAX, vj = 0;
        for (size_t i = 0; i < s->n_pk; i++) {
            const struct dht_prov_key *k = &s->pk[i];
            if (need_key && k->n != 1) continue;
            for (size_t j = 0; j < k->n; j++) {
                if (!peer_id_equal(&k->v[j].id, &m->id)) continue;
                if (vi == SIZE_MAX || k->v[j].added_ms < s->pk[vi].v[vj].added_ms) {
                    vi = i;
                    vj = j;
                }
            }
        }
        if (vi == SIZE_MAX) break;
        prov_drop(s, vi, vj);
        s->n_provider_evicted++;
    }
    s->n_provider_full_refused++;
    return MESH_EFULL;
}

int dht_store_prov_add(struct dht_store *s, uint64_t now_ms, const uint8_t *key, size_t key_len,
                       const struct dht_peer *p)
{
    bool is_self = peer_id_equal(&p->id, &s->self);
    struct dht_prov_key *k = prov_key_find(s, key, key_len);
    for (size_t j = 0; k && j < k->n; j++) {
        if (!peer_id_equal(&k->v[j].id, &p->id)) continue;
        k->v[j].expires_ms = now_ms + s->provider_ttl_ms; /* a refresh */
        if (p->n_addrs == 0) return 0;
        long before = (long)k->v[j].addrs_len;
        if (prov_set_addrs(s, &k->v[j], p) < 0) return MESH_ENOMEM;
        owner_charge(&s->prov_owners, &p->id, 0, (long)k->v[j].addrs_len - before);
        return 0;
    }
    const struct dht_owner *me = owner_find(&s->prov_owners, &p->id);
    if (!is_self && me && me->n >= s->provider_keys_per_peer) {
        s->n_provider_quota_refused++;
        return MESH_EFULL;
    }
    if (k && k->n == DHT_PROVIDERS_PER_KEY) {
        /* A full key: its stalest provider other than us makes room. */
        size_t old = SIZE_MAX;
        for (size_t j = 0; j < k->n; j++)
            if (!peer_id_equal(&k->v[j].id, &s->self) &&
                (old == SIZE_MAX || k->v[j].expires_ms < k->v[old].expires_ms))
                old = j;
        if (old == SIZE_MAX) return MESH_EFULL;
        prov_drop(s, (size_t)(k - s->pk), old); /* the key keeps its other providers */
        s->n_provider_evicted++;
    }
    if (prov_room(s, &p->id, k != NULL) < 0) return MESH_EFULL;
    k = prov_key_find(s, key, key_len); /* eviction moves keys (and may drop this one) */
    if (!k) {
        if (s->n_pk == s->cap_pk) {
            size_t nc = s->cap_pk ? s->cap_pk * 2 : 16;
            if (nc > s->provider_keys_max) nc = s->provider_keys_max;
            struct dht_prov_key *np = realloc(s->pk, nc * sizeof *np);
            if (!np) return MESH_ENOMEM;
            s->pk = np;
            s->cap_pk = nc;
        }
        uint8_t *kb = dup_bytes(key, key_len);
        if (!kb) return MESH_ENOMEM;
        k = &s->pk[s->n_pk++];
        *k = (struct dht_prov_key){kb, key_len, NULL, 0, 0};
        s->prov_bytes += key_len;
    }
    if (k->n == k->cap) {
        size_t nc = k->cap ? k->cap * 2 : 1;
        if (nc > DHT_PROVIDERS_PER_KEY) nc = DHT_PROVIDERS_PER_KEY;
        struct dht_provider *nv = realloc(k->v, nc * sizeof *nv);
        if (!nv) return MESH_ENOMEM; /* an empty new key is swept with the expired */
        s->prov_bytes += (nc - k->cap) * sizeof *nv;
        k->v = nv;
        k->cap = nc;
    }
    struct dht_provider *e = &k->v[k->n];
    memset(e, 0, sizeof *e);
    e->id = p->id;
    e->added_ms = now_ms;
    e->expires_ms = now_ms + s->provider_ttl_ms;
    if (prov_set_addrs(s, e, p) < 0 || owner_charge(&s->prov_owners, &p->id, 1,
                                                    (long)e->addrs_len) < 0) {
        s->prov_bytes -= e->addrs_len;
        free(e->addrs);
        return MESH_ENOMEM;
    }
    k->n++;
    s->n_prov++;
    return 0;
}

/* ---- expiry and figures -------------------------------------------------------------- */

void dht_store_expire(struct dht_store *s, uint64_t now_ms)
{
    for (size_t i = 0; i < s->n_rec;) {
        if (s->rec[i].expires_ms > now_ms) i++;
        else record_drop(s, i);
    }
    for (size_t i = 0; i < s->n_pk;) {
        struct dht_prov_key *k = &s->pk[i];
        if (k->n == 0) { /* left empty by an allocation failure */
            s->prov_bytes -= k->key_len + k->cap * sizeof *k->v;
            prov_key_free(k);
            s->pk[i] = s->pk[--s->n_pk];
            continue;
        }
        size_t n_before = s->n_pk;
        for (size_t j = k->n; j-- > 0;)
            if (s->pk[i].v[j].expires_ms <= now_ms) {
                bool last = s->pk[i].n == 1;
                prov_drop(s, i, j);
                if (last) break;
            }
        if (s->n_pk == n_before) i++; /* else pk[i] now holds another key: look at it */
    }
}

void dht_store_stats(const struct dht_store *s, struct dht_stats *st)
{
    st->n_records = s->n_rec;
    st->record_bytes = s->rec_bytes;
    st->record_bytes_max = s->record_bytes_max;
    st->n_provider_keys = s->n_pk;
    st->n_provider_records = s->n_prov;
    st->provider_bytes = s->prov_bytes;
    /* Keys at their longest, every entry with DHT_PEER_ADDRS_MAX longest addresses, and
     * per-key arrays at most twice their use (they double) but never beyond the cap. */
    st->provider_bytes_max =
        s->provider_keys_max * DHT_RECORD_KEY_MAX +
        s->provider_records_max * (2 * sizeof(struct dht_provider) +
                                   DHT_PEER_ADDRS_MAX * (2 + MULTIADDR_MAX_LEN));
    st->n_value_quota_refused = s->n_value_quota_refused;
    st->n_value_full_refused = s->n_value_full_refused;
    st->n_value_evicted = s->n_value_evicted;
    st->n_provider_quota_refused = s->n_provider_quota_refused;
    st->n_provider_full_refused = s->n_provider_full_refused;
    st->n_provider_evicted = s->n_provider_evicted;
}
