/* peers.c - the peer table (see peers.h): entries, announcements, ranking. */
#include "node/peers.h"

#include "announce.pb-c.h"
#include "core/err.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define PEERS_TTL_MAX_S 300      /* an announcement never lives longer than this */
#define PEERS_ANNOUNCE_MAX (64u << 10)

struct peers {
    pthread_mutex_t mu; /* guards everything below */
    struct peers_entry *e;
    int n;
};

int peers_new(struct peers **out)
{
    *out = NULL;
    struct peers *t = calloc(1, sizeof *t);
    if (!t || !(t->e = calloc(PEERS_MAX, sizeof *t->e))) {
        free(t);
        return MESH_ENOMEM;
    }
    pthread_mutex_init(&t->mu, NULL);
    *out = t;
    return 0;
}

void peers_free(struct peers *t)
{
    if (!t) return;
    pthread_mutex_destroy(&t->mu);
    free(t->e);
    free(t);
}

/* The entry of id, or a new one (evicting the least useful stranger when full): members and
 * connected peers are kept over peers we merely heard of. NULL when nothing can go. */
static struct peers_entry *entry_get(struct peers *t, const struct peer_id *id, bool create)
{
    for (int i = 0; i < t->n; i++)
        if (peer_id_equal(&t->e[i].id, id)) return &t->e[i];
    if (!create) return NULL;
    struct peers_entry *slot = NULL;
    if (t->n < PEERS_MAX) {
        slot = &t->e[t->n++];
    } else {
        for (int pass = 0; pass < 2 && !slot; pass++)
            for (int i = 0; i < t->n; i++) {
                struct peers_entry *c = &t->e[i];
                if (c->is_connected || (pass == 0 && c->is_member)) continue;
                if (!slot || c->last_seen_ms < slot->last_seen_ms) slot = c;
            }
        if (!slot) return NULL;
    }
    memset(slot, 0, sizeof *slot);
    slot->id = *id;
    slot->rtt_us = -1;
    if (peer_id_to_text(id, slot->id_text, sizeof slot->id_text)) slot->id_text[0] = 0;
    return slot;
}

void peers_set_connected(struct peers *t, const struct peer_id *id, bool connected,
                         uint64_t now_ms)
{
    pthread_mutex_lock(&t->mu);
    struct peers_entry *p = entry_get(t, id, connected);
    if (p) {
        p->is_connected = connected;
        p->last_seen_ms = now_ms;
        if (connected) p->unreachable_until_ms = 0;
    }
    pthread_mutex_unlock(&t->mu);
}

void peers_set_rtt(struct peers *t, const struct peer_id *id, int64_t rtt_us)
{
    pthread_mutex_lock(&t->mu);
    struct peers_entry *p = entry_get(t, id, false);
    if (p) p->rtt_us = rtt_us;
    pthread_mutex_unlock(&t->mu);
}

void peers_set_member(struct peers *t, const struct peer_id *id, bool is_member, bool is_own)
{
    pthread_mutex_lock(&t->mu);
    struct peers_entry *p = entry_get(t, id, is_member);
    if (p) {
        p->is_member = is_member;
        p->is_own = is_member && is_own;
    }
    pthread_mutex_unlock(&t->mu);
}

void peers_remove(struct peers *t, const struct peer_id *id)
{
    pthread_mutex_lock(&t->mu);
    struct peers_entry *p = entry_get(t, id, false);
    if (p) {
        *p = t->e[t->n - 1];
        t->n--;
    }
    pthread_mutex_unlock(&t->mu);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static bool hex64(const char *s)
{
    if (!s || strlen(s) != 64) return false;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

/* An announced store file, checked: a printable name that fits, a content ID, a size of
 * 1 byte .. 1 TiB, a piece length that /meshllm/blob/1 accepts. */
static bool blob_take(const Meshllm__Announce__Blob *b, struct peers_blob *out)
{
    memset(out, 0, sizeof *out);
    if (!b->name || !*b->name || strlen(b->name) >= sizeof out->name || !hex64(b->content_id) ||
        !b->has_size || b->size == 0 || b->size > (1ull << 40) || !b->has_piece_len ||
        b->piece_len < 16384 || b->piece_len > (4u << 20) || (b->piece_len & (b->piece_len - 1)))
        return false;
    for (const char *c = b->name; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f) return false;
    copy_str(out->name, sizeof out->name, b->name);
    memcpy(out->content_id, b->content_id, 65);
    out->size = b->size;
    out->piece_len = b->piece_len;
    return true;
}

int peers_on_announce(struct peers *t, const struct peer_id *author, const uint8_t *data,
                      size_t len, uint64_t now_ms)
{
    if (len > PEERS_ANNOUNCE_MAX) return MESH_EPROTO;
    Meshllm__Announce__Announce *a = meshllm__announce__announce__unpack(NULL, len, data);
    if (!a) return MESH_EPROTO;
    int rc = 0;
    if (!a->has_version || a->version != 1 || !a->has_seq) {
        rc = MESH_EPROTO;
        goto out;
    }
    /* Validate every address before changing anything. */
    struct multiaddr addrs[PEERS_MAX_ADDRS];
    int n_addrs = 0;
    for (size_t i = 0; i < a->n_addrs && n_addrs < PEERS_MAX_ADDRS; i++) {
        struct peer_id pid;
        if (multiaddr_from_bytes(a->addrs[i].data, a->addrs[i].len, &addrs[n_addrs]) != 0)
            continue;
        if (multiaddr_peer_id(&addrs[n_addrs], &pid) != 0 || !peer_id_equal(&pid, author))
            continue; /* only addresses of the author itself */
        n_addrs++;
    }
    pthread_mutex_lock(&t->mu);
    struct peers_entry *p = entry_get(t, author, true);
    if (!p) {
        rc = MESH_EFULL;
    } else if (a->seq <= p->ann_seq) {
        rc = MESH_EAGAIN;
    } else {
        p->ann_seq = a->seq;
        p->unreachable_until_ms = 0;
        uint32_t ttl = a->has_ttl_s && a->ttl_s < PEERS_TTL_MAX_S ? a->ttl_s : PEERS_TTL_MAX_S;
        p->ann_expires_ms = now_ms + (uint64_t)ttl * 1000;
        p->last_seen_ms = now_ms;
        if (n_addrs) {
            memcpy(p->addrs, addrs, (size_t)n_addrs * sizeof *addrs);
            p->n_addrs = n_addrs;
        }
        p->n_models = 0;
        for (size_t i = 0; i < a->n_models && p->n_models < PEERS_MAX_MODELS; i++) {
            const Meshllm__Announce__Model *m = a->models[i];
            if (!m->name || !*m->name || strlen(m->name) >= sizeof p->models[0].name) continue;
            struct peers_model *pm = &p->models[p->n_models++];
            memset(pm, 0, sizeof *pm);
            copy_str(pm->name, sizeof pm->name, m->name);
            copy_str(pm->digest, sizeof pm->digest, m->digest);
            copy_str(pm->quant, sizeof pm->quant, m->quant);
            pm->n_ctx = m->n_ctx > 1u << 24 ? 1 << 24 : (int)m->n_ctx;
            pm->file_bytes = m->file_bytes;
            pm->gen_tps = isfinite(m->gen_tps) && m->gen_tps > 0 ? m->gen_tps : 0;
            pm->n_slots = m->n_slots > 4096 ? 4096 : (int)m->n_slots;
            pm->n_active = m->n_active > 4096 ? 4096 : (int)m->n_active;
            pm->n_queued = m->n_queued > 1000000 ? 1000000 : (int)m->n_queued;
            /* a stage: a range within its layer count, or it is not a usable stage */
            if (m->has_n_layer && m->n_layer > 0) {
                if (m->n_layer > 65536 || m->layer_begin > m->layer_end ||
                    m->layer_end > m->n_layer) {
                    p->n_models--;
                    continue;
                }
                pm->n_layer = (int)m->n_layer;
                pm->layer_begin = (int)m->layer_begin;
                pm->layer_end = (int)m->layer_end;
            }
        }
        p->n_blobs = 0;
        for (size_t i = 0; i < a->n_blobs && p->n_blobs < PEERS_MAX_BLOBS; i++)
            if (blob_take(a->blobs[i], &p->blobs[p->n_blobs])) p->n_blobs++;
        p->mem_free = a->mem_free;
        p->speed_gbps = a->has_speed_gbps && isfinite(a->speed_gbps) && a->speed_gbps > 0 &&
                                a->speed_gbps < 1e6f
                            ? a->speed_gbps
                            : 0;
        p->accept_stages = a->has_accept_stages && a->accept_stages;
        p->is_lite = a->lite;
        p->n_prefixes = 0;
        for (size_t i = 0; i < a->n_prefixes && p->n_prefixes < PEERS_MAX_PREFIXES; i++)
            p->prefixes[p->n_prefixes++] = a->prefixes[i];
    }
    pthread_mutex_unlock(&t->mu);
out:
    meshllm__announce__announce__free_unpacked(a, NULL);
    return rc;
}

void peers_report(struct peers *t, const struct peer_id *id, enum peers_outcome o)
{
    pthread_mutex_lock(&t->mu);
    struct peers_entry *p = entry_get(t, id, false);
    if (p) {
        if (o == PEERS_OK) p->n_ok++;
        if (o == PEERS_FAIL) p->n_fail++;
        if (o == PEERS_BUSY) p->n_busy++;
        if (o == PEERS_LIE) p->n_lies++;
    }
    pthread_mutex_unlock(&t->mu);
}

void peers_unreachable(struct peers *t, const struct peer_id *id, uint64_t until_ms)
{
    pthread_mutex_lock(&t->mu);
    struct peers_entry *p = entry_get(t, id, false);
    if (p && !p->is_connected) p->unreachable_until_ms = until_ms;
    pthread_mutex_unlock(&t->mu);
}

void peers_inflight(struct peers *t, const struct peer_id *id, int delta)
{
    pthread_mutex_lock(&t->mu);
    struct peers_entry *p = entry_get(t, id, false);
    if (p) p->n_inflight = p->n_inflight + delta < 0 ? 0 : p->n_inflight + delta;
    pthread_mutex_unlock(&t->mu);
}

/* Messages of the request's conversation that p holds (0: none). */
#define PEERS_SPEED_TOKENS 16

static int prefix_match(const struct peers_entry *p, const uint64_t *prefix, int n_prefix)
{
    for (int k = n_prefix - 1; k >= 0; k--)
        for (int i = 0; i < p->n_prefixes; i++)
            if (p->prefixes[i] == prefix[k]) return k + 1;
    return 0;
}

static int pick_cmp(const void *a, const void *b)
{
    double x = ((const struct peers_pick *)a)->score_ms, y = ((const struct peers_pick *)b)->score_ms;
    return x < y ? -1 : x > y;
}

/* The score of peers.h (lower is better) before affinity and speed. */
static double pick_score(const struct peers_entry *p, const struct peers_model *m)
{
    double rtt_ms = p->rtt_us >= 0 ? (double)p->rtt_us / 1000.0 : 50.0;
    int busy = m->n_queued + p->n_inflight;
    if (m->n_active >= m->n_slots && m->n_slots > 0) busy += m->n_active - m->n_slots + 1;
    uint32_t tries = p->n_ok + p->n_fail;
    return rtt_ms + 25.0 * busy + (tries ? 200.0 * p->n_fail / tries : 0) + 2000.0 * p->n_lies;
}

/* Whether p may be asked now: a live member announcement, an address, not excluded. */
static bool pick_usable(const struct peers_entry *p, bool own_only, const struct peer_id *exclude,
                        int n_exclude, uint64_t now_ms)
{
    if (!p->is_member || (own_only && !p->is_own) || !p->ann_seq ||
        p->ann_expires_ms <= now_ms || p->n_addrs == 0 ||
        (!p->is_connected && now_ms < p->unreachable_until_ms))
        return false;
    for (int k = 0; k < n_exclude; k++)
        if (peer_id_equal(&exclude[k], &p->id)) return false;
    return true;
}

static int stage_cmp(const void *a, const void *b)
{
    double x = ((const struct peers_stage *)a)->pick.score_ms;
    double y = ((const struct peers_stage *)b)->pick.score_ms;
    return x < y ? -1 : x > y;
}

int peers_stages(struct peers *t, const char *digest, int n_layer, const struct peer_id *exclude,
                 int n_exclude, uint64_t now_ms, struct peers_stage *out, int cap)
{
    int n = 0;
    if (!digest || !*digest || n_layer <= 0) return 0;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->n && n < cap; i++) {
        const struct peers_entry *p = &t->e[i];
        if (!pick_usable(p, false, exclude, n_exclude, now_ms)) continue;
        for (int k = 0; k < p->n_models && n < cap; k++) {
            const struct peers_model *m = &p->models[k];
            if (m->n_layer != n_layer || m->layer_begin >= m->layer_end ||
                strcmp(m->digest, digest))
                continue;
            struct peers_stage *o = &out[n++];
            memset(o, 0, sizeof *o);
            o->pick.id = p->id;
            memcpy(o->pick.id_text, p->id_text, sizeof o->pick.id_text);
            o->pick.addr = p->addrs[0];
            o->pick.score_ms = pick_score(p, m);
            o->pick.rtt_us = p->rtt_us;
            o->pick.gen_tps = m->gen_tps;
            o->layer_begin = m->layer_begin;
            o->layer_end = m->layer_end;
        }
    }
    pthread_mutex_unlock(&t->mu);
    qsort(out, (size_t)n, sizeof *out, stage_cmp);
    return n;
}

int peers_rank(struct peers *t, const char *model, bool own_only, const uint64_t *prefix,
               int n_prefix, const struct peer_id *exclude, int n_exclude, uint64_t now_ms,
               struct peers_pick *out, int cap)
{
    int n = 0;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->n && n < cap; i++) {
        const struct peers_entry *p = &t->e[i];
        if (!pick_usable(p, own_only, exclude, n_exclude, now_ms)) continue;
        const struct peers_model *m = NULL;
        for (int k = 0; k < p->n_models && !m; k++)
            if (!strcmp(p->models[k].name, model) && p->models[k].n_layer == 0) m = &p->models[k];
        if (!m) continue;
        double score = pick_score(p, m);
        int pl = prefix_match(p, prefix, n_prefix);
        bool overloaded = m->n_slots > 0 && m->n_queued + p->n_inflight >= m->n_slots;
        if (pl > 0 && !overloaded) score *= 0.5;
        struct peers_pick *o = &out[n++];
        memset(o, 0, sizeof *o);
        o->id = p->id;
        memcpy(o->id_text, p->id_text, sizeof o->id_text);
        o->addr = p->addrs[0];
        o->score_ms = score;
        o->rtt_us = p->rtt_us;
        o->prefix_len = pl;
        o->gen_tps = m->gen_tps;
    }
    pthread_mutex_unlock(&t->mu);
    /* Measured speed: a peer slower than the fastest candidate costs the extra time of a
     * short answer (PEERS_SPEED_TOKENS tokens); peers with no measure yet are not charged. */
    float best = 0;
    for (int i = 0; i < n; i++)
        if (out[i].gen_tps > best) best = out[i].gen_tps;
    for (int i = 0; i < n; i++)
        if (out[i].gen_tps > 0 && best > 0)
            out[i].score_ms += PEERS_SPEED_TOKENS * 1000.0 * (1.0 / out[i].gen_tps - 1.0 / best);
    qsort(out, (size_t)n, sizeof *out, pick_cmp);
    return n;
}

/* The announced file p has matching spec (a content ID, or NAME:TAG), or NULL. */
static const struct peers_blob *blob_find(const struct peers_entry *p, const char *cid,
                                          const char *name)
{
    for (int k = 0; k < p->n_blobs; k++)
        if (cid ? !strcmp(p->blobs[k].content_id, cid) : !strcmp(p->blobs[k].name, name))
            return &p->blobs[k];
    return NULL;
}

int peers_blob_providers(struct peers *t, const char *spec, const struct peer_id *exclude,
                         int n_exclude, uint64_t now_ms, struct peers_blob *blob,
                         struct peers_pick *out, int cap)
{
    memset(blob, 0, sizeof *blob);
    if (!spec || !*spec) return 0;
    char name[sizeof blob->name];
    const char *cid = hex64(spec) ? spec : NULL;
    snprintf(name, sizeof name, strchr(spec, ':') ? "%s" : "%s:latest", spec);
    int n = 0;
    pthread_mutex_lock(&t->mu);
    /* the name's content ID first: the first live member that has it decides */
    for (int i = 0; i < t->n && !cid; i++) {
        const struct peers_entry *p = &t->e[i];
        const struct peers_blob *b = pick_usable(p, false, exclude, n_exclude, now_ms)
                                         ? blob_find(p, NULL, name)
                                         : NULL;
        if (b) {
            *blob = *b;
            cid = blob->content_id;
        }
    }
    char want[65] = "";
    if (cid) snprintf(want, sizeof want, "%s", cid);
    for (int i = 0; i < t->n && n < cap && want[0]; i++) {
        const struct peers_entry *p = &t->e[i];
        const struct peers_blob *b = NULL;
        if (!pick_usable(p, false, exclude, n_exclude, now_ms) || !(b = blob_find(p, want, NULL)))
            continue;
        if (!blob->content_id[0]) *blob = *b;
        struct peers_pick *o = &out[n++];
        memset(o, 0, sizeof *o);
        o->id = p->id;
        memcpy(o->id_text, p->id_text, sizeof o->id_text);
        o->addr = p->addrs[0];
        uint32_t tries = p->n_ok + p->n_fail;
        o->score_ms = (p->rtt_us >= 0 ? (double)p->rtt_us / 1000.0 : 50.0) +
                      (tries ? 200.0 * p->n_fail / tries : 0) + 2000.0 * p->n_lies;
        o->rtt_us = p->rtt_us;
    }
    pthread_mutex_unlock(&t->mu);
    qsort(out, (size_t)n, sizeof *out, pick_cmp);
    return n;
}

int peers_snapshot(struct peers *t, struct peers_entry *out, int cap)
{
    pthread_mutex_lock(&t->mu);
    int n = t->n < cap ? t->n : cap;
    memcpy(out, t->e, (size_t)n * sizeof *out);
    pthread_mutex_unlock(&t->mu);
    return n;
}

void peers_restore(struct peers *t, const struct peers_entry *e)
{
    pthread_mutex_lock(&t->mu);
    struct peers_entry *p = entry_get(t, &e->id, true);
    if (p && !p->is_connected && !p->ann_seq) {
        memcpy(p->addrs, e->addrs, sizeof p->addrs);
        p->n_addrs = e->n_addrs;
        p->rtt_us = e->rtt_us;
        p->n_ok = e->n_ok;
        p->n_fail = e->n_fail;
        p->n_lies = e->n_lies;
        p->last_seen_ms = 0;
    }
    pthread_mutex_unlock(&t->mu);
}

int peers_announce_encode(uint64_t seq, uint32_t ttl_s, const struct peers_model *models,
                          int n_models, const struct multiaddr *addrs, int n_addrs,
                          uint64_t mem_free, const uint64_t *prefixes, int n_prefixes,
                          uint8_t **out, size_t *out_len)
{
    struct peers_self self = {.mem_free = mem_free};
    return peers_announce_encode_self(seq, ttl_s, models, n_models, addrs, n_addrs, &self,
                                      prefixes, n_prefixes, NULL, 0, out, out_len);
}

int peers_announce_encode_self(uint64_t seq, uint32_t ttl_s, const struct peers_model *models,
                               int n_models, const struct multiaddr *addrs, int n_addrs,
                               const struct peers_self *self, const uint64_t *prefixes,
                               int n_prefixes, const struct peers_blob *blobs, int n_blobs,
                               uint8_t **out, size_t *out_len)
{
    Meshllm__Announce__Blob bs[PEERS_MAX_BLOBS], *bp[PEERS_MAX_BLOBS];
    if (n_blobs > PEERS_MAX_BLOBS) n_blobs = PEERS_MAX_BLOBS;
    if (n_blobs < 0) n_blobs = 0;
    *out = NULL;
    *out_len = 0;
    Meshllm__Announce__Announce a = MESHLLM__ANNOUNCE__ANNOUNCE__INIT;
    Meshllm__Announce__Model ms[PEERS_MAX_MODELS], *mp[PEERS_MAX_MODELS];
    ProtobufCBinaryData ab[PEERS_MAX_ADDRS];
    if (n_models > PEERS_MAX_MODELS) n_models = PEERS_MAX_MODELS;
    if (n_addrs > PEERS_MAX_ADDRS) n_addrs = PEERS_MAX_ADDRS;
    if (n_prefixes > PEERS_MAX_PREFIXES) n_prefixes = PEERS_MAX_PREFIXES;
    a.has_version = a.has_seq = a.has_ttl_s = a.has_mem_free = a.has_lite = 1;
    a.version = 1;
    a.seq = seq;
    a.ttl_s = ttl_s;
    a.mem_free = self->mem_free;
    a.lite = n_models == 0;
    if (self->speed_gbps > 0) {
        a.has_speed_gbps = true;
        a.speed_gbps = self->speed_gbps;
    }
    if (self->accept_stages) {
        a.has_accept_stages = true;
        a.accept_stages = true;
    }
    for (int i = 0; i < n_models; i++) {
        Meshllm__Announce__Model m = MESHLLM__ANNOUNCE__MODEL__INIT;
        m.name = (char *)models[i].name;
        m.digest = (char *)models[i].digest;
        m.quant = (char *)models[i].quant;
        m.has_n_ctx = m.has_file_bytes = m.has_gen_tps = 1;
        m.has_n_slots = m.has_n_active = m.has_n_queued = 1;
        m.n_ctx = (uint32_t)models[i].n_ctx;
        m.file_bytes = models[i].file_bytes;
        m.gen_tps = models[i].gen_tps;
        m.n_slots = (uint32_t)models[i].n_slots;
        m.n_active = (uint32_t)models[i].n_active;
        m.n_queued = (uint32_t)models[i].n_queued;
        if (models[i].n_layer > 0) {
            m.has_layer_begin = m.has_layer_end = m.has_n_layer = true;
            m.layer_begin = (uint32_t)models[i].layer_begin;
            m.layer_end = (uint32_t)models[i].layer_end;
            m.n_layer = (uint32_t)models[i].n_layer;
        }
        ms[i] = m;
        mp[i] = &ms[i];
    }
    a.models = mp;
    a.n_models = (size_t)n_models;
    for (int i = 0; i < n_addrs; i++) {
        ab[i].data = (uint8_t *)addrs[i].bytes;
        ab[i].len = addrs[i].len;
    }
    a.addrs = ab;
    a.n_addrs = (size_t)n_addrs;
    a.prefixes = (uint64_t *)prefixes;
    a.n_prefixes = (size_t)n_prefixes;
    for (int i = 0; i < n_blobs; i++) {
        Meshllm__Announce__Blob b = MESHLLM__ANNOUNCE__BLOB__INIT;
        b.name = (char *)blobs[i].name;
        b.content_id = (char *)blobs[i].content_id;
        b.has_size = b.has_piece_len = true;
        b.size = blobs[i].size;
        b.piece_len = blobs[i].piece_len;
        bs[i] = b;
        bp[i] = &bs[i];
    }
    a.blobs = bp;
    a.n_blobs = (size_t)n_blobs;
    size_t len = meshllm__announce__announce__get_packed_size(&a);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return MESH_ENOMEM;
    meshllm__announce__announce__pack(&a, buf);
    *out = buf;
    *out_len = len;
    return 0;
}

/* h' = BLAKE2b-64(h || a || 0 || b || 0): the separators keep "ab"+"c" apart from "a"+"bc". */
static uint64_t chain(uint64_t h, const char *a, const char *b)
{
    crypto_generichash_state st;
    uint8_t out[8];
    crypto_generichash_init(&st, NULL, 0, sizeof out);
    crypto_generichash_update(&st, (const uint8_t *)&h, sizeof h);
    crypto_generichash_update(&st, (const uint8_t *)(a ? a : ""), strlen(a ? a : "") + 1);
    crypto_generichash_update(&st, (const uint8_t *)(b ? b : ""), strlen(b ? b : "") + 1);
    crypto_generichash_final(&st, out, sizeof out);
    uint64_t r;
    memcpy(&r, out, sizeof r);
    return r;
}

int peers_conv_digests(const char *model, const char *const *roles,
                       const char *const *contents, int n, uint64_t *out)
{
    uint64_t h = chain(0, "model", model);
    for (int i = 0; i < n; i++) out[i] = h = chain(h, roles[i], contents[i]);
    return n;
}
