/* spec.c - speculative decoding's drafters (n-gram lookup, draft model) and the general
 * rejection rule (see spec.h).
 *
 * The n-gram lookup scans the history backwards for the last n tokens (n from
 * SPEC_NGRAM_MAX down to SPEC_NGRAM_MIN), O(n_hist * n) per call and no state. The draft
 * model keeps, per sequence, the tokens whose K/V its context holds, so a step recomputes
 * only what changed since the previous one (the tokens the target accepted or corrected).
 * Rejection rule: Leviathan et al. 2023 ("Fast Inference from Transformers via Speculative
 * Decoding", algorithm 1) and Chen et al. 2023. Not here: a sampled (non-greedy) draft,
 * trees of drafts, batching the draft model's steps across slots.
 */
#include "node/spec.h"

#include "core/err.h"
#include "core/log.h"
#include "engine/model.h"
#include "engine/tok.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int spec_mode_parse(const char *text, enum spec_mode *out)
{
    if (!text) return MESH_EINVAL;
    if (!strcmp(text, "off") || !strcmp(text, "none")) *out = SPEC_OFF;
    else if (!strcmp(text, "ngram") || !strcmp(text, "lookup")) *out = SPEC_NGRAM;
    else if (!strcmp(text, "draft")) *out = SPEC_DRAFT;
    else return MESH_EINVAL;
    return 0;
}

const char *spec_mode_name(enum spec_mode m)
{
    return m == SPEC_NGRAM ? "ngram" : m == SPEC_DRAFT ? "draft" : "off";
}

/* ---- n-gram prompt lookup ------------------------------------------------------------------ */

int spec_ngram_draft(const int32_t *hist, int n_hist, int n_max, int32_t *out)
{
    if (!hist || n_hist < 2 || n_max <= 0) return 0;
    int top = SPEC_NGRAM_MAX < n_hist - 1 ? SPEC_NGRAM_MAX : n_hist - 1;
    for (int n = top; n >= SPEC_NGRAM_MIN; n--) {
        const int32_t *suffix = hist + n_hist - n;
        /* an earlier occurrence hist[e - n, e) with at least one token after it, e < n_hist;
         * the most recent one first (recent text predicts best) */
        for (int e = n_hist - 1; e >= n; e--) {
            if (hist[e - 1] != suffix[n - 1] ||
                memcmp(hist + e - n, suffix, (size_t)n * sizeof *hist) != 0)
                continue;
            int k = n_hist - e < n_max ? n_hist - e : n_max;
            memcpy(out, hist + e, (size_t)k * sizeof *out);
            return k;
        }
    }
    return 0;
}

/* ---- draft model --------------------------------------------------------------------------- */

struct spec_draft {
    struct model *m;
    struct model_ctx *ctx;
    int n_seq, n_ctx, n_batch, n_vocab;
    int32_t *toks;   /* [n_seq][n_ctx] tokens whose K/V ctx holds, per sequence */
    int *n_toks;     /* [n_seq] */
    int32_t *pos;    /* [n_batch] */
    int32_t *seq;    /* [n_batch] */
    float *logits;   /* [n_vocab] */
};

/* Same vocabulary: size, BOS/EOS and every token's text. */
static int vocab_check(const struct tok *a, const struct tok *b, char *err, size_t err_cap)
{
    int32_t n = tok_n_vocab(a);
    if (tok_n_vocab(b) != n)
        return err_set(err, err_cap, MESH_EBADMODEL,
                       "the draft model's vocabulary has %d tokens, the model's %d: a draft "
                       "model must share the model's tokenizer",
                       (int)tok_n_vocab(b), (int)n);
    if (tok_bos(a) != tok_bos(b) || tok_eos(a) != tok_eos(b))
        return err_set(err, err_cap, MESH_EBADMODEL,
                       "the draft model's BOS/EOS tokens (%d/%d) differ from the model's (%d/%d)",
                       (int)tok_bos(b), (int)tok_eos(b), (int)tok_bos(a), (int)tok_eos(a));
    int32_t id;
    int rc = tok_vocab_compare(a, b, &id);
    if (rc == MESH_EBADMODEL)
        return err_set(err, err_cap, MESH_EBADMODEL,
                       "the draft model's token %d differs from the model's: a draft model "
                       "must share the model's tokenizer", (int)id);
    return rc;
}

int spec_draft_new(const struct model *target, const char *path, int n_seq, int n_ctx,
                   int n_threads, enum model_kv_type k_type, enum model_kv_type v_type,
                   struct spec_draft **out, char *err, size_t err_cap)
{
    *out = NULL;
    if (!target || !path || n_seq <= 0 || n_ctx <= 0)
        return err_set(err, err_cap, MESH_EINVAL, "draft model: bad parameters");
    struct spec_draft *d = calloc(1, sizeof *d);
    if (!d) return err_set(err, err_cap, MESH_ENOMEM, "draft model: out of memory");
    char why[256] = "";
    int rc = model_load(path, NULL, &d->m, why, sizeof why);
    if (rc) {
        err_set(err, err_cap, rc, "draft model %s: %s", path, why);
        goto fail;
    }
    rc = vocab_check(model_tok(target), model_tok(d->m), why, sizeof why);
    if (rc) {
        err_set(err, err_cap, rc, "draft model %s: %s", path, why);
        goto fail;
    }
    struct model_ctx_params cp;
    model_ctx_params_default(&cp);
    cp.n_ctx = n_ctx;
    cp.n_seq = n_seq;
    cp.n_threads = n_threads;
    cp.k_type = k_type;
    cp.v_type = v_type;
    rc = model_ctx_new(d->m, &cp, &d->ctx, why, sizeof why);
    if (rc == MESH_EUNSUPPORTED && (k_type != MODEL_KV_F16 || v_type != MODEL_KV_F16)) {
        /* a draft whose K/V rows are not whole 32-element blocks: keep its small cache f16 */
        log_warn("draft model %s: %s; its KV cache stays f16", path, why);
        cp.k_type = cp.v_type = MODEL_KV_F16;
        rc = model_ctx_new(d->m, &cp, &d->ctx, why, sizeof why);
    }
    if (rc) {
        err_set(err, err_cap, rc, "draft model %s: %s", path, why);
        goto fail;
    }
    d->n_seq = n_seq;
    d->n_ctx = model_ctx_n_ctx(d->ctx);
    d->n_batch = model_ctx_n_batch(d->ctx);
    d->n_vocab = model_hparams(d->m)->n_vocab;
    d->toks = malloc((size_t)n_seq * (size_t)d->n_ctx * sizeof *d->toks);
    d->n_toks = calloc((size_t)n_seq, sizeof *d->n_toks);
    d->pos = malloc((size_t)d->n_batch * sizeof *d->pos);
    d->seq = malloc((size_t)d->n_batch * sizeof *d->seq);
    d->logits = malloc((size_t)d->n_vocab * sizeof *d->logits);
    rc = MESH_ENOMEM;
    if (!d->toks || !d->n_toks || !d->pos || !d->seq || !d->logits) {
        err_set(err, err_cap, rc, "draft model: out of memory");
        goto fail;
    }
    *out = d;
    return 0;
fail:
    spec_draft_free(d);
    return rc;
}

void spec_draft_free(struct spec_draft *d)
{
    if (!d) return;
    model_ctx_free(d->ctx);
    model_free(d->m);
    free(d->toks);
    free(d->n_toks);
    free(d->pos);
    free(d->seq);
    free(d->logits);
    free(d);
}

/* Greedy: the highest logit, lowest id on ties, NaN never chosen. */
static int32_t argmax(const float *l, int n)
{
    int32_t best = 0;
    float best_l = -INFINITY;
    for (int i = 0; i < n; i++)
        if (l[i] > best_l) {
            best_l = l[i];
            best = i;
        }
    return best;
}

/* Decodes toks[from, to) of seq (positions from..to-1), logits of the last one. */
static int draft_feed(struct spec_draft *d, int seq, const int32_t *toks, int from, int to)
{
    for (int off = from; off < to; off += d->n_batch) {
        int k = to - off < d->n_batch ? to - off : d->n_batch;
        for (int i = 0; i < k; i++) {
            d->pos[i] = off + i;
            d->seq[i] = seq;
        }
        struct model_batch b = {.n = k, .tokens = toks + off, .pos = d->pos, .seq = d->seq};
        int rc = model_decode(d->ctx, &b, d->logits);
        if (rc) return rc;
    }
    return 0;
}

int spec_draft_propose(struct spec_draft *d, int seq, const int32_t *hist, int n_hist,
                       int n_max, int32_t *out)
{
    if (seq < 0 || seq >= d->n_seq || n_hist < 1 || n_max <= 0) return 0;
    if (n_hist >= d->n_ctx) return 0;
    int32_t *held = d->toks + (size_t)seq * (size_t)d->n_ctx;
    int keep = 0, lim = d->n_toks[seq] < n_hist ? d->n_toks[seq] : n_hist;
    while (keep < lim && held[keep] == hist[keep]) keep++;
    if (keep == n_hist) keep = n_hist - 1; /* recompute the last token for its logits */
    model_kv_seq_truncate(d->ctx, seq, keep);
    memcpy(held + keep, hist + keep, (size_t)(n_hist - keep) * sizeof *held);
    d->n_toks[seq] = keep;
    int rc = draft_feed(d, seq, held, keep, n_hist);
    if (rc) {
        model_kv_seq_truncate(d->ctx, seq, 0);
        d->n_toks[seq] = 0;
        return rc;
    }
    d->n_toks[seq] = n_hist;
    int n = 0;
    while (n < n_max) {
        out[n] = argmax(d->logits, d->n_vocab);
        n++;
        int at = d->n_toks[seq];
        if (n == n_max || at + 1 >= d->n_ctx) break;
        held[at] = out[n - 1];
        rc = draft_feed(d, seq, held, at, at + 1);
        if (rc) { /* what was proposed stands; the context forgets the failed step */
            model_kv_seq_truncate(d->ctx, seq, at);
            break;
        }
        d->n_toks[seq] = at + 1;
    }
    return n;
}

/* ---- the rejection rule -------------------------------------------------------------------- */

int32_t spec_verify_dist(const float *p, const float *q, int32_t n, int32_t x, double u_accept,
                         double u_resample, bool *accepted)
{
    *accepted = false;
    if (x >= 0 && x < n && q[x] > 0 && u_accept * (double)q[x] < (double)p[x]) {
        *accepted = true; /* u < p(x) / q(x), without dividing */
        return x;
    }
    /* rejected: a draw from the residual max(0, p - q), normalised */
    double sum = 0;
    for (int32_t i = 0; i < n; i++) sum += p[i] > q[i] ? (double)p[i] - q[i] : 0.0;
    bool from_p = !(sum > 0);
    if (from_p)
        for (int32_t i = 0; i < n; i++) sum += p[i];
    double target = u_resample * sum, acc = 0;
    int32_t last = 0;
    for (int32_t i = 0; i < n; i++) {
        double w = from_p ? p[i] : (p[i] > q[i] ? (double)p[i] - q[i] : 0.0);
        if (w <= 0) continue;
        last = i;
        acc += w;
        if (target < acc) return i;
    }
    return last;
}
