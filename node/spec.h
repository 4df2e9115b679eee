/* spec.h - speculative decoding's drafters and the rejection rule, for the scheduler.
 *
 * A drafter proposes up to k tokens that continue a slot's history; the scheduler
 * (node/sched.c) feeds the slot's next token plus the proposal as one multi-token batch
 * with logits at every position (locally or through a pipeline's stages), runs the shared
 * per-token step row by row, keeps the proposal while the step picks the same tokens, and
 * rolls the KV cache back past the first mismatch. Two drafters:
 *  - n-gram prompt lookup (no model): the longest recent suffix of the history that also
 *    occurred earlier, and the tokens that followed it (the idea of llama.cpp's lookup /
 *    prompt-lookup decoding; our own code);
 *  - a draft model (same vocabulary as the target, checked): run greedily for k steps in
 *    its own context, one KV sequence per scheduler slot.
 * Both propose point masses (q = 1 on the proposed token), so the standard rejection rule
 * (accept x with probability min(1, p(x)/q(x)), else draw from norm(max(0, p - q))) reduces
 * to "draw from p with the sampler; accept when the draw is x": same outcome distribution,
 * and with a fixed seed the very same tokens as plain decoding. spec_verify_dist is the
 * general rule for a drafter with a real distribution q (unit-tested; no drafter uses it yet).
 * Thread rule: a spec_draft is used by one thread at a time (the scheduler's worker).
 */
#ifndef MESH_NODE_SPEC_H
#define MESH_NODE_SPEC_H

#include "engine/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum spec_mode { SPEC_OFF = 0, SPEC_NGRAM = 1, SPEC_DRAFT = 2 };

#define SPEC_DRAFT_MAX_DEFAULT 8 /* tokens proposed per step (llama.cpp's --draft-max) */
#define SPEC_DRAFT_MAX_CAP 64
#define SPEC_NGRAM_MIN 2         /* shortest suffix n-gram looked up */
#define SPEC_NGRAM_MAX 4         /* longest (tried first) */

/* "off", "ngram", "draft" -> *out. 0 or MESH_EINVAL. */
int spec_mode_parse(const char *text, enum spec_mode *out);
const char *spec_mode_name(enum spec_mode m);

/* N-gram prompt lookup (pure): for n = SPEC_NGRAM_MAX down to SPEC_NGRAM_MIN, finds the most
 * recent earlier occurrence of the last n tokens of hist[n_hist] and writes the tokens that
 * followed it (at most n_max) to out. Returns how many were written (0: no match). */
int spec_ngram_draft(const int32_t *hist, int n_hist, int n_max, int32_t *out);

struct model;
struct spec_draft;
/* Loads the draft model at path and a context of n_seq sequences of n_ctx positions over
 * it. Refuses (MESH_EBADMODEL, with a message naming both files' vocabularies) a draft
 * whose vocabulary differs from target's in size, in any token's text or in BOS/EOS.
 * 0, MESH_EBADMODEL, an error of model_load / model_ctx_new, MESH_ENOMEM. */
int spec_draft_new(const struct model *target, const char *path, int n_seq, int n_ctx,
                   int n_threads, enum model_kv_type k_type, enum model_kv_type v_type,
                   struct spec_draft **out, char *err, size_t err_cap);
void spec_draft_free(struct spec_draft *d);
/* Proposes up to n_max tokens continuing hist[n_hist] (n_hist >= 1) in sequence seq: the
 * draft context keeps what it computed for seq and recomputes only past the common prefix
 * with hist, then takes n_max greedy steps (fewer at the end of its context). Returns the
 * number written to out, or a negative error of model_decode. */
int spec_draft_propose(struct spec_draft *d, int seq, const int32_t *hist, int n_hist,
                       int n_max, int32_t *out);

/* The general speculative sampling rule for one position: p and q are the target's and
 * the drafter's probabilities [n] (each summing to 1), x was drawn from q; u_accept and
 * u_resample are uniform in [0, 1). Accepts x when u_accept < p[x] / q[x] (*accepted
 * true, returns x); otherwise returns the draw u_resample from max(0, p - q) normalised
 * (from p if that is all zero through rounding). */
int32_t spec_verify_dist(const float *p, const float *q, int32_t n, int32_t x, double u_accept,
                         double u_resample, bool *accepted);

#endif
