/* infer_internal.h - the /meshllm/infer/1 wire format (infer_wire.c): pure encode/decode
 * functions shared by infer.c, tests/test_infer.c and tests/fuzz/fuzz_infer.c.
 */
#ifndef MESH_NODE_INFER_INTERNAL_H
#define MESH_NODE_INFER_INTERNAL_H

#include "node/req.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits. Anything beyond is MESH_EPROTO on decode (MESH_ERANGE on encode). */
/* A request: the API takes HTTP bodies up to 1 MiB (prompts, messages), and a continuation
 * adds the ids already generated (<= 5 bytes each packed; a 128 Ki-token context is 640 KiB):
 * 4 MiB covers both with room for protobuf framing. */
#define INFER_MAX_REQUEST (4u << 20)
/* A frame: what one wake-up of the loop coalesces. 1 MiB is hundreds of tokens even with 20
 * logprob alternatives each (~1.3 KiB per token); larger output is split over frames. */
#define INFER_MAX_FRAME (1u << 20)
/* The encoder aims below this so a frame never reaches INFER_MAX_FRAME. */
#define INFER_FRAME_BUDGET (INFER_MAX_FRAME / 2)
/* Chat messages: 4 MiB of request at >= 1 KiB of template overhead per turn in any context
 * we serve; also bounds the decoder's allocation before it reads contents. */
#define INFER_MAX_MSGS 4096
/* Model names, roles, error type/code/param: short identifiers. */
#define INFER_MAX_NAME 256

/* Request: client -> server. *out is malloc'd (free()). Returns 0, MESH_ERANGE (beyond the
 * limits above or node/req.h's), MESH_EINVAL (kind not chat/completion), MESH_ENOMEM. */
int infer_request_encode(const struct node_gen_req *req, uint8_t **out, size_t *out_len);
/* Fills *out (node_gen_req_init first; node_gen_req_free it) from one message. The route is
 * NODE_ROUTE_LOCAL: a delegated request is never delegated again. Returns 0, MESH_EPROTO
 * (malformed, wrong version, beyond a limit; *out is then empty) or MESH_ENOMEM. */
int infer_request_decode(const uint8_t *data, size_t len, struct node_gen_req *out);

/* Output frame: server -> client. The chunk's text/cuts/ids/lps (cuts are offsets from
 * cut_base: 0 for a whole chunk, the part's first byte for infer_chunk_part's parts), and
 * when done the finish, fail, usage, and for finish "error" the error. Returns 0,
 * MESH_EINVAL (cuts not ending at the text's end, unknown finish), MESH_ERANGE (would exceed
 * INFER_MAX_FRAME: split it first with infer_chunk_part), MESH_ENOMEM. */
int infer_frame_encode(const struct node_chunk *c, size_t cut_base, uint8_t **out,
                       size_t *out_len);
/* Error frame: refused before starting. */
int infer_frame_encode_error(const struct node_error *e, uint8_t **out, size_t *out_len);
/* One frame into *out (zeroed first; node_chunk_free it). An error frame gives
 * *is_error true and out->done, finish "error", fail BUSY (429/503) or REFUSED, out->err
 * (its type/code/param are the known static strings, or NULL / "server_error" when
 * unknown). Returns 0, MESH_EPROTO or MESH_ENOMEM. */
int infer_frame_decode(const uint8_t *data, size_t len, struct node_chunk *out, bool *is_error);

/* A view of part of a chunk, to split output that would not fit one frame: from the cursor
 * (*piece, *id, *lp: first piece, id and logprob not yet sent) takes up to
 * INFER_FRAME_BUDGET bytes' worth into *part (pointers into c; do not free part; encode it
 * with *cut_base), advances the cursor and says whether this is the last part (only it
 * carries done and usage). c must have cuts for its text. Returns 0, or MESH_ERANGE when one
 * piece or logprob alone would not fit a frame. */
int infer_chunk_part(const struct node_chunk *c, int *piece, int *id, int *lp,
                     struct node_chunk *part, size_t *cut_base, bool *is_last);

/* finish_reason text <-> wire number (0: unknown). */
unsigned infer_finish_code(const char *finish_reason);
const char *infer_finish_name(unsigned code);

#endif
