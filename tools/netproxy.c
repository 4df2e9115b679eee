/* netproxy.c - a relaying TCP proxy that makes a link slow and lossy, for tests (this kernel
 * has no netem qdisc). Plain POSIX, one thread, poll().
 *
 *   netproxy LISTEN_IP:PORT TARGET_IP:PORT [--delay-ms N] [--loss PCT] [--seed S]
 *
 * Every accepted connection is relayed to TARGET. Each chunk read in either direction is
 * held for --delay-ms (one-way delay) before it is written on; with probability --loss
 * percent a chunk is held 200 ms longer, which is what a lost segment costs a TCP stream (the
 * retransmission): bytes are never dropped or reordered, so the protocols above see a slow,
 * jittery link, not corruption. Prints "netproxy: listening on IP:PORT" (the port resolved
 * when 0 was given) once ready; runs until killed. IPv4 only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NP_MAX_PAIRS 64
#define NP_CHUNK 16384
#define NP_QUEUE_CAP (1u << 20) /* bytes held per direction before we stop reading */
#define NP_LOSS_PENALTY_MS 200

struct np_chunk {
    struct np_chunk *next;
    uint64_t release_us;
    size_t len, off;
    uint8_t data[];
};

/* One direction: bytes read from `from` wait in the queue, then go to `to`. */
struct np_dir {
    struct np_chunk *head, *tail;
    size_t queued;
    uint64_t last_release_us;
    int is_eof;      /* `from` hung up */
    int is_shut;     /* we shut down `to` for writing */
};

struct np_pair {
    int fd[2];              /* 0: client, 1: target */
    struct np_dir dir[2];   /* dir[d]: from fd[d] to fd[1 - d] */
    int in_use;
};

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t np_rand(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Microseconds of the monotonic clock (milliseconds would release chunks up to 1 ms early). */
static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Parses "A.B.C.D:PORT". Returns 0 or -1. */
static int parse_addr(const char *s, struct sockaddr_in *out)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port < 0 || port > 65535) return -1;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void pair_close(struct np_pair *p)
{
    for (int d = 0; d < 2; d++) {
        close(p->fd[d]);
        struct np_chunk *c = p->dir[d].head;
        while (c) {
            struct np_chunk *n = c->next;
            free(c);
            c = n;
        }
    }
    memset(p, 0, sizeof *p);
}

/* Reads what fd[d] has into a new chunk. Returns 0, or -1 when the pair must close. */
static int pair_read(struct np_pair *p, int d, unsigned delay_ms, unsigned loss_pct)
{
    struct np_dir *q = &p->dir[d];
    struct np_chunk *c = malloc(sizeof *c + NP_CHUNK);
    if (!c) return -1;
    ssize_t n = read(p->fd[d], c->data, NP_CHUNK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        free(c);
        return 0;
    }
    if (n <= 0) {
        free(c);
        q->is_eof = 1;
        return n == 0 ? 0 : -1;
    }
    uint64_t rel = now_us() + (uint64_t)delay_ms * 1000u;
    if (loss_pct && np_rand() % 100 < loss_pct) rel += NP_LOSS_PENALTY_MS * 1000u;
    if (rel < q->last_release_us) rel = q->last_release_us; /* never reorder */
    q->last_release_us = rel;
    c->release_us = rel;
    c->len = (size_t)n;
    c->off = 0;
    c->next = NULL;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    q->queued += (size_t)n;
    return 0;
}

/* Writes due chunks of direction d. Returns 0 or -1 when the pair must close. */
static int pair_write(struct np_pair *p, int d, uint64_t now)
{
    struct np_dir *q = &p->dir[d];
    while (q->head && q->head->release_us <= now) {
        struct np_chunk *c = q->head;
        ssize_t n = write(p->fd[1 - d], c->data + c->off, c->len - c->off);
        if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
        c->off += (size_t)n;
        q->queued -= (size_t)n;
        if (c->off < c->len) return 0;
        q->head = c->next;
        if (!q->head) q->tail = NULL;
        free(c);
    }
    if (!q->head && q->is_eof && !q->is_shut) {
        shutdown(p->fd[1 - d], SHUT_WR);
        q->is_shut = 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in la, ta;
    unsigned delay_ms = 0, loss_pct = 0;
    if (argc < 3 || parse_addr(argv[1], &la) || parse_addr(argv[2], &ta)) {
        fprintf(stderr, "usage: netproxy LISTEN_IP:PORT TARGET_IP:PORT [--delay-ms N] "
                        "[--loss PCT] [--seed S]\n");
        return 2;
    }
    for (int i = 3; i + 1 < argc; i += 2) {
        unsigned long v = strtoul(argv[i + 1], NULL, 10);
        if (!strcmp(argv[i], "--delay-ms") && v <= 60000)
            delay_ms = (unsigned)v;
        else if (!strcmp(argv[i], "--loss") && v <= 100)
            loss_pct = (unsigned)v;
        else if (!strcmp(argv[i], "--seed"))
            g_rng = v;
        else {
            fprintf(stderr, "netproxy: bad option %s %s\n", argv[i], argv[i + 1]);
            return 2;
        }
    }
    if ((argc - 3) % 2) {
        fprintf(stderr, "netproxy: option %s needs a value\n", argv[argc - 1]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t sl = sizeof la;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&la, sizeof la) || listen(lfd, 64) ||
        getsockname(lfd, (struct sockaddr *)&la, &sl)) {
        perror("netproxy: listen");
        return 1;
    }
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &la.sin_addr, text, sizeof text);
    printf("netproxy: listening on %s:%u\n", text, (unsigned)ntohs(la.sin_port));
    fflush(stdout);

    static struct np_pair pairs[NP_MAX_PAIRS];
    struct pollfd pfd[1 + 2 * NP_MAX_PAIRS];
    for (;;) {
        uint64_t now = now_us();
        int timeout = -1, n = 0;
        pfd[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
        for (int i = 0; i < NP_MAX_PAIRS; i++) {
            struct np_pair *p = &pairs[i];
            for (int s = 0; s < 2; s++) {
                short ev = 0;
                if (p->in_use && !p->dir[s].is_eof && p->dir[s].queued < NP_QUEUE_CAP) ev |= POLLIN;
                /* fd[s] is written by direction 1 - s */
                struct np_chunk *h = p->in_use ? p->dir[1 - s].head : NULL;
                if (h && h->release_us <= now) ev |= POLLOUT;
                if (h && h->release_us > now) {
                    uint64_t w = (h->release_us - now + 999) / 1000; /* ms, rounded up */
                    if (timeout < 0 || w < (uint64_t)timeout) timeout = (int)w;
                }
                /* nothing to wait for: ignored (a hung-up socket would wake us forever) */
                pfd[n++] = (struct pollfd){.fd = ev ? p->fd[s] : -1, .events = ev};
            }
        }
        if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR) {
            perror("netproxy: poll");
            return 1;
        }
        if (pfd[0].revents & POLLIN) {
            int cfd = accept(lfd, NULL, NULL);
            int slot = -1;
            for (int i = 0; i < NP_MAX_PAIRS && slot < 0; i++)
                if (!pairs[i].in_use) slot = i;
            int tfd = cfd >= 0 && slot >= 0 ? socket(AF_INET, SOCK_STREAM, 0) : -1;
            if (tfd >= 0 && connect(tfd, (struct sockaddr *)&ta, sizeof ta) == 0) {
                set_nonblock(cfd);
                set_nonblock(tfd);
                pairs[slot] = (struct np_pair){.fd = {cfd, tfd}, .in_use = 1};
            } else {
                if (tfd >= 0) close(tfd);
                if (cfd >= 0) close(cfd);
            }
        }
        now = now_us();
        for (int i = 0; i < NP_MAX_PAIRS; i++) {
            struct np_pair *p = &pairs[i];
            if (!p->in_use) continue;
            int bad = 0;
            for (int s = 0; s < 2 && !bad; s++) {
                short re = pfd[1 + 2 * i + s].revents;
                if (re & (POLLERR | POLLNVAL))
                    bad = -1;
                else if (!p->dir[s].is_eof && (re & (POLLIN | POLLHUP)))
                    bad = pair_read(p, s, delay_ms, loss_pct);
            }
            for (int d = 0; d < 2 && !bad; d++) bad = pair_write(p, d, now);
            if (bad || (p->dir[0].is_shut && p->dir[1].is_shut)) pair_close(p);
        }
    }
}
