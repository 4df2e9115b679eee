/* gen.c - the per-token step and the generation loop of `run` and `chat` (see gen.h).
 *
 * gen_step: sample; record; stop on EOG; logprobs from the sampler's log-softmax;
 * detokenize (whole UTF-8 characters); hold back possible stop strings. gen_run: prompt ->
 * chunks of n_batch through model_decode (logits of the last token only) -> repeat
 * { gen_step; emit; decode the token }. Buffers are allocated at init, never per token.
 */
#include "engine/gen.h"

#include "core/err.h"
#include "engine/grammar.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/stop.h"
#include "engine/tok.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- the per-token step --------------------------------------------------------------- */

/* The grammar's parse, vocabulary and state; the masked-logits scratch. */
static int seq_grammar_init(struct gen_seq *g, const struct gen_seq_opts *o, char *err,
                            size_t err_cap)
{
    size_t len = o->grammar_len ? o->grammar_len : strlen(o->grammar);
    int rc = grammar_parse(o->grammar, len, &g->gram, err, err_cap);
    if (rc) return rc;
    const struct grammar_vocab *v = o->gvocab;
    if (!v) {
        if ((rc = grammar_vocab_new(g->tok, &g->own_gvocab))) return rc;
        v = g->own_gvocab;
    }
    if (grammar_vocab_n(v) != tok_n_vocab(g->tok)) return MESH_EINVAL;
    g->masked = malloc((size_t)tok_n_vocab(g->tok) * sizeof *g->masked);
    if (!g->masked) return MESH_ENOMEM;
    /* the grammar sees the text the client sees: without SPM's stripped leading space */
    rc = grammar_state_new(g->gram, v, g->ts.at_start, &g->gst);
    if (rc) err_set(err, err_cap, rc, "grammar: its start expands to too many stacks");
    return rc;
}

int gen_seq_init(struct gen_seq *g, const struct tok *t, struct sampler *s,
                 const struct gen_seq_opts *o)
{
    return gen_seq_init_err(g, t, s, o, NULL, 0);
}

int gen_seq_init_err(struct gen_seq *g, const struct tok *t, struct sampler *s,
                     const struct gen_seq_opts *o, char *err, size_t err_cap)
{
    memset(g, 0, sizeof *g);
    if (!t || !o || o->n_logprobs > GEN_MAX_TOP_LOGPROBS || o->n_stops < 0) return MESH_EINVAL;
    g->tok = t;
    g->smp = s;
    g->n_logprobs = o->n_logprobs;
    g->ignore_eog = o->ignore_eog;
    tok_stream_init(&g->ts, t, o->strip_leading_space);
    /* a piece plus up to 3 held-back bytes of an incomplete UTF-8 character; the longest
     * pieces (starcoder/mpt) have 256-512 bytes */
    g->piece_cap = tok_max_piece_len(t) + 8;
    g->piece = malloc(g->piece_cap);
    if (!g->piece) return MESH_ENOMEM;
    if (o->grammar) {
        int rc = seq_grammar_init(g, o, err, err_cap);
        if (rc) return rc;
    }
    return stop_new(o->stops, o->stops ? (size_t)o->n_stops : 0, &g->stp);
}

void gen_seq_free(struct gen_seq *g)
{
    if (!g) return;
    stop_free(g->stp);
    free(g->piece);
    grammar_state_free(g->gst);
    grammar_vocab_free(g->own_gvocab);
    grammar_free(g->gram);
    free(g->masked);
    memset(g, 0, sizeof *g);
}

int gen_seq_push(struct gen_seq *g, int32_t id, struct gen_tok *out)
{
    memset(out, 0, sizeof *out);
    out->id = id;
    sampler_accept(g->smp, id);
    if (!g->ignore_eog && tok_is_eog(g->tok, id)) {
        out->is_eog = true;
        return 0;
    }
    if (g->gst) {
        int rc = grammar_state_accept_token(g->gst, id);
        if (rc) return rc;
    }
    int n = tok_stream_push(&g->ts, id, g->piece, g->piece_cap);
    if (n < 0) return n;
    g->n_gen++;
    if (g->is_stopped || n == 0) {
        out->is_stopped = g->is_stopped;
        return 0;
    }
    bool stopped = false;
    int rc = stop_push(g->stp, g->piece, (size_t)n, &out->text, &out->len, &stopped);
    if (rc) return rc;
    g->is_stopped = stopped;
    out->is_stopped = stopped;
    return 0;
}

/* Sampling within the grammar: the draw from the raw logits stands if the grammar allows it;
 * otherwise the disallowed logits go to -inf and the sampler draws again. Both paths give the
 * masked distribution (P(x) = p(x) + (1 - A) p(x) / A = p(x) / A for an allowed x of total
 * allowed mass A), so when draws keep being refused (a model that does not "want" the
 * grammar) the step masks first for a while and skips the wasted draw and check. */
static int32_t sample_constrained(struct gen_seq *g, const float *logits)
{
    if (g->n_mask_first > 0) {
        g->n_mask_first--;
    } else {
        int32_t id = sampler_sample(g->smp, logits);
        if (id >= 0 && grammar_state_allows_token(g->gst, id)) {
            g->n_refused_run = 0;
            return id;
        }
        if (++g->n_refused_run >= 2) g->n_mask_first = 8; /* then try the cheap path again */
    }
    int32_t n_vocab = tok_n_vocab(g->tok);
    memcpy(g->masked, logits, (size_t)n_vocab * sizeof *g->masked);
    int32_t n_ok = grammar_state_apply(g->gst, g->masked);
    g->n_masked++;
    if (n_ok < 0) return n_ok;
    if (n_ok == 0) return MESH_EINVAL; /* the vocabulary cannot spell what the grammar needs */
    return sampler_sample(g->smp, g->masked);
}

int gen_step(struct gen_seq *g, const float *logits, struct gen_tok *out)
{
    if (g->gst && grammar_state_is_done(g->gst)) { /* nothing may follow: end here */
        memset(out, 0, sizeof *out);
        out->id = tok_eos(g->tok);
        out->is_eog = true;
        return 0;
    }
    int32_t id = g->gst ? sample_constrained(g, logits) : sampler_sample(g->smp, logits);
    if (id < 0) return id == -1 ? MESH_EINVAL : id;
    int rc = gen_seq_push(g, id, out);
    if (rc || out->is_eog || g->n_logprobs < 0) return rc;
    /* the sampler's raw-logit log-softmax: NaN logits count as -inf */
    out->has_lp = true;
    out->lp.id = id;
    out->lp.logprob = sampler_logprob(g->smp, logits, id);
    int n_top = sampler_top_logprobs(g->smp, logits, g->n_logprobs, out->lp.top_id,
                                     out->lp.top_lp);
    out->lp.n_top = n_top > 0 ? n_top : 0;
    return 0;
}

int gen_seq_replay(struct gen_seq *g, const int32_t *ids, int n, int *end_reason)
{
    *end_reason = 0;
    for (int i = 0; i < n; i++) {
        struct gen_tok t;
        int rc = gen_seq_push(g, ids[i], &t);
        if (rc) return rc;
        if (t.is_eog) {
            *end_reason = 1;
            return 0;
        }
        if (t.is_stopped) {
            *end_reason = 2;
            return 0;
        }
    }
    return 0;
}

int gen_seq_finish(struct gen_seq *g, gen_emit_fn emit, void *user)
{
    if (g->is_stopped) return 0;
    int n = tok_stream_flush(&g->ts, g->piece, g->piece_cap);
    if (n < 0) return n;
    const char *text = NULL;
    size_t len = 0;
    bool stopped = false;
    if (n > 0) {
        int rc = stop_push(g->stp, g->piece, (size_t)n, &text, &len, &stopped);
        if (rc) return rc;
        if (len && emit) emit(user, text, (int)len);
    }
    if (stopped) {
        g->is_stopped = true;
        return 1;
    }
    stop_flush(g->stp, &text, &len);
    if (len && emit) emit(user, text, (int)len);
    return 0;
}

/* ---- the loop of `run` and `chat` ------------------------------------------------------- */

int gen_run(struct model_ctx *c, struct sampler *s, const struct tok *t, const int32_t *prompt,
            int n_prompt, const struct gen_opts *o, gen_emit_fn emit, void *user,
            int32_t *out_ids, int out_cap, struct gen_result *res)
{
    memset(res, 0, sizeof *res);
    res->last_token = -1;
    const struct model_hparams *hp = model_hparams(model_ctx_model(c));
    int n_ctx = model_ctx_n_ctx(c), n_batch = model_ctx_n_batch(c);
    int pos = model_kv_seq_len(c, 0);
    if (n_prompt <= 0) return MESH_EINVAL;
    if (pos + n_prompt > n_ctx) return MESH_EFULL;

    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
    int32_t *pos_buf = malloc((size_t)n_batch * sizeof(int32_t));
    struct gen_seq g;
    struct gen_seq_opts so = {.stops = o->stops, .n_stops = o->stops ? o->n_stops : 0,
                              .strip_leading_space = o->strip_leading_space,
                              .ignore_eog = o->ignore_eog, .n_logprobs = -1,
                              .grammar = o->grammar};
    int rc = gen_seq_init(&g, t, s, &so);
    if (rc == 0 && (!logits || !pos_buf)) rc = MESH_ENOMEM;
    if (rc) goto done;

    /* prompt, in chunks of n_batch; logits of the last token only */
    double t0 = now_ms();
    for (int i = 0; i < n_prompt; i += n_batch) {
        int n = n_prompt - i < n_batch ? n_prompt - i : n_batch;
        for (int j = 0; j < n; j++) pos_buf[j] = pos + i + j;
        struct model_batch b = {.n = n, .tokens = prompt + i, .pos = pos_buf};
        if ((rc = model_decode(c, &b, logits)) < 0) goto done;
    }
    pos += n_prompt;
    res->n_prompt = n_prompt;
    double t1 = now_ms();
    res->prompt_ms = t1 - t0;

    res->stop = GEN_STOP_LENGTH;
    for (;;) {
        if (o->n_predict >= 0 && res->n_gen >= o->n_predict) break;
        struct gen_tok tk;
        if ((rc = gen_step(&g, logits, &tk)) < 0) goto done;
        int32_t id = tk.id;
        res->last_token = id;
        if (tk.is_eog) {
            res->stop = GEN_STOP_EOG;
            break;
        }
        if (out_ids && res->n_gen < out_cap) out_ids[res->n_gen] = id;
        res->n_gen++;
        if (tk.len > 0 && emit && emit(user, tk.text, (int)tk.len) != 0) {
            res->stop = GEN_STOP_CALLER;
            break;
        }
        if (tk.is_stopped) {
            res->stop = GEN_STOP_STRING;
            break;
        }
        if (o->n_predict >= 0 && res->n_gen >= o->n_predict) break;
        if (pos >= n_ctx) {
            res->stop = GEN_STOP_CTX;
            break;
        }
        struct model_batch b = {.n = 1, .tokens = &id, .pos = &pos};
        if ((rc = model_decode(c, &b, logits)) < 0) goto done;
        pos++;
    }
    if (res->stop != GEN_STOP_STRING && res->stop != GEN_STOP_CALLER) {
        int f = gen_seq_finish(&g, emit, user);
        if (f < 0) {
            rc = f;
            goto done;
        }
        if (f > 0) res->stop = GEN_STOP_STRING;
    }
    res->gen_ms = now_ms() - t1;
    rc = 0;
done:
    gen_seq_free(&g);
    free(pos_buf);
    free(logits);
    return rc;
}
