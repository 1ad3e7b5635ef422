/* RoPE frequencies against values computed independently (numpy float64,
 * following transformers' modeling_rope_utils formulas): default + partial
 * rotary, llama3, YaRN with and without truncation, YaRN's attention factor.
 * Tolerance: relative 1e-6 (one float32 rounding of a double result). */
#include <string.h>

#include "model/rope.h"
#include "test.h"

static void check_freqs(const char *what, const hr_config *c, int head_dim, const double *want, int n, int stride,
                        double mscale) {
    float f[256], ms = 0;
    hr_err err = {0};
    int rc = hr_rope_compute(c, head_dim, f, &ms, &err);
    CHECK_MSG(rc == HR_OK, "%s: %s", what, err.msg);
    CHECK_EQ_INT(hr_rope_rot_dim(c, head_dim) / 2 / stride, n);
    for (int i = 0; i < n; i++)
        CHECK_MSG(fabs(f[i * stride] - want[i]) <= 1e-6 * fabs(want[i]), "%s[%d]: %.9g vs %.9g", what, i * stride,
                  (double)f[i * stride], want[i]);
    CHECK_NEAR(ms, mscale, 1e-6);
}

static hr_config base_cfg(float theta) {
    hr_config c;
    memset(&c, 0, sizeof c);
    c.rope_theta = theta;
    c.partial_rotary_factor = 1.0f;
    c.max_position_embeddings = 4096;
    return c;
}

int main(void) {
    { /* default, partial rotary: head_dim 32, factor 0.5 -> 16 rotated dims */
        hr_config c = base_cfg(10000);
        c.partial_rotary_factor = 0.5f;
        static const double w[] = {1.0,     3.162277660e-01, 1.0e-01, 3.162277660e-02,
                                   1.0e-02, 3.162277660e-03, 1.0e-03, 3.162277660e-04};
        check_freqs("default partial", &c, 32, w, 8, 1, 1.0);
    }
    { /* llama3 as tiny-llama: theta 5e5, factor 8, low 1, high 4, original 512 */
        hr_config c = base_cfg(500000);
        c.rope_type = HR_ROPE_LLAMA3;
        c.rope_factor = 8;
        c.rope_low_freq_factor = 1;
        c.rope_high_freq_factor = 4;
        c.rope_original_max_pos = 512;
        static const double w[] = {1.0,
                                   4.403666027e-01,
                                   1.939227447e-01,
                                   8.539710029e-02,
                                   2.734413731e-02,
                                   3.758020937e-03,
                                   9.115830922e-04,
                                   4.014307493e-04,
                                   1.767766953e-04,
                                   7.784655274e-05,
                                   3.428102196e-05,
                                   1.509621718e-05,
                                   6.647869871e-06,
                                   2.927499870e-06,
                                   1.289173172e-06,
                                   5.677088101e-07};
        check_freqs("llama3", &c, 32, w, 16, 1, 1.0);
        /* Llama 3.1 8B's parameters: head_dim 128, original 8192 (every 8th) */
        c.rope_original_max_pos = 8192;
        static const double w2[] = {1.0,
                                    1.939227447e-01,
                                    3.760603093e-02,
                                    7.292664737e-03,
                                    5.248461610e-04,
                                    3.428102196e-05,
                                    6.647869871e-06,
                                    1.289173172e-06};
        check_freqs("llama3 8B", &c, 128, w2, 8, 8, 1.0);
    }
    { /* YaRN as tiny-gpt-oss: theta 150000, factor 32, original 128, beta 32/1, no truncation */
        hr_config c = base_cfg(150000);
        c.rope_type = HR_ROPE_YARN;
        c.rope_factor = 32;
        c.rope_original_max_pos = 128;
        c.rope_beta_fast = 32;
        c.rope_beta_slow = 1;
        c.rope_truncate = false;
        static const double w[] = {1.0,
                                   3.611140288e-01,
                                   1.174829215e-01,
                                   3.015596369e-02,
                                   2.152255628e-03,
                                   7.539134707e-04,
                                   3.579445873e-04,
                                   1.699456669e-04,
                                   8.068715305e-05,
                                   3.830881237e-05,
                                   1.818833668e-05,
                                   8.635495875e-06,
                                   4.099978482e-06,
                                   1.946596211e-06,
                                   9.242089502e-07,
                                   4.387978251e-07};
        check_freqs("yarn gpt-oss", &c, 32, w, 16, 1, 1.3465735902799727);
        /* an explicit attention_factor wins over 0.1 ln(factor) + 1 */
        c.rope_attention_factor = 0.75f;
        check_freqs("yarn attention_factor", &c, 32, w, 16, 1, 0.75);
    }
    { /* YaRN with truncation (the default): theta 1e4, factor 4, original 2048, head_dim 64 */
        hr_config c = base_cfg(10000);
        c.rope_type = HR_ROPE_YARN;
        c.rope_factor = 4;
        c.rope_original_max_pos = 2048;
        c.rope_truncate = true;
        static const double w[] = {1.0,
                                   7.498942093e-01,
                                   5.623413252e-01,
                                   4.216965034e-01,
                                   3.162277660e-01,
                                   2.371373706e-01,
                                   1.778279410e-01,
                                   1.333521432e-01,
                                   1.0e-01,
                                   7.066310819e-02,
                                   4.974557877e-02,
                                   3.487105701e-02,
                                   2.432521277e-02,
                                   1.687323598e-02,
                                   1.162721153e-02,
                                   7.949839307e-03,
                                   5.384615385e-03,
                                   3.605260622e-03,
                                   2.379136376e-03,
                                   1.540814147e-03,
                                   9.730085108e-04,
                                   5.928434264e-04,
                                   4.445698525e-04,
                                   3.333803580e-04,
                                   2.5e-04,
                                   1.874735523e-04,
                                   1.405853313e-04,
                                   1.054241259e-04,
                                   7.905694150e-05,
                                   5.928434264e-05,
                                   4.445698525e-05,
                                   3.333803580e-05};
        check_freqs("yarn truncate", &c, 64, w, 32, 1, 0.1 * log(4.0) + 1);
    }
    { /* bad parameters are rejected, not silently used */
        hr_config c = base_cfg(10000);
        c.rope_type = HR_ROPE_LLAMA3;
        float f[64], ms;
        hr_err err = {0};
        CHECK(hr_rope_compute(&c, 32, f, &ms, &err) == HR_EINVAL && err.msg[0]);
    }
    return test_report("model/rope");
}
