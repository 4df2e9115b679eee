/* quant.c - the traits table of tensor types, kernel dispatch by CPU, and the IEEE
 * half / bfloat16 conversions.
 *
 * One table row per GGUF type number (ggml's enum ggml_type); geometry as llama.cpp's
 * type_traits. The reference table holds the scalar kernels of quant_ref.c; each ISA
 * path is that table with the entries its kernels_<isa>.c file overrides. Types we
 * cannot compute with keep their geometry (so files holding them can still be sized
 * and listed) and NULL functions. Half and bfloat16 conversions round to nearest even,
 * bit-identical to F16C's vcvtps2ph and to ggml_compute_fp32_to_bf16.
 */
#include "engine/quant.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

#include "core/log.h"
#include "engine/quant_internal.h"

#define ROW(nm, bl, bb, q, vdt, tf, ff, vd) {nm, bl, bb, q, vdt, tf, ff, vd, NULL, NULL}

static const struct quant_traits ref_table[QT_COUNT] = {
    [QT_F32] = ROW("F32", 1, 4, false, QT_F32, quant_ref_f32_to_float,
                   quant_ref_f32_from_float, quant_ref_f32_vec_dot),
    [QT_F16] = ROW("F16", 1, 2, false, QT_F16, quant_ref_f16_to_float,
                   quant_ref_f16_from_float, quant_ref_f16_vec_dot),
    [QT_Q4_0] = ROW("Q4_0", QK4_0, sizeof(struct block_q4_0), true, QT_Q8_0,
                    quant_ref_q4_0_to_float, quant_ref_q4_0_from_float,
                    quant_ref_q4_0_vec_dot),
    [QT_Q4_1] = ROW("Q4_1", QK4_1, sizeof(struct block_q4_1), true, QT_Q8_1,
                    quant_ref_q4_1_to_float, quant_ref_q4_1_from_float,
                    quant_ref_q4_1_vec_dot),
    [QT_Q5_0] = ROW("Q5_0", QK5_0, sizeof(struct block_q5_0), true, QT_Q8_0,
                    quant_ref_q5_0_to_float, quant_ref_q5_0_from_float,
                    quant_ref_q5_0_vec_dot),
    [QT_Q5_1] = ROW("Q5_1", QK5_1, sizeof(struct block_q5_1), true, QT_Q8_1,
                    quant_ref_q5_1_to_float, quant_ref_q5_1_from_float,
                    quant_ref_q5_1_vec_dot),
    [QT_Q8_0] = ROW("Q8_0", QK8_0, sizeof(struct block_q8_0), true, QT_Q8_0,
                    quant_ref_q8_0_to_float, quant_ref_q8_0_from_float,
                    quant_ref_q8_0_vec_dot),
    [QT_Q8_1] = ROW("Q8_1", QK8_1, sizeof(struct block_q8_1), true, QT_Q8_1,
                    quant_ref_q8_1_to_float, quant_ref_q8_1_from_float, NULL),
    [QT_Q2_K] = ROW("Q2_K", QK_K, sizeof(struct block_q2_K), true, QT_Q8_K,
                    quant_ref_q2_K_to_float, NULL, quant_ref_q2_K_vec_dot),
    [QT_Q3_K] = ROW("Q3_K", QK_K, sizeof(struct block_q3_K), true, QT_Q8_K,
                    quant_ref_q3_K_to_float, NULL, quant_ref_q3_K_vec_dot),
    [QT_Q4_K] = ROW("Q4_K", QK_K, sizeof(struct block_q4_K), true, QT_Q8_K,
                    quant_ref_q4_K_to_float, quant_ref_q4_K_from_float,
                    quant_ref_q4_K_vec_dot),
    [QT_Q5_K] = ROW("Q5_K", QK_K, sizeof(struct block_q5_K), true, QT_Q8_K,
                    quant_ref_q5_K_to_float, quant_ref_q5_K_from_float,
                    quant_ref_q5_K_vec_dot),
    [QT_Q6_K] = ROW("Q6_K", QK_K, sizeof(struct block_q6_K), true, QT_Q8_K,
                    quant_ref_q6_K_to_float, quant_ref_q6_K_from_float,
                    quant_ref_q6_K_vec_dot),
    [QT_Q8_K] = ROW("Q8_K", QK_K, sizeof(struct block_q8_K), true, QT_Q8_K,
                    quant_ref_q8_K_to_float, quant_ref_q8_K_from_float, NULL),
    /* ggml's IQ* and TQ* types (16-23, 29, 34, 35) are not listed: unknown to us. */
    [QT_I8] = ROW("I8", 1, 1, false, QT_I8, NULL, NULL, NULL),
    [QT_I16] = ROW("I16", 1, 2, false, QT_I16, NULL, NULL, NULL),
    [QT_I32] = ROW("I32", 1, 4, false, QT_I32, NULL, NULL, NULL),
    [QT_I64] = ROW("I64", 1, 8, false, QT_I64, NULL, NULL, NULL),
    [QT_F64] = ROW("F64", 1, 8, false, QT_F64, NULL, NULL, NULL),
    [QT_BF16] = ROW("BF16", 1, 2, false, QT_BF16, quant_ref_bf16_to_float,
                    quant_ref_bf16_from_float, quant_ref_bf16_vec_dot),
};

enum { ISA_SCALAR, ISA_AVX2, ISA_AVX512, ISA_NEON, ISA_N };
static const char *const isa_names[ISA_N] = {"scalar", "avx2", "avx512", "neon"};

/* Written once under init_once, read-only afterwards. */
float quant_f16_lut[1 << 16];
static struct quant_traits isa_tables[ISA_N][QT_COUNT];
static bool isa_ok[ISA_N];
static int isa_selected = ISA_SCALAR;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
/* CPU features from cpuid and the OS's saved-state mask (xgetbv), so that gcc and clang
 * agree (clang's __builtin_cpu_supports lacks some names). */
static bool x86_has(int isa)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28);
    const bool f16c = c & (1u << 29);
    if (!osxsave || !avx) return false;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    (void)xhi;
    if ((xlo & 0x6) != 0x6) return false; /* the OS saves SSE and AVX state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool avx2 = b & (1u << 5), bmi2 = b & (1u << 8);
    if (!(avx2 && fma && f16c && bmi2)) return false;
    if (isa == ISA_AVX2) return true;
    const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    const bool vnni = c & (1u << 11);
    unsigned a1 = 0, b1, c1, d1;
    const bool bf16 = __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 & (1u << 5));
    /* the kernels_avx512.c flags (Makefile ISA_AVX512), and opmask/zmm state saved */
    return f && dq && bw && vl && vnni && bf16 && (xlo & 0xE0) == 0xE0;
}
#endif

/* Appends " name" to buf when have. */
static void flag_add(char *buf, size_t cap, bool have, const char *name)
{
    size_t n = strlen(buf);
    if (have && n + strlen(name) + 2 < cap) snprintf(buf + n, cap - n, " %s", name);
}

const char *quant_cpu_describe(char *buf, size_t cap)
{
    if (!cap) return buf;
    buf[0] = 0;
    char model[128] = "";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        const char *c = strchr(line, ':');
        if (c && (!strncmp(line, "model name", 10) || !strncmp(line, "Model", 5))) {
            snprintf(model, sizeof model, "%s", c + 2);
            model[strcspn(model, "\n")] = 0;
            break;
        }
    }
    if (f) fclose(f);
#if defined(__x86_64__)
    snprintf(buf, cap, "%s:", model[0] ? model : "x86-64");
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        flag_add(buf, cap, (c >> 12) & 1, "fma");
        flag_add(buf, cap, (c >> 29) & 1, "f16c");
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        flag_add(buf, cap, (b >> 5) & 1, "avx2");
        flag_add(buf, cap, (b >> 8) & 1, "bmi2");
        flag_add(buf, cap, (b >> 16) & 1, "avx512f");
        flag_add(buf, cap, (b >> 17) & 1, "avx512dq");
        flag_add(buf, cap, (b >> 30) & 1, "avx512bw");
        flag_add(buf, cap, (b >> 31) & 1, "avx512vl");
        flag_add(buf, cap, (c >> 11) & 1, "avx512vnni");
        unsigned a1 = 0, b1, c1, d1;
        if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) {
            flag_add(buf, cap, (a1 >> 4) & 1, "avxvnni");
            flag_add(buf, cap, (a1 >> 5) & 1, "avx512bf16");
        }
    }
#elif defined(__aarch64__)
    snprintf(buf, cap, "%s:", model[0] ? model : "aarch64");
    flag_add(buf, cap, true, "asimd");
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
#ifdef HWCAP_ASIMDDP
    flag_add(buf, cap, (hw & HWCAP_ASIMDDP) != 0, "dotprod");
#endif
#ifdef HWCAP2_I8MM
    flag_add(buf, cap, (hw2 & HWCAP2_I8MM) != 0, "i8mm");
#endif
    (void)hw;
    (void)hw2;
#else
    snprintf(buf, cap, "%s:", model[0] ? model : "cpu");
#endif
    return buf;
}

static bool cpu_has(int isa)
{
    switch (isa) {
    case ISA_SCALAR:
        return true;
#if defined(__x86_64__)
    case ISA_AVX2:
    case ISA_AVX512:
        return x86_has(isa);
#endif
#if defined(__aarch64__)
    case ISA_NEON:
        return true; /* Advanced SIMD is mandatory on AArch64 */
#endif
    default:
        return false;
    }
}

static void init_tables(void)
{
    for (uint32_t h = 0; h < (1u << 16); h++) quant_f16_lut[h] = quant_f16_to_f32((uint16_t)h);
    for (int i = 0; i < ISA_N; i++) {
        isa_ok[i] = cpu_has(i);
        memcpy(isa_tables[i], ref_table, sizeof ref_table);
    }
#if defined(__x86_64__)
    if (isa_ok[ISA_AVX2]) quant_avx2_install(isa_tables[ISA_AVX2]);
    if (isa_ok[ISA_AVX512]) {
        quant_avx2_install(isa_tables[ISA_AVX512]); /* AVX2 for what AVX-512 lacks */
        quant_avx512_install(isa_tables[ISA_AVX512]);
    }
#endif
#if defined(__aarch64__)
    quant_neon_install(isa_tables[ISA_NEON]);
#endif
    int best = ISA_SCALAR;
    for (int i = ISA_N - 1; i > ISA_SCALAR; i--) {
        if (isa_ok[i]) {
            best = i;
            break;
        }
    }
    const char *force = getenv("MESHLLM_ISA");
    if (force && force[0]) {
        int want = -1;
        for (int i = 0; i < ISA_N; i++)
            if (strcasecmp(force, isa_names[i]) == 0) want = i;
        if (want < 0 || !isa_ok[want]) {
            log_warn("MESHLLM_ISA=%s: not available on this CPU/build; using scalar kernels",
                     force);
            best = ISA_SCALAR;
        } else {
            best = want;
        }
    }
    isa_selected = best;
    log_debug("quant: %s kernels", isa_names[best]);
}

void quant_init(void)
{
    pthread_once(&init_once, init_tables);
}

const char *quant_isa_name(void)
{
    quant_init();
    return isa_names[isa_selected];
}

static int isa_index(const char *isa)
{
    for (int i = 0; i < ISA_N; i++)
        if (isa && strcasecmp(isa, isa_names[i]) == 0) return i;
    return -1;
}

bool quant_isa_supported(const char *isa)
{
    quant_init();
    int i = isa_index(isa);
    return i >= 0 && isa_ok[i];
}

const struct quant_traits *quant_traits_isa(const char *isa, int t)
{
    quant_init();
    int i = isa_index(isa);
    if (i < 0 || !isa_ok[i] || t < 0 || t >= QT_COUNT || !ref_table[t].name) return NULL;
    return &isa_tables[i][t];
}

const struct quant_traits *quant_traits(int t)
{
    quant_init();
    if (t < 0 || t >= QT_COUNT || !ref_table[t].name) return NULL;
    return &isa_tables[isa_selected][t];
}

const struct quant_traits *quant_traits_ref(int t)
{
    quant_init(); /* the reference kernels read quant_f16_lut */
    if (t < 0 || t >= QT_COUNT || !ref_table[t].name) return NULL;
    return &ref_table[t];
}

void quant_vec_dot_rows(const struct quant_traits *tr, int n, float *s, const void *x, size_t bx,
                        const void *y, int nr)
{
    if (tr->vec_dot_rows) {
        tr->vec_dot_rows(n, s, x, bx, y, nr);
        return;
    }
    for (int r = 0; r < nr; r++) tr->vec_dot(n, &s[r], (const char *)x + (size_t)r * bx, y);
}

void quant_gemm(const struct quant_traits *tr, int n, float *s, size_t lds, const void *x,
                size_t bx, int nr, const void *y, size_t by, int nc)
{
    if (tr->gemm) {
        tr->gemm(n, s, lds, x, bx, nr, y, by, nc);
        return;
    }
    for (int c = 0; c < nc; c++)
        quant_vec_dot_rows(tr, n, s + (size_t)c * lds, x, bx, (const char *)y + (size_t)c * by, nr);
}

size_t quant_row_bytes(int t, int64_t n)
{
    const struct quant_traits *tr = quant_traits_ref(t);
    if (!tr || n < 0 || n % tr->block_len != 0) return 0;
    uint64_t blocks = (uint64_t)(n / tr->block_len);
    if (blocks > SIZE_MAX / tr->block_bytes) return 0;
    return (size_t)blocks * tr->block_bytes;
}

int quant_type_from_name(const char *name)
{
    if (!name) return -1;
    for (int t = 0; t < QT_COUNT; t++)
        if (ref_table[t].name && strcasecmp(name, ref_table[t].name) == 0) return t;
    return -1;
}

/* ---- IEEE binary16 ------------------------------------------------------------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float quant_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000 | (mant << 13)); /* inf, nan */
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float */
        float v = (float)mant * 0x1p-24f;
        return f32_from_bits(sign | f32_bits(v));
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t quant_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000) /* nan: quiet it, keep the top payload bits (as vcvtps2ph) */
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000) /* >= 65520 rounds past the largest half (65504): inf */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000) {
        /* below 2^-14: subnormal half. In [0.5, 1) a float's ulp is 2^-24, the half
         * subnormal step, so the FPU's own round-to-nearest-even does the rounding. */
        float v = f32_from_bits(ax) + 0.5f;
        return (uint16_t)(sign | (f32_bits(v) - 0x3f000000));
    }
    /* normal: rebias the exponent (127 -> 15), round the 13 dropped bits to even */
    uint32_t r = ax - 0x38000000;
    r += 0xfff + ((r >> 13) & 1);
    return (uint16_t)(sign | (r >> 13));
}

float quant_bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t quant_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64); /* quiet nan */
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

void quant_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n)
{
    quant_traits(QT_F16)->to_float(src, dst, n);
}

void quant_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n)
{
    quant_traits(QT_F16)->from_float(src, dst, n);
}
