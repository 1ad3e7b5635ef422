/* `hearth bench`: measurements that back every figure in docs/PERF.md.
 *   bench copy     memory copy bandwidth of the device (the roofline for decode)
 *   bench latency  offline batch latency: TTFT, per-token latency, tok/s, GB/s
 *   bench serve    load generator against an OpenAI-compatible server (bench_serve.c)
 * Bandwidth convention: a copy of N bytes moves 2N bytes (read + write), as
 * CUDA's bandwidthTest and the 2.97 TB/s figure count it. */
#include <math.h>
#include <pthread.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/log.h"
#include "model/model.h"


static void progress(const char *what, int done, int total) {
    if (total < 2 || !isatty(2)) return; /* a bar only where a person watches */
    int w = 30, fill = (int)((double)done / total * w);
    fprintf(stderr, "\r%-8s [", what);
    for (int i = 0; i < w; i++) fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %d/%d", done, total);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* ------------------------------------------------------------------ copy */
typedef struct { char *dst; const char *src; size_t n; } copy_job;
static void *copy_worker(void *arg) {
    copy_job *j = arg;
    memcpy(j->dst, j->src, j->n);
    return NULL;
}

/* Host memcpy bandwidth with n_threads threads (each copies its own slice). */
static double cpu_copy_gbps(size_t bytes, int iters, int n_threads) {
    char *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) { free(a); free(b); return 0; }
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = 0;
    for (int it = 0; it < iters + 1; it++) {
        pthread_t th[64];
        copy_job jobs[64];
        int nt = HR_MAX(1, HR_MIN(n_threads, 64));
        size_t slice = bytes / nt;
        double t0 = hr_time_now();
        for (int i = 0; i < nt; i++) {
            jobs[i] = (copy_job){b + i * slice, a + i * slice, i == nt - 1 ? bytes - i * slice : slice};
            pthread_create(&th[i], NULL, copy_worker, &jobs[i]);
        }
        for (int i = 0; i < nt; i++) pthread_join(th[i], NULL);
        double dt = hr_time_now() - t0;
        if (it > 0) best = HR_MAX(best, 2.0 * bytes / dt / 1e9); /* first pass warms the pages */
    }
    free(a);
    free(b);
    return best;
}

/* Device copy bandwidth through the backend's optional copy op; 0 if unsupported. */
static double backend_copy_gbps(hr_backend *be, size_t bytes, int iters) {
    if (!be->ops->copy) return 0;
    int64_t ne[1] = {(int64_t)bytes};
    hr_tensor *a = be->ops->tensor_new(be, HR_U8, 1, ne, "bench_a");
    hr_tensor *b = be->ops->tensor_new(be, HR_U8, 1, ne, "bench_b");
    double gbps = 0;
    if (!a || !b) goto done;
    be->ops->copy(be, b, a); /* warm-up */
    be->ops->sync(be);
    double t0 = hr_time_now();
    for (int i = 0; i < iters; i++) be->ops->copy(be, b, a);
    be->ops->sync(be);
    gbps = 2.0 * bytes * iters / (hr_time_now() - t0) / 1e9;
done:
    if (a) be->ops->tensor_free(be, a);
    if (b) be->ops->tensor_free(be, b);
    return gbps;
}

static int bench_copy(int argc, char **argv) {
    const char *device = "auto";
    double size_mb = 1024;
    int iters = 20, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: hearth bench copy [--device cpu|cuda|auto] [--size-mb N] [--iters N] [--threads N]\n"
                   "Measures memory copy bandwidth (read+write bytes per second) of the device;\n"
                   "on the CPU with --threads memcpy threads (default: all cores).\n");
            return 0;
        } else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (!strcmp(argv[i], "--size-mb") && i + 1 < argc) size_mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "hearth bench copy: unknown or incomplete option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (size_mb <= 0 || iters <= 0) {
        fprintf(stderr, "hearth bench copy: --size-mb and --iters must be positive\n");
        return 2;
    }
    size_t bytes = (size_t)(size_mb * 1024 * 1024);
    hr_err err = {0};
    hr_backend_opts bo = {.device = device, .n_threads = threads};
    hr_backend *be = hr_backend_create(&bo, &err);
    if (!be) {
        fprintf(stderr, "hearth bench copy: %s\n", err.msg);
        return 1;
    }
    double gbps;
    if (be->host_memory) {
        int nt = threads > 0 ? threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
        gbps = cpu_copy_gbps(bytes, iters, nt);
    } else {
        gbps = backend_copy_gbps(be, bytes, iters);
    }
    printf("{\"device\": \"%s\", \"bytes\": %zu, \"copy_gbps\": %.1f}\n", be->ops->name, bytes, gbps);
    hr_backend_free(be);
    return gbps > 0 ? 0 : 1;
}

/* --------------------------------------------------------------- latency */
typedef struct {
    const char *model, *device, *json_out;
    int threads, batch, input_len, output_len, iters, warmup, block_size;
    int logit_rows; /* decode rows whose logits come back (0 = all): isolates the logits cost */
    unsigned seed;
} latency_opts;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double *v, int n, double p) {
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    double r = p / 100.0 * (n - 1);
    int lo = (int)floor(r), hi = (int)ceil(r);
    return v[lo] + (v[hi] - v[lo]) * (r - lo);
}

/* Runs batch sequences of input_len random tokens through one prefill step
 * (all sequences in one step), then output_len-1 decode steps. Times each step. */
static int run_once(hr_model *m, const latency_opts *o, unsigned seed, double *ttft, double *decode_times,
                    hr_err *err) {
    int B = o->batch, bs = o->block_size, vocab = hr_model_vocab_size(m);
    int total = o->input_len + o->output_len;
    int nb = HR_CDIV(total, bs);
    int n_tok = B * o->input_len;
    int32_t *tokens = malloc(sizeof(int32_t) * n_tok), *pos = malloc(sizeof(int32_t) * n_tok),
            *slots = malloc(sizeof(int32_t) * n_tok), *qs = malloc(sizeof(int32_t) * (B + 1)),
            *lens = malloc(sizeof(int32_t) * B), *bt = malloc(sizeof(int32_t) * B * nb),
            *rows = malloc(sizeof(int32_t) * B), *last = malloc(sizeof(int32_t) * B);
    int rc = HR_ENOMEM;
    if (!tokens || !pos || !slots || !qs || !lens || !bt || !rows || !last) {
        hr_err_set(err, rc, "out of memory");
        goto done;
    }
    for (int s = 0; s < B; s++)
        for (int b = 0; b < nb; b++) bt[s * nb + b] = s * nb + b;
    for (int s = 0; s < B; s++) {
        qs[s] = s * o->input_len;
        lens[s] = o->input_len;
        rows[s] = (s + 1) * o->input_len - 1;
        for (int i = 0; i < o->input_len; i++) {
            int t = s * o->input_len + i;
            seed = seed * 1664525u + 1013904223u;
            tokens[t] = (int32_t)((seed >> 8) % (unsigned)vocab);
            pos[t] = i;
            slots[t] = bt[s * nb + i / bs] * bs + i % bs;
        }
    }
    qs[B] = n_tok;
    hr_step st = {.n_tokens = n_tok, .tokens = tokens, .positions = pos, .slot_mapping = slots, .n_seqs = B,
                  .query_start = qs, .seq_lens = lens, .block_tables = bt, .max_blocks_per_seq = nb,
                  .block_size = bs, .n_logits = B, .logit_rows = rows};
    double t0 = hr_time_now();
    rc = hr_model_forward_greedy(m, &st, last, err);
    if (rc) goto done;
    *ttft = hr_time_now() - t0;
    for (int step = 0; step < o->output_len - 1; step++) {
        for (int s = 0; s < B; s++) {
            int p = o->input_len + step;
            tokens[s] = last[s];
            pos[s] = p;
            slots[s] = bt[s * nb + p / bs] * bs + p % bs;
            qs[s] = s;
            lens[s] = p + 1;
            rows[s] = s;
        }
        qs[B] = B;
        st.n_tokens = B;
        st.n_logits = o->logit_rows > 0 ? HR_MIN(o->logit_rows, B) : B;
        double t1 = hr_time_now();
        rc = hr_model_forward_greedy(m, &st, last, err);
        if (rc) goto done;
        decode_times[step] = hr_time_now() - t1;
        if ((step & 15) == 0 || step == o->output_len - 2) progress("decode", step + 1, o->output_len - 1);
    }
    rc = HR_OK;
done:
    free(tokens); free(pos); free(slots); free(qs); free(lens); free(bt); free(rows); free(last);
    return rc;
}

static void latency_usage(FILE *f) {
    fprintf(f,
            "usage: hearth bench latency --model PATH|synthetic:NAME [options]\n"
            "  --device cpu|cuda|auto   backend (default auto)\n"
            "  --threads N              CPU threads (default all cores)\n"
            "  --batch-size N           sequences decoded together (default 1)\n"
            "  --input-len N            prompt tokens per sequence (default 128)\n"
            "  --output-len N           generated tokens per sequence (default 128)\n"
            "  --num-iters N            measured runs (default 3)\n"
            "  --num-iters-warmup N     unmeasured runs first (default 1)\n"
            "  --block-size N           KV block size (default 16)\n"
            "  --logit-rows N           decode steps pick the next token of the first N sequences\n"
            "                           only (default all; the others repeat their token)\n"
            "  --output-json FILE       also write the results as JSON\n"
            "Reports TTFT, per-token decode latency (mean, p50, p95, p99), decode tok/s,\n"
            "prompt tok/s, the weight+KV bytes each decode step streams (MoE: the routed\n"
            "experts only), achieved GB/s and\n"
            "its share of the device's measured copy bandwidth, and peak device memory.\n"
            "Each step's time includes the greedy pick of the next tokens (on the device\n"
            "when the backend has argmax), as a server step pays it.\n");
}

static int parse_int(const char *flag, const char *v, int lo, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || x < lo || x > 1 << 24) {
        fprintf(stderr, "hearth bench: %s expects an integer >= %d, got '%s'\n", flag, lo, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int bench_latency(int argc, char **argv) {
    latency_opts o = {.device = "auto", .batch = 1, .input_len = 128, .output_len = 128, .iters = 3,
                      .warmup = 1, .block_size = 16, .seed = 1234};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            latency_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "hearth bench latency: unknown option or missing value '%s'\n", a);
            return 2;
        }
        int bad = 0;
        if (!strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--device")) o.device = v;
        else if (!strcmp(a, "--output-json")) o.json_out = v;
        else if (!strcmp(a, "--threads")) bad = parse_int(a, v, 0, &o.threads);
        else if (!strcmp(a, "--batch-size")) bad = parse_int(a, v, 1, &o.batch);
        else if (!strcmp(a, "--input-len")) bad = parse_int(a, v, 1, &o.input_len);
        else if (!strcmp(a, "--output-len")) bad = parse_int(a, v, 2, &o.output_len);
        else if (!strcmp(a, "--num-iters")) bad = parse_int(a, v, 1, &o.iters);
        else if (!strcmp(a, "--num-iters-warmup")) bad = parse_int(a, v, 0, &o.warmup);
        else if (!strcmp(a, "--block-size")) bad = parse_int(a, v, 1, &o.block_size);
        else if (!strcmp(a, "--logit-rows")) bad = parse_int(a, v, 1, &o.logit_rows);
        else {
            fprintf(stderr, "hearth bench latency: unknown option '%s'\n", a);
            return 2;
        }
        if (bad) return 2;
        i++;
    }
    if (!o.model) {
        fprintf(stderr, "hearth bench latency: --model is required\n");
        return 2;
    }
    hr_err err = {0};
    hr_backend_opts bo = {.device = o.device, .n_threads = o.threads};
    hr_backend *be = hr_backend_create(&bo, &err);
    if (!be) {
        fprintf(stderr, "hearth bench latency: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    hr_model *m = NULL;
    double *dec = NULL, *all = NULL, *ttfts = NULL;
    double t_load = hr_time_now();
    if (hr_model_load(o.model, be, NULL, &m, &err) != HR_OK) {
        fprintf(stderr, "hearth bench latency: %s\n", err.msg);
        goto done;
    }
    t_load = hr_time_now() - t_load;
    int nb = o.batch * HR_CDIV(o.input_len + o.output_len, o.block_size);
    if (hr_model_kv_alloc(m, nb, o.block_size, &err) != HR_OK) {
        fprintf(stderr, "hearth bench latency: %s\n", err.msg);
        goto done;
    }
    /* the roofline: measured copy bandwidth of this device */
    double copy_gbps = be->host_memory
                           ? cpu_copy_gbps((size_t)512 << 20, 5, o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN))
                           : backend_copy_gbps(be, (size_t)1 << 30, 20);
    int nd = o.output_len - 1;
    dec = calloc((size_t)nd, sizeof *dec);
    all = calloc((size_t)nd * o.iters, sizeof *all);
    ttfts = calloc((size_t)o.iters, sizeof *ttfts);
    if (!dec || !all || !ttfts) goto done;
    double dec_sum = 0, ttft_sum = 0;
    for (int it = 0; it < o.warmup + o.iters; it++) {
        double ttft;
        if (run_once(m, &o, o.seed + it, &ttft, dec, &err) != HR_OK) {
            fprintf(stderr, "hearth bench latency: %s\n", err.msg);
            goto done;
        }
        if (it < o.warmup) continue;
        int k = it - o.warmup;
        ttfts[k] = ttft;
        ttft_sum += ttft;
        for (int i = 0; i < nd; i++) {
            all[(size_t)k * nd + i] = dec[i];
            dec_sum += dec[i];
        }
    }
    const hr_config *c = hr_model_config(m);
    double n_dec = (double)nd * o.iters;
    double tpot = dec_sum / n_dec;
    double weights = (double)hr_model_weight_bytes(m);
    double elt = hr_dtype_size(c->dtype == HR_F32 || c->dtype == HR_F16 ? c->dtype : HR_BF16);
    /* an untied embedding table is not streamed: a step reads B of its rows
     * (the 15.0 GB per token for Llama-3.1-8B counts it out too) */
    double emb = (double)c->vocab_size * c->hidden_size * elt;
    if (!c->tie_word_embeddings && emb < weights) weights -= emb;
    if (c->num_experts > 1 && c->num_experts_per_tok > 0) {
        double E = c->num_experts, k = c->num_experts_per_tok;
        double experts = E * 3.0 * c->hidden_size * c->intermediate_size * c->num_hidden_layers * elt;
        /* MoE: a step reads only the experts its tokens are routed to; B
         * tokens routed uniformly to k of E touch 1 - (1 - k/E)^B of them */
        double used = 1.0 - pow(1.0 - k / E, o.batch);
        if (experts < weights) weights -= experts * (1.0 - used);
    }
    /* KV bytes read per decode step: mean context over the run, all layers, K and V */
    double kv_elt = (double)hr_dtype_size(be->kv_dtype);
    double mean_ctx = o.input_len + o.output_len / 2.0;
    double kv_bytes = o.batch * mean_ctx * c->num_hidden_layers * 2.0 * c->num_key_value_heads * c->head_dim * kv_elt;
    double gbps = (weights + kv_bytes) / tpot / 1e9;
    double ttft_mean = ttft_sum / o.iters;
    size_t in_use = 0, peak = 0, total = 0;
    if (be->ops->mem_info) be->ops->mem_info(be, &in_use, &peak, &total);
    double p50 = percentile(all, (int)n_dec, 50), p95 = percentile(all, (int)n_dec, 95),
           p99 = percentile(all, (int)n_dec, 99);
    char json[2048];
    snprintf(json, sizeof json,
             "{\"model\": \"%s\", \"device\": \"%s\", \"batch_size\": %d, \"logit_rows\": %d, \"input_len\": %d, \"output_len\": %d, "
             "\"iters\": %d, \"load_s\": %.3f, \"ttft_ms\": %.3f, \"prompt_tok_per_s\": %.1f, "
             "\"tpot_ms_mean\": %.4f, \"tpot_ms_p50\": %.4f, \"tpot_ms_p95\": %.4f, \"tpot_ms_p99\": %.4f, "
             "\"decode_tok_per_s\": %.2f, \"weight_bytes\": %.0f, \"kv_bytes_per_step\": %.0f, "
             "\"achieved_gbps\": %.1f, \"copy_gbps\": %.1f, \"pct_of_copy_bw\": %.1f, "
             "\"roofline_tok_per_s\": %.2f, \"peak_mem_bytes\": %zu}",
             o.model, be->ops->name, o.batch, o.logit_rows > 0 ? HR_MIN(o.logit_rows, o.batch) : o.batch, o.input_len,
             o.output_len, o.iters, t_load, ttft_mean * 1e3,
             o.batch * o.input_len / ttft_mean, tpot * 1e3, p50 * 1e3, p95 * 1e3, p99 * 1e3, o.batch / tpot,
             weights, kv_bytes, gbps, copy_gbps, copy_gbps > 0 ? 100.0 * gbps / copy_gbps : 0.0,
             copy_gbps > 0 ? o.batch * copy_gbps * 1e9 / (weights + kv_bytes) : 0.0, peak);
    fprintf(stderr,
            "model %s on %s: batch %d, %d in / %d out, %d iters\n"
            "  TTFT            %9.2f ms   (%.0f prompt tok/s)\n"
            "  per token       %9.3f ms   mean, p50 %.3f, p95 %.3f, p99 %.3f\n"
            "  decode          %9.2f tok/s\n"
            "  streamed/step   %9.1f MB   (weights %.1f MB + KV %.1f MB)\n"
            "  achieved        %9.1f GB/s = %.1f%% of measured copy bandwidth %.1f GB/s\n"
            "  roofline        %9.2f tok/s at that bandwidth\n",
            o.model, be->ops->name, o.batch, o.input_len, o.output_len, o.iters, ttft_mean * 1e3,
            o.batch * o.input_len / ttft_mean, tpot * 1e3, p50 * 1e3, p95 * 1e3, p99 * 1e3, o.batch / tpot,
            (weights + kv_bytes) / 1e6, weights / 1e6, kv_bytes / 1e6, gbps,
            copy_gbps > 0 ? 100.0 * gbps / copy_gbps : 0.0, copy_gbps,
            copy_gbps > 0 ? o.batch * copy_gbps * 1e9 / (weights + kv_bytes) : 0.0);
    printf("%s\n", json);
    if (o.json_out) {
        FILE *f = fopen(o.json_out, "w");
        if (!f) {
            fprintf(stderr, "hearth bench latency: cannot write %s\n", o.json_out);
            goto done;
        }
        fprintf(f, "%s\n", json);
        fclose(f);
    }
    rc = 0;
done:
    free(dec);
    free(all);
    free(ttfts);
    hr_model_free(m);
    hr_backend_free(be);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: hearth bench (copy|latency|gemm|serve) [options]\n"
                   "  copy      memory copy bandwidth of the device\n"
                   "  gemm      time of one linear (GEMM/GEMV) per shape and row count\n"
                   "  latency   offline batch latency and throughput of a model\n"
                   "  serve     load test of an OpenAI-compatible server\n"
                   "'hearth bench SUB --help' lists each one's options.\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "copy")) return bench_copy(argc - 1, argv + 1);
    if (!strcmp(argv[1], "latency")) return bench_latency(argc - 1, argv + 1);
    if (!strcmp(argv[1], "serve")) return cmd_bench_serve(argc - 1, argv + 1);
    if (!strcmp(argv[1], "gemm")) return cmd_bench_gemm(argc - 1, argv + 1);
    fprintf(stderr, "hearth bench: unknown benchmark '%s' (copy, latency, gemm, serve)\n", argv[1]);
    return 2;
}
