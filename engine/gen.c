/* gen.c - the generation loop of `run` and `chat` (see gen.h).
 *
 * prompt -> chunks of n_batch through model_decode (logits of the last token only) ->
 * repeat { sample; stop on EOG; detokenize (whole UTF-8 characters); hold back possible
 * stop strings; emit; decode the token }. The logits buffer and position scratch are
 * allocated once per call, never per token.
 */
#include "engine/gen.h"

#include "core/err.h"
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

/* Passes text through the stop matcher to emit. Returns 1 to stop generating. */
static int pass_text(struct stop *st, const char *text, size_t len, gen_emit_fn emit,
                     void *user, struct gen_result *res)
{
    const char *out;
    size_t out_len;
    bool stopped = false;
    if (stop_push(st, text, len, &out, &out_len, &stopped) < 0) return -1;
    if (out_len > 0 && emit && emit(user, out, (int)out_len) != 0) {
        res->stop = GEN_STOP_CALLER;
        return 1;
    }
    if (stopped) {
        res->stop = GEN_STOP_STRING;
        return 1;
    }
    return 0;
}

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
    /* a piece plus up to 3 held-back bytes of an incomplete UTF-8 character */
    size_t piece_cap = (size_t)tok_max_piece_len(t) + 8;
    char *piece = malloc(piece_cap);
    struct stop *st = NULL;
    int rc = MESH_ENOMEM;
    if (!logits || !pos_buf || !piece) goto done;
    if ((rc = stop_new(o->stops, o->stops ? (size_t)o->n_stops : 0, &st)) < 0) goto done;

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

    struct tok_stream ts;
    tok_stream_init(&ts, t, o->strip_leading_space);
    res->stop = GEN_STOP_LENGTH;
    for (;;) {
        if (o->n_predict >= 0 && res->n_gen >= o->n_predict) break;
        int32_t id = sampler_sample(s, logits);
        if (id < 0) {
            rc = MESH_EINVAL;
            goto done;
        }
        sampler_accept(s, id);
        res->last_token = id;
        if (!o->ignore_eog && tok_is_eog(t, id)) {
            res->stop = GEN_STOP_EOG;
            break;
        }
        if (out_ids && res->n_gen < out_cap) out_ids[res->n_gen] = id;
        res->n_gen++;
        int n = tok_stream_push(&ts, id, piece, piece_cap);
        if (n < 0) {
            rc = n;
            goto done;
        }
        int r = pass_text(st, piece, (size_t)n, emit, user, res);
        if (r < 0) {
            rc = MESH_ENOMEM;
            goto done;
        }
        if (r > 0) break;
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
        int n = tok_stream_flush(&ts, piece, piece_cap);
        const char *out;
        size_t out_len;
        if (n > 0 && pass_text(st, piece, (size_t)n, emit, user, res) < 0) {
            rc = MESH_ENOMEM;
            goto done;
        }
        if (res->stop != GEN_STOP_STRING && res->stop != GEN_STOP_CALLER) {
            stop_flush(st, &out, &out_len);
            if (out_len > 0 && emit) emit(user, out, (int)out_len);
        }
    }
    res->gen_ms = now_ms() - t1;
    rc = 0;
done:
    stop_free(st);
    free(piece);
    free(pos_buf);
    free(logits);
    return rc;
}
