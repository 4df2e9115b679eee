/* pool.c - fork/join worker pool (see pool.h).
 *
 * A job has exactly nth slices; slice i is fn(arg, i, nth). Slices are claimed, not
 * assigned: the caller publishes the job as `claim` = (generation << 32 | next slice),
 * and every thread, the caller included, takes slices with a compare-and-swap until none
 * are left. So when the machine is oversubscribed and a worker is not scheduled, the
 * caller runs its slice instead of waiting for it: the pool degrades to fewer threads,
 * never stalls on a descheduled one. Slice i still runs on one thread at a time, so
 * kernels may index per-thread scratch by i.
 *
 * Workers spin on `claim` for a bounded number of iterations before sleeping on a
 * condition variable; the caller wakes sleepers only if there are any (Dekker-style
 * handshake on n_sleeping with sequentially consistent atomics).
 */
#include "pool.h"

#include "err.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
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

enum { POOL_SPIN = 1 << 14 };

struct pool_worker {
    struct pool *pool;
    pthread_t thread;
};

struct pool {
    int n_threads;
    struct pool_worker *workers; /* n_threads - 1 entries */
    /* The job: written by the caller before `claim` is published, read by a thread only
     * after it has claimed a slice of that generation (so they are still valid). */
    pool_fn fn;
    void *arg;
    _Atomic uint64_t claim;  /* generation << 32 | next unclaimed slice */
    atomic_int n_done;       /* slices finished in the current generation */
    atomic_bool stop;
    pthread_mutex_t mu;      /* with cv: sleeping workers */
    pthread_cond_t cv;
    atomic_int n_sleeping;
};

int pool_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Claims and runs slices of generation gen until none are left. */
static void pool_work(struct pool *p, uint32_t gen)
{
    uint64_t c = atomic_load(&p->claim);
    for (;;) {
        if ((uint32_t)(c >> 32) != gen || (uint32_t)c >= (uint32_t)p->n_threads) return;
        if (!atomic_compare_exchange_weak(&p->claim, &c, c + 1)) continue;
        p->fn(p->arg, (int)(uint32_t)c, p->n_threads);
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_release);
        c = atomic_load(&p->claim);
    }
}

static void *pool_worker_main(void *p_)
{
    struct pool_worker *w = p_;
    struct pool *p = w->pool;
    uint32_t seen = 0; /* generation 0 is never a job */
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = (uint32_t)(atomic_load(&p->claim) >> 32)) == seen && !atomic_load(&p->stop)) {
            if (++spins < POOL_SPIN) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->n_sleeping, 1);
            while ((uint32_t)(atomic_load(&p->claim) >> 32) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        pool_work(p, g);
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
    atomic_store(&p->n_done, 0);
    uint32_t gen = (uint32_t)(atomic_load(&p->claim) >> 32) + 1;
    if (gen == 0) gen = 1; /* wrapped: 0 is reserved for "no job yet" */
    atomic_store(&p->claim, (uint64_t)gen << 32); /* seq_cst: pairs with n_sleeping */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    pool_work(p, gen);
    /* Every slice is claimed; wait for the ones still running elsewhere. */
    for (int spins = 0; atomic_load_explicit(&p->n_done, memory_order_acquire) < p->n_threads; spins++) {
        if (spins < POOL_SPIN) cpu_relax();
        else sched_yield();
    }
}
