/* RoPE frequencies for each scaling variant (default, linear, llama3, YaRN),
 * computed as transformers' modeling_rope_utils does, plus the partial
 * rotary dimension and YaRN's attention factor. Pure math on a config: knows
 * nothing of tensors or backends. */
#ifndef HEARTH_MODEL_ROPE_H
#define HEARTH_MODEL_ROPE_H

#include "core/common.h"
#include "io/config.h"

/* Rotated dimensions of a head: head_dim * partial_rotary_factor, even. */
int hr_rope_rot_dim(const hr_config *cfg, int head_dim);

/* Fills inv_freq[rot_dim / 2] and *mscale (cos/sin multiplier: YaRN's
 * attention factor, else 1). HR_EINVAL on nonsensical parameters. */
int hr_rope_compute(const hr_config *cfg, int head_dim, float *inv_freq, float *mscale, hr_err *err);

#endif
