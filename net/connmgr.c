/* connmgr.c - protected peers, per-IP keys and the trim order (see connmgr.h). No I/O. */
#include "net/connmgr.h"

#include "core/err.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

void connmgr_init(struct connmgr *cm)
{
    memset(cm, 0, sizeof *cm);
}

void connmgr_free(struct connmgr *cm)
{
    if (!cm) return;
    free(cm->prot);
    memset(cm, 0, sizeof *cm);
}

static ptrdiff_t protection_find(const struct connmgr *cm, const struct peer_id *id,
                                 const char *tag)
{
    for (size_t i = 0; i < cm->n_prot; i++)
        if (peer_id_equal(&cm->prot[i].id, id) && !strcmp(cm->prot[i].tag, tag))
            return (ptrdiff_t)i;
    return -1;
}

int connmgr_protect(struct connmgr *cm, const struct peer_id *id, const char *tag, bool on)
{
    size_t tag_len = tag ? strlen(tag) : 0;
    if (!id || id->len == 0 || tag_len == 0 || tag_len >= CONNMGR_TAG_CAP) return MESH_EINVAL;
    ptrdiff_t at = protection_find(cm, id, tag);
    if (!on) {
        if (at >= 0) cm->prot[at] = cm->prot[--cm->n_prot];
        return 0;
    }
    if (at >= 0) return 0;
    if (cm->n_prot == CONNMGR_MAX_PROTECTED) return MESH_EFULL;
    if (cm->n_prot == cm->prot_cap) {
        size_t cap = cm->prot_cap ? cm->prot_cap * 2 : 16;
        struct connmgr_protection *p = realloc(cm->prot, cap * sizeof *p);
        if (!p) return MESH_ENOMEM;
        cm->prot = p;
        cm->prot_cap = cap;
    }
    struct connmgr_protection *p = &cm->prot[cm->n_prot++];
    memset(p, 0, sizeof *p);
    p->id = *id;
    memcpy(p->tag, tag, tag_len + 1);
    return 0;
}

bool connmgr_is_protected(const struct connmgr *cm, const struct peer_id *id)
{
    for (size_t i = 0; i < cm->n_prot; i++)
        if (peer_id_equal(&cm->prot[i].id, id)) return true;
    return false;
}

int connmgr_ip_key(const struct sockaddr *sa, struct connmgr_ip *out)
{
    static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(out, 0, sizeof *out);
    if (sa->sa_family == AF_INET) {
        memcpy(out->b, v4_mapped, sizeof v4_mapped);
        memcpy(out->b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family != AF_INET6) return MESH_EUNSUPPORTED;
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    if (!memcmp(a, v4_mapped, sizeof v4_mapped)) memcpy(out->b, a, 16); /* an IPv4 peer */
    else memcpy(out->b, a, 8); /* the /64 */
    return 0;
}

bool connmgr_ip_equal(const struct connmgr_ip *a, const struct connmgr_ip *b)
{
    return !memcmp(a->b, b->b, sizeof a->b);
}

static int cand_cmp(const void *pa, const void *pb)
{
    const struct connmgr_cand *a = pa, *b = pb;
    if (a->useful_ms != b->useful_ms) return a->useful_ms < b->useful_ms ? -1 : 1;
    if (a->since_ms != b->since_ms) return a->since_ms > b->since_ms ? -1 : 1;
    return 0;
}

void connmgr_rank(struct connmgr_cand *cands, size_t n)
{
    if (n > 1) qsort(cands, n, sizeof *cands, cand_cmp);
}
