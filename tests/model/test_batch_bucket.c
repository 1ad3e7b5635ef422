/* Decode batch-size buckets on the CPU backend (the reference): a pure-decode
 * step padded with dummy sequences (forward.c pad_decode_step) must give
 * exactly the logits and greedy ids of the unpadded step for the caller's
 * rows. The CPU backend has no batch_bucket (it never pads); this test gives
 * it the CUDA bucket sizes through a copy of its op table, and an odd padding
 * (n + 5) as well. Every CPU op computes a token's row from that token's
 * inputs alone, but the linear kernel takes tokens CPU_TB at a time with a
 * separate tail kernel, so a row's float32 summation order can depend on the
 * batch size: tolerance 1e-5 absolute on the logits and 1e-6 relative L2 per
 * row (measured: 0 for most models, <= 1.9e-6 / 1.6e-7 otherwise); greedy
 * ids exact. See bucket_check.h for the scenario. */
#include "bucket_check.h"

static int n_asked, n_padded; /* the model asked for a bucket / got a larger size */

/* The CUDA backend's buckets below 64 (step_graph.cu cu_batch_bucket). */
static int cuda_like_bucket(hr_backend *be, int n) {
    (void)be;
    int p = n <= 2 ? n : n <= 4 ? 4 : n <= 8 ? 8 : (n + 7) / 8 * 8;
    n_asked++;
    n_padded += p > n;
    return p;
}

static int odd_bucket(hr_backend *be, int n) {
    (void)be;
    n_asked++;
    n_padded++;
    return n + 5;
}

int main(void) {
    static const int sched[] = {3, 4, 3, 4, 5, 8, 6, 7, 5, 17, 17, 20, 18, 24, 21, 19, 23, 1, 2};
    static const char *models[] = {"tiny-llama", "tiny-qwen2", "tiny-mixtral", "tiny-gpt-oss", "tiny-llama-fp8"};
    char probe[1024];
    snprintf(probe, sizeof probe, "%s/models/tiny-llama/config.json", test_fixtures());
    test_need_fixture(probe);
    hr_err err = {0};
    hr_backend *be = hr_backend_cpu_create(2, &err);
    if (!be) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    CHECK(be->ops->batch_bucket == NULL); /* the CPU backend never pads */
    hr_backend_ops cuda_like = *be->ops, odd = *be->ops;
    cuda_like.batch_bucket = cuda_like_bucket;
    odd.batch_bucket = odd_bucket;
    for (size_t i = 0; i < sizeof models / sizeof *models; i++)
        bk_check_model(be, &cuda_like, models[i], sched, (int)(sizeof sched / sizeof *sched), 1e-5, 1e-6);
    /* only pure-decode steps ask (not the prefill): 19 per padded run */
    CHECK_EQ_INT(n_asked, 19 * (int)(sizeof models / sizeof *models) + 2 * 5); /* + the greedy re-runs */
    CHECK(n_padded > 0);
    bk_check_model(be, &odd, "tiny-llama", sched, (int)(sizeof sched / sizeof *sched), 1e-5, 1e-6);
    hr_backend_free(be);
    return test_report("model/test_batch_bucket");
}
