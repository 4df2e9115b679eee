/* stage_internal.h - the /meshllm/stage/1 wire format (stage_wire.c): pure encode/decode
 * functions shared by stage.c, pipeline.c, tests/test_stage.c and tests/fuzz/fuzz_stage.c.
 */
#ifndef MESH_NODE_STAGE_INTERNAL_H
#define MESH_NODE_STAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STAGE_SESSION_LEN 16
/* A message: one prefill chunk of hidden states. 16 MiB holds 512 tokens of an 8192-wide
 * model (70B) in F16 with room for framing. */
#define STAGE_MAX_FRAME (16u << 20)
/* The requester splits a chunk so its hidden states stay below this. */
#define STAGE_FRAME_BUDGET (STAGE_MAX_FRAME - (64u << 10))
#define STAGE_MAX_TOKENS 4096
#define STAGE_MAX_EMBD 65536
#define STAGE_MAX_LAYERS 65536
#define STAGE_MAX_MESSAGE 256

/* Error codes of StageReply.error. BUSY is the only one worth trying elsewhere at once. */
enum stage_err {
    STAGE_OK = 0,
    STAGE_ERR_MALFORMED = 1,   /* not a StageRequest, wrong version, bad session id */
    STAGE_ERR_BUSY = 2,        /* every slot holds a live session: try another stage */
    STAGE_ERR_MODEL = 3,       /* this node does not serve that model's content hash */
    STAGE_ERR_RANGE = 4,       /* it serves other layers of it */
    STAGE_ERR_DIMS = 5,        /* n_embd, or hidden's size, do not match */
    STAGE_ERR_NONFINITE = 6,   /* a NaN or infinity among the hidden states */
    STAGE_ERR_POS = 7,         /* positions not consecutive, a gap, or beyond the context */
    STAGE_ERR_INTERNAL = 8,    /* the stage failed (out of memory, engine error) */
    STAGE_ERR_CLOSING = 9,     /* the node is stopping */
    STAGE_ERR_MAX = 9
};
const char *stage_err_name(int code);

enum stage_out { STAGE_OUT_ALL = 0, STAGE_OUT_LAST = 1, STAGE_OUT_NONE = 2 };

/* A request as both sides hold it. x is n_tokens x n_embd floats (F32 here, F16 on the
 * wire); pos one per token. */
struct stage_req {
    uint8_t session[STAGE_SESSION_LEN];
    char model[65];
    int layer_begin, layer_end;
    int n_embd;
    int n_tokens;
    int32_t *pos;              /* decode: malloc'd */
    float *x;                  /* decode: malloc'd */
    int out;                   /* enum stage_out */
    bool end;
};
void stage_req_free(struct stage_req *q);

/* Encodes q (q->x converted to F16) into a malloc'd *out. Returns 0, MESH_EINVAL (bad
 * fields), MESH_ERANGE (beyond the limits above), MESH_ENOMEM. */
int stage_req_encode(const struct stage_req *q, uint8_t **out, size_t *out_len);
/* Decodes and checks one request into *out (zeroed first; stage_req_free it). Returns
 * STAGE_OK, a positive enum stage_err (MALFORMED, DIMS, NONFINITE, POS; *out then holds the
 * session id when one was readable, has_session says so) with a sentence in why, or
 * MESH_ENOMEM. Not checked here: whether the model, range and n_embd are the stage's. */
int stage_req_decode(const uint8_t *data, size_t len, struct stage_req *out, bool *has_session,
                     char *why, size_t why_cap);

struct stage_reply {
    uint8_t session[STAGE_SESSION_LEN];
    int pos, n_tokens, n_cached;
    int n_embd;                /* decode: the width the caller expects */
    float *x;                  /* n_tokens x n_embd; decode: malloc'd */
    int error;                 /* enum stage_err */
    char message[STAGE_MAX_MESSAGE];
};
void stage_reply_free(struct stage_reply *r);
int stage_reply_encode(const struct stage_reply *r, uint8_t **out, size_t *out_len);
/* Decodes a reply whose states are n_embd wide into *out (zeroed first). Returns 0,
 * MESH_EPROTO (malformed, sizes that do not match, non-finite states, unknown error code)
 * or MESH_ENOMEM. */
int stage_reply_decode(const uint8_t *data, size_t len, int n_embd, struct stage_reply *out);

/* ---- /meshllm/stageload/1 (asking a member to load a range) ------------------------------ */

#define STAGELOAD_PROTOCOL_ID "/meshllm/stageload/1"
#define STAGELOAD_VERSION 1
#define STAGELOAD_MAX_FRAME (64u << 10)
#define STAGELOAD_NAME_CAP 101
#define STAGELOAD_PATH_CAP 4096

/* StageLoadReply.status. */
enum stageload_status {
    STAGELOAD_OK = 0,          /* the range is loaded and served (or already was) */
    STAGELOAD_MALFORMED = 1,   /* not a StageLoadRequest, wrong version, bad fields */
    STAGELOAD_REFUSED = 2,     /* this node does not accept stages (no --accept-stages) */
    STAGELOAD_NO_FILE = 3,     /* no file with that content hash here */
    STAGELOAD_NO_MEMORY = 4,   /* the range does not fit this node's free memory */
    STAGELOAD_BUSY = 5,        /* another load is running: ask again later */
    STAGELOAD_FAILED = 6,      /* the load failed (the message says why) */
    STAGELOAD_CLOSING = 7,     /* the node is stopping */
    STAGELOAD_STATUS_MAX = 7
};
const char *stageload_status_name(int status);

struct stageload_req {
    char model[65];                    /* hex SHA-256 */
    char name[STAGELOAD_NAME_CAP];     /* [A-Za-z0-9._-], "" none */
    uint64_t file_bytes;
    char path[STAGELOAD_PATH_CAP];     /* absolute, "" none */
    int layer_begin, layer_end, n_layer;
    uint64_t range_bytes;
};
/* 0, MESH_EINVAL (bad fields), MESH_ENOMEM. */
int stageload_req_encode(const struct stageload_req *q, uint8_t **out, size_t *out_len);
/* Decodes and checks a request (zeroed first): version, a 64-hex model, a non-empty range
 * within n_layer (at most STAGE_MAX_LAYERS), a name of safe characters, an absolute path
 * without "..", no control bytes. STAGELOAD_OK or STAGELOAD_MALFORMED with why. */
int stageload_req_decode(const uint8_t *data, size_t len, struct stageload_req *out, char *why,
                         size_t why_cap);

struct stageload_reply {
    int status;                        /* enum stageload_status */
    char message[STAGE_MAX_MESSAGE];
};
int stageload_reply_encode(const struct stageload_reply *r, uint8_t **out, size_t *out_len);
/* 0 or MESH_EPROTO (malformed, unknown status); control bytes in message become '?'. */
int stageload_reply_decode(const uint8_t *data, size_t len, struct stageload_reply *out);

#endif
