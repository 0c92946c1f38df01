/* Fused multi-step LIF for the CPU: one pass over [T, N] forward, one pass backward.
 *
 * Forward (per element i, V_0 = 0):  H_t = V_{t-1} + (X_t - V_{t-1}) / tau;  S_t = H_t > V_th;  V_t = S_t ? 0 : H_t.
 * Backward (G_T = 0):  dH_t = dS_t * g'(H_t - V_th) + G_t * dV_t/dH_t;  dX_t = dH_t / tau;  G_{t-1} = dH_t - dH_t / tau,
 * with dV_t/dH_t = [H_t <= V_th] (reset detached) or [H_t <= V_th] - H_t g'(H_t - V_th) (not detached).
 * Surrogates, by their position in SURROGATES of cpu_kernel.py: 0 = piecewise quadratic  g' = max(0, a - a^2 |x|);
 * 1 = atan  g' = (a/2) / (1 + (pi/2 a x)^2).
 *
 * Elements are processed in chunks (parallel over chunks, OpenMP); inside a chunk the time loop is outermost and
 * the element loop innermost and contiguous, so it vectorises. The operations and their order are those of lif_step
 * in tks/snn/lif.py (and of the official code): with the reset detached, autograd through lif_step gives bit-identical
 * results; tests/lif_oracle.py writes this order out in PyTorch ops for both reset settings.
 * Types: float32, float64, and bfloat16 (computed in float32, stored rounded to nearest even).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define CHUNK 512
#define HALF_PI 1.57079632679489661923

static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = ((uint32_t)b) << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#define DEFINE_LIF(SUFFIX, STORE_T, COMPUTE_T, LOAD, STORE)                                                      \
    void lif_forward_##SUFFIX(const STORE_T *x, STORE_T *s, STORE_T *h, int64_t steps, int64_t n, double tau_d,    \
                              double vth_d, int threads) {                                                         \
        /* the threshold as the dtype holds it: PyTorch compares a bfloat16 membrane with bfloat16(V_th) */        \
        const COMPUTE_T tau = (COMPUTE_T)tau_d, vth = LOAD(STORE((COMPUTE_T)vth_d));                               \
        const int64_t chunks = (n + CHUNK - 1) / CHUNK;                                                            \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")                                          \
        for (int64_t c = 0; c < chunks; ++c) {                                                                     \
            const int64_t begin = c * CHUNK, len = (n - begin < CHUNK) ? n - begin : CHUNK;                        \
            COMPUTE_T v[CHUNK];                                                                                    \
            for (int64_t i = 0; i < len; ++i) v[i] = 0;                                                            \
            for (int64_t t = 0; t < steps; ++t) {                                                                  \
                const int64_t off = t * n + begin;                                                                 \
                for (int64_t i = 0; i < len; ++i) {                                                                \
                    const COMPUTE_T xv = LOAD(x[off + i]);                                                         \
                    const STORE_T hs = STORE(v[i] + (xv - v[i]) / tau);                                             \
                    const COMPUTE_T hv = LOAD(hs); /* continue from the stored value, as the eager loop */         \
                    const int fired = hv > vth;                                                                    \
                    if (h) h[off + i] = hs; /* NULL when no backward will run */                                   \
                    s[off + i] = STORE((COMPUTE_T)fired);                                                          \
                    v[i] = fired ? (COMPUTE_T)0 : hv;                                                              \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
    }                                                                                                              \
                                                                                                                   \
    void lif_backward_##SUFFIX(const STORE_T *grad_s, const STORE_T *h, STORE_T *grad_x, int64_t steps, int64_t n, \
                               double tau_d, double vth_d, double alpha_d, int surrogate, int detach_reset,        \
                               int threads) {                                                                      \
        const COMPUTE_T tau = (COMPUTE_T)tau_d, vth = LOAD(STORE((COMPUTE_T)vth_d)), alpha = (COMPUTE_T)alpha_d;   \
        const COMPUTE_T half_alpha = alpha / 2;                                                                    \
        /* a^2 squared in double then rounded, as PyTorch's alpha ** 2 (a Python float) times a tensor */          \
        const COMPUTE_T alpha_sq = (COMPUTE_T)(alpha_d * alpha_d), atan_scale = (COMPUTE_T)(HALF_PI * alpha_d);    \
        const int64_t chunks = (n + CHUNK - 1) / CHUNK;                                                            \
        _Pragma("omp parallel for schedule(static) num_threads(threads)")                                          \
        for (int64_t c = 0; c < chunks; ++c) {                                                                     \
            const int64_t begin = c * CHUNK, len = (n - begin < CHUNK) ? n - begin : CHUNK;                        \
            COMPUTE_T acc[CHUNK];                                                                                  \
            for (int64_t i = 0; i < len; ++i) acc[i] = 0;                                                          \
            for (int64_t t = steps - 1; t >= 0; --t) {                                                             \
                const int64_t off = t * n + begin;                                                                 \
                for (int64_t i = 0; i < len; ++i) {                                                                \
                    const COMPUTE_T hv = LOAD(h[off + i]);                                                         \
                    const COMPUTE_T xv = hv - vth;                                                                 \
                    COMPUTE_T sg;                                                                                  \
                    if (surrogate == 0) {                                                                          \
                        sg = alpha - alpha_sq * (COMPUTE_T)fabs(xv); /* fabs is double: back first */              \
                        sg = sg > 0 ? sg : 0;                                                                      \
                    } else {                                                                                       \
                        const COMPUTE_T z = atan_scale * xv;                                                       \
                        sg = (1 / (1 + z * z)) * half_alpha; /* scalar / tensor: reciprocal, then times */         \
                    }                                                                                              \
                    COMPUTE_T dvdh = (hv <= vth) ? (COMPUTE_T)1 : (COMPUTE_T)0;                                    \
                    if (!detach_reset) dvdh = dvdh - hv * sg;                                                      \
                    const COMPUTE_T gh = LOAD(grad_s[off + i]) * sg + acc[i] * dvdh; /* acc = 0 at the last step */\
                    grad_x[off + i] = STORE(gh / tau);                                                             \
                    acc[i] = gh - gh / tau;                                                                        \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
    }

#define IDENTITY(v) (v)
DEFINE_LIF(f32, float, float, IDENTITY, IDENTITY)
DEFINE_LIF(f64, double, double, IDENTITY, IDENTITY)
DEFINE_LIF(bf16, uint16_t, float, bf16_to_f32, f32_to_bf16)
