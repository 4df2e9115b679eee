/* cli_split.c - run and chat through a split model's route, and the scheduler loop
 * (cli_split.h). The node is the one serve builds (node/service.h); only the printing and
 * the decision to split live here.
 */
#include "cli/cli_split.h"

#include "cli/cli.h"
#include "core/err.h"
#include "core/sysmem.h"
#include "node/autosplit.h"
#include "node/pipeline.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Whether and how to split: --layers, else --mesh when the file does not fit. 0, 1. */
static int split_decide(const char *cmd, const char *model, const struct cli_mesh_opts *mo,
                        int *begin, int *end, bool *is_split)
{
    *is_split = false;
    if (mo->has_layers) {
        *begin = mo->layer_begin;
        *end = mo->layer_end;
        *is_split = true;
        return 0;
    }
    if (!mo->mesh_fit) return 0;
    char path[4096], name[256], err[512];
    if (registry_resolve(model, path, sizeof path, name, sizeof name, err, sizeof err)) {
        cli_fail("%s: %s", cmd, err);
        return 1;
    }
    uint64_t *lb = NULL, shared = 0;
    int n_layer = 0;
    if (autosplit_sizes_read(path, &lb, &n_layer, &shared, err, sizeof err)) {
        cli_fail("%s: %s", cmd, err);
        return 1;
    }
    uint64_t mem = sysmem_free_bytes(), total = shared;
    for (int l = 0; l < n_layer; l++) total += lb[l];
    int k = autosplit_fit(lb, n_layer, shared, mem);
    free(lb);
    if (k == n_layer) return 0; /* it fits: run it whole */
    *begin = 0;
    *end = k;
    *is_split = true;
    if (k == 0)
        fprintf(stderr, "meshllm: %s: %s (%.1f MiB) does not fit in free memory (%.1f MiB): "
                "this node holds its embedding and head, every layer runs on the mesh\n",
                cmd, name, (double)total / 1048576.0, (double)mem / 1048576.0);
    else
        fprintf(stderr, "meshllm: %s: %s (%.1f MiB) does not fit in free memory (%.1f MiB): "
                "layers 0-%d here, %d-%d on the mesh\n", cmd, name,
                (double)total / 1048576.0, (double)mem / 1048576.0, k - 1, k, n_layer - 1);
    return 0;
}

static void route_print(const char *cmd, struct registry_entry *e)
{
    struct pipeline_hop *hops = calloc(PIPELINE_MAX_HOPS, sizeof *hops);
    int n = hops ? pipeline_route(e->pipe, hops, PIPELINE_MAX_HOPS) : 0;
    for (int h = 0; h < n; h++)
        fprintf(stderr, "meshllm: %s: stage %d: layers %d-%d on %s\n", cmd, h + 1,
                hops[h].layer_begin, hops[h].layer_end - 1,
                hops[h].is_local ? "this node" : hops[h].id_text);
    free(hops);
}

int cli_split_open(struct cli_split *cs, const char *cmd, const char *model,
                   const struct cli_mesh_opts *mo, const struct sched_params *sp, bool verbose,
                   bool *is_split)
{
    memset(cs, 0, sizeof *cs);
    int begin = 0, end = 0;
    if (split_decide(cmd, model, mo, &begin, &end, is_split)) return 1;
    if (!*is_split) {
        if (mo->auto_split || mo->join || mo->n_boot) {
            /* the mesh options only matter to a split model */
            if (verbose)
                fprintf(stderr, "meshllm: %s: the model fits here; the mesh is not used\n", cmd);
        }
        return 0;
    }
    struct cli_mesh_opts m = *mo;
    if (m.n_listen == 0) { /* a requester dials its stages: any free port will do */
        multiaddr_from_text("/ip4/0.0.0.0/tcp/0", &m.listen[m.n_listen++]);
        multiaddr_from_text("/ip6/::/tcp/0", &m.listen[m.n_listen++]);
    }
    const char *models[1] = {model};
    struct service_config sc = {.sp = sp, .models = models, .n_models = 1, .has_layers = true,
                                .layer_begin = begin, .layer_end = end, .p2p = true,
                                .auto_split = m.auto_split};
    if (cli_mesh_config(&m, cmd, cs->dir_buf, sizeof cs->dir_buf, &sc.mesh)) return 1;
    char err[1024] = "";
    if (service_open(&sc, &cs->svc, err, sizeof err) ||
        service_load_wait(cs->svc, err, sizeof err)) {
        cli_fail("%s: %s", cmd, err);
        cli_split_close(cs);
        return 1;
    }
    if (verbose) cli_mesh_print(service_mesh(cs->svc), stderr);
    enum registry_state st;
    cs->e = registry_at(service_registry(cs->svc), 0, &st);
    if (service_route_wait(cs->svc, 0, m.route_wait_s * 1000, cmd, err, sizeof err)) {
        cli_fail("%s: %s", cmd, err);
        cli_split_close(cs);
        return 1;
    }
    if (verbose) route_print(cmd, cs->e);
    return 0;
}

void cli_split_close(struct cli_split *cs)
{
    service_close(cs->svc);
    memset(cs, 0, sizeof *cs);
}

/* The scheduler's notify: wakes the waiting loop. */
struct gen_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
};

static void gen_wake(void *arg)
{
    struct gen_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->ready = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int cli_sched_generate(struct sched *s, const int32_t *ids, int n_ids,
                       const struct sched_gen_params *gp, cli_sched_emit_fn emit, void *user,
                       struct cli_sched_result *res)
{
    memset(res, 0, sizeof *res);
    struct gen_wait w = {.ready = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    struct sched_req *r = NULL;
    res->t_submit_ms = mono_ms();
    int rc = sched_submit_gen(s, ids, n_ids, gp, gen_wake, &w, &r);
    for (bool done = rc != 0; !done;) {
        pthread_mutex_lock(&w.mu);
        while (!w.ready) pthread_cond_wait(&w.cv, &w.mu);
        w.ready = false;
        pthread_mutex_unlock(&w.mu);
        struct sched_chunk ch;
        if ((rc = sched_req_take(r, &ch))) break;
        if (ch.n_ids && !res->t_first_ms) res->t_first_ms = mono_ms();
        res->n_gen += ch.n_ids;
        if ((ch.len || ch.n_ids) && emit && emit(user, ch.text ? ch.text : "", ch.len, ch.ids,
                                                  ch.n_ids))
            sched_req_cancel(r); /* it ends "cancelled" at the next step */
        done = ch.done;
        if (done) snprintf(res->finish, sizeof res->finish, "%s", ch.finish_reason);
        sched_chunk_free(&ch);
    }
    res->t_end_ms = mono_ms();
    sched_req_release(r);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}
