// Layer normalisation over the last axis of a row-major [rows, cols] matrix: forward and
// backward. Same math and contract as kernels/src/cpu/layernorm.rs:
//
//   mu = mean(x),  var = mean((x - mu)^2)   (two passes over the row: never E[x^2] - mu^2)
//   r  = 1 / sqrt(var + eps),  xhat = (x - mu) * r,  y = gamma * xhat + beta
//   backward, with g = dy * gamma:
//   dx = r * (g - mean(g) - xhat * mean(g * xhat)),  dgamma = sum_rows dy * xhat,
//   dbeta = sum_rows dy
//
// Each kernel exists for f32 activations (suffix _f32) and bf16 activations (suffix _bf16:
// x, y, dy, dx and the residual stream in bf16); gamma, beta, mean, rstd, dgamma, dbeta are
// always f32, and all arithmetic is f32 (see to_f32 / from_f32 in common.cuh).
//
// Work split (forward and dx): ONE WARP PER ROW. A block is 32 x WARPS_PER_BLOCK threads
// (blockDim = (32, WARPS_PER_BLOCK)); warp threadIdx.y of block blockIdx.x owns row
// blockIdx.x * WARPS_PER_BLOCK + threadIdx.y. Lane l of the warp reads columns l, l+32, l+64,
// ... so each step of the warp reads 32 consecutive elements (one coalesced transaction). A row
// of GPT-2 (768..1600 values, 3..6 KiB in f32) is read from global memory once and re-read from
// L1/L2 by the later passes. Row sums are combined across the warp with __shfl_xor_sync (a
// butterfly: after 5 steps every lane holds the full sum), so no shared memory and no
// __syncthreads are needed.
//
// dgamma/dbeta are sums over ROWS, i.e. a column reduction: a separate kernel gives each block
// 32 columns and reduces over rows in a fixed order, so the result is deterministic (no
// atomics: the same inputs give the same bits on every run).
//
// layernorm_residual_fwd fuses the residual add of a pre-LN transformer block in front of
// the next layernorm: s = x + res is written out (it is the new residual stream) and
// y = layernorm(s), saving one read of s from memory. Its backward is the plain one applied to
// s (and the residual's gradient is the sum of the two branches', added by the caller).
//
// Launch (host side):
//   layernorm_fwd_* / layernorm_residual_fwd_* / layernorm_bwd_dx_*:
//       grid = ceil(rows / WARPS_PER_BLOCK), block = (32, WARPS_PER_BLOCK)
//   layernorm_bwd_dgamma_dbeta_*:
//       grid = ceil(cols / 32), block = (32, DGB_ROWS)

#define WARPS_PER_BLOCK 4
#define DGB_ROWS 8

// Forward. Writes y [rows, cols] and, per row, mean and rstd (saved for the backward).
template <typename T>
__device__ __forceinline__ void layernorm_fwd(const T* __restrict__ x,
                                              const float* __restrict__ gamma,
                                              const float* __restrict__ beta, T* __restrict__ y,
                                              float* __restrict__ mean, float* __restrict__ rstd,
                                              int rows, int cols, float eps) {
    const int lane = threadIdx.x;  // 0..31: position within the warp
    const int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.y;  // this warp's row
    if (row >= rows) return;  // whole warps exit together: the shuffles below stay full-warp
    const T* xr = x + (size_t)row * cols;
    T* yr = y + (size_t)row * cols;
    const float n = (float)cols;

    // Pass 1: mean. Each lane sums its strided columns, then the warp adds the 32 partials.
    float s = 0.0f;
    for (int c = lane; c < cols; c += WARP) s += to_f32(xr[c]);
    const float mu = warp_sum(s) / n;

    // Pass 2: variance around the mean just computed (stable even when |mu| >> sigma).
    float ss = 0.0f;
    for (int c = lane; c < cols; c += WARP) {
        const float d = to_f32(xr[c]) - mu;
        ss += d * d;
    }
    const float r = rsqrtf(warp_sum(ss) / n + eps);

    // Pass 3: normalise, scale, shift. Consecutive lanes write consecutive elements.
    for (int c = lane; c < cols; c += WARP) {
        yr[c] = from_f32<T>((to_f32(xr[c]) - mu) * r * gamma[c] + beta[c]);
    }
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = r;
    }
}

// Residual add fused with the forward: s = x + res (written to `sum`, rounded to T), then
// y = layernorm(s) of the stored s. One warp per row; each lane re-reads only the elements of
// `sum` it wrote itself, so no synchronisation is needed between the passes. `sum` may be the
// same buffer as x or res (an in-place residual add): each element is read, then written, by
// one lane in one step (hence no __restrict__ on those three).
template <typename T>
__device__ __forceinline__ void layernorm_residual_fwd(const T* x, const T* res,
                                                       const float* __restrict__ gamma,
                                                       const float* __restrict__ beta, T* sum,
                                                       T* __restrict__ y,
                                                       float* __restrict__ mean,
                                                       float* __restrict__ rstd, int rows,
                                                       int cols, float eps) {
    const int lane = threadIdx.x;
    const int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.y;
    if (row >= rows) return;
    const size_t off = (size_t)row * cols;
    const float n = (float)cols;

    // Pass 1: s = x + res, stored (rounded to T), and the row sum of what was stored.
    float s = 0.0f;
    for (int c = lane; c < cols; c += WARP) {
        const T v = from_f32<T>(to_f32(x[off + c]) + to_f32(res[off + c]));
        sum[off + c] = v;
        s += to_f32(v);
    }
    const float mu = warp_sum(s) / n;
    // Pass 2: variance around the mean.
    float ss = 0.0f;
    for (int c = lane; c < cols; c += WARP) {
        const float d = to_f32(sum[off + c]) - mu;
        ss += d * d;
    }
    const float r = rsqrtf(warp_sum(ss) / n + eps);
    // Pass 3: normalise, scale, shift.
    for (int c = lane; c < cols; c += WARP) {
        y[off + c] = from_f32<T>((to_f32(sum[off + c]) - mu) * r * gamma[c] + beta[c]);
    }
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = r;
    }
}

// Backward, input gradient. Overwrites dx [rows, cols]. One warp per row, as the forward.
template <typename T>
__device__ __forceinline__ void layernorm_bwd_dx(const T* __restrict__ dy, const T* __restrict__ x,
                                                 const float* __restrict__ gamma,
                                                 const float* __restrict__ mean,
                                                 const float* __restrict__ rstd,
                                                 T* __restrict__ dx, int rows, int cols) {
    const int lane = threadIdx.x;
    const int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.y;
    if (row >= rows) return;
    const size_t off = (size_t)row * cols;
    const float mu = mean[row];
    const float r = rstd[row];
    const float n = (float)cols;

    // Pass 1: the two row means the formula needs, mean(g) and mean(g * xhat), in one sweep.
    float sg = 0.0f, sgx = 0.0f;
    for (int c = lane; c < cols; c += WARP) {
        const float xhat = (to_f32(x[off + c]) - mu) * r;
        const float g = to_f32(dy[off + c]) * gamma[c];
        sg += g;
        sgx += g * xhat;
    }
    const float mean_g = warp_sum(sg) / n;
    const float mean_gx = warp_sum(sgx) / n;

    // Pass 2: dx = r * (g - mean(g) - xhat * mean(g * xhat)).
    for (int c = lane; c < cols; c += WARP) {
        const float xhat = (to_f32(x[off + c]) - mu) * r;
        const float g = to_f32(dy[off + c]) * gamma[c];
        dx[off + c] = from_f32<T>(r * (g - mean_g - xhat * mean_gx));
    }
}

// Backward, parameter gradients. Overwrites dgamma and dbeta [cols] (f32).
//
// Block b owns columns 32b .. 32b+31; its threads form a 32 x DGB_ROWS grid. Thread
// (tx, ty) sums rows ty, ty + DGB_ROWS, ty + 2*DGB_ROWS, ... of column 32b + tx: each step of a
// warp (fixed ty) reads 32 consecutive elements of one row (coalesced). The DGB_ROWS partial
// sums per column then meet in shared memory, and thread ty == 0 adds them in the order
// ty = 0, 1, ..., so the float result does not depend on scheduling.
template <typename T>
__device__ __forceinline__ void layernorm_bwd_dgamma_dbeta(const T* __restrict__ dy,
                                                           const T* __restrict__ x,
                                                           const float* __restrict__ mean,
                                                           const float* __restrict__ rstd,
                                                           float* __restrict__ dgamma,
                                                           float* __restrict__ dbeta, int rows,
                                                           int cols) {
    __shared__ float part_g[DGB_ROWS][WARP];
    __shared__ float part_b[DGB_ROWS][WARP];
    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int col = blockIdx.x * WARP + tx;

    float sg = 0.0f, sb = 0.0f;
    if (col < cols) {
        for (int row = ty; row < rows; row += DGB_ROWS) {
            const size_t i = (size_t)row * cols + col;
            const float d = to_f32(dy[i]);
            sg += d * (to_f32(x[i]) - mean[row]) * rstd[row];
            sb += d;
        }
    }
    part_g[ty][tx] = sg;
    part_b[ty][tx] = sb;
    __syncthreads();  // all partials written before row 0 of the block reads them

    if (ty == 0 && col < cols) {
        float g = 0.0f, b = 0.0f;
#pragma unroll
        for (int k = 0; k < DGB_ROWS; ++k) {
            g += part_g[k][tx];
            b += part_b[k][tx];
        }
        dgamma[col] = g;
        dbeta[col] = b;
    }
}

// The extern "C" entry points, one per storage type.
#define LAYERNORM_ENTRIES(SUF, T)                                                              \
    extern "C" __global__ void __launch_bounds__(WARP * WARPS_PER_BLOCK) layernorm_fwd_##SUF(  \
        const T* x, const float* gamma, const float* beta, T* y, float* mean, float* rstd,     \
        int rows, int cols, float eps) {                                                       \
        layernorm_fwd<T>(x, gamma, beta, y, mean, rstd, rows, cols, eps);                      \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(WARP * WARPS_PER_BLOCK)                       \
        layernorm_residual_fwd_##SUF(const T* x, const T* res, const float* gamma,             \
                                     const float* beta, T* sum, T* y, float* mean,             \
                                     float* rstd, int rows, int cols, float eps) {             \
        layernorm_residual_fwd<T>(x, res, gamma, beta, sum, y, mean, rstd, rows, cols, eps);   \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(WARP * WARPS_PER_BLOCK)                       \
        layernorm_bwd_dx_##SUF(const T* dy, const T* x, const float* gamma,                    \
                               const float* mean, const float* rstd, T* dx, int rows,          \
                               int cols) {                                                     \
        layernorm_bwd_dx<T>(dy, x, gamma, mean, rstd, dx, rows, cols);                         \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(WARP * DGB_ROWS)                              \
        layernorm_bwd_dgamma_dbeta_##SUF(const T* dy, const T* x, const float* mean,           \
                                         const float* rstd, float* dgamma, float* dbeta,       \
                                         int rows, int cols) {                                 \
        layernorm_bwd_dgamma_dbeta<T>(dy, x, mean, rstd, dgamma, dbeta, rows, cols);           \
    }

LAYERNORM_ENTRIES(f32, float)
LAYERNORM_ENTRIES(bf16, bf16_t)
