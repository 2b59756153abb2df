// Layer normalisation over the last axis of a row-major [rows, cols] f32 matrix: forward and
// backward. Same math and contract as kernels/src/cpu/layernorm.rs:
//
//   mu = mean(x),  var = mean((x - mu)^2)   (two passes over the row: never E[x^2] - mu^2)
//   r  = 1 / sqrt(var + eps),  xhat = (x - mu) * r,  y = gamma * xhat + beta
//   backward, with g = dy * gamma:
//   dx = r * (g - mean(g) - xhat * mean(g * xhat)),  dgamma = sum_rows dy * xhat,
//   dbeta = sum_rows dy
//
// Work split (forward and dx): ONE WARP PER ROW. A block is 32 x WARPS_PER_BLOCK threads
// (blockDim = (32, WARPS_PER_BLOCK)); warp threadIdx.y of block blockIdx.x owns row
// blockIdx.x * WARPS_PER_BLOCK + threadIdx.y. Lane l of the warp reads columns l, l+32, l+64,
// ... so each step of the warp reads 32 consecutive floats (one 128-byte, coalesced
// transaction). A row of GPT-2 (768..1600 floats, 3..6 KiB) is read from global memory once
// and re-read from L1/L2 by the later passes. Row sums are combined across the warp with
// __shfl_xor_sync (a butterfly: after 5 steps every lane holds the full sum), so no shared
// memory and no __syncthreads are needed.
//
// dgamma/dbeta are sums over ROWS, i.e. a column reduction: a separate kernel gives each block
// 32 columns and reduces over rows in a fixed order, so the result is deterministic (no
// atomics: the same inputs give the same bits on every run).
//
// layernorm_residual_fwd_f32 fuses the residual add of a pre-LN transformer block in front of
// the next layernorm: s = x + res is written out (it is the new residual stream) and
// y = layernorm(s), saving one read of s from memory. Its backward is the plain one applied to
// s (and the residual's gradient is the sum of the two branches', added by the caller).
//
// Launch (host side):
//   layernorm_fwd_f32 / layernorm_residual_fwd_f32 / layernorm_bwd_dx_f32:
//       grid = ceil(rows / WARPS_PER_BLOCK), block = (32, WARPS_PER_BLOCK)
//   layernorm_bwd_dgamma_dbeta_f32:
//       grid = ceil(cols / 32), block = (32, DGB_ROWS)

#define WARP 32
#define WARPS_PER_BLOCK 4
#define DGB_ROWS 8
#define FULL_MASK 0xffffffffu

// Sum of v over the 32 lanes of the warp; every lane gets the result. Step s adds the value of
// the lane whose index differs in bit s (offset 16, 8, 4, 2, 1).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = WARP / 2; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    return v;
}

// Forward. Writes y [rows, cols] and, per row, mean and rstd (saved for the backward).
extern "C" __global__ void __launch_bounds__(WARP * WARPS_PER_BLOCK)
layernorm_fwd_f32(const float* __restrict__ x, const float* __restrict__ gamma,
                  const float* __restrict__ beta, float* __restrict__ y,
                  float* __restrict__ mean, float* __restrict__ rstd,
                  int rows, int cols, float eps) {
    const int lane = threadIdx.x;  // 0..31: position within the warp
    const int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.y;  // this warp's row
    if (row >= rows) return;  // whole warps exit together: the shuffles below stay full-warp
    const float* xr = x + (size_t)row * cols;
    float* yr = y + (size_t)row * cols;
    const float n = (float)cols;

    // Pass 1: mean. Each lane sums its strided columns, then the warp adds the 32 partials.
    float s = 0.0f;
    for (int c = lane; c < cols; c += WARP) s += xr[c];
    const float mu = warp_sum(s) / n;

    // Pass 2: variance around the mean just computed (stable even when |mu| >> sigma).
    float ss = 0.0f;
    for (int c = lane; c < cols; c += WARP) {
        const float d = xr[c] - mu;
        ss += d * d;
    }
    const float r = rsqrtf(warp_sum(ss) / n + eps);

    // Pass 3: normalise, scale, shift. Consecutive lanes write consecutive floats.
    for (int c = lane; c < cols; c += WARP) {
        yr[c] = (xr[c] - mu) * r * gamma[c] + beta[c];
    }
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = r;
    }
}

// Residual add fused with the forward: s = x + res (written to `sum`), then y = layernorm(s).
// One warp per row, as layernorm_fwd_f32; each lane re-reads only the elements of `sum` it
// wrote itself, so no synchronisation is needed between the passes. `sum` may be the same
// buffer as x or res (an in-place residual add): each element is read, then written, by one
// lane in one step (hence no __restrict__ on those three).
extern "C" __global__ void __launch_bounds__(WARP * WARPS_PER_BLOCK)
layernorm_residual_fwd_f32(const float* x, const float* res,
                           const float* __restrict__ gamma, const float* __restrict__ beta,
                           float* sum, float* __restrict__ y,
                           float* __restrict__ mean, float* __restrict__ rstd,
                           int rows, int cols, float eps) {
    const int lane = threadIdx.x;
    const int row = blockIdx.x * WARPS_PER_BLOCK + threadIdx.y;
    if (row >= rows) return;
    const size_t off = (size_t)row * cols;
    const float n = (float)cols;

    // Pass 1: s = x + res, stored, and its row sum.
    float s = 0.0f;
    for (int c = lane; c < cols; c += WARP) {
        const float v = x[off + c] + res[off + c];
        sum[off + c] = v;
        s += v;
    }
    const float mu = warp_sum(s) / n;
    // Pass 2: variance around the mean.
    float ss = 0.0f;
    for (int c = lane; c < cols; c += WARP) {
        const float d = sum[off + c] - mu;
        ss += d * d;
    }
    const float r = rsqrtf(warp_sum(ss) / n + eps);
    // Pass 3: normalise, scale, shift.
    for (int c = lane; c < cols; c += WARP) {
        y[off + c] = (sum[off + c] - mu) * r * gamma[c] + beta[c];
    }
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = r;
    }
}

// Backward, input gradient. Overwrites dx [rows, cols]. One warp per row, as the forward.
extern "C" __global__ void __launch_bounds__(WARP * WARPS_PER_BLOCK)
layernorm_bwd_dx_f32(const float* __restrict__ dy, const float* __restrict__ x,
                     const float* __restrict__ gamma, const float* __restrict__ mean,
                     const float* __restrict__ rstd, float* __restrict__ dx,
                     int rows, int cols) {
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
        const float xhat = (x[off + c] - mu) * r;
        const float g = dy[off + c] * gamma[c];
        sg += g;
        sgx += g * xhat;
    }
    const float mean_g = warp_sum(sg) / n;
    const float mean_gx = warp_sum(sgx) / n;

    // Pass 2: dx = r * (g - mean(g) - xhat * mean(g * xhat)).
    for (int c = lane; c < cols; c += WARP) {
        const float xhat = (x[off + c] - mu) * r;
        const float g = dy[off + c] * gamma[c];
        dx[off + c] = r * (g - mean_g - xhat * mean_gx);
    }
}

// Backward, parameter gradients. Overwrites dgamma and dbeta [cols].
//
// Block b owns columns 32b .. 32b+31; its threads form a 32 x DGB_ROWS grid. Thread
// (tx, ty) sums rows ty, ty + DGB_ROWS, ty + 2*DGB_ROWS, ... of column 32b + tx: each step of a
// warp (fixed ty) reads 32 consecutive floats of one row (coalesced). The DGB_ROWS partial sums
// per column then meet in shared memory, and thread ty == 0 adds them in the order
// ty = 0, 1, ..., so the float result does not depend on scheduling.
extern "C" __global__ void __launch_bounds__(WARP * DGB_ROWS)
layernorm_bwd_dgamma_dbeta_f32(const float* __restrict__ dy, const float* __restrict__ x,
                               const float* __restrict__ mean, const float* __restrict__ rstd,
                               float* __restrict__ dgamma, float* __restrict__ dbeta,
                               int rows, int cols) {
    __shared__ float part_g[DGB_ROWS][WARP];
    __shared__ float part_b[DGB_ROWS][WARP];
    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int col = blockIdx.x * WARP + tx;

    float sg = 0.0f, sb = 0.0f;
    if (col < cols) {
        for (int row = ty; row < rows; row += DGB_ROWS) {
            const size_t i = (size_t)row * cols + col;
            const float d = dy[i];
            sg += d * (x[i] - mean[row]) * rstd[row];
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
