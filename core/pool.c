/* pool.c - fork/join worker pool (see pool.h).
 *
 * A job is published by bumping `gen`; each worker runs its slice and
 * decrements `n_pending`; the caller runs slice 0 and then waits for zero.
 * Workers spin on `gen` for a bounded number of iterations before sleeping,
 * which keeps the per-call cost in the microseconds when calls come in a
 * tight loop (one per matmul) and costs nothing when the pool is idle.
 */
#define _GNU_SOURCE
#include "pool.h"

#include "err.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

enum { POOL_SPIN = 1 << 16 };

struct pool_worker {
    struct pool *pool;
    pthread_t thread;
    int ith;
};

struct pool {
    int n_threads;
    struct pool_worker *workers; /* n_threads - 1 entries */
    /* Job slot: written by the caller before `gen` is bumped (release). */
    pool_fn fn;
    void *arg;
    atomic_uint gen;        /* job generation; odd/even does not matter */
    atomic_int n_pending;   /* workers still running the current job */
    atomic_bool stop;
    pthread_mutex_t mu;     /* guards sleeping on cv (with gen re-checked) */
    pthread_cond_t cv;
    atomic_int n_sleeping;
};

int pool_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void *pool_worker_main(void *p_)
{
    struct pool_worker *w = p_;
    struct pool *p = w->pool;
    unsigned seen = 0; /* gen starts at 0; a job may be posted before we get here */
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load(&p->stop)) {
            if (++spins < POOL_SPIN) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->n_sleeping, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        p->fn(p->arg, w->ith, p->n_threads);
        atomic_fetch_sub_explicit(&p->n_pending, 1, memory_order_acq_rel);
    }
    return NULL;
}

int pool_new(int n_threads, struct pool **out)
{
    *out = NULL;
    if (n_threads <= 0) n_threads = pool_default_threads();
    struct pool *p = calloc(1, sizeof *p);
    if (!p) return MESH_ENOMEM;
    p->n_threads = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            pool_free(p);
            return MESH_ENOMEM;
        }
        for (int i = 1; i < n_threads; i++) {
            struct pool_worker *w = &p->workers[i - 1];
            w->pool = p;
            w->ith = i;
            if (pthread_create(&w->thread, NULL, pool_worker_main, w) != 0) {
                pool_free(p);
                return MESH_EIO;
            }
            p->n_threads = i + 1;
        }
    }
    *out = p;
    return 0;
}

void pool_free(struct pool *p)
{
    if (!p) return;
    atomic_store(&p->stop, true);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->workers[i - 1].thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

int pool_size(const struct pool *p) { return p->n_threads; }

void pool_run(struct pool *p, pool_fn fn, void *arg)
{
    if (p->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->n_pending, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: pairs with n_sleeping (Dekker) */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0, p->n_threads);
    /* Spin, then yield: with more threads than free cores a worker may need our core. */
    for (int spins = 0; atomic_load_explicit(&p->n_pending, memory_order_acquire) > 0; spins++) {
        if (spins < POOL_SPIN) cpu_relax();
        else sched_yield();
    }
}
