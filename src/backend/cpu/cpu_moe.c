/* Mixture-of-experts feed-forward on the CPU.
 * 1. router logits = linear(x) (+ bias); 2. per token top-k experts and their
 * weights (Mixtral: softmax over all experts, top-k, optional renormalise;
 * gpt-oss: top-k of the logits, softmax over those k; ties go to the lower
 * expert index as torch.topk does); 3. tokens grouped by expert, so each
 * expert's weights stream through the GEMM once per step for all its tokens;
 * 4. out[t] = sum_k w_k * (down_e(act(gate_e x + gb_e, up_e x + ub_e)) + db_e)
 * (the bias is inside the weighting, as in HF GptOssExperts). */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu.h"

/* Top-k of v[0..n) by value, ties to the lower index; writes indices in order. */
static void topk(const float *v, int n, int k, int *idx) {
    for (int i = 0; i < k; i++) {
        int best = -1;
        for (int e = 0; e < n; e++) {
            bool taken = false;
            for (int j = 0; j < i; j++) taken |= idx[j] == e;
            if (taken) continue;
            if (best < 0 || v[e] > v[best]) best = e;
        }
        idx[i] = best;
    }
}

/* Routing for one token: fills k expert ids and weights from E logits
 * (overwritten with probabilities for SOFTMAX_TOPK). */
static void route_token(const hr_moe *m, float *logits, int *ids, float *w) {
    int E = m->n_experts, k = m->top_k;
    if (m->route == HR_ROUTE_TOPK_SOFTMAX) {
        topk(logits, E, k, ids);
        float mx = logits[ids[0]], sum = 0;
        for (int i = 0; i < k; i++) sum += w[i] = expf(logits[ids[i]] - mx);
        for (int i = 0; i < k; i++) w[i] /= sum;
        return;
    }
    /* SOFTMAX_TOPK: softmax over all experts first */
    float mx = -INFINITY, sum = 0;
    for (int e = 0; e < E; e++) mx = fmaxf(mx, logits[e]);
    float *p = logits;
    for (int e = 0; e < E; e++) sum += p[e] = expf(logits[e] - mx);
    for (int e = 0; e < E; e++) p[e] /= sum;
    topk(p, E, k, ids);
    float ks = 0;
    for (int i = 0; i < k; i++) ks += w[i] = p[ids[i]];
    if (m->renormalize)
        for (int i = 0; i < k; i++) w[i] /= ks;
}

static int check_experts(hr_backend *be, const hr_moe *m, int64_t H, int64_t *F) {
    const hr_tensor *g = m->gate, *u = m->up, *d = m->down;
    if (!g || !u || !d || g->ndim != 3 || u->ndim != 3 || d->ndim != 3)
        return hr_err_set(&be->err, HR_EINVAL, "cpu moe: gate/up/down must be 3-D expert stacks");
    *F = g->ne[1];
    int E = m->n_experts;
    if (g->ne[0] != E || u->ne[0] != E || d->ne[0] != E || g->ne[2] != H || u->ne[1] != *F || u->ne[2] != H ||
        d->ne[1] != H || d->ne[2] != *F)
        return hr_err_set(&be->err, HR_EINVAL, "cpu moe: experts must be gate/up [%d, F, %lld] and down [%d, %lld, F]",
                          E, (long long)H, E, (long long)H);
    for (int i = 0; i < 3; i++) {
        const hr_tensor *t = i == 0 ? g : i == 1 ? u : d;
        if (t->dtype != HR_F32 && t->dtype != HR_BF16 && t->dtype != HR_F16)
            return hr_err_set(&be->err, HR_EUNSUP, "cpu moe: expert tensor '%s' is %s; F32/BF16/F16 supported", t->name,
                              hr_dtype_name(t->dtype));
    }
    const hr_tensor *bs[3] = {m->gate_bias, m->up_bias, m->down_bias};
    int64_t bn[3] = {(int64_t)E * *F, (int64_t)E * *F, (int64_t)E * H};
    for (int i = 0; i < 3; i++) {
        int rc;
        if (bs[i] && (rc = cpu_check(be, "moe", bs[i], "expert bias", HR_F32, bn[i]))) return rc;
    }
    return HR_OK;
}

/* Carves n floats (64-byte aligned) off *p. */
static float *carve(float **p, size_t n) {
    float *r = *p;
    *p += HR_CDIV(n, 16) * 16;
    return r;
}

int cpu_op_moe(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_moe *m) {
    int rc = cpu_check(be, "moe", x, "x", HR_F32, 1);
    if (rc) return rc;
    int64_t H = hr_tensor_cols(x), F = 0;
    int T = (int)hr_tensor_rows(x), E = m->n_experts, K = m->top_k;
    if (E <= 0 || K <= 0 || K > E) return hr_err_set(&be->err, HR_EINVAL, "cpu moe: top_k %d of %d experts", K, E);
    if ((rc = cpu_check(be, "moe", out, "out", HR_F32, T * H))) return rc;
    if ((rc = check_experts(be, m, H, &F))) return rc;
    const hr_tensor *rw = m->router.w;
    if (!rw || rw->ndim != 2 || rw->ne[0] != E || rw->ne[1] != H ||
        (rw->dtype != HR_F32 && rw->dtype != HR_BF16 && rw->dtype != HR_F16))
        return hr_err_set(&be->err, HR_EINVAL, "cpu moe: router must be F32/BF16/F16 [%d, %lld]", E, (long long)H);

    size_t TK = (size_t)T * K;
    size_t need = 0;
    size_t parts[] = {(size_t)T * E,     TK,           TK, TK, (size_t)E + 1, (size_t)E, (size_t)T * H,
                      (size_t)T * F * 2, (size_t)T * H};
    for (size_t i = 0; i < HR_ARRAY_LEN(parts); i++) need += HR_CDIV(parts[i], 16) * 16;
    float *buf = cpu_shared(be, CPU_SLOT_MOE, need * sizeof(float));
    if (!buf) return be->err.code;
    float *logits = carve(&buf, parts[0]);
    int32_t *sel = (int32_t *)carve(&buf, TK);   /* expert of (t, i) */
    float *selw = carve(&buf, TK);               /* weight of (t, i) */
    int32_t *order = (int32_t *)carve(&buf, TK); /* (t, i) pairs sorted by expert */
    int32_t *start = (int32_t *)carve(&buf, (size_t)E + 1);
    int32_t *cursor = (int32_t *)carve(&buf, (size_t)E);
    float *xe = carve(&buf, (size_t)T * H);
    float *gu = carve(&buf, (size_t)T * F * 2);
    float *ye = carve(&buf, (size_t)T * H);

    /* 1-2: router and routing */
    const float *rbias = NULL;
    if (m->router.bias && !(rbias = cpu_vec_f32(be, "moe", m->router.bias, E, CPU_SLOT_VEC))) return be->err.code;
    if ((rc = cpu_linear_raw(be, logits, E, x->data, T, (int)H, rw->data, rw->dtype, E, rbias, m->router.input_scale)))
        return rc;
    for (int t = 0; t < T; t++) route_token(m, logits + (size_t)t * E, sel + (size_t)t * K, selw + (size_t)t * K);

    /* 3: counting sort of the (token, slot) pairs by expert, tokens ascending */
    memset(start, 0, (size_t)(E + 1) * sizeof(int32_t));
    for (size_t i = 0; i < TK; i++) start[sel[i] + 1]++;
    for (int e = 0; e < E; e++) start[e + 1] += start[e];
    for (int e = 0; e < E; e++) cursor[e] = start[e];
    for (size_t i = 0; i < TK; i++) order[cursor[sel[i]]++] = (int32_t)i;

    /* 4: experts */
    memset(out->data, 0, (size_t)T * H * sizeof(float));
    float *g = gu, *u = gu + (size_t)T * F;
    size_t gesz = hr_dtype_size(m->gate->dtype), uesz = hr_dtype_size(m->up->dtype);
    size_t desz = hr_dtype_size(m->down->dtype);
    const float *gb = m->gate_bias ? m->gate_bias->data : NULL, *ub = m->up_bias ? m->up_bias->data : NULL;
    const float *db = m->down_bias ? m->down_bias->data : NULL;
    for (int e = 0; e < E; e++) {
        int n = start[e + 1] - start[e];
        if (n == 0) continue;
        const int32_t *pairs = order + start[e];
        for (int r = 0; r < n; r++)
            memcpy(xe + (size_t)r * H, (const float *)x->data + (size_t)(pairs[r] / K) * H, (size_t)H * sizeof(float));
        const char *wg = (const char *)m->gate->data + (size_t)e * F * H * gesz;
        const char *wu = (const char *)m->up->data + (size_t)e * F * H * uesz;
        const char *wd = (const char *)m->down->data + (size_t)e * H * F * desz;
        if ((rc =
                 cpu_linear_raw(be, g, (int)F, xe, n, (int)H, wg, m->gate->dtype, (int)F, gb ? gb + e * F : NULL, 0)) ||
            (rc = cpu_linear_raw(be, u, (int)F, xe, n, (int)H, wu, m->up->dtype, (int)F, ub ? ub + e * F : NULL, 0)))
            return rc;
        cpu_swiglu_rows(g, g, u, (size_t)n * F, &m->act);
        if ((rc = cpu_linear_raw(be, ye, (int)H, g, n, (int)F, wd, m->down->dtype, (int)H, db ? db + e * H : NULL, 0)))
            return rc;
        for (int r = 0; r < n; r++) {
            float w = selw[pairs[r]];
            float *o = (float *)out->data + (size_t)(pairs[r] / K) * H;
            const float *y = ye + (size_t)r * H;
            for (int64_t i = 0; i < H; i++) o[i] += w * y[i];
        }
    }
    return HR_OK;
}
