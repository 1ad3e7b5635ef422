/* Token sampling from one row of logits, per sequence: penalties, logit bias,
 * temperature, top-k, top-p, min-p, seeded RNG (reproducible per request),
 * min_tokens / ignore_eos masking, logprobs. Greedy when temperature == 0.
 * The per-row math is hr_sample_row_ref (backend.h), shared with the
 * backends' `sample` op, so host and device sampling give the same tokens. */
#ifndef HEARTH_ENGINE_SAMPLER_H
#define HEARTH_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/common.h"

#define HR_MAX_LOGIT_BIAS 300
#define HR_MAX_TOP_LOGPROBS 20

typedef struct hr_sampling_params {
    float temperature;        /* 0 = greedy */
    float top_p;              /* 1 = off */
    int top_k;                /* <= 0 = off */
    float min_p;              /* 0 = off */
    float presence_penalty;   /* OpenAI semantics, over generated tokens */
    float frequency_penalty;
    float repetition_penalty; /* 1 = off; HF/vLLM semantics over prompt + generated */
    bool has_seed;
    uint64_t seed;
    int min_tokens;           /* mask EOS/stop ids until this many tokens are generated */
    bool ignore_eos;
    int n_logit_bias;
    int32_t logit_bias_ids[HR_MAX_LOGIT_BIAS];
    float logit_bias_vals[HR_MAX_LOGIT_BIAS];
    int logprobs;             /* -1 = none; else number of top logprobs (0..20) besides the sampled one */
} hr_sampling_params;

/* Neutral defaults: greedy-off temperature 1, everything else off. */
void hr_sampling_params_default(hr_sampling_params *p);

/* Per-sequence sampler state: RNG and token counts for penalties. */
typedef struct hr_sampler hr_sampler;

typedef struct hr_sample_result {
    int32_t id;
    float logprob;                         /* of id, from the raw (pre-penalty, temperature-1) distribution */
    int n_top;
    int32_t top_ids[HR_MAX_TOP_LOGPROBS];
    float top_logprobs[HR_MAX_TOP_LOGPROBS];
} hr_sample_result;

/* stop_ids (passed to hr_sampler_sample): the ids that would end the request,
 * i.e. stop_token_ids plus the model's EOS ids unless ignore_eos (as vLLM's
 * all_stop_token_ids). They are masked (-inf) while n_generated < min_tokens.
 * ignore_eos itself never changes sampling: it only means the engine does not
 * stop on EOS, so the caller leaves EOS out of stop_ids.
 * hr_sampler_new copies the prompt (for the repetition penalty); returns NULL
 * on a bad vocab_size or when out of memory. */
hr_sampler *hr_sampler_new(const hr_sampling_params *p, int vocab_size, const int32_t *prompt, int n_prompt);
void hr_sampler_free(hr_sampler *s);
/* Samples from logits (modified in place). n_generated = tokens generated so
 * far. Records the chosen token for later penalties. Order (vLLM v1):
 * raw logprobs, logit_bias, min_tokens mask, penalties; then greedy argmax
 * (temperature < 1e-5, lowest id on ties) or temperature, min-p, top-k,
 * top-p and a draw with the uniform hr_philox_uniform(seed, n_generated)
 * (core/philox.h; key = the request's seed, or a random one drawn at
 * hr_sampler_new when it has none), so a seeded request gives the same tokens
 * whatever else is in the batch, on the host or the device.
 * HR_OK or HR_ENOMEM. */
int hr_sampler_sample(hr_sampler *s, float *logits, int n_generated, const int32_t *stop_ids, int n_stop,
                      hr_sample_result *out);

/* The device path, in two halves: hr_sampler_row describes the row for the
 * backend's `sample` op (the same parameters hr_sampler_sample uses; row's
 * arrays point into s and stop_ids, valid until the next accept/sample/free),
 * hr_sampler_accept records the token the op chose (penalty counts).
 * hr_sampler_accept returns HR_OK or HR_ENOMEM. */
void hr_sampler_row(const hr_sampler *s, int n_generated, const int32_t *stop_ids, int n_stop, hr_sample_row *row);
int hr_sampler_accept(hr_sampler *s, int32_t id);
/* Whether the request needs the host path (logprobs come from the host only). */
bool hr_sampler_wants_host(const hr_sampler *s);

#endif
