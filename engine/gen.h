/* gen.h - generation: the per-token step every caller shares, and the loop of `run`/`chat`.
 *
 * gen_step is THE per-token step: sample -> end-of-generation check -> logprobs (the
 * sampler's NaN-guarded log-softmax) -> streaming detokenizer (whole UTF-8 characters) ->
 * stop strings (possible prefixes held back, a match cut). Its state is one struct gen_seq per
 * sequence; gen_run (below) and the scheduler (node/sched.c) both drive it, so the text a
 * client sees does not depend on who generated it. gen_seq_replay feeds tokens already
 * generated elsewhere (a continuation) through the same state without showing their text.
 * With a grammar (gen_seq_opts.grammar, GBNF: engine/grammar.h) the step samples as usual,
 * checks the token against the grammar, and only when it is refused masks the logits of every
 * token the grammar does not allow and samples again (the same distribution as sampling from
 * the masked logits, at a fraction of the cost). EOG is allowed only where the grammar accepts,
 * and once nothing may follow, the step ends the generation as EOG.
 * Prompt tokens are decoded in chunks of the context's n_batch (one pass over the
 * weights per chunk); generated tokens one at a time.
 * Thread rule: runs on the caller's thread; a gen_seq, context and sampler are not shared.
 */
#ifndef MESH_ENGINE_GEN_H
#define MESH_ENGINE_GEN_H

#include "engine/tok.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct model_ctx;
struct sampler;
struct stop;
struct grammar;
struct grammar_vocab;
struct grammar_state;

/* Receives len bytes of generated text; return non-zero to stop generation. */
typedef int (*gen_emit_fn)(void *user, const char *text, int len);

/* ---- the per-token step --------------------------------------------------------------- */

#define GEN_MAX_TOP_LOGPROBS 20

struct gen_seq_opts {
    const char *const *stops;    /* stop strings (copied), may be NULL */
    int n_stops;
    bool strip_leading_space;    /* SPM: drop the space before the first word */
    bool ignore_eog;             /* an EOG token is text like any other */
    int n_logprobs;              /* -1: none; 0: chosen token only; 1..GEN_MAX_TOP_LOGPROBS */
    const char *grammar;         /* GBNF constraining the output (parsed at init), or NULL */
    size_t grammar_len;          /* 0: strlen(grammar) */
    const struct grammar_vocab *gvocab; /* the tokenizer's cached pieces (borrowed), or NULL:
                                           built at init for this sequence */
};

/* Log-probabilities of one generated token (raw logits: no penalties, no temperature). */
struct gen_lp {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_id[GEN_MAX_TOP_LOGPROBS];
    float top_lp[GEN_MAX_TOP_LOGPROBS];
};

/* One sequence's step state. The caller owns the struct and the sampler (borrowed). */
struct gen_seq {
    const struct tok *tok;
    struct sampler *smp;
    struct tok_stream ts;
    struct stop *stp;
    char *piece;                 /* one detokenized token + held UTF-8 bytes [piece_cap] */
    size_t piece_cap;
    int n_logprobs;
    bool ignore_eog;
    bool is_stopped;             /* a stop string matched: nothing more is shown */
    int n_gen;                   /* tokens pushed (generated or replayed), EOG excluded */
    struct grammar *gram;        /* owned; NULL without a grammar */
    struct grammar_vocab *own_gvocab;
    struct grammar_state *gst;
    float *masked;               /* [n_vocab] logits with the grammar's mask applied */
    int n_masked;                /* steps that needed the full mask (stats) */
    int n_refused_run;           /* consecutive steps whose first draw the grammar refused */
    int n_mask_first;            /* steps left that mask before drawing (see gen.c) */
};

/* What one step produced. text points into the gen_seq (valid until its next call). */
struct gen_tok {
    int32_t id;
    bool is_eog;                 /* id ends the generation: not counted, no text */
    bool is_stopped;             /* a stop string completed: text ends right before it */
    const char *text;            /* bytes safe to show now (len may be 0) */
    size_t len;
    bool has_lp;                 /* lp is filled (n_logprobs >= 0 and not EOG) */
    struct gen_lp lp;
};

/* Prepares g for a new generation with sampler s (borrowed; its penalty history is the
 * caller's: accept the prompt's tokens first). Allocates the stop matcher, the piece
 * buffer and the grammar's state here, never per token. 0, MESH_EINVAL (bad options, or a
 * grammar that does not parse: err says why when err_cap > 0) or MESH_ENOMEM; g is safe to
 * free either way. */
int gen_seq_init(struct gen_seq *g, const struct tok *t, struct sampler *s,
                 const struct gen_seq_opts *o);
int gen_seq_init_err(struct gen_seq *g, const struct tok *t, struct sampler *s,
                     const struct gen_seq_opts *o, char *err, size_t err_cap);
void gen_seq_free(struct gen_seq *g);
/* The step: samples the next token from logits[n_vocab] (within the grammar, if any),
 * records it in the sampler, and (unless EOG) its logprobs, its text through the
 * detokenizer and the stop matcher. 0, or MESH_EINVAL (the sampler gave no token, or the
 * grammar allows no token of this vocabulary) / MESH_EFULL (grammar stacks) / MESH_ENOMEM /
 * a detokenizer error. */
int gen_step(struct gen_seq *g, const float *logits, struct gen_tok *out);
/* The step after sampling, for a token chosen elsewhere: same as gen_step without the
 * sampler's draw and without logprobs (the sampler still records id). With a grammar, a
 * token it does not allow is MESH_EINVAL. */
int gen_seq_push(struct gen_seq *g, int32_t id, struct gen_tok *out);
/* Continuation: pushes ids[n] (generated and already shown elsewhere) without returning
 * their text; the matcher keeps what it held back, so later steps show exactly what the
 * uninterrupted generation would have. *end_reason: 0, or 1 if an id was EOG (the rest is
 * dropped), 2 if a stop string completed. 0 or an error of gen_seq_push. */
int gen_seq_replay(struct gen_seq *g, const int32_t *ids, int n, int *end_reason);
/* End of generation without a stop match: emits what the detokenizer and the matcher still
 * hold (at most two segments, each through emit when non-empty). Nothing once stopped.
 * Returns 1 if the flushed tail completed a stop string, else 0; < 0 on error. */
int gen_seq_finish(struct gen_seq *g, gen_emit_fn emit, void *user);

/* ---- the loop of `run` and `chat` ------------------------------------------------------- */

enum gen_stop {
    GEN_STOP_LENGTH = 0,   /* n_predict tokens generated */
    GEN_STOP_EOG = 1,      /* end-of-generation token */
    GEN_STOP_STRING = 2,   /* a stop string matched */
    GEN_STOP_CTX = 3,      /* the context is full */
    GEN_STOP_CALLER = 4,   /* emit returned non-zero */
};

struct gen_opts {
    int n_predict;               /* max new tokens; < 0 = until EOG or context full */
    const char *const *stops;    /* stop strings (not emitted), may be NULL */
    int n_stops;
    bool strip_leading_space;    /* SPM: drop the space before the first word */
    bool ignore_eog;
    const char *grammar;         /* GBNF, or NULL (see gen_seq_opts) */
};

struct gen_result {
    int n_prompt;                /* prompt tokens decoded in this call */
    int n_gen;                   /* tokens generated */
    enum gen_stop stop;
    double prompt_ms, gen_ms;
    int32_t last_token;          /* the last sampled token (-1 if none) */
};

/* Decodes prompt[n_prompt] into sequence 0 starting at its current cache length, then
 * generates. Generated tokens are appended to the cache too (except a final EOG token),
 * so a chat can continue the same sequence. If out_ids is not NULL, generated ids are
 * written there (up to out_cap). Returns 0 or a MESH_E* code (MESH_EFULL when the
 * prompt does not fit the context). */
int gen_run(struct model_ctx *c, struct sampler *s, const struct tok *t, const int32_t *prompt,
            int n_prompt, const struct gen_opts *o, gen_emit_fn emit, void *user,
            int32_t *out_ids, int out_cap, struct gen_result *res);

#endif
