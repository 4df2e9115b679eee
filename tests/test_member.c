/* test_member.c - node/member and node/store: the primitives against published vectors
 * (RFC 8032 section 7.1 tests 1-3, FIPS 180-2 "abc"), certificate chains and every refusal,
 * invites and joins between nodes in one process (temporary data dirs), revocations, hello,
 * the store's tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "member.pb-c.h"
#include "net/identity.h"
#include "node/member.h"
#include "node/store.h"
#include "tests/util/test_util.h"

#include <sodium.h>
#include <sqlite3.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1700000000u /* a fixed "now" (unix s) */

static size_t hex_decode(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = test_hex_decode(hex, out, cap);
    assert_true(n != SIZE_MAX);
    return n;
}

/* RFC 8032 section 7.1, TEST 1..3: secret key (seed), public key, message, signature. */
static const char *const k_rfc8032[3][4] = {
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701c"
     "f9b46bd25bf5f0595bbe24655141438e7a100b"},
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0"
     "f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f76098"
     "4dc6594a7c15e9716ed28dc027beceea1ec40a"},
};

static void test_member_ed25519_rfc8032_vectors(void **state)
{
    (void)state;
    assert_true(sodium_init() >= 0);
    for (int t = 0; t < 3; t++) {
        uint8_t seed[32], pk[32], msg[8], sig[64], mine[64];
        struct identity id;
        hex_decode(k_rfc8032[t][0], seed, sizeof seed);
        hex_decode(k_rfc8032[t][1], pk, sizeof pk);
        size_t n = hex_decode(k_rfc8032[t][2], msg, sizeof msg);
        hex_decode(k_rfc8032[t][3], sig, sizeof sig);
        assert_int_equal(crypto_sign_verify_detached(sig, msg, n, pk), 0);
        /* The node's key path (identity_from_seed + identity_sign) gives the same bytes. */
        assert_int_equal(identity_from_seed(seed, &id), 0);
        assert_memory_equal(id.pk, pk, 32);
        identity_sign(&id, msg, n, mine);
        assert_memory_equal(mine, sig, 64);
        sig[t * 7] ^= 1;
        assert_int_not_equal(crypto_sign_verify_detached(sig, msg, n, pk), 0);
        identity_wipe(&id);
    }
}

static void test_member_sha256_fips180_abc(void **state)
{
    (void)state;
    uint8_t h[32], want[32];
    hex_decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want, 32);
    crypto_hash_sha256(h, (const uint8_t *)"abc", 3);
    assert_memory_equal(h, want, 32);
}

/* mesh ID of the RFC 8032 test 1 public key, computed independently (Python hashlib +
 * base64.b32encode, lower case, padding stripped). */
static void test_member_mesh_id_vector(void **state)
{
    (void)state;
    uint8_t pk[32];
    char id[MEMBER_MESH_ID_CAP];
    hex_decode(k_rfc8032[0][1], pk, 32);
    member_mesh_id(pk, id);
    assert_string_equal(id, "mesh-eh7ddx5bksrgcytl7bkai36se4");
}

/* ---- chains built by hand ---- */

struct keys {
    struct identity owner, other_owner, dev[6]; /* dev[0] owner's device, then invitees */
};

static void keys_make(struct keys *k)
{
    assert_int_equal(identity_generate(&k->owner), 0);
    assert_int_equal(identity_generate(&k->other_owner), 0);
    for (int i = 0; i < 6; i++) assert_int_equal(identity_generate(&k->dev[i]), 0);
}

/* Chain of depth n: owner -> dev[0] (owner device) -> dev[1] -> ... -> dev[n-1]. */
static uint8_t *chain_make(const struct keys *k, int n, uint64_t leaf_expiry, size_t *len)
{
    uint8_t *c = NULL, *prev = NULL;
    size_t prev_len = 0;
    for (int i = 0; i < n; i++) {
        const struct identity *issuer = i == 0 ? &k->owner : &k->dev[i - 1];
        assert_int_equal(member_cert_issue(k->owner.pk, issuer, prev, prev_len, &k->dev[i].id, T0,
                                           i == n - 1 ? leaf_expiry : 0, i == 0, &c, len),
                         0);
        free(prev);
        prev = c;
        prev_len = *len;
    }
    return c;
}

static enum member_refusal verify(const uint8_t *c, size_t len, const uint8_t *owner,
                                  const struct peer_id *subject, uint64_t now,
                                  member_revoked_fn fn, void *ctx)
{
    enum member_refusal why;
    int rc = member_cert_verify(c, len, owner, subject, now, fn, ctx, NULL, &why);
    assert_true((rc == 0) == (why == MEMBER_OK));
    return why;
}

static void test_member_chain_valid_depths(void **state)
{
    (void)state;
    struct keys k;
    keys_make(&k);
    for (int n = 1; n <= MEMBER_CHAIN_MAX; n++) {
        size_t len;
        struct member_chain ch;
        enum member_refusal why;
        uint8_t *c = chain_make(&k, n, 0, &len);
        assert_int_equal(member_cert_verify(c, len, k.owner.pk, &k.dev[n - 1].id, T0 + 10, NULL,
                                            NULL, &ch, &why),
                         0);
        assert_int_equal(ch.n, (size_t)n);
        assert_true(peer_id_equal(&ch.link[0].subject, &k.dev[n - 1].id));
        assert_int_equal(ch.link[0].owner_device, n == 1);
        assert_memory_equal(ch.link[n - 1].issuer_pk, k.owner.pk, 32);
        free(c);
    }
}

/* Re-encodes cert after flipping one byte of the leaf signature. */
static uint8_t *tamper_sig(const uint8_t *c, size_t len, size_t *out_len)
{
    Meshmember__MemberCert *pb = meshmember__member_cert__unpack(NULL, len, c);
    assert_non_null(pb);
    pb->signature.data[5] ^= 0x40;
    *out_len = meshmember__member_cert__get_packed_size(pb);
    uint8_t *o = malloc(*out_len);
    meshmember__member_cert__pack(pb, o);
    meshmember__member_cert__free_unpacked(pb, NULL);
    return o;
}

struct revset {
    const struct peer_id *p[4];
    int n;
};

static int revset_fn(void *ctx, const uint8_t owner[32], const uint8_t *peer, size_t len,
                     bool *revoked)
{
    struct revset *r = ctx;
    (void)owner;
    *revoked = false;
    for (int i = 0; i < r->n; i++)
        if (r->p[i]->len == len && !memcmp(r->p[i]->bytes, peer, len)) *revoked = true;
    return 0;
}

static void test_member_chain_refusals_distinct(void **state)
{
    (void)state;
    struct keys k;
    enum member_refusal seen[16];
    int n_seen = 0;
    size_t len, len2, len3;
    keys_make(&k);
    uint8_t *c1 = chain_make(&k, 1, 0, &len);
    uint8_t *c3 = chain_make(&k, 3, 0, &len3);
    uint8_t *c, *bad;

    /* forged signature */
    bad = tamper_sig(c3, len3, &len2);
    seen[n_seen++] = verify(bad, len2, k.owner.pk, &k.dev[2].id, T0, NULL, NULL);
    assert_int_equal(seen[n_seen - 1], MEMBER_R_BAD_SIGNATURE);
    free(bad);
    /* wrong mesh */
    seen[n_seen++] = verify(c3, len3, k.other_owner.pk, &k.dev[2].id, T0, NULL, NULL);
    assert_int_equal(seen[n_seen - 1], MEMBER_R_WRONG_MESH);
    /* expired leaf, then expired parent (c3's leaf is fine, its middle link expires) */
    c = chain_make(&k, 3, T0 + 100, &len2);
    assert_int_equal(verify(c, len2, k.owner.pk, NULL, T0 + 99, NULL, NULL), MEMBER_OK);
    seen[n_seen++] = verify(c, len2, k.owner.pk, NULL, T0 + 100, NULL, NULL);
    assert_int_equal(seen[n_seen - 1], MEMBER_R_EXPIRED);
    free(c);
    uint8_t *mid, *leaf;
    size_t mid_len, leaf_len;
    assert_int_equal(member_cert_issue(k.owner.pk, &k.dev[0], c1, len, &k.dev[1].id, T0, T0 + 50,
                                       false, &mid, &mid_len), 0);
    assert_int_equal(member_cert_issue(k.owner.pk, &k.dev[1], mid, mid_len, &k.dev[2].id, T0, 0,
                                       false, &leaf, &leaf_len), 0);
    assert_int_equal(verify(leaf, leaf_len, k.owner.pk, NULL, T0 + 60, NULL, NULL),
                     MEMBER_R_EXPIRED);
    free(mid);
    free(leaf);
    /* revoked subject, revoked issuer */
    struct revset rs = {{&k.dev[2].id}, 1};
    seen[n_seen++] = verify(c3, len3, k.owner.pk, NULL, T0, revset_fn, &rs);
    assert_int_equal(seen[n_seen - 1], MEMBER_R_REVOKED);
    rs.p[0] = &k.dev[1].id;
    assert_int_equal(verify(c3, len3, k.owner.pk, NULL, T0, revset_fn, &rs), MEMBER_R_REVOKED);
    rs.p[0] = &k.dev[5].id; /* someone else revoked: no effect */
    assert_int_equal(verify(c3, len3, k.owner.pk, NULL, T0, revset_fn, &rs), MEMBER_OK);
    /* owner_device set by a non-owner */
    assert_int_equal(member_cert_issue(k.owner.pk, &k.dev[0], c1, len, &k.dev[1].id, T0, 0, true,
                                       &c, &len2), 0);
    seen[n_seen++] = verify(c, len2, k.owner.pk, NULL, T0, NULL, NULL);
    assert_int_equal(seen[n_seen - 1], MEMBER_R_OWNER_DEVICE_FORGED);
    free(c);
    /* subject is not the remote peer */
    seen[n_seen++] = verify(c3, len3, k.owner.pk, &k.dev[1].id, T0, NULL, NULL);
    assert_int_equal(seen[n_seen - 1], MEMBER_R_SUBJECT_MISMATCH);
    /* depth 5 */
    c = chain_make(&k, MEMBER_CHAIN_MAX + 1, 0, &len2);
    seen[n_seen++] = verify(c, len2, k.owner.pk, NULL, T0, NULL, NULL);
    assert_int_equal(seen[n_seen - 1], MEMBER_R_TOO_DEEP);
    free(c);
    /* root issued by a member, not the owner */
    assert_int_equal(member_cert_issue(k.owner.pk, &k.dev[0], NULL, 0, &k.dev[1].id, T0, 0, false,
                                       &c, &len2), 0);
    seen[n_seen++] = verify(c, len2, k.owner.pk, NULL, T0, NULL, NULL);
    assert_int_equal(seen[n_seen - 1], MEMBER_R_ROOT_NOT_OWNER);
    free(c);
    /* issuer is not the parent's subject: dev[1] signs with dev[0]'s certificate as parent */
    assert_int_equal(member_cert_issue(k.owner.pk, &k.dev[1], c1, len, &k.dev[2].id, T0, 0, false,
                                       &c, &len2), 0);
    seen[n_seen++] = verify(c, len2, k.owner.pk, NULL, T0, NULL, NULL);
    assert_int_equal(seen[n_seen - 1], MEMBER_R_ISSUER_MISMATCH);
    free(c);
    /* garbage */
    seen[n_seen++] = verify((const uint8_t *)"\xff\xff\xff", 3, k.owner.pk, NULL, T0, NULL, NULL);
    assert_int_equal(seen[n_seen - 1], MEMBER_R_MALFORMED);
    for (int i = 0; i < n_seen; i++)
        for (int j = i + 1; j < n_seen; j++) assert_int_not_equal(seen[i], seen[j]);
    free(c1);
    free(c3);
}

/* ---- nodes with a store, in temporary data dirs ---- */

struct node {
    char dir[512];
    struct store *st;
    struct member *m;
    struct peer_id id;
};

static void node_open(struct node *n, const char *name)
{
    char err[512];
    struct member_info info;
    snprintf(n->dir, sizeof n->dir, "%s/%s", test_tmp_dir(), name);
    assert_int_equal(store_open(n->dir, &n->st, err, sizeof err), 0);
    if (member_open(n->dir, n->st, T0, &n->m, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(member_info_get(n->m, &info, err, sizeof err), 0);
    n->id = info.self;
}

static void node_close(struct node *n)
{
    member_close(n->m);
    store_close(n->st);
    n->m = NULL;
    n->st = NULL;
}

static char *invite(struct node *n, uint64_t expires, const struct peer_id *bound)
{
    struct multiaddr ma;
    char *tok = NULL, err[512];
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/4001", &ma), 0);
    struct member_invite_opts o = {.expires_at = expires, .bound = bound, .addrs = &ma,
                                   .n_addrs = 1};
    if (member_invite_make(n->m, &o, T0, &tok, err, sizeof err)) fail_msg("%s", err);
    assert_non_null(tok);
    return tok;
}

/* Joiner j redeems tok at inviter i at time now; returns the inviter's refusal. */
static enum member_refusal join(struct node *i, struct node *j, const char *tok, uint64_t now)
{
    struct member_join mj;
    enum member_refusal why, why2;
    char err[512];
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    assert_int_equal(member_join_request(tok, T0, &mj, &why, err, sizeof err), 0);
    assert_int_equal(member_msg_kind(mj.request, mj.request_len), MEMBER_MSG_JOIN_REQUEST);
    int rc = member_join_handle(i->m, &j->id, mj.request, mj.request_len, now, &resp, &resp_len,
                                &why);
    assert_non_null(resp);
    assert_int_equal(member_msg_kind(resp, resp_len), MEMBER_MSG_JOIN_RESPONSE);
    int rc2 = member_join_finish(j->m, &mj, resp, resp_len, now, &why2, err, sizeof err);
    assert_int_equal(why, why2); /* the joiner learns the inviter's reason */
    assert_true((rc == 0) == (why == MEMBER_OK) && (rc2 == 0) == (why == MEMBER_OK));
    free(resp);
    member_join_clear(&mj);
    return why;
}

/* b handles a's hello as coming from peer `as` (a's own ID normally). */
static struct member_hello_result hello(struct node *a, struct node *b,
                                        const struct peer_id *as, uint64_t now)
{
    uint8_t *h = NULL;
    size_t len;
    struct member_hello_result r;
    assert_int_equal(member_hello_make(a->m, &h, &len), 0);
    assert_int_equal(member_msg_kind(h, len), MEMBER_MSG_HELLO);
    assert_int_equal(member_hello_handle(b->m, as, h, len, now, &r), 0);
    free(h);
    return r;
}

static void mesh_create(struct node *n)
{
    char err[512];
    if (member_mesh_create(n->m, false, T0, err, sizeof err)) fail_msg("%s", err);
}

static void test_member_mesh_create_once(void **state)
{
    (void)state;
    struct node o;
    struct member_info info, info2;
    char err[512];
    node_open(&o, "create");
    assert_int_equal(member_info_get(o.m, &info, err, sizeof err), 0);
    assert_false(info.is_member);
    mesh_create(&o);
    assert_int_equal(member_info_get(o.m, &info, err, sizeof err), 0);
    assert_true(info.is_member && info.owner_device && info.has_owner_key);
    assert_int_equal(info.depth, 1);
    assert_int_equal(strlen(info.mesh_id), 31);
    assert_memory_equal(info.issuer_pk, info.owner_pk, 32);
    assert_int_equal(member_mesh_create(o.m, false, T0, err, sizeof err), MESH_EINVAL);
    assert_non_null(strstr(err, info.mesh_id));
    /* Reopened: same mesh, still refused without force; force makes a new mesh. */
    node_close(&o);
    node_open(&o, "create");
    assert_int_equal(member_info_get(o.m, &info2, err, sizeof err), 0);
    assert_string_equal(info.mesh_id, info2.mesh_id);
    assert_true(info2.is_member && info2.has_owner_key);
    assert_int_equal(member_mesh_create(o.m, false, T0, err, sizeof err), MESH_EINVAL);
    assert_int_equal(member_mesh_create(o.m, true, T0, err, sizeof err), 0);
    assert_int_equal(member_info_get(o.m, &info2, err, sizeof err), 0);
    assert_string_not_equal(info.mesh_id, info2.mesh_id);
    node_close(&o);
}

static void test_member_invite_join_hello(void **state)
{
    (void)state;
    struct node o, j, l;
    struct member_info oi, ji;
    char err[512];
    node_open(&o, "ijh-owner");
    node_open(&j, "ijh-joiner");
    node_open(&l, "ijh-third");
    mesh_create(&o);
    /* A non-member cannot invite or say hello. */
    struct member_invite_opts opt = {.expires_at = T0 + 60};
    char *tok = NULL;
    uint8_t *h = NULL;
    size_t hl;
    assert_int_equal(member_invite_make(j.m, &opt, T0, &tok, err, sizeof err), MESH_EINVAL);
    assert_int_equal(member_hello_make(j.m, &h, &hl), MESH_ENOTFOUND);

    tok = invite(&o, T0 + 3600, NULL);
    assert_int_equal(strncmp(tok, MEMBER_INVITE_PREFIX, strlen(MEMBER_INVITE_PREFIX)), 0);
    struct member_join mj;
    enum member_refusal why;
    assert_int_equal(member_join_request(tok, T0, &mj, &why, err, sizeof err), 0);
    assert_true(peer_id_equal(&mj.inviter, &o.id));
    assert_int_equal(mj.n_addrs, 1);
    member_join_clear(&mj);
    assert_int_equal(join(&o, &j, tok, T0 + 5), MEMBER_OK);
    free(tok);
    assert_int_equal(member_info_get(o.m, &oi, err, sizeof err), 0);
    assert_int_equal(member_info_get(j.m, &ji, err, sizeof err), 0);
    assert_true(ji.is_member && !ji.owner_device && !ji.has_owner_key);
    assert_int_equal(ji.depth, 2);
    assert_string_equal(oi.mesh_id, ji.mesh_id);
    /* The certificate survives a restart. */
    node_close(&j);
    node_open(&j, "ijh-joiner");
    assert_int_equal(member_info_get(j.m, &ji, err, sizeof err), 0);
    assert_true(ji.is_member);

    /* Hello both ways: admitted; the owner's device is "own". */
    struct member_hello_result r = hello(&o, &j, &o.id, T0 + 10);
    assert_true(r.admitted && r.owner_device);
    assert_true(member_is_admitted(j.m, &o.id, T0 + 10));
    assert_true(member_is_own(j.m, &o.id));
    r = hello(&j, &o, &j.id, T0 + 10);
    assert_true(r.admitted && !r.owner_device);
    assert_true(member_is_admitted(o.m, &j.id, T0 + 10));
    assert_false(member_is_own(o.m, &j.id));
    /* Refused: a hello relayed as if from another peer; a non-member's (empty) mesh. */
    r = hello(&j, &o, &l.id, T0 + 10);
    assert_false(r.admitted);
    assert_int_equal(r.reason, MEMBER_R_SUBJECT_MISMATCH);
    assert_false(member_is_admitted(o.m, &l.id, T0 + 10));
    r = hello(&o, &l, &o.id, T0 + 10);
    assert_int_equal(r.reason, MEMBER_R_NOT_MEMBER);
    /* Garbage and a message of the wrong kind. */
    assert_int_equal(member_hello_handle(o.m, &l.id, (const uint8_t *)"\x0a\x05zz", 4, T0, &r), 0);
    assert_false(r.admitted);
    assert_int_equal(r.reason, MEMBER_R_MALFORMED);
    tok = invite(&o, T0 + 3600, NULL);
    assert_int_equal(member_join_request(tok, T0, &mj, &why, err, sizeof err), 0);
    assert_int_equal(member_hello_handle(o.m, &l.id, mj.request, mj.request_len, T0, &r), 0);
    assert_int_equal(r.reason, MEMBER_R_UNEXPECTED);
    member_join_clear(&mj);
    free(tok);
    /* A member of the joiner generation invites in turn (depth 3). */
    tok = invite(&j, T0 + 3600, NULL);
    assert_int_equal(join(&j, &l, tok, T0 + 20), MEMBER_OK);
    free(tok);
    r = hello(&l, &o, &l.id, T0 + 30);
    assert_true(r.admitted);
    member_peer_forget(o.m, &l.id);
    assert_false(member_is_admitted(o.m, &l.id, T0 + 30));
    node_close(&o);
    node_close(&j);
    node_close(&l);
}

static void test_member_invite_refusals(void **state)
{
    (void)state;
    struct node o, j, k, x;
    char err[512];
    node_open(&o, "inv-owner");
    node_open(&j, "inv-j");
    node_open(&k, "inv-k");
    node_open(&x, "inv-x");
    mesh_create(&o);

    /* expired: valid when read, refused when redeemed after expires_at */
    char *tok = invite(&o, T0 + 10, NULL);
    assert_int_equal(join(&o, &j, tok, T0 + 10), MEMBER_R_INVITE_EXPIRED);
    free(tok);
    /* single use: the second peer is refused, also after the inviter restarts */
    tok = invite(&o, T0 + 3600, NULL);
    assert_int_equal(join(&o, &j, tok, T0 + 1), MEMBER_OK);
    assert_int_equal(join(&o, &k, tok, T0 + 2), MEMBER_R_INVITE_USED);
    node_close(&o);
    node_open(&o, "inv-owner");
    assert_int_equal(join(&o, &k, tok, T0 + 3), MEMBER_R_INVITE_USED);
    free(tok);
    /* bound to k: x is refused, k admitted (and may retry: bound invites are reusable) */
    tok = invite(&o, T0 + 3600, &k.id);
    assert_int_equal(join(&o, &x, tok, T0 + 4), MEMBER_R_INVITE_WRONG_PEER);
    assert_int_equal(join(&o, &k, tok, T0 + 5), MEMBER_OK);
    assert_int_equal(join(&o, &k, tok, T0 + 6), MEMBER_OK);
    free(tok);
    /* signed by someone else: j's invite presented to o */
    tok = invite(&j, T0 + 3600, NULL);
    assert_int_equal(join(&o, &x, tok, T0 + 7), MEMBER_R_INVITE_NOT_MINE);
    free(tok);
    /* a field changed after signing (the binding removed from the request) */
    tok = invite(&o, T0 + 3600, &k.id);
    struct member_join mj;
    enum member_refusal why;
    uint8_t *resp;
    size_t resp_len;
    assert_int_equal(member_join_request(tok, T0, &mj, &why, err, sizeof err), 0);
    Meshmember__MemberMsg *mm = meshmember__member_msg__unpack(NULL, mj.request_len, mj.request);
    assert_non_null(mm);
    mm->join_request->invite->bound_peer.len = 0;
    uint8_t buf[8192];
    size_t n = meshmember__member_msg__pack(mm, buf);
    meshmember__member_msg__free_unpacked(mm, NULL);
    assert_int_equal(member_join_handle(o.m, &x.id, buf, n, T0, &resp, &resp_len, &why),
                     MESH_ECRYPTO);
    assert_int_equal(why, MEMBER_R_INVITE_NOT_MINE);
    free(resp);
    /* hostile bytes to the inviter: answered with a refusal, never a crash */
    assert_int_equal(member_join_handle(o.m, &x.id, buf, n / 2, T0, &resp, &resp_len, &why),
                     MESH_EPROTO);
    assert_int_equal(why, MEMBER_R_MALFORMED);
    assert_non_null(resp);
    free(resp);
    member_join_clear(&mj);
    /* tampered token text: one character changed */
    size_t len = strlen(tok);
    for (size_t pos = strlen(MEMBER_INVITE_PREFIX) + 10; pos < len; pos += len / 7) {
        char *t = strdup(tok);
        t[pos] = t[pos] == 'A' ? 'B' : 'A';
        assert_int_not_equal(member_join_request(t, T0, &mj, &why, err, sizeof err), 0);
        assert_int_not_equal(why, MEMBER_OK);
        free(t);
    }
    free(tok);
    /* not a token / garbage base64 / base64 of garbage */
    assert_int_equal(member_join_request("hello", T0, &mj, &why, err, sizeof err), MESH_EPROTO);
    assert_int_equal(why, MEMBER_R_BAD_TOKEN);
    assert_int_equal(member_join_request("meshllm-invite:***!!", T0, &mj, &why, err, sizeof err),
                     MESH_EPROTO);
    assert_int_equal(why, MEMBER_R_BAD_TOKEN);
    assert_int_equal(member_join_request("meshllm-invite:", T0, &mj, &why, err, sizeof err),
                     MESH_EPROTO);
    assert_int_equal(member_join_request("meshllm-invite:_____w", T0, &mj, &why, err, sizeof err),
                     MESH_EPROTO);
    assert_int_equal(why, MEMBER_R_MALFORMED);
    /* an invite for the mesh the inviter left (mesh create --force) admits no one */
    tok = invite(&o, T0 + 3600, NULL);
    assert_int_equal(member_mesh_create(o.m, true, T0, err, sizeof err), 0);
    assert_int_equal(join(&o, &x, tok, T0 + 8), MEMBER_R_INVITE_NOT_MINE);
    free(tok);
    node_close(&o);
    node_close(&j);
    node_close(&k);
    node_close(&x);
}

static void test_member_invite_uses_stored_addrs(void **state)
{
    (void)state;
    struct node o;
    struct multiaddr ma[2];
    struct member_join mj;
    enum member_refusal why;
    char *tok, err[512];
    node_open(&o, "addrs");
    mesh_create(&o);
    assert_int_equal(multiaddr_from_text("/ip4/10.0.0.1/tcp/4001", &ma[0]), 0);
    assert_int_equal(multiaddr_from_text("/ip6/::1/tcp/4002", &ma[1]), 0);
    assert_int_equal(store_listen_addrs_set(o.st, ma, 2, err, sizeof err), 0);
    struct member_invite_opts opt = {.expires_at = T0 + 60};
    assert_int_equal(member_invite_make(o.m, &opt, T0, &tok, err, sizeof err), 0);
    assert_int_equal(member_join_request(tok, T0, &mj, &why, err, sizeof err), 0);
    assert_int_equal(mj.n_addrs, 2);
    assert_true(multiaddr_equal(&mj.addrs[0], &ma[0]) && multiaddr_equal(&mj.addrs[1], &ma[1]));
    member_join_clear(&mj);
    free(tok);
    node_close(&o);
}

static void test_member_revocation(void **state)
{
    (void)state;
    struct node o, j, k, l;
    char err[512];
    bool fresh;
    enum member_refusal why;
    node_open(&o, "rev-owner");
    node_open(&j, "rev-j");
    node_open(&k, "rev-k");
    node_open(&l, "rev-l");
    mesh_create(&o);
    char *tok = invite(&o, T0 + 3600, NULL);
    assert_int_equal(join(&o, &j, tok, T0), MEMBER_OK);
    free(tok);
    tok = invite(&o, T0 + 3600, NULL);
    assert_int_equal(join(&o, &k, tok, T0), MEMBER_OK);
    free(tok);
    tok = invite(&j, T0 + 3600, NULL); /* l is certified by j */
    assert_int_equal(join(&j, &l, tok, T0), MEMBER_OK);
    free(tok);
    assert_true(hello(&j, &o, &j.id, T0).admitted);
    assert_true(hello(&l, &o, &l.id, T0).admitted);
    assert_true(hello(&l, &k, &l.id, T0).admitted);

    /* Only the owner key revokes. */
    assert_int_equal(member_revoke(j.m, &k.id, T0, err, sizeof err), MESH_ENOTFOUND);
    assert_non_null(strstr(err, "owner key"));
    uint8_t *rb;
    size_t rlen;
    struct identity jid;
    assert_int_equal(identity_load_or_create(j.dir, &jid, err, sizeof err), 0);
    assert_int_equal(member_revocation_make(&jid, &k.id, T0, &rb, &rlen), 0);
    identity_wipe(&jid);
    assert_int_equal(member_revocation_add(o.m, rb, rlen, &fresh, &why), MESH_ECRYPTO);
    assert_int_equal(why, MEMBER_R_NOT_OWNER);
    free(rb);

    /* The owner revokes j: j and l (certified by j) leave o's admitted table. */
    assert_int_equal(member_revoke(o.m, &j.id, T0 + 1, err, sizeof err), 0);
    assert_false(member_is_admitted(o.m, &j.id, T0 + 1));
    assert_false(member_is_admitted(o.m, &l.id, T0 + 1));
    struct member_hello_result r = hello(&j, &o, &j.id, T0 + 2);
    assert_int_equal(r.reason, MEMBER_R_REVOKED);
    r = hello(&l, &o, &l.id, T0 + 2); /* revoked issuer in the chain */
    assert_int_equal(r.reason, MEMBER_R_REVOKED);

    /* Gossip: what to publish, and a receiver adds it once. */
    struct store_blob *b;
    size_t n;
    assert_int_equal(member_revocations_since(o.m, 0, 100, &b, &n), 0);
    assert_int_equal(n, 1);
    uint64_t seq = b[0].seq;
    assert_true(seq > 0);
    /* A forged signature is refused. */
    uint8_t *copy = malloc(b[0].len);
    memcpy(copy, b[0].bytes, b[0].len);
    copy[b[0].len - 3] ^= 1;
    assert_int_equal(member_revocation_add(k.m, copy, b[0].len, &fresh, &why), MESH_ECRYPTO);
    assert_int_equal(why, MEMBER_R_BAD_SIGNATURE);
    free(copy);
    assert_true(member_is_admitted(k.m, &l.id, T0 + 2));
    assert_int_equal(member_revocation_add(k.m, b[0].bytes, b[0].len, &fresh, &why), 0);
    assert_true(fresh);
    assert_false(member_is_admitted(k.m, &l.id, T0 + 2));
    assert_int_equal(member_revocation_add(k.m, b[0].bytes, b[0].len, &fresh, &why), 0);
    assert_false(fresh);
    store_blobs_free(b, n);
    assert_int_equal(member_revocations_since(o.m, seq, 100, &b, &n), 0);
    assert_int_equal(n, 0);
    /* A revoked node cannot invite; a hello carries revocations to a peer that lacks them. */
    assert_int_equal(member_revocation_add(j.m, (uint8_t *)"x", 1, &fresh, &why), MESH_EPROTO);
    struct member_info ki;
    assert_int_equal(member_info_get(k.m, &ki, err, sizeof err), 0);
    assert_int_equal(ki.n_revocations, 1);
    r = hello(&o, &l, &o.id, T0 + 3); /* l learns it is revoked through o's hello */
    assert_int_equal(r.n_new_revocations, 1);
    struct member_info li;
    assert_int_equal(member_info_get(l.m, &li, err, sizeof err), 0);
    assert_false(li.is_member);
    node_close(&o);
    node_close(&j);
    node_close(&k);
    node_close(&l);
}

struct race_arg {
    struct member *m;
    const struct peer_id *remote;
    const struct member_join *mj;
    enum member_refusal why;
};

static void *race_main(void *p)
{
    struct race_arg *a = p;
    uint8_t *resp = NULL;
    size_t len;
    member_join_handle(a->m, a->remote, a->mj->request, a->mj->request_len, T0 + 1, &resp, &len,
                       &a->why);
    free(resp);
    return NULL;
}

/* One single-use token redeemed at once by two joiners, through one struct member from two
 * threads and through two (two stores on one node.db, as two processes would): exactly one
 * is admitted each time. */
static void test_member_invite_race(void **state)
{
    (void)state;
    struct node o, o2, j, k;
    struct member_join mj;
    enum member_refusal why;
    char err[512];
    node_open(&o, "race-owner");
    node_open(&j, "race-j");
    node_open(&k, "race-k");
    mesh_create(&o);
    node_open(&o2, "race-owner"); /* a second handle on the same data dir */
    for (int round = 0; round < 2; round++) {
        char *tok = invite(&o, T0 + 3600, NULL);
        assert_int_equal(member_join_request(tok, T0, &mj, &why, err, sizeof err), 0);
        struct race_arg a[2] = {{o.m, &j.id, &mj, MEMBER_R_INTERNAL},
                                {round ? o2.m : o.m, &k.id, &mj, MEMBER_R_INTERNAL}};
        pthread_t t[2];
        for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, race_main, &a[i]), 0);
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        assert_true((a[0].why == MEMBER_OK) != (a[1].why == MEMBER_OK));
        assert_true(a[0].why == MEMBER_R_INVITE_USED || a[1].why == MEMBER_R_INVITE_USED);
        member_join_clear(&mj);
        free(tok);
    }
    node_close(&o2);
    node_close(&o);
    node_close(&j);
    node_close(&k);
}

/* ---- store ---- */

static void test_member_store_tables(void **state)
{
    (void)state;
    char dir[512], err[512], path[600];
    struct store *s;
    snprintf(dir, sizeof dir, "%s/store", test_tmp_dir());
    assert_int_equal(store_open(dir, &s, err, sizeof err), 0);
    struct store_peer p = {.addrs = "/ip4/1.2.3.4/tcp/1", .last_seen = 10, .rtt_us = 1500,
                           .n_ok = 3, .n_fail = 1, .n_lies = 0};
    snprintf(p.peer_id, sizeof p.peer_id, "12D3KooWA");
    assert_int_equal(store_peer_put(s, &p, err, sizeof err), 0);
    p.record = (uint8_t *)"rec";
    p.record_len = 3;
    p.last_seen = 20;
    snprintf(p.peer_id, sizeof p.peer_id, "12D3KooWB");
    assert_int_equal(store_peer_put(s, &p, err, sizeof err), 0);
    p.n_lies = 7; /* replace */
    assert_int_equal(store_peer_put(s, &p, err, sizeof err), 0);
    struct store_peer *v;
    size_t n;
    assert_int_equal(store_peers_load(s, &v, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].peer_id, "12D3KooWB"); /* most recent first */
    assert_int_equal(v[0].n_lies, 7);
    assert_int_equal(v[0].record_len, 3);
    assert_memory_equal(v[0].record, "rec", 3);
    assert_null(v[1].record);
    assert_string_equal(v[1].addrs, "/ip4/1.2.3.4/tcp/1");
    assert_int_equal(v[1].rtt_us, 1500);
    store_peers_free(v, n);
    /* revocation seq keeps growing across a mesh reset */
    uint8_t owner[32] = {1};
    bool fresh;
    uint64_t s1, s2;
    assert_int_equal(store_revocation_put(s, owner, (uint8_t *)"p1", 2, 5, (uint8_t *)"m", 1,
                                          &fresh, &s1, err, sizeof err), 0);
    assert_true(fresh);
    assert_int_equal(store_revocation_put(s, owner, (uint8_t *)"p1", 2, 6, (uint8_t *)"m", 1,
                                          &fresh, &s2, err, sizeof err), 0);
    assert_false(fresh);
    assert_int_equal(s1, s2);
    assert_int_equal(store_mesh_reset(s, err, sizeof err), 0);
    assert_int_equal(store_revocation_put(s, owner, (uint8_t *)"p1", 2, 5, (uint8_t *)"m", 1,
                                          &fresh, &s2, err, sizeof err), 0);
    assert_true(fresh && s2 > s1);
    uint8_t *c;
    size_t cl;
    assert_int_equal(store_cert_get(s, &c, &cl, err, sizeof err), MESH_ENOTFOUND);
    store_close(s);
    /* A file from a newer meshllm is refused, not rewritten; a non-database too. */
    sqlite3 *db;
    snprintf(path, sizeof path, "%s/%s", dir, STORE_FILE_NAME);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_open(dir, &s, err, sizeof err), MESH_EUNSUPPORTED);
    assert_non_null(strstr(err, "99"));
    snprintf(dir, sizeof dir, "%s/store-bad", test_tmp_dir());
    assert_int_equal(store_open(dir, &s, err, sizeof err), 0);
    store_close(s);
    snprintf(path, sizeof path, "%s/%s", dir, STORE_FILE_NAME);
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 512; i++) fputs("not a database ", f);
    fclose(f);
    remove(strcat(path, "-wal"));
    assert_int_equal(store_open(dir, &s, err, sizeof err), MESH_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_member_ed25519_rfc8032_vectors),
        cmocka_unit_test(test_member_sha256_fips180_abc),
        cmocka_unit_test(test_member_mesh_id_vector),
        cmocka_unit_test(test_member_chain_valid_depths),
        cmocka_unit_test(test_member_chain_refusals_distinct),
        cmocka_unit_test(test_member_mesh_create_once),
        cmocka_unit_test(test_member_invite_join_hello),
        cmocka_unit_test(test_member_invite_refusals),
        cmocka_unit_test(test_member_invite_uses_stored_addrs),
        cmocka_unit_test(test_member_invite_race),
        cmocka_unit_test(test_member_revocation),
        cmocka_unit_test(test_member_store_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
