/* sampler.c - the sampling chain of sampler.h: penalties, top-k, top-p, min-p,
 * temperature, softmax and a seeded draw.
 *
 * Follows the default chain and the arithmetic of llama.cpp's src/llama-sampling.cpp
 * (penalties: repeat divides positive / multiplies non-positive logits, then
 * logit -= count * frequency + (count > 0) * presence; top-p keeps the smallest prefix
 * whose probability reaches p; min-p keeps logits >= max + log(min_p)). It does not do
 * llama.cpp's other samplers (DRY, typical, XTC, mirostat, grammar), and its draws differ
 * from llama.cpp's because the RNG is our own: xoshiro256** seeded by splitmix64
 * (Blackman & Vigna, https://prng.di.unimi.it/). Candidate order is total (logit
 * descending, then id ascending), so every result is deterministic for a given seed.
 */
#include "engine/sampler.h"

#include "core/err.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* A candidate token: its (possibly modified) logit and its id. */
struct sampler_cand {
    float logit;
    int32_t id;
};

struct sampler {
    struct sampler_params p;
    int32_t n_vocab;
    uint64_t seed;       /* resolved seed (never SAMPLER_SEED_RANDOM once drawn) */
    struct rng rng;      /* xoshiro256** state */
    bool has_penalties;  /* penalty_last_n != 0 and some penalty is not neutral */

    struct sampler_cand *cand; /* [n_vocab] working candidates of one sample call */
    float *w;                  /* [n_vocab] unnormalised probabilities of the draw */
    int32_t n_sorted;          /* cand[0..n_sorted) is sorted best first */

    /* Penalty window: occurrence counts of the last penalty_last_n accepted tokens
     * (all tokens if -1), and the set of ids with a non-zero count. */
    int32_t *counts;   /* [n_vocab] */
    int32_t *seen;     /* [n_vocab] ids with counts > 0, in no particular order */
    int32_t *seen_pos; /* [n_vocab] index of the id in seen, -1 if absent */
    int32_t n_seen;
    int32_t *ring;     /* [penalty_last_n] when penalty_last_n > 0 */
    int32_t ring_len;  /* tokens in the ring (<= penalty_last_n) */
    int32_t ring_head; /* next slot to write: the oldest token once the ring is full */
};

void sampler_params_default(struct sampler_params *p)
{
    memset(p, 0, sizeof *p);
    p->temp = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->penalty_last_n = 64;
    p->seed = SAMPLER_SEED_RANDOM;
}

/* ---- creation ----------------------------------------------------------------------- */

static bool params_valid(const struct sampler_params *p)
{
    if (isnan(p->temp) || isnan(p->top_p) || isnan(p->min_p)) return false;
    if (isnan(p->repeat_penalty) || isinf(p->repeat_penalty) || p->repeat_penalty <= 0.0f)
        return false;
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty)) return false;
    return p->penalty_last_n >= -1 && p->penalty_last_n <= SAMPLER_MAX_LAST_N;
}

int sampler_new(const struct sampler_params *p, int32_t n_vocab, struct sampler **out)
{
    int rc = MESH_ENOMEM;
    *out = NULL;
    if (!p || n_vocab <= 0 || !params_valid(p)) return MESH_EINVAL;
    struct sampler *s = calloc(1, sizeof *s);
    if (!s) return MESH_ENOMEM;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->seed = p->seed;
    if (s->seed == SAMPLER_SEED_RANDOM) {
        uint64_t r;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) {
            rc = MESH_EIO;
            goto fail;
        }
        /* Keep the sentinel out so a logged seed always replays. */
        s->seed = r == SAMPLER_SEED_RANDOM ? 0 : r;
    }
    rng_seed(&s->rng, s->seed);
    s->has_penalties = p->penalty_last_n != 0 &&
                       (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f ||
                        p->frequency_penalty != 0.0f);

    size_t n = (size_t)n_vocab;
    s->cand = calloc(n, sizeof *s->cand);
    s->w = calloc(n, sizeof *s->w);
    if (!s->cand || !s->w) goto fail;
    if (s->has_penalties) {
        s->counts = calloc(n, sizeof *s->counts);
        s->seen = calloc(n, sizeof *s->seen);
        s->seen_pos = malloc(n * sizeof *s->seen_pos);
        if (!s->counts || !s->seen || !s->seen_pos) goto fail;
        if (p->penalty_last_n > 0) {
            s->ring = calloc((size_t)p->penalty_last_n, sizeof *s->ring);
            if (!s->ring) goto fail;
        }
    }
    sampler_reset(s);
    *out = s;
    return 0;
fail:
    sampler_free(s);
    return rc;
}

void sampler_free(struct sampler *s)
{
    if (!s) return;
    free(s->ring);
    free(s->seen_pos);
    free(s->seen);
    free(s->counts);
    free(s->w);
    free(s->cand);
    free(s);
}

uint64_t sampler_seed(const struct sampler *s)
{
    return s->seed;
}

void sampler_reset(struct sampler *s)
{
    if (!s) return;
    rng_seed(&s->rng, s->seed);
    if (s->has_penalties) {
        memset(s->counts, 0, (size_t)s->n_vocab * sizeof *s->counts);
        for (int32_t i = 0; i < s->n_vocab; i++) s->seen_pos[i] = -1;
    }
    s->n_seen = 0;
    s->ring_len = 0;
    s->ring_head = 0;
}

/* ---- penalty window ----------------------------------------------------------------- */

static void window_inc(struct sampler *s, int32_t id)
{
    if (s->counts[id]++ == 0) {
        s->seen_pos[id] = s->n_seen;
        s->seen[s->n_seen++] = id;
    }
}

static void window_dec(struct sampler *s, int32_t id)
{
    if (--s->counts[id] == 0) {
        int32_t pos = s->seen_pos[id];
        int32_t last = s->seen[--s->n_seen];
        s->seen[pos] = last;
        s->seen_pos[last] = pos;
        s->seen_pos[id] = -1;
    }
}

void sampler_accept(struct sampler *s, int32_t id)
{
    if (!s || !s->has_penalties || id < 0 || id >= s->n_vocab) return;
    int32_t last_n = s->p.penalty_last_n;
    if (last_n > 0) {
        if (s->ring_len == last_n)
            window_dec(s, s->ring[s->ring_head]); /* evict the oldest */
        else
            s->ring_len++;
        s->ring[s->ring_head] = id;
        s->ring_head = (s->ring_head + 1) % last_n;
    }
    window_inc(s, id);
}

/* llama.cpp: logit <= 0 ? logit * repeat : logit / repeat, then
 * logit -= count * frequency + (count > 0) * presence. Only for count > 0. */
static float penalize(const struct sampler_params *p, float l, int32_t count)
{
    if (p->repeat_penalty != 1.0f) l = l <= 0.0f ? l * p->repeat_penalty : l / p->repeat_penalty;
    return l - ((float)count * p->frequency_penalty + p->presence_penalty);
}

/* cand[] is in id order here. */
static void apply_penalties(struct sampler *s)
{
    for (int32_t j = 0; j < s->n_seen; j++) {
        int32_t id = s->seen[j];
        s->cand[id].logit = penalize(&s->p, s->cand[id].logit, s->counts[id]);
    }
}

void sampler_apply_penalties(const struct sampler *s, const float *logits, float *out)
{
    if (out != logits) memmove(out, logits, (size_t)s->n_vocab * sizeof *out);
    if (!s->has_penalties) return;
    for (int32_t j = 0; j < s->n_seen; j++) {
        int32_t id = s->seen[j];
        out[id] = penalize(&s->p, out[id], s->counts[id]);
    }
}

/* ---- candidate ordering: logit descending, then id ascending (a total order) -------- */

static bool cand_better(struct sampler_cand a, struct sampler_cand b)
{
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

static int cand_cmp(const void *pa, const void *pb)
{
    const struct sampler_cand *a = pa, *b = pb;
    if (cand_better(*a, *b)) return -1;
    return cand_better(*b, *a) ? 1 : 0;
}

static void cand_swap(struct sampler_cand *a, size_t i, size_t j)
{
    struct sampler_cand t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/* Partitions a[lo..hi] around a median-of-three pivot; returns the pivot's final index:
 * better elements before it, worse after. */
static size_t cand_partition(struct sampler_cand *a, size_t lo, size_t hi)
{
    size_t mid = lo + (hi - lo) / 2;
    if (cand_better(a[mid], a[lo])) cand_swap(a, lo, mid);
    if (cand_better(a[hi], a[lo])) cand_swap(a, lo, hi);
    if (cand_better(a[mid], a[hi])) cand_swap(a, mid, hi); /* a[hi] = median */
    struct sampler_cand pivot = a[hi];
    size_t store = lo;
    for (size_t i = lo; i < hi; i++)
        if (cand_better(a[i], pivot)) cand_swap(a, i, store++);
    cand_swap(a, store, hi);
    return store;
}

/* Moves the k best of a[0..n) to a[0..k) (in no order), 0 < k < n: quickselect, with a
 * full sort of the remaining range if it degenerates (introselect). */
static void cand_select(struct sampler_cand *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1;
    int budget = 128;
    while (lo < hi) {
        if (--budget < 0) {
            qsort(a + lo, hi - lo + 1, sizeof *a, cand_cmp);
            return;
        }
        size_t p = cand_partition(a, lo, hi);
        if (p == k || p + 1 == k) return;
        if (p < k)
            lo = p + 1;
        else
            hi = p - 1;
    }
}

/* Grows the sorted prefix of cand[0..n) to at least want elements. */
static void cand_sort_prefix(struct sampler *s, int32_t n, int32_t want)
{
    if (want > n) want = n;
    if (want <= s->n_sorted) return;
    size_t m = (size_t)s->n_sorted;
    size_t rest = (size_t)n - m, take = (size_t)want - m;
    if (take < rest) cand_select(s->cand + m, rest, take);
    qsort(s->cand + m, take, sizeof *s->cand, cand_cmp);
    s->n_sorted = want;
}

/* Index of the best candidate of cand[0..n). */
static int32_t cand_best(const struct sampler *s, int32_t n)
{
    if (s->n_sorted > 0) return 0;
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (cand_better(s->cand[i], s->cand[best])) best = i;
    return best;
}

/* exp(l - max), exact 1 for l == max so that +-inf logits stay well defined. */
static float weight_of(float l, float max)
{
    return l == max ? 1.0f : expf(l - max);
}

/* ---- the chain ------------------------------------------------------------------------ */

/* Arranges the fewest best candidates of a[lo..hi) whose weights exp(l - max) add up to
 * at least need at a[lo..c) (in no particular order) and returns c: a quickselect that
 * recurses on the side holding the boundary, O(n) with no full sort. */
static size_t cand_select_mass(struct sampler_cand *a, size_t lo, size_t hi, double need,
                               float max)
{
    int budget = 128;
    while (hi - lo > 32 && budget-- > 0) {
        size_t p = cand_partition(a, lo, hi - 1);
        double m = 0.0;
        for (size_t i = lo; i < p; i++) m += weight_of(a[i].logit, max);
        if (m >= need) {
            hi = p;
            continue;
        }
        m += weight_of(a[p].logit, max);
        if (m >= need) return p + 1;
        need -= m;
        lo = p + 1;
    }
    qsort(a + lo, hi - lo, sizeof *a, cand_cmp);
    for (size_t i = lo; i < hi; i++) {
        need -= weight_of(a[i].logit, max);
        if (need <= 0.0) return i + 1;
    }
    return hi;
}

/* Keeps the smallest best-first prefix whose probability (softmax at temperature 1)
 * reaches top_p. Real distributions put the nucleus in the first few dozen tokens, so it
 * sorts in doubling chunks up to TOP_P_SORT_MAX, then finishes a flat tail with a
 * mass-quickselect (the kept tail is then unsorted). Returns the new n. */
#define TOP_P_SORT_MAX 128
static int32_t apply_top_p(struct sampler *s, int32_t n, float top_p)
{
    float max = s->cand[cand_best(s, n)].logit;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += weight_of(s->cand[i].logit, max);
    double target = (double)top_p * sum, cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        if (i == s->n_sorted) {
            if (s->n_sorted >= TOP_P_SORT_MAX)
                return (int32_t)cand_select_mass(s->cand, (size_t)i, (size_t)n, target - cum, max);
            int32_t grow = s->n_sorted < 64 ? 64 : s->n_sorted;
            cand_sort_prefix(s, n, s->n_sorted + (grow < n - s->n_sorted ? grow : n - s->n_sorted));
        }
        cum += weight_of(s->cand[i].logit, max);
        if (cum >= target) return i + 1;
    }
    return n;
}

/* Keeps candidates with logit >= max + log(min_p) (p >= min_p * p_max), at least one,
 * preserving order (so a sorted prefix stays sorted). Returns the new n. */
static int32_t apply_min_p(struct sampler *s, int32_t n, float min_p)
{
    int32_t best = cand_best(s, n);
    float thr = s->cand[best].logit + logf(min_p);
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
        if (s->cand[i].logit >= thr) s->cand[m++] = s->cand[i];
    if (m == 0) { /* min_p > 1 or an infinite max: keep the best one */
        s->cand[0] = s->cand[best];
        m = 1;
    }
    if (s->n_sorted > m) s->n_sorted = m;
    return m;
}

/* The logit the chain starts from: NaN counts as -inf, penalties applied. */
static float logit_at(const struct sampler *s, const float *logits, int32_t i)
{
    float l = logits[i];
    if (isnan(l)) return -INFINITY;
    if (s->has_penalties && s->counts[i] > 0) l = penalize(&s->p, l, s->counts[i]);
    return l;
}

/* Binary heap with the worst kept candidate at the root. */
static void heap_sift_up(struct sampler_cand *h, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_better(h[parent], h[i])) return;
        cand_swap(h, parent, i);
        i = parent;
    }
}

static void heap_sift_down(struct sampler_cand *h, size_t n, size_t i)
{
    for (;;) {
        size_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && cand_better(h[worst], h[l])) worst = l;
        if (r < n && cand_better(h[worst], h[r])) worst = r;
        if (worst == i) return;
        cand_swap(h, i, worst);
        i = worst;
    }
}

/* Top-k for k much smaller than the vocabulary: one pass over the logits keeping the k
 * best in a heap (most tokens cost one compare with the root; no copy of the whole
 * vocabulary), then a sort of the k. Leaves cand[0..k) sorted. */
static void top_k_heap(struct sampler *s, const float *logits, int32_t k)
{
    struct sampler_cand *h = s->cand;
    for (int32_t i = 0; i < k; i++) {
        h[i].logit = logit_at(s, logits, i);
        h[i].id = i;
        heap_sift_up(h, (size_t)i);
    }
    for (int32_t i = k; i < s->n_vocab; i++) {
        float l = logit_at(s, logits, i);
        if (!(l > h[0].logit)) continue; /* an equal logit with a higher id is worse */
        h[0].logit = l;
        h[0].id = i;
        heap_sift_down(h, (size_t)k, 0);
    }
    qsort(h, (size_t)k, sizeof *h, cand_cmp);
    s->n_sorted = k;
}

/* Greedy: argmax of the penalised logits, lowest id on ties, in one pass without
 * copying the candidates. */
static int32_t sample_greedy(const struct sampler *s, const float *logits)
{
    int32_t best = 0;
    float best_l = -INFINITY;
    for (int32_t i = 0; i < s->n_vocab; i++) {
        float l = logit_at(s, logits, i);
        if (l > best_l) {
            best_l = l;
            best = i;
        }
    }
    return best;
}

int32_t sampler_sample(struct sampler *s, const float *logits)
{
    if (!s || !logits) return -1;
    const struct sampler_params *p = &s->p;
    int32_t n = s->n_vocab;
    if (p->temp <= 0.0f) return sample_greedy(s, logits);
    s->n_sorted = 0;
    if (p->top_k > 0 && p->top_k <= n / 8) {
        top_k_heap(s, logits, p->top_k);
        n = p->top_k;
    } else {
        for (int32_t i = 0; i < n; i++) {
            s->cand[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
            s->cand[i].id = i;
        }
        if (s->has_penalties) apply_penalties(s);
        if (p->top_k > 0 && p->top_k < n) {
            cand_sort_prefix(s, n, p->top_k);
            n = p->top_k;
        }
    }
    if (p->top_p < 1.0f) n = apply_top_p(s, n, p->top_p);
    if (p->min_p > 0.0f) n = apply_min_p(s, n, p->min_p);

    /* Temperature, softmax (unnormalised weights, normalised by the draw), draw. */
    for (int32_t i = 0; i < n; i++) s->cand[i].logit /= p->temp;
    float max = s->cand[cand_best(s, n)].logit;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        s->w[i] = weight_of(s->cand[i].logit, max);
        sum += s->w[i];
    }
    double u = rng_uniform(&s->rng) * sum, acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc += s->w[i];
        if (u < acc) return s->cand[i].id;
    }
    /* Rounding left u at the very top: the last candidate with weight. */
    for (int32_t i = n - 1; i > 0; i--)
        if (s->w[i] > 0.0f) return s->cand[i].id;
    return s->cand[0].id;
}

/* log(sum_i exp(l_i - max)) and max over the raw logits, NaN counted as -inf. */
static float log_sum_exp(const struct sampler *s, const float *logits, float *max_out)
{
    float max = -INFINITY;
    for (int32_t i = 0; i < s->n_vocab; i++)
        if (logits[i] > max) max = logits[i]; /* NaN never compares greater */
    double sum = 0.0;
    for (int32_t i = 0; i < s->n_vocab; i++) {
        float l = isnan(logits[i]) ? -INFINITY : logits[i];
        sum += weight_of(l, max);
    }
    *max_out = max;
    return (float)log(sum);
}

float sampler_logprob(const struct sampler *s, const float *logits, int32_t id)
{
    if (!s || !logits || id < 0 || id >= s->n_vocab) return -INFINITY;
    float max;
    float log_sum = log_sum_exp(s, logits, &max);
    float l = isnan(logits[id]) ? -INFINITY : logits[id];
    /* the same expression as sampler_top_logprobs, so a token gets one value everywhere */
    return l == max ? -log_sum : (l - max) - log_sum;
}

int sampler_top_logprobs(const struct sampler *s, const float *logits, int n, int32_t *ids,
                         float *logprobs)
{
    if (!s || !logits || n < 0 || (n > 0 && (!ids || !logprobs))) return MESH_EINVAL;
    if (n > s->n_vocab) n = s->n_vocab;
    float max;
    float log_sum = log_sum_exp(s, logits, &max);

    /* Keep the n best raw logits, best first, by insertion (n is small). */
    int m = 0;
    for (int32_t i = 0; i < s->n_vocab && n > 0; i++) {
        float l = isnan(logits[i]) ? -INFINITY : logits[i];
        if (m == n && !(l > logprobs[m - 1])) continue;
        int j = m < n ? m++ : n - 1;
        while (j > 0 && l > logprobs[j - 1]) {
            logprobs[j] = logprobs[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        logprobs[j] = l;
        ids[j] = i;
    }
    for (int j = 0; j < m; j++)
        logprobs[j] = logprobs[j] == max ? -log_sum : (logprobs[j] - max) - log_sum;
    return m;
}
