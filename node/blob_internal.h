/* blob_internal.h - the /meshllm/blob/1 wire format (blob_wire.c): pure encode/decode
 * functions shared by blob.c, blobpull.c and tests/fuzz/fuzz_blob.c. */
#ifndef MESH_NODE_BLOB_INTERNAL_H
#define MESH_NODE_BLOB_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLOB_MAX_PIECE (4u << 20)              /* largest piece length served or accepted */
#define BLOB_MAX_FRAME (BLOB_MAX_PIECE + 4096u) /* a piece and its framing */
#define BLOB_MAX_SIZE (1ull << 40)             /* 1 TiB: the piece layer fits a frame */
#define BLOB_MAX_MESSAGE 256

enum blob_kind { BLOB_INFO = 1, BLOB_PIECE = 2 };

enum blob_err {
    BLOB_OK = 0,
    BLOB_ERR_MALFORMED = 1, /* not a BlobRequest, wrong version or kind, bad content ID */
    BLOB_ERR_NOTFOUND = 2,  /* this node's store has no such file */
    BLOB_ERR_RANGE = 3,     /* no such piece */
    BLOB_ERR_INTERNAL = 4,  /* the provider failed (a read error, out of memory) */
    BLOB_ERR_MAX = 4
};
const char *blob_err_name(int code);

struct blob_req {
    int kind;                  /* enum blob_kind */
    char content_id[65];
    uint32_t piece;
};

/* Both directions. pieces and data point into the caller's buffer on encode and are
 * malloc'd on decode (blob_reply_free). */
struct blob_reply {
    int error;                 /* enum blob_err */
    char message[BLOB_MAX_MESSAGE];
    uint64_t size;
    uint32_t piece_len;
    uint8_t *pieces;
    size_t n_pieces;
    uint32_t piece;
    uint8_t *data;
    size_t data_len;
    bool has_info;
};
void blob_reply_free(struct blob_reply *r);

/* Pieces of a file of size bytes cut in piece_len: ceil(size / piece_len). */
uint64_t blob_n_pieces(uint64_t size, uint32_t piece_len);
bool blob_is_hex64(const char *s);

/* Encodes into a malloc'd *out. 0, MESH_EINVAL, MESH_ENOMEM. */
int blob_req_encode(const struct blob_req *q, uint8_t **out, size_t *out_len);
/* Decodes and checks a request (zeroed first). BLOB_OK or BLOB_ERR_MALFORMED with a
 * sentence in why. */
int blob_req_decode(const uint8_t *data, size_t len, struct blob_req *out, char *why,
                    size_t why_cap);
int blob_reply_encode(const struct blob_reply *r, uint8_t **out, size_t *out_len);
/* Decodes a reply (zeroed first). Checked: a known error code; an INFO answer's size,
 * piece length (power of two, 16 KiB..BLOB_MAX_PIECE) and piece layer length agree; a
 * PIECE answer's data is at most BLOB_MAX_PIECE. 0, MESH_EPROTO, MESH_ENOMEM. */
int blob_reply_decode(const uint8_t *data, size_t len, struct blob_reply *out);

#endif
