/* req.h - one generation request as the node sees it, whoever serves it.
 *
 * The API layer (api/) fills a struct node_gen_req from HTTP/JSON and hands it to the router
 * (node/router.h); the answer comes back through one handle, struct node_req, whatever
 * serves it: the local scheduler (node/local.c) or a peer over /meshllm/infer/1
 * (node/infer.c). A handle is polled: the backend calls the client's notify whenever new
 * output is ready, the client calls node_req_take to move it out, node_req_release when done.
 * Text, token ids and logprobs (with their token texts) come out ready to print: api/ never
 * needs a tokenizer, and a node with no model can be a client of the mesh.
 *
 * Thread rule: node_req_* may be called from any thread; notify runs on a backend thread
 * (the scheduler's worker or the p2p loop) with no node lock held, and never after
 * node_req_release returns.
 */
#ifndef MESH_NODE_REQ_H
#define MESH_NODE_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NODE_MAX_STOP 8
#define NODE_MAX_TOP_LOGPROBS 20
#define NODE_PIECE_CAP 48     /* bytes of a token's text kept for logprobs */
#define NODE_RAN_ON_CAP 512   /* "local" or peer IDs, comma-separated */

enum node_kind { NODE_KIND_CHAT = 1, NODE_KIND_COMPLETION = 2, NODE_KIND_EMBEDDING = 3 };

/* Where a request may run (docs/PRIVACY.md). DEFAULT: the node's configured route. */
enum node_route {
    NODE_ROUTE_DEFAULT = 0,
    NODE_ROUTE_LOCAL = 1, /* this device only */
    NODE_ROUTE_OWN = 2,   /* this device or nodes holding the mesh owner's key */
    NODE_ROUTE_MESH = 3,  /* any admitted member of the mesh */
};
/* "local", "own", "mesh" -> enum; returns 0 or MESH_EINVAL. */
int node_route_parse(const char *s, enum node_route *out);
const char *node_route_name(enum node_route r);

struct node_msg {
    char *role;    /* "system", "user", "assistant", "tool" */
    char *content;
    char *tool_calls_json; /* assistant: its tool calls (OpenAI JSON array), or NULL */
    char *tool_call_id;    /* tool: the call it answers, or NULL */
    char *name;            /* tool: the function's name, or NULL */
};

/* A request. Strings and arrays are malloc'd and owned by the struct (node_gen_req_free). */
struct node_gen_req {
    enum node_kind kind;
    char *model;               /* API name */
    struct node_msg *msgs;     /* chat: [n_msgs] */
    int n_msgs;
    char *prompt;              /* completion prompt */
    char *system;              /* completion with a template: system prompt, or NULL */
    bool raw;                  /* completion: prompt used verbatim (no chat template) */
    bool json_mode;            /* best-effort JSON: a system message asks for it */
    char *tools_json;          /* chat: the tools for the template (OpenAI JSON array), or NULL */
    char **inputs;             /* embedding: [n_inputs] */
    int n_inputs;
    /* sampling (engine/sampler.h semantics) */
    float temperature, top_p, min_p, repeat_penalty, presence_penalty, frequency_penalty;
    int top_k;
    bool has_seed;
    uint64_t seed;
    int max_tokens;            /* <= 0: until the end of generation or of the context */
    bool max_tokens_must_fit;  /* refuse (413) when prompt + max_tokens exceed the context */
    char *stop[NODE_MAX_STOP];
    int n_stop;
    int n_logprobs;            /* -1: none; 0: chosen token only; 1..20 alternatives */
    bool strip_leading_space;  /* SPM: drop the reply's leading space (chat replies) */
    enum node_route route;
    /* Continuation (failover): tokens already generated and delivered to the client. The
     * server appends them to the rendered prompt, counts them as generated (max_tokens,
     * n_gen), replays them through the detokenizer and stop matcher without emitting
     * their text, then goes on: the stream continues with no token lost or repeated. */
    int32_t *cont_ids;
    int n_cont;
    /* Structured output: GBNF the reply must match (engine/grammar.h), or NULL. Made from
     * response_format / json_schema / format with the helpers below; travels to a peer. */
    char *grammar;
};
void node_gen_req_init(struct node_gen_req *r); /* zeroes, n_logprobs -1, temperature 1... */
void node_gen_req_free(struct node_gen_req *r);
/* Deep copy (src unchanged). 0 or MESH_ENOMEM. */
int node_gen_req_copy(struct node_gen_req *dst, const struct node_gen_req *src);

/* Structured output, for the API layer (which does not see the engine): the GBNF for a JSON
 * Schema (schema_json[len]), a check of GBNF text, and the any-JSON-object grammar. Each
 * returns 0 with *gbnf malloc'd (node_grammar_check: nothing allocated), MESH_EINVAL with err
 * naming the problem, or MESH_ENOMEM. */
int node_grammar_from_schema(const char *schema_json, size_t len, char **gbnf, char *err,
                             size_t err_cap);
int node_grammar_check(const char *gbnf, size_t len, char *err, size_t err_cap);
int node_grammar_json_object(char **gbnf);

/* Why a request could not start, as an HTTP API would say it. */
struct node_error {
    int status;          /* 400, 404, 413, 429, 500, 503 */
    const char *type;    /* "invalid_request_error", "server_error", "rate_limit_error" */
    const char *code;    /* "model_not_found", "model_loading", "context_length_exceeded",
                            "rate_limit_exceeded", "shutting_down", ... or NULL */
    const char *param;   /* "model", "messages", ... or NULL */
    char message[320];
    int retry_after_s;   /* 429: seconds to wait, 0 = not said */
};
/* Fills e and returns MESH_EINVAL (printf-style message). */
int node_error_set(struct node_error *e, int status, const char *type, const char *code,
                   const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

struct node_lp_entry {
    char text[NODE_PIECE_CAP]; /* the token's bytes (not NUL-terminated; len bytes) */
    int len;
    float logprob;
};
struct node_lp {
    int32_t id;
    struct node_lp_entry tok;
    int n_top;
    struct node_lp_entry top[NODE_MAX_TOP_LOGPROBS];
};

enum node_fail {
    NODE_FAIL_NONE = 0,
    NODE_FAIL_LOST = 1,    /* the serving peer vanished or broke the protocol: try another */
    NODE_FAIL_BUSY = 2,    /* refused before starting: full (429) or loading (503) */
    NODE_FAIL_REFUSED = 3, /* refused for the request itself (400, 404, 413): err says why */
    NODE_FAIL_ENGINE = 4,  /* the model failed while generating */
};

/* Output taken since the previous take. Owned by the caller (node_chunk_free). */
struct node_chunk {
    char *text;                /* new text (NUL-terminated, len bytes), NULL if none */
    size_t len;
    size_t *cuts;              /* text is n_cuts pieces; piece i ends at offset cuts[i] */
    int n_cuts;
    int32_t *ids;              /* every token generated since the last take, in order */
    int n_ids;
    struct node_lp *lps;       /* logprobs of new tokens [n_lps] */
    int n_lps;
    float *embd;               /* embedding: [n_vecs * n_embd] once done */
    int n_embd, n_vecs;
    bool done;
    const char *finish_reason; /* when done: "stop", "length", "cancelled" or "error" */
    /* finish "error": why, and whether another node may succeed (the router's failover) */
    enum node_fail fail;
    struct node_error err;
    int n_prompt, n_gen;       /* tokens so far (n_gen counts continuation tokens too) */
    int n_cached;              /* prompt tokens reused from a slot's cache */
};
void node_chunk_free(struct node_chunk *c);

/* What the client gives the backend: notify when output is ready; still_wanted (optional)
 * is asked right before a queued request starts (false: the client left, the request ends
 * "cancelled" without running). Both get arg, never after release. */
struct node_client {
    void (*notify)(void *arg);
    bool (*still_wanted)(void *arg);
    void *arg;
};

/* A request in flight: a small vtable so the router can hand out local and remote requests
 * (and switch a request from a dead peer to the next, node/router.c) behind one type. */
struct node_req;
struct node_req_ops {
    int (*take)(struct node_req *r, struct node_chunk *out);
    void (*cancel)(struct node_req *r);
    void (*release)(struct node_req *r);
    /* Who served r so far: "local" or peer IDs, comma-separated (NUL-terminated in buf). */
    void (*ran_on)(struct node_req *r, char *buf, size_t cap);
};
/* Backends embed this as their first member. */
struct node_req {
    const struct node_req_ops *ops;
};

/* Moves pending output into *out (zeroed first). 0 or MESH_ENOMEM. */
int node_req_take(struct node_req *r, struct node_chunk *out);
/* Asks r to end early ("cancelled"); any thread. */
void node_req_cancel(struct node_req *r);
/* The client is done with r (cancels it if running); no notify after this returns. */
void node_req_release(struct node_req *r);
/* Who served r so far: "local" or peer IDs, comma-separated, into buf (any thread). */
void node_req_ran_on(struct node_req *r, char *buf, size_t cap);

#endif
