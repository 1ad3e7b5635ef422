/* The serving engine: owns the model, the paged KV cache (kv_cache.h), the
 * scheduler (scheduler.h) and a thread that runs steps. Front ends (the HTTP
 * server, `hearth generate`, benchmarks) submit token-id requests and receive
 * per-request events through a callback called on the engine thread; the
 * callback must be quick (copy and signal). Knows nothing of HTTP or text:
 * stop strings and detokenization are the front end's job (it aborts the
 * request when it sees one). */
#ifndef HEARTH_ENGINE_H
#define HEARTH_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"
#include "engine/sampler.h"
#include "model/model.h"

typedef struct hr_engine hr_engine;

typedef struct hr_engine_opts {
    int max_num_seqs;            /* running sequences per step (vLLM --max-num-seqs, default 256) */
    int max_model_len;           /* context limit (0 = model's max_position_embeddings, capped by memory) */
    int max_num_batched_tokens;  /* token budget per step (0 = default: 8192 on a GPU backend, as vLLM's
                                    server default there, 2048 on the CPU) */
    int block_size;              /* tokens per KV block (default 16) */
    size_t kv_cache_memory;      /* bytes for the KV pool (0 = from kv_memory_fraction) */
    float kv_memory_fraction;    /* 0 = default: 0.9 GPU / 0.25 CPU. GPU (backend set, !host_memory, mem_info):
                                    fraction of the device total minus what the backend holds at peak (weights),
                                    as vLLM's --gpu-memory-utilization; CPU: fraction of MemAvailable */
    bool enable_prefix_caching;  /* default true */
    int max_waiting_requests;    /* queue limit before HR_EFULL (0 = unlimited) */
    hr_backend *backend;         /* the model's backend, for device memory sizing (NULL = size from host memory) */
    int n_sampler_threads;       /* threads sampling a step's rows in parallel: 0 = auto (online CPUs, at most
                                    16, when rows x vocab is large enough to pay); > 0 = that many, always */
    bool host_sampling;          /* false (default): steps are sampled on the backend and only ids cross to the
                                    host (the argmax op when every sampled row is plain greedy, else the sample
                                    op), except steps where a row asks for logprobs; true: always copy the logits
                                    and sample on the host (comparisons; `hearth serve --host-sampling`) */
    int warmup;                  /* requests run through the engine by hr_engine_create, before it accepts any
                                    (as vLLM warms up before it serves): they load every kernel and library
                                    path a first real step would (lazily loaded modules, cuBLASLt plans, graph
                                    captures), then counters and the prefix cache are reset. 0 = auto (on for
                                    a device backend: backend set and !host_memory), 1 = on, -1 = off */
} hr_engine_opts;

void hr_engine_opts_default(hr_engine_opts *o);

typedef enum {
    HR_FINISH_NONE = 0,
    HR_FINISH_STOP,      /* EOS or stop_token_ids (or a stop string reported by the front end) */
    HR_FINISH_LENGTH,    /* max_tokens or context limit */
    HR_FINISH_ABORT,     /* aborted by the front end / client gone / shutdown */
    HR_FINISH_ERROR,
} hr_finish_reason;

typedef struct hr_request {
    const int32_t *prompt;       /* copied by submit */
    int n_prompt;
    hr_sampling_params sampling;
    int max_tokens;              /* generated tokens limit (<= 0: up to the context limit) */
    int n_stop_ids;
    const int32_t *stop_ids;     /* stop_token_ids, copied */
} hr_request;

/* One event: new tokens of a request (usually one per step), and/or its end. */
typedef struct hr_event {
    uint64_t id;
    int n_tokens;
    const hr_sample_result *tokens;  /* valid during the callback only */
    hr_finish_reason finish;         /* != NONE on the last event */
    int n_prompt_tokens;
    int n_cached_tokens;             /* prompt tokens served from the prefix cache */
    double t_arrival, t_scheduled, t_first_token, t_now; /* hr_time_now() stamps */
} hr_event;

typedef void (*hr_event_cb)(void *user, const hr_event *ev);

/* Starts the engine thread. The model must stay alive until hr_engine_free. */
int hr_engine_create(hr_model *model, const hr_engine_opts *opts, hr_engine **out, hr_err *err);
/* Finishes (or aborts, after grace_s seconds) running requests, stops the thread, frees everything. */
void hr_engine_shutdown(hr_engine *e, double grace_s);
void hr_engine_free(hr_engine *e);

/* Queues a request. HR_EFULL when max_waiting_requests is reached, HR_EINVAL
 * when the prompt does not fit the context. cb is called on the engine thread. */
int hr_engine_submit(hr_engine *e, const hr_request *req, hr_event_cb cb, void *user, uint64_t *id, hr_err *err);
/* Aborts a request (no-op if finished); its blocks are freed at once and its
 * callback gets a final HR_FINISH_ABORT event. */
void hr_engine_abort(hr_engine *e, uint64_t id);

typedef struct hr_engine_stats {
    int num_running, num_waiting;
    double kv_usage;                   /* fraction of blocks in use */
    uint64_t prompt_tokens_total, generation_tokens_total;
    uint64_t prefix_queries_total, prefix_hits_total; /* in tokens, as vLLM */
    uint64_t num_preemptions_total;
    int kv_blocks_total, kv_blocks_free;
    int max_model_len;
} hr_engine_stats;
void hr_engine_get_stats(hr_engine *e, hr_engine_stats *s);

#endif
