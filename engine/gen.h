/* gen.h - the generation loop shared by `run` and `chat`: feed a prompt into one
 * sequence of a context, then sample, decode and stream text until a stop condition.
 *
 * Prompt tokens are decoded in chunks of the context's n_batch (one pass over the
 * weights per chunk); generated tokens one at a time. Text is emitted through a
 * callback in complete UTF-8 characters, with stop strings held back and cut.
 * Thread rule: runs on the caller's thread; the context and sampler are not shared.
 */
#ifndef MESH_ENGINE_GEN_H
#define MESH_ENGINE_GEN_H

#include <stdbool.h>
#include <stdint.h>

struct model_ctx;
struct sampler;
struct tok;

/* Receives len bytes of generated text; return non-zero to stop generation. */
typedef int (*gen_emit_fn)(void *user, const char *text, int len);

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
