/* mdns.h - libp2p mDNS discovery core: DNS message codec and the query/answer logic. No I/O.
 *
 * Follows libp2p/specs discovery/mdns.md over RFC 6762/1035 messages: a node asks with a PTR
 * question for "_p2p._udp.local"; a node answers with a PTR record pointing at
 * "<random peer name>._p2p._udp.local" and TXT records for that name whose strings are
 * "dnsaddr=<multiaddr ending in /p2p/<peer id>>" (we read TXT records from the answer and the
 * additional sections; we write them in the additional section). The parser is strict: header
 * counts bounded, names decompressed with backward-only pointers, labels <= 63 bytes of
 * printable ASCII without '.', names <= 255 bytes, rdata lengths exact, no trailing bytes.
 * Not done here: sockets and multicast membership (the host sends what mdns_next_packet()
 * gives to 224.0.0.251:5353 / [ff02::fb]:5353, and must do so only inside a test's network
 * namespace on development machines), known-answer suppression, probing / name conflicts.
 * Thread rule: a struct mdns belongs to one thread; no globals.
 */
#ifndef MESH_NET_MDNS_H
#define MESH_NET_MDNS_H

#include "net/multiaddr.h"
#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MDNS_SERVICE "_p2p._udp.local"
#define MDNS_PORT 5353
#define MDNS_IP4_GROUP "224.0.0.251"
#define MDNS_IP6_GROUP "ff02::fb"
#define MDNS_MSG_MAX 9000       /* RFC 6762 section 17: largest mDNS message */
#define MDNS_NAME_MAX 255       /* dotted text, without trailing dot */
#define MDNS_QUESTIONS_MAX 16
#define MDNS_RRS_MAX 64         /* answer + authority + additional records */
#define MDNS_ADDRS_MAX 8        /* addresses kept per discovered peer */

enum { MDNS_TYPE_A = 1, MDNS_TYPE_PTR = 12, MDNS_TYPE_TXT = 16, MDNS_TYPE_AAAA = 28,
       MDNS_TYPE_ANY = 255 };
enum { MDNS_CLASS_IN = 1 };

struct mdns_question {
    char name[MDNS_NAME_MAX + 1];
    uint16_t type, qclass; /* qclass without the unicast-response bit */
    bool unicast_response;
};

enum { MDNS_SEC_ANSWER = 0, MDNS_SEC_AUTHORITY = 1, MDNS_SEC_ADDITIONAL = 2 };

struct mdns_rr {
    char name[MDNS_NAME_MAX + 1];
    uint16_t type, rclass; /* rclass without the cache-flush bit */
    uint8_t section;
    uint32_t ttl;
    const uint8_t *rdata;  /* points into the parsed buffer */
    uint16_t rdata_len;
    char ptr[MDNS_NAME_MAX + 1]; /* PTR target, decompressed (PTR only) */
};

/* A parsed message. Large (~40 KB): keep it off small stacks. */
struct mdns_msg {
    uint16_t id, flags;
    size_t n_questions, n_rrs;
    struct mdns_question q[MDNS_QUESTIONS_MAX];
    struct mdns_rr rr[MDNS_RRS_MAX];
};

/* Parses a DNS message strictly. Returns 0 or MESH_EPROTO. */
int mdns_msg_parse(const uint8_t *b, size_t len, struct mdns_msg *out);

/* Iterates the character-strings of TXT rdata: *pos starts at 0; returns 1 with *s, *s_len
 * while strings remain, 0 at the end. Only for rdata accepted by mdns_msg_parse. */
int mdns_txt_next(const struct mdns_rr *rr, size_t *pos, const uint8_t **s, size_t *s_len);

/* Writes the PTR query for _p2p._udp.local. Returns 0 or MESH_ERANGE. */
int mdns_query_build(uint8_t *buf, size_t cap, size_t *len);

/* Writes a response: PTR _p2p._udp.local -> <peer_name>._p2p._udp.local, and one TXT record
 * for that name with "dnsaddr=<addr text>" per address (addrs must end in /p2p/<id>).
 * Returns 0, MESH_EINVAL (bad name) or MESH_ERANGE (does not fit cap). */
int mdns_response_build(const char *peer_name, const struct multiaddr *addrs, size_t n_addrs,
                        uint32_t ttl_s, uint8_t *buf, size_t cap, size_t *len);

/* A peer found in a response. */
struct mdns_peer {
    struct peer_id id;
    size_t n_addrs;
    struct multiaddr addrs[MDNS_ADDRS_MAX];
};

struct mdns_config {
    struct peer_id self;
    uint8_t seed[32];             /* picks the random peer name */
    uint64_t query_interval_ms;   /* 0: 10 s */
    uint32_t ttl_s;               /* 0: 120 */
};

struct mdns;

int mdns_new(const struct mdns_config *cfg, struct mdns **out);
void mdns_free(struct mdns *m);
/* Our random DNS label ("<name>._p2p._udp.local"). */
const char *mdns_peer_name(const struct mdns *m);

/* Sets the addresses we announce (listen addresses; /p2p/<self> is appended if missing).
 * Returns 0, MESH_ERANGE (too many / too long) or MESH_EINVAL. */
int mdns_set_addrs(struct mdns *m, const struct multiaddr *addrs, size_t n);

/* Handles one received UDP payload. Queries for our service queue a response; responses
 * queue the peers they name (ourselves excluded). Returns 0 or MESH_EPROTO (not a valid DNS
 * message: drop it). */
int mdns_on_packet(struct mdns *m, uint64_t now_ms, const uint8_t *b, size_t len);

/* Pops the next packet to multicast (malloc'd, caller frees). 0 or MESH_ENOTFOUND. */
int mdns_next_packet(struct mdns *m, uint8_t **buf, size_t *len);
/* Pops the next discovered peer. 0 or MESH_ENOTFOUND. */
int mdns_next_peer(struct mdns *m, struct mdns_peer *p);

/* Queues a query when the interval has passed (the first call queries at once). Returns the
 * next deadline. */
uint64_t mdns_periodic(struct mdns *m, uint64_t now_ms);

#endif
