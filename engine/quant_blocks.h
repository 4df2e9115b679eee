/* quant_blocks.h - block structs of the quantized tensor types, byte for byte as GGUF
 * files hold them (llama.cpp ggml/src/ggml-common.h). All multi-byte fields are
 * little-endian; `uint16_t d` fields are IEEE half floats (see quant_f16_to_f32).
 * Each struct has a _Static_assert on its size: the file layout does not depend on the
 * compiler's padding. Element i of a 32-element block lives where the comment says;
 * "lo/hi nibble" means bits 0-3 / 4-7 of a byte.
 */
#ifndef MESH_ENGINE_QUANT_BLOCKS_H
#define MESH_ENGINE_QUANT_BLOCKS_H

#include <stdint.h>

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

/* Q4_0: x[i] = d * (q[i] - 8), q in 0..15.
 * qs[j] lo nibble = q[j], hi nibble = q[j + 16], j < 16. */
struct block_q4_0 {
    uint16_t d;
    uint8_t qs[QK4_0 / 2];
};
_Static_assert(sizeof(struct block_q4_0) == 18, "block_q4_0 is 18 bytes");

/* Q4_1: x[i] = d * q[i] + m, q in 0..15; nibbles as Q4_0. */
struct block_q4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[QK4_1 / 2];
};
_Static_assert(sizeof(struct block_q4_1) == 20, "block_q4_1 is 20 bytes");

/* Q5_0: x[i] = d * (q[i] - 16), q in 0..31. Low 4 bits as Q4_0's nibbles; bit 4 of
 * q[i] is bit i of the little-endian uint32 qh. */
struct block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
};
_Static_assert(sizeof(struct block_q5_0) == 22, "block_q5_0 is 22 bytes");

/* Q5_1: x[i] = d * q[i] + m, q in 0..31; bits as Q5_0. */
struct block_q5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
};
_Static_assert(sizeof(struct block_q5_1) == 24, "block_q5_1 is 24 bytes");

/* Q8_0: x[i] = d * qs[i]. */
struct block_q8_0 {
    uint16_t d;
    int8_t qs[QK8_0];
};
_Static_assert(sizeof(struct block_q8_0) == 34, "block_q8_0 is 34 bytes");

/* Q8_1 (activations of Q4_1/Q5_1): x[i] = d * qs[i]; s = d * sum(qs) as a half. */
struct block_q8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[QK8_1];
};
_Static_assert(sizeof(struct block_q8_1) == 36, "block_q8_1 is 36 bytes");

/* Q2_K: 16 sub-blocks of 16; x = d * (sc & 15) * q - dmin * (sc >> 4), q 2 bits.
 * qs: for each 128-element half h, byte l (l < 32) holds elements h*128 + l + 32*s in
 * bits 2s..2s+1 (s = 0..3). Read-only in this engine (to_float). */
struct block_q2_K {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    uint16_t d;
    uint16_t dmin;
};
_Static_assert(sizeof(struct block_q2_K) == 84, "block_q2_K is 84 bytes");

/* Q3_K: 16 sub-blocks of 16, 6-bit signed scales (stored +32) packed in 12 bytes;
 * x = d * (sc - 32) * (q - 4*(hmask bit clear)), q low 2 bits in qs as Q2_K. */
struct block_q3_K {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
};
_Static_assert(sizeof(struct block_q3_K) == 110, "block_q3_K is 110 bytes");

/* Q4_K: 8 sub-blocks of 32; x = d * sc[j] * q - dmin * m[j], q in 0..15.
 * scales (12 bytes) hold eight 6-bit sc and eight 6-bit m: for j < 4, sc[j] =
 * scales[j] & 63, m[j] = scales[j+4] & 63; for j >= 4, sc[j] = (scales[j+4] & 15) |
 * (scales[j-4] >> 6) << 4, m[j] = (scales[j+4] >> 4) | (scales[j] >> 6) << 4.
 * qs: for each 64-element chunk c, byte l (l < 32) of qs[32c..] has element 64c + l in
 * the lo nibble and element 64c + 32 + l in the hi nibble. */
struct block_q4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
};
_Static_assert(sizeof(struct block_q4_K) == 144, "block_q4_K is 144 bytes");

/* Q5_K: as Q4_K plus a 5th bit: bit (2c) of qh[l] is bit 4 of element 64c + l and bit
 * (2c+1) that of element 64c + 32 + l. */
struct block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
_Static_assert(sizeof(struct block_q5_K) == 176, "block_q5_K is 176 bytes");

/* Q6_K: 16 sub-blocks of 16; x = d * scales[k] * (q - 32), q in 0..63.
 * For each 128-element half h (ql += 64, qh += 32, scales += 8 per half), l < 32:
 *   element l      : ql[l] lo nibble,    qh[l] bits 0-1, scale index l/16
 *   element l + 32 : ql[l+32] lo nibble, qh[l] bits 2-3, scale index l/16 + 2
 *   element l + 64 : ql[l] hi nibble,    qh[l] bits 4-5, scale index l/16 + 4
 *   element l + 96 : ql[l+32] hi nibble, qh[l] bits 6-7, scale index l/16 + 6 */
struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
};
_Static_assert(sizeof(struct block_q6_K) == 210, "block_q6_K is 210 bytes");

/* Q8_K (activations for the K-quants): x = d * qs[i] (d is a float, not a half);
 * bsums[k] = sum of qs[16k .. 16k+15]. */
struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};
_Static_assert(sizeof(struct block_q8_K) == 292, "block_q8_K is 292 bytes");

#endif
