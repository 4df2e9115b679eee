/* rng.h - xoshiro256** pseudo-random numbers (Blackman & Vigna, prng.di.unimi.it).
 *
 * Deterministic and identical on every machine, so a seed reproduces a sampled text and
 * a simulation. Not for secrets: keys and nonces come from libsodium.
 * Thread rule: a struct rng belongs to one thread (embed one per owner).
 */
#ifndef MESH_CORE_RNG_H
#define MESH_CORE_RNG_H

#include <stdint.h>

struct rng {
    uint64_t s[4];
};

/* Expands a 64-bit seed into the state with splitmix64 (any seed, 0 included). */
void rng_seed(struct rng *r, uint64_t seed);
/* State taken from 32 bytes (e.g. a hash of the node's key); never all zero. */
void rng_seed_bytes(struct rng *r, const uint8_t bytes[32]);
uint64_t rng_next(struct rng *r);
/* Uniform double in [0, 1) from the top 53 bits. */
double rng_uniform(struct rng *r);

#endif
