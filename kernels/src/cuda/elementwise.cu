// Element-wise ops, a deterministic sum, and f32 <-> bf16 conversion (mixed precision: f32
// master weights, bf16 copies for the tensor-core matmul).
//
//   add_f32: out = a + b     mul_f32: out = a * b     scale_f32: out = s * a
//   add_bias_f32: out[r, c] = x[r, c] + bias[c]   (a linear layer's bias, broadcast over rows)
//   sum_rows_f32: out[c] = sum_r x[r, c]           (the bias gradient; deterministic)
//   sum_partial_f32 + sum_final_f32: out[0] = sum_i x[i]
//   f32_to_bf16: y = round_to_nearest_even(x)      bf16_to_f32: y = x (exact)
//
// Element-wise kernels: a grid-stride loop, one element per thread per step (coalesced).
// Launch: block = 256, grid = min(ceil(n/256), 4096). out may alias an input (in place).
//
// The sum is two passes, so that its rounding does not depend on scheduling:
//   pass 1, sum_partial_f32: a FIXED number of blocks G (the host picks G from n only); thread t
//     of block b adds x[b*256 + t], x[b*256 + t + G*256], ... then the block adds its 256
//     values (block_sum) and writes partials[b];
//   pass 2, sum_final_f32: ONE block of 256 threads adds the G partials the same way.
// Same n -> same G -> same additions in the same order -> the same bits on every run.

#define EW_THREADS 256

extern "C" __global__ void __launch_bounds__(EW_THREADS)
add_f32(const float* a, const float* b, float* out, long long n) {
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

extern "C" __global__ void __launch_bounds__(EW_THREADS)
mul_f32(const float* a, const float* b, float* out, long long n) {
    GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}

extern "C" __global__ void __launch_bounds__(EW_THREADS)
scale_f32(const float* a, float s, float* out, long long n) {
    GRID_STRIDE(i, n) out[i] = s * a[i];
}

extern "C" __global__ void __launch_bounds__(EW_THREADS)
add_bias_f32(const float* x, const float* __restrict__ bias, float* out, long long n, int cols) {
    GRID_STRIDE(i, n) out[i] = x[i] + bias[i % cols];
}

// Column sums of a row-major [rows, cols] matrix, the same split as layernorm's dgamma/dbeta:
// block = (32, 8), grid = ceil(cols / 32). Block b owns columns 32b .. 32b+31; thread (tx, ty)
// adds rows ty, ty + 8, ... of column 32b + tx (each warp reads 32 consecutive floats of a
// row), then thread ty == 0 adds the 8 partials in the order ty = 0..7. No atomics:
// reproducible.
extern "C" __global__ void __launch_bounds__(256)
sum_rows_f32(const float* __restrict__ x, float* __restrict__ out, int rows, int cols) {
    __shared__ float part[8][WARP];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int col = blockIdx.x * WARP + tx;
    float s = 0.0f;
    if (col < cols)
        for (int r = ty; r < rows; r += 8) s += x[(size_t)r * cols + col];
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && col < cols) {
        float t = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; ++k) t += part[k][tx];
        out[col] = t;
    }
}

extern "C" __global__ void __launch_bounds__(EW_THREADS)
sum_partial_f32(const float* __restrict__ x, long long n, float* __restrict__ partials) {
    __shared__ float sh[WARP];
    float s = 0.0f;
    GRID_STRIDE(i, n) s += x[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Launch: grid = 1, block = 256.
extern "C" __global__ void __launch_bounds__(EW_THREADS)
sum_final_f32(const float* __restrict__ partials, int count, float* __restrict__ out) {
    __shared__ float sh[WARP];
    float s = 0.0f;
    for (int i = threadIdx.x; i < count; i += EW_THREADS) s += partials[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) out[0] = s;
}

extern "C" __global__ void __launch_bounds__(EW_THREADS)
f32_to_bf16(const float* __restrict__ x, bf16_t* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) y[i] = f32_to_bf16(x[i]);
}

extern "C" __global__ void __launch_bounds__(EW_THREADS)
bf16_to_f32(const bf16_t* __restrict__ x, float* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) y[i] = bf16_to_f32(x[i]);
}
