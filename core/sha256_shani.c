/* sha256_shani.c - the SHA-256 compression function on the x86 SHA extensions (SHA-NI),
 * same contract as sha256_compress_scalar (core/sha256.h). Built with -msha -msse4.1;
 * called only when cpuid says the CPU has them (sha256_has_shani).
 *
 * The state lives in two registers the way SHA256RNDS2 wants it: ABEF and CDGH (A in the
 * high lane). Each step of 4 rounds adds K to 4 schedule words and runs SHA256RNDS2 twice
 * (2 rounds each, on the low then the high pair). The schedule words are made 4 at a time
 * (FIPS 180-4 6.2.2 step 1): W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], with
 * SHA256MSG1 giving W[t-16] + s0(W[t-15]), an ALIGNR the W[t-7] words and SHA256MSG2 the
 * s1 terms (which depend on the two words just made).
 */
#include "core/sha256.h"

#include <immintrin.h>

void sha256_compress_shani(uint32_t h[8], const uint8_t *data, size_t n_blocks)
{
    const uint32_t *k = sha256_k_table();
    /* each 32-bit word of the block is big-endian */
    const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    __m128i dcba = _mm_loadu_si128((const __m128i *)&h[0]); /* lanes: a b c d */
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&h[4]); /* lanes: e f g h */
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);           /* lanes: b a d c */
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);           /* lanes: h g f e */
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);          /* lanes: f e b a */
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);       /* lanes: h g d c */
    for (; n_blocks; n_blocks--, data += SHA256_BLOCK) {
        __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i w[4]; /* the last 16 schedule words, 4 per register, a ring */
        for (int i = 0; i < 16; i++) {
            __m128i *wi = &w[i & 3];
            if (i < 4) {
                *wi = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * i)), bswap);
            } else {
                /* w[i&3] holds W[i-4]; W[i-3], W[i-2], W[i-1] are the next ones in the ring */
                __m128i x = _mm_sha256msg1_epu32(*wi, w[(i + 1) & 3]);
                x = _mm_add_epi32(x, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
                *wi = _mm_sha256msg2_epu32(x, w[(i + 3) & 3]);
            }
            __m128i m = _mm_add_epi32(*wi, _mm_loadu_si128((const __m128i *)&k[4 * i]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, m);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(m, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);           /* lanes: a b e f */
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);           /* lanes: g h c d */
    dcba = _mm_blend_epi16(feba, dchg, 0xF0);               /* lanes: a b c d */
    hgfe = _mm_alignr_epi8(dchg, feba, 8);                  /* lanes: e f g h */
    _mm_storeu_si128((__m128i *)&h[0], dcba);
    _mm_storeu_si128((__m128i *)&h[4], hgfe);
}
