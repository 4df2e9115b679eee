/* gossip.h - GossipSub v1.1 protocol core (/meshsub/1.1.0). Does no I/O.
 *
 * Follows libp2p/specs pubsub/README.md (RPC, message signing "StrictSign": from, seqno and
 * an Ed25519 signature over "libp2p-pubsub:" || the marshalled Message without signature and
 * key; message id = from || seqno), pubsub/gossipsub/gossipsub-v1.0.md (mesh of degree D
 * within [Dlo, Dhi], fanout, message cache with history 5 / gossip 3, IHAVE/IWANT, seen cache,
 * 1 s heartbeat) and gossipsub-v1.1.md (PRUNE backoff, flood publishing, outbound mesh quota
 * Dout, opportunistic grafting, IWANT promises, peer scoring P1, P2, P3, P3b, P4, P5, P6, P7
 * with the gossip / publish / graylist thresholds, peer exchange on PRUNE with peer IDs only).
 * Not done: signed peer records in PX, P6 whitelists, score retention after disconnection,
 * IDONTWANT (v1.2), anonymous / unsigned modes.
 *
 * The seam with the network: the host opens one /meshsub/1.1.0 stream each way per peer, then
 *   - gossip_peer_add()/gossip_peer_remove() on connect / disconnect;
 *   - gossip_on_rpc() for each uvarint-length-prefixed RPC read from a peer's inbound stream
 *     (split frames with gossip_frame_split());
 *   - gossip_next_output() until MESH_ENOTFOUND after every call, writing each frame (prefix
 *     included) on the outbound stream to that peer;
 *   - gossip_periodic() at or after the deadline it returns (the heartbeat).
 * Times are milliseconds of a caller-chosen monotonic clock; randomness comes from the seed.
 * Thread rule: a struct gossip belongs to one thread (the host's loop); no globals.
 */
#ifndef MESH_NET_GOSSIP_H
#define MESH_NET_GOSSIP_H

#include "net/identity.h"
#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GOSSIP_PROTOCOL_ID "/meshsub/1.1.0"
#define GOSSIP_SIGN_PREFIX "libp2p-pubsub:"
#define GOSSIP_RPC_MAX_LEN (1024 * 1024) /* largest RPC frame body accepted or sent */
#define GOSSIP_DATA_MAX_LEN (256 * 1024) /* largest message payload */
#define GOSSIP_TOPIC_MAX_LEN 256
#define GOSSIP_MSG_ID_MAX_LEN (PEER_ID_MAX_LEN + 8)
#define GOSSIP_PEER_TOPICS_MAX 64        /* subscriptions remembered per peer */
#define GOSSIP_TOPICS_MAX 256            /* topics known (ours and peers') */
#define GOSSIP_PX_QUEUE 64               /* peer-exchange suggestions kept */
/* State bounds (docs/PROTOCOL.md "Resource limits: tables"). */
#define GOSSIP_TOPICS_RESERVED 64        /* of GOSSIP_TOPICS_MAX, only for our own topics */
#define GOSSIP_PEERS_MAX 1024            /* peers in the router */
#define GOSSIP_SEEN_MAX 16384            /* message ids in the seen cache */
#define GOSSIP_MCACHE_MAX 4096           /* messages in the message cache */
#define GOSSIP_MCACHE_BYTES_MAX (32u << 20) /* their marshalled bytes */
#define GOSSIP_BACKOFF_MAX 1024          /* PRUNE backoffs remembered per topic */

/* Router parameters; gossip_params_default() gives the spec's values. */
struct gossip_params {
    int d, d_lo, d_hi, d_lazy, d_score, d_out;
    uint64_t heartbeat_ms;          /* 1000 */
    int history_length;             /* mcache windows kept: 5 */
    int history_gossip;             /* windows advertised in IHAVE: 3 */
    uint64_t fanout_ttl_ms;         /* 60 s */
    uint64_t seen_ttl_ms;           /* 120 s */
    uint64_t prune_backoff_ms;      /* 60 s */
    uint64_t unsubscribe_backoff_ms;/* 10 s */
    double gossip_factor;           /* 0.25 */
    int max_ihave_length;           /* 5000 ids per IHAVE, and asked per heartbeat */
    int max_ihave_messages;         /* 10 IHAVE RPCs accepted per peer per heartbeat */
    uint64_t iwant_followup_ms;     /* 3 s: a promised message must arrive by then */
    int gossip_retransmission;      /* 3: IWANT answers per message per peer */
    int opportunistic_graft_ticks;  /* 60 */
    int opportunistic_graft_peers;  /* 2 */
    bool flood_publish;             /* true: own messages go to every peer above publish thr. */
    bool do_px;                     /* false; true: offer peer exchange when pruning a full mesh */
    int prune_peers;                /* 16: peers offered in one PX */
};

/* Per-topic score parameters (gossipsub-v1.1.md "Topic Parameter Calculation"). */
struct gossip_topic_score_params {
    double topic_weight;
    double time_in_mesh_weight, time_in_mesh_cap;       /* P1 */
    uint64_t time_in_mesh_quantum_ms;
    double first_deliveries_weight, first_deliveries_decay, first_deliveries_cap; /* P2 */
    double mesh_deliveries_weight, mesh_deliveries_decay, mesh_deliveries_cap;     /* P3 */
    double mesh_deliveries_threshold;
    uint64_t mesh_deliveries_window_ms, mesh_deliveries_activation_ms;
    double mesh_failure_weight, mesh_failure_decay;     /* P3b */
    double invalid_weight, invalid_decay;               /* P4 */
};

struct gossip_score_params {
    struct gossip_topic_score_params topic;  /* used for every topic */
    double topic_score_cap;                  /* 0: none */
    double app_specific_weight;              /* P5 */
    double ip_colocation_weight;             /* P6 (<= 0; 0: off, the default) */
    double ip_colocation_threshold;          /* peers per IP before P6 applies */
    double behaviour_penalty_weight, behaviour_penalty_threshold, behaviour_penalty_decay; /* P7 */
    uint64_t decay_interval_ms;
    double decay_to_zero;
    /* thresholds */
    double gossip_threshold, publish_threshold, graylist_threshold;
    double accept_px_threshold, opportunistic_graft_threshold;
};

/* A message as delivered to the application (pointers valid during the callback). */
struct gossip_msg {
    const char *topic;
    const struct peer_id *from;     /* author (signed) */
    const struct peer_id *source;   /* peer it came from (== our id for our own) */
    const uint8_t *data;
    size_t data_len;
    uint64_t seqno;
    const uint8_t *id;              /* message id: from || seqno */
    size_t id_len;
};

enum { GOSSIP_ACCEPT = 0, GOSSIP_REJECT = 1, GOSSIP_IGNORE = 2 };

struct gossip_config {
    const struct identity *id;      /* signing key (copied) */
    uint8_t seed[32];
    const struct gossip_params *params;            /* NULL: defaults */
    const struct gossip_score_params *score;       /* NULL: defaults */
    /* Optional application validator: GOSSIP_ACCEPT, GOSSIP_REJECT (penalised as P4) or
     * GOSSIP_IGNORE (dropped, not penalised). */
    int (*validate)(void *ud, const struct gossip_msg *m);
    /* Optional P5 application-specific score of a peer. */
    double (*app_score)(void *ud, const struct peer_id *peer);
    /* Delivery of valid messages on subscribed topics (ours included). */
    void (*on_message)(void *ud, const struct gossip_msg *m);
    void *ud;
};

/* One frame for the host to write to `peer` (frame malloc'd, caller frees; length prefix
 * included). */
struct gossip_output {
    struct peer_id peer;
    uint8_t *frame;
    size_t frame_len;
};

/* Counters for tests and the console. */
struct gossip_stats {
    uint64_t n_delivered;     /* messages handed to on_message */
    uint64_t n_duplicates;    /* already-seen messages received */
    uint64_t n_invalid;       /* rejected (bad signature, validator REJECT) */
    uint64_t n_iwant_served;  /* messages sent in answer to IWANT */
    uint64_t n_iwant_sent;    /* ids asked for */
    uint64_t n_graylisted;    /* RPCs dropped because the peer is graylisted */
    uint64_t n_rpc_errors;    /* malformed RPCs */
    /* Bounded state: sizes now, and what the bounds refused or evicted. */
    size_t n_seen;            /* ids in the seen cache, <= GOSSIP_SEEN_MAX */
    size_t n_mcache;          /* messages in the message cache, <= GOSSIP_MCACHE_MAX */
    size_t mcache_bytes;      /* their bytes, <= GOSSIP_MCACHE_BYTES_MAX */
    size_t n_topics;          /* topics known, <= GOSSIP_TOPICS_MAX */
    uint64_t n_seen_evicted;      /* ids forgotten before seen_ttl_ms to stay in bounds */
    uint64_t n_mcache_evicted;    /* messages dropped from the cache before their time */
    uint64_t n_topics_refused;    /* peers' subscriptions to topics beyond the foreign share */
    uint64_t n_peer_topics_refused; /* subscriptions beyond GOSSIP_PEER_TOPICS_MAX of a peer */
    uint64_t n_peers_refused;     /* gossip_peer_add beyond GOSSIP_PEERS_MAX */
    uint64_t n_backoff_evicted;   /* backoffs dropped (soonest to expire) beyond the cap */
};

struct gossip;

void gossip_params_default(struct gossip_params *p);
void gossip_score_params_default(struct gossip_score_params *s);

/* Creates a router. Returns 0, MESH_EINVAL (no identity, inconsistent degrees) or
 * MESH_ENOMEM. */
int gossip_new(const struct gossip_config *cfg, struct gossip **out);
void gossip_free(struct gossip *g);

/* A peer speaking /meshsub/1.1.0 connected (outbound: we dialed it). Sends it our
 * subscriptions. Returns 0, MESH_EFULL or MESH_ENOMEM. */
int gossip_peer_add(struct gossip *g, uint64_t now_ms, const struct peer_id *peer,
                    bool outbound);
void gossip_peer_remove(struct gossip *g, uint64_t now_ms, const struct peer_id *peer);
/* The peer's IP address (4 or 16 bytes) for P6 (IP colocation). Unknown peers are ignored. */
void gossip_peer_set_ip(struct gossip *g, const struct peer_id *peer, const uint8_t *ip,
                        size_t ip_len);

int gossip_subscribe(struct gossip *g, uint64_t now_ms, const char *topic);
int gossip_unsubscribe(struct gossip *g, uint64_t now_ms, const char *topic);

/* Signs and publishes data on topic. The message id is written to id (cap >=
 * GOSSIP_MSG_ID_MAX_LEN) if id != NULL. Returns 0, MESH_EINVAL (topic/data too long),
 * MESH_ENOMEM. */
int gossip_publish(struct gossip *g, uint64_t now_ms, const char *topic, const uint8_t *data,
                   size_t data_len, uint8_t *id, size_t *id_len);

/* Handles one RPC body from peer. Returns 0, MESH_ENOTFOUND (unknown peer), MESH_EPROTO
 * (malformed: the host should reset the stream) or MESH_ENOMEM. Invalid messages inside a
 * well-formed RPC are dropped and penalised, not reported as errors. */
int gossip_on_rpc(struct gossip *g, uint64_t now_ms, const struct peer_id *peer,
                  const uint8_t *body, size_t body_len);

/* Splits one length-prefixed frame off buf (like dht_frame_split, GOSSIP_RPC_MAX_LEN). */
int gossip_frame_split(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len,
                       size_t *used);

/* Peer exchange: pops a peer ID that a peer with score >= accept_px_threshold offered in a
 * PRUNE and that we are not connected to. PX carries no addresses here (no signed peer
 * records): find them through the DHT before dialing. Returns 0 or MESH_ENOTFOUND. */
int gossip_next_px(struct gossip *g, struct peer_id *out);

/* Pops one frame to send. Returns 0 or MESH_ENOTFOUND. */
int gossip_next_output(struct gossip *g, struct gossip_output *out);

/* Heartbeat and timers. Returns the next deadline (ms). */
uint64_t gossip_periodic(struct gossip *g, uint64_t now_ms);

/* Current score of a peer (0 for unknown peers). */
double gossip_peer_score(struct gossip *g, uint64_t now_ms, const struct peer_id *peer);
/* Mesh peers of a topic we subscribe to; returns how many were copied (the mesh size when
 * out is NULL). */
size_t gossip_mesh_peers(const struct gossip *g, const char *topic, struct peer_id *out,
                         size_t n_max);
bool gossip_is_subscribed(const struct gossip *g, const char *topic);
void gossip_get_stats(const struct gossip *g, struct gossip_stats *st);

/* Decodes and checks an RPC body without acting on it (fuzz entry). 0 or MESH_EPROTO. */
int gossip_rpc_check(const uint8_t *body, size_t body_len);

#endif
