/* quant_neon_check.c - the NEON kernels against the scalar reference, for aarch64
 * builds run under qemu-user (tests/quant_neon.test.sh builds it with the cross
 * compiler; no cmocka there). Same checks and tolerances as test_quant.c's SIMD tests:
 * dot products within 4 n FLT_EPSILON sum|x_i y_i| (only the float accumulation order
 * differs), conversions and quantizers bit-exact. Prints one
 * line per failure and "neon: N checks, M failed"; exit status 1 on any failure.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/quant.h"
#include "engine/quant_blocks.h"

static int n_checks, n_failed;

static uint64_t rng = 12345;
static float urand(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (float)(z >> 40) / (float)(1 << 23) - 1.0f;
}

static void check(int ok, const char *what, const char *type, int n)
{
    n_checks++;
    if (!ok) {
        n_failed++;
        printf("FAIL %s %s n=%d\n", what, type, n);
    }
}

static void check_dot(int t)
{
    const struct quant_traits *ref = quant_traits_ref(t), *tr = quant_traits_isa("neon", t);
    const struct quant_traits *yref = quant_traits_ref(ref->vec_dot_type);
    static const int nbs[] = {1, 2, 3, 5, 8, 17, 33};
    for (size_t k = 0; k < sizeof nbs / sizeof nbs[0]; k++) {
        int n = nbs[k] * (ref->block_len > 1 ? ref->block_len : 32) + (ref->block_len == 1 ? (int)k : 0);
        float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
        float *xd = malloc(n * sizeof(float)), *yd = malloc(n * sizeof(float));
        void *qx = malloc(quant_row_bytes(t, n)), *qy = malloc(quant_row_bytes(ref->vec_dot_type, n));
        for (int i = 0; i < n; i++) x[i] = 0.5f * urand(), y[i] = 3.0f * urand();
        ref->from_float(x, qx, n);
        yref->from_float(y, qy, n);
        ref->to_float(qx, xd, n);
        yref->to_float(qy, yd, n);
        double sum_abs = 0;
        for (int i = 0; i < n; i++) sum_abs += fabs((double)xd[i] * yd[i]);
        float want, got;
        ref->vec_dot(n, &want, qx, qy);
        tr->vec_dot(n, &got, qx, qy);
        check(fabs((double)got - want) <= 4.0 * n * FLT_EPSILON * sum_abs + 1e-30, "vec_dot", ref->name, n);
        free(x), free(y), free(xd), free(yd), free(qx), free(qy);
    }
}

static void check_convert(int t)
{
    const struct quant_traits *ref = quant_traits_ref(t), *tr = quant_traits_isa("neon", t);
    enum { N = QK_K * 3 };
    float x[N], a[N], b[N];
    unsigned char qa[N * 4], qb[N * 4];
    for (int i = 0; i < N; i++) x[i] = urand();
    for (int z = 0; z < 64; z++) x[z] = 0.0f; /* a zero block */
    x[64] = 127.0f; /* d = 1 exactly: halves are ties, roundf goes away from 0 */
    for (int j = 1; j < 32; j++) x[64 + j] = (float)(j - 16) + 0.5f;
    ref->from_float(x, qb, N);
    tr->to_float(qb, a, N);
    ref->to_float(qb, b, N);
    check(memcmp(a, b, sizeof a) == 0, "to_float", ref->name, N);
    tr->from_float(x, qa, N);
    check(memcmp(qa, qb, quant_row_bytes(t, N)) == 0, "from_float", ref->name, N);
}

int main(void)
{
    quant_init();
    check(quant_isa_supported("neon") && !strcmp(quant_isa_name(), "neon"), "selected", "neon", 0);
    const int dots[] = {QT_F32, QT_F16, QT_BF16, QT_Q4_0, QT_Q5_0, QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    for (size_t i = 0; i < sizeof dots / sizeof dots[0]; i++) check_dot(dots[i]);
    const int convs[] = {QT_F16, QT_BF16, QT_Q4_0, QT_Q5_0, QT_Q8_0, QT_Q4_K, QT_Q6_K, QT_Q8_K};
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) check_convert(convs[i]);
    printf("neon: %d checks, %d failed\n", n_checks, n_failed);
    return n_failed ? 1 : 0;
}
