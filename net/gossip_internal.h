/* gossip_internal.h - state shared by gossip.c (the router) and gossip_rpc.c (RPC building
 * and checking). Not part of the API; nothing outside net/gossip*.c includes it.
 */
#ifndef MESH_NET_GOSSIP_INTERNAL_H
#define MESH_NET_GOSSIP_INTERNAL_H

#include "core/rng.h"
#include "net/gossip.h"

#include "gossip.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HISTORY_MAX 16
#define RPC_SUBS_MAX 128
#define RPC_PUBLISH_MAX 256
#define RPC_CONTROL_MAX 128     /* ihave/iwant/graft/prune entries per RPC */
#define RPC_IDS_MAX 5000        /* message ids per IHAVE / IWANT entry */
#define RPC_ID_LEN_MAX 128      /* longest message id accepted from others */
#define RPC_PX_MAX 32
#define SERVED_MAX 8            /* peers remembered per message for IWANT retransmission */
#define PROMISES_MAX 512        /* open IWANT promises; bounds the duplicate-ask scan */

struct g_msg {
    int refs;
    uint8_t id[GOSSIP_MSG_ID_MAX_LEN];
    size_t id_len;
    uint16_t topic;
    uint8_t *raw; /* marshalled Message, signature included */
    size_t raw_len;
    uint32_t served_peer[SERVED_MAX];
    uint8_t served_n[SERVED_MAX];
    size_t n_served;
};

struct g_tstat {
    uint16_t topic;
    bool in_mesh, mesh_active;
    uint64_t graft_ms;
    double first_deliveries, mesh_deliveries, mesh_failure, invalid;
};

struct g_ihave {
    uint16_t topic;
    struct g_msg *m;
};

struct g_id {
    uint8_t len;
    uint8_t b[RPC_ID_LEN_MAX];
};

struct g_prune {
    uint16_t topic;
    uint64_t backoff_s;
    struct peer_id *px; /* malloc'd, n_px peer IDs offered (gossipsub-v1.1 PX) */
    size_t n_px;
};

struct g_subopt {
    uint16_t topic;
    bool sub;
};

/* Control and messages waiting to be sent to one peer. */
struct g_pending {
    struct g_subopt *subs;
    size_t n_subs, cap_subs;
    struct g_msg **msgs;
    size_t n_msgs, cap_msgs;
    struct g_ihave *ihave;
    size_t n_ihave, cap_ihave;
    struct g_id *iwant;
    size_t n_iwant, cap_iwant;
    uint16_t *graft;
    size_t n_graft, cap_graft;
    struct g_prune *prune;
    size_t n_prune, cap_prune;
};

struct g_peer {
    struct peer_id id;
    uint32_t serial;
    bool outbound;
    uint16_t topics[GOSSIP_PEER_TOPICS_MAX]; /* its subscriptions */
    size_t n_topics;
    struct g_tstat *ts;
    size_t n_ts, cap_ts;
    double behaviour_penalty;
    uint8_t ip[16]; /* for P6; ip_len 0: unknown */
    size_t ip_len;
    int n_ihave_rpcs, n_ihave_asked; /* this heartbeat */
    struct g_pending out;
};

struct g_backoff {
    struct peer_id id;
    uint64_t until_ms;
};

struct g_topic {
    char name[GOSSIP_TOPIC_MAX_LEN + 1];
    bool subscribed;
    struct g_peer **mesh;
    size_t n_mesh, cap_mesh;
    struct g_peer **fanout;
    size_t n_fanout, cap_fanout;
    uint64_t fanout_last_pub_ms;
    struct g_backoff *bo;
    size_t n_bo, cap_bo;
};

struct g_seen {
    uint64_t h;
    uint64_t expire_ms, first_ms;
    uint8_t len; /* 0: empty slot */
    uint8_t id[GOSSIP_MSG_ID_MAX_LEN];
};

struct g_promise {
    struct g_id id;
    uint32_t peer;
    uint64_t deadline_ms;
};

struct g_window {
    struct g_msg **m;
    size_t n, cap;
};

struct gossip {
    struct gossip_config cfg;
    struct identity ident;
    struct gossip_params p;
    struct gossip_score_params sp;
    struct rng rng;
    uint64_t seqno;
    struct g_peer **peers;
    size_t n_peers, cap_peers;
    uint32_t next_serial;
    size_t out_cursor;
    struct g_topic *topics[GOSSIP_TOPICS_MAX];
    size_t n_topics;
    struct g_window win[HISTORY_MAX];
    size_t mcache_n, mcache_bytes; /* messages and raw bytes in win[] */
    struct g_seen *seen;
    size_t seen_cap, seen_n;
    struct g_promise *prom;
    size_t n_prom, cap_prom;
    struct peer_id px[GOSSIP_PX_QUEUE]; /* peer-exchange suggestions received */
    size_t n_px;
    bool has_time;
    uint64_t next_heartbeat_ms, next_decay_ms;
    uint64_t n_heartbeats;
    struct gossip_stats st;
};

/* gossip.c */
void gossip_msg_unref(struct g_msg *m);
/* Grows *p (elements of elem bytes, capacity *cap) to hold need. 0 or MESH_ENOMEM. */
int gossip_grow(void **p, size_t *cap, size_t need, size_t elem);

/* gossip_rpc.c: queue control and messages for a peer (they leave with the next RPC) */
void gossip_out_sub(struct g_peer *p, int topic, bool sub);
void gossip_out_msg(struct g_peer *p, struct g_msg *m);
void gossip_out_ihave(struct g_peer *p, int topic, struct g_msg *m);
void gossip_out_iwant(struct g_peer *p, const uint8_t *id, size_t len);
void gossip_out_graft(struct g_peer *p, int topic);
void gossip_out_prune(struct g_peer *p, int topic, uint64_t backoff_ms, const struct peer_id *px,
                      size_t n_px);
bool gossip_pending_any(const struct g_pending *o);
void gossip_pending_clear(struct g_pending *o, size_t n_msgs_sent);
void gossip_pending_free(struct g_pending *o);
/* Decodes and checks the structural limits of an RPC body. 0 or MESH_EPROTO. */
int gossip_rpc_decode(const uint8_t *body, size_t body_len, Pubsub__Pb__RPC **out);

#endif
