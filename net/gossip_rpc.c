/* gossip_rpc.c - GossipSub RPC framing: what leaves for each peer (subscriptions, messages,
 * IHAVE / IWANT / GRAFT / PRUNE with backoff and PX) packed into one RPC per
 * gossip_next_output() call, and the structural checks on received RPCs (sizes and counts
 * bounded before the router looks at them). Specs: libp2p/specs pubsub/README.md "The RPC",
 * gossipsub-v1.0.md / v1.1.md "Protobuf".
 */
#include "net/gossip_internal.h"

#include "core/err.h"
#include "net/varint.h"

#include <stdlib.h>
#include <string.h>

/* ---- outgoing ------------------------------------------------------------------------ */

void gossip_out_sub(struct g_peer *p, int topic, bool sub)
{
    struct g_pending *o = &p->out;
    if (gossip_grow((void **)&o->subs, &o->cap_subs, o->n_subs + 1, sizeof *o->subs) < 0) return;
    o->subs[o->n_subs++] = (struct g_subopt){(uint16_t)topic, sub};
}

void gossip_out_msg(struct g_peer *p, struct g_msg *m)
{
    struct g_pending *o = &p->out;
    if (gossip_grow((void **)&o->msgs, &o->cap_msgs, o->n_msgs + 1, sizeof *o->msgs) < 0) return;
    m->refs++;
    o->msgs[o->n_msgs++] = m;
}

void gossip_out_ihave(struct g_peer *p, int topic, struct g_msg *m)
{
    struct g_pending *o = &p->out;
    if (gossip_grow((void **)&o->ihave, &o->cap_ihave, o->n_ihave + 1, sizeof *o->ihave) < 0) return;
    m->refs++;
    o->ihave[o->n_ihave++] = (struct g_ihave){(uint16_t)topic, m};
}

void gossip_out_iwant(struct g_peer *p, const uint8_t *id, size_t len)
{
    struct g_pending *o = &p->out;
    if (len > RPC_ID_LEN_MAX) return;
    if (gossip_grow((void **)&o->iwant, &o->cap_iwant, o->n_iwant + 1, sizeof *o->iwant) < 0) return;
    o->iwant[o->n_iwant].len = (uint8_t)len;
    memcpy(o->iwant[o->n_iwant++].b, id, len);
}

void gossip_out_graft(struct g_peer *p, int topic)
{
    struct g_pending *o = &p->out;
    if (gossip_grow((void **)&o->graft, &o->cap_graft, o->n_graft + 1, sizeof *o->graft) < 0) return;
    o->graft[o->n_graft++] = (uint16_t)topic;
}

/* Queues a PRUNE; px (n_px peer IDs, copied) is the peer exchange offered with it. */
void gossip_out_prune(struct g_peer *p, int topic, uint64_t backoff_ms, const struct peer_id *px,
                      size_t n_px)
{
    struct g_pending *o = &p->out;
    if (gossip_grow((void **)&o->prune, &o->cap_prune, o->n_prune + 1, sizeof *o->prune) < 0) return;
    struct peer_id *copy = n_px ? malloc(n_px * sizeof *copy) : NULL;
    if (copy) memcpy(copy, px, n_px * sizeof *copy);
    o->prune[o->n_prune++] = (struct g_prune){(uint16_t)topic, backoff_ms / 1000, copy,
                                              copy ? n_px : 0};
}

bool gossip_pending_any(const struct g_pending *o)
{
    return o->n_subs || o->n_msgs || o->n_ihave || o->n_iwant || o->n_graft || o->n_prune;
}

void gossip_pending_clear(struct g_pending *o, size_t n_msgs_sent)
{
    for (size_t i = 0; i < n_msgs_sent; i++) gossip_msg_unref(o->msgs[i]);
    if (o->n_msgs > n_msgs_sent)
        memmove(o->msgs, o->msgs + n_msgs_sent, (o->n_msgs - n_msgs_sent) * sizeof *o->msgs);
    o->n_msgs -= n_msgs_sent;
    for (size_t i = 0; i < o->n_ihave; i++) gossip_msg_unref(o->ihave[i].m);
    for (size_t i = 0; i < o->n_prune; i++) free(o->prune[i].px);
    o->n_subs = o->n_ihave = o->n_iwant = o->n_graft = o->n_prune = 0;
}

void gossip_pending_free(struct g_pending *o)
{
    gossip_pending_clear(o, o->n_msgs);
    free(o->subs);
    free(o->msgs);
    free(o->ihave);
    free(o->iwant);
    free(o->graft);
    free(o->prune);
}

/* PX entries of the prunes before prune i (their offset in the PeerInfo array). */
static size_t pis_used(const struct g_pending *o, size_t i)
{
    size_t n = 0;
    for (size_t k = 0; k < i; k++) n += o->prune[k].n_px;
    return n;
}

/* Control part of the RPC for peer p, packed into a malloc'd buffer. */
static int rpc_pack_control(struct gossip *g, const struct g_pending *o, uint8_t **out,
                            size_t *out_len)
{
    Pubsub__Pb__RPC rpc = PUBSUB__PB__RPC__INIT;
    Pubsub__Pb__ControlMessage ctl = PUBSUB__PB__CONTROL_MESSAGE__INIT;
    Pubsub__Pb__ControlIWant iw = PUBSUB__PB__CONTROL_IWANT__INIT;
    Pubsub__Pb__ControlIWant *iwp = &iw;
    Pubsub__Pb__RPC__SubOpts *subs = NULL, **subp = NULL;
    Pubsub__Pb__ControlIHave *ih = NULL, **ihp = NULL;
    Pubsub__Pb__ControlGraft *gr = NULL, **grp = NULL;
    Pubsub__Pb__ControlPrune *pr = NULL, **prp = NULL;
    ProtobufCBinaryData *ids = NULL, *wids = NULL;
    Pubsub__Pb__PeerInfo *pis = NULL, **pisp = NULL;
    int rc = MESH_ENOMEM;

    *out = NULL;
    *out_len = 0;
    size_t n_sub = o->n_subs, n_ih = o->n_ihave;
    subs = calloc(n_sub + 1, sizeof *subs);
    subp = calloc(n_sub + 1, sizeof *subp);
    ih = calloc(n_ih + 1, sizeof *ih);
    ihp = calloc(n_ih + 1, sizeof *ihp);
    ids = calloc(n_ih + 1, sizeof *ids);
    wids = calloc(o->n_iwant + 1, sizeof *wids);
    gr = calloc(o->n_graft + 1, sizeof *gr);
    grp = calloc(o->n_graft + 1, sizeof *grp);
    pr = calloc(o->n_prune + 1, sizeof *pr);
    prp = calloc(o->n_prune + 1, sizeof *prp);
    size_t n_pi = 0;
    for (size_t i = 0; i < o->n_prune; i++) n_pi += o->prune[i].n_px;
    pis = calloc(n_pi + 1, sizeof *pis);
    pisp = calloc(n_pi + 1, sizeof *pisp);
    if (!subs || !subp || !ih || !ihp || !ids || !wids || !gr || !grp || !pr || !prp || !pis ||
        !pisp)
        goto done;
    for (size_t i = 0; i < n_sub; i++) {
        pubsub__pb__rpc__sub_opts__init(&subs[i]);
        subs[i].has_subscribe = 1;
        subs[i].subscribe = o->subs[i].sub;
        subs[i].topicid = g->topics[o->subs[i].topic]->name;
        subp[i] = &subs[i];
    }
    rpc.n_subscriptions = n_sub;
    rpc.subscriptions = subp;
    /* IHAVE: one entry per topic, ids grouped (pending entries are appended per topic). */
    size_t n_groups = 0;
    for (size_t i = 0; i < n_ih; i++) ids[i] = (ProtobufCBinaryData){o->ihave[i].m->id_len,
                                                                      o->ihave[i].m->id};
    for (size_t i = 0; i < n_ih;) {
        size_t j = i;
        while (j < n_ih && o->ihave[j].topic == o->ihave[i].topic) j++;
        pubsub__pb__control_ihave__init(&ih[n_groups]);
        ih[n_groups].topicid = g->topics[o->ihave[i].topic]->name;
        ih[n_groups].n_messageids = j - i;
        ih[n_groups].messageids = &ids[i];
        ihp[n_groups] = &ih[n_groups];
        n_groups++;
        i = j;
    }
    ctl.n_ihave = n_groups;
    ctl.ihave = ihp;
    for (size_t i = 0; i < o->n_iwant; i++)
        wids[i] = (ProtobufCBinaryData){o->iwant[i].len, (uint8_t *)o->iwant[i].b};
    iw.n_messageids = o->n_iwant;
    iw.messageids = wids;
    if (o->n_iwant) {
        ctl.n_iwant = 1;
        ctl.iwant = &iwp;
    }
    for (size_t i = 0; i < o->n_graft; i++) {
        pubsub__pb__control_graft__init(&gr[i]);
        gr[i].topicid = g->topics[o->graft[i]]->name;
        grp[i] = &gr[i];
    }
    ctl.n_graft = o->n_graft;
    ctl.graft = grp;
    for (size_t i = 0; i < o->n_prune; i++) {
        pubsub__pb__control_prune__init(&pr[i]);
        pr[i].topicid = g->topics[o->prune[i].topic]->name;
        pr[i].has_backoff = 1;
        pr[i].backoff = o->prune[i].backoff_s;
        pr[i].n_peers = o->prune[i].n_px;
        pr[i].peers = pisp + (pis_used(o, i));
        for (size_t j = 0; j < o->prune[i].n_px; j++) {
            Pubsub__Pb__PeerInfo *pi = &pis[pis_used(o, i) + j];
            pubsub__pb__peer_info__init(pi);
            pi->has_peerid = 1;
            pi->peerid = (ProtobufCBinaryData){o->prune[i].px[j].len,
                                               (uint8_t *)o->prune[i].px[j].bytes};
            pisp[pis_used(o, i) + j] = pi;
        }
        prp[i] = &pr[i];
    }
    ctl.n_prune = o->n_prune;
    ctl.prune = prp;
    if (n_groups || o->n_iwant || o->n_graft || o->n_prune) rpc.control = &ctl;
    size_t n = pubsub__pb__rpc__get_packed_size(&rpc);
    uint8_t *b = malloc(n ? n : 1);
    if (!b) goto done;
    pubsub__pb__rpc__pack(&rpc, b);
    *out = b;
    *out_len = n;
    rc = 0;
done:
    free(subs);
    free(subp);
    free(ih);
    free(ihp);
    free(ids);
    free(wids);
    free(gr);
    free(grp);
    free(pr);
    free(prp);
    free(pis);
    free(pisp);
    return rc;
}

int gossip_next_output(struct gossip *g, struct gossip_output *out)
{
    memset(out, 0, sizeof *out);
    for (size_t k = 0; k < g->n_peers; k++) {
        size_t idx = (g->out_cursor + k) % g->n_peers;
        struct g_peer *p = g->peers[idx];
        struct g_pending *o = &p->out;
        if (!gossip_pending_any(o)) continue;
        uint8_t *ctl;
        size_t ctl_len;
        int rc = rpc_pack_control(g, o, &ctl, &ctl_len);
        if (rc < 0) return rc;
        /* Append whole messages (field 2, wire type 2) while the frame stays under the cap. */
        size_t total = ctl_len, n_take = 0;
        uint8_t hdr[1 + VARINT_MAX_LEN];
        for (; n_take < o->n_msgs; n_take++) {
            size_t add = 1 + varint_encode(o->msgs[n_take]->raw_len, hdr) +
                         o->msgs[n_take]->raw_len;
            if (total + add > GOSSIP_RPC_MAX_LEN && n_take > 0) break;
            total += add;
        }
        uint8_t *f = malloc(total + VARINT_MAX_LEN);
        if (!f) {
            free(ctl);
            return MESH_ENOMEM;
        }
        size_t w = varint_encode(total, f);
        memcpy(f + w, ctl, ctl_len);
        w += ctl_len;
        for (size_t i = 0; i < n_take; i++) {
            const struct g_msg *m = o->msgs[i];
            f[w++] = 0x12;
            w += varint_encode(m->raw_len, f + w);
            memcpy(f + w, m->raw, m->raw_len);
            w += m->raw_len;
        }
        free(ctl);
        gossip_pending_clear(o, n_take);
        out->peer = p->id;
        out->frame = f;
        out->frame_len = w;
        g->out_cursor = idx + 1;
        return 0;
    }
    return MESH_ENOTFOUND;
}

/* ---- received RPCs ---------------------------------------------------------------- */

static bool topic_ok(const char *s) { return s && s[0] && strlen(s) <= GOSSIP_TOPIC_MAX_LEN; }

/* Structural limits on an RPC before anything acts on it. */
static int rpc_validate(const Pubsub__Pb__RPC *r)
{
    if (r->n_subscriptions > RPC_SUBS_MAX || r->n_publish > RPC_PUBLISH_MAX) return MESH_EPROTO;
    for (size_t i = 0; i < r->n_subscriptions; i++)
        if (!topic_ok(r->subscriptions[i]->topicid)) return MESH_EPROTO;
    const Pubsub__Pb__ControlMessage *c = r->control;
    if (!c) return 0;
    if (c->n_ihave > RPC_CONTROL_MAX || c->n_iwant > RPC_CONTROL_MAX ||
        c->n_graft > RPC_CONTROL_MAX || c->n_prune > RPC_CONTROL_MAX)
        return MESH_EPROTO;
    for (size_t i = 0; i < c->n_ihave; i++) {
        if (c->ihave[i]->topicid && strlen(c->ihave[i]->topicid) > GOSSIP_TOPIC_MAX_LEN)
            return MESH_EPROTO;
        if (c->ihave[i]->n_messageids > RPC_IDS_MAX) return MESH_EPROTO;
        for (size_t j = 0; j < c->ihave[i]->n_messageids; j++)
            if (c->ihave[i]->messageids[j].len > RPC_ID_LEN_MAX) return MESH_EPROTO;
    }
    for (size_t i = 0; i < c->n_iwant; i++) {
        if (c->iwant[i]->n_messageids > RPC_IDS_MAX) return MESH_EPROTO;
        for (size_t j = 0; j < c->iwant[i]->n_messageids; j++)
            if (c->iwant[i]->messageids[j].len > RPC_ID_LEN_MAX) return MESH_EPROTO;
    }
    for (size_t i = 0; i < c->n_graft; i++)
        if (!topic_ok(c->graft[i]->topicid)) return MESH_EPROTO;
    for (size_t i = 0; i < c->n_prune; i++) {
        if (!topic_ok(c->prune[i]->topicid)) return MESH_EPROTO;
        if (c->prune[i]->n_peers > RPC_PX_MAX) return MESH_EPROTO;
    }
    return 0;
}

int gossip_rpc_decode(const uint8_t *body, size_t body_len, Pubsub__Pb__RPC **out)
{
    *out = NULL;
    if (body_len > GOSSIP_RPC_MAX_LEN) return MESH_EPROTO;
    Pubsub__Pb__RPC *r = pubsub__pb__rpc__unpack(NULL, body_len, body);
    if (!r) return MESH_EPROTO;
    if (rpc_validate(r) < 0) {
        pubsub__pb__rpc__free_unpacked(r, NULL);
        return MESH_EPROTO;
    }
    *out = r;
    return 0;
}

int gossip_rpc_check(const uint8_t *body, size_t body_len)
{
    Pubsub__Pb__RPC *r;
    int rc = gossip_rpc_decode(body, body_len, &r);
    if (r) pubsub__pb__rpc__free_unpacked(r, NULL);
    return rc;
}

int gossip_frame_split(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len,
                       size_t *used)
{
    uint64_t n;
    size_t vlen;
    *body = NULL;
    *body_len = 0;
    *used = 0;
    int rc = varint_decode(buf, len, &n, &vlen);
    if (rc < 0) return rc;
    if (n > GOSSIP_RPC_MAX_LEN) return MESH_ERANGE;
    if (len - vlen < n) return MESH_EAGAIN;
    *body = buf + vlen;
    *body_len = (size_t)n;
    *used = vlen + (size_t)n;
    return 0;
}
