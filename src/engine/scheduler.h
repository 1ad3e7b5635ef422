/* Continuous-batching scheduler (vLLM v1 style): owns the waiting queue
 * (FCFS) and the running list, the per-step token budget and preemption
 * (recompute: the newest running request loses its blocks and goes back to
 * the front of the queue). No prefill/decode modes: each request has
 * n_computed catching up with n_tokens, in chunks when the budget is short.
 * Produces a plain step (sched_output -> hr_step) and takes back the sampled
 * ids. Knows nothing of the model, sampling parameters or stop conditions:
 * the caller (engine.c) decides when a request finishes. */
#ifndef HEARTH_ENGINE_SCHEDULER_H
#define HEARTH_ENGINE_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/common.h"
#include "engine/kv_cache.h"

typedef enum { SCHED_WAITING = 0, SCHED_RUNNING, SCHED_FINISHED } sched_status;

typedef struct sched_req {
    uint64_t id;
    int32_t *tokens;   /* prompt then generated ids; owned */
    int n_tokens, cap; /* cap = n_prompt + max new tokens (fixed at creation) */
    int n_prompt;
    int n_computed;      /* tokens whose KV is in the cache */
    int n_cached_prompt; /* prompt tokens served by the prefix cache at first admission */
    bool ever_scheduled;
    int n_preemptions;
    sched_status status;
    kv_seq kv;
    void *user;                    /* the caller's per-request data */
    struct sched_req *prev, *next; /* queue links */
} sched_req;

typedef struct sched_list {
    sched_req *head, *tail;
    int n;
} sched_list;

typedef struct sched_config {
    int max_num_seqs;
    int max_num_batched_tokens;
    int max_model_len;
} sched_config;

/* One scheduled sequence of a step. */
typedef struct sched_item {
    sched_req *req;
    int n_new;   /* tokens computed this step: [req->n_computed, + n_new) */
    bool sample; /* reaches the end of its tokens: a logit row and a new token */
} sched_item;

typedef struct sched_output {
    sched_item *items;
    int n_items, cap;
    int n_tokens;    /* total scheduled tokens (<= budget) */
    int n_preempted; /* preemptions during this schedule() */
    int n_newly_admitted;
} sched_output;

typedef struct sched {
    sched_config cfg;
    kv_cache *kv;
    sched_list waiting, running;
    uint64_t num_preemptions;
    int32_t *prefix_buf; /* scratch for kv_cache_find_prefix */
    int prefix_cap;
} sched;

/* Buffers for one hr_step, grown as needed and reused across steps. */
typedef struct sched_step_buf {
    int32_t *tokens, *positions, *slots, *query_start, *seq_lens, *block_tables, *logit_rows;
    int cap_tokens, cap_positions, cap_slots, cap_query_start, cap_seq_lens, cap_block_tables, cap_logit_rows;
} sched_step_buf;

int sched_init(sched *s, kv_cache *kv, const sched_config *cfg, hr_err *err);
/* Frees the scheduler's own memory; requests still queued are not freed. */
void sched_destroy(sched *s);

/* New request with a copy of the prompt; room for max_new generated tokens.
 * NULL when out of memory. Not queued yet. */
sched_req *sched_req_new(uint64_t id, const int32_t *prompt, int n_prompt, int max_new);
/* Frees the request (its blocks must already be back: sched_finish). */
void sched_req_free(sched_req *r);

/* HR_EINVAL when prompt + max_new can never fit (context or whole pool). */
int sched_check_fits(const sched *s, int n_prompt, int max_new, hr_err *err);
/* Appends to the waiting queue (FCFS). */
void sched_add(sched *s, sched_req *r);
/* Removes r from whichever queue holds it and frees its blocks; status FINISHED. */
void sched_finish(sched *s, sched_req *r);

/* Plans one step: running requests first (oldest first; preempting the
 * newest when blocks run out), then admissions from the waiting queue while
 * max_num_seqs, blocks and the token budget allow. Returns HR_OK (possibly
 * with nothing scheduled) or HR_ENOMEM. */
int sched_schedule(sched *s, sched_output *out);
/* Fills an hr_step for the planned items; max_blocks_per_seq =
 * ceil(max_model_len / block_size). */
int sched_build_step(const sched *s, const sched_output *out, sched_step_buf *buf, hr_step *step);
/* After the model ran: advances n_computed and appends sampled[j] to the
 * j-th item with sample == true. (Full blocks were registered in the prefix
 * cache by sched_schedule.) */
void sched_update(sched *s, const sched_output *out, const int32_t *sampled);

/* The step did not run (model error): its blocks registered in the prefix
 * cache at schedule time hold no valid KV, so their hashes are dropped. */
void sched_step_failed(sched *s, const sched_output *out);

void sched_output_free(sched_output *o);
void sched_step_buf_free(sched_step_buf *b);

/* Checks scheduler + pool invariants: every block referenced exactly as
 * often as block tables hold it, running tables cover the computed tokens,
 * waiting requests hold no blocks, pool consistent. NULL when fine. */
const char *sched_check(const sched *s);

#endif
