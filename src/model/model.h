/* A loaded model: its traits (model/arch.h), its weights in backend memory,
 * its paged KV cache, and the one forward pass that reads the traits.
 * Sources: a Hugging Face directory (safetensors + config.json), a .gguf
 * file, or "synthetic:NAME" (published architecture, random weights on the
 * device, for benchmarks). Must not know requests, the scheduler or HTTP:
 * it runs one hr_step at a time. */
#ifndef HEARTH_MODEL_MODEL_H
#define HEARTH_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/common.h"
#include "io/config.h"

typedef struct hr_model hr_model;

typedef struct hr_model_opts {
    hr_dtype weight_dtype; /* storage type for dequantized/unquantized weights; HR_DTYPE_COUNT = backend default */
} hr_model_opts;

/* path: directory, .gguf file or "synthetic:NAME" (llama-3.1-8b, llama-3.1-70b,
 * qwen2.5-7b, mixtral-8x7b, gpt-oss-20b, gpt-oss-120b, tiny-llama,
 * tiny-mixtral, tiny-gpt-oss: random weights, meaningless output). Resolves
 * HF ids first. Weights are stored as opts->weight_dtype, else: bf16/f16
 * checkpoints as-is, dequantized FP8/NVFP4/MXFP4 ones as F32 (the goldens'
 * 1e-3 holds), GGUF blocks as BF16 (far coarser than bf16 already); norms,
 * biases, sinks and MoE routers always F32. GGUF architectures: llama, qwen2. */
int hr_model_load(const char *path, hr_backend *be, const hr_model_opts *opts, hr_model **out, hr_err *err);
void hr_model_free(hr_model *m);

const hr_config *hr_model_config(const hr_model *m);
int hr_model_vocab_size(const hr_model *m);
int hr_model_n_layers(const hr_model *m);
/* The resolved directory or .gguf file the model came from (tokenizer lives there). */
const char *hr_model_source(const hr_model *m);
bool hr_model_is_gguf(const hr_model *m);
/* Bytes of weights resident in backend memory. */
size_t hr_model_weight_bytes(const hr_model *m);

/* Paged KV cache: bytes one block of block_size tokens takes over all layers. */
size_t hr_model_kv_block_bytes(const hr_model *m, int block_size);
/* Upper bound of the activation buffers a step of n_tokens tokens and
 * n_logits logit rows allocates on the backend (what a KV pool sized before
 * the first step must leave free; vLLM measures it with a profiling run). */
size_t hr_model_activation_bytes(const hr_model *m, int n_tokens, int n_logits);
/* (Re)allocates the cache: n_blocks blocks of block_size tokens. */
int hr_model_kv_alloc(hr_model *m, int n_blocks, int block_size, hr_err *err);
int hr_model_kv_blocks(const hr_model *m);
int hr_model_kv_block_size(const hr_model *m);

/* Runs one step. Writes step->n_logits rows of vocab_size float32 logits to
 * logits (host memory, caller-owned). */
int hr_model_forward(hr_model *m, const hr_step *step, float *logits, hr_err *err);
/* The same step for greedy decoding: writes the argmax of each of the
 * step->n_logits rows (lowest id on ties, as the sampler) to ids (host,
 * caller-owned); only the ids cross from the device when the backend has
 * the argmax op, else the logits are copied and reduced here. */
int hr_model_forward_greedy(hr_model *m, const hr_step *step, int32_t *ids, hr_err *err);
/* The same step, sampled: ids[r] = the token sampled from logit row r with
 * rows[r] (step->n_logits rows; see hr_sample_row). Only the ids cross from
 * the device when the backend has the sample op, else the logits are copied
 * and hr_sample_row_ref runs here; the result is the same. */
int hr_model_forward_sample(hr_model *m, const hr_step *step, const hr_sample_row *rows, int32_t *ids, hr_err *err);
/* The two steps above in halves: _begin runs the step and, on a backend
 * with ids_wait, returns once the device work is queued (the ids are on
 * their way), so the caller can do host work while the device computes;
 * hr_model_ids_wait then writes the step->n_logits ids. Elsewhere the step
 * runs to its end in _begin and the wait copies. Every begun step must be
 * waited for (also after an error of the caller) before the next begins;
 * rows must stay valid until _begin returns. */
int hr_model_forward_greedy_begin(hr_model *m, const hr_step *step, hr_err *err);
int hr_model_forward_sample_begin(hr_model *m, const hr_step *step, const hr_sample_row *rows, hr_err *err);
int hr_model_ids_wait(hr_model *m, int32_t *ids, hr_err *err);

#endif
