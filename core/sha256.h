/* sha256.h - SHA-256 (FIPS 180-4) for bulk hashing: the model store's content IDs and piece
 * checks (node/merkle.c) hash every byte of every model, so this one hash has a fast path.
 * A portable reference compression function (always compiled, always tested) and, on
 * x86-64 CPUs with the SHA extensions, one on SHA-NI (sha256_shani.c), chosen at first use;
 * MESHLLM_ISA=scalar forces the reference (as for the engine's kernels). The rest of the
 * project's cryptography stays libsodium's; this is a hash of public data, not a secret.
 * Any thread; each struct sha256 is its caller's.
 */
#ifndef MESH_CORE_SHA256_H
#define MESH_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32u
#define SHA256_BLOCK 64u

struct sha256 {
    uint32_t h[8];
    uint8_t buf[SHA256_BLOCK];
    uint32_t fill;             /* bytes in buf */
    uint64_t n_bytes;          /* fed so far */
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
/* Writes the digest; s must be initialised again before reuse. */
void sha256_final(struct sha256 *s, uint8_t out[SHA256_LEN]);
/* One call: the digest of data[len]. */
void sha256(const void *data, size_t len, uint8_t out[SHA256_LEN]);
/* SHA-256(a[32] || b[32]): a Merkle tree's inner node. */
void sha256_pair(const uint8_t a[SHA256_LEN], const uint8_t b[SHA256_LEN], uint8_t out[SHA256_LEN]);
/* "shani" or "scalar": the compression function in use. */
const char *sha256_impl(void);

/* The compression functions (n_blocks 64-byte blocks into h[8]); exposed for the tests. */
void sha256_compress_scalar(uint32_t h[8], const uint8_t *data, size_t n_blocks);
void sha256_compress_shani(uint32_t h[8], const uint8_t *data, size_t n_blocks);
/* The 64 round constants K (FIPS 180-4 4.2.2). */
const uint32_t *sha256_k_table(void);
/* Whether this CPU (and build) can run sha256_compress_shani. */
int sha256_has_shani(void);

#endif
