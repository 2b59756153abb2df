// Helpers shared by the smaller kernel families (prepended to their source by mod.rs, since
// NVRTC compiles each family as one string with no include path).
//
// Reductions: a warp adds (or maxes) its 32 values with a butterfly of __shfl_xor_sync (after
// 5 steps every lane holds the result). A block of up to 1024 threads (a multiple of 32) then
// writes one partial per warp to shared memory, and EVERY warp re-reads all partials in the
// same order and reduces them again, so every thread gets the same value, and the order of the
// additions is fixed by the block shape alone: the results are bitwise reproducible.
//
// bf16 is carried as its raw 16 bits (the top half of an f32), with the conversions written
// out (round to nearest even), so no CUDA header is needed.

#define WARP 32
// NVRTC has no <math.h>: +infinity from its bit pattern.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#define FULL_MASK 0xffffffffu

typedef unsigned short bf16_t;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the block; `sh` is __shared__ scratch of at least 32 floats. Every thread of the
// block must call it (it contains __syncthreads).
__device__ __forceinline__ float block_sum(float v, float* sh) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    v = warp_sum(v);
    __syncthreads();  // a previous call may still be reading sh
    if (lane == 0) sh[w] = v;
    __syncthreads();
    return warp_sum(lane < (int)(blockDim.x / WARP) ? sh[lane] : 0.0f);
}
__device__ __forceinline__ double block_sum_f64(double v, double* sh) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    v = warp_sum_f64(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    return warp_sum_f64(lane < (int)(blockDim.x / WARP) ? sh[lane] : 0.0);
}
__device__ __forceinline__ float block_max(float v, float* sh) {
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    return warp_max(lane < (int)(blockDim.x / WARP) ? sh[lane] : -INFINITY);
}

__device__ __forceinline__ float bf16_to_f32(bf16_t h) { return __uint_as_float(((unsigned)h) << 16); }
// Round to nearest, ties to even; NaN stays a (quiet) NaN.
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    const unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x0040u);
    return (bf16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Storage types. Kernels that come in an f32 and a bf16 version are written once as a template
// over the storage type T (float or bf16_t) and do their arithmetic in f32: load with to_f32,
// store with from_f32<T> (a plain copy for float, a rounding for bf16).
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16_t x) { return bf16_to_f32(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16_t from_f32<bf16_t>(float x) { return f32_to_bf16(x); }

// Grid-stride loop over 0..n: thread t of the grid handles t, t + gridDim*blockDim, ...
#define GRID_STRIDE(i, n)                                                              \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); \
         i += (long long)gridDim.x * blockDim.x)
