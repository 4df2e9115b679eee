/* merkle.h - content IDs: the SHA-256 Merkle tree of BitTorrent v2 (BEP 52, "File tree" and
 * "Merkle tree" sections).
 *
 * A file is cut into 16 KiB blocks; each block is hashed with SHA-256 (the last block as it
 * is, not padded with data). The leaf hashes are padded with zero hashes (32 zero bytes) to
 * a power of two and hashed pairwise, H(left || right), up to the root: the "pieces root",
 * which names the file (its content ID). The layer whose nodes each cover one piece
 * (piece_len bytes, a power of two >= 16 KiB) is the "piece layer": with it, one piece is
 * verified alone (hash its blocks, pad with zero leaves to a piece, compare), and the piece
 * layer is verified against the root. A file of at most one piece has no piece layer (its
 * tree is the leaves padded to a power of two). An empty file has no tree: its root here
 * is 32 zero bytes (BEP 52 gives it no pieces root).
 * Pure computation, no I/O; any thread (each struct merkle is its caller's). SHA-256 is
 * core/sha256.h (SHA-NI when the CPU has it: every byte of every model goes through it).
 */
#ifndef MESH_NODE_MERKLE_H
#define MESH_NODE_MERKLE_H

#include "core/sha256.h"

#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MERKLE_BLOCK 16384u        /* BEP 52 leaf size */
#define MERKLE_HASH 32u            /* SHA-256 */
#define MERKLE_PIECE_DEFAULT (1u << 20) /* the store's piece length */
#define MERKLE_MAX_BLOCKS_PER_PIECE 4096u /* piece_len up to 64 MiB */

/* A streaming builder: the file's bytes in order -> the root, the piece layer and the
 * plain SHA-256 of the whole file (what Ollama and Hugging Face publish). */
struct merkle {
    uint32_t piece_len;
    uint32_t blocks_per_piece;
    uint64_t n_bytes;                  /* fed so far */
    struct sha256 file;                /* SHA-256 of the whole file */
    struct sha256 block;               /* the block being filled */
    uint32_t block_fill;               /* its bytes */
    uint8_t *piece_leaves;             /* blocks_per_piece leaf hashes of the current piece */
    uint32_t n_piece_leaves;
    uint8_t *pieces;                   /* piece layer so far, n_pieces * 32 bytes */
    size_t n_pieces, pieces_cap;
};

/* piece_len: a power of two from 16 KiB to 64 MiB. 0, MESH_EINVAL, MESH_ENOMEM. */
int merkle_init(struct merkle *m, uint32_t piece_len);
/* Feeds len bytes. 0 or MESH_ENOMEM. */
int merkle_update(struct merkle *m, const void *data, size_t len);
/* Finishes: root[32], sha256[32] (either may be NULL), and the piece layer (malloc'd,
 * *n_pieces hashes; NULL and 0 for a file of at most one piece), owned by the caller.
 * m is cleared afterwards. 0 or MESH_ENOMEM. */
int merkle_final(struct merkle *m, uint8_t root[MERKLE_HASH], uint8_t sha256[MERKLE_HASH],
                 uint8_t **pieces, size_t *n_pieces);
/* Frees m's buffers (safe on a cleared or half-built m). */
void merkle_clear(struct merkle *m);

/* The hash of a tree whose bottom layer is n hashes (n >= 1) padded to a power of two
 * with copies of pad (the bottom layer's padding; each layer above pads with the hash of
 * two of the layer below's). */
void merkle_layer_root(const uint8_t *hashes, size_t n, const uint8_t pad[MERKLE_HASH],
                       uint8_t out[MERKLE_HASH]);
/* The padding hash of the piece layer: the root of a piece of zero leaves. */
void merkle_piece_pad(uint32_t piece_len, uint8_t out[MERKLE_HASH]);
/* Root of a file from its piece layer (n_pieces >= 2). */
void merkle_root_from_pieces(const uint8_t *pieces, size_t n_pieces, uint32_t piece_len,
                             uint8_t out[MERKLE_HASH]);

/* Whether data[len] (1 <= len <= piece_len: the last piece may be short) is the piece whose
 * piece-layer hash is want. */
bool merkle_piece_verify(const void *data, size_t len, uint32_t piece_len,
                         const uint8_t want[MERKLE_HASH]);

/* An inclusion proof of hashes[index] in the tree of merkle_layer_root(hashes, n, pad):
 * the sibling on each layer from the bottom up, into proof[64 * 32]; returns how many
 * (ceil(log2(n))). */
int merkle_proof_make(const uint8_t *hashes, size_t n, const uint8_t pad[MERKLE_HASH],
                      size_t index, uint8_t proof[][MERKLE_HASH]);
/* Whether hash at index, with the n_proof siblings of proof, climbs to root. */
bool merkle_proof_verify(const uint8_t root[MERKLE_HASH], const uint8_t hash[MERKLE_HASH],
                         size_t index, const uint8_t proof[][MERKLE_HASH], int n_proof);

/* 64 lower-case hex digits of h into out[65]. */
void merkle_hex(const uint8_t h[MERKLE_HASH], char out[65]);

#endif
