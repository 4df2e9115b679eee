/* ratelimit.c - per-client request rate limit: one token bucket per client address
 * (serve --rate-limit N: N requests a minute, bursts of up to N), in a bounded table that
 * forgets the client seen longest ago when a new one arrives and the table is full.
 * No I/O and no clock of its own: the caller passes the time, so tests run on a virtual one.
 * Not here: limits per API key or per model, or anything shared between nodes.
 */
#include "api/api_internal.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

/* Bucket arithmetic in integers: one token is 60000 units and a client earns N units per
 * millisecond, i.e. N tokens per minute; a full bucket holds N tokens. */
#define RL_TOKEN_UNITS 60000

struct rl_client {
    unsigned char key[API_RATELIMIT_KEY_CAP];
    size_t key_len;      /* 0: free entry */
    int64_t units;       /* tokens * RL_TOKEN_UNITS at last_ms */
    int64_t last_ms;     /* last refill (and last request) */
};

struct api_ratelimit {
    pthread_mutex_t mu; /* guards everything below */
    int64_t per_min;
    struct rl_client *clients; /* [n_cap] */
    int n_cap;
};

int api_ratelimit_new(int per_min, int n_clients, struct api_ratelimit **out)
{
    *out = NULL;
    if (per_min <= 0 || n_clients <= 0) return MESH_EINVAL;
    struct api_ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl) return MESH_ENOMEM;
    rl->clients = calloc((size_t)n_clients, sizeof *rl->clients);
    if (!rl->clients) {
        free(rl);
        return MESH_ENOMEM;
    }
    rl->per_min = per_min;
    rl->n_cap = n_clients;
    pthread_mutex_init(&rl->mu, NULL);
    *out = rl;
    return 0;
}

void api_ratelimit_free(struct api_ratelimit *rl)
{
    if (!rl) return;
    pthread_mutex_destroy(&rl->mu);
    free(rl->clients);
    free(rl);
}

/* The client's entry, or a fresh full bucket in a free entry or the one seen longest ago. */
static struct rl_client *client_get(struct api_ratelimit *rl, const void *key, size_t key_len,
                                    int64_t now_ms)
{
    struct rl_client *victim = NULL;
    for (int i = 0; i < rl->n_cap; i++) {
        struct rl_client *c = &rl->clients[i];
        if (c->key_len == key_len && !memcmp(c->key, key, key_len)) return c;
        if (!victim || (victim->key_len && (!c->key_len || c->last_ms < victim->last_ms)))
            victim = c;
    }
    memcpy(victim->key, key, key_len);
    victim->key_len = key_len;
    victim->units = rl->per_min * RL_TOKEN_UNITS;
    victim->last_ms = now_ms;
    return victim;
}

bool api_ratelimit_take(struct api_ratelimit *rl, const void *key, size_t key_len,
                        int64_t now_ms, int *retry_after_s)
{
    *retry_after_s = 0;
    if (!rl) return true;
    if (key_len > API_RATELIMIT_KEY_CAP) key_len = API_RATELIMIT_KEY_CAP;
    pthread_mutex_lock(&rl->mu);
    struct rl_client *c = client_get(rl, key, key_len, now_ms);
    int64_t full = rl->per_min * RL_TOKEN_UNITS;
    int64_t dt = now_ms - c->last_ms;
    if (dt > 0) {
        /* a minute refills any bucket: capping dt keeps dt * per_min from overflowing */
        if (dt > 60000) dt = 60000;
        c->units += dt * rl->per_min;
        if (c->units > full) c->units = full;
        c->last_ms = now_ms;
    }
    bool ok = c->units >= RL_TOKEN_UNITS;
    if (ok) {
        c->units -= RL_TOKEN_UNITS;
    } else {
        /* ms until the bucket holds one token, rounded up to whole seconds */
        int64_t wait_ms = (RL_TOKEN_UNITS - c->units + rl->per_min - 1) / rl->per_min;
        int64_t s = (wait_ms + 999) / 1000;
        *retry_after_s = s < 1 ? 1 : (int)s;
    }
    pthread_mutex_unlock(&rl->mu);
    return ok;
}
