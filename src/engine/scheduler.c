/* Scheduler: queues, token budget, preemption and the step description.
 * Follows vLLM v1's Scheduler.schedule(): running requests first, in
 * arrival order, each getting min(remaining tokens, budget); when the pool
 * is out of blocks the newest running request is preempted (recompute) until
 * the current one fits or is itself the newest. Waiting requests are only
 * admitted when nothing was preempted this step, strictly in FCFS order (a
 * head that does not fit blocks the queue, so nobody overtakes it forever).
 * Full blocks are registered in the prefix cache when they are scheduled,
 * as vLLM does, so a request admitted later in the same step can share
 * blocks another one computes in this step: the runner stores the whole
 * step's K/V of a layer before that layer's attention reads any of it. */
#include "engine/scheduler.h"

#include <string.h>

/* ---- lists ---- */
static void list_push_back(sched_list *l, sched_req *r) {
    r->prev = l->tail;
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void list_push_front(sched_list *l, sched_req *r) {
    r->next = l->head;
    r->prev = NULL;
    if (l->head)
        l->head->prev = r;
    else
        l->tail = r;
    l->head = r;
    l->n++;
}

static void list_remove(sched_list *l, sched_req *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

int sched_init(sched *s, kv_cache *kv, const sched_config *cfg, hr_err *err) {
    memset(s, 0, sizeof *s);
    if (cfg->max_num_seqs <= 0 || cfg->max_num_batched_tokens <= 0 || cfg->max_model_len <= 0)
        return hr_err_set(err, HR_EINVAL,
                          "scheduler: max_num_seqs, max_num_batched_tokens and max_model_len must be > 0");
    s->cfg = *cfg;
    s->kv = kv;
    s->prefix_cap = HR_CDIV(cfg->max_model_len, kv->block_size);
    s->prefix_buf = malloc((size_t)s->prefix_cap * sizeof *s->prefix_buf);
    if (!s->prefix_buf) return hr_err_set(err, HR_ENOMEM, "scheduler: out of memory");
    return HR_OK;
}

void sched_destroy(sched *s) {
    free(s->prefix_buf);
    memset(s, 0, sizeof *s);
}

sched_req *sched_req_new(uint64_t id, const int32_t *prompt, int n_prompt, int max_new) {
    if (n_prompt <= 0 || max_new < 0) return NULL;
    sched_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->cap = n_prompt + max_new;
    r->tokens = malloc((size_t)r->cap * sizeof *r->tokens);
    if (!r->tokens) {
        free(r);
        return NULL;
    }
    memcpy(r->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    r->id = id;
    r->n_tokens = r->n_prompt = n_prompt;
    return r;
}

void sched_req_free(sched_req *r) {
    if (!r) return;
    HR_ASSERT(r->kv.n_blocks == 0);
    kv_seq_release(NULL, &r->kv);
    free(r->tokens);
    free(r);
}

int sched_check_fits(const sched *s, int n_prompt, int max_new, hr_err *err) {
    long total = (long)n_prompt + max_new;
    if (n_prompt <= 0) return hr_err_set(err, HR_EINVAL, "empty prompt");
    if (total > s->cfg.max_model_len)
        return hr_err_set(err, HR_EINVAL, "prompt (%d tokens) + max_tokens (%d) exceeds the context length %d",
                          n_prompt, max_new, s->cfg.max_model_len);
    if (HR_CDIV(total, s->kv->block_size) > s->kv->n_blocks)
        return hr_err_set(err, HR_EINVAL, "prompt + max_tokens (%ld tokens) exceeds the whole KV cache (%d tokens)",
                          total, s->kv->n_blocks * s->kv->block_size);
    return HR_OK;
}

void sched_add(sched *s, sched_req *r) {
    r->status = SCHED_WAITING;
    list_push_back(&s->waiting, r);
}

void sched_finish(sched *s, sched_req *r) {
    if (r->status == SCHED_WAITING)
        list_remove(&s->waiting, r);
    else if (r->status == SCHED_RUNNING)
        list_remove(&s->running, r);
    kv_cache_free_seq(s->kv, &r->kv);
    r->status = SCHED_FINISHED;
}

static int out_push(sched_output *o, sched_req *r, int n_new) {
    if (o->n_items == o->cap) {
        int cap = o->cap ? o->cap * 2 : 16;
        sched_item *ni = realloc(o->items, (size_t)cap * sizeof *ni);
        if (!ni) return HR_ENOMEM;
        o->items = ni;
        o->cap = cap;
    }
    o->items[o->n_items++] = (sched_item){.req = r, .n_new = n_new, .sample = r->n_computed + n_new == r->n_tokens};
    o->n_tokens += n_new;
    return HR_OK;
}

/* Recompute preemption: drop the KV, start over later from the queue front. */
static void preempt(sched *s, sched_req *r) {
    list_remove(&s->running, r);
    kv_cache_free_seq(s->kv, &r->kv);
    r->n_computed = 0;
    r->n_preemptions++;
    r->status = SCHED_WAITING;
    list_push_front(&s->waiting, r);
    s->num_preemptions++;
}

int sched_schedule(sched *s, sched_output *out) {
    out->n_items = out->n_tokens = out->n_preempted = out->n_newly_admitted = 0;
    int budget = s->cfg.max_num_batched_tokens;

    /* 1. running requests, oldest first */
    for (sched_req *r = s->running.head; r && budget > 0;) {
        int n_new = HR_MIN(r->n_tokens - r->n_computed, budget);
        if (n_new <= 0) { /* nothing to compute (should not happen: finished ones leave) */
            r = r->next;
            continue;
        }
        bool scheduled = false;
        for (;;) {
            int rc = kv_cache_allocate(s->kv, &r->kv, r->n_computed + n_new, NULL, 0);
            if (rc == HR_OK) {
                scheduled = true;
                break;
            }
            if (rc != HR_EFULL) return rc;
            /* Victims come from the tail, so they were not scheduled yet;
             * when r itself is the newest it yields and the loop ends. */
            sched_req *victim = s->running.tail;
            preempt(s, victim);
            out->n_preempted++;
            if (victim == r) break;
        }
        if (!scheduled) break;
        int rc = out_push(out, r, n_new);
        if (rc != HR_OK) return rc;
        kv_cache_commit(s->kv, &r->kv, r->tokens, r->n_computed + n_new);
        budget -= n_new;
        r = r->next; /* still in running: re-read after any preemption */
    }

    /* 2. admissions, FCFS, only when nobody was preempted this step */
    while (out->n_preempted == 0 && budget > 0 && s->waiting.head && s->running.n < s->cfg.max_num_seqs) {
        sched_req *r = s->waiting.head;
        int n_prefix = 0;
        if (r->n_computed == 0) {
            n_prefix = kv_cache_find_prefix(s->kv, r->tokens, r->n_tokens, s->prefix_buf, s->prefix_cap);
        }
        int start = n_prefix * s->kv->block_size;
        int n_new = HR_MIN(r->n_tokens - start, budget);
        int rc = kv_cache_allocate(s->kv, &r->kv, start + n_new, s->prefix_buf, n_prefix);
        if (rc == HR_EFULL) break;
        if (rc != HR_OK) return rc;
        list_remove(&s->waiting, r);
        r->n_computed = start;
        if (!r->ever_scheduled) {
            r->ever_scheduled = true;
            r->n_cached_prompt = HR_MIN(start, r->n_prompt);
            s->kv->queries += (uint64_t)r->n_prompt;
            s->kv->hits += (uint64_t)r->n_cached_prompt;
        }
        r->status = SCHED_RUNNING;
        list_push_back(&s->running, r);
        rc = out_push(out, r, n_new);
        if (rc != HR_OK) return rc;
        kv_cache_commit(s->kv, &r->kv, r->tokens, r->n_computed + n_new);
        budget -= n_new;
        out->n_newly_admitted++;
    }
    return HR_OK;
}

static int grow(int32_t **p, int *cap, int need) {
    if (need <= *cap) return HR_OK;
    int c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    int32_t *n = realloc(*p, (size_t)c * sizeof *n);
    if (!n) return HR_ENOMEM;
    *p = n;
    *cap = c;
    return HR_OK;
}

int sched_build_step(const sched *s, const sched_output *out, sched_step_buf *b, hr_step *step) {
    int bs = s->kv->block_size, mb_model = HR_CDIV(s->cfg.max_model_len, bs);
    int nt = out->n_tokens, ns = out->n_items;
    /* Rows are as wide as this step's longest table (rounded up to a power
     * of two, at least 4, so a CUDA graph keyed on the width is not
     * recaptured every few steps), not as max_model_len: for a 128k-context
     * model at 256 sequences full rows would be 8 MB of -1 to write, copy
     * and upload each step. */
    int mb = 4;
    for (int i = 0; i < ns; i++)
        while (mb < out->items[i].req->kv.n_blocks) mb *= 2;
    if (mb > mb_model) mb = mb_model;
    if (grow(&b->tokens, &b->cap_tokens, nt) || grow(&b->positions, &b->cap_positions, nt) ||
        grow(&b->slots, &b->cap_slots, nt) || grow(&b->logit_rows, &b->cap_logit_rows, ns) ||
        grow(&b->query_start, &b->cap_query_start, ns + 1) || grow(&b->seq_lens, &b->cap_seq_lens, ns) ||
        grow(&b->block_tables, &b->cap_block_tables, ns * mb))
        return HR_ENOMEM;

    int t = 0, nl = 0;
    for (int i = 0; i < ns; i++) {
        const sched_item *it = &out->items[i];
        const sched_req *r = it->req;
        b->query_start[i] = t;
        HR_ASSERT(r->kv.n_blocks * bs >= r->n_computed + it->n_new && r->kv.n_blocks <= mb);
        for (int j = 0; j < it->n_new; j++, t++) {
            int pos = r->n_computed + j;
            b->tokens[t] = r->tokens[pos];
            b->positions[t] = pos;
            b->slots[t] = r->kv.blocks[pos / bs] * bs + pos % bs;
        }
        b->seq_lens[i] = r->n_computed + it->n_new;
        int32_t *row = b->block_tables + (size_t)i * mb;
        memcpy(row, r->kv.blocks, (size_t)r->kv.n_blocks * sizeof *row);
        for (int j = r->kv.n_blocks; j < mb; j++) row[j] = -1;
        if (it->sample) b->logit_rows[nl++] = t - 1;
    }
    b->query_start[ns] = t;
    *step = (hr_step){
        .n_tokens = t,
        .tokens = b->tokens,
        .positions = b->positions,
        .slot_mapping = b->slots,
        .n_seqs = ns,
        .query_start = b->query_start,
        .seq_lens = b->seq_lens,
        .block_tables = b->block_tables,
        .max_blocks_per_seq = mb,
        .block_size = bs,
        .n_logits = nl,
        .logit_rows = b->logit_rows,
    };
    return HR_OK;
}

void sched_update(sched *s, const sched_output *out, const int32_t *sampled) {
    int j = 0;
    for (int i = 0; i < out->n_items; i++) {
        sched_item *it = &out->items[i];
        sched_req *r = it->req;
        r->n_computed += it->n_new;
        kv_cache_commit(s->kv, &r->kv, r->tokens, r->n_computed);
        if (it->sample) {
            HR_ASSERT(r->n_tokens < r->cap);
            r->tokens[r->n_tokens++] = sampled[j++];
        }
    }
}

void sched_step_failed(sched *s, const sched_output *out) {
    for (int i = 0; i < out->n_items; i++) {
        sched_req *r = out->items[i].req;
        kv_cache_forget(s->kv, &r->kv, r->n_computed / s->kv->block_size);
    }
}

void sched_output_free(sched_output *o) {
    free(o->items);
    memset(o, 0, sizeof *o);
}

void sched_step_buf_free(sched_step_buf *b) {
    free(b->tokens);
    free(b->positions);
    free(b->slots);
    free(b->query_start);
    free(b->seq_lens);
    free(b->block_tables);
    free(b->logit_rows);
    memset(b, 0, sizeof *b);
}

const char *sched_check(const sched *s) {
    const kv_cache *kv = s->kv;
    const char *msg = kv_cache_check(kv);
    if (msg) return msg;
    int32_t *refs = calloc((size_t)kv->n_blocks, sizeof *refs);
    if (!refs) return "out of memory";
    msg = NULL;
    int n = 0;
    for (const sched_req *r = s->running.head; r && !msg; r = r->next, n++) {
        if (r->status != SCHED_RUNNING)
            msg = "running request with another status";
        else if (r->n_computed > r->n_tokens)
            msg = "computed beyond the tokens";
        else if (r->kv.n_blocks * kv->block_size < r->n_computed)
            msg = "block table does not cover computed tokens";
        else if (r->kv.n_blocks > HR_CDIV(r->n_tokens, kv->block_size))
            msg = "more blocks than tokens need";
        for (int i = 0; i < r->kv.n_blocks && !msg; i++) {
            int32_t b = r->kv.blocks[i];
            if (b < 0 || b >= kv->n_blocks)
                msg = "block id out of range";
            else
                refs[b]++;
        }
    }
    if (!msg && n != s->running.n) msg = "running count wrong";
    if (!msg && n > s->cfg.max_num_seqs) msg = "more running than max_num_seqs";
    n = 0;
    for (const sched_req *r = s->waiting.head; r && !msg; r = r->next, n++) {
        if (r->status != SCHED_WAITING)
            msg = "waiting request with another status";
        else if (r->kv.n_blocks != 0 || r->n_computed != 0)
            msg = "waiting request holds blocks";
    }
    if (!msg && n != s->waiting.n) msg = "waiting count wrong";
    for (int b = 0; b < kv->n_blocks && !msg; b++)
        if (refs[b] != kv->blocks[b].ref) msg = "ref count differs from the block tables";
    free(refs);
    return msg;
}
