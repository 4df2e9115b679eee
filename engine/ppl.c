/* ppl.c - perplexity and KL divergence statistics (see ppl.h).
 *
 * Follows the arithmetic of llama.cpp's examples/perplexity/perplexity.cpp (c392e50): float
 * max, exp of float differences summed in double, the same uncertainty and percentile
 * formulas. Not done here: the strided mode (--ppl-stride), HellaSwag, Winogrande and
 * multiple-choice scoring, saving logits to a file.
 */
#include "engine/ppl.h"

#include "core/err.h"
#include "engine/model.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int ppl_n_chunks(int n_tokens, int n_ctx, int n_max)
{
    if (n_ctx <= 0 || n_tokens < 2 * n_ctx) return 0;
    int n = n_tokens / n_ctx;
    return n_max > 0 && n_max < n ? n_max : n;
}

int ppl_n_scored(int n_ctx)
{
    return n_ctx - 1 - n_ctx / 2;
}

int ppl_chunk_logits(struct model_ctx *c, const int32_t *tokens, int n_ctx, int32_t bos,
                     float *logits)
{
    if (n_ctx < 4 || n_ctx > model_ctx_n_ctx(c)) return MESH_EINVAL;
    int n_vocab = model_hparams(model_ctx_model(c))->n_vocab;
    int n_batch = model_ctx_n_batch(c);
    int first = n_ctx / 2, last = n_ctx - 2; /* positions whose logits are scored */
    int32_t *ids = malloc((size_t)n_batch * sizeof *ids);
    int32_t *pos = malloc((size_t)n_batch * sizeof *pos);
    bool *want = malloc((size_t)n_batch * sizeof *want);
    int rc = MESH_ENOMEM;
    if (!ids || !pos || !want) goto out;
    model_kv_seq_truncate(c, 0, 0);
    float *dst = logits;
    for (int b0 = 0; b0 < n_ctx; b0 += n_batch) {
        int n = n_ctx - b0 < n_batch ? n_ctx - b0 : n_batch, n_want = 0;
        for (int k = 0; k < n; k++) {
            int p = b0 + k;
            ids[k] = p == 0 && bos >= 0 ? bos : tokens[p];
            pos[k] = p;
            want[k] = p >= first && p <= last;
            n_want += want[k];
        }
        struct model_batch b = {.n = n, .tokens = ids, .pos = pos, .want_logits = want};
        rc = model_decode(c, &b, dst); /* no head when no token wants logits */
        if (rc < 0) goto out;
        dst += (size_t)n_want * (size_t)n_vocab;
    }
    rc = 0;
out:
    free(want);
    free(pos);
    free(ids);
    return rc;
}

double ppl_token_nll(const float *logits, int n_vocab, int32_t tok)
{
    float max = logits[0];
    for (int i = 1; i < n_vocab; i++) max = logits[i] > max ? logits[i] : max;
    double sum = 0.0;
    for (int i = 0; i < n_vocab; i++) sum += expf(logits[i] - max);
    return -((double)(logits[tok] - max) - log(sum));
}

void ppl_stats_add(struct ppl_stats *s, double nll)
{
    s->sum_nll += nll;
    s->sum_nll2 += nll * nll;
    s->count++;
}

double ppl_stats_ppl(const struct ppl_stats *s)
{
    return s->count ? exp(s->sum_nll / (double)s->count) : 1.0;
}

int ppl_stats_final(const struct ppl_stats *s, double *ppl_out, double *err_out)
{
    *ppl_out = ppl_stats_ppl(s);
    *err_out = 0;
    if (s->count < 2) return MESH_ERANGE;
    double n = (double)s->count, mean = s->sum_nll / n, var = s->sum_nll2 / n - mean * mean;
    if (!(var > 0)) return MESH_ERANGE;
    *err_out = sqrt(var / (n - 1)) * *ppl_out;
    return 0;
}

int ppl_kld_init(struct ppl_kld *k, size_t cap)
{
    memset(k, 0, sizeof *k);
    k->kld_values = malloc((cap ? cap : 1) * sizeof(float));
    k->p_diff_values = malloc((cap ? cap : 1) * sizeof(float));
    if (!k->kld_values || !k->p_diff_values) {
        ppl_kld_free(k);
        return MESH_ENOMEM;
    }
    k->cap = cap;
    return 0;
}

void ppl_kld_free(struct ppl_kld *k)
{
    free(k->kld_values);
    free(k->p_diff_values);
    memset(k, 0, sizeof *k);
}

/* log(sum exp(l - max)) + max, and the arg max (first on ties). */
static double log_sum_exp(const float *l, int n, int *imax)
{
    float max = l[0];
    int im = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > max) max = l[i], im = i;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += expf(l[i] - max);
    *imax = im;
    return (double)max + log(sum);
}

int ppl_kld_add(struct ppl_kld *k, const float *logits, const float *base_logits, int n_vocab,
                int32_t tok)
{
    if (k->count >= k->cap) return MESH_EFULL;
    int imax, imax_base;
    double lse = log_sum_exp(logits, n_vocab, &imax);
    double lse_base = log_sum_exp(base_logits, n_vocab, &imax_base);
    double nll = lse - logits[tok], nll_base = lse_base - base_logits[tok];
    k->sum_nll += nll;
    k->sum_nll2 += nll * nll;
    k->sum_nll_base += nll_base;
    k->sum_nll_base2 += nll_base * nll_base;
    k->sum_nll_nll_base += nll * nll_base;
    /* KL(base || model) = sum p_base (log p_base - log p); llama.cpp drops the terms with
     * log p_base <= -16 (below 16-bit resolution in its file); kept exactly here */
    double kl = 0.0;
    for (int i = 0; i < n_vocab; i++) {
        double lpb = (double)base_logits[i] - lse_base, lp = (double)logits[i] - lse;
        kl += exp(lpb) * (lpb - lp);
    }
    float p = (float)exp(-nll), p_base = (float)exp(-nll_base), dp = p - p_base;
    k->sum_kld += kl;
    k->sum_kld2 += kl * kl;
    k->sum_p_diff += dp;
    double dp2 = (double)dp * dp;
    k->sum_p_diff2 += dp2;
    k->sum_p_diff4 += dp2 * dp2;
    if (fabsf(dp) > k->max_p_diff) k->max_p_diff = fabsf(dp);
    k->n_same_top += imax == imax_base;
    k->kld_values[k->count] = (float)kl;
    k->p_diff_values[k->count] = dp;
    k->count++;
    return 0;
}

/* llama.cpp's mean_and_uncertainty: no uncertainty for 10 values or fewer. */
static struct ppl_val mean_unc(double sum, double sum2, size_t count)
{
    struct ppl_val v = {0, 0};
    if (count < 1) return v;
    double n = (double)count;
    v.val = sum / n;
    double d = sum2 / n - v.val * v.val;
    v.unc = d > 0 && count > 10 ? sqrt(d / (n - 1)) : 0.0;
    return v;
}

static double covariance(double sa, double sb, double sab, size_t count)
{
    if (count < 10) return 0.0;
    double n = (double)count;
    return (sab / n - (sa / n) * (sb / n)) / (n - 1);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Linear interpolation between ranks, as llama.cpp's lambda (float fraction). */
static double percentile(const float *v, size_t n, float fraction)
{
    if (fraction <= 0) return v[0];
    if (fraction >= 1) return v[n - 1];
    float p = fraction * (float)(n - 1);
    size_t ip = (size_t)p;
    p -= (float)ip;
    size_t ip1 = ip + 1 < n ? ip + 1 : n - 1;
    return (1 - p) * v[ip] + p * v[ip1];
}

static double median(const float *v, size_t n)
{
    return n % 2 == 0 ? 0.5f * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
}

void ppl_kld_running(const struct ppl_kld *k, struct ppl_kld_summary *s)
{
    memset(s, 0, sizeof *s);
    size_t n = k->count;
    s->count = n;
    struct ppl_val lp = mean_unc(k->sum_nll, k->sum_nll2, n);
    struct ppl_val lpb = mean_unc(k->sum_nll_base, k->sum_nll_base2, n);
    s->ppl.val = exp(lp.val);
    s->ppl.unc = s->ppl.val * lp.unc;
    s->ppl_base.val = exp(lpb.val);
    s->ppl_base.unc = s->ppl_base.val * lpb.unc;
    double cov = covariance(k->sum_nll, k->sum_nll_base, k->sum_nll_nll_base, n);
    s->cor = lp.unc > 0 && lpb.unc > 0 ? cov / (lp.unc * lpb.unc) : 0.0;
    s->ln_ratio.val = lp.val - lpb.val;
    double r2 = lp.unc * lp.unc + lpb.unc * lpb.unc - 2.0 * cov;
    s->ln_ratio.unc = r2 > 0 ? sqrt(r2) : 0.0;
    s->ratio.val = exp(s->ln_ratio.val);
    s->ratio.unc = s->ratio.val * s->ln_ratio.unc;
    double pcov = s->ppl.val * s->ppl_base.val * cov;
    s->diff.val = s->ppl.val - s->ppl_base.val;
    double d2 = s->ppl.unc * s->ppl.unc + s->ppl_base.unc * s->ppl_base.unc - 2.0 * pcov;
    s->diff.unc = d2 > 0 ? sqrt(d2) : 0.0;
    s->kld = mean_unc(k->sum_kld, k->sum_kld2, n);
    s->p_diff = mean_unc(k->sum_p_diff, k->sum_p_diff2, n);
    struct ppl_val mse = mean_unc(k->sum_p_diff2, k->sum_p_diff4, n);
    s->dp_rms.val = sqrt(mse.val);
    s->dp_rms.unc = s->dp_rms.val > 0 ? 0.5 / s->dp_rms.val * mse.unc : 0.0;
    s->same_top.val = n ? (double)k->n_same_top / (double)n : 0.0;
    s->same_top.unc =
        n > 1 ? sqrt(s->same_top.val * (1 - s->same_top.val) / (double)(n - 1)) : 0.0;
}

int ppl_kld_summarize(struct ppl_kld *k, struct ppl_kld_summary *s)
{
    ppl_kld_running(k, s);
    size_t n = k->count;
    if (n == 0) return MESH_ERANGE;
    float *kv = k->kld_values, *dv = k->p_diff_values;
    qsort(kv, n, sizeof *kv, cmp_float);
    qsort(dv, n, sizeof *dv, cmp_float);
    s->kld_max = kv[n - 1];
    s->kld_p999 = percentile(kv, n, 0.999f);
    s->kld_p99 = percentile(kv, n, 0.990f);
    s->kld_median = median(kv, n);
    s->kld_p10 = percentile(kv, n, 0.100f);
    s->kld_p5 = percentile(kv, n, 0.050f);
    s->kld_p1 = percentile(kv, n, 0.010f);
    s->kld_min = kv[0];
    s->dp_max = dv[n - 1];
    s->dp_p999 = percentile(dv, n, 0.999f);
    s->dp_p99 = percentile(dv, n, 0.990f);
    s->dp_p95 = percentile(dv, n, 0.950f);
    s->dp_p90 = percentile(dv, n, 0.900f);
    s->dp_p75 = percentile(dv, n, 0.750f);
    s->dp_median = median(dv, n);
    s->dp_p25 = percentile(dv, n, 0.250f);
    s->dp_p10 = percentile(dv, n, 0.100f);
    s->dp_p5 = percentile(dv, n, 0.050f);
    s->dp_p1 = percentile(dv, n, 0.010f);
    s->dp_p01 = percentile(dv, n, 0.001f);
    s->dp_min = dv[0];
    return 0;
}
