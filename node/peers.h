/* peers.h - the node's table of mesh peers: what each offers (from its announcements), how
 * far it is (ping RTT), how it has served us (reputation), and which one to ask.
 *
 * The table is policy, so it lives in node/: net/ only reports connections and pings. Each
 * entry merges an author's latest announcement (net/proto/announce.proto; a higher seq
 * replaces it, the record expires ttl after arrival), the host's view (connected, RTT) and
 * the router's outcomes (ok, failed, busy, lied). Choosing a peer (peers_rank) scores the
 * peers that serve a model, lower is better:
 *     rtt_ms + 25 ms x (queued + active-beyond-slots + our in-flight requests)
 *            + 200 ms x failure ratio + 2000 ms per lie found, x 0.5 when the peer holds
 *     the conversation's longest prefix (affinity) and is not overloaded.
 * The weights are rough costs in milliseconds of time to first token (docs/MESH.md says
 * why). Thread rule: every function locks the table's mutex; call from any thread.
 */
#ifndef MESH_NODE_PEERS_H
#define MESH_NODE_PEERS_H

#include "net/multiaddr.h"
#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PEERS_MAX 256          /* entries; strangers are evicted first (docs/MESH.md) */
#define PEERS_MAX_MODELS 16    /* models kept per peer */
#define PEERS_MAX_ADDRS 4
#define PEERS_MAX_PREFIXES 64  /* conversation digests kept per peer */
#define PEERS_MAX_BLOBS 16     /* store files kept per peer (announce.proto Blob) */

struct peers_model {
    char name[128];
    char digest[65];
    char quant[16];
    int n_ctx;
    uint64_t file_bytes;
    float gen_tps;
    int n_slots, n_active, n_queued;
    /* A stage of a split model: layers [layer_begin, layer_end) of n_layer; n_layer 0 =
     * the whole model (only those are delegated whole requests). */
    int layer_begin, layer_end, n_layer;
};

/* A model store file a peer provides on /meshllm/blob/1 (docs/MODELS.md). */
struct peers_blob {
    char name[168];            /* "NAME:TAG" in its store */
    char content_id[65];       /* hex BEP 52 root */
    uint64_t size;             /* bytes */
    uint32_t piece_len;        /* a power of two, 16 KiB .. 4 MiB */
};

struct peers_entry {
    struct peer_id id;
    char id_text[64];
    struct multiaddr addrs[PEERS_MAX_ADDRS];
    int n_addrs;
    bool is_connected;
    bool is_member;            /* presented a valid certificate */
    bool is_own;               /* holds the mesh owner's key (an owner device) */
    bool is_lite;
    int64_t rtt_us;            /* last ping; -1 none */
    uint64_t ann_seq;          /* 0: no announcement yet */
    uint64_t ann_expires_ms;   /* on the table's clock */
    struct peers_model models[PEERS_MAX_MODELS];
    int n_models;
    uint64_t mem_free;
    float speed_gbps;          /* its memory read speed (0 unknown) */
    bool accept_stages;        /* loads layer ranges on /meshllm/stageload/1 */
    uint64_t prefixes[PEERS_MAX_PREFIXES];
    int n_prefixes;
    struct peers_blob blobs[PEERS_MAX_BLOBS];
    int n_blobs;
    uint32_t n_ok, n_fail, n_busy, n_lies;
    int n_inflight;            /* our requests running there now */
    uint64_t last_seen_ms;
    uint64_t unreachable_until_ms; /* a dial failed: not ranked until then unless connected */
};

struct peers;
int peers_new(struct peers **out);
void peers_free(struct peers *t);

/* Marks a peer's connection state / RTT / membership (creating its entry). now_ms is any
 * monotonic clock, the same for every call. */
void peers_set_connected(struct peers *t, const struct peer_id *id, bool connected,
                         uint64_t now_ms);
void peers_set_rtt(struct peers *t, const struct peer_id *id, int64_t rtt_us);
void peers_set_member(struct peers *t, const struct peer_id *id, bool is_member, bool is_own);
/* Drops a peer (revoked). */
void peers_remove(struct peers *t, const struct peer_id *id);

/* Applies an announcement (protobuf bytes) from author. Returns 0 (applied), MESH_EAGAIN
 * (older or equal seq: ignored) or MESH_EPROTO (malformed; nothing changed). */
int peers_on_announce(struct peers *t, const struct peer_id *author, const uint8_t *data,
                      size_t len, uint64_t now_ms);

/* Outcomes the router reports. */
enum peers_outcome { PEERS_OK = 0, PEERS_FAIL = 1, PEERS_BUSY = 2, PEERS_LIE = 3 };
void peers_report(struct peers *t, const struct peer_id *id, enum peers_outcome o);
void peers_inflight(struct peers *t, const struct peer_id *id, int delta);
/* A dial to the peer failed: peers_rank skips it until until_ms, unless it connects or
 * announces again meanwhile (a restarted peer may listen elsewhere). */
void peers_unreachable(struct peers *t, const struct peer_id *id, uint64_t until_ms);

/* A peer to ask, best first. */
struct peers_pick {
    struct peer_id id;
    char id_text[64];
    struct multiaddr addr;     /* to dial (ends in /p2p/ID) */
    double score_ms;
    int64_t rtt_us;
    int prefix_len;            /* messages of the conversation the peer holds */
    float gen_tps;
};
/* Peers that serve model whole (not a stage), are members (own only if own_only), are connected or dialable,
 * whose announcement is live at now_ms and which are not in exclude[n_exclude]; ranked by
 * score, at most cap. prefix[n_prefix] are the request's conversation digests (longest
 * last) for affinity. Returns how many. */
int peers_rank(struct peers *t, const char *model, bool own_only, const uint64_t *prefix,
               int n_prefix, const struct peer_id *exclude, int n_exclude, uint64_t now_ms,
               struct peers_pick *out, int cap);

/* Conversation digests for prefix affinity, on both sides (the router hashing a request,
 * a node announcing what its slots hold): out[i] covers the model and messages 0..i
 * (BLAKE2b-64 chained over each message's role and content). Returns n. */
int peers_conv_digests(const char *model, const char *const *roles,
                       const char *const *contents, int n, uint64_t *out);

/* Stages of a split model: live members announcing the content hash digest with a
 * non-empty layer range of n_layer layers, connected or dialable, not in exclude; ranked by
 * the same score as peers_rank (best first), at most cap. Returns how many. */
struct peers_stage {
    struct peers_pick pick;
    int layer_begin, layer_end;
};
int peers_stages(struct peers *t, const char *digest, int n_layer, const struct peer_id *exclude,
                 int n_exclude, uint64_t now_ms, struct peers_stage *out, int cap);

/* Snapshot of every entry (for JSON and the store); returns how many, at most cap. */
int peers_snapshot(struct peers *t, struct peers_entry *out, int cap);
/* Restores a remembered entry (addresses and reputation from the store): no announcement,
 * not connected. */
void peers_restore(struct peers *t, const struct peers_entry *e);

/* What a node says of itself beside its models. */
struct peers_self {
    uint64_t mem_free;
    float speed_gbps;
    bool accept_stages;
};
/* The announce record of this node (protobuf, malloc'd into *out): its models, addresses,
 * what it says of itself, its conversation prefixes and the store files it provides on
 * /meshllm/blob/1 (blobs[n_blobs], at most PEERS_MAX_BLOBS are sent; NULL, 0: none). */
int peers_announce_encode_self(uint64_t seq, uint32_t ttl_s, const struct peers_model *models,
                               int n_models, const struct multiaddr *addrs, int n_addrs,
                               const struct peers_self *self, const uint64_t *prefixes,
                               int n_prefixes, const struct peers_blob *blobs, int n_blobs,
                               uint8_t **out, size_t *out_len);
/* The same with only mem_free of peers_self and no blobs. */
int peers_announce_encode(uint64_t seq, uint32_t ttl_s, const struct peers_model *models,
                          int n_models, const struct multiaddr *addrs, int n_addrs,
                          uint64_t mem_free, const uint64_t *prefixes, int n_prefixes,
                          uint8_t **out, size_t *out_len);

/* Providers of a store file: spec is a content ID (64 hex digits) or a store name
 * ("NAME" = "NAME:latest"), resolved to the content ID of the first live member that
 * announces it under that name. Fills *blob (zeroed first) with what was announced and
 * out[cap] with the live members that announce that content ID, not in exclude, best first
 * (RTT, failures, 2000 ms per lie). Returns how many (0: nobody has it). */
int peers_blob_providers(struct peers *t, const char *spec, const struct peer_id *exclude,
                         int n_exclude, uint64_t now_ms, struct peers_blob *blob,
                         struct peers_pick *out, int cap);

#endif
