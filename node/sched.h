/* sched.h - the request scheduler of one loaded model: continuous batching over KV slots.
 *
 * A worker thread owns one model_ctx with n_slots sequences. Requests wait in a bounded FIFO
 * (sched_submit_* returns MESH_EFULL when it is full: the API answers 429). Each step decodes,
 * in ONE model_decode call, the next token of every generating slot plus prompt chunks of
 * newly admitted requests (up to n_batch tokens), so concurrent requests share each pass over
 * the weights. A slot keeps the tokens whose K/V it holds; a new request is placed in the free
 * slot sharing the longest prompt prefix and only the rest is computed (KV prefix reuse).
 * A request whose client went away (sched_req_release before the end) is cancelled at the
 * next step and its slot freed. Stop strings are matched on the decoded text; text that may
 * be the start of a stop string is held back until it is known not to be.
 * Not here: routing to peers, priorities, swapping KV to memory.
 *
 * Thread rule: sched_submit_*, sched_req_* and sched_stats may be called from any thread;
 * the notify callback runs on the worker thread without scheduler locks held.
 */
#ifndef MESH_NODE_SCHED_H
#define MESH_NODE_SCHED_H

#include "engine/sampler.h"
#include "node/spec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct model;

#define SCHED_MAX_STOP 8
#define SCHED_MAX_TOP_LOGPROBS 20
/* A generating request whose client holds this many generated tokens untaken (a stream to a
 * client that does not read) pauses until they are taken: 256 tokens of text and logprobs
 * are at most ~150 KB, while a reader that keeps up never has more than a few waiting. */
#define SCHED_PAUSE_TOKENS 256
#define SCHED_PAUSE_POLL_MS 20 /* how soon a paused request is looked at again */
/* Prompt tokens a step takes while other sequences decode or wait to prefill: prompts are
 * fed in chunks of this many beside the decode tokens, oldest request first, so a new
 * request does not stall the streams running and the first of several new ones gets its
 * first token after its own prompt, not after everyone's. A prompt alone in the scheduler
 * takes the whole batch. */
#ifndef SCHED_PREFILL_CHUNK /* a build may set it (bench: -DSCHED_PREFILL_CHUNK=100000 = off) */
#define SCHED_PREFILL_CHUNK 128
#endif

/* A split model's forward pass (node/pipeline.h): the worker calls decode instead of
 * model_decode, on its context (which runs only the context's own layer range, maybe
 * none). seq_valid(seq) is how many cached positions of seq the rest of the pipeline still
 * holds (a new route holds none): a slot reuses no more of its cache than that. describe
 * writes where the pass runs (X-Meshllm-Ran-On). All called on the worker thread except
 * describe (any thread). The struct and arg outlive the scheduler. */
struct model_ctx;
struct model_batch;
struct sched_forward {
    int (*decode)(void *arg, struct model_ctx *c, const struct model_batch *b, float *logits);
    int (*seq_valid)(void *arg, int seq);
    void (*describe)(void *arg, char *buf, size_t cap);
    void *arg;
};

struct sched_params {
    int n_slots;   /* concurrent sequences (KV slots); default 8 */
    int n_ctx;     /* positions per slot; 0 = model_ctx default */
    int n_batch;   /* tokens per decode step; default 512 */
    int n_threads; /* 0 = all cores */
    int queue_cap; /* requests waiting beyond the free slots before MESH_EFULL; default 64 */
    /* The context's layers, [layer_begin, layer_end); 0/0 = all. Anything else needs fwd. */
    int layer_begin, layer_end;
    const struct sched_forward *fwd; /* NULL: model_decode */
    /* Speculative decoding (node/spec.h): each step, a generating slot's next token goes
     * with up to n_draft_max proposed tokens in one batch (logits at every position); the
     * per-token step keeps them while it picks the same tokens, and the cache is rolled
     * back past the first that differs (through fwd too: a stage rewinds its session when
     * the next pass arrives at an earlier position). Output is exactly plain decoding's
     * (greedy, and sampling with the same seed). A proposal shorter than n_draft_min is
     * not tried. SPEC_DRAFT loads draft_path (copied by nobody: used in sched_new only),
     * which must share the model's vocabulary. */
    enum spec_mode spec;
    const char *draft_path;
    int n_draft_max;               /* default SPEC_DRAFT_MAX_DEFAULT, at most SPEC_DRAFT_MAX_CAP */
    int n_draft_min;               /* default 1 */
    /* KV cache elements (engine/model.h; llama.cpp's -ctk / -ctv): default f16. The draft
     * model's cache takes the same types, or f16 when its rows cannot be quantized. */
    enum model_kv_type k_type, v_type;
};
void sched_params_default(struct sched_params *p);

struct sched;
/* The context's KV cache memory line (model_ctx_kv_describe) into buf[cap]. */
int sched_kv_describe(const struct sched *s, char *buf, size_t cap);
/* Creates the context and starts the worker. m must outlive the scheduler. */
int sched_new(const struct model *m, const struct sched_params *p, struct sched **out,
              char *err, size_t err_cap);
/* Stops the worker; every unfinished request ends with finish reason "cancelled" and its
 * notify callback runs. Requests not yet released by their clients stay valid until then. */
void sched_free(struct sched *s);
int sched_n_ctx(const struct sched *s);
/* Where this scheduler's passes run: "local", or its forward's description. */
void sched_describe(const struct sched *s, char *buf, size_t cap);

/* Called (on the worker thread) whenever a request has new output or has finished. */
typedef void (*sched_notify_fn)(void *arg);

struct sched_gen_params {
    struct sampler_params sp;
    int max_tokens;                   /* <= 0: until end of generation or of the context */
    const char *stop[SCHED_MAX_STOP]; /* copied at submit */
    int n_stop;
    int n_logprobs;                   /* -1: none; 0: chosen token only; 1..20 alternatives */
    bool strip_leading_space;         /* SPM: drop the first piece's leading space */
    const char *grammar;              /* GBNF constraining the output (copied at submit), or NULL */
    /* Continuation: the last n_cont prompt tokens were already generated (and shown) by an
     * earlier run. They are replayed through the detokenizer, stop matcher and penalty
     * history without emitting text, count in n_gen and max_tokens, and generation goes
     * on from there. 0 <= n_cont < n_prompt. */
    int n_cont;
    /* Optional: asked (on the worker thread, with the notify arg, never after the request
     * is released) right before a queued request takes a slot; false means the client is
     * gone, and the request ends "cancelled" without running. The API peeks the socket.
     * Only asked when the request has a notify fn (whose protocol keeps arg valid). */
    bool (*still_wanted)(void *arg);
};
void sched_gen_params_default(struct sched_gen_params *p);

struct sched_req;

/* Queues a generation of prompt[n_prompt] (copied). *out is the client's reference: release
 * it with sched_req_release exactly once. Returns 0, MESH_EFULL (queue full), MESH_ERANGE
 * (prompt does not fit the context), MESH_ECLOSED (shutting down), MESH_EINVAL, MESH_ENOMEM. */
int sched_submit_gen(struct sched *s, const int32_t *prompt, int n_prompt,
                     const struct sched_gen_params *gp, sched_notify_fn fn, void *arg,
                     struct sched_req **out);
/* Queues an embedding: mean of the last layer's hidden states over the tokens, L2-normalised. */
int sched_submit_embed(struct sched *s, const int32_t *tokens, int n_tokens, sched_notify_fn fn,
                       void *arg, struct sched_req **out);

struct sched_lp {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_id[SCHED_MAX_TOP_LOGPROBS];
    float top_lp[SCHED_MAX_TOP_LOGPROBS];
};

/* Output taken from a request since the previous take. Owned by the caller. */
struct sched_chunk {
    char *text;               /* new text (NUL-terminated, len bytes), may be NULL if none */
    size_t len;
    size_t *cuts;             /* text is n_cuts pieces (one per token that released text); */
    int n_cuts;               /* piece i ends at offset cuts[i] */
    struct sched_lp *lps;     /* logprobs of new tokens [n_lps] */
    int n_lps;
    int32_t *ids;             /* ids of the tokens generated since the last take [n_ids] */
    int n_ids;
    float *embd;              /* embedding [n_embd] once done (embedding requests) */
    int n_embd;
    bool done;
    const char *finish_reason;/* when done: "stop", "length", "cancelled" or "error" */
    int n_prompt, n_gen;      /* tokens so far (n_gen counts continuation tokens too) */
    int n_cached;             /* prompt tokens reused from the slot's cache */
};
/* Moves pending output into *out (zeroed first). Returns 0 or MESH_ENOMEM. */
int sched_req_take(struct sched_req *r, struct sched_chunk *out);
void sched_chunk_free(struct sched_chunk *c);
/* Asks for r to end early (its client is gone but the caller still holds r): it ends with
 * finish reason "cancelled" at the next step, or when it leaves the queue. Any thread. */
void sched_req_cancel(struct sched_req *r);
/* The client is done with r: cancels it if it is still running, and no notify runs after
 * this returns (it may be called from inside r's own notify). r must not be used afterwards. */
void sched_req_release(struct sched_req *r);

struct sched_stats {
    int n_slots, n_active, n_queued, queue_cap, n_ctx;
    uint64_t n_requests;       /* admitted since start */
    uint64_t n_rejected;       /* refused because the queue was full */
    uint64_t n_cancelled;      /* ended because the client went away */
    uint64_t n_prompt_tokens;  /* computed (not reused) prompt tokens */
    uint64_t n_cached_tokens;  /* prompt tokens reused from slot caches */
    uint64_t n_gen_tokens;
    uint64_t n_paused_waits;   /* steps with only paused (slow reader) slots to run */
    uint64_t n_spec_drafted;   /* tokens proposed by the drafter and verified */
    uint64_t n_spec_accepted;  /* of those, kept (the acceptance rate is their ratio) */
    double busy_s;             /* worker time spent in decode steps */
    double gen_tps;            /* generated tokens per second over the last window */
};
void sched_stats(struct sched *s, struct sched_stats *out);

#endif
