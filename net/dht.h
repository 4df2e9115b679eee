/* dht.h - libp2p Kademlia DHT protocol core: routing table, iterative lookups, records and
 * provider records. Does no I/O.
 *
 * Follows libp2p/specs kad-dht/README.md: keys live in the 256-bit space of SHA-256(key
 * bytes) (peer IDs: SHA-256 of their multihash bytes) under the XOR metric; k-buckets with
 * k = 20; iterative lookups with alpha = 3 requests in flight that end when the k closest peers
 * seen have all answered; FIND_NODE, GET_VALUE / PUT_VALUE (records checked by a namespace
 * validator: /pk and /meshllm built in), ADD_PROVIDER / GET_PROVIDERS (expiring provider
 * records), PING; client and server modes; bucket refresh; bootstrap. Messages are the spec's
 * protobuf (net/proto/dht.proto) with a uvarint length prefix. A full bucket keeps its live
 * entries: newcomers wait in a replacement cache and replace an entry only when a PING to
 * the quietest one fails. The store has per-peer quotas and bounds in entries and bytes
 * (dht_store.c). Not done here: dialing, streams, identify; the S/Kademlia disjoint-path
 * extension.
 *
 * The seam with the network (jech/dht style): the host feeds the core
 *   - requests that arrive on an inbound stream of the DHT protocol: dht_handle_request()
 *     returns the response frame to write back (or none, for ADD_PROVIDER);
 *   - the response to, or failure of, each outgoing request: dht_on_response()/dht_on_failure();
 *   - connection events: dht_peer_connected()/dht_peer_disconnected();
 *   - the time: dht_periodic() at or after the deadline it returned.
 * and drains outgoing requests with dht_next_request(): open a stream to the peer on
 * dht_protocol_id(), write the frame, read one length-prefixed response (unless
 * expects_response is false), close. Times are milliseconds of a monotonic clock chosen by the
 * caller (a virtual clock in tests). All randomness comes from the seed in the config.
 * Thread rule: a struct dht belongs to one thread (the host's loop); no globals.
 */
#ifndef MESH_NET_DHT_H
#define MESH_NET_DHT_H

#include "net/multiaddr.h"
#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DHT_PROTOCOL_IPFS "/ipfs/kad/1.0.0"
#define DHT_PROTOCOL_MESHLLM "/meshllm/kad/1.0.0"

#define DHT_K 20                /* bucket size and replication factor */
#define DHT_ALPHA 3             /* requests in flight per lookup */
#define DHT_KEY_LEN 32          /* SHA-256 keyspace */
#define DHT_MSG_MAX_LEN 65536   /* largest message (without its length prefix) we accept */
#define DHT_RECORD_KEY_MAX 512  /* longest record / provider key */
#define DHT_RECORD_VALUE_MAX 16384
#define DHT_PEER_ADDRS_MAX 4    /* addresses kept per peer */
#define DHT_MSG_PEERS_MAX 40    /* closer/provider peers accepted in one message */
#define DHT_MSG_ADDRS_MAX 32    /* addresses per peer accepted in one message */
#define DHT_PROVIDERS_PER_KEY 32      /* providers stored per key */
#define DHT_PROVIDER_RECORDS_MAX 16384 /* default provider_records_max */
#define DHT_PROVIDER_KEYS_PER_PEER 256 /* default provider_keys_per_peer */
#define DHT_RECORDS_MAX 4096           /* default records_max */
#define DHT_RECORD_BYTES_MAX (8u << 20) /* default record_bytes_max */
#define DHT_RECORDS_PER_PEER 256       /* default records_per_peer */
#define DHT_REPLACEMENTS 8             /* replacement cache per k-bucket */
#define DHT_QUERY_VALUES_MAX 16

/* Message types (dht.proto MessageType). */
enum {
    DHT_MSG_PUT_VALUE = 0,
    DHT_MSG_GET_VALUE = 1,
    DHT_MSG_ADD_PROVIDER = 2,
    DHT_MSG_GET_PROVIDERS = 3,
    DHT_MSG_FIND_NODE = 4,
    DHT_MSG_PING = 5,
};

/* A peer and the addresses we know for it (binary multiaddrs). Plain value. */
struct dht_peer {
    struct peer_id id;
    size_t n_addrs;
    struct multiaddr addrs[DHT_PEER_ADDRS_MAX];
};

/* Record validator for one namespace (the text between the first two '/' of a key).
 * validate: 0 if value is acceptable under key, else MESH_EPROTO / MESH_ECRYPTO.
 * select: index into vals of the best of n >= 1 valid values (0 if NULL). */
struct dht_validator {
    const char *ns;
    int (*validate)(void *ud, const uint8_t *key, size_t key_len, const uint8_t *val,
                    size_t val_len);
    size_t (*select)(void *ud, const uint8_t *key, size_t key_len, const uint8_t *const *vals,
                     const size_t *val_lens, size_t n);
    void *ud;
};

struct dht_config {
    struct peer_id self;
    const char *protocol_id;        /* DHT_PROTOCOL_IPFS or DHT_PROTOCOL_MESHLLM (copied) */
    bool is_server;                 /* answer requests (server mode) or only ask (client) */
    uint8_t seed[32];               /* randomness for refresh keys and tie breaking */
    uint64_t request_timeout_ms;    /* 0: 10 s */
    uint64_t refresh_interval_ms;   /* 0: 10 min; bucket refresh */
    uint64_t provider_ttl_ms;       /* 0: 48 h */
    uint64_t record_ttl_ms;         /* 0: 48 h */
    /* Store limits (docs/PROTOCOL.md "Resource limits: tables"); 0: the default. A peer
     * over its quota is refused; when a table is full, the oldest entry of the peer holding
     * the most makes room, unless the sender is that peer. Our own entries are exempt. */
    size_t records_max;             /* 0: DHT_RECORDS_MAX stored records */
    size_t record_bytes_max;        /* 0: DHT_RECORD_BYTES_MAX bytes of keys + values */
    size_t records_per_peer;        /* 0: DHT_RECORDS_PER_PEER records stored by one peer */
    size_t provider_keys_max;       /* 0: 4096 keys with providers */
    size_t provider_records_max;    /* 0: DHT_PROVIDER_RECORDS_MAX (key, provider) pairs */
    size_t provider_keys_per_peer;  /* 0: DHT_PROVIDER_KEYS_PER_PEER keys one peer provides */
    /* Called when a query finishes (from inside dht_on_response/dht_on_failure/dht_periodic/
     * dht_query_start). It may read the query and dht_query_release() it, but must not start
     * or stop other queries from inside the callback. */
    void (*on_query_done)(void *ud, uint64_t qid);
    void *ud;
};

/* An outgoing request the host must deliver. msg is malloc'd and owned by the caller after
 * dht_next_request (free()); it already carries the uvarint length prefix. */
struct dht_request {
    uint64_t req_id;
    struct dht_peer peer;
    int type;
    bool expects_response;
    uint8_t *msg;
    size_t msg_len;
};

/* State of a query (dht_query_status). */
enum { DHT_QUERY_RUNNING = 0, DHT_QUERY_DONE = 1, DHT_QUERY_FAILED = 2 };

/* Figures about a finished (or running) query. */
struct dht_query_stats {
    size_t n_requests;  /* requests sent */
    size_t n_failures;  /* requests that failed or timed out */
    size_t n_answers;   /* responses received */
    unsigned hops;      /* hop depth at which the closest result was learned (1 = seed) */
    uint64_t started_ms, finished_ms;
};

/* The core's tables and what their limits refused or evicted (net/README.md). */
struct dht_stats {
    size_t n_table;                 /* routing table peers */
    size_t n_replacements;          /* peers waiting in the buckets' replacement caches */
    size_t n_records, record_bytes; /* stored records; their slots, keys and values */
    size_t record_bytes_max;        /* the bound record_bytes never exceeds */
    size_t n_provider_keys, n_provider_records;
    size_t provider_bytes;          /* keys, per-key arrays and packed addresses */
    size_t provider_bytes_max;      /* the bound provider_bytes never exceeds */
    uint64_t n_table_refused;       /* newcomers kept out of a full bucket (live entries) */
    uint64_t n_table_replaced;      /* dead entries replaced from the replacement cache */
    uint64_t n_value_quota_refused; /* PUT_VALUE over the sender's records_per_peer */
    uint64_t n_value_full_refused;  /* no room, and the sender already held the most */
    uint64_t n_value_evicted;       /* records evicted to make room */
    uint64_t n_provider_quota_refused;
    uint64_t n_provider_full_refused;
    uint64_t n_provider_evicted;
};

struct dht;

/* Creates a core. Copies the config. Returns 0, MESH_EINVAL (no self id) or MESH_ENOMEM. */
int dht_new(const struct dht_config *cfg, struct dht **out);
/* Frees the core, its queries and pending requests; NULL is fine. */
void dht_free(struct dht *d);

const char *dht_protocol_id(const struct dht *d);
bool dht_is_server(const struct dht *d);
/* Switches between client and server mode (e.g. after learning we are reachable). */
void dht_set_server(struct dht *d, bool is_server);

/* Registers (or replaces) a namespace validator; the core copies the struct, not ns's text
 * (keep it alive). /pk and /meshllm are registered by dht_new. Returns 0 or MESH_EFULL. */
int dht_validator_add(struct dht *d, const struct dht_validator *v);

/* 32-byte DHT key of arbitrary bytes: SHA-256. */
void dht_key_of(const uint8_t *b, size_t len, uint8_t key[DHT_KEY_LEN]);

/* --- connection events and routing table ----------------------------------------------- */

/* The host connected to a peer (after identify) that speaks our DHT protocol in server mode
 * (is_server), or not. Server-mode peers enter the routing table. */
void dht_peer_connected(struct dht *d, uint64_t now_ms, const struct dht_peer *p, bool is_server);
/* Connection closed: the peer stays in the table (Kademlia keeps long-lived peers). */
void dht_peer_disconnected(struct dht *d, uint64_t now_ms, const struct peer_id *id);
/* Removes a peer from the routing table (e.g. after repeated dial failures). */
void dht_peer_remove(struct dht *d, const struct peer_id *id);

/* Number of peers in the routing table. */
size_t dht_table_size(const struct dht *d);
/* Up to n_max table peers closest to key (32 bytes), nearest first; returns how many. */
size_t dht_table_closest(const struct dht *d, const uint8_t key[DHT_KEY_LEN],
                         struct dht_peer *out, size_t n_max);

/* --- inbound requests (server side) ------------------------------------------------------ */

/* Handles one request frame body (without its length prefix; see dht_frame_split) received
 * from peer `from` on an inbound stream. On success *resp is a malloc'd response frame with
 * its length prefix (or NULL when the request has no response, ADD_PROVIDER); caller frees.
 * Returns 0, MESH_EPROTO (malformed or invalid request: close the stream), MESH_ECRYPTO
 * (record failed validation), MESH_EUNSUPPORTED (client mode) or MESH_ENOMEM. */
int dht_handle_request(struct dht *d, uint64_t now_ms, const struct dht_peer *from,
                       const uint8_t *msg, size_t msg_len, uint8_t **resp, size_t *resp_len);

/* Splits one length-prefixed frame off buf: 0 with *body, *body_len and *used (prefix + body)
 * set; MESH_EAGAIN if more bytes are needed; MESH_EPROTO (bad varint) or MESH_ERANGE (larger
 * than DHT_MSG_MAX_LEN). */
int dht_frame_split(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len,
                    size_t *used);

/* --- outgoing requests (client side) ----------------------------------------------------- */

/* Pops the next request to send. Returns 0 and fills *req (caller frees req->msg), or
 * MESH_ENOTFOUND when there is none. */
int dht_next_request(struct dht *d, struct dht_request *req);
/* The response body (without its prefix) to request req_id. Unknown / finished req_id is
 * ignored (returns 0). A malformed response counts as a failure; returns MESH_EPROTO. */
int dht_on_response(struct dht *d, uint64_t now_ms, uint64_t req_id, const uint8_t *msg,
                    size_t msg_len);
/* The request could not be delivered (dial failed, stream reset, no response). */
void dht_on_failure(struct dht *d, uint64_t now_ms, uint64_t req_id);

/* Runs timers: request timeouts, bucket refresh, expiry of records and providers. Returns
 * the time (ms) at which it wants to be called next. */
uint64_t dht_periodic(struct dht *d, uint64_t now_ms);

/* --- queries --------------------------------------------------------------------------- */

/* Adds the given peers as seeds and starts a lookup of our own ID (spec "Bootstrap process").
 * Returns 0 and the query id in *qid, or MESH_EINVAL (n == 0), MESH_ENOMEM. */
int dht_bootstrap(struct dht *d, uint64_t now_ms, const struct dht_peer *peers, size_t n,
                  uint64_t *qid);
/* Iterative FIND_NODE for key bytes (a peer ID's multihash for a peer lookup). */
int dht_find_node(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                  uint64_t *qid);
/* GET_VALUE: collects valid records until quorum (>= 1) of them or the lookup ends. */
int dht_get_value(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                  size_t quorum, uint64_t *qid);
/* PUT_VALUE: validates the record, stores it locally (server mode), finds the k closest
 * peers and sends it to each. MESH_ECRYPTO / MESH_EPROTO if the record is invalid. */
int dht_put_value(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                  const uint8_t *val, size_t val_len, uint64_t *qid);
/* ADD_PROVIDER: announces `self` (with self_addrs) as provider of key to the k closest. */
int dht_provide(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                const struct dht_peer *self_info, uint64_t *qid);
/* GET_PROVIDERS: collects up to n_max providers (stops early when that many are found). */
int dht_get_providers(struct dht *d, uint64_t now_ms, const uint8_t *key, size_t key_len,
                      size_t n_max, uint64_t *qid);

/* DHT_QUERY_RUNNING/DONE/FAILED, or MESH_ENOTFOUND for an unknown id. FAILED means no peer
 * answered at all (or, for PUT_VALUE/ADD_PROVIDER, no peer to store at). */
int dht_query_status(const struct dht *d, uint64_t qid);
/* The closest peers found (answered), nearest first; returns how many were copied. */
size_t dht_query_closest(const struct dht *d, uint64_t qid, struct dht_peer *out, size_t n_max);
/* Value i of a GET_VALUE query (pointer valid until release) or MESH_ENOTFOUND; *best is the
 * index the namespace's select picked (if best != NULL). */
int dht_query_value(const struct dht *d, uint64_t qid, size_t i, const uint8_t **val,
                    size_t *val_len, size_t *n_values, size_t *best);
/* Providers found by a GET_PROVIDERS query; returns how many were copied. */
size_t dht_query_providers(const struct dht *d, uint64_t qid, struct dht_peer *out,
                           size_t n_max);
int dht_query_stats(const struct dht *d, uint64_t qid, struct dht_query_stats *st);
/* Stops (if running) and forgets the query. Safe inside on_query_done. */
void dht_query_release(struct dht *d, uint64_t qid);

/* --- local store ----------------------------------------------------------------------- */

/* Our stored record for key, if any (pointer valid until the next call into the core). */
int dht_record_get(const struct dht *d, const uint8_t *key, size_t key_len, const uint8_t **val,
                   size_t *val_len);
/* Copies the counters and table sizes. */
void dht_stats(const struct dht *d, struct dht_stats *st);
/* Number of providers we store for key. */
size_t dht_providers_count(const struct dht *d, uint64_t now_ms, const uint8_t *key,
                           size_t key_len);

/* --- the /meshllm record namespace ------------------------------------------------------- */

struct identity;

/* Builds a /meshllm record: key "/meshllm/<peer id base58>/<name>", value
 *   0x01 | seq (8 bytes big-endian) | Ed25519 signature (64) | data
 * with the signature over "meshllm-record:" || key || seq || data by the peer named in the
 * key. Higher seq wins. key (cap >= 16 + PEER_ID_TEXT_CAP + strlen(name)) and val
 * (cap >= 73 + data_len) are caller buffers. Returns 0, MESH_ERANGE or MESH_EINVAL. */
int dht_meshllm_record_make(const struct identity *id, const char *name, uint64_t seq,
                            const uint8_t *data, size_t data_len, uint8_t *key, size_t key_cap,
                            size_t *key_len, uint8_t *val, size_t val_cap, size_t *val_len);

/* Validators usable on their own (also registered by dht_new). */
int dht_validate_pk(void *ud, const uint8_t *key, size_t key_len, const uint8_t *val,
                    size_t val_len);
int dht_validate_meshllm(void *ud, const uint8_t *key, size_t key_len, const uint8_t *val,
                         size_t val_len);

/* --- message codec (also the fuzz target's entry) ---------------------------------------- */

/* Decodes and validates a message body: type in range, key and record sizes, every peer ID
 * and address. Returns 0 or MESH_EPROTO; used by the handlers above. */
int dht_msg_check(const uint8_t *msg, size_t msg_len);

#endif
