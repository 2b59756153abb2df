// Cross-entropy fused with log-softmax, over rows of logits [rows, vocab], with an ignore
// index. Logits and their gradient in f32 (suffix _f32) or bf16 (_bf16); losses, lse and the
// upstream gradients always f32; arithmetic f32. Same contract as kernels/src/cpu/crossentropy.rs:
//
//   lse_r = log sum_j exp(x_rj);  loss_r = lse_r - x_{r, t_r}, or 0 where t_r == ignore_index
//   backward, with upstream dl_r:  dx_rj = dl_r * (exp(x_rj - lse_r) - [j == t_r]),
//   and dx_r = 0 on ignored rows.
//
// With a row_scale (PPO: log-probs under softmax(logits / temperature), and the clipped
// surrogate's gradient as a weighted cross-entropy) the kernels read the logits of row r
// multiplied by a per-row factor s_r (1/temperature; 1 for a plain row), y_rj = s_r * x_rj:
//
//   lse_r = log sum_j exp(y_rj);  loss_r = lse_r - y_{r, t_r} = -log softmax(y_r)[t_r]
//   entropy_r = -sum_j p_rj log p_rj = lse_r - sum_j p_rj y_rj   (only if entropy != NULL)
//   backward:  dx_rj = dl_r * s_r * (exp(y_rj - lse_r) - [j == t_r])
//
// so with dl_r = c_r (a per-token weight) the backward is that of sum_r c_r * loss_r. A NULL
// row_scale means s = 1 on every row: the plain cross-entropy (a multiplication by 1.0f is
// exact: the same bits as without it).
// The entropy is formed from the same sweep as the sum: with e_j = exp(y_j - m) and
// S = sum_j e_j, entropy = log S - sum_j e_j (y_j - m) / S.
//
// Work split: ONE BLOCK PER ROW, 256 threads sweeping the row (columns t, t+256, ...), row
// max and sum combined with block_max / block_sum (common.cuh; fixed order). The loss is
// formed as (m - y_t) + log sum exp(y - m), as the CPU kernel does. A target outside
// 0..vocab that is not ignore_index gives a NaN loss (callers validate targets first; the
// kernel never reads outside the row). Launch: grid = rows, block = 256.

#define CE_THREADS 256

template <typename T>
__device__ __forceinline__ void cross_entropy_fwd(const T* __restrict__ logits,
                                                  const long long* __restrict__ targets,
                                                  float* __restrict__ losses,
                                                  float* __restrict__ lse,
                                                  float* __restrict__ entropy, float scale,
                                                  int vocab, long long ignore_index) {
    __shared__ float sh[WARP];
    const int r = blockIdx.x;
    const T* x = logits + (size_t)r * vocab;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < vocab; c += CE_THREADS) m = fmaxf(m, scale * to_f32(x[c]));
    m = block_max(m, sh);
    float s = 0.0f, sy = 0.0f;
    for (int c = threadIdx.x; c < vocab; c += CE_THREADS) {
        const float y = scale * to_f32(x[c]) - m;
        const float e = expf(y);
        s += e;
        if (entropy != nullptr) sy += e * y;
    }
    const float sum = block_sum(s, sh);
    const float log_s = logf(sum);
    float sum_y = 0.0f;
    if (entropy != nullptr) sum_y = block_sum(sy, sh);  // uniform branch: all threads call it
    if (threadIdx.x == 0) {
        const long long t = targets[r];
        lse[r] = m + log_s;
        if (entropy != nullptr) entropy[r] = log_s - sum_y / sum;
        if (t == ignore_index) losses[r] = 0.0f;
        else if (t < 0 || t >= vocab) losses[r] = __int_as_float(0x7fc00000);  // NaN
        else losses[r] = (m - scale * to_f32(x[t])) + log_s;
    }
}

template <typename T>
__device__ __forceinline__ void cross_entropy_bwd(const T* __restrict__ logits,
                                                  const long long* __restrict__ targets,
                                                  const float* __restrict__ lse,
                                                  const float* __restrict__ dlosses,
                                                  T* __restrict__ dlogits, float scale,
                                                  int vocab, long long ignore_index) {
    const int r = blockIdx.x;
    const size_t off = (size_t)r * vocab;
    const long long t = targets[r];
    const bool ignored = (t == ignore_index);
    // dl * s: the chain rule through y = s * x (exact for the plain kernels, s = 1).
    const float dl = dlosses[r] * scale, l = lse[r];
    for (int c = threadIdx.x; c < vocab; c += CE_THREADS) {
        float g = ignored ? 0.0f : dl * expf(scale * to_f32(logits[off + c]) - l);
        if (!ignored && c == t) g -= dl;
        dlogits[off + c] = from_f32<T>(g);
    }
}

#define CE_ENTRIES(SUF, T)                                                                     \
    extern "C" __global__ void __launch_bounds__(CE_THREADS) cross_entropy_fwd_##SUF(          \
        const T* logits, const long long* targets, const float* row_scale, float* losses,      \
        float* lse, float* entropy, int vocab, long long ignore_index) {                       \
        const float s = row_scale != nullptr ? row_scale[blockIdx.x] : 1.0f;                   \
        cross_entropy_fwd<T>(logits, targets, losses, lse, entropy, s, vocab, ignore_index);   \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(CE_THREADS) cross_entropy_bwd_##SUF(          \
        const T* logits, const long long* targets, const float* row_scale, const float* lse,   \
        const float* dlosses, T* dlogits, int vocab, long long ignore_index) {                 \
        const float s = row_scale != nullptr ? row_scale[blockIdx.x] : 1.0f;                   \
        cross_entropy_bwd<T>(logits, targets, lse, dlosses, dlogits, s, vocab, ignore_index);  \
    }

CE_ENTRIES(f32, float)
CE_ENTRIES(bf16, bf16_t)
