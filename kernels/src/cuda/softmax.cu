// Softmax and log-softmax over the last axis of a row-major [rows, cols] f32 matrix, forward
// and backward. Same math as kernels/src/cpu/softmax.rs:
//
//   softmax:     y_j = exp(x_j - m) / sum_k exp(x_k - m),  m = max_k x_k
//                dx  = y o (dy - sum_k dy_k y_k)
//   log-softmax: y_j = (x_j - m) - log sum_k exp(x_k - m)
//                dx  = dy - exp(y) * sum_k dy_k
//
// Work split: ONE BLOCK PER ROW (blockIdx.x = row), 256 threads. Rows can be long (a GPT-2
// vocabulary row is 50257 floats), so the whole block sweeps the row: thread t reads columns
// t, t+256, ... (each warp reads 32 consecutive floats: coalesced). Row statistics (max, sums)
// are combined with block_max / block_sum (common.cuh): fixed order, reproducible.
// Launch: grid = rows, block = 256.

#define SM_THREADS 256

extern "C" __global__ void __launch_bounds__(SM_THREADS)
softmax_fwd_f32(const float* __restrict__ x, float* __restrict__ y, int cols) {
    __shared__ float sh[WARP];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* yr = y + (size_t)blockIdx.x * cols;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) m = fmaxf(m, xr[c]);
    m = block_max(m, sh);
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) s += expf(xr[c] - m);
    s = block_sum(s, sh);
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) yr[c] = expf(xr[c] - m) / s;
}

extern "C" __global__ void __launch_bounds__(SM_THREADS)
softmax_bwd_f32(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                int cols) {
    __shared__ float sh[WARP];
    const size_t off = (size_t)blockIdx.x * cols;
    float dot = 0.0f;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) dot = fmaf(y[off + c], dy[off + c], dot);
    dot = block_sum(dot, sh);
    for (int c = threadIdx.x; c < cols; c += SM_THREADS)
        dx[off + c] = y[off + c] * (dy[off + c] - dot);
}

extern "C" __global__ void __launch_bounds__(SM_THREADS)
log_softmax_fwd_f32(const float* __restrict__ x, float* __restrict__ y, int cols) {
    __shared__ float sh[WARP];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* yr = y + (size_t)blockIdx.x * cols;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) m = fmaxf(m, xr[c]);
    m = block_max(m, sh);
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) s += expf(xr[c] - m);
    const float log_s = logf(block_sum(s, sh));
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) yr[c] = (xr[c] - m) - log_s;
}

extern "C" __global__ void __launch_bounds__(SM_THREADS)
log_softmax_bwd_f32(const float* __restrict__ y, const float* __restrict__ dy,
                    float* __restrict__ dx, int cols) {
    __shared__ float sh[WARP];
    const size_t off = (size_t)blockIdx.x * cols;
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) s += dy[off + c];
    s = block_sum(s, sh);
    for (int c = threadIdx.x; c < cols; c += SM_THREADS)
        dx[off + c] = dy[off + c] - expf(y[off + c]) * s;
}
