/* test_mdns.c - net/mdns: query and response encodings, a compressed response written by
 * hand (as other implementations send them), discovery between two cores (self ignored),
 * and strict rejection of hostile DNS messages (pointer loops, forward pointers, long labels,
 * bad rdata lengths, trailing bytes). The last test uses real multicast sockets, but only
 * inside a private network namespace it creates (unshare(CLONE_NEWNET) in a child process;
 * skipped without the privilege): the machine's own interfaces are never touched.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/identity.h"
#include "net/mdns.h"
#include "net/mdns_host.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void make_identity(uint8_t tag, struct identity *id)
{
    uint8_t seed[32];
    memset(seed, tag, sizeof seed);
    assert_int_equal(identity_from_seed(seed, id), 0);
}

static struct mdns *make_core(const struct identity *id, const char *listen)
{
    struct mdns_config c;
    struct mdns *m;
    memset(&c, 0, sizeof c);
    c.self = id->id;
    memcpy(c.seed, id->pk, 32);
    assert_int_equal(mdns_new(&c, &m), 0);
    if (listen) {
        struct multiaddr a;
        assert_int_equal(multiaddr_from_text(listen, &a), 0);
        assert_int_equal(mdns_set_addrs(m, &a, 1), 0);
    }
    return m;
}

static void test_mdns_query_encoding(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t len;
    assert_int_equal(mdns_query_build(buf, sizeof buf, &len), 0);
    static const uint8_t want[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, '_', 'p', '2', 'p',
                                   4, '_', 'u', 'd', 'p', 5, 'l', 'o', 'c', 'a', 'l', 0,
                                   0, 12, 0, 1};
    assert_int_equal(len, sizeof want);
    assert_memory_equal(buf, want, len);
    struct mdns_msg *m = malloc(sizeof *m);
    assert_int_equal(mdns_msg_parse(buf, len, m), 0);
    assert_int_equal(m->n_questions, 1);
    assert_string_equal(m->q[0].name, "_p2p._udp.local");
    assert_int_equal(m->q[0].type, MDNS_TYPE_PTR);
    assert_int_equal(mdns_query_build(buf, 20, &len), MESH_ERANGE);
    free(m);
}

static void test_mdns_parses_compressed_response(void **state)
{
    (void)state;
    struct identity a;
    make_identity(1, &a);
    char text[256] = "dnsaddr=/ip4/10.1.2.3/tcp/4001/p2p/";
    assert_int_equal(peer_id_to_text(&a.id, text + strlen(text), sizeof text - strlen(text)), 0);
    uint8_t b[512];
    size_t n = 0;
    static const uint8_t hdr[] = {0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 1};
    memcpy(b, hdr, sizeof hdr);
    n = sizeof hdr;
    /* answer at 12: _p2p._udp.local PTR "peer1" + pointer to offset 12 */
    static const uint8_t svc[] = {4, '_', 'p', '2', 'p', 4, '_', 'u', 'd', 'p', 5, 'l', 'o', 'c',
                                  'a', 'l', 0};
    memcpy(b + n, svc, sizeof svc);
    n += sizeof svc;
    static const uint8_t ptr_fixed[] = {0, 12, 0, 1, 0, 0, 0, 120, 0, 8};
    memcpy(b + n, ptr_fixed, sizeof ptr_fixed);
    n += sizeof ptr_fixed;
    size_t label_at = n;
    static const uint8_t ptr_rdata[] = {5, 'p', 'e', 'e', 'r', '1', 0xc0, 12};
    memcpy(b + n, ptr_rdata, sizeof ptr_rdata);
    n += sizeof ptr_rdata;
    /* additional: pointer to "peer1._p2p._udp.local" TXT, cache-flush class */
    b[n++] = 0xc0;
    b[n++] = (uint8_t)label_at;
    static const uint8_t txt_fixed[] = {0, 16, 0x80, 1, 0, 0, 0, 120};
    memcpy(b + n, txt_fixed, sizeof txt_fixed);
    n += sizeof txt_fixed;
    size_t tl = strlen(text);
    b[n++] = 0;
    b[n++] = (uint8_t)(tl + 1);
    b[n++] = (uint8_t)tl;
    memcpy(b + n, text, tl);
    n += tl;

    struct mdns_msg *m = malloc(sizeof *m);
    assert_int_equal(mdns_msg_parse(b, n, m), 0);
    assert_int_equal(m->n_rrs, 2);
    assert_string_equal(m->rr[0].ptr, "peer1._p2p._udp.local");
    assert_string_equal(m->rr[1].name, "peer1._p2p._udp.local");
    assert_int_equal(m->rr[1].rclass, MDNS_CLASS_IN);
    assert_int_equal(m->rr[1].section, MDNS_SEC_ADDITIONAL);
    free(m);

    struct identity self;
    make_identity(2, &self);
    struct mdns *core = make_core(&self, NULL);
    assert_int_equal(mdns_on_packet(core, 0, b, n), 0);
    struct mdns_peer p;
    assert_int_equal(mdns_next_peer(core, &p), 0);
    assert_true(peer_id_equal(&p.id, &a.id));
    assert_int_equal(p.n_addrs, 1);
    char back[256];
    assert_int_equal(multiaddr_to_text(&p.addrs[0], back, sizeof back), 0);
    assert_string_equal(back, text + 8);
    assert_int_equal(mdns_next_peer(core, &p), MESH_ENOTFOUND);

    /* The same answer with TTL 0 (goodbye) announces nobody. */
    b[12 + sizeof svc + 4 + 3] = 0;
    assert_int_equal(mdns_on_packet(core, 0, b, n), 0);
    assert_int_equal(mdns_next_peer(core, &p), MESH_ENOTFOUND);
    mdns_free(core);
}

static void test_mdns_two_cores_discover_each_other(void **state)
{
    (void)state;
    struct identity a, b;
    make_identity(1, &a);
    make_identity(2, &b);
    struct mdns *ma = make_core(&a, "/ip4/10.0.0.1/tcp/4001");
    struct mdns *mb = make_core(&b, "/ip4/10.0.0.2/tcp/4001");
    assert_int_equal(strlen(mdns_peer_name(ma)), 32);
    assert_string_not_equal(mdns_peer_name(ma), mdns_peer_name(mb));

    /* B queries at start-up (and again after the interval, not before). */
    uint64_t next = mdns_periodic(mb, 0);
    assert_int_equal(next, 10000);
    uint8_t *q;
    size_t q_len;
    assert_int_equal(mdns_next_packet(mb, &q, &q_len), 0);
    mdns_periodic(mb, 5000);
    uint8_t *none;
    size_t none_len;
    assert_int_equal(mdns_next_packet(mb, &none, &none_len), MESH_ENOTFOUND);

    /* A answers the multicast query; B sees A, and A sees nothing in its own answer. */
    assert_int_equal(mdns_on_packet(ma, 1, q, q_len), 0);
    uint8_t *r;
    size_t r_len;
    assert_int_equal(mdns_next_packet(ma, &r, &r_len), 0);
    assert_int_equal(mdns_on_packet(mb, 2, r, r_len), 0);
    assert_int_equal(mdns_on_packet(ma, 2, r, r_len), 0);
    struct mdns_peer p;
    assert_int_equal(mdns_next_peer(mb, &p), 0);
    assert_true(peer_id_equal(&p.id, &a.id));
    struct peer_id in_addr;
    assert_int_equal(multiaddr_peer_id(&p.addrs[0], &in_addr), 0);
    assert_true(peer_id_equal(&in_addr, &a.id));
    assert_int_equal(mdns_next_peer(ma, &p), MESH_ENOTFOUND);
    /* B's own query looped back to B is answered by B too (it is a responder). */
    assert_int_equal(mdns_on_packet(mb, 3, q, q_len), 0);
    uint8_t *r2;
    size_t r2_len;
    assert_int_equal(mdns_next_packet(mb, &r2, &r2_len), 0);
    free(r2);
    /* An address with someone else's /p2p is refused by set_addrs. */
    struct multiaddr bad;
    char t[200] = "/ip4/10.0.0.9/tcp/1/p2p/";
    peer_id_to_text(&b.id, t + strlen(t), sizeof t - strlen(t));
    assert_int_equal(multiaddr_from_text(t, &bad), 0);
    assert_int_equal(mdns_set_addrs(ma, &bad, 1), MESH_EINVAL);
    free(q);
    free(r);
    mdns_free(ma);
    mdns_free(mb);
}

static int parse(const uint8_t *b, size_t n)
{
    struct mdns_msg *m = malloc(sizeof *m);
    assert_non_null(m);
    int rc = mdns_msg_parse(b, n, m);
    free(m);
    return rc;
}

static void test_mdns_rejects_hostile_messages(void **state)
{
    (void)state;
    /* Question name that points at itself. */
    static const uint8_t loop[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 12, 0, 1};
    assert_int_equal(parse(loop, sizeof loop), MESH_EPROTO);
    /* Forward pointer. */
    static const uint8_t fwd[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 14, 1, 'a', 0, 0, 12,
                                  0, 1};
    assert_int_equal(parse(fwd, sizeof fwd), MESH_EPROTO);
    /* Two names pointing at each other through labels (a -> b -> a). */
    static const uint8_t pingpong[] = {0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,
                                       1, 'a', 0xc0, 18, 0, 12, /* q1 at 12: "a" + ptr 18 */
                                       1, 'b', 0xc0, 12, 0, 12};
    assert_int_equal(parse(pingpong, sizeof pingpong), MESH_EPROTO);
    /* Reserved label type 0x40. */
    static const uint8_t reserved[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 'a', 0, 0, 12,
                                       0, 1};
    assert_int_equal(parse(reserved, sizeof reserved), MESH_EPROTO);
    /* Truncated question, trailing garbage, too many records, non-zero opcode. */
    static const uint8_t trunc[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 12};
    assert_int_equal(parse(trunc, sizeof trunc), MESH_EPROTO);
    static const uint8_t trail[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 12, 0, 1, 9};
    assert_int_equal(parse(trail, sizeof trail), MESH_EPROTO);
    static const uint8_t many[] = {0, 0, 0x84, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0};
    assert_int_equal(parse(many, sizeof many), MESH_EPROTO);
    static const uint8_t opcode[] = {0, 0, 0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(parse(opcode, sizeof opcode), MESH_EPROTO);
    static const uint8_t empty_ok[] = {0, 0, 0x84, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(parse(empty_ok, sizeof empty_ok), 0);
    /* TXT whose string runs past its rdata; A record of 5 bytes; rdata past the end. */
    static const uint8_t txt[] = {0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 16, 0, 1,
                                  0, 0, 0, 1, 0, 2, 5, 'x'};
    assert_int_equal(parse(txt, sizeof txt), MESH_EPROTO);
    static const uint8_t a5[] = {0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1,
                                 0, 0, 0, 1, 0, 5, 1, 2, 3, 4, 5};
    assert_int_equal(parse(a5, sizeof a5), MESH_EPROTO);
    static const uint8_t past[] = {0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1,
                                   0, 0, 0, 1, 0, 9, 1, 2, 3, 4};
    assert_int_equal(parse(past, sizeof past), MESH_EPROTO);
    /* A label of 64 bytes, a name over 255 bytes, a control character in a label. */
    uint8_t big[600] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    size_t n = 12;
    big[n++] = 63;
    memset(big + n, 'x', 63);
    n += 63;
    big[n++] = 0;
    big[n++] = 0;
    big[n++] = 12;
    big[n++] = 0;
    big[n++] = 1;
    assert_int_equal(parse(big, n), 0);
    big[12] = 64;
    assert_int_equal(parse(big, n), MESH_EPROTO);
    n = 12;
    for (int i = 0; i < 5; i++) {
        big[n++] = 60;
        memset(big + n, 'y', 60);
        n += 60;
    }
    big[n++] = 0;
    memcpy(big + n, "\0\x0c\0\x01", 4);
    n += 4;
    assert_int_equal(parse(big, n), MESH_EPROTO);
    static const uint8_t ctl[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x07, 0, 0, 12, 0, 1};
    assert_int_equal(parse(ctl, sizeof ctl), MESH_EPROTO);
    assert_int_equal(parse(ctl, 5), MESH_EPROTO);
}

/* ---- real multicast, inside a private network namespace ------------------------------- */

/* Brings up "lo" with multicast in the current (fresh) namespace. */
static int netns_lo_up(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr;
    if (fd < 0) return -1;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_MULTICAST;
        rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    close(fd);
    return rc;
}

/* A UDP socket on port 5353 in the mDNS group, sending to the group through lo. */
static int mcast_socket(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0), one = 1;
    if (fd < 0) return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(MDNS_PORT);
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    struct ip_mreq mr;
    mr.imr_multiaddr.s_addr = inet_addr(MDNS_IP4_GROUP);
    mr.imr_interface.s_addr = htonl(INADDR_LOOPBACK);
    struct in_addr ifa = {htonl(INADDR_LOOPBACK)};
    unsigned char loop = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof mr) < 0 ||
        setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &ifa, sizeof ifa) < 0 ||
        setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends everything the core has queued to the group. */
static void mcast_flush(struct mdns *m, int fd)
{
    uint8_t *b;
    size_t len;
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons(MDNS_PORT);
    to.sin_addr.s_addr = inet_addr(MDNS_IP4_GROUP);
    while (mdns_next_packet(m, &b, &len) == 0) {
        (void)sendto(fd, b, len, 0, (struct sockaddr *)&to, sizeof to);
        free(b);
    }
}

/* Child process: two cores on two sockets discover each other. Exit 0 on success, 77 if the
 * namespace cannot be made, another code naming the failed step. */
static int netns_child(void)
{
    struct identity a, b;
    if (unshare(CLONE_NEWNET) != 0) return errno == EPERM ? 77 : 2;
    if (netns_lo_up() != 0) return 3;
    int fa = mcast_socket(), fb = mcast_socket();
    if (fa < 0 || fb < 0) return 4;
    uint8_t seed[32];
    memset(seed, 1, sizeof seed);
    identity_from_seed(seed, &a);
    memset(seed, 2, sizeof seed);
    identity_from_seed(seed, &b);
    struct mdns_config c;
    struct mdns *ma, *mb;
    memset(&c, 0, sizeof c);
    c.self = a.id;
    c.seed[0] = 1;
    if (mdns_new(&c, &ma) != 0) return 5;
    c.self = b.id;
    c.seed[0] = 2;
    if (mdns_new(&c, &mb) != 0) return 5;
    struct multiaddr la, lb;
    multiaddr_from_text("/ip4/127.0.0.1/tcp/4001", &la);
    multiaddr_from_text("/ip4/127.0.0.1/tcp/4002", &lb);
    if (mdns_set_addrs(ma, &la, 1) != 0 || mdns_set_addrs(mb, &lb, 1) != 0) return 6;
    multiaddr_append_p2p(&lb, &b.id); /* what A should learn: B's address with /p2p/B */
    mdns_periodic(mb, 0); /* B asks first */
    mcast_flush(mb, fb);
    bool a_found_b = false, b_found_a = false;
    for (int round = 0; round < 40 && !(a_found_b && b_found_a); round++) {
        struct pollfd pf[2] = {{fa, POLLIN, 0}, {fb, POLLIN, 0}};
        if (poll(pf, 2, 50) < 0) return 7;
        for (int k = 0; k < 2; k++) {
            if (!(pf[k].revents & POLLIN)) continue;
            uint8_t buf[MDNS_MSG_MAX];
            ssize_t n = recv(pf[k].fd, buf, sizeof buf, 0);
            if (n <= 0) continue;
            struct mdns *m = k == 0 ? ma : mb;
            mdns_on_packet(m, (uint64_t)round * 50, buf, (size_t)n);
            mcast_flush(m, pf[k].fd);
            struct mdns_peer p;
            while (mdns_next_peer(m, &p) == 0) {
                if (k == 0 && peer_id_equal(&p.id, &b.id) && multiaddr_equal(&p.addrs[0], &lb))
                    a_found_b = true;
                if (k == 1 && peer_id_equal(&p.id, &a.id)) b_found_a = true;
            }
        }
        if (round == 10) {
            mdns_periodic(ma, 10); /* A queries too */
            mcast_flush(ma, fa);
        }
    }
    mdns_free(ma);
    mdns_free(mb);
    close(fa);
    close(fb);
    return a_found_b && b_found_a ? 0 : 8;
}

static void test_mdns_discovery_over_multicast_in_netns(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(netns_child());
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) skip();
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* The libuv glue, two nodes on one loop, inside a private namespace (child process). */
struct uv_found {
    const struct peer_id *want;
    bool found;
};

static void uv_on_peer(void *ctx, const struct mdns_peer *p)
{
    struct uv_found *f = ctx;
    if (peer_id_equal(&p->id, f->want)) f->found = true;
}

static void uv_give_up(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static int netns_uv_child(void)
{
    struct identity a, b;
    if (unshare(CLONE_NEWNET) != 0) return errno == EPERM ? 77 : 2;
    if (netns_lo_up() != 0) return 3;
    uint8_t seed[32];
    memset(seed, 3, sizeof seed);
    identity_from_seed(seed, &a);
    memset(seed, 4, sizeof seed);
    identity_from_seed(seed, &b);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct uv_found fa = {&b.id, false}, fb = {&a.id, false};
    struct mdns_host_config ca, cb;
    memset(&ca, 0, sizeof ca);
    ca.core.self = a.id;
    ca.core.seed[0] = 3;
    ca.iface_addr = "127.0.0.1";
    ca.on_peer = uv_on_peer;
    ca.ctx = &fa;
    cb = ca;
    cb.core.self = b.id;
    cb.core.seed[0] = 4;
    cb.ctx = &fb;
    struct mdns_host *ha, *hb;
    if (mdns_host_new(&loop, &ca, &ha) != 0 || mdns_host_new(&loop, &cb, &hb) != 0) return 4;
    struct multiaddr la, lb;
    multiaddr_from_text("/ip4/127.0.0.1/tcp/4001", &la);
    multiaddr_from_text("/ip4/127.0.0.1/tcp/4002", &lb);
    if (mdns_host_set_addrs(ha, &la, 1) != 0 || mdns_host_set_addrs(hb, &lb, 1) != 0) return 5;
    mdns_host_query(ha); /* the start-up queries went out before the addresses were set */
    mdns_host_query(hb);
    bool timed_out = false;
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &timed_out;
    uv_timer_start(&t, uv_give_up, 5000, 0);
    while (!(fa.found && fb.found) && !timed_out) uv_run(&loop, UV_RUN_ONCE);
    mdns_host_free(ha);
    mdns_host_free(hb);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) return 6;
    return fa.found && fb.found ? 0 : 8;
}

static void test_mdns_host_discovery_in_netns(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(netns_uv_child());
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) skip();
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- the C side of tests/net_mdns_interop.test.sh ------------------------------------ */

struct interop {
    bool found;
    const char *want; /* the JS peer's ID text, or NULL for any */
};

static void interop_on_peer(void *ctx, const struct mdns_peer *p)
{
    struct interop *x = ctx;
    char id[PEER_ID_TEXT_CAP], addr[MULTIADDR_TEXT_CAP] = "";
    peer_id_to_text(&p->id, id, sizeof id);
    if (p->n_addrs) multiaddr_to_text(&p->addrs[0], addr, sizeof addr);
    printf("c discovered %s %s\n", id, addr);
    fflush(stdout);
    if (!x->want || !strcmp(x->want, id)) x->found = true;
}

static void interop_stop(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs in the test's network namespace: announces /ip4/127.0.0.1/tcp/4001 over mDNS on lo
 * until the JS peer was found, then 3 s more (so it finds us too). Prints "c id ...". */
static int interop_run(const char *want)
{
    struct identity id;
    char text[PEER_ID_TEXT_CAP];
    uv_loop_t loop;
    struct interop x = {false, want};
    if (identity_generate(&id) != 0 || peer_id_to_text(&id.id, text, sizeof text) != 0) return 1;
    printf("c id %s\n", text);
    fflush(stdout);
    uv_loop_init(&loop);
    struct mdns_host_config c;
    memset(&c, 0, sizeof c);
    c.core.self = id.id;
    c.core.query_interval_ms = 1000;
    randombytes_buf(c.core.seed, sizeof c.core.seed);
    c.iface_addr = "127.0.0.1";
    c.on_peer = interop_on_peer;
    c.ctx = &x;
    struct mdns_host *mh;
    if (mdns_host_new(&loop, &c, &mh) != 0) return 1;
    struct multiaddr a;
    multiaddr_from_text("/ip4/127.0.0.1/tcp/4001", &a);
    mdns_host_set_addrs(mh, &a, 1);
    bool stop = false, give_up = false;
    uv_timer_t t, g;
    uv_timer_init(&loop, &t);
    uv_timer_init(&loop, &g);
    t.data = &stop;
    g.data = &give_up;
    uv_timer_start(&g, interop_stop, 30000, 0);
    while (!stop && !give_up) {
        uv_run(&loop, UV_RUN_ONCE);
        if (x.found && !uv_is_active((uv_handle_t *)&t)) uv_timer_start(&t, interop_stop, 3000, 0);
    }
    mdns_host_free(mh);
    uv_close((uv_handle_t *)&t, NULL);
    uv_close((uv_handle_t *)&g, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    printf("c done %s\n", x.found ? "ok" : "without finding the JS peer");
    return x.found ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--interop")) return interop_run(argc > 2 ? argv[2] : NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mdns_query_encoding),
        cmocka_unit_test(test_mdns_parses_compressed_response),
        cmocka_unit_test(test_mdns_two_cores_discover_each_other),
        cmocka_unit_test(test_mdns_rejects_hostile_messages),
        cmocka_unit_test(test_mdns_discovery_over_multicast_in_netns),
        cmocka_unit_test(test_mdns_host_discovery_in_netns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
