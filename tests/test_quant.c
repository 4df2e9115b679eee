/* test_quant.c - engine/quant: type table, half/bfloat16 rounding, every type's
 * quantize -> dequantize error, hand-computed blocks, K-quant reference quantizers
 * reproducing already-quantized data, and every SIMD kernel of every path this CPU
 * has against the scalar reference on random shapes (including odd block counts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/quant.h"
#include "engine/quant_blocks.h"
#include "tests/util/test_util.h"

static const char *const simd_isas[] = {"avx2", "avx512", "neon"};

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void fill_uniform(float *x, int64_t n, uint64_t *rng, float scale)
{
    for (int64_t i = 0; i < n; i++) x[i] = scale * test_rand_uniform(rng);
}

/* Row-like data: mostly small values with an occasional outlier, as in real weights. */
static void fill_weights(float *x, int64_t n, uint64_t *rng)
{
    for (int64_t i = 0; i < n; i++) {
        float u = test_rand_uniform(rng);
        float g = test_rand_uniform(rng) + test_rand_uniform(rng) + test_rand_uniform(rng);
        x[i] = (test_rand_u64(rng) % 61 == 0) ? 4.0f * u : 0.5f * g;
    }
}

/* ---- table --------------------------------------------------------------------------- */

static void test_quant_table_geometry_and_names(void **state)
{
    (void)state;
    quant_init();
    struct {
        int t;
        const char *name;
        int block_len;
        size_t block_bytes;
        int vdt;
    } want[] = {
        {QT_F32, "F32", 1, 4, QT_F32},       {QT_F16, "F16", 1, 2, QT_F16},
        {QT_BF16, "BF16", 1, 2, QT_BF16},    {QT_Q4_0, "Q4_0", 32, 18, QT_Q8_0},
        {QT_Q4_1, "Q4_1", 32, 20, QT_Q8_1},  {QT_Q5_0, "Q5_0", 32, 22, QT_Q8_0},
        {QT_Q5_1, "Q5_1", 32, 24, QT_Q8_1},  {QT_Q8_0, "Q8_0", 32, 34, QT_Q8_0},
        {QT_Q2_K, "Q2_K", 256, 84, QT_Q8_K}, {QT_Q3_K, "Q3_K", 256, 110, QT_Q8_K},
        {QT_Q4_K, "Q4_K", 256, 144, QT_Q8_K}, {QT_Q5_K, "Q5_K", 256, 176, QT_Q8_K},
        {QT_Q6_K, "Q6_K", 256, 210, QT_Q8_K}, {QT_Q8_K, "Q8_K", 256, 292, QT_Q8_K},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct quant_traits *tr = quant_traits(want[i].t);
        assert_non_null(tr);
        assert_string_equal(tr->name, want[i].name);
        assert_int_equal(tr->block_len, want[i].block_len);
        assert_int_equal(tr->block_bytes, want[i].block_bytes);
        assert_int_equal(tr->vec_dot_type, want[i].vdt);
        assert_int_equal(quant_type_from_name(want[i].name), want[i].t);
        assert_non_null(quant_traits_ref(want[i].t)->to_float);
    }
    assert_int_equal(quant_type_from_name("q4_k"), QT_Q4_K);
    assert_int_equal(quant_type_from_name("IQ2_XXS"), -1);
    assert_int_equal(quant_type_from_name(""), -1);
    assert_null(quant_traits(-1));
    assert_null(quant_traits(16)); /* IQ2_XXS: unknown to us */
    assert_null(quant_traits(QT_COUNT));
    assert_null(quant_traits_ref(1000));
    assert_int_equal(quant_row_bytes(QT_Q4_K, 4096), 16 * 144);
    assert_int_equal(quant_row_bytes(QT_Q8_0, 64), 68);
    assert_int_equal(quant_row_bytes(QT_F16, 3), 6);
    assert_int_equal(quant_row_bytes(QT_Q4_0, 33), 0);
    assert_int_equal(quant_row_bytes(QT_Q6_K, -256), 0);
    assert_int_equal(quant_row_bytes(99, 32), 0);
    assert_int_equal(quant_row_bytes(QT_F32, INT64_MAX), 0); /* overflow */
    assert_true(quant_isa_supported("scalar"));
    assert_false(quant_isa_supported("sse9"));
    assert_null(quant_traits_isa("sse9", QT_F32));
    const char *isa = quant_isa_name();
    assert_true(quant_isa_supported(isa));
}

/* ---- half and bfloat16 ---------------------------------------------------------------- */

static void test_quant_f16_rounds_to_nearest_even(void **state)
{
    (void)state;
    struct {
        uint32_t f;
        uint16_t h;
    } cases[] = {
        {0x3f800000, 0x3c00}, /* 1 */
        {0xbf800000, 0xbc00}, /* -1 */
        {0x00000000, 0x0000}, {0x80000000, 0x8000},
        {0x3f801000, 0x3c00}, /* 1 + 2^-11: tie, to even (down) */
        {0x3f803000, 0x3c02}, /* 1 + 3*2^-11: tie, to even (up) */
        {0x3f801001, 0x3c01}, /* just above the tie */
        {0x477fe000, 0x7bff}, /* 65504, largest half */
        {0x477fefff, 0x7bff}, /* below the overflow tie */
        {0x477ff000, 0x7c00}, /* 65520: tie with 65536 -> inf */
        {0x7f800000, 0x7c00}, {0xff800000, 0xfc00},
        {0x33800000, 0x0001}, /* 2^-24, smallest subnormal */
        {0x33000000, 0x0000}, /* 2^-25: tie, to even (0) */
        {0x33000001, 0x0001}, /* just above */
        {0x33c00000, 0x0002}, /* 1.5 * 2^-24: tie, to even (2) */
        {0x34200000, 0x0002}, /* 2.5 * 2^-24: tie, to even (2) */
        {0x387fc000, 0x03ff}, /* largest subnormal */
        {0x387fe000, 0x0400}, /* rounds up into the smallest normal */
        {0x38800000, 0x0400}, /* 2^-14 */
        {0x00000001, 0x0000}, /* float subnormal */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = quant_f32_to_f16(bits_f32(cases[i].f));
        if (h != cases[i].h) fail_msg("f32 %08x -> %04x, want %04x", cases[i].f, h, cases[i].h);
    }
    uint16_t qn = quant_f32_to_f16(bits_f32(0x7fc00000));
    assert_int_equal(qn & 0x7c00, 0x7c00);
    assert_true(qn & 0x3ff);
    assert_true(isnan(quant_f16_to_f32(qn)));
    /* every non-nan half survives the round trip and converts exactly */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            assert_true(isnan(quant_f16_to_f32((uint16_t)h)));
            continue;
        }
        float f = quant_f16_to_f32((uint16_t)h);
        assert_int_equal(quant_f32_to_f16(f), h);
    }
    assert_true(quant_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(quant_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(quant_f16_to_f32(0xc000) == -2.0f);
}

static void test_quant_bf16_rounds_to_nearest_even(void **state)
{
    (void)state;
    struct {
        uint32_t f;
        uint16_t h;
    } cases[] = {
        {0x3f800000, 0x3f80}, {0x3f808000, 0x3f80}, /* tie, to even (down) */
        {0x3f818000, 0x3f82},                       /* tie, to even (up) */
        {0x3f808001, 0x3f81}, {0x00010000, 0x0001}, /* subnormal kept, not flushed */
        {0x00008000, 0x0000},                       /* tie at the bottom */
        {0x7f7fffff, 0x7f80},                       /* rounds to inf */
        {0xff800000, 0xff80}, {0x7fc00000, 0x7fc0},
        {0x7f800001, 0x7fc0}, /* signalling nan is quieted, not rounded to inf */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = quant_f32_to_bf16(bits_f32(cases[i].f));
        if (h != cases[i].h) fail_msg("f32 %08x -> bf16 %04x, want %04x", cases[i].f, h, cases[i].h);
    }
    assert_int_equal(f32_bits(quant_bf16_to_f32(0x3f81)), 0x3f810000);
}

/* Every path's bulk conversions equal the scalar ones bit for bit (F16C rounds to
 * nearest even too), on random bit patterns, including tails shorter than a vector. */
static void test_quant_f16_rows_match_scalar_on_every_path(void **state)
{
    (void)state;
    uint64_t rng = 7;
    enum { N = 4099 };
    float *src = malloc(N * sizeof(float)), *a = malloc(N * sizeof(float));
    float *b = malloc(N * sizeof(float));
    uint16_t *h = malloc(N * 2), *ha = malloc(N * 2), *hb = malloc(N * 2);
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)test_rand_u64(&rng);
        /* mostly in or near half range, some anywhere */
        if (i % 4) u = (u & 0x80000000) | (0x30000000 + (u % 0x18000000));
        src[i] = bits_f32(u);
        if (isnan(src[i])) src[i] = 0.0f;
        h[i] = (uint16_t)test_rand_u64(&rng);
        if ((h[i] & 0x7c00) == 0x7c00) h[i] &= 0xfc00; /* no nan payloads */
    }
    const struct quant_traits *ref = quant_traits_ref(QT_F16);
    for (size_t k = 0; k < sizeof simd_isas / sizeof simd_isas[0]; k++) {
        const struct quant_traits *tr = quant_traits_isa(simd_isas[k], QT_F16);
        if (!tr) continue;
        for (int n = 0; n < 40; n++) {
            int len = n < 20 ? n : N - (n - 20) * 7;
            tr->from_float(src, ha, len);
            ref->from_float(src, hb, len);
            assert_memory_equal(ha, hb, (size_t)len * 2);
            tr->to_float(h, a, len);
            ref->to_float(h, b, len);
            assert_memory_equal(a, b, (size_t)len * 4);
        }
    }
    quant_f32_to_f16_row(src, ha, N);
    quant_f16_to_f32_row(ha, a, N);
    for (int i = 0; i < N; i++) assert_int_equal(ha[i], quant_f32_to_f16(src[i]));
    free(src), free(a), free(b), free(h), free(ha), free(hb);
}

/* ---- known blocks ---------------------------------------------------------------------- */

static void test_quant_known_blocks_dequantize(void **state)
{
    (void)state;
    float y[QK_K];

    struct block_q4_0 b40;
    memset(&b40, 0x88, sizeof b40); /* all nibbles 8 -> 0 */
    b40.d = 0x3c00;                 /* 1.0 */
    b40.qs[0] = 0x9F;               /* elem 0 = 15-8 = 7, elem 16 = 9-8 = 1 */
    b40.qs[15] = 0x08 | 0x00;       /* elem 15 = 0, elem 31 = 0-8 = -8 */
    quant_traits_ref(QT_Q4_0)->to_float(&b40, y, 32);
    assert_true(y[0] == 7.0f && y[16] == 1.0f && y[15] == 0.0f && y[31] == -8.0f && y[5] == 0.0f);

    struct block_q5_0 b50;
    memset(&b50, 0, sizeof b50);
    b50.d = 0x3800; /* 0.5 */
    b50.qs[1] = 0x3F; /* elem 1 lo = 15, elem 17 lo = 3 */
    b50.qh[0] = 0x02; /* bit 1: elem 1 high bit -> 31 */
    b50.qh[2] = 0x02; /* bit 17: elem 17 high bit -> 19 */
    quant_traits_ref(QT_Q5_0)->to_float(&b50, y, 32);
    assert_true(y[1] == 0.5f * 15 && y[17] == 0.5f * 3 && y[0] == -8.0f);

    struct block_q4_1 b41;
    memset(&b41, 0, sizeof b41);
    b41.d = 0x3c00; /* 1.0 */
    b41.m = 0xc000; /* -2.0 */
    b41.qs[0] = 0x3F; /* elem 0 = 15 - 2, elem 16 = 3 - 2 */
    quant_traits_ref(QT_Q4_1)->to_float(&b41, y, 32);
    assert_true(y[0] == 13.0f && y[16] == 1.0f && y[1] == -2.0f);

    struct block_q8_0 b80;
    memset(&b80, 0, sizeof b80);
    b80.d = 0x4000; /* 2.0 */
    b80.qs[3] = -127;
    b80.qs[31] = 5;
    quant_traits_ref(QT_Q8_0)->to_float(&b80, y, 32);
    assert_true(y[3] == -254.0f && y[31] == 10.0f && y[0] == 0.0f);

    /* Q4_K: d = 1, dmin = 0.5; sub-block 0: sc 2, m 3; sub-block 5: sc 33, m 40 */
    struct block_q4_K b4k;
    memset(&b4k, 0, sizeof b4k);
    b4k.d = 0x3c00;
    b4k.dmin = 0x3800;
    b4k.scales[0] = 2;
    b4k.scales[4] = 3;
    /* j = 5: sc = (scales[9] & 15) | (scales[1] >> 6) << 4 = 1 | 2<<4 = 33;
     *        m  = (scales[9] >> 4) | (scales[5] >> 6) << 4 = 8 | 2<<4 = 40 */
    b4k.scales[9] = 0x81;
    b4k.scales[1] = 0x80;
    b4k.scales[5] = 0x80;
    b4k.qs[0] = 0x07;       /* elem 0: q 7 (sub-block 0); elem 32: q 0 (sub-block 1) */
    b4k.qs[64 + 3] = 0xA0;  /* elem 128+32+3 = 163 in sub-block 5: q 10 */
    quant_traits_ref(QT_Q4_K)->to_float(&b4k, y, QK_K);
    assert_true(y[0] == 2.0f * 7 - 0.5f * 3);
    assert_true(y[1] == -1.5f);
    assert_true(y[163] == 33.0f * 10 - 0.5f * 40);
    assert_true(y[160] == -20.0f);

    /* Q6_K: d = 0.5; element 0 q = 1 | 2<<4 = 33 -> 1, scale 3; element 64 q = 2 -> -30,
     * scale index 4; element 128+32+5 lives in the second half: ql[64+32+5] lo nibble,
     * qh[32+5] bits 2-3, scale index 8+2 */
    struct block_q6_K b6k;
    memset(&b6k, 0, sizeof b6k);
    b6k.d = 0x3800;
    b6k.scales[0] = 3;
    b6k.scales[4] = 1;
    b6k.scales[10] = -2;
    b6k.ql[0] = 0x21;
    b6k.qh[0] = 0x02;
    b6k.ql[64 + 32 + 5] = 0x0F;
    b6k.qh[32 + 5] = 0x0C;
    quant_traits_ref(QT_Q6_K)->to_float(&b6k, y, QK_K);
    assert_true(y[0] == 0.5f * 3 * 1);
    assert_true(y[64] == 0.5f * 1 * -30);
    assert_true(y[128 + 32 + 5] == 0.5f * -2 * (63 - 32));
    assert_true(y[1] == 0.5f * 3 * -32);
}

static void test_quant_known_values_quantize(void **state)
{
    (void)state;
    float x[QK_K];
    memset(x, 0, sizeof x);
    /* Q8_0: amax 127 -> d = 1; -63.5 rounds half away from zero (roundf) to -64 */
    x[0] = 127.0f;
    x[1] = -63.5f;
    x[2] = 0.49f;
    struct block_q8_0 b8;
    quant_traits_ref(QT_Q8_0)->from_float(x, &b8, 32);
    assert_int_equal(b8.d, 0x3c00);
    assert_int_equal(b8.qs[0], 127);
    assert_int_equal(b8.qs[1], -64);
    assert_int_equal(b8.qs[2], 0);

    /* Q8_1: as Q8_0, plus s = d * sum(q) = 127 - 64 + 0 as a half */
    struct block_q8_1 b81;
    quant_traits_ref(QT_Q8_1)->from_float(x, &b81, 32);
    assert_int_equal(b81.d, 0x3c00);
    assert_int_equal(b81.qs[1], -64);
    assert_true(quant_f16_to_f32(b81.s) == 63.0f);

    /* Q4_0: max by magnitude -8 -> d = 1, the extreme maps to nibble 0 */
    memset(x, 0, 32 * sizeof(float));
    x[0] = -8.0f;
    x[16] = 7.0f;
    x[1] = 2.4f;
    struct block_q4_0 b4;
    quant_traits_ref(QT_Q4_0)->from_float(x, &b4, 32);
    assert_int_equal(b4.d, 0x3c00);
    assert_int_equal(b4.qs[0], 0x0 | (0xF << 4));
    assert_int_equal(b4.qs[1], 10 | (8 << 4)); /* 2.4 + 8.5 truncates to 10 */

    /* Q8_K: max by magnitude -2 -> iscale 63.5, d = 1/63.5; 1 -> 63.5 rounds to even 64;
     * bsums are per-16 sums */
    memset(x, 0, sizeof x);
    x[0] = -2.0f;
    x[1] = 1.0f;
    x[17] = 0.5f;
    struct block_q8_K bk;
    quant_traits_ref(QT_Q8_K)->from_float(x, &bk, QK_K);
    assert_true(bk.d == 1 / 63.5f);
    assert_int_equal(bk.qs[0], -127);
    assert_int_equal(bk.qs[1], 64);
    assert_int_equal(bk.qs[17], 32);
    assert_int_equal(bk.bsums[0], -63);
    assert_int_equal(bk.bsums[1], 32);
    assert_int_equal(bk.bsums[2], 0);

    /* all-zero input gives all-zero blocks for every writable type */
    memset(x, 0, sizeof x);
    for (int t = 0; t < QT_COUNT; t++) {
        const struct quant_traits *tr = quant_traits_ref(t);
        if (!tr || !tr->from_float || !tr->is_quantized) continue;
        unsigned char blk[512];
        memset(blk, 0xAB, sizeof blk);
        float back[QK_K];
        tr->from_float(x, blk, tr->block_len);
        tr->to_float(blk, back, tr->block_len);
        for (int i = 0; i < tr->block_len; i++)
            if (back[i] != 0.0f) fail_msg("%s: zero block dequantizes to %g", tr->name, back[i]);
    }
}

/* ---- quantize -> dequantize error --------------------------------------------------- */

/* Q8_0: every element within half a step of its value, where the step is the block's
 * exact d; plus the error of storing d as a half (|q| <= 127 times |d - d_half|). */
static void test_quant_q8_0_error_within_half_step(void **state)
{
    (void)state;
    uint64_t rng = 11;
    enum { N = 32 * 64 };
    float x[N], y[N];
    struct block_q8_0 b[N / 32];
    fill_weights(x, N, &rng);
    quant_traits_ref(QT_Q8_0)->from_float(x, b, N);
    quant_traits_ref(QT_Q8_0)->to_float(b, y, N);
    for (int ib = 0; ib < N / 32; ib++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[ib * 32 + j]));
        float d = amax / 127, dh = quant_f16_to_f32(b[ib].d);
        float bound = 0.5f * d + 127 * fabsf(d - dh) + 1e-6f * amax;
        for (int j = 0; j < 32; j++) assert_true(fabsf(x[ib * 32 + j] - y[ib * 32 + j]) <= bound);
    }
}

/* RMS error relative to the data's RMS, on uniform [-1, 1) data. A uniform quantizer
 * with step s has RMS error s/sqrt(12); the bounds are that with the step each format
 * gives such data, plus a 30% margin (block extremes, scale rounding):
 *   Q4_0 s = amax/8, Q5_0 amax/16, Q8_0 amax/127, Q4_1 range/15, Q5_1 range/31;
 *   Q4_K range/15 of 32, Q5_K range/31 (with the scale search, less), Q6_K amax/32. */
static void test_quant_roundtrip_rms_error_within_format_bound(void **state)
{
    (void)state;
    struct {
        int t;
        float step; /* relative to the data's amax (1) */
    } cases[] = {
        {QT_Q4_0, 1.0f / 8},  {QT_Q4_1, 2.0f / 15}, {QT_Q5_0, 1.0f / 16},
        {QT_Q5_1, 2.0f / 31}, {QT_Q8_0, 1.0f / 127}, {QT_Q4_K, 2.0f / 15},
        {QT_Q5_K, 2.0f / 31}, {QT_Q6_K, 1.0f / 32}, {QT_Q8_K, 1.0f / 127},
    };
    enum { N = QK_K * 32 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    void *q = malloc(N * 2);
    uint64_t rng = 5;
    fill_uniform(x, N, &rng, 1.0f);
    double sx = 0;
    for (int i = 0; i < N; i++) sx += (double)x[i] * x[i];
    const double rms_x = sqrt(sx / N);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const struct quant_traits *tr = quant_traits_ref(cases[c].t);
        tr->from_float(x, q, N);
        tr->to_float(q, y, N);
        double se = 0;
        for (int i = 0; i < N; i++) se += (double)(x[i] - y[i]) * (x[i] - y[i]);
        double rel = sqrt(se / N) / rms_x;
        double bound = 1.3 * cases[c].step / sqrt(12.0) / rms_x;
        if (!(rel <= bound)) fail_msg("%s: relative rms error %.5f > %.5f", tr->name, rel, bound);
        /* and not absurdly good either: the data really went through the format */
        assert_true(rel > 0.1 * bound);
    }
    free(x), free(y), free(q);
}

/* ---- K-quant reference quantizers ----------------------------------------------------- */

/* Data that is exactly representable in Q4_K (every sub-block spans levels 0..15, the
 * largest scale and min are 63) must come back as the same bytes: the scale search
 * finds the exact fit (zero error) and the 6-bit scales reproduce. */
static void test_quant_q4_K_requantizes_its_own_output(void **state)
{
    (void)state;
    uint64_t rng = 21;
    for (int rep = 0; rep < 50; rep++) {
        struct block_q4_K b, b2;
        b.d = quant_f32_to_f16(0.001f + 0.01f * (1 + test_rand_uniform(&rng)));
        b.dmin = quant_f32_to_f16(0.001f + 0.01f * (1 + test_rand_uniform(&rng)));
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = (uint8_t)(1 + test_rand_u64(&rng) % 63);
            m[j] = (uint8_t)(test_rand_u64(&rng) % 64);
        }
        sc[test_rand_u64(&rng) % 8] = 63;
        m[test_rand_u64(&rng) % 8] = 63;
        memset(b.scales, 0, sizeof b.scales);
        for (int j = 0; j < 8; j++) {
            if (j < 4) {
                b.scales[j] = sc[j];
                b.scales[j + 4] = m[j];
            } else {
                b.scales[j + 4] = (uint8_t)((sc[j] & 0xF) | ((m[j] & 0xF) << 4));
                b.scales[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
                b.scales[j] |= (uint8_t)((m[j] >> 4) << 6);
            }
        }
        uint8_t L[QK_K];
        for (int i = 0; i < QK_K; i++) L[i] = (uint8_t)(test_rand_u64(&rng) % 16);
        for (int j = 0; j < 8; j++) {
            L[32 * j + test_rand_u64(&rng) % 16] = 0;
            L[32 * j + 16 + test_rand_u64(&rng) % 16] = 15;
        }
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b.qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
        float x[QK_K];
        quant_traits_ref(QT_Q4_K)->to_float(&b, x, QK_K);
        quant_traits_ref(QT_Q4_K)->from_float(x, &b2, QK_K);
        float x2[QK_K];
        quant_traits_ref(QT_Q4_K)->to_float(&b2, x2, QK_K);
        for (int i = 0; i < QK_K; i++)
            if (x[i] != x2[i]) fail_msg("rep %d elem %d: %g -> %g", rep, i, x[i], x2[i]);
    }
}

/* Same for Q6_K: one sub-block's scale is -128 (the reference maps the largest
 * |scale| to -128), every sub-block reaches level -32 (its largest magnitude). */
static void test_quant_q6_K_requantizes_its_own_output(void **state)
{
    (void)state;
    uint64_t rng = 23;
    for (int rep = 0; rep < 50; rep++) {
        struct block_q6_K b, b2;
        float d = 0.0005f * (1.5f + test_rand_uniform(&rng));
        if (rep & 1) d = -d;
        b.d = quant_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int s = (int)(test_rand_u64(&rng) % 255) - 127;
            b.scales[j] = (int8_t)(s == 0 ? 1 : s);
        }
        b.scales[test_rand_u64(&rng) % 16] = -128;
        int8_t L[QK_K];
        for (int i = 0; i < QK_K; i++) L[i] = (int8_t)(test_rand_u64(&rng) % 64);
        for (int j = 0; j < 16; j++) L[16 * j + test_rand_u64(&rng) % 16] = 0;
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const int8_t *Lh = L + 128 * h;
                b.ql[64 * h + l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
                b.ql[64 * h + l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
                b.qh[32 * h + l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                             ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
            }
        float x[QK_K];
        quant_traits_ref(QT_Q6_K)->to_float(&b, x, QK_K);
        quant_traits_ref(QT_Q6_K)->from_float(x, &b2, QK_K);
        if (memcmp(&b, &b2, sizeof b) != 0) {
            float x2[QK_K];
            quant_traits_ref(QT_Q6_K)->to_float(&b2, x2, QK_K);
            for (int i = 0; i < QK_K; i++)
                if (x[i] != x2[i]) fail_msg("rep %d elem %d: %g -> %g", rep, i, x[i], x2[i]);
        }
    }
}

/* ---- against llama.cpp's own output ------------------------------------------------------ */

/* The shared models include llama-quantize's outputs of stories260K.gguf (SOURCES.md):
 * F16, BF16, and Q8_0/Q5_0 tensors (K-quant requests fell back on its 64-wide rows).
 * Quantizing the F32 tensors ourselves, with the reference and with every SIMD path,
 * must give exactly the bytes llama.cpp wrote. */
static void test_quant_matches_llama_cpp_quantize_bytes(void **state)
{
    (void)state;
    const char *variants[] = {"stories260K-F16.gguf", "stories260K-BF16.gguf",
                              "stories260K-Q6_K.gguf", "stories260K-Q4_K_M.gguf"};
    const char *isas[] = {"scalar", "avx2", "avx512", "neon"};
    char err[256];
    struct gguf *base = NULL;
    if (gguf_open(test_model_path("stories260K.gguf"), &base, err, sizeof err) != 0) {
        print_message("skipped: %s\n", err);
        skip();
    }
    int n_compared[QT_COUNT] = {0};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        struct gguf *g = NULL;
        assert_int_equal(gguf_open(test_model_path(variants[v]), &g, err, sizeof err), 0);
        for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
            const struct gguf_tensor *t = gguf_tensor_at(g, i);
            if (t->type == QT_F32) continue;
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
            const struct gguf_tensor *src = gguf_find_tensor(base, name);
            assert_non_null(src);
            assert_int_equal(src->type, QT_F32);
            assert_int_equal(src->n_elems, t->n_elems);
            float *f = malloc((size_t)src->n_elems * sizeof(float));
            memcpy(f, src->data, (size_t)src->n_elems * sizeof(float));
            unsigned char *q = malloc(t->size);
            for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
                const struct quant_traits *tr = quant_traits_isa(isas[k], t->type);
                if (!tr) continue;
                assert_non_null(tr->from_float);
                assert_int_equal(quant_row_bytes(t->type, t->n_elems), t->size);
                memset(q, 0xA5, t->size);
                tr->from_float(f, q, t->n_elems);
                if (memcmp(q, t->data, t->size) != 0)
                    fail_msg("%s %s %s (%s): bytes differ from llama.cpp's", variants[v], name,
                             tr->name, isas[k]);
            }
            n_compared[t->type]++;
            free(f);
            free(q);
        }
        gguf_close(g);
    }
    gguf_close(base);
    /* the files hold these types (SOURCES.md): all four were really compared */
    assert_true(n_compared[QT_F16] > 0 && n_compared[QT_BF16] > 0);
    assert_true(n_compared[QT_Q8_0] > 0 && n_compared[QT_Q5_0] > 0);
}

/* Q2_K / Q3_K (read and multiply, never written): hand-built elements, and on random
 * blocks the dot product equals the dot product of the dequantized rows. */
static void test_quant_q2_K_q3_K_read_and_dot(void **state)
{
    (void)state;
    float y[QK_K];
    struct block_q2_K b2;
    memset(&b2, 0, sizeof b2);
    b2.d = 0x3c00;      /* 1 */
    b2.dmin = 0x3800;   /* 0.5 */
    b2.scales[0] = 0x32; /* sub-block 0: scale 2, min 3 */
    b2.scales[2] = 0x01; /* sub-block 2 (elements 32-47): scale 1, min 0 */
    b2.qs[0] = 0x04;    /* element 0: bits 0-1 = 0; element 32: bits 2-3 = 1 */
    quant_traits_ref(QT_Q2_K)->to_float(&b2, y, QK_K);
    assert_true(y[0] == -1.5f && y[32] == 1.0f && y[1] == -1.5f);

    struct block_q3_K b3;
    memset(&b3, 0, sizeof b3);
    b3.d = 0x3c00;
    b3.scales[0] = 0x21; /* scale 0 low 4 bits 1, scale 8 low 4 bits 2 */
    b3.scales[8] = 0x12; /* scale 0 high bits 2 -> 33 - 32 = 1; scale 8 high bits 1 -> 18 - 32 */
    b3.qs[0] = 0x03;     /* element 0: 3 */
    b3.hmask[0] = 0x01;  /* element 0 keeps its value; element 1 (hmask[1] clear) gets -4 */
    b3.qs[32] = 0x02;    /* element 128: 2, hmask bit 4 clear -> -2, scale 8 */
    quant_traits_ref(QT_Q3_K)->to_float(&b3, y, QK_K);
    assert_true(y[0] == 3.0f && y[1] == -4.0f && y[128] == -14.0f * -2.0f);

    uint64_t rng = 77;
    enum { NB = 5, N = NB * QK_K };
    static unsigned char qx[NB * 110], qy[NB * sizeof(struct block_q8_K)];
    static float xd[N], act[N], yd[N];
    fill_uniform(act, N, &rng, 2.0f);
    quant_traits_ref(QT_Q8_K)->from_float(act, qy, N);
    quant_traits_ref(QT_Q8_K)->to_float(qy, yd, N);
    const int types[] = {QT_Q2_K, QT_Q3_K};
    for (int ti = 0; ti < 2; ti++) {
        const struct quant_traits *tr = quant_traits_ref(types[ti]);
        for (size_t i = 0; i < sizeof qx; i++) qx[i] = (unsigned char)test_rand_u64(&rng);
        for (int ib = 0; ib < NB; ib++) { /* sane half scales: d and dmin sit last */
            unsigned char *blk = qx + ib * tr->block_bytes;
            uint16_t d = quant_f32_to_f16(0.01f * (1.5f + test_rand_uniform(&rng)));
            memcpy(blk + tr->block_bytes - 2, &d, 2);
            if (types[ti] == QT_Q2_K) memcpy(blk + tr->block_bytes - 4, &d, 2);
        }
        tr->to_float(qx, xd, N);
        double want = 0, sum_abs = 0;
        for (int i = 0; i < N; i++) {
            want += (double)xd[i] * yd[i];
            sum_abs += fabs((double)xd[i] * yd[i]);
        }
        float got;
        tr->vec_dot(N, &got, qx, qy);
        if (!(fabs(got - want) <= 1e-5 * sum_abs)) fail_msg("%s: %.9g vs %.9g", tr->name, got, want);
        for (size_t k = 0; k < sizeof simd_isas / sizeof simd_isas[0]; k++) {
            const struct quant_traits *st = quant_traits_isa(simd_isas[k], types[ti]);
            if (!st) continue;
            float g2;
            st->vec_dot(N, &g2, qx, qy);
            assert_true(fabs(g2 - got) <= 4.0 * N * FLT_EPSILON * sum_abs);
        }
    }
}

/* ---- SIMD against the scalar reference ------------------------------------------------ */

/* Block counts: one, odd, a multiple of the kernels' unroll, and ragged tails of it. */
static const int n_blocks_list[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 64, 65, 127};

static int64_t max_block_len(int t)
{
    return quant_traits_ref(t)->block_len;
}

/* Dot products: per block both paths compute the same exact integer sum; only the float
 * accumulation across blocks (order, FMA contraction, 8/16-lane partial sums) differs.
 * Each of at most n additions errs by 2^-24 of the running magnitude, so the paths
 * differ by at most about n * 2^-24 * sum|x_i y_i|: tolerance 4 n FLT_EPSILON sum|x_i y_i|. */
static void check_vec_dot_type(int t, uint64_t *rng)
{
    const struct quant_traits *ref = quant_traits_ref(t);
    const struct quant_traits *yref = quant_traits_ref(ref->vec_dot_type);
    for (size_t ni = 0; ni < sizeof n_blocks_list / sizeof n_blocks_list[0]; ni++) {
        int64_t bl = max_block_len(t) > 1 ? max_block_len(t) : 32;
        int n = (int)(n_blocks_list[ni] * bl);
        if (max_block_len(t) == 1) n += (int)(ni % 7); /* F16/BF16/F32: any length */
        float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
        float *xd = malloc((size_t)n * sizeof(float)), *yd = malloc((size_t)n * sizeof(float));
        void *qx = malloc(quant_row_bytes(t, n) + 1), *qy = malloc(quant_row_bytes(ref->vec_dot_type, n) + 1);
        fill_weights(x, n, rng);
        fill_uniform(y, n, rng, 3.0f);
        ref->from_float(x, qx, n);
        yref->from_float(y, qy, n);
        ref->to_float(qx, xd, n);
        yref->to_float(qy, yd, n);
        double sum_abs = 0;
        for (int i = 0; i < n; i++) sum_abs += fabs((double)xd[i] * yd[i]);
        float want;
        ref->vec_dot(n, &want, qx, qy);
        for (size_t k = 0; k < sizeof simd_isas / sizeof simd_isas[0]; k++) {
            const struct quant_traits *tr = quant_traits_isa(simd_isas[k], t);
            if (!tr || !tr->vec_dot) continue;
            float got = -1;
            tr->vec_dot(n, &got, qx, qy);
            double tol = 4.0 * n * FLT_EPSILON * sum_abs + 1e-30;
            if (!(fabs((double)got - want) <= tol))
                fail_msg("%s %s n=%d: %.9g vs scalar %.9g (tol %.3g)", simd_isas[k], ref->name, n,
                         got, want, tol);
        }
        free(x), free(y), free(xd), free(yd), free(qx), free(qy);
    }
}

static void test_quant_simd_vec_dot_matches_scalar(void **state)
{
    (void)state;
    uint64_t rng = 99;
    const int types[] = {QT_F32, QT_F16, QT_BF16, QT_Q4_0, QT_Q4_1, QT_Q5_0, QT_Q5_1,
                         QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) check_vec_dot_type(types[i], &rng);
}

/* Multi-row dot products (quant_vec_dot_rows) of every path equal per-row reference
 * vec_dot calls for 1..11 rows (every remainder of the kernels' 2- and 4-row groups), row
 * strides larger than the row, and ragged block counts; same tolerance as above. */
static void test_quant_vec_dot_rows_match_scalar(void **state)
{
    (void)state;
    uint64_t rng = 41;
    const int types[] = {QT_F32, QT_F16, QT_BF16, QT_Q4_0, QT_Q4_1, QT_Q5_0, QT_Q5_1,
                         QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    const char *isas[] = {"scalar", "avx2", "avx512", "neon"};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const struct quant_traits *ref = quant_traits_ref(types[ti]);
        const struct quant_traits *yref = quant_traits_ref(ref->vec_dot_type);
        const int bl = ref->block_len > 1 ? ref->block_len : 32;
        for (int nbk = 1; nbk <= 9; nbk += 4) {
            const int n = nbk * bl, max_rows = 11;
            const size_t row_bytes = quant_row_bytes(types[ti], n), bx = row_bytes + 64;
            float *x = malloc((size_t)n * max_rows * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
            float *xd = malloc((size_t)n * sizeof(float)), *yd = malloc((size_t)n * sizeof(float));
            unsigned char *qx = calloc(max_rows, bx), *qy = malloc(quant_row_bytes(ref->vec_dot_type, n));
            fill_weights(x, (int64_t)n * max_rows, &rng);
            fill_uniform(y, n, &rng, 2.0f);
            yref->from_float(y, qy, n);
            yref->to_float(qy, yd, n);
            float want[11], tol[11];
            for (int r = 0; r < max_rows; r++) {
                ref->from_float(x + (size_t)r * n, qx + r * bx, n);
                ref->vec_dot(n, &want[r], qx + r * bx, qy);
                ref->to_float(qx + r * bx, xd, n);
                double sum_abs = 0;
                for (int i = 0; i < n; i++) sum_abs += fabs((double)xd[i] * yd[i]);
                tol[r] = (float)(4.0 * n * FLT_EPSILON * sum_abs + 1e-30);
            }
            for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
                const struct quant_traits *tr = quant_traits_isa(isas[k], types[ti]);
                if (!tr) continue;
                for (int nr = 1; nr <= max_rows; nr++) {
                    float got[11];
                    for (int r = 0; r < 11; r++) got[r] = NAN;
                    quant_vec_dot_rows(tr, n, got, qx, bx, qy, nr);
                    for (int r = 0; r < nr; r++)
                        if (!(fabsf(got[r] - want[r]) <= tol[r]))
                            fail_msg("%s %s n=%d nr=%d row %d: %.9g vs %.9g", isas[k], ref->name, n,
                                     nr, r, got[r], want[r]);
                    for (int r = nr; r < 11; r++) assert_true(isnan(got[r])); /* no overrun */
                }
            }
            free(x), free(y), free(xd), free(yd), free(qx), free(qy);
        }
    }
}

/* Tile products (quant_gemm) of every path equal per-(row, column) reference vec_dot for
 * 1..9 rows and 1..9 columns (every remainder of the 4 x 4 tiles), a padded output
 * stride, and ragged block counts; same tolerance as above. */
static void test_quant_gemm_matches_scalar(void **state)
{
    (void)state;
    uint64_t rng = 43;
    const int types[] = {QT_F16, QT_Q4_0, QT_Q5_0, QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    const char *isas[] = {"scalar", "avx2", "avx512", "neon"};
    enum { MAXR = 9, MAXC = 9 };
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const struct quant_traits *ref = quant_traits_ref(types[ti]);
        const struct quant_traits *yref = quant_traits_ref(ref->vec_dot_type);
        const int bl = ref->block_len > 1 ? ref->block_len : 32;
        const int n = (ref->block_len > 1 ? 3 : 5) * bl;
        const size_t bx = quant_row_bytes(types[ti], n) + 16;
        const size_t by = quant_row_bytes(ref->vec_dot_type, n) + 8;
        float *f = malloc((size_t)n * sizeof(float)), *xd = malloc((size_t)n * sizeof(float));
        float *yd = malloc((size_t)n * MAXC * sizeof(float));
        unsigned char *qx = calloc(MAXR, bx), *qy = calloc(MAXC, by);
        float want[MAXC][MAXR], tol[MAXC][MAXR];
        for (int c = 0; c < MAXC; c++) {
            fill_uniform(f, n, &rng, 2.0f);
            yref->from_float(f, qy + c * by, n);
            yref->to_float(qy + c * by, yd + (size_t)c * n, n);
        }
        for (int r = 0; r < MAXR; r++) {
            fill_weights(f, n, &rng);
            ref->from_float(f, qx + r * bx, n);
            ref->to_float(qx + r * bx, xd, n);
            for (int c = 0; c < MAXC; c++) {
                ref->vec_dot(n, &want[c][r], qx + r * bx, qy + c * by);
                double sum_abs = 0;
                for (int i = 0; i < n; i++) sum_abs += fabs((double)xd[i] * yd[(size_t)c * n + i]);
                tol[c][r] = (float)(4.0 * n * FLT_EPSILON * sum_abs + 1e-30);
            }
        }
        for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
            const struct quant_traits *tr = quant_traits_isa(isas[k], types[ti]);
            if (!tr) continue;
            for (int nr = 1; nr <= MAXR; nr++)
                for (int nc = 1; nc <= MAXC; nc++) {
                    const size_t lds = MAXR + 2;
                    float out[MAXC * (MAXR + 2)];
                    for (size_t i = 0; i < sizeof out / sizeof out[0]; i++) out[i] = NAN;
                    quant_gemm(tr, n, out, lds, qx, bx, nr, qy, by, nc);
                    for (int c = 0; c < MAXC; c++)
                        for (int r = 0; r < (int)lds; r++) {
                            float got = out[(size_t)c * lds + r];
                            if (c >= nc || r >= nr) {
                                assert_true(isnan(got)); /* nothing outside the tile */
                            } else if (!(fabsf(got - want[c][r]) <= tol[c][r])) {
                                fail_msg("%s %s nr=%d nc=%d (%d,%d): %.9g vs %.9g", isas[k],
                                         ref->name, nr, nc, r, c, got, want[c][r]);
                            }
                        }
                }
        }
        free(f), free(xd), free(yd), free(qx), free(qy);
    }
}

/* Scalar reference dot products equal the dot product of the dequantized rows (exact
 * integer sums, so only float rounding differs). */
static void test_quant_ref_vec_dot_equals_dequantized_dot(void **state)
{
    (void)state;
    uint64_t rng = 3;
    const int types[] = {QT_F32, QT_F16, QT_BF16, QT_Q4_0, QT_Q4_1, QT_Q5_0, QT_Q5_1,
                         QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    enum { N = QK_K * 6 };
    static float x[N], y[N], xd[N], yd[N];
    static unsigned char qx[N * 4], qy[N * 4];
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const struct quant_traits *tr = quant_traits_ref(types[i]);
        const struct quant_traits *yt = quant_traits_ref(tr->vec_dot_type);
        fill_weights(x, N, &rng);
        fill_uniform(y, N, &rng, 2.0f);
        tr->from_float(x, qx, N);
        yt->from_float(y, qy, N);
        tr->to_float(qx, xd, N);
        yt->to_float(qy, yd, N);
        double want = 0, sum_abs = 0;
        for (int j = 0; j < N; j++) {
            want += (double)xd[j] * yd[j];
            sum_abs += fabs((double)xd[j] * yd[j]);
        }
        float got;
        tr->vec_dot(N, &got, qx, qy);
        /* Q4_1/Q5_1 carry the offset through Q8_1's s = d * sum(q), stored as a half:
         * relative error 2^-11 of a term at most sum|x_i y_i| */
        const double rel = tr->vec_dot_type == QT_Q8_1 ? 5e-4 : 1e-5;
        if (!(fabs(got - want) <= rel * sum_abs))
            fail_msg("%s: %.9g vs %.9g", tr->name, got, want);
    }
}

/* Quantizers and dequantizers of every path are bit-identical to the reference ones
 * (so weights quantized through any path are the bytes llama.cpp's reference writes,
 * and activations do not depend on the path). */
static void test_quant_simd_convert_matches_scalar(void **state)
{
    (void)state;
    uint64_t rng = 17;
    enum { N = QK_K * 9 };
    float *x = malloc(N * sizeof(float)), *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
    unsigned char *qa = malloc(N * 4), *qb = malloc(N * 4);
    for (size_t k = 0; k < sizeof simd_isas / sizeof simd_isas[0]; k++) {
        for (int t = 0; t < QT_COUNT; t++) {
            const struct quant_traits *tr = quant_traits_isa(simd_isas[k], t);
            const struct quant_traits *ref = quant_traits_ref(t);
            if (!tr || !ref->from_float || !ref->to_float) continue;
            for (int rep = 0; rep < 3; rep++) {
                int n = rep == 0 ? N : (int)(ref->block_len * (1 + rep * 2));
                fill_weights(x, n, &rng);
                if (rep == 2) memset(x, 0, 64 * sizeof(float)); /* zero blocks */
                if (rep == 1) { /* d = 1 exactly: halves are ties, roundf goes away from 0 */
                    x[0] = 127.0f;
                    for (int j = 1; j < 32; j++) x[j] = (float)(j - 16) + 0.5f;
                }
                ref->from_float(x, qb, n);
                tr->to_float(qb, a, n);
                ref->to_float(qb, b, n);
                assert_memory_equal(a, b, (size_t)n * sizeof(float));
                tr->from_float(x, qa, n);
                if (memcmp(qa, qb, quant_row_bytes(t, n)) != 0)
                    fail_msg("%s %s n=%d: quantized bytes differ", simd_isas[k], ref->name, n);
            }
        }
    }
    free(x), free(a), free(b), free(qa), free(qb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quant_table_geometry_and_names),
        cmocka_unit_test(test_quant_f16_rounds_to_nearest_even),
        cmocka_unit_test(test_quant_bf16_rounds_to_nearest_even),
        cmocka_unit_test(test_quant_f16_rows_match_scalar_on_every_path),
        cmocka_unit_test(test_quant_known_blocks_dequantize),
        cmocka_unit_test(test_quant_known_values_quantize),
        cmocka_unit_test(test_quant_q8_0_error_within_half_step),
        cmocka_unit_test(test_quant_roundtrip_rms_error_within_format_bound),
        cmocka_unit_test(test_quant_q4_K_requantizes_its_own_output),
        cmocka_unit_test(test_quant_q6_K_requantizes_its_own_output),
        cmocka_unit_test(test_quant_matches_llama_cpp_quantize_bytes),
        cmocka_unit_test(test_quant_q2_K_q3_K_read_and_dot),
        cmocka_unit_test(test_quant_ref_vec_dot_equals_dequantized_dot),
        cmocka_unit_test(test_quant_simd_vec_dot_matches_scalar),
        cmocka_unit_test(test_quant_vec_dot_rows_match_scalar),
        cmocka_unit_test(test_quant_gemm_matches_scalar),
        cmocka_unit_test(test_quant_simd_convert_matches_scalar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
