/* member.h - admission to a private mesh: certificates, invites, revocations, hello
 * (docs/PROTOCOL.md, "/meshllm/member/1").
 *
 * A mesh is an Ed25519 owner key. A member holds a certificate chain from that key to its
 * peer ID (at most MEMBER_CHAIN_MAX links); members invite others with signed tokens; the owner
 * revokes peer IDs, and a revocation removes everything certified below them. Pure protocol
 * core: no sockets, no clock (every call takes `now`, unix seconds); the caller carries the
 * messages on a /meshllm/member/1 stream (uvarint-length-prefixed, host_stream_write_msg).
 * Persistent state lives in node/store.h. Ed25519 = libsodium crypto_sign_*; SHA-256 =
 * crypto_hash_sha256.
 * Thread rule: a struct member may be used from any thread; member.mu guards all of it.
 */
#ifndef MESH_NODE_MEMBER_H
#define MESH_NODE_MEMBER_H

#include "net/identity.h"
#include "net/multiaddr.h"
#include "net/peer_id.h"
#include "node/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEMBER_PROTOCOL "/meshllm/member/1"
/* Largest MemberMsg accepted or produced: a 4-link chain is under 1 KiB, an invite's 16
 * addresses under 4.5 KiB, MEMBER_MSG_MAX_REVOCATIONS revocations about 40 KiB; 64 KiB leaves
 * room and bounds what one stream can make us buffer and parse (the DHT's limit too). */
#define MEMBER_MSG_MAX (64 * 1024)
/* Longest certificate chain: owner -> device -> 3 invite generations. Bounds verification
 * work per message and how far an invite can travel from the owner. */
#define MEMBER_CHAIN_MAX 4
#define MEMBER_CERT_VERSION 1
/* Revocations carried in one Hello / JoinResponse (the newest); the rest travel by gossip. */
#define MEMBER_MSG_MAX_REVOCATIONS 256
#define MEMBER_INVITE_MAX_ADDRS 16
#define MEMBER_INVITE_ID_LEN 16
#define MEMBER_INVITE_PREFIX "meshllm-invite:"
/* Longest token text accepted (prefix + base64 of MEMBER_MSG_MAX), with the NUL. */
#define MEMBER_TOKEN_CAP (sizeof MEMBER_INVITE_PREFIX + (MEMBER_MSG_MAX / 3 + 1) * 4 + 1)
/* "mesh-" + 26 base32 characters (first 16 bytes of SHA-256(owner key)) + NUL. */
#define MEMBER_MESH_ID_CAP 32
/* Peers remembered as admitted at once. */
#define MEMBER_MAX_ADMITTED 1024
/* The owner key, under DATA_DIR. */
#define MEMBER_OWNER_KEY_PATH "mesh/owner.key"

/* Why a certificate, invite, revocation or hello was refused. Stable numbers: they travel
 * in JoinResponse.refusal. */
enum member_refusal {
    MEMBER_OK = 0,
    MEMBER_R_MALFORMED = 1,         /* not a valid message or field */
    MEMBER_R_VERSION = 2,           /* certificate version we do not know */
    MEMBER_R_TOO_DEEP = 3,          /* chain longer than MEMBER_CHAIN_MAX */
    MEMBER_R_WRONG_MESH = 4,        /* another owner key than ours (or than the chain's) */
    MEMBER_R_BAD_SIGNATURE = 5,     /* a link's signature does not verify */
    MEMBER_R_ROOT_NOT_OWNER = 6,    /* the last link is not issued by the owner key */
    MEMBER_R_ISSUER_MISMATCH = 7,   /* a link's issuer is not its parent's subject */
    MEMBER_R_OWNER_DEVICE_FORGED = 8, /* owner_device on a link not issued by the owner */
    MEMBER_R_EXPIRED = 9,           /* a link expired (or was issued after it expires) */
    MEMBER_R_REVOKED = 10,          /* a subject in the chain is revoked */
    MEMBER_R_SUBJECT_MISMATCH = 11, /* the leaf is not the peer it was expected to be */
    MEMBER_R_NOT_MEMBER = 12,       /* this node has no certificate (cannot invite/hello) */
    MEMBER_R_INVITE_NOT_MINE = 13,  /* the invite was not signed by this node */
    MEMBER_R_INVITE_EXPIRED = 14,
    MEMBER_R_INVITE_USED = 15,      /* single-use invite already redeemed */
    MEMBER_R_INVITE_WRONG_PEER = 16, /* bound to another peer ID */
    MEMBER_R_BAD_TOKEN = 17,        /* token text not "meshllm-invite:" + base64url */
    MEMBER_R_NOT_OWNER = 18,        /* revocation not signed by the mesh owner */
    MEMBER_R_UNEXPECTED = 19,       /* a valid message of the wrong kind here */
    MEMBER_R_INTERNAL = 20,         /* our own failure (store, memory): not the peer's fault */
};

/* Text of a refusal ("certificate expired"); never NULL. */
const char *member_refusal_str(enum member_refusal r);

/* One verified link, decoded. chain.link[0] is the leaf, link[n-1] the owner-issued root. */
struct member_link {
    uint8_t owner_pk[32];
    struct peer_id subject;
    uint8_t issuer_pk[32];
    uint64_t issued_at, expires_at; /* unix s; expires_at 0 = never */
    bool owner_device;
};
struct member_chain {
    size_t n;
    struct member_link link[MEMBER_CHAIN_MAX];
    uint64_t expires_at; /* earliest expiry of the links, 0 = never */
};

/* Revocation lookup for verification: *revoked = whether peer (multihash bytes) is revoked
 * in the mesh of owner_pk. Returns 0 or a MESH_E* (refusal MEMBER_R_INTERNAL). */
typedef int (*member_revoked_fn)(void *ctx, const uint8_t owner_pk[32], const uint8_t *peer,
                                 size_t peer_len, bool *revoked);

/* ---- Pure functions (no struct member): any thread ---- */

/* mesh ID text of an owner key: "mesh-" + base32 (RFC 4648 lower case, no padding) of the
 * first 16 bytes of SHA-256(owner_pk). */
void member_mesh_id(const uint8_t owner_pk[32], char out[MEMBER_MESH_ID_CAP]);

/* Issues a certificate for subject (an Ed25519 peer ID), signed by issuer (the owner key, or
 * a member's node identity with parent = that member's own serialized certificate).
 * *out malloc'd (caller frees). A plain signer: it enforces no chain rule (depth,
 * owner_device), member_cert_verify does, so tests can build the hostile chains they refuse.
 * Node code issues through member_mesh_create and member_join_handle. Returns 0, MESH_EINVAL
 * (subject not an Ed25519 identity peer ID, parent over MEMBER_MSG_MAX) or MESH_ENOMEM. */
int member_cert_issue(const uint8_t owner_pk[32], const struct identity *issuer,
                      const uint8_t *parent, size_t parent_len, const struct peer_id *subject,
                      uint64_t issued_at, uint64_t expires_at, bool owner_device,
                      uint8_t **out, size_t *out_len);

/* Verifies a serialized certificate chain at now: every signature ("meshllm-cert-v1"), issuer
 * linkage, owner_device rule, expiry, revocation (revoked may be NULL: none known). owner_pk
 * (NULL = the chain's own) and subject (NULL = any) are what the caller expects. Fills *chain
 * (may be NULL). Returns 0, or MESH_EPROTO / MESH_ECRYPTO / other with *reason set. */
int member_cert_verify(const uint8_t *cert, size_t len, const uint8_t *owner_pk,
                       const struct peer_id *subject, uint64_t now, member_revoked_fn revoked,
                       void *ctx, struct member_chain *chain, enum member_refusal *reason);

/* Signs a revocation of peer with the owner key ("meshllm-revoke-v1"). *out malloc'd. */
int member_revocation_make(const struct identity *owner, const struct peer_id *peer,
                           uint64_t revoked_at, uint8_t **out, size_t *out_len);

/* What a joiner learns from a token, and the JoinRequest to send. */
struct member_join {
    uint8_t owner_pk[32];
    char mesh_id[MEMBER_MESH_ID_CAP];
    struct peer_id inviter;  /* dial it (its addrs + /p2p/inviter) and check Noise's peer */
    struct multiaddr addrs[MEMBER_INVITE_MAX_ADDRS];
    size_t n_addrs;
    uint64_t expires_at;     /* of the invite; 0 never happens (invites always expire) */
    uint8_t *request;        /* MemberMsg{join_request}, malloc'd; member_join_clear frees */
    size_t request_len;
};

/* Parses and checks a token (its inviter's chain and signature, expiry at now). Fills *j.
 * Returns 0, MESH_EPROTO (bad token; reason MEMBER_R_BAD_TOKEN / _MALFORMED), MESH_ECRYPTO,
 * MESH_ETIMEOUT (expired); message in err. */
int member_join_request(const char *token, uint64_t now, struct member_join *j,
                        enum member_refusal *reason, char *err, size_t err_cap);
void member_join_clear(struct member_join *j);

/* Kind of a MemberMsg (so a stream handler can dispatch): 1 hello, 2 join_request,
 * 3 join_response; MESH_EPROTO if not a MemberMsg. */
enum { MEMBER_MSG_HELLO = 1, MEMBER_MSG_JOIN_REQUEST = 2, MEMBER_MSG_JOIN_RESPONSE = 3 };
int member_msg_kind(const uint8_t *msg, size_t len);

/* ---- The node's membership (struct member) ---- */

struct member;

/* Opens this node's membership: identity (DATA_DIR/identity.key, created if absent), the
 * owner key if this node has one (DATA_DIR/mesh/owner.key), and its certificate from st
 * (borrowed; must outlive m). A stored certificate that does not verify at now is kept out
 * of use (the node is then not a member). Returns 0 or MESH_E*; message in err. */
int member_open(const char *data_dir, struct store *st, uint64_t now, struct member **out,
                char *err, size_t err_cap);
/* Wipes the keys and frees m. NULL is fine. */
void member_close(struct member *m);

/* Creates a mesh: a new owner key (DATA_DIR/mesh/owner.key, 0600) and a certificate for this
 * node flagged owner_device, issued at now, never expiring. Refuses (MESH_EINVAL, message)
 * when an owner key or a certificate exists, unless force (then the old mesh is forgotten:
 * owner key replaced, store_mesh_reset). */
int member_mesh_create(struct member *m, bool force, uint64_t now, char *err, size_t err_cap);

/* What `meshllm mesh show` prints. */
struct member_info {
    bool is_member;       /* has a valid certificate */
    bool has_owner_key;
    bool owner_device;
    char mesh_id[MEMBER_MESH_ID_CAP];
    struct peer_id self;
    uint8_t owner_pk[32];
    uint8_t issuer_pk[32]; /* of my certificate */
    uint64_t expires_at;   /* my chain's, 0 = never */
    size_t depth;          /* links in my chain */
    size_t n_revocations;  /* stored for my mesh */
};
int member_info_get(struct member *m, struct member_info *out, char *err, size_t err_cap);

/* Invite options. addrs: listen multiaddrs to put in the token (without /p2p); n_addrs 0 =
 * the running node's, from the store. bound: NULL = anyone (then single use). */
struct member_invite_opts {
    uint64_t expires_at; /* absolute unix s, > now */
    const struct peer_id *bound;
    const struct multiaddr *addrs;
    size_t n_addrs;
};
/* Makes an invite token ("meshllm-invite:" + base64url), *token malloc'd. Only a member whose
 * chain is shorter than MEMBER_CHAIN_MAX may invite (MESH_EINVAL otherwise, message). */
int member_invite_make(struct member *m, const struct member_invite_opts *o, uint64_t now,
                       char **token, char *err, size_t err_cap);

/* Inviter: handles a MemberMsg{join_request} from remote (authenticated by Noise). Always
 * answers: *resp (malloc'd MemberMsg{join_response}) holds the certificate, or the refusal
 * in *reason and in the message. Returns 0 when admitted, else a negative MESH_E* (with a
 * response to send unless MESH_ENOMEM). */
int member_join_handle(struct member *m, const struct peer_id *remote, const uint8_t *msg,
                       size_t len, uint64_t now, uint8_t **resp, size_t *resp_len,
                       enum member_refusal *reason);

/* Joiner: checks the MemberMsg{join_response} (a chain for this node, in j's mesh, issued by
 * j's inviter), adds its revocations, stores the certificate. Returns 0 or MESH_E* with
 * *reason and a message in err (a refusal from the inviter is MESH_ECRYPTO with its reason). */
int member_join_finish(struct member *m, const struct member_join *j, const uint8_t *msg,
                       size_t len, uint64_t now, enum member_refusal *reason, char *err,
                       size_t err_cap);

/* Owner: revokes peer (needs the owner key: MESH_ENOTFOUND and a message otherwise),
 * stores the revocation and drops the peer (and those it certified) from the admitted table. */
int member_revoke(struct member *m, const struct peer_id *peer, uint64_t now, char *err,
                  size_t err_cap);

/* Adds a serialized Revocation received from a peer after checking it is signed by our
 * mesh's owner. Idempotent (*is_new false the second time; may be NULL). Returns 0, or
 * MESH_EPROTO / MESH_ECRYPTO with *reason (may be NULL). */
int member_revocation_add(struct member *m, const uint8_t *b, size_t len, bool *is_new,
                          enum member_refusal *reason);

/* Revocations of our mesh stored with seq > after_seq (oldest first, at most max): what to
 * gossip. Each blob is a serialized Revocation (feed it to member_revocation_add on the
 * receiving side); remember the last seq. Free with store_blobs_free. */
int member_revocations_since(struct member *m, uint64_t after_seq, size_t max,
                             struct store_blob **out, size_t *n);

/* Our MemberMsg{hello}: certificate + the newest revocations. *out malloc'd. MESH_ENOTFOUND
 * when this node is not a member. */
int member_hello_make(struct member *m, uint8_t **out, size_t *out_len);

struct member_hello_result {
    bool admitted;
    enum member_refusal reason;
    bool owner_device;
    uint64_t expires_at; /* of the peer's chain, 0 = never */
    size_t n_new_revocations;
};
/* Handles the remote's MemberMsg{hello}: its revocations are checked and added first, then
 * its certificate must verify for remote in our mesh. Admitted peers enter the admitted
 * table. Returns 0 (see res->admitted) or MESH_E* for our own failures. */
int member_hello_handle(struct member *m, const struct peer_id *remote, const uint8_t *msg,
                        size_t len, uint64_t now, struct member_hello_result *res);

/* Admitted, and the chain not expired at now. */
bool member_is_admitted(struct member *m, const struct peer_id *peer, uint64_t now);
/* Admitted with an owner_device certificate: one of the owner's own devices. */
bool member_is_own(struct member *m, const struct peer_id *peer);
/* Forgets an admitted peer (it disconnected). */
void member_peer_forget(struct member *m, const struct peer_id *peer);

#endif
