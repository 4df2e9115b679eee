/* dht_internal.h - the DHT's local store (dht_store.c), shared with the protocol core
 * (dht.c). Not part of the API; nothing outside net/dht*.c includes it.
 *
 * The store keeps PUT_VALUE records and ADD_PROVIDER records under limits counted in entries
 * and bytes, with a quota per sending peer. When a limit is reached a newcomer takes the
 * place of the oldest entry of the peer that holds the most (records: most bytes; providers:
 * most keys), so a flood from a few identities cannot keep an honest peer out; our own
 * entries are never evicted. Thread rule: as struct dht (one thread).
 */
#ifndef MESH_NET_DHT_INTERNAL_H
#define MESH_NET_DHT_INTERNAL_H

#include "net/dht.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dht_record {
    uint8_t *key;
    size_t key_len;
    uint8_t *val;
    size_t val_len;
    uint64_t expires_ms;
    uint64_t stored_ms;     /* first stored or last replaced: the eviction order */
    struct peer_id from;    /* who stored it (charged against its quota) */
};

/* One provider of a key: its addresses packed as (u16 BE length | multiaddr bytes) each, so
 * an entry costs what its addresses take, not DHT_PEER_ADDRS_MAX full multiaddrs. */
struct dht_provider {
    struct peer_id id;
    uint64_t expires_ms;
    uint64_t added_ms;
    uint8_t n_addrs;
    uint16_t addrs_len;
    uint8_t *addrs;         /* malloc'd, addrs_len bytes (NULL when none) */
};

struct dht_prov_key {
    uint8_t *key;
    size_t key_len;
    struct dht_provider *v; /* grows on demand up to DHT_PROVIDERS_PER_KEY */
    size_t n, cap;
};

/* How much one peer holds in a table (records or providers). */
struct dht_owner {
    struct peer_id id;
    size_t n;
    size_t bytes;
};

struct dht_owners {
    struct dht_owner *o;
    size_t n, cap;
};

struct dht_store {
    struct peer_id self;    /* our entries: never evicted, no quota */
    uint64_t record_ttl_ms, provider_ttl_ms;
    size_t records_max, record_bytes_max, records_per_peer;
    size_t provider_keys_max, provider_records_max, provider_keys_per_peer;
    struct dht_record *rec;
    size_t n_rec, cap_rec, rec_bytes;
    struct dht_owners rec_owners;
    struct dht_prov_key *pk;
    size_t n_pk, cap_pk;
    size_t n_prov, prov_bytes;
    struct dht_owners prov_owners;
    uint64_t n_value_quota_refused, n_value_full_refused, n_value_evicted;
    uint64_t n_provider_quota_refused, n_provider_full_refused, n_provider_evicted;
};

/* Limits from the config (0: defaults, see dht.h). */
void dht_store_init(struct dht_store *s, const struct dht_config *cfg);
void dht_store_free(struct dht_store *s);

struct dht_record *dht_store_record_find(const struct dht_store *s, const uint8_t *key,
                                         size_t key_len);
/* Stores (or replaces) the validated record of key, stored by `from`. Returns 0,
 * MESH_EFULL (over from's quota, or no room and from already holds the most) or
 * MESH_ENOMEM. */
int dht_store_record_put(struct dht_store *s, uint64_t now_ms, const uint8_t *key,
                         size_t key_len, const uint8_t *val, size_t val_len,
                         const struct peer_id *from);

/* Adds or refreshes provider p of key. Returns 0, MESH_EFULL (quota or no room) or
 * MESH_ENOMEM. */
int dht_store_prov_add(struct dht_store *s, uint64_t now_ms, const uint8_t *key, size_t key_len,
                       const struct dht_peer *p);
const struct dht_prov_key *dht_store_prov_find(const struct dht_store *s, const uint8_t *key,
                                               size_t key_len);
/* Provider i of k as a dht_peer. */
void dht_store_prov_peer(const struct dht_provider *e, struct dht_peer *out);

/* Drops expired records and providers. */
void dht_store_expire(struct dht_store *s, uint64_t now_ms);
void dht_store_stats(const struct dht_store *s, struct dht_stats *st);

#endif
