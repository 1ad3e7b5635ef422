/* CUDA graphs for repeated step shapes (decode): the op log, its comparison,
 * and the cache of instantiated graphs keyed by the step's shape (tokens,
 * sequences, logit rows, block table width, block size, context bucket).
 * A shape is run eagerly the first time (buffers grow, tables upload, no
 * capture-unsafe call is left for later), captured the second time, replayed
 * after that. Replay is only launched when this step's op log equals the
 * captured one, so a moved buffer (activations regrown, cache reallocated)
 * can never replay stale pointers: the step then runs eagerly from the log.
 * HEARTH_CUDA_GRAPHS=0 turns graphs off. Pure-decode batches are padded by the
 * model to the size buckets of cu_batch_bucket (HEARTH_CUDA_BUCKETS=0: off),
 * so the key sees the bucket, not the exact batch size. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cu_types.cuh"
extern "C" {
#include "core/log.h"
}

#define CU_GRAPH_MAX_TOKENS 256

/* HEARTH_CUDA_GRAPH_LOG=1: one line per new step shape (run eagerly) and
 * per capture with its instantiation time, to see graph churn in a run */
static bool graph_log(void) {
    static int v = -1;
    if (v < 0) v = hr_env_on("HEARTH_CUDA_GRAPH_LOG", false);
    return v != 0;
}

void cu_graphs_init(cu_backend *c) {
    c->graphs_on = hr_env_on("HEARTH_CUDA_GRAPHS", true);
    c->buckets_on = hr_env_on("HEARTH_CUDA_BUCKETS", true);
    c->cur = -1;
    c->mode = CU_EAGER;
}

static void drop(cu_graph *g) {
    if (g->exec) cudaGraphExecDestroy(g->exec);
    free(g->log);
    memset(g, 0, sizeof(*g));
}

/* Decode batch-size buckets: 1, 2, 4, 8, then multiples of 8 up to 64, then
 * multiples of 16 up to CU_GRAPH_MAX_TOKENS (23 buckets). Padding costs at most
 * 7 (<= 64) or 15 (<= 256) dummy rows, which the weight-streaming GEMV and
 * cuBLASLt absorb at almost no cost at these sizes, and a serving batch whose
 * size drifts by a few sequences keeps replaying one graph. Larger steps are
 * never captured, so they are not padded; nor is anything with graphs off. */
int cu_batch_bucket(cu_backend *c, int n) {
    if (!c->graphs_on || !c->buckets_on || n <= 2 || n > CU_GRAPH_MAX_TOKENS) return n;
    if (n <= 8) {
        int p = 4;
        while (p < n) p *= 2;
        return p;
    }
    int g = n <= 64 ? 8 : 16;
    return HR_MIN((n + g - 1) / g * g, CU_GRAPH_MAX_TOKENS);
}

void cu_graphs_invalidate(cu_backend *c) {
    for (int i = 0; i < CU_MAX_GRAPHS; i++) drop(&c->graphs[i]);
    c->cur = -1;
}

void cu_graphs_free(cu_backend *c) {
    cu_graph_abort(c);
    cu_graphs_invalidate(c);
    free(c->log);
    c->log = NULL;
}

void cu_graph_abort(cu_backend *c) {
    c->n_pend = 0;
    if (c->mode == CU_CAPTURE) {
        cudaGraph_t g = NULL;
        cudaStreamEndCapture(c->stream, &g);
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();
        if (c->cur >= 0) c->graphs[c->cur].failed = true;
    }
    c->mode = CU_EAGER;
    c->cur = -1;
    c->n_log = 0;
}

cu_op *cu_graph_log(cu_backend *c, cu_op_kind kind) {
    if (c->mode == CU_EAGER) return NULL;
    if (c->n_log == c->cap_log) {
        c->cap_log = c->cap_log ? 2 * c->cap_log : 512;
        c->log = (cu_op *)hr_xrealloc(c->log, sizeof(cu_op) * c->cap_log);
    }
    cu_op *o = &c->log[c->n_log++];
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    return o;
}

static bool same_tensor(const hr_tensor *a, const hr_tensor *b) {
    if (a->data != b->data || a->dtype != b->dtype || a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->ne[i] != b->ne[i]) return false;
    return true;
}

static bool same_lin(const hr_linear *a, const hr_linear *b) {
    return a->w == b->w && a->bias == b->bias && a->input_scale == b->input_scale;
}

static bool same_act(const hr_act *a, const hr_act *b) {
    return a->alpha == b->alpha && a->limit == b->limit && a->up_offset == b->up_offset;
}

/* Equal ops launch identical kernels with identical arguments. */
static bool same_op(const cu_op *a, const cu_op *b) {
    if (a->kind != b->kind || a->n_t != b->n_t || a->i0 != b->i0 || a->i1 != b->i1) return false;
    for (int i = 0; i < a->n_t; i++)
        if (!same_tensor(&a->t[i], &b->t[i])) return false;
    switch (a->kind) {
    case CU_OP_RMSNORM:
    case CU_OP_ADD_RMSNORM: return a->p.eps == b->p.eps;
    case CU_OP_LINEAR: return same_lin(&a->p.lin, &b->p.lin);
    case CU_OP_ROPE:
    case CU_OP_QKV_ROPE_STORE:
        return a->p.rope.head_dim == b->p.rope.head_dim && a->p.rope.rot_dim == b->p.rope.rot_dim &&
               a->p.rope.inv_freq == b->p.rope.inv_freq && a->p.rope.mscale == b->p.rope.mscale && a->tab &&
               a->tab == b->tab;
    case CU_OP_ATTENTION: {
        const hr_attn_params *x = &a->p.attn, *y = &b->p.attn;
        return x->n_heads == y->n_heads && x->n_kv_heads == y->n_kv_heads && x->head_dim == y->head_dim &&
               x->scale == y->scale && x->window == y->window && x->sinks == y->sinks;
    }
    case CU_OP_SWIGLU: return same_act(&a->p.act, &b->p.act);
    case CU_OP_MOE: {
        const hr_moe *x = &a->p.moe, *y = &b->p.moe;
        return x->n_experts == y->n_experts && x->top_k == y->top_k && x->route == y->route &&
               x->renormalize == y->renormalize && same_lin(&x->router, &y->router) && x->gate == y->gate &&
               x->up == y->up && x->down == y->down && x->gate_bias == y->gate_bias && x->up_bias == y->up_bias &&
               x->down_bias == y->down_bias && same_act(&x->act, &y->act);
    }
    default: return true;
    }
}

static int run_log(cu_backend *c, const cu_op *log, int n) {
    c->mode = CU_EAGER;
    for (int i = 0; i < n; i++) {
        int rc = cu_exec_op(c, &log[i]);
        if (rc) return rc;
    }
    return HR_OK;
}

void cu_graph_flush(cu_backend *c) {
    if (c->mode == CU_EAGER) return;
    c->n_pend = 0; /* the held-back linears are in the log that runs below */
    if (c->mode == CU_CAPTURE) {
        cudaGraph_t g = NULL;
        cudaStreamEndCapture(c->stream, &g);
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();
        if (c->cur >= 0) c->graphs[c->cur].failed = true;
    }
    int n = c->n_log;
    c->cur = -1;
    c->n_log = 0;
    run_log(c, c->log, n); /* errors land in be->err; the caller's next op reports */
}

void cu_graph_demote(cu_backend *c) {
    if (c->mode != CU_CAPTURE) return;
    c->n_pend = 0; /* held-back linears are in the log that runs below */
    cudaGraph_t g = NULL;
    cudaStreamEndCapture(c->stream, &g);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    if (c->cur >= 0) c->graphs[c->cur].failed = true;
    int n = c->n_log > 0 ? c->n_log - 1 : 0; /* the last entry is the op now running */
    c->cur = -1;
    c->n_log = 0;
    run_log(c, c->log, n);
}

int cu_graph_step_begin(cu_backend *c) {
    cu_graph_abort(c); /* a previous step that failed half-way */
    const cu_step *s = &c->step;
    if (!c->graphs_on || s->n_tokens <= 0 || s->n_tokens > CU_GRAPH_MAX_TOKENS) return HR_OK;
    /* everything a launch shape depends on: grids (tokens, tiles), attention
     * splits (context bucket), the prefill/decode attention choice */
    int key[8] = {s->n_tokens, s->n_seqs,      s->n_logits, s->mbps,
                  s->block_size, s->ctx_bucket, s->n_tiles,  s->max_q_len >= CU_TC_MIN_Q};
    int hit = -1, lru = 0;
    for (int i = 0; i < CU_MAX_GRAPHS; i++) {
        cu_graph *g = &c->graphs[i];
        if (g->seen && !memcmp(g->key, key, sizeof(key))) {
            hit = i;
            break;
        }
        if (!g->seen || (c->graphs[lru].seen && g->last_use < c->graphs[lru].last_use)) lru = i;
    }
    if (hit < 0) { /* first sighting: eager */
        if (graph_log())
            hr_log(HR_LOG_INFO, "cuda graphs: new shape tokens %d seqs %d logits %d mbps %d ctx %d (eager)", key[0],
                   key[1], key[2], key[3], key[5]);
        drop(&c->graphs[lru]);
        memcpy(c->graphs[lru].key, key, sizeof(key));
        c->graphs[lru].seen = 1;
        c->graphs[lru].last_use = ++c->use_clock;
        return HR_OK;
    }
    cu_graph *g = &c->graphs[hit];
    g->last_use = ++c->use_clock;
    if (g->failed) return HR_OK;
    c->cur = hit;
    c->n_log = 0;
    if (g->exec) {
        c->mode = CU_REPLAY;
        return HR_OK;
    }
    g->seen++;
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        cudaGetLastError();
        g->failed = true;
        c->cur = -1;
        return HR_OK;
    }
    c->mode = CU_CAPTURE;
    return HR_OK;
}

int cu_graph_step_end(cu_backend *c) {
    cu_mode mode = c->mode;
    cu_graph *g = c->cur >= 0 ? &c->graphs[c->cur] : NULL;
    int rc = HR_OK;
    if (mode == CU_CAPTURE) {
        cudaGraph_t graph = NULL;
        cudaGraphExec_t exec = NULL;
        int prc = cu_pend_flush(c); /* still inside the capture */
        c->mode = CU_EAGER;
        if (prc) {
            cudaStreamEndCapture(c->stream, &graph);
            if (graph) cudaGraphDestroy(graph);
            cudaGetLastError();
            g->failed = true;
            c->cur = -1;
            c->n_log = 0;
            return prc;
        }
        double t0 = graph_log() ? hr_time_now() : 0;
        cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
        if (e == cudaSuccess && graph) e = cudaGraphInstantiate(&exec, graph, 0);
        if (graph_log())
            hr_log(HR_LOG_INFO, "cuda graphs: captured tokens %d (%d ops), end + instantiate %.2f ms", g->key[0],
                   c->n_log, 1e3 * (hr_time_now() - t0));
        if (graph) cudaGraphDestroy(graph);
        if (e != cudaSuccess || !exec) {
            /* nothing ran during the capture: run the step eagerly now */
            cudaGetLastError();
            g->failed = true;
            rc = run_log(c, c->log, c->n_log);
        } else {
            g->exec = exec;
            g->log = (cu_op *)hr_xmalloc(sizeof(cu_op) * (c->n_log ? c->n_log : 1));
            memcpy(g->log, c->log, sizeof(cu_op) * c->n_log);
            g->n_log = c->n_log;
            e = cudaGraphLaunch(exec, c->stream);
            if (e != cudaSuccess) rc = cu_fail(c, e, "graph launch");
        }
    } else if (mode == CU_REPLAY) {
        bool same = c->n_log == g->n_log;
        for (int i = 0; same && i < c->n_log; i++) same = same_op(&c->log[i], &g->log[i]);
        if (same) {
            c->mode = CU_EAGER;
            cudaError_t e = cudaGraphLaunch(g->exec, c->stream);
            if (e != cudaSuccess) rc = cu_fail(c, e, "graph launch");
        } else {
            int key[8];
            memcpy(key, g->key, sizeof(key));
            drop(g); /* stale: recaptured on a later step of this shape */
            memcpy(g->key, key, sizeof(key));
            g->seen = 1;
            g->last_use = ++c->use_clock;
            rc = run_log(c, c->log, c->n_log);
        }
    }
    c->mode = CU_EAGER;
    c->cur = -1;
    c->n_log = 0;
    return rc;
}
