/* ppl.h - perplexity and KL divergence over a token stream, as llama-perplexity computes them.
 *
 * The method of llama.cpp's examples/perplexity (commit c392e50): the text is tokenized once
 * (BOS first when the model adds one) and cut into chunks of n_ctx tokens; each chunk is
 * evaluated from an empty cache with its first token replaced by BOS, and only the second
 * half is scored: the logits at positions n_ctx/2 .. n_ctx-2 predict the tokens after them
 * (n_ctx - 1 - n_ctx/2 tokens per chunk). PPL = exp(mean NLL); its error is
 * PPL * sqrt(var(NLL) / (count - 1)).
 *
 * KL divergence against a base model (its --kl-divergence): per scored token
 * KL(base || model) = sum_i p_base(i) * (log p_base(i) - log p(i)), top-1 agreement, and the
 * probability difference of the right token. Unlike llama.cpp, the base log-probabilities are
 * not stored as 16-bit values in a file: both models run on the same chunk here, so the base
 * figures are exact floats (llama.cpp's rounding moves each log-prob by up to ~1e-4).
 * The statistics are pure functions; ppl_chunk_logits drives a model context.
 */
#ifndef MESH_ENGINE_PPL_H
#define MESH_ENGINE_PPL_H

#include <stddef.h>
#include <stdint.h>

struct model_ctx;

/* Chunks a stream of n_tokens gives at n_ctx (n_tokens / n_ctx), capped at n_max when
 * n_max > 0. 0 when n_tokens < 2 * n_ctx (llama-perplexity refuses such a text). */
int ppl_n_chunks(int n_tokens, int n_ctx, int n_max);
/* Tokens scored per chunk: n_ctx - 1 - n_ctx / 2. */
int ppl_n_scored(int n_ctx);

/* Evaluates one chunk tokens[n_ctx] in sequence 0 of c from an empty cache (the sequence is
 * cleared first), with tokens[0] replaced by bos when bos >= 0, in batches of the context's
 * n_batch. Writes the logits of positions n_ctx/2 .. n_ctx-2 into
 * logits[ppl_n_scored(n_ctx)][n_vocab]. Returns 0, MESH_EINVAL (n_ctx < 4 or larger than the
 * context's) or the decoder's error. */
int ppl_chunk_logits(struct model_ctx *c, const int32_t *tokens, int n_ctx, int32_t bos,
                     float *logits);

/* Negative log-likelihood of token tok under logits[n_vocab]: max + log(sum exp(l - max)) - l[tok],
 * the sum in double as llama.cpp does. */
double ppl_token_nll(const float *logits, int n_vocab, int32_t tok);

/* Running perplexity. */
struct ppl_stats {
    double sum_nll, sum_nll2;
    long count;
};
void ppl_stats_add(struct ppl_stats *s, double nll);
/* exp(mean NLL) so far (1 when empty). */
double ppl_stats_ppl(const struct ppl_stats *s);
/* Final estimate and its error; MESH_ERANGE when the variance is not positive (fewer than two
 * tokens, or all equal): then *err_out = 0. */
int ppl_stats_final(const struct ppl_stats *s, double *ppl_out, double *err_out);

/* KL divergence accumulators, and every value kept for the percentiles. */
struct ppl_kld {
    double sum_nll, sum_nll2, sum_nll_base, sum_nll_base2, sum_nll_nll_base;
    double sum_kld, sum_kld2, sum_p_diff, sum_p_diff2, sum_p_diff4;
    float max_p_diff;
    size_t n_same_top, count;
    float *kld_values;     /* [cap] per token KL */
    float *p_diff_values;  /* [cap] per token p(right) - p_base(right) */
    size_t cap;
};
/* Room for cap tokens. MESH_ENOMEM. */
int ppl_kld_init(struct ppl_kld *k, size_t cap);
void ppl_kld_free(struct ppl_kld *k);
/* Adds one scored token: logits of the model and of the base at the same position.
 * MESH_EFULL past cap. */
int ppl_kld_add(struct ppl_kld *k, const float *logits, const float *base_logits, int n_vocab,
                int32_t tok);

/* A value with its uncertainty. */
struct ppl_val {
    double val, unc;
};
/* What llama-perplexity prints after --kl-divergence (same formulas). */
struct ppl_kld_summary {
    struct ppl_val ppl, ppl_base, ln_ratio, ratio, diff;
    double cor;                      /* correlation of ln PPL(Q) and ln PPL(base) */
    struct ppl_val kld;              /* mean KL */
    double kld_max, kld_p999, kld_p99, kld_median, kld_p10, kld_p5, kld_p1, kld_min;
    struct ppl_val p_diff;           /* mean p - p_base */
    double dp_max, dp_p999, dp_p99, dp_p95, dp_p90, dp_p75, dp_median, dp_p25, dp_p10, dp_p5,
        dp_p1, dp_p01, dp_min;
    struct ppl_val dp_rms;
    struct ppl_val same_top;         /* share of tokens whose top-1 agrees */
    size_t count;
};
/* Running values only (ppl, ln_ratio, kld, dp_rms, same_top): cheap, for a per-chunk line. */
void ppl_kld_running(const struct ppl_kld *k, struct ppl_kld_summary *s);
/* Everything, percentiles included (sorts the kept values in place). MESH_ERANGE if empty. */
int ppl_kld_summarize(struct ppl_kld *k, struct ppl_kld_summary *s);

#endif
