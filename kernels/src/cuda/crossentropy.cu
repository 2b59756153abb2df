// Cross-entropy fused with log-softmax, over rows of logits [rows, vocab], with an ignore
// index. Logits and their gradient in f32 (suffix _f32) or bf16 (_bf16); losses, lse and the
// upstream gradients always f32; arithmetic f32. Same contract as kernels/src/cpu/crossentropy.rs:
//
//   lse_r = log sum_j exp(x_rj);  loss_r = lse_r - x_{r, t_r}, or 0 where t_r == ignore_index
//   backward, with upstream dl_r:  dx_rj = dl_r * (exp(x_rj - lse_r) - [j == t_r]),
//   and dx_r = 0 on ignored rows.
//
// Work split: ONE BLOCK PER ROW, 256 threads sweeping the row (columns t, t+256, ...), row
// max and sum combined with block_max / block_sum (common.cuh; fixed order). The loss is
// formed as (m - x_t) + log sum exp(x - m), as the CPU kernel does. A target outside
// 0..vocab that is not ignore_index gives a NaN loss (callers validate targets first; the
// kernel never reads outside the row). Launch: grid = rows, block = 256.

#define CE_THREADS 256

template <typename T>
__device__ __forceinline__ void cross_entropy_fwd(const T* __restrict__ logits,
                                                  const long long* __restrict__ targets,
                                                  float* __restrict__ losses,
                                                  float* __restrict__ lse, int vocab,
                                                  long long ignore_index) {
    __shared__ float sh[WARP];
    const int r = blockIdx.x;
    const T* x = logits + (size_t)r * vocab;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < vocab; c += CE_THREADS) m = fmaxf(m, to_f32(x[c]));
    m = block_max(m, sh);
    float s = 0.0f;
    for (int c = threadIdx.x; c < vocab; c += CE_THREADS) s += expf(to_f32(x[c]) - m);
    const float log_s = logf(block_sum(s, sh));
    if (threadIdx.x == 0) {
        const long long t = targets[r];
        lse[r] = m + log_s;
        if (t == ignore_index) losses[r] = 0.0f;
        else if (t < 0 || t >= vocab) losses[r] = __int_as_float(0x7fc00000);  // NaN
        else losses[r] = (m - to_f32(x[t])) + log_s;
    }
}

template <typename T>
__device__ __forceinline__ void cross_entropy_bwd(const T* __restrict__ logits,
                                                  const long long* __restrict__ targets,
                                                  const float* __restrict__ lse,
                                                  const float* __restrict__ dlosses,
                                                  T* __restrict__ dlogits, int vocab,
                                                  long long ignore_index) {
    const int r = blockIdx.x;
    const size_t off = (size_t)r * vocab;
    const long long t = targets[r];
    const bool ignored = (t == ignore_index);
    const float dl = dlosses[r], l = lse[r];
    for (int c = threadIdx.x; c < vocab; c += CE_THREADS) {
        float g = ignored ? 0.0f : dl * expf(to_f32(logits[off + c]) - l);
        if (!ignored && c == t) g -= dl;
        dlogits[off + c] = from_f32<T>(g);
    }
}

#define CE_ENTRIES(SUF, T)                                                                     \
    extern "C" __global__ void __launch_bounds__(CE_THREADS) cross_entropy_fwd_##SUF(          \
        const T* logits, const long long* targets, float* losses, float* lse, int vocab,       \
        long long ignore_index) {                                                              \
        cross_entropy_fwd<T>(logits, targets, losses, lse, vocab, ignore_index);               \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(CE_THREADS) cross_entropy_bwd_##SUF(          \
        const T* logits, const long long* targets, const float* lse, const float* dlosses,     \
        T* dlogits, int vocab, long long ignore_index) {                                       \
        cross_entropy_bwd<T>(logits, targets, lse, dlosses, dlogits, vocab, ignore_index);     \
    }

CE_ENTRIES(f32, float)
CE_ENTRIES(bf16, bf16_t)
