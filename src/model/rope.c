/* RoPE inverse frequencies. Each variant follows transformers
 * (modeling_rope_utils: _compute_default/linear/llama3/yarn_parameters),
 * computed in double and rounded once to float. */
#include "model/rope.h"

#include <math.h>

int hr_rope_rot_dim(const hr_config *cfg, int head_dim) {
    float f = cfg->partial_rotary_factor > 0 ? cfg->partial_rotary_factor : 1.0f;
    int d = (int)((float)head_dim * f);
    return d & ~1;
}

/* Default: base^(-2i/dim). */
static void default_freqs(double base, int dim, double *out) {
    for (int i = 0; i < dim / 2; i++) out[i] = 1.0 / pow(base, (double)(2 * i) / dim);
}

/* Llama 3.1: low frequencies divided by factor, high kept, a smooth ramp in
 * between by wavelength relative to the original context. */
static int llama3_freqs(const hr_config *c, int dim, double *f, hr_err *err) {
    double factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    double old_ctx = c->rope_original_max_pos;
    if (factor <= 0 || old_ctx <= 0 || hi == lo)
        return hr_err_set(err, HR_EINVAL,
                          "llama3 rope_scaling needs factor, low/high_freq_factor, original_max_position_embeddings");
    double lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
    for (int i = 0; i < dim / 2; i++) {
        double wavelen = 2 * M_PI / f[i];
        if (wavelen < hi_wavelen) continue; /* high frequency: unchanged */
        if (wavelen > lo_wavelen) {
            f[i] /= factor;
        } else {
            double smooth = (old_ctx / wavelen - lo) / (hi - lo);
            f[i] = (1 - smooth) * f[i] / factor + smooth * f[i];
        }
    }
    return HR_OK;
}

/* YaRN (Peng et al. 2023, "YaRN: Efficient Context Window Extension"):
 * interpolate low frequencies, extrapolate high ones, linear ramp between the
 * correction dims of beta_fast/beta_slow rotations. */
static double yarn_corr_dim(double rot, int dim, double base, double max_pos) {
    return (dim * log(max_pos / (rot * 2 * M_PI))) / (2 * log(base));
}

static int yarn_freqs(const hr_config *c, int dim, double base, double *f, float *mscale, hr_err *err) {
    double factor = c->rope_factor;
    double orig = c->rope_original_max_pos > 0 ? c->rope_original_max_pos : c->max_position_embeddings;
    if (factor <= 0 || orig <= 0)
        return hr_err_set(err, HR_EINVAL, "yarn rope_scaling needs factor and original_max_position_embeddings");
    double beta_fast = c->rope_beta_fast > 0 ? c->rope_beta_fast : 32;
    double beta_slow = c->rope_beta_slow > 0 ? c->rope_beta_slow : 1;
    double attn = c->rope_attention_factor;
    if (attn <= 0) attn = factor <= 1 ? 1.0 : 0.1 * log(factor) + 1.0;
    double low = yarn_corr_dim(beta_fast, dim, base, orig);
    double high = yarn_corr_dim(beta_slow, dim, base, orig);
    if (c->rope_truncate) {
        low = floor(low);
        high = ceil(high);
    }
    if (low < 0) low = 0;
    if (high > dim - 1) high = dim - 1;
    if (low == high) high += 0.001; /* avoid a zero-width ramp */
    for (int i = 0; i < dim / 2; i++) {
        double ramp = ((double)i - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double extrap = 1 - ramp; /* weight of the unscaled frequency */
        double interp_f = f[i] / factor;
        f[i] = interp_f * (1 - extrap) + f[i] * extrap;
    }
    *mscale = (float)attn;
    return HR_OK;
}

int hr_rope_compute(const hr_config *cfg, int head_dim, float *inv_freq, float *mscale, hr_err *err) {
    int dim = hr_rope_rot_dim(cfg, head_dim);
    double base = cfg->rope_theta > 0 ? cfg->rope_theta : 10000.0;
    double f[512];
    if (dim <= 0 || dim / 2 > (int)HR_ARRAY_LEN(f)) return hr_err_set(err, HR_EINVAL, "rope: bad rotary dim %d", dim);
    *mscale = 1.0f;
    default_freqs(base, dim, f);
    int rc = HR_OK;
    switch (cfg->rope_type) {
    case HR_ROPE_DEFAULT:
        break;
    case HR_ROPE_LINEAR:
        if (cfg->rope_factor <= 0) return hr_err_set(err, HR_EINVAL, "linear rope_scaling needs factor > 0");
        for (int i = 0; i < dim / 2; i++) f[i] /= cfg->rope_factor;
        break;
    case HR_ROPE_LLAMA3:
        rc = llama3_freqs(cfg, dim, f, err);
        break;
    case HR_ROPE_YARN:
        rc = yarn_freqs(cfg, dim, base, f, mscale, err);
        break;
    default:
        return hr_err_set(err, HR_EUNSUP, "rope: unsupported rope type %d", (int)cfg->rope_type);
    }
    if (rc != HR_OK) return rc;
    for (int i = 0; i < dim / 2; i++) inv_freq[i] = (float)f[i];
    return HR_OK;
}
