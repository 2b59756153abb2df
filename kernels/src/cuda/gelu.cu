// GELU, tanh approximation (GPT-2; torch's gelu(approximate="tanh")), forward and backward,
// element-wise over n values stored as f32 (suffix _f32) or bf16 (_bf16), computed in f32.
// Same function as kernels/src/cpu/gelu.rs:
//
//   y = x/2 (1 + tanh u),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   dy/dx = 1/2 (1 + tanh u) + x/2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
//
// computed, as the CPU fast path does, through 1/2 (1 + tanh u) = sigma(2u) = 1 / (1 + e),
// e = exp(-2u) (clamped at exp(88) so e * sigma stays finite), which keeps full relative
// accuracy for x << 0 where 1 + tanh u would cancel:
//   y = x / (1 + e);   dy/dx = sigma (1 + 2x (e sigma) u'),  u' = sqrt(2/pi)(1 + 3c x^2).
//
// Work split: one element per thread per step of a grid-stride loop (consecutive threads,
// consecutive floats: coalesced). Launch: block = 256, grid = min(ceil(n/256), 4096).

#define GELU_S 0.7978845608028654f
#define GELU_C 0.044715f
#define GELU_CLAMP 88.0f

__device__ __forceinline__ float gelu_e(float x) {  // e^(-2u), clamped
    const float u = GELU_S * x * fmaf(GELU_C, x * x, 1.0f);
    return expf(fminf(-2.0f * u, GELU_CLAMP));
}

template <typename T>
__device__ __forceinline__ void gelu_fwd(const T* __restrict__ x, T* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) {
        const float v = to_f32(x[i]);
        y[i] = from_f32<T>(v / (1.0f + gelu_e(v)));
    }
}

template <typename T>
__device__ __forceinline__ void gelu_bwd(const T* __restrict__ x, const T* __restrict__ dy,
                                         T* __restrict__ dx, long long n) {
    GRID_STRIDE(i, n) {
        const float v = to_f32(x[i]);
        const float e = gelu_e(v);
        const float sig = 1.0f / (1.0f + e);
        const float du = GELU_S * fmaf(3.0f * GELU_C, v * v, 1.0f);
        dx[i] = from_f32<T>(to_f32(dy[i]) * (sig * (1.0f + 2.0f * v * (e * sig) * du)));
    }
}

#define GELU_ENTRIES(SUF, T)                                                                   \
    extern "C" __global__ void __launch_bounds__(256)                                          \
        gelu_fwd_##SUF(const T* x, T* y, long long n) {                                        \
        gelu_fwd<T>(x, y, n);                                                                  \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                          \
        gelu_bwd_##SUF(const T* x, const T* dy, T* dx, long long n) {                          \
        gelu_bwd<T>(x, dy, dx, n);                                                             \
    }

GELU_ENTRIES(f32, float)
GELU_ENTRIES(bf16, bf16_t)
