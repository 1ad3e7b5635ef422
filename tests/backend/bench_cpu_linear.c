/* Not a unit test: throughput of the CPU linear op (decode T=1 and prefill
 * blocks) on a BF16 weight, next to a plain streaming-read bandwidth for
 * comparison. Build by hand against a release build directory:
 *   gcc -O2 -D_GNU_SOURCE -Isrc tests/backend/bench_cpu_linear.c \
 *       build-cpu/libhr_backend.a build-cpu/libhr_quant.a build-cpu/libhr_core.a -lpthread -lm -o /tmp/bench_lin
 *   /tmp/bench_lin [threads] [N] [K] [bf16|f16|f32]   (HEARTH_CPU_ISA=scalar|avx2|avx512 to pick kernels)
 * Reports the best of several runs (the machine may be shared). */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu.h"

/* Plain streaming read with 256-bit loads and 4 independent chains: the
 * bandwidth a one-pass weight stream can hope for. */
__attribute__((target("avx2"))) static double read_gbps(hr_backend *be, size_t bytes) {
    size_t n = bytes / 128 * 4; /* 32-byte vectors, multiple of 4 */
    int64_t ne[1] = {(int64_t)(n * 32)};
    hr_tensor *t = be->ops->tensor_new(be, HR_U8, 1, ne, "read"); /* same allocation path as the weights */
    __m256i *a = t->data;
    memset(a, 1, n * 32);
    double best = 0;
    volatile int sink = 0;
    for (int it = 0; it < 5; it++) {
        double t0 = hr_time_now();
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        for (size_t i = 0; i < n; i += 4) {
            s0 = _mm256_xor_si256(s0, _mm256_load_si256(a + i));
            s1 = _mm256_xor_si256(s1, _mm256_load_si256(a + i + 1));
            s2 = _mm256_xor_si256(s2, _mm256_load_si256(a + i + 2));
            s3 = _mm256_xor_si256(s3, _mm256_load_si256(a + i + 3));
        }
        sink = _mm256_extract_epi32(_mm256_xor_si256(_mm256_xor_si256(s0, s1), _mm256_xor_si256(s2, s3)), 0);
        double dt = hr_time_now() - t0;
        if (n * 32 / dt / 1e9 > best) best = n * 32 / dt / 1e9;
    }
    (void)sink;
    be->ops->tensor_free(be, t);
    return best;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    int64_t N = argc > 2 ? atoll(argv[2]) : 4096, K = argc > 3 ? atoll(argv[3]) : 4096;
    hr_err err = {0};
    hr_backend *be = hr_backend_cpu_create(threads, &err);
    if (!be) return fprintf(stderr, "%s\n", err.msg), 1;
    int64_t new[2] = {N, K};
    const char *dts = argc > 4 ? argv[4] : "bf16";
    hr_dtype dt = !strcmp(dts, "f32") ? HR_F32 : !strcmp(dts, "f16") ? HR_F16 : HR_BF16;
    hr_tensor *w = be->ops->tensor_new(be, dt, 2, new, "w");
    for (int64_t i = 0; i < N * K; i++) {
        float v = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        if (dt == HR_F32)
            ((float *)w->data)[i] = v;
        else
            ((uint16_t *)w->data)[i] = dt == HR_F16 ? hr_f32_to_f16(v) : hr_f32_to_bf16(v);
    }
    size_t wbytes = w->nbytes;
    int Ts[] = {1, 8, 64};
    printf("isa %s, threads %d, W [%lld, %lld] %s (%.1f MB)\n", hr_backend_cpu_isa(be),
           hr_threadpool_size(cpu_of(be)->pool), (long long)N, (long long)K, hr_dtype_name(dt), wbytes / 1e6);
    for (int ti = 0; ti < 3; ti++) {
        int T = Ts[ti];
        int64_t nex[2] = {T, K}, neo[2] = {T, N};
        hr_tensor *x = be->ops->tensor_new(be, HR_F32, 2, nex, "x"), *o = be->ops->tensor_new(be, HR_F32, 2, neo, "o");
        for (int64_t i = 0; i < T * K; i++) ((float *)x->data)[i] = (float)(i % 7) * 0.1f;
        hr_linear l = {.w = w};
        be->ops->linear(be, o, x, &l);
        int iters = T == 1 ? 100 : 10;
        double dt = 1e30;
        for (int i = 0; i < iters; i++) {
            double t0 = hr_time_now();
            be->ops->linear(be, o, x, &l);
            dt = HR_MIN(dt, hr_time_now() - t0);
        }
        printf("T=%-3d %8.3f ms  weights %6.1f GB/s  %7.1f GFLOP/s\n", T, dt * 1e3, wbytes / dt / 1e9,
               2.0 * T * N * K / dt / 1e9);
        be->ops->tensor_free(be, x);
        be->ops->tensor_free(be, o);
    }
    printf("single-thread streaming read: %.1f GB/s\n", read_gbps(be, wbytes));
    be->ops->tensor_free(be, w);
    hr_backend_free(be);
    return 0;
}
