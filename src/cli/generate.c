/* `hearth generate`: offline generation for one prompt, straight over the
 * model runner (no engine): prefill, then one decode step per token through
 * a paged KV cache, sampling with the engine's sampler. Streams tokens as
 * they come and reports prompt / generation throughput. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "engine/sampler.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define GEN_BLOCK         16  /* KV block size: any value works for one sequence */
#define GEN_PREFILL_CHUNK 256 /* prompt tokens per prefill step, bounds activation memory */

/* The tokenizer may be missing from a partial build; its functions are then
 * NULL and generate works on token ids only. */
#pragma weak hr_tokenizer_load_model
#pragma weak hr_tokenizer_free
#pragma weak hr_tokenizer_encode
#pragma weak hr_tokenizer_eos
#pragma weak hr_detok_new
#pragma weak hr_detok_free
#pragma weak hr_detok_push
#pragma weak hr_detok_flush
#pragma weak hr_tokenizer_decode

typedef struct gen_opts {
    const char *model, *prompt, *prompt_ids, *device;
    int max_tokens, min_tokens, threads;
    bool ignore_eos, json, have_temp, have_top_p, have_top_k;
    hr_sampling_params sp;
} gen_opts;

static void usage(FILE *f) {
    fprintf(f, "usage: hearth generate --model PATH_OR_ID (--prompt TEXT | --prompt-ids 1,2,3) [options]\n"
               "\n"
               "Generates a continuation of one prompt, offline, and prints the tokens as\n"
               "they are produced, then prompt and generation tokens/s.\n"
               "\n"
               "  --model PATH_OR_ID   model directory (config.json + safetensors), .gguf file,\n"
               "                       or Hugging Face id (org/name[@rev]) found in the HF cache\n"
               "  --prompt TEXT        prompt text, encoded with the model's tokenizer\n"
               "  --prompt-ids IDS     prompt as comma-separated token ids (no tokenizer needed)\n"
               "  --max-tokens N       tokens to generate at most (default 64)\n"
               "  --min-tokens N       mask end-of-sequence tokens until N tokens exist (default 0)\n"
               "  --ignore-eos         do not stop at end-of-sequence tokens\n"
               "  --temperature T      sampling temperature; 0 = greedy (default: the model's\n"
               "                       generation_config.json value, else 0)\n"
               "  --top-p P            nucleus sampling mass in (0, 1] (default: generation_config,\n"
               "                       else 1 = off)\n"
               "  --top-k K            keep the K most likely tokens (default: generation_config,\n"
               "                       else 0 = off)\n"
               "  --seed S             seed of the sampler's RNG (reproducible sampling)\n"
               "  --device DEV         cpu, cuda or auto (default auto: cuda when a GPU is present)\n"
               "  --threads N          CPU worker threads (default: all cores)\n"
               "  --json               print, as the last line, one JSON object: ids, text (with a\n"
               "                       tokenizer), prompt_tokens, generated_tokens, prompt_tps,\n"
               "                       gen_tps, ttft_ms; timings then go to stderr\n"
               "  -h, --help           this help\n");
}

/* 0 = parsed, 1 = --help shown, 2 = bad usage (message printed). */
static int parse(int argc, char **argv, gen_opts *o) {
    const char *v;
    memset(o, 0, sizeof *o);
    hr_sampling_params_default(&o->sp);
    o->sp.temperature = 0;
    o->max_tokens = 64;
    o->device = "auto";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define FLAG(name) cli_flag(argc, argv, &i, name, &v)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (FLAG("--model")) {
            if (!v) return 2;
            o->model = v;
        } else if (FLAG("--prompt-ids")) {
            if (!v) return 2;
            o->prompt_ids = v;
        } else if (FLAG("--prompt")) {
            if (!v) return 2;
            o->prompt = v;
        } else if (FLAG("--max-tokens")) {
            if (!v || !cli_int("generate", "--max-tokens", v, 1, 1 << 20, &o->max_tokens)) return 2;
        } else if (FLAG("--min-tokens")) {
            if (!v || !cli_int("generate", "--min-tokens", v, 0, 1 << 20, &o->min_tokens)) return 2;
        } else if (FLAG("--temperature")) {
            if (!v || !cli_float("generate", "--temperature", v, 0, 100, &o->sp.temperature)) return 2;
            o->have_temp = true;
        } else if (FLAG("--top-p")) {
            if (!v || !cli_float("generate", "--top-p", v, 1e-6, 1, &o->sp.top_p)) return 2;
            o->have_top_p = true;
        } else if (FLAG("--top-k")) {
            if (!v || !cli_int("generate", "--top-k", v, 0, 1 << 30, &o->sp.top_k)) return 2;
            o->have_top_k = true;
        } else if (FLAG("--seed")) {
            if (!v || !cli_u64("generate", "--seed", v, &o->sp.seed)) return 2;
            o->sp.has_seed = true;
        } else if (FLAG("--device")) {
            if (!v) return 2;
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) {
                fprintf(stderr, "hearth generate: bad value for --device: '%s' (expected cpu, cuda or auto)\n", v);
                return 2;
            }
            o->device = v;
        } else if (FLAG("--threads")) {
            if (!v || !cli_int("generate", "--threads", v, 1, 1024, &o->threads)) return 2;
        } else {
            fprintf(stderr, "hearth generate: unknown option '%s' (see hearth generate --help)\n", a);
            return 2;
        }
#undef FLAG
    }
    if (!o->model) {
        fprintf(stderr, "hearth generate: --model is required (see hearth generate --help)\n");
        return 2;
    }
    if (!o->prompt == !o->prompt_ids) {
        fprintf(stderr, "hearth generate: give exactly one of --prompt or --prompt-ids\n");
        return 2;
    }
    o->sp.min_tokens = o->min_tokens;
    o->sp.ignore_eos = o->ignore_eos;
    return 0;
}

/* One step feeding n (<= GEN_PREFILL_CHUNK) tokens of the single sequence
 * starting at pos; scratch holds 2 * GEN_PREFILL_CHUNK ints. */
static int run_step(hr_model *m, const int32_t *toks, int n, int pos, const int32_t *bt, int max_blocks, float *logits,
                    int32_t *scratch, hr_err *err) {
    int32_t *p = scratch, *slots = scratch + GEN_PREFILL_CHUNK;
    for (int i = 0; i < n; i++) {
        p[i] = pos + i;
        slots[i] = bt[(pos + i) / GEN_BLOCK] * GEN_BLOCK + (pos + i) % GEN_BLOCK;
    }
    int32_t qs[2] = {0, n}, len = pos + n, row = n - 1;
    hr_step st = {.n_tokens = n,
                  .tokens = toks,
                  .positions = p,
                  .slot_mapping = slots,
                  .n_seqs = 1,
                  .query_start = qs,
                  .seq_lens = &len,
                  .block_tables = bt,
                  .max_blocks_per_seq = max_blocks,
                  .block_size = GEN_BLOCK,
                  .n_logits = 1,
                  .logit_rows = &row};
    return hr_model_forward(m, &st, logits, err);
}

static bool is_stop(int32_t id, const int32_t *stop, int n) {
    for (int i = 0; i < n; i++)
        if (stop[i] == id) return true;
    return false;
}

int cmd_generate(int argc, char **argv) {
    gen_opts o;
    int pr = parse(argc, argv, &o);
    if (pr) return pr == 1 ? 0 : 2;

    int status = 1, n_prompt = 0, n_gen = 0, n_stop = 0;
    int32_t *prompt = NULL, *out_ids = NULL, *bt = NULL, stop[16], scratch[2 * GEN_PREFILL_CHUNK];
    float *logits = NULL;
    hr_err err = {0};
    hr_backend *be = NULL;
    hr_model *m = NULL;
    hr_tokenizer *tok = NULL;
    hr_detok *dt = NULL;
    hr_sampler *smp = NULL;
    char *text = NULL;
    size_t text_len = 0;

    if (o.prompt_ids && !cli_ids("generate", "--prompt-ids", o.prompt_ids, &prompt, &n_prompt)) return 2;

    hr_backend_opts bo = {.device = o.device, .n_threads = o.threads};
    if (!(be = hr_backend_create(&bo, &err))) {
        fprintf(stderr, "hearth generate: %s\n", err.msg);
        goto fail;
    }
    double t_load = hr_time_now();
    if (hr_model_load(o.model, be, NULL, &m, &err) != HR_OK) {
        fprintf(stderr, "hearth generate: %s\n", err.msg);
        goto fail;
    }
    t_load = hr_time_now() - t_load;
    const hr_config *cfg = hr_model_config(m);
    int V = hr_model_vocab_size(m);
    /* sampling defaults from generation_config.json, as vLLM does */
    if (!o.have_temp && isfinite(cfg->gen_temperature) && cfg->gen_temperature >= 0)
        o.sp.temperature = cfg->gen_temperature;
    if (!o.have_top_p && isfinite(cfg->gen_top_p) && cfg->gen_top_p > 0 && cfg->gen_top_p <= 1)
        o.sp.top_p = cfg->gen_top_p;
    if (!o.have_top_k && cfg->gen_top_k > 0) o.sp.top_k = cfg->gen_top_k;

    if (hr_tokenizer_load_model) {
        if (hr_tokenizer_load_model(hr_model_source(m), &tok, &err) != HR_OK) {
            if (o.prompt) {
                fprintf(stderr, "hearth generate: %s\n", err.msg);
                goto fail;
            }
            tok = NULL; /* ids in, ids out */
        }
    }
    if (o.prompt) {
        if (!tok) {
            fprintf(stderr,
                    "hearth generate: --prompt needs the tokenizer, which this build lacks; use --prompt-ids\n");
            goto fail;
        }
        size_t n = 0;
        hr_encode_opts eo = {.add_special_tokens = true, .parse_special = false};
        if (hr_tokenizer_encode(tok, o.prompt, strlen(o.prompt), &eo, &prompt, &n, &err) != HR_OK) {
            fprintf(stderr, "hearth generate: %s\n", err.msg);
            goto fail;
        }
        n_prompt = (int)n;
        if (n_prompt == 0) {
            fprintf(stderr, "hearth generate: the prompt encodes to no tokens\n");
            goto fail;
        }
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V) {
            fprintf(stderr, "hearth generate: prompt token %d is outside the vocabulary [0, %d)\n", prompt[i], V);
            goto fail;
        }

    /* stop ids: the model's EOS ids (config / generation_config), unless --ignore-eos */
    if (!o.ignore_eos) {
        for (int i = 0; i < cfg->n_eos && n_stop < 15; i++) stop[n_stop++] = cfg->eos_token_ids[i];
        if (tok && hr_tokenizer_eos && hr_tokenizer_eos(tok) >= 0 && !is_stop(hr_tokenizer_eos(tok), stop, n_stop))
            stop[n_stop++] = hr_tokenizer_eos(tok);
    }

    int total = n_prompt + o.max_tokens;
    int max_blocks = (total + GEN_BLOCK - 1) / GEN_BLOCK;
    bt = malloc(sizeof(int32_t) * (size_t)max_blocks);
    out_ids = malloc(sizeof(int32_t) * (size_t)o.max_tokens);
    logits = malloc(sizeof(float) * (size_t)V);
    if (!bt || !out_ids || !logits) {
        fprintf(stderr, "hearth generate: out of memory\n");
        goto fail;
    }
    for (int i = 0; i < max_blocks; i++) bt[i] = i;
    if (hr_model_kv_alloc(m, max_blocks, GEN_BLOCK, &err) != HR_OK) {
        fprintf(stderr, "hearth generate: %s\n", err.msg);
        goto fail;
    }
    if (!(smp = hr_sampler_new(&o.sp, V, prompt, n_prompt))) {
        fprintf(stderr, "hearth generate: cannot create the sampler\n");
        goto fail;
    }
    if (tok && hr_detok_new) dt = hr_detok_new(tok, true);

    /* prefill */
    double t0 = hr_time_now();
    for (int pos = 0; pos < n_prompt; pos += GEN_PREFILL_CHUNK) {
        int n = HR_MIN(GEN_PREFILL_CHUNK, n_prompt - pos);
        if (run_step(m, prompt + pos, n, pos, bt, max_blocks, logits, scratch, &err) != HR_OK) {
            fprintf(stderr, "hearth generate: %s\n", err.msg);
            goto fail;
        }
    }
    double t_prefill = hr_time_now() - t0, ttft = 0;
    double t_dec0 = hr_time_now();
    FILE *stream = o.json ? NULL : stdout;
    for (;;) {
        hr_sample_result r;
        if (hr_sampler_sample(smp, logits, n_gen, stop, n_stop, &r) != HR_OK) {
            fprintf(stderr, "hearth generate: sampling failed (out of memory)\n");
            goto fail;
        }
        out_ids[n_gen++] = r.id;
        if (n_gen == 1) ttft = hr_time_now() - t0;
        if (dt) {
            const char *d;
            size_t dl = hr_detok_push(dt, r.id, &d);
            if (dl) {
                char *nt = realloc(text, text_len + dl + 1);
                if (!nt) goto fail;
                text = nt;
                memcpy(text + text_len, d, dl);
                text_len += dl;
                text[text_len] = 0;
                if (stream) fwrite(d, 1, dl, stream);
            }
        } else if (stream) {
            fprintf(stream, "%s%d", n_gen > 1 ? " " : "", r.id);
        }
        if (stream) fflush(stream);
        if (is_stop(r.id, stop, n_stop) || n_gen >= o.max_tokens) break;
        if (run_step(m, &r.id, 1, n_prompt + n_gen - 1, bt, max_blocks, logits, scratch, &err) != HR_OK) {
            fprintf(stderr, "hearth generate: %s\n", err.msg);
            goto fail;
        }
    }
    double t_dec = hr_time_now() - t_dec0;
    if (dt) {
        const char *d;
        size_t dl = hr_detok_flush(dt, &d);
        if (dl) {
            char *nt = realloc(text, text_len + dl + 1);
            if (!nt) goto fail;
            text = nt;
            memcpy(text + text_len, d, dl);
            text_len += dl;
            text[text_len] = 0;
            if (stream) fwrite(d, 1, dl, stream);
        }
    }
    if (stream) fputc('\n', stream);
    /* decode throughput counts the tokens produced by decode steps (the first
     * one comes from the prefill) */
    double prompt_tps = t_prefill > 0 ? n_prompt / t_prefill : 0;
    double gen_tps = n_gen > 1 && t_dec > 0 ? (n_gen - 1) / t_dec : 0;
    FILE *stats = o.json ? stderr : stdout;
    fprintf(stats, "prompt: %d tokens, %.1f tok/s | generated: %d tokens, %.1f tok/s | ttft %.1f ms | load %.2f s\n",
            n_prompt, prompt_tps, n_gen, gen_tps, ttft * 1e3, t_load);
    if (o.json) {
        json_t *j = json_object(), *ids = json_array();
        for (int i = 0; i < n_gen; i++) json_array_append_new(ids, json_integer(out_ids[i]));
        json_object_set_new(j, "ids", ids);
        if (dt) json_object_set_new(j, "text", json_stringn(text ? text : "", text_len));
        json_object_set_new(j, "prompt_tokens", json_integer(n_prompt));
        json_object_set_new(j, "generated_tokens", json_integer(n_gen));
        json_object_set_new(j, "prompt_tps", json_real(prompt_tps));
        json_object_set_new(j, "gen_tps", json_real(gen_tps));
        json_object_set_new(j, "ttft_ms", json_real(ttft * 1e3));
        char *s = json_dumps(j, JSON_COMPACT);
        if (s) printf("%s\n", s);
        free(s);
        json_decref(j);
    }
    status = 0;
fail:
    if (dt) hr_detok_free(dt);
    if (smp) hr_sampler_free(smp);
    if (tok) hr_tokenizer_free(tok);
    free(text);
    free(prompt);
    free(out_ids);
    free(bt);
    free(logits);
    hr_model_free(m);
    hr_backend_free(be);
    return status;
}
