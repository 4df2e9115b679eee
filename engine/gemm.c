/* gemm.c - prepared-activation tile products: scalar reference and dispatch (gemm.h). */
#include "engine/gemm.h"

#include <string.h>

#include "engine/quant.h"
#include "engine/quant_internal.h"

size_t gemm_q8_0_aux_bytes(int n, int nc)
{
    return ((size_t)(n / QK8_0) * (sizeof(int32_t) + sizeof(float)) + (size_t)n) * (size_t)nc;
}

/* aux layout: per column, int32 off[nb], float d[nb], then the n activations + 128 as
 * bytes (so columns can be prepared independently: column c starts at
 * aux + c * gemm_q8_0_aux_bytes(n, 1)). */
void gemm_q8_0_prepare(int n, const void *y, size_t by, int nc, void *aux)
{
    const int nb = n / QK8_0;
    for (int c = 0; c < nc; c++) {
        const struct block_q8_0 *yb = (const void *)((const char *)y + (size_t)c * by);
        uint8_t *col = (uint8_t *)aux + (size_t)c * gemm_q8_0_aux_bytes(n, 1);
        int32_t *off = (int32_t *)col;
        float *d = (float *)(off + nb);
        uint8_t *yu = (uint8_t *)(d + nb);
        for (int ib = 0; ib < nb; ib++) {
            int sum = 0;
            for (int i = 0; i < QK8_0; i++) {
                sum += yb[ib].qs[i];
                yu[ib * QK8_0 + i] = (uint8_t)(yb[ib].qs[i] + 128);
            }
            off[ib] = -2 * sum;
            d[ib] = quant_h2f(yb[ib].d);
        }
    }
}

void gemm_ref_q4_0_q8_0(int n, float *s, size_t lds, const void *x, size_t bx, int nr,
                        const void *y, size_t by, int nc)
{
    const int nb = n / QK8_0;
    for (int c = 0; c < nc; c++) {
        const struct block_q8_0 *yb = (const void *)((const char *)y + (size_t)c * by);
        for (int r = 0; r < nr; r++) {
            const struct block_q4_0 *xb = (const void *)((const char *)x + (size_t)r * bx);
            float acc = 0.0f;
            for (int ib = 0; ib < nb; ib++) {
                int dot = 0;
                for (int j = 0; j < QK4_0 / 2; j++) {
                    dot += ((xb[ib].qs[j] & 0xF) - 8) * yb[ib].qs[j];
                    dot += ((xb[ib].qs[j] >> 4) - 8) * yb[ib].qs[j + QK4_0 / 2];
                }
                acc += quant_h2f(xb[ib].d) * quant_h2f(yb[ib].d) * (float)dot;
            }
            s[(size_t)c * lds + r] = acc;
        }
    }
}

void gemm_q4_0_q8_0(int n, float *s, size_t lds, const void *x, size_t bx, int nr, const void *y,
                    size_t by, int nc, const void *aux)
{
#if defined(__x86_64__)
    if (strcmp(quant_isa_name(), "avx512") == 0) {
        gemm_avx512_q4_0_q8_0(n, s, lds, x, bx, nr, y, by, nc, aux);
        return;
    }
#endif
    (void)aux;
    quant_gemm(quant_traits(QT_Q4_0), n, s, lds, x, bx, nr, y, by, nc);
}

void gemm_ref_q8_0_q8_0(int n, float *s, size_t lds, const void *x, size_t bx, int nr,
                        const void *y, size_t by, int nc)
{
    const int nb = n / QK8_0;
    for (int c = 0; c < nc; c++) {
        const struct block_q8_0 *yb = (const void *)((const char *)y + (size_t)c * by);
        for (int r = 0; r < nr; r++) {
            const struct block_q8_0 *xb = (const void *)((const char *)x + (size_t)r * bx);
            float acc = 0.0f;
            for (int ib = 0; ib < nb; ib++) {
                int dot = 0;
                for (int j = 0; j < QK8_0; j++) dot += xb[ib].qs[j] * yb[ib].qs[j];
                acc += quant_h2f(xb[ib].d) * quant_h2f(yb[ib].d) * (float)dot;
            }
            s[(size_t)c * lds + r] = acc;
        }
    }
}

void gemm_q8_0_q8_0(int n, float *s, size_t lds, const void *x, size_t bx, int nr, const void *y,
                    size_t by, int nc, const void *aux)
{
#if defined(__x86_64__)
    if (strcmp(quant_isa_name(), "avx512") == 0) {
        gemm_avx512_q8_0_q8_0(n, s, lds, x, bx, nr, y, by, nc, aux);
        return;
    }
#endif
    (void)aux;
    quant_gemm(quant_traits(QT_Q8_0), n, s, lds, x, bx, nr, y, by, nc);
}
