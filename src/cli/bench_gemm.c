/* `hearth bench gemm`: the time of one linear (out[T, N] = x[T, K] W[N, K]^T,
 * BF16) through the backend's linear op, as a model step runs it, for the
 * linears of a model at several row counts. It is how the GEMM paths
 * (GEMV, cuBLASLt, the experimental Hopper GEMM behind HEARTH_CUDA_WGMMA)
 * are compared shape by shape; a step's time (`bench latency`) is the sum of
 * such linears and the rest.
 *
 * Each shape gets enough copies of its weights that one round over them
 * exceeds the device's last-level cache (weights stream from memory, as in
 * a model whose layers each have their own), filled with random values
 * (tensor cores draw more power on random data than on zeros). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/dtype.h"

typedef struct gemm_shape {
    const char *name;
    int64_t n, k;
} gemm_shape;

/* Llama-3.1-8B's linears, q|k|v and gate|up fused as the model runs them */
static const gemm_shape llama8b[] = {
    {"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096}, {"down", 4096, 14336}, {"lm_head", 128256, 4096},
};

static void gemm_usage(FILE *f) {
    fprintf(f, "usage: hearth bench gemm [options]\n"
               "  --device cpu|cuda|auto   backend (default auto)\n"
               "  --rows LIST              row counts T, comma-separated (default 1,16,64,128,256,512,2048,8192)\n"
               "  --shape N,K              one linear of N outputs and K inputs (default: the linears of\n"
               "                           Llama-3.1-8B: qkv 6144x4096, o 4096x4096, gate_up 28672x4096,\n"
               "                           down 4096x14336, lm_head 128256x4096)\n"
               "  --iters N                timed launches per shape and row count (default 50)\n"
               "  --cache-mb N             weights per shape span at least this many MB, in copies\n"
               "                           used in turn (default 160, > an H100's 50 MB L2)\n"
               "Reports per shape and row count the mean time of one linear, TFLOP/s and the\n"
               "GB/s of its weights + input + output. Which kernel runs is the backend's choice\n"
               "(CUDA: GEMV for few rows, else cuBLASLt; HEARTH_CUDA_WGMMA=1 the Hopper GEMM).\n");
}

static int parse_rows(const char *s, int *rows, int cap) {
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 65536 || n == cap) return -1;
        rows[n++] = (int)v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return n;
}

/* random values: chunk_n of them in BF16 and in F32 */
typedef struct gemm_noise {
    uint16_t *bf;
    float *f32;
    size_t n;
} gemm_noise;

/* fills t (BF16 or F32) with the noise, repeated */
static int fill_random(hr_backend *be, hr_tensor *t, const gemm_noise *nz) {
    const void *src = t->dtype == HR_F32 ? (const void *)nz->f32 : (const void *)nz->bf;
    return hr_tensor_set_repeated(be, t, src, nz->n * hr_dtype_size(t->dtype));
}

static int bench_one(hr_backend *be, const gemm_shape *sh, int T, int iters, double cache_mb, const gemm_noise *nz) {
    const size_t wbytes = (size_t)sh->n * sh->k * 2;
    int copies = (int)HR_MIN(16.0, HR_MAX(1.0, ceil(cache_mb * 1048576.0 / (double)wbytes)));
    hr_tensor *w[16] = {0}, *x = NULL, *out = NULL;
    int64_t ne_x[2] = {T, sh->k}, ne_o[2] = {T, sh->n}, ne_w[2] = {sh->n, sh->k};
    int rc = 1;
    x = be->ops->tensor_new(be, be->act_dtype, 2, ne_x, "bench_x");
    out = be->ops->tensor_new(be, be->act_dtype, 2, ne_o, "bench_out");
    if (!x || !out || fill_random(be, x, nz)) goto done;
    for (int i = 0; i < copies; i++) {
        w[i] = be->ops->tensor_new(be, HR_BF16, 2, ne_w, "bench_w");
        if (!w[i] || fill_random(be, w[i], nz)) goto done;
    }
    /* warm-up: plans, tuning, first-launch costs */
    for (int i = 0; i < HR_MAX(copies, 3); i++) {
        hr_linear l = {w[i % copies], NULL, 0};
        if (be->ops->linear(be, out, x, &l)) goto done;
    }
    if (be->ops->sync(be)) goto done;
    double t0 = hr_time_now();
    for (int i = 0; i < iters; i++) {
        hr_linear l = {w[i % copies], NULL, 0};
        if (be->ops->linear(be, out, x, &l)) goto done;
    }
    if (be->ops->sync(be)) goto done;
    double us = (hr_time_now() - t0) / iters * 1e6;
    double flop = 2.0 * T * (double)sh->n * (double)sh->k;
    double bytes = (double)wbytes + (double)hr_dtype_size(be->act_dtype) * T * (double)(sh->k + sh->n);
    printf("%-8s %6lld %6lld %6d %10.1f %9.1f %9.1f\n", sh->name, (long long)sh->n, (long long)sh->k, T, us,
           flop / us * 1e-6, bytes / us * 1e-3);
    fflush(stdout);
    rc = 0;
done:
    if (rc) fprintf(stderr, "hearth bench gemm: %s %dx%lldx%lld: %s\n", sh->name, T, (long long)sh->n,
                    (long long)sh->k, be->err.msg[0] ? be->err.msg : "allocation or copy failed");
    for (int i = 0; i < copies; i++)
        if (w[i]) be->ops->tensor_free(be, w[i]);
    if (x) be->ops->tensor_free(be, x);
    if (out) be->ops->tensor_free(be, out);
    return rc;
}

int cmd_bench_gemm(int argc, char **argv) {
    const char *device = "auto";
    int rows[32] = {1, 16, 64, 128, 256, 512, 2048, 8192}, n_rows = 8, iters = 50;
    double cache_mb = 160;
    gemm_shape one = {"linear", 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            gemm_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "hearth bench gemm: unknown option or missing value '%s'\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--rows")) {
            if ((n_rows = parse_rows(v, rows, 32)) <= 0) {
                fprintf(stderr, "hearth bench gemm: --rows expects up to 32 integers 1..65536, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--shape")) {
            long long n, k;
            char tail;
            if (sscanf(v, "%lld,%lld%c", &n, &k, &tail) != 2 || n < 1 || k < 1 || n > (1 << 24) || k > (1 << 20)) {
                fprintf(stderr, "hearth bench gemm: --shape expects N,K (positive), got '%s'\n", v);
                return 2;
            }
            one.n = n;
            one.k = k;
        } else if (!strcmp(a, "--iters")) {
            char *end;
            long x = strtol(v, &end, 10);
            if (*end || x < 1 || x > 100000) {
                fprintf(stderr, "hearth bench gemm: --iters expects 1..100000, got '%s'\n", v);
                return 2;
            }
            iters = (int)x;
        } else if (!strcmp(a, "--cache-mb")) {
            char *end;
            cache_mb = strtod(v, &end);
            if (*end || !(cache_mb >= 0) || cache_mb > 65536) {
                fprintf(stderr, "hearth bench gemm: --cache-mb expects 0..65536, got '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "hearth bench gemm: unknown option '%s'\n", a);
            return 2;
        }
    }
    hr_err err = {0};
    hr_backend_opts bo = {.device = device};
    hr_backend *be = hr_backend_create(&bo, &err);
    if (!be) {
        fprintf(stderr, "hearth bench gemm: %s\n", err.msg);
        return 1;
    }
    gemm_noise nz = {.n = (size_t)1 << 22};
    nz.bf = malloc(nz.n * sizeof(uint16_t));
    nz.f32 = malloc(nz.n * sizeof(float));
    if (!nz.bf || !nz.f32) {
        free(nz.bf);
        free(nz.f32);
        hr_backend_free(be);
        return 1;
    }
    uint32_t s = 12345;
    for (size_t i = 0; i < nz.n; i++) {
        s = s * 1664525u + 1013904223u;
        nz.f32[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.2f;
        nz.bf[i] = hr_f32_to_bf16(nz.f32[i]);
    }
    const gemm_shape *shapes = one.n ? &one : llama8b;
    int n_shapes = one.n ? 1 : (int)HR_ARRAY_LEN(llama8b), rc = 0;
    printf("device %s; BF16 weights, %d timed launches each\n", be->ops->name, iters);
    printf("%-8s %6s %6s %6s %10s %9s %9s\n", "name", "N", "K", "T", "us", "TFLOP/s", "GB/s");
    for (int i = 0; i < n_shapes && !rc; i++)
        for (int j = 0; j < n_rows && !rc; j++) rc = bench_one(be, &shapes[i], rows[j], iters, cache_mb, &nz);
    free(nz.bf);
    free(nz.f32);
    hr_backend_free(be);
    return rc;
}
