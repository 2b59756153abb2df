// GELU, tanh approximation (GPT-2; torch's gelu(approximate="tanh")), forward and backward,
// element-wise over n floats. Same function as kernels/src/cpu/gelu.rs:
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

extern "C" __global__ void __launch_bounds__(256)
gelu_fwd_f32(const float* __restrict__ x, float* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        y[i] = v / (1.0f + gelu_e(v));
    }
}

extern "C" __global__ void __launch_bounds__(256)
gelu_bwd_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
             long long n) {
    GRID_STRIDE(i, n) {
        const float v = x[i];
        const float e = gelu_e(v);
        const float sig = 1.0f / (1.0f + e);
        const float du = GELU_S * fmaf(3.0f * GELU_C, v * v, 1.0f);
        dx[i] = dy[i] * (sig * (1.0f + 2.0f * v * (e * sig) * du));
    }
}
