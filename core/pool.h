/* pool.h - a fixed pool of worker threads for data-parallel kernels.
 *
 * pool_run() calls fn(arg, ith, nth) once on each of nth threads (the caller is
 * thread 0) and returns when all have finished: a fork/join with no thread
 * creation per call. Workers spin briefly on a generation counter, then sleep on
 * a condition variable, so back-to-back calls (one per layer, per token) are cheap.
 * Thread rule: one thread at a time may call pool_run() on a given pool.
 */
#ifndef MESH_CORE_POOL_H
#define MESH_CORE_POOL_H

typedef void (*pool_fn)(void *arg, int ith, int nth);

struct pool;

/* Creates a pool of n_threads (>= 1; the caller counts as one). 0 -> number of cores. */
int pool_new(int n_threads, struct pool **out);
void pool_free(struct pool *p);
int pool_size(const struct pool *p);

/* Runs fn on every thread of the pool; returns when all calls have returned. */
void pool_run(struct pool *p, pool_fn fn, void *arg);

/* Number of online CPU cores (>= 1). */
int pool_default_threads(void);

#endif
