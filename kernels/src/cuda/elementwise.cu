// Element-wise ops, a deterministic sum, and f32 <-> bf16 conversion (mixed precision: f32
// master weights, bf16 copies for the tensor-core matmul). The element-wise ops, the column
// sum and the first pass of the sum exist for f32 (suffix _f32) and bf16 (_bf16) storage,
// computed in f32; bias, column sums and partial sums are f32.
//
//   add_f32: out = a + b     mul_f32: out = a * b     scale_f32: out = s * a
//   add_bias_f32: out[r, c] = x[r, c] + bias[c]   (a linear layer's bias, broadcast over rows)
//   sum_rows_f32: out[c] = sum_r x[r, c]           (the bias gradient; deterministic)
//   sum_partial_f32 + sum_final_f32: out[0] = sum_i x[i]
//   f32_to_bf16: y = round_to_nearest_even(x)      bf16_to_f32: y = x (exact)
//   rows_to_heads_f32: heads[b,h,t,d] = rows[(b*T + t)*ld + off + h*D + d]
//   heads_to_rows_f32: rows[(b*T + t)*ld + off + h*D + d] = heads[b,h,t,d]
//     (attention's layout changes: GPT-2's fused projection writes q, k, v side by side in
//     rows of [B, T, 3C] (ld = 3C, off = 0, C, 2C), the attention kernels read [B*H, T, D];
//     heads_to_rows_f32_to_bf16 also rounds, for the f32 dq/dk/dv of the bf16 attention)
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

template <typename T>
__device__ __forceinline__ void ew_add(const T* a, const T* b, T* out, long long n) {
    GRID_STRIDE(i, n) out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}

template <typename T>
__device__ __forceinline__ void ew_mul(const T* a, const T* b, T* out, long long n) {
    GRID_STRIDE(i, n) out[i] = from_f32<T>(to_f32(a[i]) * to_f32(b[i]));
}

template <typename T>
__device__ __forceinline__ void ew_scale(const T* a, float s, T* out, long long n) {
    GRID_STRIDE(i, n) out[i] = from_f32<T>(s * to_f32(a[i]));
}

template <typename T>
__device__ __forceinline__ void ew_add_bias(const T* x, const float* __restrict__ bias, T* out,
                                            long long n, int cols) {
    GRID_STRIDE(i, n) out[i] = from_f32<T>(to_f32(x[i]) + bias[i % cols]);
}

// Column sums of a row-major [rows, cols] matrix, the same split as layernorm's dgamma/dbeta:
// block = (32, 8), grid = ceil(cols / 32). Block b owns columns 32b .. 32b+31; thread (tx, ty)
// adds rows ty, ty + 8, ... of column 32b + tx (each warp reads 32 consecutive values of a
// row), then thread ty == 0 adds the 8 partials in the order ty = 0..7. No atomics:
// reproducible.
template <typename T>
__device__ __forceinline__ void sum_rows(const T* __restrict__ x, float* __restrict__ out,
                                         int rows, int cols) {
    __shared__ float part[8][WARP];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int col = blockIdx.x * WARP + tx;
    float s = 0.0f;
    if (col < cols)
        for (int r = ty; r < rows; r += 8) s += to_f32(x[(size_t)r * cols + col]);
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && col < cols) {
        float t = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; ++k) t += part[k][tx];
        out[col] = t;
    }
}

template <typename T>
__device__ __forceinline__ void sum_partial(const T* __restrict__ x, long long n,
                                            float* __restrict__ partials) {
    __shared__ float sh[WARP];
    float s = 0.0f;
    GRID_STRIDE(i, n) s += to_f32(x[i]);
    s = block_sum(s, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

#define ELEMENTWISE_ENTRIES(SUF, T)                                                            \
    extern "C" __global__ void __launch_bounds__(EW_THREADS)                                   \
        add_##SUF(const T* a, const T* b, T* out, long long n) {                               \
        ew_add<T>(a, b, out, n);                                                               \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(EW_THREADS)                                   \
        mul_##SUF(const T* a, const T* b, T* out, long long n) {                               \
        ew_mul<T>(a, b, out, n);                                                               \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(EW_THREADS)                                   \
        scale_##SUF(const T* a, float s, T* out, long long n) {                                \
        ew_scale<T>(a, s, out, n);                                                             \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(EW_THREADS)                                   \
        add_bias_##SUF(const T* x, const float* bias, T* out, long long n, int cols) {         \
        ew_add_bias<T>(x, bias, out, n, cols);                                                 \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                          \
        sum_rows_##SUF(const T* x, float* out, int rows, int cols) {                           \
        sum_rows<T>(x, out, rows, cols);                                                       \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(EW_THREADS)                                   \
        sum_partial_##SUF(const T* x, long long n, float* partials) {                          \
        sum_partial<T>(x, n, partials);                                                        \
    }

ELEMENTWISE_ENTRIES(f32, float)
ELEMENTWISE_ENTRIES(bf16, bf16_t)

// Attention's layout changes, one element per thread per step of a grid-stride loop over the
// B*H*T*D elements of the head-major side, i = ((b*H + h)*T + t)*D + d. Consecutive threads
// take consecutive d, so both sides are read and written in runs of D consecutive elements
// (coalesced for D >= 32). Launch: block = 256, grid = min(ceil(n/256), 4096).
__device__ __forceinline__ long long rows_index(long long i, int H, int T, int D, int ld,
                                                int off) {
    const int d = (int)(i % D);
    const long long r = i / D;  // (b*H + h)*T + t
    const int t = (int)(r % T);
    const long long bh = r / T;
    const int h = (int)(bh % H);
    const long long b = bh / H;
    return (b * T + t) * (long long)ld + off + (long long)h * D + d;
}

template <typename S, typename T>
__device__ __forceinline__ void rows_to_heads(const S* __restrict__ rows, T* __restrict__ heads,
                                              long long n, int H, int Tn, int D, int ld,
                                              int off) {
    GRID_STRIDE(i, n) heads[i] = from_f32<T>(to_f32(rows[rows_index(i, H, Tn, D, ld, off)]));
}

template <typename S, typename T>
__device__ __forceinline__ void heads_to_rows(const S* __restrict__ heads, T* __restrict__ rows,
                                              long long n, int H, int Tn, int D, int ld,
                                              int off) {
    GRID_STRIDE(i, n) rows[rows_index(i, H, Tn, D, ld, off)] = from_f32<T>(to_f32(heads[i]));
}

#define LAYOUT_ENTRY(NAME, FN, S, T)                                                           \
    extern "C" __global__ void __launch_bounds__(EW_THREADS)                                   \
        NAME(const S* src, T* dst, long long n, int H, int Tn, int D, int ld, int off) {      \
        FN<S, T>(src, dst, n, H, Tn, D, ld, off);                                              \
    }

LAYOUT_ENTRY(rows_to_heads_f32, rows_to_heads, float, float)
LAYOUT_ENTRY(rows_to_heads_bf16, rows_to_heads, bf16_t, bf16_t)
LAYOUT_ENTRY(heads_to_rows_f32, heads_to_rows, float, float)
LAYOUT_ENTRY(heads_to_rows_bf16, heads_to_rows, bf16_t, bf16_t)
LAYOUT_ENTRY(heads_to_rows_f32_to_bf16, heads_to_rows, float, bf16_t)

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
