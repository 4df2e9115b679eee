/* sampler.h - token sampling: penalties, top-k, top-p, min-p, temperature, seeded RNG.
 *
 * Chain order as llama.cpp's default: repeat/presence/frequency penalties over the last
 * penalty_last_n tokens -> top-k -> top-p -> min-p -> temperature -> softmax -> draw.
 * temp <= 0 means greedy (argmax of the raw logits after penalties; ties -> lowest id).
 * The RNG is our own (xoshiro256** seeded with splitmix64), so a given seed reproduces
 * the same tokens on every machine. Scratch is sized at creation: no allocation per token.
 * Thread rule: one sampler per sequence; not shared between threads.
 */
#ifndef MESH_ENGINE_SAMPLER_H
#define MESH_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

struct sampler_params {
    float temp;             /* 0.8 default; <= 0 greedy */
    int top_k;              /* 40; <= 0 disables */
    float top_p;            /* 0.95; >= 1 disables */
    float min_p;            /* 0.05; <= 0 disables */
    float repeat_penalty;   /* 1.0 disables (llama.cpp default 1.0) */
    float presence_penalty; /* 0 */
    float frequency_penalty;/* 0 */
    int penalty_last_n;     /* 64; 0 disables penalties, -1 = whole context */
    uint64_t seed;          /* SAMPLER_SEED_RANDOM picks one from the OS */
};
#define SAMPLER_SEED_RANDOM UINT64_MAX

/* Fills p with llama.cpp's defaults. */
void sampler_params_default(struct sampler_params *p);

struct sampler;
/* Creates a sampler for a vocabulary of n_vocab tokens; all scratch is allocated here.
 * Returns 0, MESH_EINVAL (n_vocab <= 0, NaN parameters, repeat_penalty <= 0,
 * penalty_last_n < -1 or > SAMPLER_MAX_LAST_N) or MESH_ENOMEM. */
#define SAMPLER_MAX_LAST_N (1 << 24)
int sampler_new(const struct sampler_params *p, int32_t n_vocab, struct sampler **out);
void sampler_free(struct sampler *s);
/* Picks the next token from logits[n_vocab] (not modified; NaN counts as -inf).
 * Returns the id, or -1 if s or logits is NULL. Does not record the token: call
 * sampler_accept with the token actually used. */
int32_t sampler_sample(struct sampler *s, const float *logits);
/* Records a token of the sequence (prompt tokens too) for the penalties. Ids outside
 * [0, n_vocab) are ignored. */
void sampler_accept(struct sampler *s, int32_t id);
/* Forgets accepted tokens and reseeds with the original seed. */
void sampler_reset(struct sampler *s);
/* The seed in use (the one drawn from the OS for SAMPLER_SEED_RANDOM), for logs and replay. */
uint64_t sampler_seed(const struct sampler *s);
/* The penalty stage alone: out[n_vocab] = logits with the repeat/presence/frequency
 * penalties of the current window applied (for tests and diagnostics; sampler_sample
 * does the same internally). out may equal logits. */
void sampler_apply_penalties(const struct sampler *s, const float *logits, float *out);
/* Log-softmax of the raw logits[n_vocab] (no penalties, no temperature), for the API's
 * logprobs: writes the n most likely (id, logprob) pairs, best first (ties: lower id), to
 * ids[n] and logprobs[n]. Allocates nothing. Returns the count written (min(n, n_vocab)),
 * or MESH_EINVAL on NULL pointers or n < 0. */
int sampler_top_logprobs(const struct sampler *s, const float *logits, int n, int32_t *ids,
                         float *logprobs);
/* The same log-softmax for one token id (the chosen one, which may not be among the top n).
 * Returns -INFINITY for a NaN logit, an id outside the vocabulary or NULL pointers. */
float sampler_logprob(const struct sampler *s, const float *logits, int32_t id);

#endif
