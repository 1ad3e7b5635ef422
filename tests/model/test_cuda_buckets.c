/* Decode batch-size buckets on the CUDA backend: with graphs on (the default,
 * HEARTH_CUDA_GRAPHS=1) the backend pads pure-decode steps to its buckets
 * (step_graph.cu cu_batch_bucket) and the captured graph of a bucket replays
 * for every batch size in it. Checked: the bucket sizes, then for four fixture
 * models (dense, biases, MoE, sinks + window) batch sizes 3, 5 and 17 for six
 * decode steps each (eager, capture, replays), then sizes drifting inside a
 * bucket (17..24 -> 24, 3..4 -> 4, 5..8 -> 8) against the same steps run
 * unpadded (batch_bucket = NULL). Tolerance: relative L2 <= 1e-2 per logit
 * row, as the GPU golden tests (BF16 activations; the padded and unpadded
 * steps may take different kernels, GEMV vs cuBLASLt, for their row counts);
 * greedy ids exact against the host argmax of the same step's logits.
 * Skips (77) without CUDA or without a device. */
#include "bucket_check.h"

#ifdef HEARTH_HAVE_CUDA

int main(void) {
    if (!hr_backend_cuda_available()) TEST_SKIP("no CUDA device");
    char probe[1024];
    snprintf(probe, sizeof probe, "%s/models/tiny-llama/config.json", test_fixtures());
    test_need_fixture(probe);
    hr_err err = {0};
    hr_backend *be = hr_backend_cuda_create(0, &err);
    if (!be) {
        fprintf(stderr, "hr_backend_cuda_create: %s\n", err.msg);
        return 1;
    }
    const char *g = getenv("HEARTH_CUDA_GRAPHS"), *b = getenv("HEARTH_CUDA_BUCKETS");
    bool on = !(g && !strcmp(g, "0")) && !(b && !strcmp(b, "0"));
    CHECK(be->ops->batch_bucket != NULL);
    if (be->ops->batch_bucket && on) {
        static const int in[] = {1, 2, 3, 4, 5, 8, 9, 16, 17, 24, 25, 63, 64, 65, 200, 255, 256, 257, 1000};
        static const int want[] = {1, 2, 4, 4, 8, 8, 16, 16, 24, 24, 32, 64, 64, 80, 208, 256, 256, 257, 1000};
        for (size_t i = 0; i < sizeof in / sizeof *in; i++)
            CHECK_MSG(be->ops->batch_bucket(be, in[i]) == want[i], "bucket(%d) = %d, want %d", in[i],
                      be->ops->batch_bucket(be, in[i]), want[i]);
    }
    static const int sched[] = {3,  3,  3,  3,  3,  3,  5,  5,  5, 5, 5, 5, 17, 17, 17, 17, 17,
                                17, 20, 18, 24, 21, 19, 23, 17, 3, 4, 3, 4, 5,  8,  6,  7,  5};
    static const char *models[] = {"tiny-llama", "tiny-qwen2", "tiny-mixtral", "tiny-gpt-oss"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++)
        bk_check_model(be, NULL, models[i], sched, (int)(sizeof sched / sizeof *sched), HUGE_VAL, 1e-2);
    hr_backend_free(be);
    return test_report("model/test_cuda_buckets");
}

#else
int main(void) {
    fprintf(stderr, "SKIP: no CUDA (built without -DHEARTH_CUDA=ON)\n");
    return 77;
}
#endif
