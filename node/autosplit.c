/* autosplit.c - who holds which layers (autosplit.h): the sizes of a GGUF's layers, what
 * fits, the proportional split; and the requester's thread that asks members with
 * --accept-stages to load the layers nobody serves (/meshllm/stageload/1, stageload.h).
 * The split is by bytes, not by layer count: layers of one model are alike, but a share
 * in bytes is what a peer's memory has to hold.
 */
#include "node/autosplit.h"

#include "core/err.h"
#include "engine/gguf.h"

#include <stdlib.h>
#include <string.h>

/* "blk.N." -> N, else -1. */
static long layer_of(const struct gguf_str *name)
{
    if (name->len < 6 || memcmp(name->ptr, "blk.", 4)) return -1;
    long n = 0;
    uint64_t i = 4;
    for (; i < name->len && name->ptr[i] >= '0' && name->ptr[i] <= '9' && n < 1000000; i++)
        n = n * 10 + (name->ptr[i] - '0');
    return i > 4 && i < name->len && name->ptr[i] == '.' ? n : -1;
}

int autosplit_sizes_read(const char *path, uint64_t **layer_bytes, int *n_layer,
                         uint64_t *shared, char *err, size_t err_cap)
{
    *layer_bytes = NULL;
    *n_layer = 0;
    *shared = 0;
    struct gguf *g = NULL;
    int rc = gguf_open(path, &g, err, err_cap);
    if (rc) return rc;
    int64_t n_t = gguf_tensor_count(g);
    long max_layer = -1;
    for (int64_t i = 0; i < n_t; i++) {
        long l = layer_of(&gguf_tensor_at(g, i)->name);
        if (l > max_layer) max_layer = l;
    }
    uint64_t *lb = calloc((size_t)(max_layer + 1 > 0 ? max_layer + 1 : 1), sizeof *lb);
    if (!lb) {
        gguf_close(g);
        return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    }
    for (int64_t i = 0; i < n_t; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        long l = layer_of(&t->name);
        if (l >= 0) lb[l] += t->size;
        else *shared += t->size;
    }
    gguf_close(g);
    *layer_bytes = lb;
    *n_layer = (int)(max_layer + 1);
    return 0;
}

int autosplit_fit(const uint64_t *layer_bytes, int n_layer, uint64_t shared, uint64_t mem)
{
    double room = (double)mem * AUTOSPLIT_MEM_SHARE - (double)shared;
    int k = 0;
    for (; k < n_layer && room >= (double)layer_bytes[k]; k++) room -= (double)layer_bytes[k];
    return k;
}

/* Each candidate's target share of total bytes: proportional to mem x speed, clipped at
 * its cap, the excess of a clipped one spread over the others (water-filling). */
static void targets(const struct autosplit_cand *c, int n, double total, double *t, double *cap)
{
    bool *clip = calloc((size_t)n, sizeof *clip);
    for (int i = 0; i < n; i++) cap[i] = (double)c[i].mem_free * AUTOSPLIT_MEM_SHARE;
    for (int round = 0; round <= n; round++) {
        double left = total, w = 0;
        for (int i = 0; i < n; i++) {
            if (clip && clip[i]) left -= cap[i];
            else w += (double)c[i].mem_free * (c[i].speed > 0 ? c[i].speed : 1);
        }
        bool more = false;
        for (int i = 0; i < n; i++) {
            if (clip && clip[i]) {
                t[i] = cap[i];
                continue;
            }
            double wi = (double)c[i].mem_free * (c[i].speed > 0 ? c[i].speed : 1);
            t[i] = w > 0 && left > 0 ? left * wi / w : 0;
            if (t[i] > cap[i] && clip) {
                clip[i] = true;
                more = true;
            }
        }
        if (!more) break;
    }
    free(clip);
}

int autosplit_assign(const uint64_t *layer_bytes, int begin, int end,
                     const struct autosplit_cand *c, int n, struct autosplit_range *out, int cap)
{
    if (begin < 0 || end <= begin || n < 0) return MESH_EINVAL;
    double total = 0;
    for (int l = begin; l < end; l++) total += (double)layer_bytes[l];
    double *t = calloc((size_t)(n > 0 ? n : 1), 2 * sizeof *t);
    if (!t) return MESH_ENOMEM;
    double *mcap = t + n;
    targets(c, n, total, t, mcap);
    int l = begin, n_out = 0, last = n - 1;
    double want = 0, done = 0; /* cumulative target, bytes assigned so far */
    for (int i = 0; i < n && l < end && n_out < cap; i++) {
        want += t[i];
        int start = l;
        double bytes = 0;
        while (l < end) {
            double b = (double)layer_bytes[l];
            if (bytes + b > mcap[i]) break;
            /* take the layer while that lands nearer the cumulative target */
            if (i != last && done + bytes + b / 2 > want) break;
            bytes += b;
            l++;
        }
        done += bytes;
        if (l > start) out[n_out++] = (struct autosplit_range){i, start, l};
    }
    if (l < end) { /* rounding left the last ones short: fill each as far as it holds */
        l = begin;
        n_out = 0;
        for (int i = 0; i < n && l < end && n_out < cap; i++) {
            int start = l;
            double bytes = 0;
            while (l < end && bytes + (double)layer_bytes[l] <= mcap[i])
                bytes += (double)layer_bytes[l++];
            if (l > start) out[n_out++] = (struct autosplit_range){i, start, l};
        }
    }
    free(t);
    return l < end ? MESH_EFULL : n_out;
}
