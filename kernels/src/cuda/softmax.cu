// Softmax and log-softmax over the last axis of a row-major [rows, cols] matrix, forward and
// backward, for f32 (suffix _f32) or bf16 (suffix _bf16) storage with f32 arithmetic. Same math as kernels/src/cpu/softmax.rs:
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

template <typename T>
__device__ __forceinline__ void softmax_fwd(const T* __restrict__ x, T* __restrict__ y, int cols) {
    __shared__ float sh[WARP];
    const T* xr = x + (size_t)blockIdx.x * cols;
    T* yr = y + (size_t)blockIdx.x * cols;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) m = fmaxf(m, to_f32(xr[c]));
    m = block_max(m, sh);
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) s += expf(to_f32(xr[c]) - m);
    s = block_sum(s, sh);
    for (int c = threadIdx.x; c < cols; c += SM_THREADS)
        yr[c] = from_f32<T>(expf(to_f32(xr[c]) - m) / s);
}

template <typename T>
__device__ __forceinline__ void softmax_bwd(const T* __restrict__ y, const T* __restrict__ dy,
                                            T* __restrict__ dx, int cols) {
    __shared__ float sh[WARP];
    const size_t off = (size_t)blockIdx.x * cols;
    float dot = 0.0f;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS)
        dot = fmaf(to_f32(y[off + c]), to_f32(dy[off + c]), dot);
    dot = block_sum(dot, sh);
    for (int c = threadIdx.x; c < cols; c += SM_THREADS)
        dx[off + c] = from_f32<T>(to_f32(y[off + c]) * (to_f32(dy[off + c]) - dot));
}

template <typename T>
__device__ __forceinline__ void log_softmax_fwd(const T* __restrict__ x, T* __restrict__ y,
                                                int cols) {
    __shared__ float sh[WARP];
    const T* xr = x + (size_t)blockIdx.x * cols;
    T* yr = y + (size_t)blockIdx.x * cols;
    float m = -INFINITY;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) m = fmaxf(m, to_f32(xr[c]));
    m = block_max(m, sh);
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) s += expf(to_f32(xr[c]) - m);
    const float log_s = logf(block_sum(s, sh));
    for (int c = threadIdx.x; c < cols; c += SM_THREADS)
        yr[c] = from_f32<T>((to_f32(xr[c]) - m) - log_s);
}

template <typename T>
__device__ __forceinline__ void log_softmax_bwd(const T* __restrict__ y, const T* __restrict__ dy,
                                                T* __restrict__ dx, int cols) {
    __shared__ float sh[WARP];
    const size_t off = (size_t)blockIdx.x * cols;
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += SM_THREADS) s += to_f32(dy[off + c]);
    s = block_sum(s, sh);
    for (int c = threadIdx.x; c < cols; c += SM_THREADS)
        dx[off + c] = from_f32<T>(to_f32(dy[off + c]) - expf(to_f32(y[off + c])) * s);
}

#define SOFTMAX_ENTRIES(SUF, T)                                                                \
    extern "C" __global__ void __launch_bounds__(SM_THREADS)                                   \
        softmax_fwd_##SUF(const T* x, T* y, int cols) {                                        \
        softmax_fwd<T>(x, y, cols);                                                            \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(SM_THREADS)                                   \
        softmax_bwd_##SUF(const T* y, const T* dy, T* dx, int cols) {                          \
        softmax_bwd<T>(y, dy, dx, cols);                                                       \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(SM_THREADS)                                   \
        log_softmax_fwd_##SUF(const T* x, T* y, int cols) {                                    \
        log_softmax_fwd<T>(x, y, cols);                                                        \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(SM_THREADS)                                   \
        log_softmax_bwd_##SUF(const T* y, const T* dy, T* dx, int cols) {                      \
        log_softmax_bwd<T>(y, dy, dx, cols);                                                   \
    }

SOFTMAX_ENTRIES(f32, float)
SOFTMAX_ENTRIES(bf16, bf16_t)
