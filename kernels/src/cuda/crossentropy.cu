// Cross-entropy fused with log-softmax, over rows of logits [rows, vocab], with an ignore
// index. Same contract as kernels/src/cpu/crossentropy.rs:
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

extern "C" __global__ void __launch_bounds__(CE_THREADS)
cross_entropy_fwd_f32(const float* __restrict__ logits, const long long* __restrict__ targets,
                      float* __restrict__ losses, float* __restrict__ lse, int vocab,
                      long long ignore_index) {
    __shared__ float sh[WARP];
    const int r = blockIdx.x;
    const float* x = logits + (size_t)r * vocab;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < vocab; c += CE_THREADS) m = fmaxf(m, x[c]);
    m = block_max(m, sh);
    float s = 0.0f;
    for (int c = threadIdx.x; c < vocab; c += CE_THREADS) s += expf(x[c] - m);
    const float log_s = logf(block_sum(s, sh));
    if (threadIdx.x == 0) {
        const long long t = targets[r];
        lse[r] = m + log_s;
        if (t == ignore_index) losses[r] = 0.0f;
        else if (t < 0 || t >= vocab) losses[r] = __int_as_float(0x7fc00000);  // NaN
        else losses[r] = (m - x[t]) + log_s;
    }
}

extern "C" __global__ void __launch_bounds__(CE_THREADS)
cross_entropy_bwd_f32(const float* __restrict__ logits, const long long* __restrict__ targets,
                      const float* __restrict__ lse, const float* __restrict__ dlosses,
                      float* __restrict__ dlogits, int vocab, long long ignore_index) {
    const int r = blockIdx.x;
    const size_t off = (size_t)r * vocab;
    const long long t = targets[r];
    const bool ignored = (t == ignore_index);
    const float dl = dlosses[r], l = lse[r];
    for (int c = threadIdx.x; c < vocab; c += CE_THREADS) {
        float g = ignored ? 0.0f : dl * expf(logits[off + c] - l);
        if (!ignored && c == t) g -= dl;
        dlogits[off + c] = g;
    }
}
