/* sha256.c - SHA-256 per FIPS 180-4 (sections 4.1.2, 4.2.2, 5.1.1, 6.2): padding, the
 * streaming buffer, the reference compression function and the choice of the SHA-NI one
 * (see sha256.h). */
#include "core/sha256.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* 4.2.2: the first 32 bits of the fractional parts of the cube roots of the first 64
 * primes. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

/* The round constants, shared with sha256_shani.c. */
const uint32_t *sha256_k_table(void)
{
    return K;
}

static uint32_t rotr(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void sha256_compress_scalar(uint32_t h[8], const uint8_t *data, size_t n_blocks)
{
    for (; n_blocks; n_blocks--, data += SHA256_BLOCK) {
        uint32_t w[64]; /* 6.2.2 step 1: the message schedule */
        for (int t = 0; t < 16; t++) w[t] = load_be32(data + 4 * t);
        for (int t = 16; t < 64; t++) {
            uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = s1 + w[t - 7] + s0 + w[t - 16];
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
        for (int t = 0; t < 64; t++) { /* step 3 */
            uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
            uint32_t ch = (e & f) ^ (~e & g);
            uint32_t t1 = k + S1 + ch + K[t] + w[t];
            uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
            uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
            uint32_t t2 = S0 + maj;
            k = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
        h[5] += f;
        h[6] += g;
        h[7] += k;
    }
}

#if !defined(__x86_64__)
void sha256_compress_shani(uint32_t h[8], const uint8_t *data, size_t n_blocks)
{
    sha256_compress_scalar(h, data, n_blocks);
}
#endif

int sha256_has_shani(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int sha = (b >> 29) & 1;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return sha && (c & (1u << 19)) && (c & (1u << 9)); /* SSE4.1 and SSSE3 too */
#else
    return 0;
#endif
}

static void (*compress)(uint32_t h[8], const uint8_t *data, size_t n_blocks);
static const char *impl_name = "scalar";
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    const char *force = getenv("MESHLLM_ISA");
    compress = sha256_compress_scalar;
    if ((!force || strcmp(force, "scalar")) && sha256_has_shani()) {
        compress = sha256_compress_shani;
        impl_name = "shani";
    }
}

const char *sha256_impl(void)
{
    pthread_once(&once, choose);
    return impl_name;
}

/* 5.3.3: the initial hash value. */
void sha256_init(struct sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    pthread_once(&once, choose);
    memcpy(s->h, iv, sizeof iv);
    s->fill = 0;
    s->n_bytes = 0;
}

void sha256_update(struct sha256 *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    s->n_bytes += len;
    if (s->fill) {
        size_t take = SHA256_BLOCK - s->fill < len ? SHA256_BLOCK - s->fill : len;
        memcpy(s->buf + s->fill, p, take);
        s->fill += (uint32_t)take;
        p += take;
        len -= take;
        if (s->fill < SHA256_BLOCK) return;
        compress(s->h, s->buf, 1);
        s->fill = 0;
    }
    if (len >= SHA256_BLOCK) {
        size_t n = len / SHA256_BLOCK;
        compress(s->h, p, n);
        p += n * SHA256_BLOCK;
        len -= n * SHA256_BLOCK;
    }
    memcpy(s->buf, p, len);
    s->fill = (uint32_t)len;
}

/* 5.1.1: a 1 bit, zeros, the length in bits as 64 big-endian bits. */
void sha256_final(struct sha256 *s, uint8_t out[SHA256_LEN])
{
    uint64_t bits = s->n_bytes * 8;
    uint8_t pad[SHA256_BLOCK * 2] = {0x80};
    size_t n = (s->fill < 56 ? 56 : 120) - s->fill;
    for (int i = 0; i < 8; i++) pad[n + i] = (uint8_t)(bits >> (56 - 8 * i));
    uint64_t keep = s->n_bytes;
    sha256_update(s, pad, n + 8);
    s->n_bytes = keep;
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

void sha256(const void *data, size_t len, uint8_t out[SHA256_LEN])
{
    struct sha256 s;
    sha256_init(&s);
    sha256_update(&s, data, len);
    sha256_final(&s, out);
}

void sha256_pair(const uint8_t a[SHA256_LEN], const uint8_t b[SHA256_LEN], uint8_t out[SHA256_LEN])
{
    struct sha256 s;
    sha256_init(&s);
    memcpy(s.buf, a, SHA256_LEN);
    memcpy(s.buf + SHA256_LEN, b, SHA256_LEN);
    compress(s.h, s.buf, 1);
    s.n_bytes = SHA256_BLOCK;
    s.fill = 0;
    sha256_final(&s, out);
}
