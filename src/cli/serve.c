/* `hearth serve MODEL`: loads the backend, model, tokenizer and engine, starts
 * the OpenAI-compatible HTTP server, prints "Application startup complete."
 * once it accepts requests, and on SIGINT/SIGTERM stops accepting, lets
 * in-flight requests finish within the grace period (then aborts them),
 * frees everything and exits 0. Flags use vLLM's spellings. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/log.h"
#include "engine/engine.h"
#include "model/model.h"
#include "server/server.h"
#include "tokenizer/tokenizer.h"

#ifndef HEARTH_VERSION
#define HEARTH_VERSION "0.0.0"
#endif

static void usage(FILE *f) {
    fprintf(f, "usage: hearth serve MODEL [options]\n"
               "  MODEL                          HF directory, .gguf file, HF id, or synthetic:NAME\n"
               "  --host H                       bind address (default 0.0.0.0)\n"
               "  --port P                       (default 8000)\n"
               "  --served-model-name NAME       the `model` clients send (default: MODEL)\n"
               "  --api-key KEY                  require 'Authorization: Bearer KEY' (also $HEARTH_API_KEY)\n"
               "  --device cpu|cuda|auto         (default auto)\n"
               "  --threads N                    CPU worker threads (default: all cores)\n"
               "  --max-model-len N              context limit (default: the model's)\n"
               "  --max-num-seqs N               sequences per step (default 256)\n"
               "  --max-num-batched-tokens N     token budget per step (default 8192 on a GPU, 2048 on the CPU)\n"
               "  --block-size N                 tokens per KV block (default 16)\n"
               "  --kv-cache-memory BYTES        KV pool size (suffixes K, M, G)\n"
               "  --gpu-memory-utilization F     KV pool as a fraction of free memory\n"
               "  --enable-prefix-caching / --no-enable-prefix-caching   (default on)\n"
               "  --host-sampling                copy the logits and sample on the host (default: on the device)\n"
               "  --no-warmup                    skip the start-up warm-up requests (default: on a GPU, run before\n"
               "                                 serving, so no client pays for first-use kernel loads)\n"
               "  --max-waiting-requests N       queue limit before 429 (default 0 = unlimited)\n"
               "  --max-request-bytes N          request body limit, 413 beyond (default 16M)\n"
               "  --chat-template FILE           Jinja chat template overriding the tokenizer's\n"
               "  --tokenizer PATH               tokenizer directory, tokenizer.json, .tiktoken or .gguf\n"
               "                                 (default: the model's own; needed for synthetic:NAME)\n"
               "  --timeout-keep-alive S         idle connection timeout (default 60)\n"
               "  --shutdown-grace S             seconds in-flight requests get on SIGTERM (default 10)\n"
               "  --disable-uvicorn-access-log   no per-request log line (also --disable-access-log)\n"
               "vLLM flags without an effect here (--dtype, --trust-remote-code, --enforce-eager, ...) are accepted\n"
               "with a warning; --tensor-parallel-size / --pipeline-parallel-size must be 1.\n");
}

/* "123", "64M", "1.5G", "512KiB" -> bytes; -1 on junk. */
static long long parse_size(const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return -1;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        mul = 1024.0;
        end++;
        break;
    case 'M':
        mul = 1024.0 * 1024;
        end++;
        break;
    case 'G':
        mul = 1024.0 * 1024 * 1024;
        end++;
        break;
    case 'T':
        mul = 1024.0 * 1024 * 1024 * 1024;
        end++;
        break;
    default:
        break;
    }
    if (!strcasecmp(end, "iB") || !strcasecmp(end, "B")) end += strlen(end);
    if (*end) return -1;
    return (long long)(v * mul);
}

static int parse_int(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    long long n = parse_size(v); /* accepts "4k" for lengths, as vLLM does */
    if (n < lo || n > hi) {
        fprintf(stderr, "hearth serve: %s expects a number in [%lld, %lld], got '%s'\n", flag, lo, hi, v);
        return -1;
    }
    *out = n;
    return 0;
}

typedef struct serve_args {
    const char *model;
    hr_server_opts so;
    hr_engine_opts eo;
    const char *device;
    int threads;
    const char *chat_template_file;
    const char *tokenizer;
    double grace_s;
} serve_args;

/* vLLM flags that scripts pass out of habit and that change nothing here:
 * accepted with a warning so `vllm serve` command lines keep working. */
static const char *const k_ignored_switches[] = {"--trust-remote-code", "--enforce-eager", "--disable-log-requests",
                                                 "--disable-log-stats", "--disable-frontend-multiprocessing"};
static const char *const k_ignored_values[] = {"--dtype",
                                               "--uvicorn-log-level",
                                               "--swap-space",
                                               "--download-dir",
                                               "--load-format",
                                               "--seed",
                                               "--tensor-parallel-size",
                                               "--pipeline-parallel-size"};

static bool in_list(const char *s, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, list[i])) return true;
    return false;
}

/* Returns 0 ok, 1 help printed, 2 usage error. */
static int parse_args(int argc, char **argv, serve_args *a) {
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout);
            return 1;
        }
        if (arg[0] != '-' || arg[1] != '-') {
            if (a->model) {
                fprintf(stderr, "hearth serve: unexpected argument '%s'\n", arg);
                return 2;
            }
            a->model = arg;
            continue;
        }
        if (!strcmp(arg, "--enable-prefix-caching")) {
            a->eo.enable_prefix_caching = true;
            continue;
        }
        if (!strcmp(arg, "--no-enable-prefix-caching")) {
            a->eo.enable_prefix_caching = false;
            continue;
        }
        if (!strcmp(arg, "--host-sampling")) {
            a->eo.host_sampling = true;
            continue;
        }
        if (!strcmp(arg, "--no-warmup")) {
            a->eo.warmup = -1;
            continue;
        }
        if (!strcmp(arg, "--disable-uvicorn-access-log") || !strcmp(arg, "--disable-access-log")) {
            a->so.access_log = false;
            continue;
        }
        if (in_list(arg, k_ignored_switches, HR_ARRAY_LEN(k_ignored_switches))) {
            fprintf(stderr, "hearth serve: %s has no effect here, ignored\n", arg);
            continue;
        }
        /* --flag value or --flag=value */
        char name[64];
        const char *val;
        char *eq = strchr(arg, '=');
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
            if (i + 1 >= argc) {
                fprintf(stderr, "hearth serve: %s needs a value\n", arg);
                return 2;
            }
            val = argv[++i];
        }
        long long n;
        if (!strcmp(name, "--host"))
            a->so.host = val;
        else if (!strcmp(name, "--port")) {
            if (parse_int(name, val, 0, 65535, &n)) return 2;
            a->so.port = (int)n;
        } else if (!strcmp(name, "--served-model-name"))
            a->so.served_model_name = val;
        else if (!strcmp(name, "--api-key"))
            a->so.api_key = val;
        else if (!strcmp(name, "--device"))
            a->device = val;
        else if (!strcmp(name, "--threads")) {
            if (parse_int(name, val, 0, 4096, &n)) return 2;
            a->threads = (int)n;
        } else if (!strcmp(name, "--max-model-len")) {
            if (parse_int(name, val, 1, 1 << 30, &n)) return 2;
            a->eo.max_model_len = (int)n;
        } else if (!strcmp(name, "--max-num-seqs")) {
            if (parse_int(name, val, 1, 1 << 20, &n)) return 2;
            a->eo.max_num_seqs = (int)n;
        } else if (!strcmp(name, "--max-num-batched-tokens")) {
            if (parse_int(name, val, 1, 1 << 30, &n)) return 2;
            a->eo.max_num_batched_tokens = (int)n;
        } else if (!strcmp(name, "--block-size")) {
            if (parse_int(name, val, 1, 1 << 16, &n)) return 2;
            a->eo.block_size = (int)n;
        } else if (!strcmp(name, "--kv-cache-memory")) {
            if (parse_int(name, val, 1, (long long)1 << 50, &n)) return 2;
            a->eo.kv_cache_memory = (size_t)n;
        } else if (!strcmp(name, "--gpu-memory-utilization")) {
            char *end;
            double f = strtod(val, &end);
            if (*end || !(f > 0 && f <= 1)) {
                fprintf(stderr, "hearth serve: --gpu-memory-utilization expects a fraction in (0, 1]\n");
                return 2;
            }
            a->eo.kv_memory_fraction = (float)f;
        } else if (!strcmp(name, "--max-waiting-requests")) {
            if (parse_int(name, val, 0, 1 << 30, &n)) return 2;
            a->eo.max_waiting_requests = (int)n;
        } else if (!strcmp(name, "--max-request-bytes")) {
            if (parse_int(name, val, 1, (long long)1 << 40, &n)) return 2;
            a->so.max_request_bytes = (size_t)n;
        } else if (!strcmp(name, "--chat-template"))
            a->chat_template_file = val;
        else if (!strcmp(name, "--tokenizer"))
            a->tokenizer = val;
        else if (!strcmp(name, "--timeout-keep-alive")) {
            if (parse_int(name, val, 1, 86400, &n)) return 2;
            a->so.timeout_s = (int)n;
        } else if (!strcmp(name, "--shutdown-grace")) {
            char *end;
            a->grace_s = strtod(val, &end);
            if (*end || !(a->grace_s >= 0)) {
                fprintf(stderr, "hearth serve: --shutdown-grace expects seconds\n");
                return 2;
            }
        } else if (in_list(name, k_ignored_values, HR_ARRAY_LEN(k_ignored_values))) {
            bool parallel = strstr(name, "parallel-size") != NULL;
            if (parallel && strcmp(val, "1") != 0) {
                fprintf(stderr, "hearth serve: %s %s is not supported (one device)\n", name, val);
                return 2;
            }
            fprintf(stderr, "hearth serve: %s %s has no effect here, ignored\n", name, val);
        } else {
            fprintf(stderr, "hearth serve: unknown option %s (see hearth serve --help)\n", name);
            return 2;
        }
    }
    if (!a->model) {
        usage(stderr);
        return 2;
    }
    return 0;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int cmd_serve(int argc, char **argv) {
    serve_args a = {.grace_s = 10.0};
    hr_server_opts_default(&a.so);
    hr_engine_opts_default(&a.eo);
    a.so.version = HEARTH_VERSION;
    a.so.api_key = getenv("HEARTH_API_KEY");
    int pa = parse_args(argc, argv, &a);
    if (pa) return pa == 1 ? 0 : 2;
    a.so.model_path = a.model;

    /* signals go to sigwait() below, never to a worker thread */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    hr_err err = {0};
    hr_backend *be = NULL;
    hr_model *model = NULL;
    hr_tokenizer *tok = NULL;
    hr_engine *engine = NULL;
    hr_server *srv = NULL;
    char *tmpl = NULL;

    if (a.chat_template_file) {
        size_t len;
        if (hr_read_file(a.chat_template_file, &tmpl, &len, &err) != HR_OK) goto fail;
        a.so.chat_template = tmpl;
    }
    if (!a.tokenizer && !strncmp(a.model, "synthetic:", 10)) {
        hr_err_set(&err, HR_EINVAL, "%s has random weights and no tokenizer: pass --tokenizer PATH "
                   "(one covering its vocabulary)", a.model);
        goto fail;
    }
    hr_backend_opts bo = {.device = a.device, .n_threads = a.threads};
    be = hr_backend_create(&bo, &err);
    if (!be) goto fail;
    hr_model_opts mo = {.weight_dtype = HR_DTYPE_COUNT};
    if (hr_model_load(a.model, be, &mo, &model, &err) != HR_OK) goto fail;
    if (a.tokenizer) {
        struct stat tst;
        int trc = stat(a.tokenizer, &tst) == 0 && S_ISREG(tst.st_mode) && !strstr(a.tokenizer, ".gguf")
                      ? hr_tokenizer_load_file(a.tokenizer, NULL, &tok, &err)
                      : hr_tokenizer_load_model(a.tokenizer, &tok, &err);
        if (trc != HR_OK) goto fail;
    } else if (hr_tokenizer_load_model(hr_model_source(model), &tok, &err) != HR_OK) {
        goto fail;
    }
    a.eo.backend = be; /* on a GPU the KV pool is sized from device memory */
    if (hr_engine_create(model, &a.eo, &engine, &err) != HR_OK) goto fail;
    if (hr_server_start(engine, tok, hr_model_config(model), &a.so, &srv, &err) != HR_OK) goto fail;

    hr_engine_stats st;
    hr_engine_get_stats(engine, &st);
    fprintf(stderr, "INFO:     hearth %s serving %s as '%s' (max_model_len %d, %d KV blocks)\n", HEARTH_VERSION,
            a.model, a.so.served_model_name ? a.so.served_model_name : a.model, st.max_model_len, st.kv_blocks_total);
    fprintf(stderr, "INFO:     hearth running on http://%s:%d (Press CTRL+C to quit)\n", a.so.host,
            hr_server_port(srv));
    fprintf(stderr, "INFO:     Application startup complete.\n");
    fflush(stderr);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "INFO:     Shutting down (%s): no new requests; %d in flight get %.0f s\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", hr_server_in_flight(srv), a.grace_s);
    fflush(stderr);
    hr_server_quiesce(srv);
    /* the engine finishes what runs within the grace period, then aborts the
     * rest; every HTTP thread then sees its final events and returns */
    hr_engine_shutdown(engine, a.grace_s);
    for (int i = 0; i < 500 && hr_server_in_flight(srv) > 0; i++) sleep_ms(10);
    rc = 0;
    fprintf(stderr, "INFO:     Application shutdown complete.\n");
fail:
    if (rc) fprintf(stderr, "hearth serve: %s\n", err.msg[0] ? err.msg : "failed");
    hr_server_free(srv);
    if (engine) {
        if (rc) hr_engine_shutdown(engine, 0);
        hr_engine_free(engine);
    }
    if (tok) hr_tokenizer_free(tok);
    if (model) hr_model_free(model);
    if (be) hr_backend_free(be);
    free(tmpl);
    return rc;
}
