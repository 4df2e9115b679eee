/* merkle.c - BEP 52 Merkle trees over 16 KiB SHA-256 leaves (see merkle.h). The builder
 * keeps only the current piece's leaves and the piece layer: a 40 GiB file at 1 MiB pieces
 * is 40960 piece hashes (1.3 MiB), whatever its 2.6 million leaves. */
#include "node/merkle.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

#define MAX_LEVELS 64

static void hash2(const uint8_t a[MERKLE_HASH], const uint8_t b[MERKLE_HASH],
                  uint8_t out[MERKLE_HASH])
{
    sha256_pair(a, b, out);
}

static size_t pow2_ceil(size_t n)
{
    size_t w = 1;
    while (w < n) w <<= 1;
    return w;
}

static int log2_of(size_t w)
{
    int k = 0;
    while (((size_t)1 << k) < w) k++;
    return k;
}

/* pads[k]: the root of a subtree of 2^k copies of pad. */
static void pads_make(const uint8_t pad[MERKLE_HASH], int levels, uint8_t pads[][MERKLE_HASH])
{
    memcpy(pads[0], pad, MERKLE_HASH);
    for (int k = 1; k <= levels; k++) hash2(pads[k - 1], pads[k - 1], pads[k]);
}

/* Root of the subtree of width 2^k starting at hashes[lo]: padding beyond n. */
static void subtree(const uint8_t *hashes, size_t n, uint8_t pads[][MERKLE_HASH], size_t lo,
                    int k, uint8_t out[MERKLE_HASH])
{
    if (lo >= n) {
        memcpy(out, pads[k], MERKLE_HASH);
        return;
    }
    if (k == 0) {
        memcpy(out, hashes + lo * MERKLE_HASH, MERKLE_HASH);
        return;
    }
    uint8_t l[MERKLE_HASH], r[MERKLE_HASH];
    subtree(hashes, n, pads, lo, k - 1, l);
    subtree(hashes, n, pads, lo + ((size_t)1 << (k - 1)), k - 1, r);
    hash2(l, r, out);
}

void merkle_layer_root(const uint8_t *hashes, size_t n, const uint8_t pad[MERKLE_HASH],
                       uint8_t out[MERKLE_HASH])
{
    int k = log2_of(pow2_ceil(n));
    uint8_t pads[MAX_LEVELS + 1][MERKLE_HASH];
    pads_make(pad, k, pads);
    subtree(hashes, n, pads, 0, k, out);
}

void merkle_piece_pad(uint32_t piece_len, uint8_t out[MERKLE_HASH])
{
    static const uint8_t zero[MERKLE_HASH];
    int k = log2_of(piece_len / MERKLE_BLOCK);
    uint8_t pads[MAX_LEVELS + 1][MERKLE_HASH];
    pads_make(zero, k, pads);
    memcpy(out, pads[k], MERKLE_HASH);
}

void merkle_root_from_pieces(const uint8_t *pieces, size_t n_pieces, uint32_t piece_len,
                             uint8_t out[MERKLE_HASH])
{
    uint8_t pad[MERKLE_HASH];
    merkle_piece_pad(piece_len, pad);
    merkle_layer_root(pieces, n_pieces, pad, out);
}

int merkle_init(struct merkle *m, uint32_t piece_len)
{
    memset(m, 0, sizeof *m);
    if (piece_len < MERKLE_BLOCK || (piece_len & (piece_len - 1)) ||
        piece_len / MERKLE_BLOCK > MERKLE_MAX_BLOCKS_PER_PIECE)
        return MESH_EINVAL;
    m->piece_len = piece_len;
    m->blocks_per_piece = piece_len / MERKLE_BLOCK;
    m->piece_leaves = malloc((size_t)m->blocks_per_piece * MERKLE_HASH);
    if (!m->piece_leaves) return MESH_ENOMEM;
    sha256_init(&m->file);
    sha256_init(&m->block);
    return 0;
}

void merkle_clear(struct merkle *m)
{
    free(m->piece_leaves);
    free(m->pieces);
    memset(m, 0, sizeof *m);
}

/* The current piece's leaves (padded with zero leaves to a piece) become one piece hash. */
static int piece_close(struct merkle *m)
{
    if (m->n_pieces == m->pieces_cap) {
        size_t cap = m->pieces_cap ? m->pieces_cap * 2 : 64;
        uint8_t *p = realloc(m->pieces, cap * MERKLE_HASH);
        if (!p) return MESH_ENOMEM;
        m->pieces = p;
        m->pieces_cap = cap;
    }
    static const uint8_t zero[MERKLE_HASH];
    uint8_t pads[MAX_LEVELS + 1][MERKLE_HASH];
    int k = log2_of(m->blocks_per_piece);
    pads_make(zero, k, pads);
    subtree(m->piece_leaves, m->n_piece_leaves, pads, 0, k, m->pieces + m->n_pieces * MERKLE_HASH);
    m->n_pieces++;
    m->n_piece_leaves = 0;
    return 0;
}

static int block_close(struct merkle *m)
{
    sha256_final(&m->block, m->piece_leaves + (size_t)m->n_piece_leaves * MERKLE_HASH);
    sha256_init(&m->block);
    m->block_fill = 0;
    m->n_piece_leaves++;
    /* a full piece closes only when more data follows: a file of exactly one piece has
     * no piece layer, and its root is then computed from these leaves */
    return 0;
}

int merkle_update(struct merkle *m, const void *data, size_t len)
{
    const uint8_t *p = data;
    sha256_update(&m->file, p, len);
    m->n_bytes += len;
    while (len) {
        if (m->block_fill == 0 && m->n_piece_leaves == m->blocks_per_piece) {
            int rc = piece_close(m);
            if (rc) return rc;
        }
        size_t take = MERKLE_BLOCK - m->block_fill;
        if (take > len) take = len;
        sha256_update(&m->block, p, take);
        m->block_fill += (uint32_t)take;
        p += take;
        len -= take;
        if (m->block_fill == MERKLE_BLOCK) block_close(m);
    }
    return 0;
}

int merkle_final(struct merkle *m, uint8_t root[MERKLE_HASH], uint8_t sha256[MERKLE_HASH],
                 uint8_t **pieces, size_t *n_pieces)
{
    if (pieces) *pieces = NULL;
    if (n_pieces) *n_pieces = 0;
    uint8_t r[MERKLE_HASH] = {0}, fh[MERKLE_HASH];
    int rc = 0;
    if (m->block_fill) block_close(m); /* the last block, not padded with data */
    sha256_final(&m->file, fh);
    if (m->n_bytes == 0) {
        /* empty file: no tree; the root stays zero */
    } else if (m->n_pieces == 0) { /* at most one piece: leaves padded to a power of two */
        static const uint8_t zero[MERKLE_HASH];
        merkle_layer_root(m->piece_leaves, m->n_piece_leaves, zero, r);
    } else {
        if (m->n_piece_leaves && (rc = piece_close(m))) goto out;
        merkle_root_from_pieces(m->pieces, m->n_pieces, m->piece_len, r);
        if (pieces) {
            *pieces = m->pieces;
            *n_pieces = m->n_pieces;
            m->pieces = NULL;
        }
    }
    if (root) memcpy(root, r, MERKLE_HASH);
    if (sha256) memcpy(sha256, fh, MERKLE_HASH);
out:
    merkle_clear(m);
    return rc;
}

bool merkle_piece_verify(const void *data, size_t len, uint32_t piece_len,
                         const uint8_t want[MERKLE_HASH])
{
    if (len == 0 || len > piece_len || piece_len < MERKLE_BLOCK ||
        piece_len / MERKLE_BLOCK > MERKLE_MAX_BLOCKS_PER_PIECE)
        return false;
    uint32_t bpp = piece_len / MERKLE_BLOCK;
    uint8_t *leaves = malloc((size_t)bpp * MERKLE_HASH);
    if (!leaves) return false;
    const uint8_t *p = data;
    size_t n = 0;
    for (size_t off = 0; off < len; off += MERKLE_BLOCK, n++) {
        size_t take = len - off < MERKLE_BLOCK ? len - off : MERKLE_BLOCK;
        sha256(p + off, take, leaves + n * MERKLE_HASH);
    }
    static const uint8_t zero[MERKLE_HASH];
    uint8_t pads[MAX_LEVELS + 1][MERKLE_HASH], got[MERKLE_HASH];
    int k = log2_of(bpp);
    pads_make(zero, k, pads);
    subtree(leaves, n, pads, 0, k, got);
    free(leaves);
    return sodium_memcmp(got, want, MERKLE_HASH) == 0;
}

int merkle_proof_make(const uint8_t *hashes, size_t n, const uint8_t pad[MERKLE_HASH],
                      size_t index, uint8_t proof[][MERKLE_HASH])
{
    int k = log2_of(pow2_ceil(n));
    uint8_t pads[MAX_LEVELS + 1][MERKLE_HASH];
    pads_make(pad, k, pads);
    for (int lv = 0; lv < k; lv++) {
        size_t node = index >> lv;              /* our ancestor on layer lv */
        size_t sib = node ^ 1;                  /* its sibling */
        subtree(hashes, n, pads, sib << lv, lv, proof[lv]);
    }
    return k;
}

bool merkle_proof_verify(const uint8_t root[MERKLE_HASH], const uint8_t hash[MERKLE_HASH],
                         size_t index, const uint8_t proof[][MERKLE_HASH], int n_proof)
{
    if (n_proof < 0 || n_proof > MAX_LEVELS) return false;
    if (n_proof < (int)(sizeof(size_t) * 8) && (index >> n_proof) != 0) return false;
    uint8_t cur[MERKLE_HASH];
    memcpy(cur, hash, MERKLE_HASH);
    for (int lv = 0; lv < n_proof; lv++) {
        if ((index >> lv) & 1)
            hash2(proof[lv], cur, cur);
        else
            hash2(cur, proof[lv], cur);
    }
    return sodium_memcmp(cur, root, MERKLE_HASH) == 0;
}

void merkle_hex(const uint8_t h[MERKLE_HASH], char out[65])
{
    sodium_bin2hex(out, 65, h, MERKLE_HASH);
}
