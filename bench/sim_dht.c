/* sim_dht.c - benchmark: Kademlia lookups and GossipSub delivery in the virtual-clock
 * simulation (net/sim.h), printed as Markdown tables for bench/RESULTS.md.
 *
 * Usage: sim_dht [N nodes (1000)] [lookups (200)] [seed (1)] [gossip messages (50)]
 * DHT: nodes join one by one through a random earlier node, then run one bucket-refresh round
 * (11 virtual minutes); random FIND_NODE lookups from random nodes are checked against the
 * true k closest (brute force). Then 20 % of nodes leave silently and as many new nodes join,
 * and the lookups are repeated. Hops = depth at which the closest result was learned (a seed
 * from our own table is hop 1). Gossip: each node dials 8 random others, all subscribe to one
 * topic; messages are published from random nodes; delivery is counted per subscriber.
 * Latency per message 10..50 ms one way; DHT request timeout 2 s.
 */
#include "core/err.h"
#include "net/sim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct world {
    struct sim *s;
    uint8_t (*keys)[DHT_KEY_LEN];
    uint64_t rng;
};

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double wall_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int join(struct world *w)
{
    size_t idx, seed_i;
    int rc = sim_node_add(w->s, &idx);
    if (rc < 0) return rc;
    const struct identity *id = sim_node_identity(w->s, idx);
    dht_key_of(id->id.bytes, id->id.len, w->keys[idx]);
    if (idx == 0) return 0;
    do seed_i = rnd(&w->rng) % idx;
    while (!sim_node_online(w->s, seed_i));
    struct dht_peer seed;
    memset(&seed, 0, sizeof seed);
    seed.id = sim_node_identity(w->s, seed_i)->id;
    uint64_t qid;
    struct dht *d = sim_node_dht(w->s, idx);
    rc = dht_bootstrap(d, sim_now(w->s), &seed, 1, &qid);
    if (rc < 0) return rc;
    sim_node_poke(w->s, idx);
    sim_dht_wait(w->s, idx, qid, sim_now(w->s) + 600000);
    dht_query_release(d, qid);
    return 0;
}

static int cmp_dist(const uint8_t *a, const uint8_t *b, const uint8_t *t)
{
    for (int i = 0; i < DHT_KEY_LEN; i++) {
        uint8_t x = a[i] ^ t[i], y = b[i] ^ t[i];
        if (x != y) return x < y ? -1 : 1;
    }
    return 0;
}

static size_t true_closest(struct world *w, const uint8_t *target, size_t *out, size_t skip)
{
    size_t n = 0, total = sim_n_nodes(w->s);
    for (size_t i = 0; i < total; i++) {
        if (!sim_node_online(w->s, i) || i == skip) continue;
        size_t j;
        if (n < DHT_K) {
            j = n++;
        } else {
            if (cmp_dist(w->keys[i], w->keys[out[DHT_K - 1]], target) >= 0) continue;
            j = DHT_K - 1;
        }
        while (j > 0 && cmp_dist(w->keys[i], w->keys[out[j - 1]], target) < 0) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = i;
    }
    return n;
}

static int cmp_u(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

static void lookups(struct world *w, int n, const char *label, size_t n_online)
{
    unsigned *hops = calloc((size_t)n, sizeof *hops);
    double req = 0, fails = 0, ms = 0, recall = 0;
    int exact = 0, closest = 0, done = 0;
    for (int l = 0; l < n; l++) {
        size_t from;
        do from = rnd(&w->rng) % sim_n_nodes(w->s);
        while (!sim_node_online(w->s, from));
        uint8_t key[16], target[DHT_KEY_LEN];
        for (int i = 0; i < 16; i += 8) {
            uint64_t r = rnd(&w->rng);
            memcpy(key + i, &r, 8);
        }
        dht_key_of(key, sizeof key, target);
        struct dht *d = sim_node_dht(w->s, from);
        uint64_t qid;
        if (dht_find_node(d, sim_now(w->s), key, sizeof key, &qid) < 0) continue;
        sim_node_poke(w->s, from);
        done += sim_dht_wait(w->s, from, qid, sim_now(w->s) + 600000) == DHT_QUERY_DONE;
        struct dht_peer found[DHT_K];
        size_t want[DHT_K], n_found = dht_query_closest(d, qid, found, DHT_K);
        size_t n_want = true_closest(w, target, want, from), hit = 0;
        for (size_t i = 0; i < n_want; i++)
            for (size_t j = 0; j < n_found; j++)
                if (peer_id_equal(&found[j].id, &sim_node_identity(w->s, want[i])->id)) {
                    hit++;
                    break;
                }
        exact += hit == n_want;
        recall += (double)hit / (double)n_want;
        closest += n_found && peer_id_equal(&found[0].id, &sim_node_identity(w->s, want[0])->id);
        struct dht_query_stats st;
        dht_query_stats(d, qid, &st);
        hops[l] = st.hops;
        req += (double)st.n_requests;
        fails += (double)st.n_failures;
        ms += (double)(st.finished_ms - st.started_ms);
        dht_query_release(d, qid);
    }
    qsort(hops, (size_t)n, sizeof *hops, cmp_u);
    double mean = 0;
    for (int i = 0; i < n; i++) mean += hops[i];
    mean /= n;
    printf("| %s | %zu | %d | %.1f %% | %.1f %% | %.1f %% | %.2f | %u | %u | %u | %.1f | %.1f | %.0f |\n",
           label, n_online, n, 100.0 * done / n, 100.0 * closest / n, 100.0 * exact / n, mean,
           hops[n / 2], hops[(n * 95) / 100], hops[n - 1], req / n, fails / n, ms / n);
    (void)recall;
    free(hops);
}

/* ---- gossip ---------------------------------------------------------------------------- */

struct gstate {
    size_t n;
    int n_msgs;
    uint8_t *got;          /* n * n_msgs delivery counts */
    uint64_t *pub_ms;      /* publish time per message */
    double lat_sum;
    uint64_t lat_max;
    struct sim *s;
};

static void on_gmsg(void *ud, size_t node, const struct gossip_msg *m)
{
    struct gstate *g = ud;
    if (m->data_len != 4) return;
    uint32_t k;
    memcpy(&k, m->data, 4);
    if (k >= (uint32_t)g->n_msgs || node >= g->n) return;
    if (g->got[node * (size_t)g->n_msgs + k]++ == 0) {
        uint64_t lat = sim_now(g->s) - g->pub_ms[k];
        g->lat_sum += (double)lat;
        if (lat > g->lat_max) g->lat_max = lat;
    }
}

static int gossip_bench(size_t n, int n_msgs, uint64_t seed, double churn)
{
    struct gstate g;
    memset(&g, 0, sizeof g);
    g.n = n;
    g.n_msgs = n_msgs;
    g.got = calloc(n * (size_t)n_msgs, 1);
    g.pub_ms = calloc((size_t)n_msgs, sizeof *g.pub_ms);
    struct sim_config c;
    memset(&c, 0, sizeof c);
    c.n_max = n;
    c.seed = seed;
    c.with_gossip = true;
    c.on_gossip_message = on_gmsg;
    c.ud = &g;
    if (!g.got || !g.pub_ms || sim_new(&c, &g.s) < 0) return 1;
    double t0 = wall_s();
    uint64_t rng = seed * 31 + 7;
    for (size_t i = 0; i < n; i++) {
        size_t idx;
        sim_node_add(g.s, &idx);
    }
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 8; k++) {
            size_t j = rnd(&rng) % n;
            if (j != i) sim_gossip_connect(g.s, i, j);
        }
    for (size_t i = 0; i < n; i++) {
        gossip_subscribe(sim_node_gossip(g.s, i), sim_now(g.s), "/meshllm/announce/1");
        sim_node_poke(g.s, i);
    }
    sim_run_until(g.s, 30000);
    /* Churn: a fraction of nodes drop off without notice (their peers keep them). */
    size_t n_off = 0;
    while ((double)n_off < churn * (double)n) {
        size_t i = rnd(&rng) % n;
        if (!sim_node_online(g.s, i)) continue;
        sim_node_set_online(g.s, i, false);
        n_off++;
    }
    size_t degmin = SIZE_MAX, degmax = 0;
    double degsum = 0;
    for (size_t i = 0; i < n; i++) {
        if (!sim_node_online(g.s, i)) continue;
        size_t d = gossip_mesh_peers(sim_node_gossip(g.s, i), "/meshllm/announce/1", NULL, 0);
        degmin = d < degmin ? d : degmin;
        degmax = d > degmax ? d : degmax;
        degsum += (double)d;
    }
    for (int m = 0; m < n_msgs; m++) {
        size_t from;
        do from = rnd(&rng) % n;
        while (!sim_node_online(g.s, from));
        uint32_t k = (uint32_t)m;
        g.pub_ms[m] = sim_now(g.s);
        gossip_publish(sim_node_gossip(g.s, from), sim_now(g.s), "/meshllm/announce/1",
                       (const uint8_t *)&k, 4, NULL, NULL);
        sim_node_poke(g.s, from);
        sim_run_until(g.s, sim_now(g.s) + 100);
    }
    sim_run_until(g.s, sim_now(g.s) + 10000);
    size_t want = 0, got = 0, dup_app = 0;
    uint64_t dups = 0, frames;
    for (size_t i = 0; i < n; i++) {
        if (!sim_node_online(g.s, i)) continue;
        for (int m = 0; m < n_msgs; m++) {
            uint8_t v = g.got[i * (size_t)n_msgs + (size_t)m];
            want++;
            got += v > 0;
            dup_app += v > 1;
        }
        struct gossip_stats st;
        gossip_get_stats(sim_node_gossip(g.s, i), &st);
        dups += st.n_duplicates;
    }
    struct sim_stats ss;
    sim_stats(g.s, &ss);
    frames = ss.n_frames;
    printf("| %zu | %.0f %% | %d | %zu / %.1f / %zu | %.3f %% | %zu | %.1f | %.0f | %llu | %.1f |\n", n,
           churn * 100, n_msgs, degmin, degsum / (double)(n - n_off), degmax,
           100.0 * (double)got / (double)want, dup_app, (double)dups / (double)n_msgs,
           g.lat_sum / (double)(got ? got : 1), (unsigned long long)g.lat_max, wall_s() - t0);
    (void)frames;
    sim_free(g.s);
    free(g.got);
    free(g.pub_ms);
    return 0;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 1000;
    int n_lookups = argc > 2 ? atoi(argv[2]) : 200;
    uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    int n_msgs = argc > 4 ? atoi(argv[4]) : 50;
    if (n < 30 || n_lookups < 1 || n_msgs < 1) {
        fprintf(stderr, "usage: sim_dht [nodes>=30] [lookups] [seed] [gossip messages]\n");
        return 2;
    }
    struct world w;
    memset(&w, 0, sizeof w);
    w.rng = seed;
    size_t n_max = n + n / 5 + 1;
    w.keys = calloc(n_max, sizeof *w.keys);
    struct sim_config c;
    memset(&c, 0, sizeof c);
    c.n_max = n_max;
    c.seed = seed;
    c.with_dht = true;
    c.dht_protocol = DHT_PROTOCOL_MESHLLM;
    if (!w.keys || sim_new(&c, &w.s) < 0) return 1;
    double t0 = wall_s();
    for (size_t i = 0; i < n; i++)
        if (join(&w) < 0) return 1;
    sim_run_until(w.s, sim_now(w.s) + 11 * 60 * 1000);
    double t_build = wall_s() - t0;
    printf("DHT: %zu nodes, k=%d, alpha=%d, log2(N)=%.2f; network built in %.1f s wall\n\n", n,
           DHT_K, DHT_ALPHA, log2((double)n), t_build);
    printf("| phase | online | lookups | finished | found closest | exact k-closest | hops mean "
           "| p50 | p95 | max | requests/lookup | failed req/lookup | virtual ms/lookup |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    lookups(&w, n_lookups, "stable", n);
    size_t gone = 0;
    while (gone < n / 5) {
        size_t i = rnd(&w.rng) % n;
        if (!sim_node_online(w.s, i)) continue;
        sim_node_set_online(w.s, i, false);
        gone++;
    }
    lookups(&w, n_lookups, "20 % left (no repair)", n - gone);
    for (size_t i = 0; i < n / 5; i++)
        if (join(&w) < 0) return 1;
    lookups(&w, n_lookups, "+20 % joined", n);
    sim_run_until(w.s, sim_now(w.s) + 11 * 60 * 1000);
    lookups(&w, n_lookups, "after refresh", n);
    struct sim_stats st;
    sim_stats(w.s, &st);
    printf("\nDHT total: %llu frames, %.1f MB delivered, %.1f s wall\n\n",
           (unsigned long long)st.n_frames, (double)st.n_bytes / 1e6, wall_s() - t0);
    sim_free(w.s);
    free(w.keys);

    printf("GossipSub: D=6 [4,12], each node dials 8 random peers, one topic, every node "
           "subscribed; degree over online nodes after 30 s\n\n");
    printf("| nodes | churn | messages | mesh degree min / mean / max | delivered | "
           "app duplicates | dup copies/msg | mean latency ms | max latency ms | wall s |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    if (gossip_bench(n, n_msgs, seed, 0.0) != 0) return 1;
    if (gossip_bench(n, n_msgs, seed, 0.2) != 0) return 1;
    return 0;
}
